import Glibc
import Synchronization
@testable import Kernel

/// Real files with injectable faults: failing syncs (F1) and a full disk (ENOSPC). Used only
/// where the point of the test is the fault.
final class FaultyFileSystem: FileSystem {
    struct Faults {
        var failSyncs = false
        var diskFull = false
        /// Writes to files whose path ends with this fail with ENOSPC (a full disk as a
        /// checkpoint's temp file grows).
        var failWritesToPathsEndingWith: String?
        /// Every sync takes this much longer (a loaded disk).
        var syncDelayMicros: UInt32 = 0
        var syncs = 0
    }

    let base = POSIXFileSystem()
    let faults = Mutex(Faults())

    func open(_ path: String, create: Bool) throws -> any FileHandle {
        FaultyHandle(base: try base.open(path, create: create), owner: self)
    }
    func exists(_ path: String) -> Bool { base.exists(path) }
    func list(_ directory: String) throws -> [String] { try base.list(directory) }
    func makeDirectory(_ path: String) throws { try base.makeDirectory(path) }
    func rename(_ source: String, _ target: String) throws { try base.rename(source, target) }
    func remove(_ path: String) throws { try base.remove(path) }
    func syncDirectory(_ path: String) throws { try base.syncDirectory(path) }
}

final class FaultyHandle: FileHandle {
    let base: any FileHandle
    let owner: FaultyFileSystem

    init(base: any FileHandle, owner: FaultyFileSystem) {
        self.base = base
        self.owner = owner
    }

    var path: String { base.path }
    var descriptor: Int32? { nil }
    func read(at offset: Int64, count: Int) throws -> [UInt8] { try base.read(at: offset, count: count) }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        if let suffix = owner.faults.withLock({ $0.failWritesToPathsEndingWith }), path.hasSuffix(suffix) {
            try base.write(UnsafeRawBufferPointer(rebasing: bytes.prefix(bytes.count / 2)), at: offset)  // partly written, then full
            throw AeroError(.storageFull, "pwrite \(path): No space left on device (injected)")
        }
        try base.write(bytes, at: offset)
    }
    func sync() throws {
        let (fail, delay) = owner.faults.withLock { f in
            f.syncs += 1
            return (f.failSyncs, f.syncDelayMicros)
        }
        if delay > 0 { usleep(delay) }
        if fail { throw AeroError(.ioError, "fdatasync \(path): Input/output error (injected)") }
        try base.sync()
    }
    func size() throws -> Int64 { try base.size() }
    func truncate(to size: Int64) throws { try base.truncate(to: size) }
    func allocate(at offset: Int64, length: Int64) throws {
        if owner.faults.withLock({ $0.diskFull }) {
            throw AeroError(.storageFull, "fallocate \(path): No space left on device (injected)")
        }
        try base.allocate(at: offset, length: length)
    }
    func close() { base.close() }
}
