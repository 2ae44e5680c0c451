// What a Database is opened with. Every field has a safe default; the node's config file sets them.

public struct KernelOptions: Sendable {
    /// The node's data directory: holds `wal/` and `checkpoints/`, nothing outside it.
    public var dataDirectory: String
    public var walEngine: IOEngineChoice = .automatic
    public var walSegmentBytes: Int = KernelLimits.walSegmentBytesDefault
    /// Preallocate the next WAL segment in the background (the crash harness turns this off to
    /// keep the order of disk operations a function of the seed).
    public var walPreallocateInBackground = true
    /// `WALOptions.callerFlushMaxMicros` (tests of the caller's flush itself raise it).
    var walCallerFlushMaxMicros = WriteAheadLog.callerFlushMaxMicrosDefault
    /// Writes that would take documents and indexes past this many bytes are refused.
    public var memoryBytesMax: Int = KernelLimits.memoryBytesDefault
    public var query = QueryOptions()
    public var fileSystem: any FileSystem = POSIXFileSystem()
    public var clock: any KernelClock = SystemClock()
    /// Checkpoint automatically after this many WAL bytes since the last one (0 = never).
    public var checkpointEveryWALBytes: Int = 256 << 20
    /// A primary opens epoch 1 in an empty log and accepts local writes; a replica's log starts
    /// with the primary's records, and it refuses local writes until it is promoted.
    public var role: KernelRole = .primary

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    var walDirectory: String { Path.join(dataDirectory, "wal") }
    var checkpointDirectory: String { Path.join(dataDirectory, "checkpoints") }

    var walOptions: WALOptions {
        var wal = WALOptions(directory: walDirectory, segmentBytes: walSegmentBytes, engine: walEngine,
                             preallocateInBackground: walPreallocateInBackground)
        wal.callerFlushMaxMicros = walCallerFlushMaxMicros
        return wal
    }
}

public enum KernelRole: String, Sendable {
    case primary, replica
}

/// What the kernel reports about itself (admin status, metrics).
public struct KernelStatus: Sendable {
    public let durableLSN: UInt64
    public let appliedLSN: UInt64
    public let epoch: UInt64
    public let walEngine: String
    public let collectionCount: Int
    public let documentCount: Int
    public let memoryBytesUsed: Int
    public let memoryBytesMax: Int
    public let lastCheckpointLSN: UInt64?
    /// Why the last checkpoint failed, when it did (automatic checkpoints report here).
    public let lastCheckpointError: AeroError?
}

/// What opening the database found, for the start-up log.
public struct OpenReport: Sendable {
    public let checkpointFile: String?
    public let skippedCheckpoints: [AeroError]
    public let recordsReplayed: Int
    public let wal: RecoveryReport
    public let elapsedNanos: UInt64
}

/// The result of a commit: durable at `lsn` when returned.
public struct CommitResult: Sendable {
    public let lsn: UInt64
    public let changes: [DocumentChange]
}
