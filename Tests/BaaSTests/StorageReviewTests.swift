// Review fixes of the storage front end: per-owner shares of the resumable upload bounds (ST5),
// the TUS checksum extension discarding a chunk that does not match (ST4), and list_v2 walking
// a prefix of any size as a keyset over the by_path index (ST6).

import Crypto
import Foundation
import Testing
import Kernel
@testable import BaaS

@Suite struct StorageReviewTests {
    static func info(owner: String?, share: String? = nil, length: Int64 = 10) -> ResumableInfo {
        ResumableInfo(bucket: "b", name: "f/x.bin", mime: "application/octet-stream", cacheControl: "3600", metadata: .null,
                      upsert: false, owner: owner, length: length, offset: 0, created: 1_000,
                      expires: 1_000 + StorageLimits.resumableRetentionSeconds, share: share)
    }

    static func code(_ body: () throws -> Void) -> String? {
        do { try body(); return nil } catch let e as StorageError { return e.code } catch { return "\(error)" }
    }

    /// ST5: each owner has its own share of the node's slots; anonymous callers share one; the
    /// service role has only the node's bound; a reopen counts the shares again; a removal frees.
    @Test func resumableSlotsAreSharedPerOwner() throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blobs = try BlobStore(dataDirectory: dir)
        let store = try ResumableStore(blobRoot: blobs.root, uploadsMax: 8, bytesMax: 1_000, shareUploadsMax: 2, shareBytesMax: 25)
        let first = try store.create(Self.info(owner: "u1"), nowSeconds: 1_000)
        _ = try store.create(Self.info(owner: "u1"), nowSeconds: 1_000)
        #expect(Self.code { _ = try store.create(Self.info(owner: "u1"), nowSeconds: 1_000) } == "AERO_STORAGE_UPLOADS_SHARE_FULL")
        _ = try store.create(Self.info(owner: "u2", length: 20), nowSeconds: 1_000)
        // Bytes are bounded per share too (20 + 10 > 25).
        #expect(Self.code { _ = try store.create(Self.info(owner: "u2"), nowSeconds: 1_000) } == "AERO_STORAGE_UPLOADS_SHARE_FULL")
        // Every anonymous caller is one share: the second anonymous upload is the last.
        _ = try store.create(Self.info(owner: nil), nowSeconds: 1_000)
        _ = try store.create(Self.info(owner: nil), nowSeconds: 1_000)
        #expect(Self.code { _ = try store.create(Self.info(owner: nil), nowSeconds: 1_000) } == "AERO_STORAGE_UPLOADS_SHARE_FULL")
        #expect(store.usage(ResumableShare.anonymous) == .init(uploads: 2, bytes: 20))
        // The service role is bounded by the node only: 3 more reach the node's 8.
        for _ in 0..<3 { _ = try store.create(Self.info(owner: nil, share: ResumableShare.service), nowSeconds: 1_000) }
        #expect(Self.code { _ = try store.create(Self.info(owner: nil, share: ResumableShare.service), nowSeconds: 1_000) }
                == "AERO_STORAGE_UPLOADS_FULL")
        // A reopen (restart) counts the shares from info.json again.
        let reopened = try ResumableStore(blobRoot: blobs.root, uploadsMax: 9, bytesMax: 1_000, shareUploadsMax: 2, shareBytesMax: 25)
        #expect(reopened.count == 8 && reopened.usage("user:u1") == .init(uploads: 2, bytes: 20))
        #expect(Self.code { _ = try reopened.create(Self.info(owner: "u1"), nowSeconds: 1_000) } == "AERO_STORAGE_UPLOADS_SHARE_FULL")
        reopened.remove(first)
        #expect(reopened.usage("user:u1") == .init(uploads: 1, bytes: 10))
        _ = try reopened.create(Self.info(owner: "u1"), nowSeconds: 1_000)
        #expect(ResumableStore.readInfo(reopened.dir(first)) == nil)
    }

    /// creation-defer-length: a deferred upload reserves its bound until its length is named;
    /// the length is durable (a reopen keeps it) and shrinks the reservation and the share's bytes.
    @Test func aDeferredLengthIsReservedAtItsBoundThenShrinks() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blobs = try BlobStore(dataDirectory: dir)
        let store = try ResumableStore(blobRoot: blobs.root, uploadsMax: 8, bytesMax: 1_000, shareUploadsMax: 4, shareBytesMax: 100)
        var info = Self.info(owner: "u1", length: 64)
        info.deferred = true
        let id = try store.create(info, nowSeconds: 1_000)
        #expect(store.reservedBytes == 64 && store.usage("user:u1").bytes == 64)
        #expect(Self.code { _ = try store.create(Self.info(owner: "u1", length: 40), nowSeconds: 1_000) } == "AERO_STORAGE_UPLOADS_SHARE_FULL")
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_000) else { Issue.record("not acquired"); return }
        let (after, _) = await store.append(id, held, body: StorageResumableTests.body([[1, 2, 3]]))
        #expect(after.offset == 3 && after.deferred)
        #expect(throws: StorageError.self) { try store.setLength(id, after, length: 2) }   // below the offset
        #expect(throws: StorageError.self) { try store.setLength(id, after, length: 65) }  // above the bound
        let fixed = try store.setLength(id, after, length: 5)
        store.release(id, info: fixed)
        #expect(!fixed.deferred && store.reservedBytes == 5 && store.usage("user:u1").bytes == 5)
        #expect(throws: StorageError.self) { try store.setLength(id, fixed, length: 6) }   // set once
        let reopened = try ResumableStore(blobRoot: blobs.root, uploadsMax: 8, bytesMax: 1_000, shareUploadsMax: 4, shareBytesMax: 100)
        #expect(reopened.peek(id, nowSeconds: 1_000) == .proceed(fixed) && reopened.reservedBytes == 5)
        _ = try reopened.create(Self.info(owner: "u1", length: 40), nowSeconds: 1_000)
    }

    /// A crash between a TUS completion's commit and the removal of its upload: after the
    /// restart the upload is complete on disk and the object exists; the client's retried
    /// completion (an empty PATCH at the end) answers complete, not a duplicate, and frees it.
    /// Found by `aerodb-crashtest kill --uploaders`.
    @Test func aCompletionRetriedAfterACrashPastItsCommitAnswersComplete() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir + "/data"))
        let service = try StorageService(database: db, secret: Array(repeating: 9, count: 32), clock: SystemClock(),
                                         peers: .alone, logger: .init(label: "test"))
        let admin = Caller(role: "service_role", claims: .object([:]))
        _ = try await service.createBucket(.object(["id": .string("b")]), caller: admin)
        var info = Self.info(owner: nil, share: ResumableShare.service, length: 5)
        info.name = "done.bin"
        info.expires = service.nowSeconds + 3_600
        let id = try service.resumable.create(info, nowSeconds: service.nowSeconds)
        guard case .proceed(let held) = service.resumable.acquire(id, nowSeconds: service.nowSeconds) else { Issue.record("not acquired"); return }
        let (full, _) = await service.resumable.append(id, held, body: StorageResumableTests.body([[1, 2, 3, 4, 5]]))
        // The completion's commit, and then the crash: the upload directory is still there.
        let (sha, size) = try service.blobs.adopt(service.resumable.dir(id) + "/data")
        _ = try await service.commitUpload(ResumableAPI.upload(full), sha256: sha, size: size)
        let who = ResumableAPI.Actor(caller: admin, owner: nil, upsert: false, share: ResumableShare.service)
        let (after, lsn) = try await ResumableAPI.appendAndMaybeComplete(service, uuid: id, full, body: StorageResumableTests.body([]), who: who)
        #expect(after.offset == 5 && lsn != nil && service.resumable.count == 0)
        // Other bytes under the same name stay a duplicate.
        var other = info
        other.name = "done.bin"
        let id2 = try service.resumable.create(other, nowSeconds: service.nowSeconds)
        guard case .proceed(let held2) = service.resumable.acquire(id2, nowSeconds: service.nowSeconds) else { Issue.record("not acquired"); return }
        let (full2, _) = await service.resumable.append(id2, held2, body: StorageResumableTests.body([[9, 9, 9, 9, 9]]))
        await #expect(throws: StorageError.self) {
            _ = try await ResumableAPI.appendAndMaybeComplete(service, uuid: id2, full2, body: StorageResumableTests.body([]), who: who)
        }
        #expect(service.resumable.count == 1)
        await db.close()
    }

    static func sha1(_ bytes: [UInt8]) -> String { Data(Insecure.SHA1.hash(data: bytes)).base64EncodedString() }

    /// ST4 with the checksum extension: a chunk whose digest does not match is discarded (460,
    /// the durable offset stays); a cut body with a checksum keeps nothing; a matching one counts.
    @Test func aChunkWithAWrongChecksumIsDiscarded() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blobs = try BlobStore(dataDirectory: dir)
        let store = try ResumableStore(blobRoot: blobs.root)
        let id = try store.create(Self.info(owner: "u1"), nowSeconds: 1_000)
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_000) else { Issue.record("not acquired"); return }
        #expect(ResumableChecksum(header: "sha1 " + Self.sha1([9])) != nil)
        #expect(ResumableChecksum(header: "crc32 AAAA") == nil && ResumableChecksum(header: "sha1 AAAA") == nil)
        let wrong = ResumableChecksum(header: "sha1 " + Self.sha1([1, 2, 3, 5]))!
        let (after, failure) = await store.append(id, held, body: StorageResumableTests.body([[1, 2], [3, 4]]), checksum: wrong)
        #expect((failure as? StorageError)?.status == 460 && (failure as? StorageError)?.code == "AERO_STORAGE_CHECKSUM_MISMATCH")
        #expect(after.offset == 0 && ResumableStore.readInfo(store.dir(id))?.offset == 0)
        let right = ResumableChecksum(header: "sha1 " + Self.sha1([1, 2, 3, 4]))!
        let (cut, cutFailure) = await store.append(id, after, body: StorageResumableTests.body([[1, 2]], failing: true), checksum: right)
        #expect(cutFailure != nil && cut.offset == 0)
        let (good, none) = await store.append(id, cut, body: StorageResumableTests.body([[1, 2], [3, 4]]), checksum: right)
        #expect(none == nil && good.offset == 4 && ResumableStore.readInfo(store.dir(id))?.offset == 4)
        let md5 = ResumableChecksum(header: "md5 " + Data(Insecure.MD5.hash(data: [5, 6])).base64EncodedString())!
        let (more, _) = await store.append(id, good, body: StorageResumableTests.body([[5, 6]]), checksum: md5)
        #expect(more.offset == 6)
        #expect(FileManager.default.contents(atPath: store.dir(id) + "/data") == Data([1, 2, 3, 4, 5, 6]))
    }

    /// ST6: list_v2 (name order) walks the prefix as a keyset: with a per-request bound far
    /// below the prefix's size every object and folder is still listed once, in order, in
    /// both directions; each page query is an index range on by_path with nothing residual.
    @Test func listV2WalksAPrefixLargerThanItsBoundInKeysetPages() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir + "/data"))
        let service = try StorageService(database: db, secret: Array(repeating: 9, count: 32), clock: SystemClock(),
                                         peers: .alone, logger: .init(label: "test"))
        let admin = Caller(role: "service_role", claims: .object([:]))
        _ = try await service.createBucket(.object(["id": .string("b")]), caller: admin)
        let w = try service.blobs.writer(limitBytes: 100)
        try w.write(Array("x".utf8))
        let sha = try w.finish().sha256
        var files: [String] = []
        for i in 0..<120 { files.append(String(format: "p/f%03d.txt", i)) }
        for i in 0..<30 { files.append(String(format: "p/dir%02d/x%02d.txt", i % 7, i)) }
        files.append("q/outside.txt")
        for name in files {
            _ = try await service.commitUpload(.init(bucket: "b", name: name, mime: "text/plain", cacheControl: "3600", metadata: .null,
                                                     upsert: false, owner: nil), sha256: sha, size: 1)
        }
        func walk(_ body: [String: JSONValue]) throws -> (objects: [String], folders: [String], pages: Int) {
            var objects: [String] = [], folders: [String] = [], cursor: String?, pages = 0
            repeat {
                var b = body
                if let cursor { b["cursor"] = .string(cursor) }
                let page = try service.listV2(bucket: "b", body: .object(b), caller: admin, examineMax: 25)
                pages += 1
                for o in page["objects"]?.arrayValue ?? [] { objects.append(o["name"]?.stringValue ?? "") }
                for f in page["folders"]?.arrayValue ?? [] { folders.append(f["name"]?.stringValue ?? "") }
                cursor = page["hasNext"]?.boolValue == true ? page["nextCursor"]?.stringValue : nil
                #expect(pages < 100)
            } while cursor != nil && pages < 100
            return (objects, folders, pages)
        }
        // The cursor is sealed (it may stop on a row the caller cannot see): no name in clear,
        // and a changed cursor is refused.
        let first = try service.listV2(bucket: "b", body: .object(["prefix": .string("p/"), "limit": .int(3)]), caller: admin, examineMax: 25)
        let cursor = first["nextCursor"]?.stringValue ?? ""
        #expect(first["nextCursorKey"]?.stringValue == "p/dir00/x14.txt")  // x00, x07, x14
        #expect(!String(decoding: JWT.decodeBase64URL(Substring(cursor)) ?? [], as: UTF8.self).contains("p/"))
        var tampered = Array(cursor.utf8)
        tampered[tampered.count / 2] = tampered[tampered.count / 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: StorageError.self) {
            _ = try service.listV2(bucket: "b", body: .object(["prefix": .string("p/"), "cursor": .string(String(decoding: tampered, as: UTF8.self))]),
                                   caller: admin)
        }
        let inP = files.filter { $0.hasPrefix("p/") }.sorted()
        let flat = try walk(["prefix": .string("p/"), "limit": .int(40)])
        #expect(flat.objects == inP && flat.folders.isEmpty && flat.pages >= 150 / 25)
        let down = try walk(["prefix": .string("p/"), "limit": .int(40), "sortBy": .object(["column": .string("name"), "order": .string("desc")])])
        #expect(down.objects == inP.reversed())
        let grouped = try walk(["prefix": .string("p/"), "limit": .int(7), "with_delimiter": .bool(true)])
        #expect(grouped.objects == inP.filter { !$0.dropFirst(2).contains("/") })
        #expect(grouped.folders == (0..<7).map { String(format: "p/dir%02d/", $0) })
        let groupedDown = try walk(["prefix": .string("p/"), "limit": .int(7), "with_delimiter": .bool(true),
                                    "sortBy": .object(["column": .string("name"), "order": .string("desc")])])
        #expect(groupedDown.folders == (0..<7).reversed().map { String(format: "p/dir%02d/", $0) })
        #expect(groupedDown.objects == grouped.objects.reversed())
        // The page query: an index range on (bucket_id, name), order satisfied, nothing residual.
        for descending in [false, true] {
            let plan = try db.snapshot().explain(StorageService.pageQuery(
                [.compare(field: "bucket_id", op: .eq, value: .string("b")), .compare(field: "name", op: .gt, value: .string("p/f050.txt")),
                 .compare(field: "name", op: .lt, value: .string("p/\u{10FFFF}"))], descending: descending, limit: 25))
            // bucket_id equality then the name range, both answered by the index: the candidates
            // are exactly the names past the cursor (69 of the 150 under p/), not the prefix.
            #expect(plan.index == "by_path" && [.indexEquality, .indexRange].contains(plan.access) && plan.bounds.count == 3
                    && plan.residual.isEmpty && plan.sortSatisfied, "\(plan.json)")
            #expect(plan.candidateRows == inP.filter { $0 > "p/f050.txt" }.count && plan.rowsExaminedBound <= 25)
        }
        await db.close()
    }
}
