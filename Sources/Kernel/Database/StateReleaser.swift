// Superseded database states are released here, on a thread of their own, not on the thread that
// publishes them (the WAL flusher, through `Visibility.publish`). Dropping the last reference to a
// state frees every tree node no later state shares; on the flusher that work sat between a
// flush and the wake-up of its committers and of a replica's acknowledgement, and delayed the
// next write. The releaser does it while the flusher waits for its next fdatasync.
//
// Invariants:
// - V1 (bounded): at most `queuedStatesMax` states wait here. A handover that would pass it is
//   refused and the caller releases the states itself, as before: a releaser that falls behind
//   slows the publisher down, memory never grows with it. A publication of one record (a lone
//   writer's commit) is released in place: less work than the wake-up (`inPlaceRecordsMax`).
// - Only memory moves here: a state handed over is no longer reachable through `Visibility`
//   (it was superseded under its lock); a reader's snapshot keeps its own reference, so what a
//   reader sees never depends on when the releaser runs.

import Dispatch
import Foundation
import Synchronization

final class StateReleaser: Sendable {
    /// States waiting to be released, at most (LIMITS: `StateReleaser.queuedStatesMax`).
    static let queuedStatesMax = 4_096

    /// A publication that advances by at most this many records releases what it supersedes in
    /// place (LIMITS): that is the nodes of one commit's path copies, a few microseconds, less
    /// than waking this thread, which cost a lone writer 1.56 more context switches per commit
    /// (4.44 -> 6.00, `perf stat` around `aerodb bench --workload commit --writers 1`).
    static let inPlaceRecordsMax: UInt64 = 1

    /// The process's releaser (one thread, started at the first handover).
    static let shared = StateReleaser(runsThread: true)

    private struct State {
        var queued: [[DatabaseState]] = []
        var queuedStates = 0
        var started = false
        /// Handovers taken, refused (bound reached) and left in place (a small publication): for tests.
        var taken = 0
        var refused = 0
        var inPlace = 0
    }

    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)
    private let runsThread: Bool

    /// `runsThread: false` only in tests: nothing is released until `drain()`.
    init(runsThread: Bool) {
        self.runsThread = runsThread
    }

    /// Takes `states`, superseded by a publication that advanced `records` LSNs, to release them
    /// on the releaser's thread. Returns false when that would pass `queuedStatesMax` (V1), or
    /// when `records` is at most `inPlaceRecordsMax`: they are released on the caller's thread.
    /// The array is moved into the queue under the lock (the caller passes it with `consume`):
    /// no reference stays with the caller, else the releaser could drop its own first and the
    /// caller's would be the last one after all, freeing the states on the publisher's thread.
    @discardableResult
    func takeOver(_ states: consuming [DatabaseState], records: UInt64 = .max) -> Bool {
        let count = states.count
        guard count > 0 else { return true }
        var handed: [DatabaseState]? = consume states
        let (taken, start) = state.withLock { s -> (Bool, Bool) in
            guard records > Self.inPlaceRecordsMax else {
                s.inPlace += 1
                return (false, false)
            }
            guard s.queuedStates + count <= Self.queuedStatesMax else {
                s.refused += 1
                return (false, false)
            }
            s.queued.append(handed.take()!)
            s.queuedStates += count
            s.taken += 1
            defer { s.started = true }
            return (true, runsThread && !s.started)
        }
        if start { startThread() }
        if taken && runsThread { work.signal() }
        return taken
    }

    /// States waiting now.
    var queuedStates: Int { state.withLock { $0.queuedStates } }

    /// Handovers taken, refused and left in place so far.
    var handovers: (taken: Int, refused: Int, inPlace: Int) { state.withLock { ($0.taken, $0.refused, $0.inPlace) } }

    /// Releases everything waiting (the thread's loop; tests call it directly).
    func drain() {
        // Taken out under the lock, dropped outside it.
        let batch = state.withLock { s -> [[DatabaseState]] in
            defer {
                s.queued = []
                s.queuedStates = 0
            }
            return s.queued
        }
        _ = consume batch
    }

    private func startThread() {
        NamedThread.start("aero-releaser") { [self] in
            while true {
                work.wait()
                drain()
            }
        }
    }
}
