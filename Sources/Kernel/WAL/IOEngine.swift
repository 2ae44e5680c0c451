// The WAL I/O engines. Each does exactly one thing: write a block-aligned buffer at an offset
// and make it durable (D1); all pass the same tests (WALTests run every case on each engine).
// - `PwriteEngine`: FileHandle.write + FileHandle.sync (pwrite + fdatasync); portable, and the
//   only engine a simulated disk can use.
// - `UringEngine` (`wal_engine` automatic or `uring`): io_uring through liburing. Chosen
//   automatically where io_uring can be set up. Each group is one io_uring write through the
//   segment's second descriptor, opened O_DIRECT | O_DSYNC (`FileHandle.directDurableDescriptor`):
//   the write completes once its blocks are on stable storage (the kernel issues the device's
//   cache flush or a FUA write itself), one submission and one completion, no fsync. A linked
//   write + fsync was the engine before: io_uring punts a linked fsync to an io-wq worker, a
//   thread hand-off each way, 6 context switches per flush against 1 for the O_DIRECT | O_DSYNC
//   write (scripts/benchlib/wal_engine_model.c, docs/BENCHMARKS.md).
//   The buffer is block aligned in memory, offset and length (`AlignedWriteBuffer`; the WAL
//   writes whole blocks already); the page cache is bypassed for these writes only (the zero-fill,
//   reads and recovery stay buffered; Linux invalidates cached pages a direct write covers).
//   A group of a single record (a lone commit, flushed by its own caller) is the same write
//   through plain pwrite on that descriptor: without the ring's round trip it is faster still.
// - `UringEngine` buffered (`uring-buffered`, and wherever O_DIRECT cannot be opened, tmpfs): a
//   write linked to an fdatasync, one submission, two completions; a group of a single record (a
//   lone commit) is written with pwrite + fdatasync on the flusher thread instead (the io-wq hop
//   costs a lone commit most).
// Durability is the same on every path: the flush returns only after the bytes are on stable
// storage (D1). Any error is returned to the caller, which treats a failed flush as fatal (F1).

import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum IOEngineChoice: String, Sendable, CaseIterable {
    case automatic, uring, pwrite
    case uringBuffered = "uring-buffered"

    /// The names a configuration may use, for help and error texts.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

protocol WALIOEngine: Sendable {
    var name: String { get }
    /// Writes `bytes` at `offset` and returns once they are durable. `bytes`, `offset` and the
    /// count are aligned to `directAlignmentBytes`; `alone`: the group holds a single record (a
    /// lone commit), an engine may take a shorter path for it.
    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: Int64, to handle: any FileHandle, alone: Bool) throws
}

struct PwriteEngine: WALIOEngine {
    var name: String { "pwrite" }

    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: Int64, to handle: any FileHandle, alone: Bool) throws {
        try handle.write(bytes, at: offset)
        try handle.sync()
    }
}

/// Owns one ring. Used by one flush at a time (the WAL's flusher thread, or a caller flushing its
/// lone commit: `WriteAheadLog`'s `flushing`, set and cleared under its lock), which is why the
/// unchecked Sendable conformance is sound: the ring is never touched concurrently.
final class UringEngine: WALIOEngine, @unchecked Sendable {
    /// Two entries are all one flush needs (write + fsync); a few spare.
    static let ringEntries: UInt32 = 8
    private let ring: UnsafeMutablePointer<io_uring>
    /// Writes through an O_DIRECT | O_DSYNC descriptor where the file system allows one.
    let direct: Bool
    /// Flushes that took the direct path / the buffered path (tests; read from other threads).
    let directWrites = Atomic<Int>(0)
    let bufferedWrites = Atomic<Int>(0)

    var name: String { direct ? "io_uring" : "io_uring-buffered" }

    /// nil when io_uring cannot be set up here (old kernel, seccomp, container policy).
    init?(direct: Bool = true) {
        self.direct = direct
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        guard io_uring_queue_init(Self.ringEntries, ring, 0) == 0 else {
            ring.deallocate()
            return nil
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    func writeDurably(_ bytes: UnsafeRawBufferPointer, at offset: Int64, to handle: any FileHandle, alone: Bool) throws {
        let alignment = directAlignmentBytes
        if direct, Int(bitPattern: bytes.baseAddress) % alignment == 0, bytes.count % alignment == 0,
           offset % Int64(alignment) == 0, let fd = handle.directDurableDescriptor() {
            if alone {
                // A lone commit: the same write as a plain pwrite on the direct descriptor, which
                // skips the ring's submission and completion (11.9k against 10.8-11.3k writes/s
                // in wal_engine_model.c, `pwd` against `urd`).
                try POSIXFileSystem.pwriteAll(bytes, at: offset, fd: fd, path: handle.path, operation: "pwrite (O_DIRECT|O_DSYNC)")
            } else {
                try submit(bytes, at: offset, fd: fd, fsync: false, handle)
            }
            directWrites.add(1, ordering: .relaxed)
            return
        }
        bufferedWrites.add(1, ordering: .relaxed)
        if alone {
            // A lone commit on the buffered path: pwrite + fdatasync here, without the io-wq hop.
            try handle.write(bytes, at: offset)
            try handle.sync()
            return
        }
        guard let fd = handle.descriptor else {
            throw AeroError(.ioError, "io_uring needs a real file descriptor for \(handle.path)")
        }
        try submit(bytes, at: offset, fd: fd, fsync: true, handle)
    }

    /// One write, linked to an fdatasync when `fsync`; waits for every completion.
    private func submit(_ buffer: UnsafeRawBufferPointer, at offset: Int64, fd: Int32, fsync: Bool,
                        _ handle: any FileHandle) throws {
        let entries: UInt32 = fsync ? 2 : 1
        guard let write = io_uring_get_sqe(ring) else { throw AeroError(.ioError, "io_uring submission queue full") }
        io_uring_prep_write(write, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(offset))
        if fsync {
            write.pointee.flags |= UInt8(CLIBURING_IOSQE_IO_LINK)
            guard let sync = io_uring_get_sqe(ring) else { throw AeroError(.ioError, "io_uring submission queue full") }
            io_uring_prep_fsync(sync, fd, CLIBURING_FSYNC_DATASYNC)
        }
        let submitted = io_uring_submit_and_wait(ring, entries)
        guard submitted >= 0 else { throw uringError("io_uring_submit_and_wait", -submitted, handle) }
        var results: (write: Int32, sync: Int32) = (0, 0)
        for i in 0..<Int(entries) {
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            let rc = io_uring_wait_cqe(ring, &cqe)
            guard rc == 0, let completion = cqe else { throw uringError("io_uring_wait_cqe", -rc, handle) }
            // Completions of linked requests arrive in submission order.
            if i == 0 { results.write = completion.pointee.res } else { results.sync = completion.pointee.res }
            io_uring_cqe_seen(ring, completion)
        }
        guard results.write == Int32(buffer.count) else {
            throw results.write < 0 ? uringError(fsync ? "write" : "write (O_DIRECT|O_DSYNC)", -results.write, handle)
                : AeroError(.ioError, "short write to \(handle.path): \(results.write) of \(buffer.count) bytes")
        }
        guard results.sync >= 0 else { throw uringError("fdatasync", -results.sync, handle) }
    }

    private func uringError(_ operation: String, _ code: Int32, _ handle: any FileHandle) -> AeroError {
        POSIXFileSystem.error("io_uring " + operation, handle.path, code: code)
    }
}

/// The flusher's write buffer: block aligned in memory, as an O_DIRECT write needs (a Swift
/// array's elements are not). Grown to the largest write; given back when a write larger than
/// `retainedBytesMax` (a replica's merged catch-up) is done. Used by one flush at a time, like
/// the engine's ring.
final class AlignedWriteBuffer: @unchecked Sendable {
    /// Capacity kept between writes (docs/LIMITS.md).
    static let retainedBytesMax = 1 << 20
    private var base: UnsafeMutableRawPointer?
    private var capacity = 0

    deinit { free(base) }

    /// Copies `bytes` zero-padded to whole blocks and calls `body` with them.
    func withPadded<T>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        let alignment = directAlignmentBytes
        let padded = (bytes.count + alignment - 1) & ~(alignment - 1)
        if padded > capacity {
            free(base)
            base = nil
            capacity = 0
            var memory: UnsafeMutableRawPointer?
            let size = max(padded, 64 << 10)
            guard posix_memalign(&memory, alignment, size) == 0, let memory else {
                throw AeroError(.ioError, "cannot allocate a \(size)-byte aligned WAL write buffer")
            }
            base = memory
            capacity = size
        }
        defer {
            if capacity > Self.retainedBytesMax {
                free(base)
                base = nil
                capacity = 0
            }
        }
        let target = base!
        bytes.withUnsafeBytes { if let source = $0.baseAddress { target.copyMemory(from: source, byteCount: $0.count) } }
        (target + bytes.count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - bytes.count)
        return try body(UnsafeRawBufferPointer(start: target, count: padded))
    }
}

enum IOEngines {
    static func make(_ choice: IOEngineChoice, fileSystem: any FileSystem) throws -> any WALIOEngine {
        let real = fileSystem is POSIXFileSystem
        switch choice {
        case .pwrite: return PwriteEngine()
        case .uring, .uringBuffered:
            guard real, let engine = UringEngine(direct: choice == .uring) else {
                throw AeroError(.configInvalid, "wal engine \(choice.rawValue) was asked for but io_uring cannot be set up here")
            }
            return engine
        case .automatic:
            if real, let engine = UringEngine() { return engine }
            return PwriteEngine()
        }
    }
}
