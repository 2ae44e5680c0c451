import Foundation
import Testing
@testable import Kernel

@Suite struct DatabaseTests {
    static let items = #"""
    {"name":"items","fields":{"id":{"type":"text","required":true},"name":{"type":"text","required":true},
     "qty":{"type":"int","nullable":true},"tags":{"type":"array<text>","nullable":true},
     "created_at":{"type":"timestamp","default":"now()"}},
     "indexes":[{"fields":["qty"]},{"fields":["name"],"unique":true},{"fields":["name"],"type":"fulltext"}]}
    """#

    func openWithItems(_ dir: TemporaryDirectory) async throws -> Database {
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.items))
        return db
    }

    func insert(_ db: Database, _ id: String, qty: Int64?) async throws -> UInt64 {
        let doc: JSONValue = .object(["id": .string(id), "name": .string("item \(id)"), "qty": qty.map { .int($0) } ?? .null])
        return try await db.commit(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string("items"), "doc": doc])])])).lsn
    }

    func ids(_ db: Database, _ filter: String? = nil) throws -> [String] {
        let filterPart = filter.map { #","filter":\#($0)"# } ?? ""
        return try db.query(json(#"{"collection":"items"\#(filterPart),"order":[{"field":"id","dir":"asc"}]}"#))
            .rows.compactMap { $0["id"]?.stringValue }
    }

    @Test func commitsAreDurableVisibleAndOrdered() async throws {
        let dir = TemporaryDirectory()
        let db = try await openWithItems(dir)
        let first = try await insert(db, "a", qty: 1)
        let second = try await insert(db, "b", qty: 5)
        #expect(second == first + 1)
        #expect(try ids(db, #"{"qty":{"$gte":3}}"#) == ["b"])
        let status = await db.status()
        #expect(status.durableLSN == second && status.appliedLSN == second && status.epoch == 1)
        await db.close()
    }

    @Test func aFailingOperationRollsBackTheWholeTransaction() async throws {
        let dir = TemporaryDirectory()
        let db = try await openWithItems(dir)
        let before = try await insert(db, "a", qty: 1)
        let tx = json(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"b","name":"new"}},{"op":"insert","collection":"items","doc":{"id":"c","name":"item a"}}]}"#)
        await #expect(throws: AeroError.self) { try await db.commit(tx) }
        #expect(try ids(db) == ["a"])
        #expect(db.snapshot().lsn == before)
        await db.close()
    }

    @Test func uniqueAndPrimaryKeyViolationsAreRefused() async throws {
        let dir = TemporaryDirectory()
        let db = try await openWithItems(dir)
        _ = try await insert(db, "a", qty: 1)
        do {
            _ = try await insert(db, "a", qty: 2)
            Issue.record("duplicate primary key accepted")
        } catch let error as AeroError {
            #expect(error.code == .duplicateKey)
        }
        let sameName = json(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"z","name":"item a"}}]}"#)
        do {
            _ = try await db.commit(sameName)
            Issue.record("unique index violation accepted")
        } catch let error as AeroError {
            #expect(error.code == .duplicateKey)
        }
        await db.close()
    }

    @Test func snapshotsDoNotChangeWhileWritersCommit() async throws {
        let dir = TemporaryDirectory()
        let db = try await openWithItems(dir)
        for i in 0..<20 { _ = try await insert(db, "k\(i)", qty: Int64(i)) }
        let snapshot = db.snapshot()
        let query = try Query.parse(json(#"{"collection":"items","filter":{"qty":{"$gte":0}},"order":[{"field":"qty","dir":"asc"}]}"#))
        let before = try snapshot.query(query).rows
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    for i in 0..<25 {
                        _ = try await db.commit(json(#"{"ops":[{"op":"update","collection":"items","key":"k\#(i % 20)","set":{"qty":\#(1000 + w * 100 + i)}},{"op":"insert","collection":"items","doc":{"id":"w\#(w)-\#(i)","name":"w\#(w)-\#(i)"}}]}"#))
                    }
                }
            }
            for _ in 0..<50 { #expect(try snapshot.query(query).rows == before) }
            try await group.waitForAll()
        }
        #expect(try snapshot.query(query).rows == before)
        #expect(try db.snapshot().query(query).rows != before)
        await db.close()
    }

    @Test func recoveryReplaysTheLogAfterTheCheckpointAndLSNsNeverReset() async throws {
        let dir = TemporaryDirectory()
        var db = try await openWithItems(dir)
        for i in 0..<50 { _ = try await insert(db, "a\(i)", qty: Int64(i)) }
        let checkpointLSN = try await db.checkpoint()
        for i in 0..<50 { _ = try await insert(db, "b\(i)", qty: Int64(i)) }
        _ = try await db.commit(json(#"{"ops":[{"op":"delete","collection":"items","key":"a3"},{"op":"update","collection":"items","key":"b7","set":{"qty":777}}]}"#))
        _ = try await db.addIndex(collection: "items", json(#"{"fields":["created_at"]}"#))
        let expected = try db.query(json(#"{"collection":"items","order":[{"field":"id","dir":"asc"}]}"#))
        await db.close()

        db = try await Database.open(smallOptions(dir))
        #expect(db.openReport.checkpointFile == CheckpointFile.fileName(lsn: checkpointLSN))
        #expect(db.openReport.recordsReplayed == Int(expected.lsn - checkpointLSN))
        let recovered = try db.query(json(#"{"collection":"items","order":[{"field":"id","dir":"asc"}]}"#))
        #expect(recovered.rows == expected.rows)
        #expect(recovered.lsn == expected.lsn)
        #expect(db.collections().first?.indexes.count == 4)
        let next = try await insert(db, "c", qty: 1)
        #expect(next == expected.lsn + 1)
        await db.close()
    }

    @Test func aDamagedNewestCheckpointFallsBackToTheOlderOne() async throws {
        let dir = TemporaryDirectory()
        var db = try await openWithItems(dir)
        for i in 0..<10 { _ = try await insert(db, "a\(i)", qty: Int64(i)) }
        _ = try await db.checkpoint()
        for i in 0..<10 { _ = try await insert(db, "b\(i)", qty: Int64(i)) }
        let newest = try await db.checkpoint()
        _ = try await insert(db, "c", qty: 1)
        let expected = try ids(db)
        await db.close()

        let path = dir.path + "/data/checkpoints/" + CheckpointFile.fileName(lsn: newest)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 5] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        db = try await Database.open(smallOptions(dir))
        #expect(db.openReport.skippedCheckpoints.map(\.code) == [.checkpointCorrupt])
        #expect(try ids(db) == expected)
        await db.close()
        #expect(throws: AeroError.self) { try Database.verify(dataDirectory: dir.path + "/data", fileSystem: POSIXFileSystem()) }
    }

    @Test func referencesAreCheckedAndOnDeleteActionsApplied() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(#"{"name":"users","fields":{"id":{"type":"text"}}}"#))
        _ = try await db.createCollection(json(#"{"name":"posts","fields":{"id":{"type":"text"},"author":{"type":"text","references":{"collection":"users","on_delete":"cascade"}}}}"#))
        _ = try await db.createCollection(json(#"{"name":"notes","fields":{"id":{"type":"text"},"user_id":{"type":"text","references":{"collection":"users","on_delete":"restrict"}}}}"#))
        _ = try await db.commit(json(#"{"ops":[{"op":"insert","collection":"users","doc":{"id":"u1"}},{"op":"insert","collection":"users","doc":{"id":"u2"}},{"op":"insert","collection":"posts","doc":{"id":"p1","author":"u1"}},{"op":"insert","collection":"notes","doc":{"id":"n1","user_id":"u2"}}]}"#))
        await #expect(throws: AeroError.self) {
            try await db.commit(json(#"{"ops":[{"op":"insert","collection":"posts","doc":{"id":"p2","author":"nobody"}}]}"#))
        }
        await #expect(throws: AeroError.self) {
            try await db.commit(json(#"{"ops":[{"op":"delete","collection":"users","key":"u2"}]}"#))
        }
        let result = try await db.commit(json(#"{"ops":[{"op":"delete","collection":"users","key":"u1"}]}"#))
        #expect(result.changes.map(\.collection) == ["users", "posts"])
        #expect(try db.query(json(#"{"collection":"posts"}"#)).rows.isEmpty)
        await #expect(throws: AeroError.self) { try await db.dropCollection("users") }
        await db.close()
    }

    @Test func writesPastTheMemoryLimitAreRefusedCleanly() async throws {
        let dir = TemporaryDirectory()
        var options = smallOptions(dir)
        options.memoryBytesMax = 64 << 10
        let db = try await Database.open(options)
        _ = try await db.createCollection(json(Self.items))
        var refused: AeroError?
        for i in 0..<2000 where refused == nil {
            do { _ = try await insert(db, "id-\(i)-" + String(repeating: "x", count: 100), qty: 1) } catch let e as AeroError { refused = e }
        }
        #expect(refused?.code == .memoryLimit)
        let lsn = db.snapshot().lsn
        _ = try await db.commit(json(#"{"ops":[{"op":"delete","collection":"items","filter":{"qty":1}}]}"#))
        #expect(db.snapshot().lsn == lsn + 1)
        await db.close()
    }

    @Test func theChangeStreamReplaysFromAnLSNAndFollowsLiveCommits() async throws {
        let dir = TemporaryDirectory()
        let db = try await openWithItems(dir)
        let first = try await insert(db, "a", qty: 1)
        _ = try await insert(db, "b", qty: 2)
        let stream = db.changes(after: first - 1)
        var received: [CommittedTransaction] = []
        Task { _ = try await insert(db, "c", qty: 3) }
        for try await tx in stream {
            received.append(tx)
            if received.count == 3 { break }
        }
        #expect(received.map(\.lsn) == [first, first + 1, first + 2])
        #expect(received.map { $0.changes.first?.key } == [.string("a"), .string("b"), .string("c")])
        #expect(received[0].changes[0].kind == .insert)
        await db.close()
    }

    @Test func fieldsAreAddedAndDroppedAsLoggedSchemaChanges() async throws {
        let dir = TemporaryDirectory()
        var db = try await openWithItems(dir)
        _ = try await insert(db, "a", qty: 1)
        await #expect(throws: AeroError.self) {
            try await db.addField(collection: "items", json(#"{"name":"color","type":"text","required":true}"#))
        }
        _ = try await db.addField(collection: "items", json(#"{"name":"color","type":"text","default":"blue"}"#))
        _ = try await db.addField(collection: "items", json(#"{"name":"note","type":"text","nullable":true}"#))
        _ = try await db.dropField(collection: "items", name: "tags")
        await #expect(throws: AeroError.self) { try await db.dropField(collection: "items", name: "qty") }  // indexed
        await #expect(throws: AeroError.self) { try await db.dropField(collection: "items", name: "id") }
        let expected = try db.query(json(#"{"collection":"items"}"#)).rows
        #expect(expected.first?["color"] == .string("blue"))
        #expect(expected.first?["note"] == .null)
        #expect(expected.first?["tags"] == nil)
        await db.close()
        db = try await Database.open(smallOptions(dir))
        #expect(try db.query(json(#"{"collection":"items"}"#)).rows == expected)
        #expect(db.collections().first?.fields["tags"] == nil)
        _ = try await insert(db, "b", qty: 1)
        #expect(try db.snapshot().document("items", key: .string("b"))?["color"] == .string("blue"))
        await #expect(throws: AeroError.self) {
            try await db.commit(json(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"c","name":"c","tags":["x"]}}]}"#))
        }
        await db.close()
    }
}
