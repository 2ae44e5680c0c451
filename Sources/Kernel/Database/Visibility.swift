// What readers see: the newest state whose LSN is durable (D1: nothing is visible before it is
// acknowledged-durable), plus the states the writer sealed (Writer.swift: at least the state of
// the last record of every flush) still waiting for their flush.
//
// Invariants:
// - `published.lsn` never decreases.
// - A pending state is published only once the WAL reports its LSN durable.
// - Subscribers are told of every publication (they read the records themselves from the WAL).
// - The states a publication supersedes are released on `StateReleaser`'s thread, not the
//   publisher's (V1, bounded by `StateReleaser.queuedStatesMax`), unless it advanced by one
//   record (`StateReleaser.inPlaceRecordsMax`: a lone commit's states, cheaper than a wake-up).
// - `wait(lsn)` (read-your-writes, min-LSN reads, switchover) resumes from the publication that
//   reaches its LSN, under the lock that publishes it (nothing lost between check and wait), or
//   false at its deadline (a sweep every `sweepMillis` while waits are pending) or at close.
//   One list serves every waiter: no stream, task group or timer per wait.

import Synchronization

final class Visibility: Sendable {
    /// How often waits past their deadline are answered false.
    static let sweepMillis: Int64 = 10

    private struct Waiter {
        let lsn: UInt64
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var published: DatabaseState
        var pending: [DatabaseState] = []
        var listeners: [Int: AsyncStream<UInt64>.Continuation] = [:]
        var nextListener = 0
        var waiters: [Waiter] = []
        /// Whether the deadline sweep runs (it ends when no waiter is left).
        var sweeping = false
        var finished = false

        /// The waiters `published` satisfies, removed.
        mutating func reached() -> [CheckedContinuation<Bool, Never>] {
            let lsn = published.lsn
            guard waiters.contains(where: { $0.lsn <= lsn }) else { return [] }
            let ready = waiters.filter { $0.lsn <= lsn }.map(\.continuation)
            waiters.removeAll { $0.lsn <= lsn }
            return ready
        }
    }

    private let state: Mutex<State>
    private let releaser: StateReleaser

    init(initial: DatabaseState, releaser: StateReleaser = .shared) {
        state = Mutex(State(published: initial))
        self.releaser = releaser
    }

    var current: DatabaseState { state.withLock { $0.published } }

    /// Called by the single writer after the WAL accepted the state's record.
    func enqueue(_ next: DatabaseState) {
        state.withLock { s in
            precondition(next.lsn > (s.pending.last?.lsn ?? s.published.lsn), "pending states follow LSN order")
            s.pending.append(next)
        }
    }

    /// Publishes every pending state with LSN <= `lsn` (which must be durable). The states it
    /// supersedes are moved out under the lock and released by `releaser` after the waiters
    /// resumed (V1): the publisher (the WAL flusher) does not free them itself.
    func publish(through lsn: UInt64) {
        let (listeners, published, ready, superseded, records) = state.withLock { s -> ([AsyncStream<UInt64>.Continuation], UInt64?, [CheckedContinuation<Bool, Never>], [DatabaseState], UInt64) in
            var count = 0
            while count < s.pending.count && s.pending[count].lsn <= lsn { count += 1 }
            guard count > 0 else { return ([], nil, [], [], 0) }
            let records = s.pending[count - 1].lsn - s.published.lsn
            var superseded: [DatabaseState] = []
            superseded.reserveCapacity(count)
            superseded.append(s.published)
            superseded.append(contentsOf: s.pending[0..<(count - 1)])
            s.published = s.pending[count - 1]
            s.pending.removeFirst(count)
            return (Array(s.listeners.values), s.published.lsn, s.reached(), superseded, records)
        }
        for waiter in ready { waiter.resume(returning: true) }
        if let published { for listener in listeners { listener.yield(published) } }
        // Refused at the bound, or one record's states: released in there.
        releaser.takeOver(consume superseded, records: records)
    }

    /// Replaces everything (recovery or a replica installing a checkpoint).
    func reset(to next: DatabaseState) {
        let (listeners, ready) = state.withLock { s in
            s.published = next
            s.pending = []
            return (Array(s.listeners.values), s.reached())
        }
        for waiter in ready { waiter.resume(returning: true) }
        for listener in listeners { listener.yield(next.lsn) }
    }

    /// A stream of published LSNs, starting with the current one.
    func subscribe() -> AsyncStream<UInt64> {
        let (stream, continuation) = AsyncStream.makeStream(of: UInt64.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { s in
            let id = s.nextListener
            s.nextListener += 1
            s.listeners[id] = continuation
            continuation.yield(s.published.lsn)
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.listeners.removeValue(forKey: id) }
        }
        return stream
    }

    func finishSubscribers() {
        let (listeners, waiters) = state.withLock { s in
            defer {
                s.listeners = [:]
                s.waiters = []
                s.finished = true
            }
            return (Array(s.listeners.values), s.waiters)
        }
        for listener in listeners { listener.finish() }
        for waiter in waiters { waiter.continuation.resume(returning: false) }
    }

    /// True once `lsn` is published, false after `timeout` (within `sweepMillis`) or at close.
    func wait(_ lsn: UInt64, timeout: Duration) async -> Bool {
        if current.lsn >= lsn { return true }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        return await withCheckedContinuation { continuation in
            let (answer, startSweep) = state.withLock { s -> (Bool?, Bool) in
                if s.published.lsn >= lsn { return (true, false) }
                if s.finished { return (false, false) }
                s.waiters.append(Waiter(lsn: lsn, deadline: deadline, continuation: continuation))
                defer { s.sweeping = true }
                return (nil, !s.sweeping)
            }
            if startSweep { Task { await self.sweep() } }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    /// Every `sweepMillis` while waiters are pending: answers those past their deadline false.
    private func sweep() async {
        while true {
            try? await Task.sleep(for: .milliseconds(Self.sweepMillis))
            let now = ContinuousClock.now
            let (late, running) = state.withLock { s -> ([CheckedContinuation<Bool, Never>], Bool) in
                let late = s.waiters.filter { $0.deadline <= now }.map(\.continuation)
                if !late.isEmpty { s.waiters.removeAll { $0.deadline <= now } }
                // Decided under the lock: a wait added after this starts a new sweep.
                if s.waiters.isEmpty { s.sweeping = false }
                return (late, s.sweeping)
            }
            for waiter in late { waiter.resume(returning: false) }
            if !running { return }
        }
    }
}
