import Testing
@testable import Kernel

/// `KernelLimits.transactionOpsMax` holds on every write path, not only for `{"ops":[...]}`
/// JSON: the Swift API the REST, auth and storage front ends call is refused the same way, and
/// nothing of a refused transaction is logged or visible (C1).
@Suite struct TransactionOpsLimitTests {
    @Test func theSwiftWritePathRefusesMoreThanTheOpsLimit() async throws {
        let dir = TemporaryDirectory()
        var options = smallOptions(dir)
        options.walSegmentBytes = 8 << 20  // one record of 10,000 small inserts (~400 KB) fits
        let db = try await Database.open(options)
        _ = try await db.createCollection(json(#"{"name":"items","fields":{"id":{"type":"int"}}}"#))
        let before = db.snapshot().lsn
        let tooMany = (0...KernelLimits.transactionOpsMax).map { WriteOperation.insert(collection: "items", document: ["id": .int(Int64($0))]) }
        await #expect(throws: AeroError(.transactionTooLarge, "at most \(KernelLimits.transactionOpsMax) operations per transaction")) {
            _ = try await db.commit(tooMany)
        }
        #expect(db.snapshot().lsn == before)
        #expect(try db.snapshot().query(Query(collection: "items", count: true)).totalCount == 0)
        // Exactly the limit is accepted.
        let result = try await db.commit(Array(tooMany.dropLast()))
        #expect(result.changes.count == KernelLimits.transactionOpsMax)
        await db.close()
    }
}
