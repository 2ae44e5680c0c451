// The real disk: POSIX calls with every error checked and mapped to AeroError.

#if canImport(Glibc)
import Glibc
#endif
import CLiburing
import Synchronization

public struct POSIXFileSystem: FileSystem {
    public init() {}

    public func open(_ path: String, create: Bool) throws -> any FileHandle {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = Glibc.open(path, flags, 0o644)
        guard fd >= 0 else { throw POSIXFileSystem.error("open", path) }
        return POSIXFileHandle(path: path, fd: fd)
    }

    public func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    public func list(_ directory: String) throws -> [String] {
        guard let dir = opendir(directory) else { throw POSIXFileSystem.error("opendir", directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw POSIXFileSystem.error("mkdir", path) }
    }

    public func rename(_ source: String, _ target: String) throws {
        guard Glibc.rename(source, target) == 0 else { throw POSIXFileSystem.error("rename", source + " -> " + target) }
    }

    public func remove(_ path: String) throws {
        guard unlink(path) == 0 else { throw POSIXFileSystem.error("unlink", path) }
    }

    public func syncDirectory(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXFileSystem.error("open directory", path) }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw POSIXFileSystem.error("fsync directory", path) }
    }

    /// A second descriptor of the file open as `fd` at `path`, with `flags` (O_DIRECT ones):
    /// through /proc/self/fd, so a rename since the open does not matter, and by path where
    /// /proc is not mounted. -1 (errno set) when refused: EINVAL where O_DIRECT is not supported.
    static func reopen(fd: Int32, path: String, flags: Int32) -> Int32 {
        let again = Glibc.open("/proc/self/fd/\(fd)", flags)
        return again < 0 && errno == ENOENT ? Glibc.open(path, flags) : again
    }

    /// pwrite until every byte is written: an interrupted write is retried, a short one continues
    /// where it stopped (a direct write stops at a block boundary; should one not, the next pwrite
    /// is refused with EINVAL), and a write of nothing is an error rather than a loop.
    static func pwriteAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64, fd: Int32, path: String, operation: String) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw error(operation, path)
            }
            guard n > 0 else { throw AeroError(.ioError, "\(operation) \(path): nothing written at \(offset + Int64(done))") }
            done += n
        }
    }

    static func error(_ operation: String, _ path: String, code: Int32 = errno) -> AeroError {
        let reason = String(cString: strerror(code))
        if code == ENOSPC || code == EDQUOT {
            return AeroError(.storageFull, "\(operation) \(path): \(reason)")
        }
        return AeroError(.ioError, "\(operation) \(path): \(reason) (errno \(code))")
    }
}

public final class POSIXFileHandle: FileHandle {
    public let path: String
    private let fd: Int32
    /// The O_DIRECT | O_DSYNC descriptor (`directDurableDescriptor`): not asked yet, open, refused
    /// by the file system, or closed with the handle.
    private enum Direct { case unopened, open(Int32), refused, closed }
    private let direct = Mutex(Direct.unopened)

    init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    public var descriptor: Int32? { fd }

    /// Reopens this very file (through /proc/self/fd, so a rename since the open does not matter;
    /// by path where /proc is not mounted) with O_DIRECT | O_DSYNC, once. EINVAL (a file system
    /// without O_DIRECT, tmpfs) or any other refusal is remembered: nil from then on.
    public func directDurableDescriptor() -> Int32? {
        direct.withLock { state in
            switch state {
            case .open(let direct): return direct
            case .refused, .closed: return nil
            case .unopened:
                let direct = POSIXFileSystem.reopen(fd: fd, path: path, flags: O_WRONLY | O_CLOEXEC | CLIBURING_O_DIRECT | O_DSYNC)
                state = direct >= 0 ? .open(direct) : .refused
                return direct >= 0 ? direct : nil
            }
        }
    }

    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        precondition(count >= 0 && offset >= 0, "read bounds must be non-negative")
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        try out.withUnsafeMutableBytes { buffer in
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw POSIXFileSystem.error("pread", path)
                }
                if n == 0 { break }
                done += n
            }
        }
        if done < count { out.removeLast(count - done) }
        return out
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        try POSIXFileSystem.pwriteAll(bytes, at: offset, fd: fd, path: path, operation: "pwrite")
    }

    public func sync() throws {
        guard fdatasync(fd) == 0 else { throw POSIXFileSystem.error("fdatasync", path) }
    }

    public func size() throws -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw POSIXFileSystem.error("fstat", path) }
        return Int64(st.st_size)
    }

    public func truncate(to size: Int64) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw POSIXFileSystem.error("ftruncate", path) }
    }

    public func allocate(at offset: Int64, length: Int64) throws {
        let rc = posix_fallocate(fd, off_t(offset), off_t(length))
        guard rc == 0 else { throw POSIXFileSystem.error("fallocate", path, code: rc) }
    }

    public func close() {
        let directOpen = direct.withLock { state -> Int32? in
            defer { state = .closed }
            if case .open(let direct) = state { return direct }
            return nil
        }
        if let directOpen { Glibc.close(directOpen) }
        Glibc.close(fd)
    }
}
