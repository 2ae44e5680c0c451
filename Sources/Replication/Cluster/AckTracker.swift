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
    /// How often waits past their deadline are failed in doubt: a wait's timeout is honoured
    /// within this much. One sweeping task serves every wait (a timer task per `sync` commit,
    /// created and cancelled per commit, was one more task switch on the commit's way back).
    static let sweepMillis: Int64 = 10

    /// The accounting is the role's value (`AckLedger`); this shell keeps the continuations and
    /// deadlines and resumes them outside the lock.
    private struct Deadline {
        let at: ContinuousClock.Instant
        let id: Int
        let lsn: UInt64
        let needed: Int
        let timeoutMillis: Int64
    }

    private struct State {
        var ledger = AckLedger()
        var continuations: [Int: CheckedContinuation<Void, any Error>] = [:]
        var nextID = 0
        var fenced: AeroError?
        /// The deadline of every wait registered since the last sweep (or still pending), in
        /// registration order; a sweep drops the entries of waits that ended.
        var deadlines: [Deadline] = []
        /// Whether the sweeping task runs (it ends when no deadline is left).
        var sweeping = false

        mutating func take(_ ids: [Int]) -> [CheckedContinuation<Void, any Error>] {
            ids.compactMap { continuations.removeValue(forKey: $0) }
        }
    }

    private let state = Mutex(State())

    func durable(of node: String) -> UInt64? { state.withLock { $0.ledger.replicas[node]?.durable } }

    var all: [String: UInt64] { state.withLock { $0.ledger.durable } }

    /// Deadlines still tracked (tests: a sweep drops those of waits that ended).
    var trackedDeadlines: Int { state.withLock { $0.deadlines.count } }

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

    /// `update` for an ACK as it arrives: false, with nothing counted, when it names a durable
    /// LSN beyond what the session verified or sent (`sent`, always counted before the write):
    /// the replica claims records it was never sent, so its report cannot be its durable
    /// position on this history (D1); the session refuses it.
    func updateIfSent(_ node: String, session: Int, durable: UInt64) -> Bool {
        let (counted, ready) = state.withLock { s -> (Bool, [CheckedContinuation<Void, any Error>]) in
            if let r = s.ledger.replicas[node], r.session == session, durable > r.sentThrough { return (false, []) }
            return (true, s.take(s.ledger.update(node, session: session, durable: durable)))
        }
        for c in ready { c.resume() }
        return counted
    }

    /// The session ended: its flushes no longer count.
    func forget(_ node: String, session: Int) {
        state.withLock { $0.ledger.forget(node, session: session) }
    }

    /// Waits until `needed` replicas flushed `lsn`; in doubt after `timeoutMillis` (within
    /// `sweepMillis`) or a fence.
    func wait(_ lsn: UInt64, needed: Int, timeoutMillis: Int64) async throws {
        guard needed > 0 else { return }
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(timeoutMillis))
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let (outcome, startSweeper): (Result<Bool, AeroError>, Bool) = state.withLock { s in
                if let fenced = s.fenced { return (.failure(fenced), false) }
                let id = s.nextID
                s.nextID += 1
                if s.ledger.wait(id, lsn: lsn, needed: needed) { return (.success(true), false) }
                s.continuations[id] = c
                s.deadlines.append(Deadline(at: deadline, id: id, lsn: lsn, needed: needed, timeoutMillis: timeoutMillis))
                defer { s.sweeping = true }
                return (.success(false), !s.sweeping)
            }
            if startSweeper { Task { await self.sweep() } }
            switch outcome {
            case .success(true): c.resume()
            case .success(false): break
            case .failure(let e): c.resume(throwing: e)
            }
        }
    }

    /// Every `sweepMillis` while deadlines are tracked: fails the waits past theirs in doubt and
    /// drops the entries of waits that ended.
    private func sweep() async {
        while true {
            try? await Task.sleep(for: .milliseconds(Self.sweepMillis))
            let now = ContinuousClock.now
            let (late, running) = state.withLock { s -> ([(CheckedContinuation<Void, any Error>, AeroError)], Bool) in
                var late: [(CheckedContinuation<Void, any Error>, AeroError)] = []
                var kept: [Deadline] = []
                kept.reserveCapacity(s.deadlines.count)
                for entry in s.deadlines where s.continuations[entry.id] != nil {  // else it ended
                    guard entry.at <= now else {
                        kept.append(entry)
                        continue
                    }
                    if s.ledger.expire(entry.id), let c = s.continuations.removeValue(forKey: entry.id) {
                        late.append((c, AeroError(.commitInDoubt, "commit \(entry.lsn) is durable on the primary but \(entry.needed) replica(s) did not confirm it within \(entry.timeoutMillis) ms; it may or may not survive a failover", invariant: "D1")))
                    }
                }
                s.deadlines = kept
                // Decided under the lock: a wait registered after this starts a new sweeper.
                if s.deadlines.isEmpty { s.sweeping = false }
                return (late, s.sweeping)
            }
            for (c, error) in late { c.resume(throwing: error) }
            if !running { return }
        }
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
