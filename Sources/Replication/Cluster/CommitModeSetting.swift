// The commit mode in effect, per commit (issue 13: the commit mode is a cluster setting,
// `replication.commit_mode` in the replicated `_settings` collection, aerodb.json's
// `commit_mode` until one is stored).
//
// Rule (CM1 in docs/INVARIANTS.md): a commit at LSN L waits as the mode stored by the last
// settings record before L says; a mode change takes effect with the next commit after its
// record. The gate asks at wait time, when the node's snapshot already holds L (the record is
// locally durable and visible), so the value it reads there is the stored value at some
// V >= L. Where a change could lie between L and V the stricter of the two modes is used:
//
// - tightening (async -> sync/all) applies to every commit after the record, at once: any
//   snapshot holding L > S shows it (never a sync-mode write acknowledged with async semantics);
// - relaxing (sync -> async) applies to commits after the change's first observation; a commit
//   that may predate the record (L <= the snapshot the change was first seen at) still waits as
//   before; so does the settings record itself.
//
// State: `observed`, at most `observationsMax` pairs (upTo: V, mode) in ascending V: "the
// snapshot at V showed this mode" (a reading that agrees with the one before it is not kept).
// For a commit L: the last entry with upTo < L is certainly in effect; entries with upTo >= L
// may be; the strictest of those applies. A commit older than every entry kept gets the
// strictest mode kept.

import Kernel
import Synchronization

extension CommitMode {
    /// async < sync < all.
    var strictness: Int {
        switch self {
        case .async: 0
        case .sync: 1
        case .all: 2
        }
    }

    public static func stricter(_ a: CommitMode, _ b: CommitMode) -> CommitMode { a.strictness >= b.strictness ? a : b }
}

public final class CommitModeSetting: Sendable {
    /// Mode changes remembered: a commit waits at most `replica_wait_ms`, so only the last few
    /// changes can still matter for a waiting commit; older ones fall back to the strictest kept.
    static let observationsMax = 16

    /// The stored value, read on a current snapshot: its LSN and the mode (nil: none stored).
    public typealias Reader = @Sendable () -> (lsn: UInt64, mode: CommitMode?)

    /// aerodb.json's (or the cluster's built-in) mode: what applies while nothing is stored.
    public let fileMode: CommitMode
    /// Boxed, never `Mutex<Reader?>`: a closure stored as a generic value is reabstracted on
    /// every inout access, so each `withLock` wrapped it in one more thunk (a chain as long as
    /// the node's commit count, walked by every commit: CPU per commit grew without bound and
    /// the stack with it). A class reference is stored as is.
    private final class ReaderBox: Sendable {
        let read: Reader
        init(_ read: @escaping Reader) { self.read = read }
    }
    private let reader: Mutex<ReaderBox?>
    private let observed: Mutex<[(upTo: UInt64, mode: CommitMode)]>
    /// The reading of the highest snapshot LSN so far.
    private let newestReading: Mutex<(upTo: UInt64, mode: CommitMode)>

    public init(fileMode: CommitMode) {
        self.fileMode = fileMode
        reader = Mutex(nil)
        observed = Mutex([(0, fileMode)])
        newestReading = Mutex((0, fileMode))
    }

    /// Installs how the stored value is read (the node's settings, Sources/BaaS/Settings).
    public func setReader(_ read: @escaping Reader) {
        reader.withLock { $0 = ReaderBox(read) }
        _ = current
    }

    /// The mode stored now (the file's when none is), recorded as an observation.
    public var current: CommitMode {
        guard let box = reader.withLock({ $0 }) else { return fileMode }
        let (lsn, stored) = box.read()
        return observe(lsn: lsn, mode: stored ?? fileMode)
    }

    /// The mode a commit at `lsn` waits with (the rule above). Call once `lsn` is visible.
    public func mode(for lsn: UInt64) -> CommitMode {
        _ = current
        return observed.withLock { entries in
            // The last reading before `lsn` is certainly in effect (or, when none is kept, the
            // strictest kept); a reading at or after `lsn` may be, too.
            let before = entries.last { $0.upTo < lsn }?.mode ?? entries.map(\.mode).reduce(fileMode, CommitMode.stricter)
            return entries.filter { $0.upTo >= lsn }.map(\.mode).reduce(before, CommitMode.stricter)
        }
    }

    /// The strictest mode among the recent ones (promotion's history proof: a target may not
    /// hold the newest settings record yet, so it never assumes a weaker mode than recently seen).
    public var strictestRecent: CommitMode {
        let now = current
        return observed.withLock { $0.map(\.mode).reduce(now, CommitMode.stricter) }
    }

    private func observe(lsn: UInt64, mode: CommitMode) -> CommitMode {
        observed.withLock { entries in
            // Kept in ascending upTo; a reading that agrees with the entry before its place adds
            // nothing (that entry bounds the change more tightly). A reading that raced a newer
            // one still goes in its place: it may be the only sign of a change in between.
            // The last entry always holds the newest reading's mode (`newest`): a stale reading
            // placed last is followed by the newest one again.
            let place = entries.firstIndex { $0.upTo > lsn } ?? entries.count
            let newest = newestReading.withLock { n in
                if lsn >= n.upTo { n = (lsn, mode) }
                return n
            }
            if place > 0, entries[place - 1].mode == mode { return mode }
            entries.insert((lsn, mode), at: place)
            if place == entries.count - 1, newest.upTo > lsn, newest.mode != mode { entries.append(newest) }
            if entries.count > Self.observationsMax { entries.removeFirst(entries.count - Self.observationsMax) }
            return mode
        }
    }
}

/// The commit gate of a primary with peers: per commit, the replica flushes its mode needs
/// (none in `async`) within the timeout.
struct ModalFlushGate: CommitGate {
    let tracker: AckTracker
    let modes: CommitModeSetting
    let config: ClusterConfig

    func wait(_ lsn: UInt64) async throws {
        let needed = config.acksNeeded(modes.mode(for: lsn))
        guard needed > 0 else { return }
        try await tracker.wait(lsn, needed: needed, timeoutMillis: config.replicaWaitMillis)
    }
}
