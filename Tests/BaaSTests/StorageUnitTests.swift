import Crypto
import Foundation
import Testing
import Kernel
@testable import BaaS

@Suite struct StorageUnitTests {
    static func tempDir() throws -> String {
        let dir = NSTemporaryDirectory() + "aerodb-storage-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Every way of cutting a multipart body into chunks gives the same fields and file bytes.
    @Test func multipartParsesAcrossEveryChunkBoundary() throws {
        let file: [UInt8] = Array("line one\r\n--Bnot a boundary\r\n-BX\r\n--B".utf8) + [0, 255, 13, 10]
        var body: [UInt8] = Array("--BX\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n60\r\n".utf8)
        body += Array("--BX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: image/png\r\n\r\n".utf8)
        body += file + Array("\r\n--BX--\r\n".utf8)
        for cut in 1..<body.count {
            var parser = MultipartParser(boundary: "BX")
            var events = try parser.feed(body[0..<cut])
            events += try parser.feed(body[cut...])
            try parser.finish()
            var parts: [String] = []
            var current = ""
            var fields: [String: [UInt8]] = [:]
            for event in events {
                switch event {
                case .part(let name, _, let type):
                    current = name
                    parts.append(name + "|" + (type ?? ""))
                case .data(let bytes): fields[current, default: []] += bytes
                }
            }
            #expect(parts == ["cacheControl|", "file|image/png"], "cut at \(cut)")
            #expect(fields["cacheControl"] == Array("60".utf8), "cut at \(cut)")
            #expect(fields["file"] == file, "cut at \(cut)")
        }
    }

    @Test func multipartCutOrMalformedIsRefused() throws {
        var parser = MultipartParser(boundary: "B")
        _ = try parser.feed(Array("--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\npartial".utf8))
        #expect(throws: StorageError.self) { try parser.finish() }
        var headers = MultipartParser(boundary: "B")
        #expect(throws: StorageError.self) {
            _ = try headers.feed(Array("--B\r\n".utf8) + [UInt8](repeating: 65, count: StorageLimits.multipartHeaderBytesMax + 10))
        }
        #expect(MultipartParser.boundary(of: "multipart/form-data; boundary=\"abc\"") == "abc")
        #expect(MultipartParser.boundary(of: "text/plain") == nil)
    }

    @Test func objectNamesRefuseTraversalAbsoluteNULAndOverlong() {
        for bad in ["", "/abs", "a/../b", "..", "a/./b", "a//b", "a/", "nul\u{0}x", "tab\tx", "back\\slash",
                    String(repeating: "x", count: StorageLimits.objectNameBytesMax + 1),
                    Array(repeating: "d", count: StorageLimits.objectNameSegmentsMax + 1).joined(separator: "/")] {
            #expect(throws: StorageError.self, "\(bad.prefix(40))") { _ = try StorageNames.object(bad) }
        }
        for good in ["a.txt", "folder/sub/file name.png", "ünïcode/ファイル.txt", "a..b", ".hidden"] {
            #expect((try? StorageNames.object(good)) == good)
        }
        #expect(StorageNames.folders("u1/photos/a.png") == ["u1", "photos"])
        #expect(StorageNames.mimeAllowed("image/png", ["image/*"]))
        #expect(StorageNames.mimeAllowed("text/plain;charset=UTF-8", ["text/plain"]))
        #expect(!StorageNames.mimeAllowed("application/json", ["image/*", "text/plain"]))
    }

    @Test func rangesFollowRFC9110() {
        #expect(StorageAPI.parseRange("bytes=0-9", size: 100) == .part(0, 10))
        #expect(StorageAPI.parseRange("bytes=90-", size: 100) == .part(90, 100))
        #expect(StorageAPI.parseRange("bytes=-5", size: 100) == .part(95, 100))
        #expect(StorageAPI.parseRange("bytes=50-1000", size: 100) == .part(50, 100))
        #expect(StorageAPI.parseRange("bytes=100-", size: 100) == .unsatisfiable)
        #expect(StorageAPI.parseRange("bytes=0-1,5-6", size: 100) == .whole)
        #expect(StorageAPI.parseRange("bytes=9-3", size: 100) == .whole)
        #expect(StorageAPI.parseRange("bytes=99999999999999999999-", size: 100) == .whole)
    }

    /// Signed URL tokens: one object, one kind, until expiry, under their own key.
    @Test func signedURLTokensAreBoundAndDomainSeparated() throws {
        let secret = Array(repeating: UInt8(7), count: 32)
        let token = StorageSignedURL(kind: .download, bucket: "b", name: "a/x.txt", expires: 1_000).token(secret: secret)
        #expect(try StorageSignedURL.verify(token, kind: .download, bucket: "b", name: "a/x.txt", secret: secret, nowSeconds: 999).name == "a/x.txt")
        #expect(throws: StorageError.self) { try StorageSignedURL.verify(token, kind: .download, bucket: "b", name: "a/x.txt", secret: secret, nowSeconds: 1_000) }
        #expect(throws: StorageError.self) { try StorageSignedURL.verify(token, kind: .upload, bucket: "b", name: "a/x.txt", secret: secret, nowSeconds: 0) }
        #expect(throws: StorageError.self) { try StorageSignedURL.verify(token, kind: .download, bucket: "b", name: "a/y.txt", secret: secret, nowSeconds: 0) }
        #expect(throws: StorageError.self) { try StorageSignedURL.verify(token, kind: .download, bucket: "b", name: "a/x.txt", secret: Array(repeating: 8, count: 32), nowSeconds: 0) }
        var flipped = Array(token)
        flipped[3] = flipped[3] == "A" ? "B" : "A"
        #expect(throws: StorageError.self) { try StorageSignedURL.verify(String(flipped), kind: .download, bucket: "b", name: "a/x.txt", secret: secret, nowSeconds: 0) }
        // The MAC is not the JWT secret's: a token does not verify as an access token and vice versa.
        let parts = token.split(separator: ".")
        let raw = HMAC<SHA256>.authenticationCode(for: Array(parts[0].utf8), using: SymmetricKey(data: secret))
        #expect(JWT.base64URL(Array(raw)) != String(parts[1]))
        #expect(throws: AeroError.self) { try JWT.verify(token, secret: secret, nowSeconds: 0) }
    }

    /// ST1/ST2: a finished blob is named by its SHA-256 and complete; an aborted or over-limit
    /// upload leaves no blob and no temp file.
    @Test func blobWriterNamesByContentAndLeavesNothingOnAbort() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try BlobStore(dataDirectory: dir)
        let bytes = (0..<700_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let writer = try store.writer(limitBytes: 1 << 20)
        for chunk in stride(from: 0, to: bytes.count, by: 65_536) { try writer.write(Array(bytes[chunk..<min(chunk + 65_536, bytes.count)])) }
        let (sha, size) = try writer.finish()
        #expect(sha == SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
        #expect(size == Int64(bytes.count))
        #expect(FileManager.default.contents(atPath: store.path(of: sha)) == Data(bytes))
        let reader = try #require(try store.reader(sha))
        #expect(try reader.read(at: 10, count: 5) == Array(bytes[10..<15]))
        // Same content again: deduplicated, no temp left.
        let again = try store.writer(limitBytes: 1 << 20)
        try again.write(bytes)
        #expect(try again.finish().sha256 == sha)
        let small = try store.writer(limitBytes: 10)
        #expect(throws: StorageError.self) { try small.write(Array(repeating: 1, count: 11)) }
        let aborted = try store.writer(limitBytes: 100)
        try aborted.write([1, 2, 3])
        aborted.abort()
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.tmp).isEmpty)
    }

    /// The crash harness's seam (`BlobStore(dataDirectory:fileSystem:)`) writes what a node's
    /// POSIX store writes: same file, name and bytes, read back by either; dedup and abort alike.
    @Test func theFileSystemSeamWritesTheSameBlobsAsThePOSIXStore() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seam = try BlobStore(dataDirectory: dir, fileSystem: POSIXFileSystem())
        let node = try BlobStore(dataDirectory: dir)
        let bytes = (0..<300_001).map { UInt8(truncatingIfNeeded: $0 &* 131 >> 3) }
        let writer = try seam.writer(limitBytes: 1 << 20)
        for chunk in stride(from: 0, to: bytes.count, by: 70_000) { try writer.write(Array(bytes[chunk..<min(chunk + 70_000, bytes.count)])) }
        let (sha, size) = try writer.finish()
        #expect(sha == SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() && size == Int64(bytes.count))
        #expect(FileManager.default.contents(atPath: node.path(of: sha)) == Data(bytes))
        #expect(node.exists(sha) && seam.exists(sha) && seam.size(sha) == Int64(bytes.count))
        let reader = try #require(try seam.reader(sha))
        let tail = try reader.read(at: 299_990, count: 100)
        #expect(reader.size == Int64(bytes.count) && tail == Array(bytes[299_990...]))
        let again = try node.writer(limitBytes: 1 << 20)
        try again.write(bytes)
        #expect(try again.finish().sha256 == sha)
        let dedup = try seam.writer(limitBytes: 1 << 20)
        try dedup.write(bytes)
        #expect(try dedup.finish().sha256 == sha)
        let aborted = try seam.writer(limitBytes: 10)
        #expect(throws: StorageError.self) { try aborted.write(Array(repeating: 1, count: 11)) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: node.tmp).isEmpty)
    }
}

@Suite struct StorageCollectorTests {
    /// ST3: the collector removes old unreferenced blobs and cut uploads, never a referenced blob,
    /// and never a fresh one (the grace covers an upload between its blob's naming and its commit).
    @Test func collectorRemovesOnlyOldUnreferencedBlobs() async throws {
        let dir = try StorageUnitTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir + "/data"))
        let service = try StorageService(database: db, secret: Array(repeating: 9, count: 32), clock: SystemClock(),
                                         peers: .alone, logger: .init(label: "test"))
        let admin = Caller(role: "service_role", claims: .object([:]))
        _ = try await service.createBucket(.object(["id": .string("b")]), caller: admin)
        func blob(_ text: String) throws -> String {
            let w = try service.blobs.writer(limitBytes: 1_000)
            try w.write(Array(text.utf8))
            return try w.finish().sha256
        }
        let kept = try blob("referenced"), orphan = try blob("orphan"), fresh = try blob("fresh orphan")
        _ = try await service.commitUpload(.init(bucket: "b", name: "k.txt", mime: "text/plain", cacheControl: "3600", metadata: .null,
                                                 upsert: false, owner: nil), sha256: kept, size: 10)
        let cut = try service.blobs.writer(limitBytes: 1_000)
        try cut.write([1, 2, 3])  // an upload in progress (or cut by a crash)
        let now = service.nowSeconds
        // Fresh: nothing is old enough.
        var report = try await BlobCollector(service: service).pass(nowSeconds: now)
        #expect(report.removed == 0 && report.partsRemoved == 0)
        // Age the orphan and the part; the referenced blob is aged too and must survive.
        for path in [service.blobs.path(of: kept), service.blobs.path(of: orphan), cut.tempPath] {
            var times = [timeval(tv_sec: Int(now - 10_000), tv_usec: 0), timeval(tv_sec: Int(now - 10_000), tv_usec: 0)]
            #expect(utimes(path, &times) == 0)
        }
        report = try await BlobCollector(service: service).pass(nowSeconds: now)
        #expect(report.removed == 1 && report.partsRemoved == 1)
        #expect(service.blobs.exists(kept) && !service.blobs.exists(orphan) && service.blobs.exists(fresh))
        // Deleting the row makes the kept blob collectable.
        _ = try await service.remove(bucket: "b", paths: ["k.txt"], caller: admin)
        report = try await BlobCollector(service: service).pass(nowSeconds: now)
        #expect(report.removed == 1 && !service.blobs.exists(kept))
        cut.abort()
        await db.close()
    }
}
