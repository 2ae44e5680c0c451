// The committed-transaction stream every subscriber reads (realtime, tests): one shared,
// bounded, pull-based hub per database.
//
// Layout: a window of decoded records `(windowFrom, windowThrough]` in LSN order (every WAL
// record in that range, transactions and others), at most `windowRecordsMax` records and
// about `windowBytesMax` payload bytes. Subscribers own their cursor (an LSN) and pull:
// - cursor inside the window: the records after it, from memory (shared, decoded once);
// - cursor before the window: read from the WAL for that subscriber only (catch-up, resume),
//   `readBytesMax` per pull; AERO_WAL_LSN_UNAVAILABLE when the WAL no longer holds it;
// - cursor at the window's end: the first puller extends the window from the WAL (the others
//   wait for it), or everyone waits for the next release.
//
// Invariants:
// - Only released records are ever returned: `released` = the newest LSN that is visible
//   (durable, D1) and, while a commit gate is installed (`sync`/`all` modes on a primary),
//   acknowledged through that gate. A commit still in doubt is never shown (RT2).
// - Records come out in LSN order with no gap and no repeat for a cursor that only moves
//   forward to the `through` of each batch (RT1).
// - The hub holds no per-subscriber state: a slow subscriber costs its cursor only; memory is
//   the window's bound. No I/O happens under the lock; the WAL is read through the closure the
//   database gives, which reads its current log (a replica that installed a checkpoint has a
//   new one; the window restarts at the installed position).
// - No lost wake-up: every change that can wake a puller bumps `changes` under the lock; a puller
//   that decided to wait notes the value it decided on and sleeps only while it is unchanged. (It
//   used to register its waiter in a second lock turn: a release between the two woke nobody, and
//   the subscriber slept until the next commit; RT1).

import Synchronization

/// A pull's answer: the records after the cursor, and the LSN the cursor moves to.
public struct ChangeBatch: Sendable {
    /// Decoded records in LSN order (transactions; schema and epoch records with no changes).
    public let transactions: [CommittedTransaction]
    /// Every LSN up to this one is covered by this batch or an earlier one.
    public let through: UInt64
}

final class ChangeHub: Sendable {
    /// Decoded records kept in memory for all subscribers (the live tail).
    static let windowRecordsMax = 4_096
    /// Payload bytes kept in the window (about the size of the decoded records).
    static let windowBytesMax = 16 << 20
    /// WAL bytes read per pull by a subscriber behind the window: bounds what one pull costs.
    static let readBytesMax = 1 << 20

    typealias Reader = @Sendable (_ from: UInt64, _ maxBytes: Int) throws -> [WALRecord]

    private struct Entry {
        let transaction: CommittedTransaction
        let bytes: Int
    }

    private struct State {
        var window: [Entry] = []
        var windowStart = 0  // index of the first live entry (amortised removal)
        var windowBytes = 0
        var windowFrom: UInt64
        var windowThrough: UInt64
        var visible: UInt64
        var acknowledged: UInt64
        var gated = false
        /// After a gate is removed (a deposed primary), records up to here stay held back
        /// unless acknowledged: only a later record (from the new primary's history) frees them.
        var holdThrough: UInt64 = 0
        var filling = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        var generation = 0
        /// Bumped by every wake-up (release, fill, reset): a puller waits only if it is unchanged
        /// since the lock turn in which it decided to wait.
        var changes: UInt64 = 0

        var released: UInt64 {
            if gated || visible <= holdThrough { return min(visible, max(acknowledged, windowFromFloor)) }
            return visible
        }
        /// A position installed by `reset` is released as such (nothing before it exists here).
        var windowFromFloor: UInt64 = 0

        mutating func wakeAll() -> [CheckedContinuation<Void, Never>] {
            changes &+= 1
            defer { waiters = [:] }
            return Array(waiters.values)
        }

        /// The index of the first live entry whose LSN is after `cursor` (`window.count` if none):
        /// a binary search, the window being in LSN order. (A scan from the window's start ran
        /// under the lock that every release takes, over up to `windowRecordsMax` entries per
        /// pull of a subscriber near the end: 1.4% of all CPU in the sync commit phase, s27.)
        func firstEntry(after cursor: UInt64) -> Int {
            var low = windowStart, high = window.count
            while low < high {
                let middle = low + (high - low) / 2
                if window[middle].transaction.lsn <= cursor { low = middle + 1 } else { high = middle }
            }
            return low
        }

        /// Drops the oldest entries past the window's bounds (their subscribers read the WAL).
        mutating func trim() {
            while window.count - windowStart > ChangeHub.windowRecordsMax
                || (windowBytes > ChangeHub.windowBytesMax && window.count - windowStart > 1) {
                let entry = window[windowStart]
                windowBytes -= entry.bytes
                windowFrom = entry.transaction.lsn
                windowStart += 1
            }
            if windowStart > 0 && windowStart * 2 >= window.count {
                window.removeFirst(windowStart)
                windowStart = 0
            }
        }
    }

    private let state: Mutex<State>
    /// Tests only: runs after a puller decided to wait and before it waits (the window in which a
    /// release used to be lost).
    private let beforeWait: (@Sendable () async -> Void)?

    init(visible: UInt64, beforeWait: (@Sendable () async -> Void)? = nil) {
        state = Mutex(State(windowFrom: visible, windowThrough: visible, visible: visible, acknowledged: visible,
                            windowFromFloor: visible))
        self.beforeWait = beforeWait
    }

    var released: UInt64 { state.withLock { $0.released } }

    // MARK: Release

    func visibleAdvanced(to lsn: UInt64) {
        let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard lsn > s.visible else { return [] }
            let before = s.released
            s.visible = lsn
            return s.released > before ? s.wakeAll() : []
        }
        for w in wake { w.resume() }
    }

    /// A commit passed the commit gate: it (and every LSN before it) is acknowledged.
    func acknowledged(through lsn: UInt64) {
        let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard lsn > s.acknowledged else { return [] }
            let before = s.released
            s.acknowledged = lsn
            return s.released > before ? s.wakeAll() : []
        }
        for w in wake { w.resume() }
    }

    /// A commit gate was installed (true) or removed (false).
    func setGated(_ gated: Bool) {
        let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let before = s.released
            if gated && !s.gated {
                // What is visible when the gate arrives was replicated or written before it.
                s.acknowledged = max(s.acknowledged, s.visible)
            } else if !gated && s.gated {
                s.holdThrough = s.visible
            }
            s.gated = gated
            return s.released > before ? s.wakeAll() : []
        }
        for w in wake { w.resume() }
    }

    /// A replica installed a checkpoint at `lsn`: nothing before it can be read any more.
    func reset(to lsn: UInt64) {
        let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.window = []
            s.windowStart = 0
            s.windowBytes = 0
            s.windowFrom = lsn
            s.windowThrough = lsn
            s.visible = lsn
            s.acknowledged = lsn
            s.windowFromFloor = lsn
            s.holdThrough = 0
            s.generation += 1
            return s.wakeAll()
        }
        for w in wake { w.resume() }
    }

    // MARK: Pull

    private enum Step {
        case batch(ChangeBatch)
        case readBehind(released: UInt64, seen: UInt64)
        case fill(from: UInt64, released: UInt64, generation: Int)
        case wait(seen: UInt64)
    }

    /// The released records after `cursor` (at most `maxCount`), waiting until there is one.
    /// Throws AERO_WAL_LSN_UNAVAILABLE when `cursor` is older than the retained WAL, and
    /// CancellationError when the calling task is cancelled while waiting.
    func next(after cursor: UInt64, maxCount: Int, read: Reader) async throws -> ChangeBatch {
        let limit = max(1, maxCount)
        while true {
            try Task.checkCancellation()
            let step = state.withLock { s -> Step in
                let released = s.released
                if cursor >= released {
                    return .wait(seen: s.changes)
                }
                if cursor < s.windowFrom { return .readBehind(released: released, seen: s.changes) }
                if cursor < s.windowThrough {
                    var out: [CommittedTransaction] = []
                    var index = s.firstEntry(after: cursor)
                    while index < s.window.count && out.count < limit && s.window[index].transaction.lsn <= released {
                        out.append(s.window[index].transaction)
                        index += 1
                    }
                    let through = out.count == limit ? out.last!.lsn : min(s.windowThrough, released)
                    return .batch(ChangeBatch(transactions: out, through: through))
                }
                if s.filling { return .wait(seen: s.changes) }
                s.filling = true
                return .fill(from: s.windowThrough, released: released, generation: s.generation)
            }
            switch step {
            case .batch(let batch):
                return batch
            case .readBehind(let released, let seen):
                let records = try read(cursor &+ 1, Self.readBytesMax).filter { $0.lsn <= released }
                if records.isEmpty {
                    // Nothing durable after the cursor yet (a reset moved the window): wait.
                    try await waitForChange(seen: seen)
                    continue
                }
                let decoded = try records.prefix(limit).map(Self.decode)
                return ChangeBatch(transactions: decoded, through: decoded.last!.lsn)
            case .fill(let from, let released, let generation):
                var records: [WALRecord] = []
                var failure: (any Error)?
                do { records = try read(from &+ 1, Self.readBytesMax).filter { $0.lsn <= released } } catch { failure = error }
                let decoded: [Entry]
                do { decoded = try records.map { Entry(transaction: try Self.decode($0), bytes: $0.payload.count) } } catch {
                    failure = failure ?? error
                    decoded = []
                }
                let (wake, seen) = state.withLock { s -> ([CheckedContinuation<Void, Never>], UInt64) in
                    s.filling = false
                    if s.generation == generation && s.windowThrough == from {
                        for entry in decoded {
                            s.window.append(entry)
                            s.windowBytes += entry.bytes
                            s.windowThrough = entry.transaction.lsn
                        }
                        s.trim()
                    }
                    let wake = s.wakeAll()
                    return (wake, s.changes)
                }
                for w in wake { w.resume() }
                if let failure { throw failure }
                if decoded.isEmpty { try await waitForChange(seen: seen) }
            case .wait(let seen):
                try await waitForChange(seen: seen)
            }
        }
    }

    /// Suspends until the next release, fill or reset after the lock turn that saw `seen` (at
    /// once if one already happened), or cancellation.
    private func waitForChange(seen: UInt64) async throws {
        if let beforeWait { await beforeWait() }
        let id = state.withLock { s -> Int in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if Task.isCancelled || s.changes != seen { return true }
                    s.waiters[id] = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
        try Task.checkCancellation()
    }

    static func decode(_ record: WALRecord) throws -> CommittedTransaction {
        switch record.type {
        case .transaction:
            return CommittedTransaction(lsn: record.lsn, epoch: record.epoch, timestampMicros: record.timestampMicros,
                                        changes: try TransactionRecord.decodeChanges(record.payload, lsn: record.lsn),
                                        schemaChange: nil)
        case .schema:
            return CommittedTransaction(lsn: record.lsn, epoch: record.epoch, timestampMicros: record.timestampMicros,
                                        changes: [], schemaChange: try TransactionRecord.decodeSchemaChange(record.payload, lsn: record.lsn))
        default:
            return CommittedTransaction(lsn: record.lsn, epoch: record.epoch, timestampMicros: record.timestampMicros,
                                        changes: [], schemaChange: nil)
        }
    }
}
