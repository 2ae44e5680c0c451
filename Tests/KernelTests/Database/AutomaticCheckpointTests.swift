import Foundation
import Testing
@testable import Kernel

/// Automatic checkpoints: one starts after `checkpointEveryWALBytes` of WAL payload since the
/// last one, and none when it is 0. The byte count is kept outside the writer's lock
/// (`CheckpointCounter`), so it is checked here directly too.
@Suite struct AutomaticCheckpointTests {
    func insert(_ db: Database, _ i: Int) async throws {
        let doc: JSONValue = .object(["id": .string("doc-\(i)"), "name": .string(String(repeating: "x", count: 200))])
        _ = try await db.commit(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string("items"), "doc": doc])])]))
    }

    func open(_ dir: TemporaryDirectory, every: Int) async throws -> Database {
        var options = smallOptions(dir)
        options.checkpointEveryWALBytes = every
        let db = try await Database.open(options)
        _ = try await db.createCollection(json(#"{"name":"items","fields":{"id":{"type":"text","required":true},"name":{"type":"text","required":true}}}"#))
        return db
    }

    @Test func aCheckpointStartsOnceEnoughWALWasWritten() async throws {
        let dir = TemporaryDirectory()
        let db = try await open(dir, every: 4_096)
        for i in 0..<40 { try await insert(db, i) }  // ~9 KiB of payload
        var checkpointed: UInt64?
        for _ in 0..<500 {
            checkpointed = await db.status().lastCheckpointLSN
            if checkpointed != nil { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(checkpointed != nil, "no automatic checkpoint after more than checkpointEveryWALBytes of WAL")
        await db.close()
    }

    @Test func noAutomaticCheckpointWhenDisabled() async throws {
        let dir = TemporaryDirectory()
        let db = try await open(dir, every: 0)
        for i in 0..<40 { try await insert(db, i) }
        #expect(await db.status().lastCheckpointLSN == nil)
        await db.close()
    }

    @Test func theCounterIsDueOnceForConcurrentAskers() async {
        let counter = CheckpointCounter(every: 1_000)
        counter.add(999)
        #expect(!counter.takeDue())
        counter.add(1)
        let due = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<16 { group.addTask { counter.takeDue() } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(due == 1)
        #expect(!counter.takeDue())
        counter.add(5_000)
        counter.reset()
        #expect(!counter.takeDue())
        #expect(!CheckpointCounter(every: 0).takeDue())
    }
}
