// Read-your-writes for forwarded writes (issue 19): a replica answers a forwarded write only once
// it applied the LSN the primary's answer names. `Database.waitApplied` subscribes a stream per
// call and races it against a sleeping task in a task group, and every waiter wakes at every
// publication until its own LSN comes; with 64 forwards in flight that is 64 wake-ups per
// replicated batch, two tasks and a timer per write. Here one subscription per database serves
// every waiting forward: a publication resumes exactly the waiters it satisfies, a deadline sweep
// (every `sweepMillis`) answers the ones past their wait with `false`.
//
// Nothing is lost between the check and the wait: a waiter is added under the lock that also
// records the newest LSN the subscription has seen, and the subscription keeps the newest
// publication it has not handled yet (`Visibility`: buffering newest 1), so a publication at or
// past the waiter's LSN is handled after the waiter is in the list, or was seen before it (and
// the waiter is answered at once).

import Kernel
import NIOCore
import NIOPosix
import Synchronization

final class ApplyWaiters: Sendable {
    /// How often waiters past their deadline are answered `false`.
    static let sweepMillis: Int64 = 50

    private struct Waiter {
        let lsn: UInt64
        let deadline: NIODeadline
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var waiters: [Waiter] = []
        /// The newest published LSN the subscription handled.
        var seen: UInt64 = 0
        var started = false
        var finished = false
    }

    private let database: Database
    private let state = Mutex(State())

    init(database: Database) {
        self.database = database
    }

    /// True once this node applied `lsn`, false after `timeout` without it.
    func wait(_ lsn: UInt64, timeout: TimeAmount) async -> Bool {
        if database.snapshot().lsn >= lsn { return true }
        startIfNeeded()
        return await withCheckedContinuation { continuation in
            let answer: Bool? = state.withLock { state in
                if state.seen >= lsn { return true }
                if state.finished { return false }
                state.waiters.append(Waiter(lsn: lsn, deadline: .now() + timeout, continuation: continuation))
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    private func startIfNeeded() {
        let start = state.withLock { state in
            defer { state.started = true }
            return !state.started
        }
        guard start else { return }
        let signals = database.appliedSignals()
        Task.detached { [self] in
            for await published in signals { resume(through: published) }
            finish()
        }
        // Runs until the subscription ends (`expire` returns false) or this object is gone.
        _ = MultiThreadedEventLoopGroup.singleton.next()
            .scheduleRepeatedTask(initialDelay: .milliseconds(Self.sweepMillis), delay: .milliseconds(Self.sweepMillis)) { [weak self] task in
                guard let self else { return task.cancel() }
                if !self.expire() { task.cancel() }
            }
    }

    private func resume(through published: UInt64) {
        let ready = state.withLock { state -> [Waiter] in
            state.seen = max(state.seen, published)
            guard state.waiters.contains(where: { $0.lsn <= published }) else { return [] }
            let ready = state.waiters.filter { $0.lsn <= published }
            state.waiters.removeAll { $0.lsn <= published }
            return ready
        }
        for waiter in ready { waiter.continuation.resume(returning: true) }
    }

    /// Answers the waiters past their deadline; false once the subscription ended (stop sweeping).
    private func expire() -> Bool {
        let now = NIODeadline.now()
        let (late, running) = state.withLock { state -> ([Waiter], Bool) in
            guard state.waiters.contains(where: { $0.deadline <= now }) else { return ([], !state.finished) }
            let late = state.waiters.filter { $0.deadline <= now }
            state.waiters.removeAll { $0.deadline <= now }
            return (late, !state.finished)
        }
        for waiter in late { waiter.continuation.resume(returning: false) }
        return running
    }

    /// The database closed: nothing more will be applied.
    private func finish() {
        let left = state.withLock { state -> [Waiter] in
            state.finished = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in left { waiter.continuation.resume(returning: false) }
    }
}
