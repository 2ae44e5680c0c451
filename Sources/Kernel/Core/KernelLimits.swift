// Every bound of the kernel, named with its unit last, each with the reason it exists.
// docs/LIMITS.md lists them; values that operators may change are also fields of `KernelOptions`.

public enum KernelLimits {
    /// Deepest JSON nesting the parser accepts (requests, WAL record payloads, checkpoint lines);
    /// a scalar or an empty container is one level. Parsing is recursive; this keeps the stack bounded.
    public static let jsonDepthMax = 64
    /// Levels a WAL record or a checkpoint line wraps around a stored value. The deepest framing:
    /// a field default inside a schema record, `{"create":{"fields":{"f":{"default":V}}}}` (V at
    /// level 5, 4 levels of framing); a document in a transaction record has 3
    /// (`{"changes":[{"a":DOC}]}`). `TransactionRecord.framing` names both; tests check them.
    public static let recordFramingDepth = 4
    /// Deepest document (and field default) the write path accepts: the decoder's limit minus the
    /// record's framing, so whatever is acknowledged, replay decodes (AR1: acknowledged implies
    /// replayable). Deeper documents are refused with AERO_DOCUMENT_TOO_LARGE before anything is logged.
    public static let documentDepthMax = jsonDepthMax - recordFramingDepth
    /// Largest encoded document. Keeps one record well inside one WAL segment.
    public static let documentBytesMax = 1 << 20
    /// Most operations in one transaction. Bounds validation time and record size.
    public static let transactionOpsMax = 10_000
    /// Largest encoded transaction record payload (an update carries a before and an after image,
    /// so this holds several maximal documents). Checked on the write path before anything is
    /// logged; `walSegmentBytesNodeMin` makes every node's segments able to hold such a record.
    public static let transactionBytesMax = 16 << 20
    /// Smallest segment size the kernel accepts (tests and the crash harness use small segments to
    /// exercise rollover; a record larger than one segment is refused before it is logged).
    public static let walSegmentBytesMin = 64 << 10
    /// Segment size that holds the largest transaction record (4 KiB segment header, 64-byte
    /// record header + `transactionBytesMax`). Below it a node refuses (before logging) records
    /// its segments cannot hold, and a replica cannot log such a record from a primary with larger
    /// segments: `aerodb start` warns, docs/OPERATIONS.md says to give every member one value.
    public static let walSegmentBytesNodeMin = 4096 + ((64 + transactionBytesMax + 4095) & ~4095)
    /// LSNs and epochs are u64 on disk but never exceed Int64.max: they travel as JSON integers
    /// (Int64) and are incremented; a file declaring more is corrupt, never a crash.
    public static let lsnMax = UInt64(Int64.max)
    /// Default WAL segment size: large enough to amortize preallocation, small enough to recycle often.
    public static let walSegmentBytesDefault = 64 << 20
    /// WAL records recovery decodes ahead of the one it applies (RecoveryPipeline): keeps the
    /// decoding threads busy while bounding memory to that many records (each at most
    /// `transactionBytesMax` of payload, decoded).
    public static let recoveryDecodeAheadRecords = 8
    /// Threads that decode WAL records during recovery, at most (one per core, beside the
    /// scanning and the applying thread, which use a fraction of a core each): applying, in LSN
    /// order on one thread, is the bottleneck beyond a few.
    public static let recoveryDecodeThreadsMax = 3
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
    /// Segments a checkpoint keeps as future spares instead of removing them (renamed, reused
    /// without a zero-fill: no 64 MiB write at a rollover on the commit path's disk). Four
    /// default segments are what one automatic checkpoint (every 256 MiB of WAL) frees, so the
    /// rollovers until the next checkpoint all find one; the disk holds at most this many more.
    public static let walRecycledSegmentsMax = 4
}
