// The narrow disk interface of the kernel. Every byte the kernel reads or writes goes through
// `FileSystem` and `FileHandle`, so the crash harness can substitute a simulated disk that records
// writes, flushes, creates, renames and directory syncs (SPEC §6).
//
// Contract (what callers may assume, and what a simulated disk must model):
// - `write` data is durable only after `sync()` on that handle returns without throwing.
// - A created or renamed name is durable only after `syncDirectory` on its parent returns.
// - A `sync()` that throws is fatal for the caller (F1): the page cache is not trusted afterwards.
// - Errors are `AeroError` with code `.ioError`, or `.storageFull` for ENOSPC.

public protocol FileSystem: Sendable {
    /// Opens an existing file for reading and writing, or creates it when `create` is true.
    func open(_ path: String, create: Bool) throws -> any FileHandle
    func exists(_ path: String) -> Bool
    /// Names in a directory (not `.` or `..`), sorted.
    func list(_ directory: String) throws -> [String]
    func makeDirectory(_ path: String) throws
    func rename(_ source: String, _ target: String) throws
    func remove(_ path: String) throws
    /// fsync of a directory: makes creates, renames and removes inside it durable.
    func syncDirectory(_ path: String) throws
}

public protocol FileHandle: AnyObject, Sendable {
    var path: String { get }
    func read(at offset: Int64, count: Int) throws -> [UInt8]
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws
    /// fdatasync: everything written before it is durable when it returns.
    func sync() throws
    func size() throws -> Int64
    func truncate(to size: Int64) throws
    /// Reserves `length` bytes of disk at `offset` (posix_fallocate); `.storageFull` when the disk is full.
    func allocate(at offset: Int64, length: Int64) throws
    func close()
    /// The POSIX descriptor when this is a real file (io_uring needs it), nil on a simulated disk.
    var descriptor: Int32? { get }
    /// A second descriptor of the same file whose writes bypass the page cache and are durable
    /// when they complete (O_DIRECT | O_DSYNC): opened on first use, closed with the handle. Nil
    /// where the file system refuses O_DIRECT (tmpfs) and on a simulated disk. A write through it
    /// must be aligned to `directAlignmentBytes` in offset, length and memory.
    func directDurableDescriptor() -> Int32?
}

/// The alignment of offset, length and memory that O_DIRECT writes use here: the WAL's block.
/// Linux asks for the device's logical block size (512 or 4096): 4096 satisfies both.
public let directAlignmentBytes = 4096

extension FileHandle {
    public func directDurableDescriptor() -> Int32? { nil }

    public func write(_ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    public func readAll() throws -> [UInt8] {
        try read(at: 0, count: Int(try size()))
    }
}

extension FileSystem {
    /// Writes a whole file atomically and durably: temp file, write, fsync, rename, fsync dir.
    /// A failure before the rename (a full disk, ENOSPC) removes the temp file, so a failed write
    /// leaks no space: the next attempt, once space is freed, is not refused for the leak.
    public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let temp = path + ".tmp"
        if exists(temp) { try remove(temp) }
        do {
            let handle = try open(temp, create: true)
            defer { handle.close() }
            try handle.write(bytes, at: 0)
            try handle.sync()
        } catch {
            // The write's own error is what the caller must see. If the removal fails too, the
            // file stays until the next write of this path or the next start
            // (`CheckpointStore.prepare` removes stale `.tmp` files): that error is irrelevant here.
            if exists(temp) { try? remove(temp) }
            throw error
        }
        try rename(temp, path)
        try syncDirectory(Path.parent(of: path))
    }

    public func readFile(_ path: String) throws -> [UInt8] {
        let handle = try open(path, create: false)
        defer { handle.close() }
        return try handle.readAll()
    }
}

/// Path helpers: plain string manipulation, no I/O.
public enum Path {
    public static func join(_ parts: String...) -> String {
        parts.filter { !$0.isEmpty }.joined(separator: "/").replacingSlashes()
    }

    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func name(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}

extension String {
    fileprivate func replacingSlashes() -> String {
        var out = ""
        var lastWasSlash = false
        for c in self {
            if c == "/" && lastWasSlash { continue }
            lastWasSlash = c == "/"
            out.append(c)
        }
        return out
    }
}
