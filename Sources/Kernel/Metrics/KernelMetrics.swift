// The kernel's measurements, emitted through swift-metrics (CoreMetrics). The kernel knows no
// backend: `aerodb start` bootstraps the Prometheus one (Sources/BaaS/Ops/NodeMetrics.swift),
// and without a bootstrap (tests, offline commands) every handle is a no-op.
//
// Names follow Prometheus conventions (unit last, `_total` for counters); no label carries a
// client-chosen value. The handles are created on first use, so a bootstrap that runs before
// the database opens binds them to the real backend.

import CoreMetrics

public enum KernelMetrics {
    /// One WAL group write: the write and its fdatasync (or the io_uring batch with its flush).
    static let walFsync = CoreMetrics.Timer(label: "aerodb_wal_fsync_duration_seconds")
    /// Bytes written to WAL segments by group commits (block padding included).
    static let walBytes = CoreMetrics.Counter(label: "aerodb_wal_written_bytes_total")
    /// A local commit from the writer's placement to visible (durable, through the commit gate).
    static let commit = CoreMetrics.Timer(label: "aerodb_commit_duration_seconds")
    /// Committed write transactions on this node (local commits only, not replicated records).
    static let commits = CoreMetrics.Counter(label: "aerodb_commits_total")
    /// A checkpoint written (state encoded, file made durable, old ones pruned).
    static let checkpoint = CoreMetrics.Timer(label: "aerodb_checkpoint_duration_seconds")

    /// The names above, for the docs and the exposition test.
    public static let names = ["aerodb_wal_fsync_duration_seconds", "aerodb_wal_written_bytes_total",
                               "aerodb_commit_duration_seconds", "aerodb_commits_total",
                               "aerodb_checkpoint_duration_seconds"]

    @inline(__always)
    static func nanos(since start: ContinuousClock.Instant) -> Int64 {
        let elapsed = ContinuousClock.now - start
        return elapsed.components.seconds &* 1_000_000_000 &+ elapsed.components.attoseconds / 1_000_000_000
    }
}
