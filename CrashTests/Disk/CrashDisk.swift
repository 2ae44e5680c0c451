// CrashDisk: an in-memory FileSystem that remembers what is durable and what is not, so the
// harness can cut the power at any moment and derive the disk images a real machine could
// show afterwards (the ALICE / CrashMonkey / LazyFS model, SPEC §6).
//
// Model:
// - A file (inode) has `durable` bytes (as of its last successful sync) and `pending` writes
//   and truncations since then, in order.
// - A directory has `durable` entries (as of its last syncDirectory) and `current` entries.
// - A crash image keeps all durable data; of each file's pending operations it keeps a prefix,
//   plus (per seed) a random subset of the rest, each write possibly torn at 512-byte sector
//   granularity; each directory shows either its durable or its current entries (creates and
//   renames since the last directory sync may vanish, atomically per directory).
// - After `crash()`, every operation throws: the process is dead.
// - Faults: `failSyncAfter` makes the N-th sync fail (F1); `fullAfterBytes` answers ENOSPC to
//   allocations past a size (the storage-full path).

import Kernel
import Synchronization

final class CrashDisk: FileSystem {
    static let sectorBytes = 512
    /// Files up to this size pick a bit flip among all their written bytes; larger ones sample.
    static let flipIndexBytesMax = 1 << 20
    /// Random offsets tried on a large file before flipping a zero byte.
    static let flipSamplesMax = 64

    struct Write: Sendable {
        let offset: Int
        let bytes: [UInt8]
    }

    enum Pending: Sendable {
        case write(Write)
        case truncate(Int)
    }

    final class Inode: @unchecked Sendable {
        var durable: [UInt8] = []
        var current: [UInt8] = []
        var pending: [Pending] = []
    }

    struct Directory: Sendable {
        var durable: [String: Inode] = [:]
        var current: [String: Inode] = [:]
    }

    struct Faults: Sendable {
        /// The sync with this ordinal (1-based) fails, and every later one too.
        var failSyncAt: Int?
        /// Allocation beyond this many bytes in total answers ENOSPC.
        var allocationBytesMax: Int?
        /// The power goes out when this many mutating operations have been done: the
        /// operation that would be number N+1 throws, and so does everything after it.
        var crashAfterOperations: Int?
        /// A deliberately broken disk, to prove the harness catches what it claims to catch.
        var sabotage: Sabotage?
    }

    /// Broken variants reachable only from the harness, never from a node.
    enum Sabotage: String, CaseIterable, Sendable {
        /// `sync()` reports success without making anything durable: the kernel then
        /// acknowledges commits whose bytes are still volatile (an ack before the flush).
        case ackBeforeFlush = "ack-before-flush"
        /// `syncDirectory` does nothing: new WAL segments and renamed checkpoints may vanish.
        case skipDirectorySync = "skip-directory-sync"
        /// `sync()` of a file under `/blobs/` does nothing: a blob is renamed to its hash and its
        /// row committed while its bytes are volatile (the blob workload must catch it, ST1).
        case skipBlobFlush = "skip-blob-flush"
    }

    private struct State: @unchecked Sendable {
        var directories: [String: Directory] = ["/": Directory()]
        var crashed = false
        var syncs = 0
        var allocatedBytes = 0
        var operations = 0
        var faults = Faults()
    }

    private let state: Mutex<State>

    init(faults: Faults = Faults()) {
        var s = State()
        s.faults = faults
        state = Mutex(s)
    }

    /// Number of fdatasync calls so far.
    var syncCount: Int { state.withLock { $0.syncs } }

    /// Number of mutating operations so far (writes, syncs, creates, renames, ...).
    var operationCount: Int { state.withLock { $0.operations } }

    func setFaults(_ faults: Faults) { state.withLock { $0.faults = faults } }

    /// Cuts the power: every later call throws.
    func crash() { state.withLock { $0.crashed = true } }

    // MARK: FileSystem

    func open(_ path: String, create: Bool) throws -> any FileHandle {
        try state.withLock { s in
            try Self.alive(&s)
            let (dir, name) = try Self.split(path, s)
            if let inode = s.directories[dir]!.current[name] { return CrashFileHandle(path: path, inode: inode, disk: self) }
            guard create else { throw AeroError(.ioError, "open \(path): no such file") }
            let inode = Inode()
            s.directories[dir]!.current[name] = inode
            s.operations += 1
            return CrashFileHandle(path: path, inode: inode, disk: self)
        }
    }

    func exists(_ path: String) -> Bool {
        state.withLock { s in
            if s.directories[path] != nil { return true }
            guard let (dir, name) = try? Self.split(path, s) else { return false }
            return s.directories[dir]?.current[name] != nil
        }
    }

    func list(_ directory: String) throws -> [String] {
        try state.withLock { s in
            try Self.alive(&s)
            guard let dir = s.directories[Self.normalize(directory)] else {
                throw AeroError(.ioError, "opendir \(directory): no such directory")
            }
            let subdirectories = s.directories.keys.filter { Path.parent(of: $0) == Self.normalize(directory) && $0 != "/" }
            return (Array(dir.current.keys) + subdirectories.map(Path.name(of:))).sorted()
        }
    }

    func makeDirectory(_ path: String) throws {
        try state.withLock { s in
            try Self.alive(&s)
            let p = Self.normalize(path)
            if s.directories[p] == nil {
                // Directories are modelled as durable once created (the harness cuts power after
                // the data directory exists); the interesting cases are files and renames in them.
                s.directories[p] = Directory()
                s.operations += 1
            }
        }
    }

    func rename(_ source: String, _ target: String) throws {
        try state.withLock { s in
            try Self.alive(&s)
            let (sd, sn) = try Self.split(source, s), (td, tn) = try Self.split(target, s)
            guard let inode = s.directories[sd]!.current[sn] else { throw AeroError(.ioError, "rename \(source): no such file") }
            s.directories[sd]!.current[sn] = nil
            s.directories[td]!.current[tn] = inode
            s.operations += 1
        }
    }

    func remove(_ path: String) throws {
        try state.withLock { s in
            try Self.alive(&s)
            let (dir, name) = try Self.split(path, s)
            guard s.directories[dir]!.current.removeValue(forKey: name) != nil else {
                throw AeroError(.ioError, "unlink \(path): no such file")
            }
            s.operations += 1
        }
    }

    func syncDirectory(_ path: String) throws {
        try state.withLock { s in
            try Self.alive(&s)
            let p = Self.normalize(path)
            guard s.directories[p] != nil else { throw AeroError(.ioError, "fsync directory \(path): no such directory") }
            s.operations += 1
            if s.faults.sabotage == .skipDirectorySync { return }
            s.directories[p]!.durable = s.directories[p]!.current
        }
    }

    // MARK: File operations (called by CrashFileHandle)

    func write(_ inode: Inode, _ bytes: [UInt8], at offset: Int) throws {
        try state.withLock { s in
            try Self.alive(&s)
            if inode.current.count < offset + bytes.count {
                inode.current.append(contentsOf: [UInt8](repeating: 0, count: offset + bytes.count - inode.current.count))
            }
            inode.current.replaceSubrange(offset..<offset + bytes.count, with: bytes)
            inode.pending.append(.write(Write(offset: offset, bytes: bytes)))
            s.operations += 1
        }
    }

    func truncate(_ inode: Inode, to size: Int) throws {
        try state.withLock { s in
            try Self.alive(&s)
            if size < inode.current.count { inode.current.removeLast(inode.current.count - size) } else {
                inode.current.append(contentsOf: [UInt8](repeating: 0, count: size - inode.current.count))
            }
            inode.pending.append(.truncate(size))
            s.operations += 1
        }
    }

    func allocate(_ inode: Inode, at offset: Int, length: Int) throws {
        try state.withLock { s in
            try Self.alive(&s)
            let growth = max(0, offset + length - inode.current.count)
            if let max = s.faults.allocationBytesMax, s.allocatedBytes + growth > max {
                throw AeroError(.storageFull, "fallocate: No space left on device (simulated)")
            }
            s.allocatedBytes += growth
            if growth > 0 {
                inode.current.append(contentsOf: [UInt8](repeating: 0, count: growth))
                inode.pending.append(.truncate(inode.current.count))
            }
            s.operations += 1
        }
    }

    func sync(_ inode: Inode, path: String = "") throws {
        try state.withLock { s in
            try Self.alive(&s)
            s.syncs += 1
            s.operations += 1
            if let failAt = s.faults.failSyncAt, s.syncs >= failAt {
                throw AeroError(.ioError, "fdatasync: Input/output error (simulated)")
            }
            if s.faults.sabotage == .ackBeforeFlush { return }
            if s.faults.sabotage == .skipBlobFlush && path.contains("/blobs/") { return }
            inode.durable = inode.current
            inode.pending = []
        }
    }

    func read(_ inode: Inode, at offset: Int, count: Int) throws -> [UInt8] {
        try state.withLock { s in
            try Self.alive(&s)
            guard offset < inode.current.count else { return [] }
            return Array(inode.current[offset..<min(inode.current.count, offset + count)])
        }
    }

    func size(_ inode: Inode) throws -> Int {
        try state.withLock { s in
            try Self.alive(&s)
            return inode.current.count
        }
    }

    // MARK: Crash images

    /// A disk as it could look after power returns, chosen by `random`.
    /// `keepAllPending` = the lucky case where every pending write reached the platter.
    func crashImage(random: inout SeededRandom, keepAllPending: Bool = false) -> CrashDisk {
        state.withLock { s in
            let image = CrashDisk()
            var copies: [ObjectIdentifier: Inode] = [:]
            func survivor(_ inode: Inode) -> Inode {
                if let copy = copies[ObjectIdentifier(inode)] { return copy }
                let copy = Inode()
                copy.durable = keepAllPending ? inode.current : Self.survivingBytes(inode, random: &random)
                copy.current = copy.durable
                copies[ObjectIdentifier(inode)] = copy
                return copy
            }
            image.state.withLock { target in
                for path in s.directories.keys.sorted() {
                    let dir = s.directories[path]!
                    let entries = keepAllPending || random.next(below: 2) == 0 ? dir.current : dir.durable
                    var copy = Directory()
                    for name in entries.keys.sorted() { copy.current[name] = survivor(entries[name]!) }
                    copy.durable = copy.current
                    target.directories[path] = copy
                }
            }
            return image
        }
    }

    /// Durable bytes plus a prefix of the pending operations, then a random subset of the rest,
    /// writes torn at sector granularity.
    private static func survivingBytes(_ inode: Inode, random: inout SeededRandom) -> [UInt8] {
        var bytes = inode.durable
        let prefix = random.next(below: inode.pending.count + 1)
        for (i, op) in inode.pending.enumerated() {
            switch op {
            case .truncate(let size):
                guard i < prefix || random.next(below: 2) == 0 else { continue }
                if size < bytes.count { bytes.removeLast(bytes.count - size) } else {
                    bytes.append(contentsOf: [UInt8](repeating: 0, count: size - bytes.count))
                }
            case .write(let w):
                let whole = i < prefix
                if !whole && random.next(below: 3) == 0 { continue }
                apply(w, to: &bytes, torn: !whole, random: &random)
            }
        }
        return bytes
    }

    private static func apply(_ w: Write, to bytes: inout [UInt8], torn: Bool, random: inout SeededRandom) {
        if bytes.count < w.offset + w.bytes.count {
            bytes.append(contentsOf: [UInt8](repeating: 0, count: w.offset + w.bytes.count - bytes.count))
        }
        var start = 0
        while start < w.bytes.count {
            // Sector boundaries are absolute disk offsets, not offsets within the write.
            let sectorEnd = ((w.offset + start) / sectorBytes + 1) * sectorBytes - w.offset
            let end = min(w.bytes.count, sectorEnd)
            if !torn || random.next(below: 2) == 0 {
                bytes.replaceSubrange(w.offset + start..<w.offset + end, with: w.bytes[start..<end])
            }
            start = end
        }
    }

    /// Flips one random bit of one random non-empty file (a WAL segment or a checkpoint).
    /// Returns the path and offset, for the report.
    func flipRandomBit(random: inout SeededRandom) -> String? {
        state.withLock { s in
            var files: [(String, Inode)] = []
            for path in s.directories.keys.sorted() {
                for (name, inode) in s.directories[path]!.current.sorted(by: { $0.key < $1.key }) where !inode.current.isEmpty {
                    files.append((Path.join(path, name), inode))
                }
            }
            guard !files.isEmpty else { return nil }
            let (path, inode) = files[random.next(below: files.count)]
            // Aim at written bytes: zero space flipped is also fine, but rarely interesting. Large
            // files (segments of maximal-document workloads) are sampled instead of indexed.
            let offset: Int
            if inode.current.count <= Self.flipIndexBytesMax {
                let written = inode.current.indices.filter { inode.current[$0] != 0 }
                offset = written.isEmpty ? random.next(below: inode.current.count) : written[random.next(below: written.count)]
            } else {
                var pick = random.next(below: inode.current.count)
                for _ in 0..<Self.flipSamplesMax where inode.current[pick] == 0 { pick = random.next(below: inode.current.count) }
                offset = pick
            }
            inode.current[offset] ^= UInt8(1) << UInt8(random.next(below: 8))
            inode.durable = inode.current
            return "\(path) byte \(offset)"
        }
    }

    // MARK: Helpers

    private static func alive(_ s: inout State) throws {
        if let limit = s.faults.crashAfterOperations, s.operations >= limit { s.crashed = true }
        guard !s.crashed else { throw AeroError(.ioError, "the simulated machine lost power") }
    }

    var hasCrashed: Bool { state.withLock { $0.crashed } }

    private static func normalize(_ path: String) -> String {
        path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    private static func split(_ path: String, _ s: State) throws -> (String, String) {
        let dir = Path.parent(of: path), name = Path.name(of: path)
        guard s.directories[dir] != nil else { throw AeroError(.ioError, "\(path): no such directory") }
        return (dir, name)
    }
}

final class CrashFileHandle: FileHandle {
    let path: String
    private let inode: CrashDisk.Inode
    private let disk: CrashDisk

    init(path: String, inode: CrashDisk.Inode, disk: CrashDisk) {
        self.path = path
        self.inode = inode
        self.disk = disk
    }

    var descriptor: Int32? { nil }

    func read(at offset: Int64, count: Int) throws -> [UInt8] { try disk.read(inode, at: Int(offset), count: count) }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws { try disk.write(inode, Array(bytes), at: Int(offset)) }

    func sync() throws { try disk.sync(inode, path: path) }

    func size() throws -> Int64 { Int64(try disk.size(inode)) }

    func truncate(to size: Int64) throws { try disk.truncate(inode, to: Int(size)) }

    func allocate(at offset: Int64, length: Int64) throws { try disk.allocate(inode, at: Int(offset), length: Int(length)) }

    func close() {}
}
