// The primary's view of replica flushes, and the wait of `sync`/`all` commits on them.
//
// Invariants:
// - A commit waiting here returns only when `needed` replicas reported durable >= its LSN.
// - A replica counts only from its admission, which follows the history check of its session
//   (`admit`: its verified position), and only up to what it verifiably holds: the position
//   the check verified or the records this session sent it (`sent`). An ACK claiming more is
//   counted as that much (A1: a diverged or lying follower releases nothing). A new session of
//   a node replaces the old one's entry; a closed session's ACKs and sends are ignored.
// - A wait that times out, or that is pending when the node is fenced, fails with
//   AERO_COMMIT_IN_DOUBT: it may or may not survive a failover, so it is never reported as
//   success (SPEC §4). After `fence`, every wait fails at once until `reset`.

import Foundation
import Kernel
import Synchronization

final class AckTracker: Sendable {
    /// The accounting is the role's value (`AckLedger`); this shell keeps the continuations and
    /// timers and resumes them outside the lock.
    private struct State {
        var ledger = AckLedger()
        var continuations: [Int: CheckedContinuation<Void, any Error>] = [:]
        var nextID = 0
        var fenced: AeroError?
        /// Waits whose timer fired before they were registered.
        var expired: Set<Int> = []

        mutating func take(_ ids: [Int]) -> [CheckedContinuation<Void, any Error>] {
            ids.compactMap { continuations.removeValue(forKey: $0) }
        }
    }

    private let state = Mutex(State())

    func durable(of node: String) -> UInt64? { state.withLock { $0.ledger.replicas[node]?.durable } }

    var all: [String: UInt64] { state.withLock { $0.ledger.durable } }

    /// Ids of waits whose timer fired before they were registered (tests: none stays behind).
    var expiredCount: Int { state.withLock { $0.expired.count } }

    /// A follower's session passed the history check: it holds this history through `verified`
    /// (0 when it is being bootstrapped). Replaces any earlier session of the node.
    func admit(_ node: String, session: Int, verified: UInt64) {
        let ready = state.withLock { s in s.take(s.ledger.admit(node, session: session, verified: verified)) }
        for c in ready { c.resume() }
    }

    /// The session sent the replica everything through `lsn` (records or a checkpoint).
    func sent(_ node: String, session: Int, through lsn: UInt64) {
        state.withLock { $0.ledger.sent(node, session: session, through: lsn) }
    }

    /// Records a replica's flush report (counted up to what the session sent it) and releases
    /// the commits it completes.
    func update(_ node: String, session: Int, durable: UInt64) {
        let ready = state.withLock { s in s.take(s.ledger.update(node, session: session, durable: durable)) }
        for c in ready { c.resume() }
    }

    /// The session ended: its flushes no longer count.
    func forget(_ node: String, session: Int) {
        state.withLock { $0.ledger.forget(node, session: session) }
    }

    /// Waits until `needed` replicas flushed `lsn`; in doubt after `timeoutMillis` or a fence.
    func wait(_ lsn: UInt64, needed: Int, timeoutMillis: Int64) async throws {
        guard needed > 0 else { return }
        let id = state.withLock { s -> Int in
            defer { s.nextID += 1 }
            return s.nextID
        }
        let timer = Task {
            // Cancelled: the wait ended (the `defer` below); expiring it then would only leave its
            // id in `expired` for good (it was one Int per `sync` commit, never removed).
            do { try await Task.sleep(for: .milliseconds(timeoutMillis)) } catch { return }
            self.expire(id, AeroError(.commitInDoubt, "commit \(lsn) is durable on the primary but \(needed) replica(s) did not confirm it within \(timeoutMillis) ms; it may or may not survive a failover", invariant: "D1"))
        }
        defer {
            timer.cancel()
            state.withLock { _ = $0.expired.remove(id) }
        }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let outcome: Result<Bool, AeroError> = state.withLock { s in
                if let fenced = s.fenced { return .failure(fenced) }
                if s.expired.remove(id) != nil, !s.ledger.satisfied(lsn, needed: needed) {
                    return .failure(AeroError(.commitInDoubt, "commit \(lsn) was not confirmed by a replica in time", invariant: "D1"))
                }
                if s.ledger.wait(id, lsn: lsn, needed: needed) { return .success(true) }
                s.continuations[id] = c
                return .success(false)
            }
            switch outcome {
            case .success(true): c.resume()
            case .success(false): break
            case .failure(let e): c.resume(throwing: e)
            }
        }
    }

    private func expire(_ id: Int, _ error: AeroError) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            guard s.ledger.expire(id), let c = s.continuations.removeValue(forKey: id) else {
                s.expired.insert(id)
                return nil
            }
            return c
        }
        waiter?.resume(throwing: error)
    }

    /// Fails every pending and future wait (the node learned it was deposed, or hands over).
    func fence(_ error: AeroError) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.fenced = error
            return s.take(s.ledger.drain())
        }
        for c in waiters { c.resume(throwing: error) }
    }

    /// A new primary term: no replica known yet (before the node can admit any).
    func reset() {
        state.withLock { $0.ledger.reset() }
    }

    /// Waits are honoured again (the node is primary of its marker's epoch).
    func unfence() {
        state.withLock { $0.fenced = nil }
    }
}

/// What the primary's WAL keeps for connected replicas: everything after the least flushed one.
struct ReplicaRetention: RetentionFloor {
    let tracker: AckTracker

    var lsn: UInt64? { tracker.all.values.min().map { $0 + 1 } }
}

// The commit gate (`needed` replica flushes per commit, by the mode in effect) is
// ModalFlushGate in CommitModeSetting.swift.
