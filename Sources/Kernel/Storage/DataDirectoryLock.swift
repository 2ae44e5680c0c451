// One process per data directory (DIR1 in docs/INVARIANTS.md). Two `aerodb
// start` on one directory would both replay the same log and both append to it as primary:
// each acknowledges writes the other overwrites. A process that uses a data directory (start,
// verify, rejoin) first takes this lock, before it reads anything there, and holds it until it
// exits; the kernel releases an flock when its holder dies, even by SIGKILL, so a crash never
// leaves a directory locked.
//
// File `<data>/aerodb.lock`: the holder's pid in decimal and a newline, rewritten by each holder
// (a stale pid from a dead holder is harmless: only a held lock is reported). The lock is
// `flock(LOCK_EX | LOCK_NB)` on that file: per open file description, so a second lock in the
// same process conflicts too (a command that starts the node hands its lock over instead).

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

public final class DataDirectoryLock: Sendable {
    public static let fileName = "aerodb.lock"
    /// Bytes of the lock file read to name the holder: a pid is at most 20 digits.
    static let holderBytesMax = 32

    public let path: String
    /// The descriptor holding the lock; nil once released.
    private let fd: Mutex<Int32?>

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = Mutex(fd)
    }

    /// Takes the lock of `dataDirectory`, or throws AERO_DATA_DIRECTORY_INVALID naming the pid
    /// of the process that holds it. Never waits.
    public static func acquire(dataDirectory: String) throws -> DataDirectoryLock {
        guard POSIXFileSystem().exists(dataDirectory) else {
            throw AeroError(.dataDirectoryInvalid, "no data directory at \(dataDirectory)")
        }
        let path = Path.join(dataDirectory, fileName)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXFileSystem.error("open", path) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = Self.holder(fd)
            close(fd)
            guard code == EWOULDBLOCK else { throw POSIXFileSystem.error("flock", path, code: code) }
            throw AeroError(.dataDirectoryInvalid, "data directory \(dataDirectory) is in use by another aerodb process"
                            + (holder.map { " (pid \($0))" } ?? "") + " that holds \(path); stop it first (one process per data directory)")
        }
        let text = Array("\(getpid())\n".utf8)
        let written = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard ftruncate(fd, off_t(text.count)) == 0, written == text.count else {
            let error = POSIXFileSystem.error("write", path)
            close(fd)
            throw error
        }
        return DataDirectoryLock(path: path, fd: fd)
    }

    /// The pid written by the holder, when readable.
    private static func holder(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: holderBytesMax)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let digits = buffer.prefix(n).prefix { $0 >= 48 && $0 <= 57 }
        return Int32(String(decoding: digits, as: UTF8.self))
    }

    /// Releases the lock (a process that exits releases it anyway).
    public func release() {
        guard let held = fd.withLock({ fd in defer { fd = nil }; return fd }) else { return }
        flock(held, LOCK_UN)
        close(held)
    }
}
