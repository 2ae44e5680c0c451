// S3MultipartExpiry: expired multipart uploads are dropped by the primary's periodic run in
// bounded passes (at most rowsPerPassMax rows per transaction), fresh ones are kept, and a
// replica deletes nothing (docs/STORAGE.md "S3", docs/LIMITS.md S3MultipartLimits.uploadSeconds).

import Foundation
import Kernel
import Testing
@testable import BaaS

@Suite struct S3MultipartExpiryTests {
    @Test func expiredUploadsAreDroppedInBoundedPassesOnThePrimaryOnly() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir + "/data"))
        let clock = ManualClock()
        let service = try StorageService(database: db, secret: Array(repeating: 9, count: 32), clock: clock, peers: .alone, logger: .init(label: "test"))
        try await SystemCollections.ensure(S3MultipartCollections.all, in: db)
        // Two uploads created now (one with 700 parts: more than one pass), then one a day later.
        func upload(_ id: String, parts: Int) async throws {
            var ops: [WriteOperation] = [.insert(collection: S3MultipartCollections.uploads, document: [
                "id": .string(id), "bucket_id": .string("b"), "name": .string(id), "mime_type": .string("application/octet-stream"),
                "cache_control": .string("3600"), "metadata": .null, "owner": .null, "created_s": .int(service.nowSeconds), "bytes": .int(0),
            ])]
            for n in 0..<parts {
                ops.append(.insert(collection: S3MultipartCollections.parts, document: [
                    "id": .string(S3Multipart.partID(id, n + 1)), "upload_id": .string(id), "part_number": .int(Int64(n + 1)),
                    "sha256": .string(String(repeating: id == "fresh" ? "b" : "a", count: 64)), "size": .int(1), "etag": .string("\"x\""),
                ]))
            }
            _ = try await db.commit(ops)
        }
        try await upload("old-big", parts: 700)
        try await upload("old-small", parts: 3)
        clock.advance(micros: (S3MultipartLimits.uploadSeconds - 10) * 1_000_000)
        try await upload("fresh", parts: 2)
        func count(_ collection: String) throws -> Int { try db.snapshot().rowsIfPresent(Query(collection: collection, limit: 10_000)).count }
        // Not yet expired: nothing to do.
        #expect(try await S3MultipartExpiry.pass(service, nowSeconds: service.nowSeconds) == .init())
        clock.advance(micros: 20 * 1_000_000)
        // A replica deletes nothing.
        #expect(await S3MultipartExpiry.run(service, isPrimary: { false }, logger: .init(label: "test")) == nil)
        #expect(try count(S3MultipartCollections.parts) == 705)
        // One pass is bounded.
        let first = try await S3MultipartExpiry.pass(service, nowSeconds: service.nowSeconds)
        #expect(first.uploads + first.parts <= S3MultipartExpiry.rowsPerPassMax && first.parts > 0)
        // The run drains the rest; the fresh upload and its parts stay.
        let report = try #require(await S3MultipartExpiry.run(service, isPrimary: { true }, logger: .init(label: "test")))
        #expect(first.uploads + report.uploads == 2 && first.parts + report.parts == 703)
        let left = try db.snapshot().rowsIfPresent(Query(collection: S3MultipartCollections.uploads, limit: 10))
        #expect(left.map { $0["id"]?.stringValue } == ["fresh"])
        #expect(try count(S3MultipartCollections.parts) == 2)
        // The part blobs are no longer referenced (BlobCollector may take them).
        #expect(try !S3MultipartCollections.referenced(String(repeating: "a", count: 64), db.snapshot()))
        #expect(try S3MultipartCollections.referenced(String(repeating: "b", count: 64), db.snapshot()))
    }

    /// An UploadPart that commits after Abort/Complete/expiry read its snapshot: the drop matches
    /// parts when it applies, so the late part goes with its upload (built from the snapshot's
    /// part keys, it stayed: a row of no upload whose blob BlobCollector never takes).
    @Test func aPartCommittedAfterTheDropWasDecidedGoesWithItsUpload() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir + "/data"))
        try await SystemCollections.ensure(S3MultipartCollections.all, in: db)
        func part(_ n: Int) -> WriteOperation {
            .insert(collection: S3MultipartCollections.parts, document: [
                "id": .string(S3Multipart.partID("u", n)), "upload_id": .string("u"), "part_number": .int(Int64(n)),
                "sha256": .string(String(repeating: "c", count: 64)), "size": .int(1), "etag": .string("\"x\""),
            ])
        }
        _ = try await db.commit([.insert(collection: S3MultipartCollections.uploads, document: [
            "id": .string("u"), "bucket_id": .string("b"), "name": .string("k"), "mime_type": .string("application/octet-stream"),
            "cache_control": .string("3600"), "metadata": .null, "owner": .null, "created_s": .int(0), "bytes": .int(0),
        ]), part(1), part(2)])
        let drop = S3MultipartExpiry.dropUploads([.string("u")])
        _ = try await db.commit([part(3)])  // the racing UploadPart
        _ = try await db.commit(drop)
        #expect(try db.snapshot().rowsIfPresent(Query(collection: S3MultipartCollections.parts, limit: 10)).isEmpty)
        #expect(try !S3MultipartCollections.referenced(String(repeating: "c", count: 64), db.snapshot()))
        // A part arriving after the drop cannot be written: its upload's row is gone (NoSuchUpload).
        await #expect(throws: AeroError.self) {
            _ = try await db.commit([part(4), .update(collection: S3MultipartCollections.uploads, target: .key(.string("u")), set: ["bytes": .int(1)])])
        }
        #expect(try db.snapshot().rowsIfPresent(Query(collection: S3MultipartCollections.parts, limit: 10)).isEmpty)
    }
}
