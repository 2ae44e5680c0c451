// The on-disk store of TUS uploads (ResumableStore, ST4): offsets survive a reopen, bytes past
// the acknowledged offset are dropped, a cut body keeps what arrived, bounds and expiry, one
// appender at a time, and a finished upload becomes a blob named by its hash without a copy.

import Crypto
import Foundation
import Testing
import Kernel
@testable import BaaS

@Suite struct StorageResumableTests {
    static func info(length: Int64, created: Int64 = 1_000) -> ResumableInfo {
        ResumableInfo(bucket: "b", name: "f/x.bin", mime: "application/octet-stream", cacheControl: "3600", metadata: .null,
                      upsert: false, owner: "u1", length: length, offset: 0, created: created,
                      expires: created + StorageLimits.resumableRetentionSeconds)
    }

    static func body(_ chunks: [[UInt8]], failing: Bool = false) -> AsyncThrowingStream<[UInt8], any Error> {
        AsyncThrowingStream { c in
            for chunk in chunks { c.yield(chunk) }
            c.finish(throwing: failing ? AeroError(.ioError, "connection reset") : nil)
        }
    }

    static func store(_ dir: String, uploadsMax: Int = 10, bytesMax: Int64 = 1 << 20) throws -> (BlobStore, ResumableStore) {
        let blobs = try BlobStore(dataDirectory: dir)
        return (blobs, try ResumableStore(blobRoot: blobs.root, uploadsMax: uploadsMax, bytesMax: bytesMax))
    }

    /// ST4: the recorded offset survives a reopen (a restart); bytes after it are never kept.
    @Test func offsetSurvivesReopenAndUnacknowledgedBytesAreDropped() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, store) = try Self.store(dir)
        let id = try store.create(Self.info(length: 10), nowSeconds: 1_000)
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_001) else { Issue.record("not acquired"); return }
        let (after, failure) = await store.append(id, held, body: Self.body([[1, 2, 3], [4]]))
        #expect(failure == nil && after.offset == 4)
        store.release(id, info: after)
        // A crash after bytes were written but before their offset was recorded: garbage past 4.
        let handle = FileHandle(forWritingAtPath: store.dir(id) + "/data")!
        handle.seekToEndOfFile()
        handle.write(Data([9, 9, 9]))
        handle.closeFile()
        let (_, reopened) = try Self.store(dir)
        guard case .proceed(let again) = reopened.acquire(id, nowSeconds: 1_002) else { Issue.record("lost on reopen"); return }
        #expect(again.offset == 4 && again.length == 10)
        let (done, _) = await reopened.append(id, again, body: Self.body([[5, 6, 7, 8, 9, 10]]))
        #expect(done.offset == 10)
        #expect(FileManager.default.contents(atPath: reopened.dir(id) + "/data") == Data([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    }

    /// A body cut mid-way keeps (durably) what arrived; a body past Upload-Length writes nothing of its last chunk.
    @Test func aCutBodyKeepsWhatArrivedAndLengthIsEnforced() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, store) = try Self.store(dir)
        let id = try store.create(Self.info(length: 6), nowSeconds: 1_000)
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_000) else { Issue.record("not acquired"); return }
        #expect(store.acquire(id, nowSeconds: 1_000) == .busy)  // one appender at a time
        let (cut, failure) = await store.append(id, held, body: Self.body([[1, 2]], failing: true))
        #expect(failure != nil && cut.offset == 2)
        #expect(ResumableStore.readInfo(store.dir(id))?.offset == 2)
        let (over, tooLong) = await store.append(id, cut, body: Self.body([[3, 4], [5, 6, 7]]))
        #expect((tooLong as? StorageError)?.status == 413 && over.offset == 4)
        store.release(id, info: over)
        #expect(store.peek(id, nowSeconds: 1_000) == .proceed(over))
    }

    /// A body that stops sending is ended after the stall time; what arrived counts and the upload is free again.
    @Test func aStalledBodyIsEndedAndKeepsWhatArrived() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blobs = try BlobStore(dataDirectory: dir)
        let store = try ResumableStore(blobRoot: blobs.root, stallMillis: 200)
        let id = try store.create(Self.info(length: 10), nowSeconds: 1_000)
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_000) else { Issue.record("not acquired"); return }
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        continuation.yield([1, 2, 3])  // then nothing, and the stream stays open
        let (after, failure) = await store.append(id, held, body: stream)
        continuation.finish()
        #expect((failure as? StorageError)?.code == "AERO_STORAGE_UPLOAD_STALLED")
        #expect(after.offset == 3 && ResumableStore.readInfo(store.dir(id))?.offset == 3)
        store.release(id, info: after)
        #expect(store.acquire(id, nowSeconds: 1_000) == .proceed(after))
    }

    /// Bounds: pending count and reserved bytes; expiry frees both and removes the parts; `.new` leftovers go at open.
    @Test func boundsExpiryAndLeftovers() throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (blobs, store) = try Self.store(dir, uploadsMax: 2, bytesMax: 100)
        let a = try store.create(Self.info(length: 60), nowSeconds: 1_000)
        #expect(throws: StorageError.self) { try store.create(Self.info(length: 41), nowSeconds: 1_000) }  // 101 bytes reserved
        _ = try store.create(Self.info(length: 40, created: 2_000), nowSeconds: 2_000)
        #expect(throws: StorageError.self) { try store.create(Self.info(length: 0), nowSeconds: 2_000) }  // 3 uploads
        #expect(store.count == 2 && store.reservedBytes == 100)
        let late = 1_000 + StorageLimits.resumableRetentionSeconds
        #expect(store.peek(a, nowSeconds: late) == .expired)
        #expect(store.count == 1 && store.reservedBytes == 40)
        #expect(!FileManager.default.fileExists(atPath: store.dir(a)))
        try FileManager.default.createDirectory(atPath: store.root + "/" + UUID().uuidString.lowercased() + ".new", withIntermediateDirectories: true)
        let reopened = try ResumableStore(blobRoot: blobs.root, uploadsMax: 2, bytesMax: 100)
        #expect(reopened.count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: reopened.root).count == 1)
    }

    /// A finished upload becomes a blob by a hard link, named by the SHA-256 of its bytes (ST1/ST2).
    @Test func aFinishedUploadIsAdoptedAsABlobByHash() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (blobs, store) = try Self.store(dir)
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let id = try store.create(Self.info(length: Int64(bytes.count)), nowSeconds: 1_000)
        guard case .proceed(let held) = store.acquire(id, nowSeconds: 1_000) else { Issue.record("not acquired"); return }
        let (done, _) = await store.append(id, held, body: Self.body([Array(bytes[..<100_000]), Array(bytes[100_000...])]))
        #expect(done.offset == done.length)
        let (sha, size) = try blobs.adopt(store.dir(id) + "/data")
        #expect(sha == SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() && size == Int64(bytes.count))
        store.remove(id)
        #expect(FileManager.default.contents(atPath: blobs.path(of: sha)) == Data(bytes))
        #expect(store.count == 0)
    }
}
