// The two WAL I/O engines. Both do exactly one thing: write a block-aligned buffer at an offset
// and make it durable (D1); both pass the same tests (WALTests run every case on each engine).
// - `PwriteEngine`: FileHandle.write + FileHandle.sync (pwrite + fdatasync); portable, and the
//   only engine a simulated disk can use.
// - `UringEngine`: io_uring through liburing, a write linked to an fdatasync, one submission,
//   two completions. Chosen automatically where io_uring can be set up. A flush of a group that
//   holds a single record (one commit: nothing waits beside it) is written with pwrite +
//   fdatasync on the flusher thread instead: io_uring punts the fdatasync to an io-wq worker,
//   a thread hand-off in each direction that a lone commit pays in full (1 writer: 1.0-1.8k/s
//   through io_uring vs 2.6-3.8k/s with pwrite in the same runs on the loaded 2-core machine,
//   issue 19). The same two calls as `PwriteEngine`: durability is the same (D1).
// Any error is returned to the caller, which treats a failed flush as fatal (F1).

import CLiburing
#if canImport(Glibc)
import Glibc
#endif

public enum IOEngineChoice: String, Sendable, CaseIterable {
    case automatic, uring, pwrite
}

protocol WALIOEngine: Sendable {
    var name: String { get }
    /// Writes `bytes` at `offset` and returns once they are durable.
    func writeDurably(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws
    /// The same for a group of a single record (a lone commit); an engine may take a shorter path.
    func writeDurablyAlone(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws
}

extension WALIOEngine {
    func writeDurablyAlone(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws {
        try writeDurably(bytes, at: offset, to: handle)
    }
}

struct PwriteEngine: WALIOEngine {
    var name: String { "pwrite" }

    func writeDurably(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws {
        try handle.write(bytes, at: offset)
        try handle.sync()
    }
}

/// Owns one ring. Used only from the WAL's flusher thread (one caller at a time), which is why
/// the unchecked Sendable conformance is sound: the ring is never touched concurrently.
final class UringEngine: WALIOEngine, @unchecked Sendable {
    /// Two entries are all one flush needs (write + fsync); a few spare.
    static let ringEntries: UInt32 = 8
    private let ring: UnsafeMutablePointer<io_uring>

    var name: String { "io_uring" }

    /// nil when io_uring cannot be set up here (old kernel, seccomp, container policy).
    init?() {
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

    /// A lone commit: pwrite + fdatasync here, without the io-wq hop (see the file header).
    func writeDurablyAlone(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws {
        try handle.write(bytes, at: offset)
        try handle.sync()
    }

    func writeDurably(_ bytes: [UInt8], at offset: Int64, to handle: any FileHandle) throws {
        guard let fd = handle.descriptor else {
            throw AeroError(.ioError, "io_uring needs a real file descriptor for \(handle.path)")
        }
        try bytes.withUnsafeBytes { buffer in
            guard let write = io_uring_get_sqe(ring), let fsync = io_uring_get_sqe(ring) else {
                throw AeroError(.ioError, "io_uring submission queue full")
            }
            io_uring_prep_write(write, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(offset))
            write.pointee.flags |= UInt8(CLIBURING_IOSQE_IO_LINK)
            io_uring_prep_fsync(fsync, fd, CLIBURING_FSYNC_DATASYNC)
            let submitted = io_uring_submit_and_wait(ring, 2)
            guard submitted >= 0 else { throw uringError("io_uring_submit_and_wait", -submitted, handle) }
            var results: [Int32] = []
            for _ in 0..<2 {
                var cqe: UnsafeMutablePointer<io_uring_cqe>?
                let rc = io_uring_wait_cqe(ring, &cqe)
                guard rc == 0, let completion = cqe else { throw uringError("io_uring_wait_cqe", -rc, handle) }
                results.append(completion.pointee.res)
                io_uring_cqe_seen(ring, completion)
            }
            // Completions of linked requests arrive in submission order.
            guard results[0] == Int32(buffer.count) else {
                throw results[0] < 0 ? uringError("write", -results[0], handle)
                    : AeroError(.ioError, "short write to \(handle.path): \(results[0]) of \(buffer.count) bytes")
            }
            guard results[1] >= 0 else { throw uringError("fdatasync", -results[1], handle) }
        }
    }

    private func uringError(_ operation: String, _ code: Int32, _ handle: any FileHandle) -> AeroError {
        POSIXFileSystem.error("io_uring " + operation, handle.path, code: code)
    }
}

enum IOEngines {
    static func make(_ choice: IOEngineChoice, fileSystem: any FileSystem) throws -> any WALIOEngine {
        let real = fileSystem is POSIXFileSystem
        switch choice {
        case .pwrite: return PwriteEngine()
        case .uring:
            guard real, let engine = UringEngine() else {
                throw AeroError(.configInvalid, "wal engine uring was asked for but io_uring cannot be set up here")
            }
            return engine
        case .automatic:
            if real, let engine = UringEngine() { return engine }
            return PwriteEngine()
        }
    }
}
