// Replication work that may block: a WAL read that goes to the segment files (a replica catching
// up from further back than the ~16 MiB the WAL keeps in memory, or any replica after the primary
// restarted), an apply that waits for the WAL's next segment to be preallocated, a rejoin's fork
// search. None of it may run on a channel's event loop (every other channel of that loop would
// wait, and the loops are NIO's shared group), and the disk reads do not run on the cooperative
// pool either (two threads here: a catch-up would stall every task of the node). The event loop
// takes the non-blocking paths (`Database.recentRecords`, `applyReplicatedWithoutWaiting`) and
// hands the rest to `BlockingWork`'s own threads or to the session's task.
//
// The two calls that may block go through `records` and `applyMayWait` only, which count where
// they ran (`ReplicationProbes`): the tests check that neither ever ran on an event loop.

import Kernel
import NIOCore
import NIOPosix
import Synchronization

enum BlockingWork {
    /// Threads that run the replication reads that may go to disk (a catch-up's segment reads,
    /// a rejoin's fork search); further ones wait their turn.
    static let threads = ReplicationLimits.blockingReadThreads

    private static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool  // lives as long as the process
    }()

    /// Runs `body` on the pool's threads; the caller resumes on its own executor (a sender
    /// isolated to its channel's event loop resumes there, in order).
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    /// `Database.records(from:maxBytes:)`, which reads the segment files when `lsn` is older than
    /// what the WAL keeps in memory: called off the event loops only.
    static func records(_ database: Database, from lsn: UInt64, maxBytes: Int) throws -> [WALRecord] {
        ReplicationProbes.note(ReplicationProbes.diskReads, ReplicationProbes.diskReadsOnEventLoop)
        return try database.records(from: lsn, maxBytes: maxBytes)
    }

    /// `Database.applyReplicated`, which may wait for (or do) the preallocation of the WAL's next
    /// segment: the session's task calls it, never the event loop.
    static func applyMayWait(_ database: Database, _ records: [WALRecord]) throws -> UInt64 {
        ReplicationProbes.note(ReplicationProbes.waitingApplies, ReplicationProbes.waitingAppliesOnEventLoop)
        return try database.applyReplicated(records)
    }
}

/// Counts of the calls that may block and of those made on an event loop (which must stay 0),
/// and of frames an event loop refused to apply because they would wait; for tests and the
/// mutation checks of the off-loop paths.
enum ReplicationProbes {
    static let diskReads = Atomic<Int>(0)
    static let diskReadsOnEventLoop = Atomic<Int>(0)
    static let waitingApplies = Atomic<Int>(0)
    static let waitingAppliesOnEventLoop = Atomic<Int>(0)
    static let framesLeftToTheStream = Atomic<Int>(0)

    static func note(_ calls: borrowing Atomic<Int>, _ onEventLoop: borrowing Atomic<Int>) {
        calls.add(1, ordering: .relaxed)
        if MultiThreadedEventLoopGroup.currentEventLoop != nil { onEventLoop.add(1, ordering: .relaxed) }
    }
}
