// Object bytes on disk, content-addressed (docs/STORAGE.md).
//
// Layout under the node's data directory:
//   blobs/<first two hex digits>/<sha256 hex of the content>   one file per distinct content
//   blobs/tmp/<random>.part                                    an upload in progress
// Invariants:
// - ST1 (bytes before metadata): a blob is complete and durable before any metadata names it.
//   `BlobWriter.finish` writes every byte, fsyncs the temp file, renames it to its hash name and
//   fsyncs the directory; only then does the caller commit the object row that references it.
// - ST2 (content addressing): a blob's name is the SHA-256 of its bytes, computed while they
//   streamed in; a file is never modified after its rename. Readers verify nothing per request
//   (the name was proven at write), `verify(sha256:)` re-hashes on demand.
// - Never a whole object in memory: bytes stream through `chunkBytes` buffers both ways.
// A crash before the rename leaves a `.part` file (collected: BlobCollector); a crash after the
// rename but before the metadata commit leaves an unreferenced blob (collected too).
// Seam for the disk crash harness (`aerodb-crashtest disk`, blob workload): a store made with
// `init(dataDirectory:fileSystem:)` sends the write path (temp file, writes, fsync, rename,
// directory fsyncs) and the read path (exists, size, reader) through a kernel `FileSystem`, so a
// simulated disk can tear or lose unflushed blob bytes. A node always uses the POSIX calls below
// (`fileSystem` nil); `adopt` and `touch` (mtimes, hard links) exist only on POSIX.

import Crypto
import Foundation
import Synchronization
import Kernel
#if canImport(Glibc)
import Glibc
#endif

public final class BlobStore: Sendable {
    public let root: String
    /// Serializes "name a blob" (rename or, for known content, refresh its mtime) with the
    /// collector's "check age and unlink" (BlobCollector, ST3).
    let naming = Mutex(())
    var tmp: String { root + "/tmp" }
    /// nil on a node (POSIX); a simulated disk in the crash harness.
    let fileSystem: (any FileSystem)?

    public init(dataDirectory: String) throws {
        root = dataDirectory + "/blobs"
        fileSystem = nil
        try Self.makeDurableDirectory(root, parent: dataDirectory)
        try Self.makeDurableDirectory(root + "/tmp", parent: root)
    }

    /// A store whose writes and reads go through `fileSystem` (the crash harness's simulated disk).
    public init(dataDirectory: String, fileSystem: any FileSystem) throws {
        root = dataDirectory + "/blobs"
        self.fileSystem = fileSystem
        try makeDurableDirectory(root, parent: dataDirectory)
        try makeDurableDirectory(root + "/tmp", parent: root)
    }

    /// `makeDurableDirectory` / `syncDirectory` through the seam when there is one.
    func makeDurableDirectory(_ path: String, parent: String) throws {
        guard let fs = fileSystem else { return try Self.makeDurableDirectory(path, parent: parent) }
        if fs.exists(path) { return }
        try fs.makeDirectory(path)
        try fs.syncDirectory(parent)
    }

    func syncDirectory(_ path: String) throws {
        guard let fs = fileSystem else { return try Self.syncDirectory(path) }
        try fs.syncDirectory(path)
    }

    static func makeDurableDirectory(_ path: String, parent: String) throws {
        var st = stat()
        if stat(path, &st) == 0 { return }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw posix("mkdir", path) }
        try syncDirectory(parent)
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw posix("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw posix("fsync", path) }
    }

    static func posix(_ call: String, _ path: String) -> AeroError {
        let code = errno
        let text = String(cString: strerror(code))
        if code == ENOSPC || code == EDQUOT { return AeroError(.storageFull, "\(call) \(path): \(text)") }
        return AeroError(.ioError, "\(call) \(path): \(text)")
    }

    /// A valid blob name: 64 lowercase hex digits.
    public static func isHash(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    public func path(of sha256: String) -> String {
        precondition(Self.isHash(sha256), "blob names are SHA-256 hex")
        return root + "/" + sha256.prefix(2) + "/" + sha256
    }

    public func exists(_ sha256: String) -> Bool {
        guard Self.isHash(sha256) else { return false }
        if let fs = fileSystem { return fs.exists(path(of: sha256)) }
        var st = stat()
        return stat(path(of: sha256), &st) == 0
    }

    /// Size of the stored blob, nil when absent.
    public func size(_ sha256: String) -> Int64? {
        guard Self.isHash(sha256) else { return nil }
        if let fs = fileSystem {
            guard fs.exists(path(of: sha256)), let handle = try? fs.open(path(of: sha256), create: false) else { return nil }
            defer { handle.close() }
            return try? handle.size()
        }
        var st = stat()
        guard stat(path(of: sha256), &st) == 0 else { return nil }
        return Int64(st.st_size)
    }

    public func writer(limitBytes: Int64) throws -> BlobWriter {
        try BlobWriter(store: self, limitBytes: limitBytes)
    }

    /// Opens a blob for streaming reads.
    public func reader(_ sha256: String) throws -> BlobReader? {
        guard Self.isHash(sha256) else { return nil }
        if let fs = fileSystem {
            guard fs.exists(path(of: sha256)) else { return nil }
            return BlobReader(handle: try fs.open(path(of: sha256), create: false))
        }
        let fd = open(path(of: sha256), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw Self.posix("open", path(of: sha256))
        }
        return BlobReader(fd: fd)
    }

    /// Names a durable file (a finished resumable upload) as a blob without copying it: hashes
    /// it, then, under the naming lock, hard-links it to its hash name (or refreshes the mtime
    /// of the same content already stored), then fsyncs the shard directory (ST1). The caller
    /// fsynced the file and never writes it again (ST2).
    func adopt(_ file: String) throws -> (sha256: String, size: Int64) {
        guard fileSystem == nil else { throw AeroError(.internalError, "BlobStore.adopt is POSIX only (hard links)") }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.posix("open", file) }
        let reader = BlobReader(fd: fd)
        var hasher = SHA256()
        var offset: Int64 = 0
        while true {
            let chunk = try reader.read(at: offset, count: StorageLimits.chunkBytes)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            offset += Int64(chunk.count)
        }
        let sha = Hex.lowercase(hasher.finalize())
        let shard = root + "/" + sha.prefix(2)
        try Self.makeDurableDirectory(shard, parent: root)
        let target = path(of: sha)
        let linked: Bool = try naming.withLock { _ in
            var st = stat()
            if stat(target, &st) == 0 {
                guard utimes(target, nil) == 0 else { throw Self.posix("utimes", target) }
                return false
            }
            guard link(file, target) == 0 else { throw Self.posix("link", target) }
            // A link keeps the file's mtime (its last PATCH, maybe hours ago): fresh for ST3's grace.
            guard utimes(target, nil) == 0 else { throw Self.posix("utimes", target) }
            return true
        }
        if linked { try Self.syncDirectory(shard) }
        return (sha, offset)
    }

    /// Refreshes a stored blob's mtime under the naming lock (a new row is about to name known
    /// content without writing it: S3 CopyObject), so no collector pass finds it old before the
    /// commit (ST3). Throws when the blob is absent.
    func touch(_ sha256: String) throws {
        guard Self.isHash(sha256) else { throw StorageError.objectNotFound }
        guard fileSystem == nil else { throw AeroError(.internalError, "BlobStore.touch is POSIX only (mtimes)") }
        let target = path(of: sha256)
        try naming.withLock { _ in
            guard utimes(target, nil) == 0 else {
                if errno == ENOENT { throw StorageError.replicaBlob("this node does not hold the source object's bytes; retry") }
                throw Self.posix("utimes", target)
            }
        }
    }

    /// Removes a blob (only BlobCollector calls this, after proving it unreferenced).
    func remove(_ sha256: String) throws {
        let p = path(of: sha256)
        if let fs = fileSystem {
            if fs.exists(p) { try fs.remove(p) }
            return
        }
        guard unlink(p) == 0 || errno == ENOENT else { throw Self.posix("unlink", p) }
    }
}

/// Streams one upload into a temp file while hashing it; `finish` makes it a durable blob (ST1).
/// Not thread-safe: one request owns it.
public final class BlobWriter {
    let store: BlobStore
    let tempPath: String
    private var fd: Int32
    /// The temp file on the seam's FileSystem (`fd` is -1 then).
    private var handle: (any Kernel.FileHandle)?
    private var hasher = SHA256()
    private(set) var bytes: Int64 = 0
    let limitBytes: Int64
    private var done = false

    init(store: BlobStore, limitBytes: Int64) throws {
        self.store = store
        self.limitBytes = limitBytes
        tempPath = store.tmp + "/" + UUID().uuidString.lowercased() + ".part"
        if let fs = store.fileSystem {
            fd = -1
            handle = try fs.open(tempPath, create: true)
            return
        }
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BlobStore.posix("open", tempPath) }
    }

    deinit { if !done { abort() } }

    /// Appends bytes; throws StorageError.tooLarge past `limitBytes` (nothing is kept).
    public func write(_ chunk: UnsafeRawBufferPointer) throws {
        guard chunk.count > 0 else { return }
        let (sum, overflow) = bytes.addingReportingOverflow(Int64(chunk.count))
        guard !overflow, sum <= limitBytes else {
            abort()
            throw StorageError.tooLarge(limitBytes)
        }
        hasher.update(bufferPointer: chunk)
        if let handle {
            do { try handle.write(chunk, at: bytes) } catch {
                abort()
                throw error
            }
            bytes = sum
            return
        }
        var offset = 0
        while offset < chunk.count {
            let n = Glibc.write(fd, chunk.baseAddress! + offset, chunk.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                let error = BlobStore.posix("write", tempPath)
                abort()
                throw error
            }
            offset += n
        }
        bytes = sum
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// The lowercase hex SHA-256 of the bytes written so far (what `finish` names the blob);
    /// S3's 64-hex payload mode checks it instead of hashing the body a second time.
    public var sha256Hex: String { Hex.lowercase(hasher.finalize()) }  // a copy: writing may go on

    /// fsync, rename to the content's name, fsync the directory (ST1). Returns (sha256 hex, size).
    public func finish() throws -> (sha256: String, size: Int64) {
        precondition(!done, "finish once")
        if let handle { return try finishOnFileSystem(handle) }
        guard fsync(fd) == 0 else {
            // F1's spirit: a failed flush is never trusted; the upload fails, nothing refers to it.
            let error = BlobStore.posix("fsync", tempPath)
            abort()
            throw error
        }
        close(fd)
        fd = -1
        let sha = sha256Hex
        let shard = store.root + "/" + sha.prefix(2)
        do {
            try BlobStore.makeDurableDirectory(shard, parent: store.root)
            let target = store.path(of: sha)
            let temp = tempPath
            let renamed: Bool = try store.naming.withLock { _ in
                var st = stat()
                if stat(target, &st) == 0 {
                    // Same content already durable: keep it, fresh again for the collector's grace period.
                    unlink(temp)
                    guard utimes(target, nil) == 0 else { throw BlobStore.posix("utimes", target) }
                    return false
                }
                guard rename(temp, target) == 0 else { throw BlobStore.posix("rename", temp) }
                return true
            }
            if renamed { try BlobStore.syncDirectory(shard) }
        } catch {
            abort()
            throw error
        }
        done = true
        return (sha, bytes)
    }

    /// `finish` on the seam's FileSystem: the same order (ST1) without mtimes.
    private func finishOnFileSystem(_ handle: any Kernel.FileHandle) throws -> (sha256: String, size: Int64) {
        let fs = store.fileSystem!
        do {
            try handle.sync()
            handle.close()
            self.handle = nil
            let sha = sha256Hex
            let shard = store.root + "/" + sha.prefix(2)
            try store.makeDurableDirectory(shard, parent: store.root)
            let target = store.path(of: sha)
            let temp = tempPath
            let renamed: Bool = try store.naming.withLock { _ in
                if fs.exists(target) {
                    try fs.remove(temp)
                    return false
                }
                try fs.rename(temp, target)
                return true
            }
            if renamed { try store.syncDirectory(shard) }
            done = true
            return (sha, bytes)
        } catch {
            abort()
            throw error
        }
    }

    /// Drops the temp file (an upload refused or cut).
    public func abort() {
        guard !done else { return }
        done = true
        if fd >= 0 { close(fd); fd = -1 }
        if let fs = store.fileSystem {
            handle?.close()
            handle = nil
            if fs.exists(tempPath) { try? fs.remove(tempPath) }  // as unlink below: a leftover is collected (ST3)
            return
        }
        unlink(tempPath)
    }
}

/// Reads a blob in chunks; closes its descriptor when released.
public final class BlobReader: @unchecked Sendable {  // one request's task owns it; the fd is immutable
    let fd: Int32
    /// The blob on the seam's FileSystem (`fd` is -1 then).
    let handle: (any Kernel.FileHandle)?
    init(fd: Int32) { self.fd = fd; handle = nil }
    init(handle: any Kernel.FileHandle) { fd = -1; self.handle = handle }
    deinit { if let handle { handle.close() } else { close(fd) } }

    public var size: Int64 {
        if let handle { return (try? handle.size()) ?? 0 }
        var st = stat()
        return fstat(fd, &st) == 0 ? Int64(st.st_size) : 0
    }

    /// Up to `count` bytes at `offset` (fewer only at the end of the file).
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        if let handle { return try handle.read(at: offset, count: count) }
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset) + off_t(got)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw AeroError(.ioError, "pread of a blob: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            got += n
        }
        out.removeLast(count - got)
        return out
    }
}
