// Pending TUS uploads (`/storage/v1/upload/resumable`, docs/STORAGE.md "Resumable uploads") on disk.
//
// Layout, under the blob root so that a finished upload becomes a blob by a hard link (same
// file system, no copy):
//
//   data/blobs/resumable/<uuid>/info.json   {"bucket","name","mime","cache_control","metadata",
//                                             "upsert","owner","length","offset","created","expires",
//                                             "share","deferred"}
//   (`deferred`: creation-defer-length; until a PATCH names Upload-Length, `length` is the most
//   the upload may hold, its bucket's limit, and that much is reserved)
//   data/blobs/resumable/<uuid>/data        the received bytes; only [0, offset) counts
//
// Invariants (ST4 in docs/INVARIANTS.md):
// - `offset` in info.json is durable only after the bytes [0, offset) of `data` are: an append is
//   fsynced, then info.json is replaced (write `info.json.tmp`, fsync, rename, fsync the
//   directory). A crash between the two leaves the old offset, and the next PATCH truncates
//   `data` to it, so a resumed upload never keeps torn or unacknowledged bytes.
// - A directory is created as `<uuid>.new` and renamed once info.json and an empty `data` are
//   durable; a `.new` left by a crash is removed when the store opens.
// - At most one request appends to an upload at a time (`busy`), decided under `state`; a body
//   that sends nothing for `resumableStallMillis` is ended, so a stalled client cannot hold it.
// - Bounded: at most `resumableUploadsMax` pending uploads, their declared lengths at most
//   `resumableBytesMax` in total (reserved at creation), each at most its bucket's limit; each
//   share (`ResumableShare`: one signed-in user, all anonymous callers together, all signed
//   upload URLs of one issuer) at most `resumableUploadsPerShareMax` uploads and
//   `resumableBytesPerShareMax` bytes, so no caller can take the node's slots (ST5); an
//   upload expires `resumableRetentionSeconds` after its creation and is then removed (on
//   access, at creation of another, and by the periodic blob pass).
// - Once `offset == length` the data file is never written again: completion hard-links it
//   into the BlobStore (ST1/ST2 unchanged: the blob is durable and named by its hash before the
//   row that names it commits).

import Crypto
import Foundation
import Kernel
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

struct ResumableInfo: Sendable, Equatable {
    var bucket: String
    var name: String
    var mime: String
    var cacheControl: String
    var metadata: JSONValue
    var upsert: Bool
    var owner: String?
    var length: Int64
    var offset: Int64
    var created: Int64
    var expires: Int64
    /// Whose bounds the upload counts against and who may continue it (ResumableShare).
    var share: String
    /// Upload-Defer-Length: the length is not known yet and `length` is only the upper bound.
    var deferred: Bool = false

    var json: JSONValue {
        .object(["bucket": .string(bucket), "name": .string(name), "mime": .string(mime), "cache_control": .string(cacheControl),
                 "metadata": metadata, "upsert": .bool(upsert), "owner": owner.map(JSONValue.string) ?? .null,
                 "length": .int(length), "offset": .int(offset), "created": .int(created), "expires": .int(expires),
                 "share": .string(share), "deferred": .bool(deferred)])
    }

    init(bucket: String, name: String, mime: String, cacheControl: String, metadata: JSONValue, upsert: Bool, owner: String?,
         length: Int64, offset: Int64, created: Int64, expires: Int64, share: String? = nil, deferred: Bool = false) {
        self.bucket = bucket; self.name = name; self.mime = mime; self.cacheControl = cacheControl; self.metadata = metadata
        self.upsert = upsert; self.owner = owner; self.length = length; self.offset = offset; self.created = created; self.expires = expires
        self.share = share ?? ResumableShare.user(owner)
        self.deferred = deferred
    }

    init?(_ v: JSONValue) {
        guard case .string(let b)? = v["bucket"], case .string(let n)? = v["name"], case .string(let m)? = v["mime"],
              case .int(let l)? = v["length"], case .int(let o)? = v["offset"], case .int(let c)? = v["created"],
              case .int(let e)? = v["expires"], l >= 0, o >= 0, o <= l else { return nil }
        self.init(bucket: b, name: n, mime: m, cacheControl: v["cache_control"]?.stringValue ?? "3600", metadata: v["metadata"] ?? .null,
                  upsert: v["upsert"]?.boolValue ?? false, owner: v["owner"]?.stringValue, length: l, offset: o, created: c, expires: e,
                  share: v["share"]?.stringValue, deferred: v["deferred"]?.boolValue ?? false)
    }
}

/// The named shares of the node's resumable upload bounds, and who may continue an upload:
/// `user:<id>` (a signed-in user), `anon` (every caller with the anon key and no user, one share
/// together), `signed:<issuer>` / `signed` (signed upload URLs), `service` (the service role:
/// only the node's bounds apply).
enum ResumableShare {
    static let anonymous = "anon"
    static let service = "service"
    static func user(_ id: String?) -> String { id.map { "user:" + $0 } ?? anonymous }
    static func signed(_ issuer: String?) -> String { issuer.map { "signed:" + $0 } ?? "signed" }
    static func isSigned(_ share: String) -> Bool { share == "signed" || share.hasPrefix("signed:") }
}

/// What a request may do with an upload, decided under the store's lock (no I/O there).
enum ResumableDecision: Equatable {
    case proceed(ResumableInfo)
    case notFound
    case expired
    case busy
}

final class ResumableStore: Sendable {
    let root: String
    let uploadsMax: Int
    let bytesMax: Int64
    /// Bounds of one share (ResumableShare; the service share has only the node's).
    let shareUploadsMax: Int
    let shareBytesMax: Int64
    /// A PATCH whose body sends nothing for this long is ended (its bytes so far are kept).
    let stallMillis: Int
    let logger: Logger

    struct Entry: Sendable {
        var info: ResumableInfo
        var busy: Bool
    }
    struct Usage: Sendable, Equatable {
        var uploads = 0
        var bytes: Int64 = 0
    }
    struct State: Sendable {
        var entries: [String: Entry] = [:]
        var reservedBytes: Int64 = 0
        /// Per share, the pending uploads and their reserved bytes (a share without uploads has no entry).
        var shares: [String: Usage] = [:]

        mutating func add(_ id: String, _ info: ResumableInfo, busy: Bool) {
            entries[id] = Entry(info: info, busy: busy)
            reservedBytes += info.length
            shares[info.share, default: Usage()].uploads += 1
            shares[info.share, default: Usage()].bytes += info.length
        }

        mutating func drop(_ id: String) {
            guard let e = entries.removeValue(forKey: id) else { return }
            reservedBytes -= e.info.length
            var u = shares[e.info.share] ?? Usage()
            u.uploads -= 1
            u.bytes -= e.info.length
            shares[e.info.share] = u.uploads <= 0 ? nil : u
        }
    }
    private let state = Mutex(State())

    init(blobRoot: String, uploadsMax: Int = StorageLimits.resumableUploadsMax, bytesMax: Int64 = StorageLimits.resumableBytesMax,
         stallMillis: Int = StorageLimits.resumableStallMillis, shareUploadsMax: Int = StorageLimits.resumableUploadsPerShareMax,
         shareBytesMax: Int64 = StorageLimits.resumableBytesPerShareMax, logger: Logger = Logger(label: "aerodb.storage.resumable")) throws {
        root = blobRoot + "/resumable"
        self.uploadsMax = uploadsMax
        self.bytesMax = bytesMax
        self.stallMillis = stallMillis
        self.shareUploadsMax = shareUploadsMax
        self.shareBytesMax = shareBytesMax
        self.logger = logger
        try BlobStore.makeDurableDirectory(root, parent: blobRoot)
        try load()
    }

    static func isUUID(_ s: String) -> Bool { UUID(uuidString: s) != nil && s.utf8.count == 36 && s == s.lowercased() }

    func dir(_ id: String) -> String { root + "/" + id }

    /// Rebuilds the table from disk (a restart): removes `.new` leftovers and unreadable entries.
    private func load() throws {
        var loaded = State()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            let path = root + "/" + name
            guard Self.isUUID(name), let info = Self.readInfo(path) else {
                removeLogged(path, reason: "unreadable or unfinished upload directory")
                continue
            }
            // The same bounds as at creation: a damaged or foreign info.json cannot wrap the
            // reservation or lift the node's or a share's limits.
            guard Self.admits(loaded, info, uploadsMax: uploadsMax, bytesMax: bytesMax, shareUploadsMax: shareUploadsMax,
                              shareBytesMax: shareBytesMax) == nil else {
                removeLogged(path, reason: "over the resumable bounds at start")
                continue
            }
            loaded.add(name, info, busy: false)
        }
        state.withLock { $0 = loaded }
    }

    static func readInfo(_ dir: String) -> ResumableInfo? {
        guard let data = FileManager.default.contents(atPath: dir + "/info.json"), data.count <= StorageLimits.resumableInfoBytesMax,
              let v = try? JSON.parse(Array(data)) else { return nil }
        return ResumableInfo(v)
    }

    var count: Int { state.withLock { $0.entries.count } }
    var reservedBytes: Int64 { state.withLock { $0.reservedBytes } }
    func usage(_ share: String) -> Usage { state.withLock { $0.shares[share] ?? Usage() } }

    /// Removes a file or directory; a failure is logged (never swallowed): the directory stays
    /// behind and the next start or blob pass tries again.
    func removeLogged(_ path: String, reason: String) {
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch let error as CocoaError where error.code == .fileNoSuchFile {
            return
        } catch {
            logger.error("storage: cannot remove a resumable upload's files", metadata: ["path": "\(path)", "reason": "\(reason)", "error": "\(error)"])
        }
    }

    /// Why `info` cannot be admitted to `s` (nil: it can). Pure: decided under the lock.
    static func admits(_ s: State, _ info: ResumableInfo, uploadsMax: Int, bytesMax: Int64, shareUploadsMax: Int,
                       shareBytesMax: Int64) -> StorageError? {
        guard info.length >= 0, s.entries.count < uploadsMax else {
            return StorageError(429, "too_many_uploads", "at most \(uploadsMax) resumable uploads may be pending on a node; finish or delete some",
                                code: "AERO_STORAGE_UPLOADS_FULL")
        }
        let (sum, overflow) = s.reservedBytes.addingReportingOverflow(info.length)
        guard !overflow, sum <= bytesMax else {
            return StorageError(507, "too_many_uploads", "pending resumable uploads would reserve more than \(bytesMax) bytes on this node",
                                code: "AERO_STORAGE_UPLOADS_FULL")
        }
        guard info.share != ResumableShare.service else { return nil }
        let used = s.shares[info.share] ?? Usage()
        guard used.uploads < shareUploadsMax else {
            return StorageError(429, "too_many_uploads",
                                "at most \(shareUploadsMax) resumable uploads may be pending for one owner (\(info.share)); finish or delete some",
                                code: "AERO_STORAGE_UPLOADS_SHARE_FULL")
        }
        let (shareSum, shareOverflow) = used.bytes.addingReportingOverflow(info.length)
        guard !shareOverflow, shareSum <= shareBytesMax else {
            return StorageError(429, "too_many_uploads",
                                "pending resumable uploads of one owner (\(info.share)) would reserve more than \(shareBytesMax) bytes",
                                code: "AERO_STORAGE_UPLOADS_SHARE_FULL")
        }
        return nil
    }

    // MARK: Create

    /// Admits and makes durable a new upload; throws when a bound would be passed.
    func create(_ info: ResumableInfo, nowSeconds: Int64) throws -> String {
        _ = expire(nowSeconds: nowSeconds)
        let id = UUID().uuidString.lowercased()
        // Decide (reserve) under the lock, then do the I/O.
        try state.withLock { s in
            if let refusal = Self.admits(s, info, uploadsMax: uploadsMax, bytesMax: bytesMax, shareUploadsMax: shareUploadsMax,
                                         shareBytesMax: shareBytesMax) { throw refusal }
            s.add(id, info, busy: true)
        }
        do {
            let temp = root + "/" + id + ".new"
            guard mkdir(temp, 0o755) == 0 else { throw BlobStore.posix("mkdir", temp) }
            let fd = open(temp + "/data", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw BlobStore.posix("open", temp + "/data") }
            let synced = fsync(fd) == 0
            close(fd)
            guard synced else { throw BlobStore.posix("fsync", temp + "/data") }
            try Self.writeInfo(info, dir: temp)
            guard rename(temp, dir(id)) == 0 else { throw BlobStore.posix("rename", temp) }
            try BlobStore.syncDirectory(root)
        } catch {
            removeLogged(root + "/" + id + ".new", reason: "creation failed")
            forget(id)
            throw error
        }
        release(id, info: nil)
        return id
    }

    /// Replaces info.json atomically and durably.
    static func writeInfo(_ info: ResumableInfo, dir: String) throws {
        let bytes = JSON.encode(info.json)
        let temp = dir + "/info.json.tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BlobStore.posix("open", temp) }
        var ok = true
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 { if errno == EINTR { continue }; ok = false; break }
            off += n
        }
        if ok { ok = fsync(fd) == 0 }
        close(fd)
        guard ok else { throw BlobStore.posix("write", temp) }
        guard rename(temp, dir + "/info.json") == 0 else { throw BlobStore.posix("rename", temp) }
        try BlobStore.syncDirectory(dir)
    }

    // MARK: Access

    /// The upload's state for a HEAD (never busy-refused).
    func peek(_ id: String, nowSeconds: Int64) -> ResumableDecision {
        let d: ResumableDecision = state.withLock { s in
            guard let e = s.entries[id] else { return .notFound }
            return e.info.expires <= nowSeconds ? .expired : .proceed(e.info)
        }
        if d == .expired { _ = expire(nowSeconds: nowSeconds) }
        return d
    }

    /// Takes the upload for one appending request (released by `release`).
    func acquire(_ id: String, nowSeconds: Int64) -> ResumableDecision {
        let d: ResumableDecision = state.withLock { s in
            guard var e = s.entries[id] else { return .notFound }
            if e.info.expires <= nowSeconds { return .expired }
            if e.busy { return .busy }
            e.busy = true
            s.entries[id] = e
            return .proceed(e.info)
        }
        if d == .expired { _ = expire(nowSeconds: nowSeconds) }
        return d
    }

    /// Fixes the length of a deferred upload (the caller holds it): durable in info.json first,
    /// then the reservation shrinks from the bound to the length.
    func setLength(_ id: String, _ info: ResumableInfo, length: Int64) throws -> ResumableInfo {
        guard info.deferred, length >= info.offset, length <= info.length else {
            throw StorageError(400, "Bad Request", "Upload-Length must be in \(info.offset)...\(info.length) and set once",
                               code: "AERO_STORAGE_RESUMABLE_INVALID")
        }
        var next = info
        next.length = length
        next.deferred = false
        try Self.writeInfo(next, dir: dir(id))
        state.withLock { s in
            guard let e = s.entries[id] else { return }
            s.drop(id)
            s.add(id, next, busy: e.busy)
        }
        return next
    }

    /// Ends a request's hold; `info` is the new durable state (nil: unchanged).
    func release(_ id: String, info: ResumableInfo?) {
        state.withLock { s in
            guard var e = s.entries[id] else { return }
            if let info { e.info = info }
            e.busy = false
            s.entries[id] = e
        }
    }

    private func forget(_ id: String) {
        state.withLock { $0.drop(id) }
    }

    /// Removes an upload (DELETE, completion, expiry). The caller holds it or it is expired.
    /// Its slot is freed at once; files that cannot be removed are logged and removed at the
    /// next start (they are no longer in the table).
    func remove(_ id: String) {
        forget(id)
        removeLogged(dir(id), reason: "upload ended")
        do { try BlobStore.syncDirectory(root) } catch {
            logger.error("storage: cannot sync the resumable directory", metadata: ["error": "\(error)"])
        }
    }

    /// Removes every expired upload that no request holds; returns how many.
    @discardableResult
    func expire(nowSeconds: Int64) -> Int {
        let ids: [String] = state.withLock { s in
            let gone = s.entries.filter { !$0.value.busy && $0.value.info.expires <= nowSeconds }.map(\.key)
            for id in gone { s.drop(id) }
            return gone
        }
        for id in ids { removeLogged(dir(id), reason: "expired") }
        return ids.count
    }

    // MARK: Append

    /// Appends one request's bytes at `info.offset` (the caller holds the upload). Whatever
    /// arrives before the body ends or fails is made durable and recorded; returns the new info
    /// and the body's error, if any (the bytes before it still count, as TUS wants).
    /// With a `checksum` (TUS checksum extension) the request's bytes count only when the whole
    /// body arrived and its digest matches: otherwise none of them is recorded (460 on a mismatch).
    func append<S: AsyncSequence & Sendable>(_ id: String, _ info: ResumableInfo, body: S,
                                             checksum: ResumableChecksum? = nil) async -> (ResumableInfo, (any Error)?)
    where S.Element: ByteBufferLike {
        var info = info
        let path = dir(id) + "/data"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return (info, BlobStore.posix("open", path)) }
        defer { close(fd) }
        // Bytes past the recorded offset were never acknowledged (a cut request before a crash).
        guard ftruncate(fd, off_t(info.offset)) == 0 else { return (info, BlobStore.posix("ftruncate", path)) }
        let progress = AppendProgress(written: info.offset)
        let hasher = checksum.map { ChunkHasher($0.algorithm) }
        let length = info.length, stall = stallMillis
        var failure: (any Error)?
        do {
            // The body is read in one child task; a watchdog ends the request when no byte has
            // arrived for `stall` ms (a stalled client would otherwise hold its upload forever).
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await chunk in body {
                        try chunk.withBytes { (buffer: UnsafeRawBufferPointer) in
                            guard buffer.count > 0 else { return }
                            let written = progress.written
                            let (sum, overflow) = written.addingReportingOverflow(Int64(buffer.count))
                            guard !overflow, sum <= length else {
                                throw StorageError(413, "Payload too large", "the body goes past Upload-Length (\(length) bytes)",
                                                   code: "AERO_STORAGE_TOO_LARGE")
                            }
                            var off = 0
                            while off < buffer.count {
                                let n = pwrite(fd, buffer.baseAddress! + off, buffer.count - off, off_t(written) + off_t(off))
                                if n < 0 { if errno == EINTR { continue }; throw BlobStore.posix("write", path) }
                                off += n
                            }
                            hasher?.update(buffer)
                            progress.advance(to: sum)
                        }
                    }
                }
                group.addTask {
                    while true {
                        try await Task.sleep(for: .milliseconds(max(10, stall / 4)))
                        if progress.idle > .milliseconds(stall) {
                            throw StorageError(408, "Request Timeout", "no byte of the body arrived for \(stall) ms; HEAD the upload and resume",
                                               code: "AERO_STORAGE_UPLOAD_STALLED")
                        }
                    }
                }
                // The first to end decides: the body (done or failed) or the watchdog (stalled).
                try await group.next()
                group.cancelAll()
            }
        } catch {
            failure = error
        }
        let written = progress.written
        guard written > info.offset else { return (info, failure) }
        if let checksum, let hasher {
            // The chunk is kept only whole and verified; what was written past the offset is
            // truncated by the next append (the recorded offset does not move).
            guard failure == nil else { return (info, failure) }
            guard hasher.digest() == checksum.digest else {
                return (info, StorageError(460, "Checksum Mismatch",
                                           "the chunk's \(checksum.algorithm.rawValue) digest does not match Upload-Checksum; it was discarded",
                                           code: "AERO_STORAGE_CHECKSUM_MISMATCH"))
            }
        }
        // Durable bytes first, then the offset that acknowledges them (ST4).
        guard fsync(fd) == 0 else { return (info, BlobStore.posix("fsync", path)) }
        var next = info
        next.offset = written
        do {
            try Self.writeInfo(next, dir: dir(id))
        } catch {
            return (info, error)
        }
        info = next
        return (info, failure)
    }
}

/// `Upload-Checksum: <algorithm> <base64 digest>` of one request (TUS checksum extension).
struct ResumableChecksum: Sendable, Equatable {
    enum Algorithm: String, Sendable, CaseIterable {
        case sha1, md5, sha256
    }
    var algorithm: Algorithm
    var digest: [UInt8]

    /// The algorithms advertised in `Tus-Checksum-Algorithm` (sha1 is the one TUS requires and
    /// tuspy sends).
    static let advertised = Algorithm.allCases.map(\.rawValue).joined(separator: ",")

    /// Parses the header; nil for an unknown algorithm or a malformed digest (the caller answers 400).
    init?(header: String) {
        let parts = header.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, parts[1].utf8.count <= 128, let algorithm = Algorithm(rawValue: parts[0].lowercased()),
              let data = Data(base64Encoded: String(parts[1])) else { return nil }
        let expected = switch algorithm { case .sha1: 20; case .md5: 16; case .sha256: 32 }
        guard data.count == expected else { return nil }
        self.algorithm = algorithm
        self.digest = Array(data)
    }
}

/// The running digest of one request's bytes (shared with the body task).
final class ChunkHasher: Sendable {
    enum State: Sendable {
        case sha1(Insecure.SHA1)
        case md5(Insecure.MD5)
        case sha256(SHA256)
    }
    private let state: Mutex<State>
    init(_ algorithm: ResumableChecksum.Algorithm) {
        switch algorithm {
        case .sha1: state = Mutex(.sha1(Insecure.SHA1()))
        case .md5: state = Mutex(.md5(Insecure.MD5()))
        case .sha256: state = Mutex(.sha256(SHA256()))
        }
    }
    func update(_ bytes: UnsafeRawBufferPointer) {
        state.withLock { s in
            switch s {
            case .sha1(var h): h.update(bufferPointer: bytes); s = .sha1(h)
            case .md5(var h): h.update(bufferPointer: bytes); s = .md5(h)
            case .sha256(var h): h.update(bufferPointer: bytes); s = .sha256(h)
            }
        }
    }
    func digest() -> [UInt8] {
        state.withLock { s in
            switch s {
            case .sha1(let h): Array(h.finalize())
            case .md5(let h): Array(h.finalize())
            case .sha256(let h): Array(h.finalize())
            }
        }
    }
}

/// Bytes written by an append and when the last ones arrived (shared with its watchdog).
final class AppendProgress: Sendable {
    private let state: Mutex<(written: Int64, last: ContinuousClock.Instant)>
    init(written: Int64) { state = Mutex((written, ContinuousClock.now)) }
    var written: Int64 { state.withLock { $0.written } }
    var idle: Duration { ContinuousClock.now - state.withLock { $0.last } }
    func advance(to written: Int64) { state.withLock { $0 = (written, ContinuousClock.now) } }
}

/// A chunk of a request body, whatever its buffer type (ByteBuffer in the server, [UInt8] in tests).
protocol ByteBufferLike: Sendable {
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ByteBufferLike where Element == UInt8 {
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeBytes(body) }
}

extension ByteBuffer: ByteBufferLike {
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeReadableBytes(body) }
}
