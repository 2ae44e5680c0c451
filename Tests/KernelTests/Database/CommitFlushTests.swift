// Group commit as `Database.commit` drives it (D1): a commit that is the only one in progress
// flushes itself at once (no yield: nobody could join), and commits that overlap still share
// flushes, also with a thread of the cooperative pool kept busy by other work.

import Foundation
import Synchronization
import Testing
@testable import Kernel

@Suite struct CommitFlushTests {
    static let schema = #"{"name":"notes","fields":{"id":{"type":"text"},"n":{"type":"int"}}}"#

    func open(_ dir: TemporaryDirectory, _ engine: IOEngineChoice) async throws -> Database {
        var options = smallOptions(dir)
        options.walEngine = engine
        // However slow a loaded disk is: the bound has its own test (WALTests).
        options.walCallerFlushMaxMicros = .max
        options.walSegmentBytes = 1 << 20
        let db = try await Database.open(options)
        _ = try await db.createCollection(try JSON.parse(Self.schema))
        return db
    }

    func insert(_ db: Database, _ id: String, _ n: Int) async throws -> UInt64 {
        try await db.commit([.insert(collection: "notes", document: ["id": .string(id), "n": .int(Int64(n))])]).lsn
    }

    @Test(arguments: walEngines)
    func aCommitAloneIsFlushedByItsCaller(engine: IOEngineChoice) async throws {
        let dir = TemporaryDirectory()
        let db = try await open(dir, engine)
        let before = db.walFlushes
        for i in 0..<100 { _ = try await insert(db, "n\(i)", i) }
        let after = db.walFlushes
        await db.close()
        // One flush per commit, by their callers but for: the first ones (the flusher takes a
        // lone commit until `callerFlushAfterLoneFlushes` lone flushes in a row), and the one in
        // `aloneCommitsPerYield` that yields first: on a busy pool (the suites beside this one)
        // its task may resume after the flusher's timed wait (`callerFlushWaitMillis`) took it
        // (12 of 12 did in a full `scripts/test`). A commit that does not yield takes its group
        // right after placing it.
        let yielding = 100 / Database.aloneCommitsPerYield
        #expect(after.all - before.all == 100)
        #expect(after.byCallers - before.byCallers >= 100 - yielding - WriteAheadLog.callerFlushAfterLoneFlushes - 2,
                "\(after.byCallers - before.byCallers) of 100 flushed by their callers")
    }

    /// 32 tasks commit 50 times each through `Database.commit` while one pool thread spins: they
    /// must share flushes. A commit that wrongly counted itself alone would flush without letting
    /// the others place theirs first, and each would then be alone in turn (1,323-1,563 flushes
    /// for 1,600 commits when the yield was missing, BENCHMARKS 2026-12-04).
    @Test func overlappingCommitsShareFlushesWithAPoolThreadBusy() async throws {
        let dir = TemporaryDirectory()
        let db = try await open(dir, walEngines.last!)
        let done = Atomic<Bool>(false)
        Task.detached {
            let end = ContinuousClock.now + .seconds(5)
            while !done.load(ordering: .relaxed) && ContinuousClock.now < end {}
        }
        defer { done.store(true, ordering: .relaxed) }
        let before = db.walFlushes
        let lsns = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for task in 0..<32 {
                group.addTask {
                    var mine: [UInt64] = []
                    for i in 0..<50 { mine.append(try await insert(db, "t\(task)-\(i)", i)) }
                    return mine
                }
            }
            return try await group.reduce(into: [UInt64]()) { $0 += $1 }
        }
        done.store(true, ordering: .relaxed)
        let flushes = db.walFlushes.all - before.all
        #expect(Set(lsns).count == 1600)
        #expect(flushes < 800, "group commit: \(flushes) flushes for 1600 commits")
        #expect(try db.query(JSON.parse(#"{"collection":"notes","limit":2000}"#)).rows.count == 1600)
        await db.close()
    }
}
