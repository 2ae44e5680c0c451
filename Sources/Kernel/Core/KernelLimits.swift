// Every bound of the kernel, named with its unit last, each with the reason it exists.
// docs/LIMITS.md lists them; values that operators may change are also fields of `KernelOptions`.

public enum KernelLimits {
    /// Deepest JSON nesting accepted. Parsing is recursive; this keeps the stack bounded.
    public static let jsonDepthMax = 64
    /// Largest encoded document. Keeps one record well inside one WAL segment.
    public static let documentBytesMax = 1 << 20
    /// Most operations in one transaction. Bounds validation time and record size.
    public static let transactionOpsMax = 10_000
    /// Largest encoded transaction record. Must be below `walSegmentBytesMin - walSegmentHeaderBytes`.
    public static let transactionBytesMax = 16 << 20
    /// Smallest segment size accepted (tests use small segments to exercise rollover).
    public static let walSegmentBytesMin = 64 << 10
    /// Default WAL segment size: large enough to amortize preallocation, small enough to recycle often.
    public static let walSegmentBytesDefault = 64 << 20
    /// Collection and field names: ASCII letters, digits and `_`, starting with a letter or `_`.
    public static let nameBytesMax = 63
    /// Fields declared in one collection.
    public static let fieldsPerCollectionMax = 256
    /// Indexes declared on one collection.
    public static let indexesPerCollectionMax = 32
    /// Collections in one database.
    public static let collectionsMax = 1_000
    /// Default maximum rows a query returns when it names no limit.
    public static let queryLimitDefault = 1_000
    /// Hard ceiling on a query's limit.
    public static let queryLimitMax = 10_000
    /// Rows a query may examine without a usable index before it is refused (Q1).
    public static let scanRowsMaxDefault = 100_000
    /// Values in one `$in` list.
    public static let inListMax = 1_000
    /// Filter nesting depth (`$and`/`$or`/`$not`).
    public static let filterDepthMax = 16
    /// Default memory budget for documents and indexes: refuse writes past it (never OOM).
    public static let memoryBytesDefault = 4 << 30
    /// Checkpoints kept on disk: the newest and one older to fall back to if the newest is damaged.
    public static let checkpointsKept = 2
    /// WAL segments kept past what checkpoints need, for connected replicas still behind
    /// (SPEC §3.5); a replica further behind is sent a checkpoint instead.
    public static let walSegmentsRetainedForReplicasMax = 16
}
