// Pending TUS uploads (`/storage/v1/upload/resumable`, docs/STORAGE.md "Resumable uploads") on disk.
//
// Layout, under the blob root so that a finished upload becomes a blob by a hard link (same
// file system, no copy):
//
//   data/blobs/resumable/<uuid>/info.json   {"bucket","name","mime","cache_control","metadata",
//                                             "upsert","owner","length","offset","created","expires"}
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
//   `resumableBytesMax` in total (reserved at creation), each at most its bucket's limit; an
//   upload expires `resumableRetentionSeconds` after its creation and is then removed (on
//   access, at creation of another, and by the periodic blob pass).
// - Once `offset == length` the data file is never written again: completion hard-links it
//   into the BlobStore (ST1/ST2 unchanged: the blob is durable and named by its hash before the
//   row that names it commits).

import Foundation
import Kernel
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

    var json: JSONValue {
        .object(["bucket": .string(bucket), "name": .string(name), "mime": .string(mime), "cache_control": .string(cacheControl),
                 "metadata": metadata, "upsert": .bool(upsert), "owner": owner.map(JSONValue.string) ?? .null,
                 "length": .int(length), "offset": .int(offset), "created": .int(created), "expires": .int(expires)])
    }

    init(bucket: String, name: String, mime: String, cacheControl: String, metadata: JSONValue, upsert: Bool, owner: String?,
         length: Int64, offset: Int64, created: Int64, expires: Int64) {
        self.bucket = bucket; self.name = name; self.mime = mime; self.cacheControl = cacheControl; self.metadata = metadata
        self.upsert = upsert; self.owner = owner; self.length = length; self.offset = offset; self.created = created; self.expires = expires
    }

    init?(_ v: JSONValue) {
        guard case .string(let b)? = v["bucket"], case .string(let n)? = v["name"], case .string(let m)? = v["mime"],
              case .int(let l)? = v["length"], case .int(let o)? = v["offset"], case .int(let c)? = v["created"],
              case .int(let e)? = v["expires"], l >= 0, o >= 0, o <= l else { return nil }
        self.init(bucket: b, name: n, mime: m, cacheControl: v["cache_control"]?.stringValue ?? "3600", metadata: v["metadata"] ?? .null,
                  upsert: v["upsert"]?.boolValue ?? false, owner: v["owner"]?.stringValue, length: l, offset: o, created: c, expires: e)
    }
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
    /// A PATCH whose body sends nothing for this long is ended (its bytes so far are kept).
    let stallMillis: Int

    struct Entry: Sendable {
        var info: ResumableInfo
        var busy: Bool
    }
    struct State: Sendable {
        var entries: [String: Entry] = [:]
        var reservedBytes: Int64 = 0
    }
    private let state = Mutex(State())

    init(blobRoot: String, uploadsMax: Int = StorageLimits.resumableUploadsMax, bytesMax: Int64 = StorageLimits.resumableBytesMax,
         stallMillis: Int = StorageLimits.resumableStallMillis) throws {
        root = blobRoot + "/resumable"
        self.uploadsMax = uploadsMax
        self.bytesMax = bytesMax
        self.stallMillis = stallMillis
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
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            // The same bounds as at creation: a damaged or foreign info.json cannot wrap the
            // reservation or lift the node's limits.
            let (sum, overflow) = loaded.reservedBytes.addingReportingOverflow(info.length)
            guard loaded.entries.count < uploadsMax, info.length >= 0, !overflow, sum <= bytesMax else {
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            loaded.entries[name] = Entry(info: info, busy: false)
            loaded.reservedBytes = sum
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

    // MARK: Create

    /// Admits and makes durable a new upload; throws when a bound would be passed.
    func create(_ info: ResumableInfo, nowSeconds: Int64) throws -> String {
        _ = expire(nowSeconds: nowSeconds)
        let id = UUID().uuidString.lowercased()
        // Decide (reserve) under the lock, then do the I/O.
        try state.withLock { s in
            guard s.entries.count < uploadsMax else {
                throw StorageError(429, "too_many_uploads", "at most \(uploadsMax) resumable uploads may be pending on a node; finish or delete some",
                                   code: "AERO_STORAGE_UPLOADS_FULL")
            }
            let (sum, overflow) = s.reservedBytes.addingReportingOverflow(info.length)
            guard !overflow, sum <= bytesMax else {
                throw StorageError(507, "too_many_uploads", "pending resumable uploads would reserve more than \(bytesMax) bytes on this node",
                                   code: "AERO_STORAGE_UPLOADS_FULL")
            }
            s.reservedBytes = sum
            s.entries[id] = Entry(info: info, busy: true)
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
            try? FileManager.default.removeItem(atPath: root + "/" + id + ".new")
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
        state.withLock { s in
            if let e = s.entries.removeValue(forKey: id) { s.reservedBytes -= e.info.length }
        }
    }

    /// Removes an upload (DELETE, completion, expiry). The caller holds it or it is expired.
    func remove(_ id: String) {
        forget(id)
        try? FileManager.default.removeItem(atPath: dir(id))
        try? BlobStore.syncDirectory(root)
    }

    /// Removes every expired upload that no request holds; returns how many.
    @discardableResult
    func expire(nowSeconds: Int64) -> Int {
        let ids: [String] = state.withLock { s in
            let gone = s.entries.filter { !$0.value.busy && $0.value.info.expires <= nowSeconds }.map(\.key)
            for id in gone { if let e = s.entries.removeValue(forKey: id) { s.reservedBytes -= e.info.length } }
            return gone
        }
        for id in ids { try? FileManager.default.removeItem(atPath: dir(id)) }
        return ids.count
    }

    // MARK: Append

    /// Appends one request's bytes at `info.offset` (the caller holds the upload). Whatever
    /// arrives before the body ends or fails is made durable and recorded; returns the new info
    /// and the body's error, if any (the bytes before it still count, as TUS wants).
    func append<S: AsyncSequence & Sendable>(_ id: String, _ info: ResumableInfo, body: S) async -> (ResumableInfo, (any Error)?)
    where S.Element: ByteBufferLike {
        var info = info
        let path = dir(id) + "/data"
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return (info, BlobStore.posix("open", path)) }
        defer { close(fd) }
        // Bytes past the recorded offset were never acknowledged (a cut request before a crash).
        guard ftruncate(fd, off_t(info.offset)) == 0 else { return (info, BlobStore.posix("ftruncate", path)) }
        let progress = AppendProgress(written: info.offset)
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
