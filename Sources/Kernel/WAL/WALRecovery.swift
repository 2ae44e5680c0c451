// Reading the WAL back at start (and for `aerodb verify`): the recovery truth table (R2, D2).
//
// Scan segments in index order and records in order. A record is accepted when it is valid on
// its own (magic, bounds, checksum) AND continues the chain (LSN = previous + 1, previous
// checksum = previous record's checksum). The first record that is not accepted, at expected
// LSN L (segment S, offset O), ends the log, unless the next segment's header continues the
// chain exactly (records never span segments, so the rest of S is unused space).
//
// At the end of the log:
// - if any record valid on its own with write start > L (its batch start, or the start of the
//   merged write it was stamped with, WALFormat.swift), or any segment header with first LSN
//   > L, exists after (S, O), a write that began after L's write was flushed survived, so L was
//   durable and is now damaged: CORRUPTION, refuse with segment, offset and LSN (D2);
// - otherwise it is a TORN TAIL: the bytes from O on were never acknowledged; they are zeroed
//   (and later spare segments removed) durably, reported, and the node starts (R2).
//
// Recycled segments (R3, WriteAheadLog.swift) hold stale bytes after their written part:
// records valid on their own whose LSNs are below the segment header's first LSN F. They are
// neither written data nor proof: after O, a stale record (LSN < F <= L, so batch start < L)
// never proves anything, and the torn bytes to zero end at the last byte that is neither zero
// nor inside such a record. A later file whose header names another index is a spare made from
// a recycled segment: its bytes are all stale and are not searched for proof. (A header that
// does not decode at all is searched, as before: it may be a damaged header of a written one.)

#if canImport(Glibc)
import Glibc
#endif
import CLiburing
import Foundation

/// A torn tail found by recovery: never acknowledged, truncated at open (R2).
public struct TornTail: Sendable, CustomStringConvertible {
    public let segment: String
    public let offset: Int
    public let lsn: UInt64
    public let bytesDiscarded: Int

    public var description: String { "torn tail in \(segment) at offset \(offset) (LSN \(lsn)): \(bytesDiscarded) bytes discarded" }
}

struct WALScan: Sendable {
    /// Where the next record goes.
    struct Tail: Sendable {
        var segmentIndex: UInt64
        var offset: Int
        /// True when the segment's header is durable; false for a segment not yet started.
        var headerWritten: Bool
        /// Bytes of the segment from the last block boundary up to `offset`, rewritten with the next write.
        var partialBlock: [UInt8]
    }

    var last: LogPosition
    var tail: Tail
    var tornTail: TornTail?
    var segmentFirstLSNs: [(index: UInt64, firstLSN: UInt64)] = []
    var segmentsScanned = 0
    var recordsRead = 0
    var bytesRead = 0
    var laterSegments: [UInt64] = []

    /// Scans the WAL; with `repair`, truncates a torn tail durably.
    /// Records after `after` (every accepted record with `visitAll`, as `aerodb verify` wants) are
    /// handed to `visit` one at a time, so recovery never holds the whole log in memory; a
    /// segment's bytes are released once the scan moves past it. An error thrown by `visit` (a
    /// payload that does not decode or does not apply) is corruption of an accepted record: it
    /// is rethrown as AERO_WAL_CORRUPT naming the segment, offset and LSN (D2).
    static func run(fileSystem fs: any FileSystem, directory: String, segmentBytes: Int,
                    after: LogPosition?, repair: Bool, visitAll: Bool = false,
                    visit: (WALRecord) throws -> Void) throws -> WALScan {
        try run(fileSystem: fs, directory: directory, segmentBytes: segmentBytes, after: after, repair: repair,
                visitAll: visitAll, deliver: { record, place in
                    do { try visit(record) } catch { throw doesNotReplay(place, record.lsn, error) }
                }, drain: {})
    }

    /// Where an accepted record was read: what an error about it names (D2).
    struct RecordPlace: Sendable {
        let segment: UInt64
        let offset: Int
    }

    /// The scan with the delivery of records split in two: `deliver` takes each record to visit
    /// with its place (and throws errors that already name a place: `doesNotReplay`), `drain` is
    /// called once every record was delivered and before the end of the log is classified or
    /// repaired, so a deliverer that works ahead (recovery decoding payloads on other threads,
    /// RecoveryPipeline) has finished, or failed, before anything on disk changes.
    static func run(fileSystem fs: any FileSystem, directory: String, segmentBytes: Int,
                    after: LogPosition?, repair: Bool, visitAll: Bool = false,
                    deliver: (WALRecord, RecordPlace) throws -> Void, drain: () throws -> Void) throws -> WALScan {
        let indexes = try fs.list(directory).compactMap(WALFormat.segmentIndex(fromName:)).sorted()
        let start = after ?? .origin
        var scan = WALScan(last: start, tail: Tail(segmentIndex: indexes.first ?? 0, offset: WALFormat.segmentHeaderBytes,
                                                   headerWritten: false, partialBlock: []))
        let images = SegmentImages(fileSystem: fs, directory: directory, listed: indexes)
        defer { images.deallocate() }
        func bytes(_ index: UInt64) throws -> UnsafeRawBufferPointer { try images.bytes(index) }
        // The first segment with a valid header starts the retained log.
        var position = 0
        while position < indexes.count {
            let header = WALFormat.decodeSegmentHeader(try bytes(indexes[position]))
            if header?.index == indexes[position] { break }
            images.release(indexes[position])  // (`finish` reads it again if it searches it)
            position += 1
        }
        guard position < indexes.count else {
            // No started segment: a fresh log (or only spares / a torn first header). A checkpoint
            // past LSN 0 with no WAL at all means segments were lost: never start silently.
            guard start.lsn == 0 else {
                throw AeroError(.lsnUnavailable, "a checkpoint at LSN \(start.lsn) exists but the WAL holds no segment after it", invariant: "D2")
            }
            try drain()
            if repair { try removeSegments(indexes, fs: fs, directory: directory) }
            scan.laterSegments = indexes
            scan.tail.segmentIndex = indexes.first ?? 0
            return scan
        }
        var expected = LogPosition.origin
        var first = true
        var index = indexes[position]
        while true {
            let segment = try bytes(index)
            scan.segmentsScanned += 1
            let header = WALFormat.decodeSegmentHeader(segment)!
            if first {
                guard header.firstLSN <= start.lsn + 1 else {
                    throw AeroError(.lsnUnavailable, "the WAL starts at LSN \(header.firstLSN) but recovery needs LSN \(start.lsn + 1) (segments missing)", invariant: "R1")
                }
                expected = LogPosition(lsn: header.firstLSN - 1, checksum: header.previousChecksum)
                first = false
            }
            scan.segmentFirstLSNs.append((index, header.firstLSN))
            let end = try scan.scanRecords(segment, index: index, from: expected, start: start, visitAll: visitAll,
                                           deliver: deliver)
            expected = end.last
            // Continue into the next segment when its header continues the chain exactly.
            if let nextIndex = indexes.first(where: { $0 == index + 1 }),
               let next = WALFormat.decodeSegmentHeader(try bytes(nextIndex)),
               next.index == nextIndex, next.firstLSN == expected.lsn + 1, next.previousChecksum == expected.checksum {
                // The chain continues exactly: whatever follows the last record here is unused space.
                images.release(index)
                index = nextIndex
                continue
            }
            try drain()
            try scan.finish(at: index, offset: end.offset, expected: expected, indexes: indexes, images: images,
                            segmentBytes: segmentBytes, repair: repair, fs: fs, directory: directory)
            return scan
        }
    }

    /// Accepts records of one segment; returns the last accepted position and where the run ended.
    private mutating func scanRecords(_ raw: UnsafeRawBufferPointer, index: UInt64, from: LogPosition, start: LogPosition,
                                      visitAll: Bool,
                                      deliver: (WALRecord, RecordPlace) throws -> Void) throws -> (last: LogPosition, offset: Int) {
        var expected = from
        var offset = WALFormat.segmentHeaderBytes
        while true {
            switch WALFormat.decodeRecord(raw, at: offset) {
            case .empty, .invalid: return (expected, offset)
            case .record(let record, let size):
                guard record.lsn == expected.lsn + 1, record.previousChecksum == expected.checksum else {
                    return (expected, offset)
                }
                let place = RecordPlace(segment: index, offset: offset)
                do {
                    try accept(record, start: start)
                } catch {
                    throw Self.doesNotReplay(place, record.lsn, error)
                }
                if visitAll || record.lsn > start.lsn { try deliver(record, place) }  // its errors name their place
                last = record.position
                expected = record.position
                offset += size
                bytesRead += size
            }
        }
    }

    /// The checks of an accepted record against the checkpoint recovery continues from.
    private mutating func accept(_ record: WALRecord, start: LogPosition) throws {
        recordsRead += 1
        if record.lsn == start.lsn && record.checksum != start.checksum {
            throw AeroError(.walCorrupt, "the record at LSN \(record.lsn) is not the one the checkpoint continues from (checksum \(String(record.checksum, radix: 16)) vs \(String(start.checksum, radix: 16)))", invariant: "D2")
        }
        if record.lsn == start.lsn + 1 && start.lsn > 0 && record.previousChecksum != start.checksum {
            throw AeroError(.walCorrupt, "the record at LSN \(record.lsn) does not continue the checkpoint's history", invariant: "D2")
        }
    }

    /// An accepted record (checksum and chain sound) that does not decode or does not replay:
    /// corruption of an acknowledged record, named by segment, offset and LSN (D2).
    static func doesNotReplay(_ place: RecordPlace, _ lsn: UInt64, _ error: any Error) -> AeroError {
        let reason = (error as? AeroError)?.message ?? "\(error)"
        return AeroError(.walCorrupt, "WAL corrupt in \(WALFormat.segmentName(place.segment)) at offset \(place.offset), LSN \(lsn): the record passed its checksum but does not replay: \(reason)", invariant: "D2")
    }

    /// Classifies the end of the log (torn tail vs corruption) and records the tail.
    private mutating func finish(at index: UInt64, offset: Int, expected: LogPosition, indexes: [UInt64],
                                 images: SegmentImages, segmentBytes: Int, repair: Bool,
                                 fs: any FileSystem, directory: String) throws {
        let name = WALFormat.segmentName(index)
        for later in indexes where later >= index {
            let content = try images.bytes(later)
            defer { if later != index { images.release(later) } }  // the tail's image stays for below
            if later > index, let h = WALFormat.decodeSegmentHeader(content) {
                if h.index != later { continue }  // a spare made from a recycled segment (R3)
                if h.firstLSN > expected.lsn + 1 {
                    throw Self.corruption(name, offset, expected.lsn + 1, "segment \(WALFormat.segmentName(later)) starts at LSN \(h.firstLSN)")
                }
            }
            let from = later == index ? offset + WALFormat.alignmentBytes : WALFormat.segmentHeaderBytes
            if let proof = Self.laterBatch(content, from: from, after: expected.lsn + 1) {
                throw Self.corruption(name, offset, expected.lsn + 1, "a record of a later write (LSN \(proof)) survives after it")
            }
        }
        let segment = try images.bytes(index)
        let garbage = Self.lastTorn(segment, from: offset, firstLSN: WALFormat.decodeSegmentHeader(segment)?.firstLSN ?? 0)
            .map { $0 - offset + 1 } ?? 0
        if garbage > 0 { tornTail = TornTail(segment: name, offset: offset, lsn: expected.lsn + 1, bytesDiscarded: garbage) }
        laterSegments = indexes.filter { $0 > index }
        if repair {
            if garbage > 0 { try Self.zero(Path.join(directory, name), from: offset, count: garbage, fs: fs) }
            try Self.removeSegments(laterSegments, fs: fs, directory: directory)
            laterSegments = []
        }
        let blockStart = offset & ~(WALFormat.blockBytes - 1)
        tail = Tail(segmentIndex: index, offset: offset, headerWritten: true,
                    partialBlock: Array(segment[blockStart..<min(offset, segment.count)]))
        last = expected
    }

    /// The last byte of the torn tail starting at `from`, if any: the last byte that is not zero
    /// after it, or, in a reused segment (R3: a stale record follows), the last such byte of the
    /// tail's own block before the stale bytes. Bytes of a torn write in later blocks of a reused
    /// segment cannot be told from the stale remainder of a record whose start was overwritten;
    /// they stay (never acknowledged; never accepted, as they do not continue the new chain;
    /// never proof, as their batch start is at most the LSN recovery resumes from).
    static func lastTorn(_ raw: UnsafeRawBufferPointer, from: Int, firstLSN: UInt64) -> Int? {
        guard let stale = firstStale(raw, from: from, firstLSN: firstLSN) else { return lastNonZero(raw, from: from) }
        let blockEnd = (from + WALFormat.blockBytes - 1) & ~(WALFormat.blockBytes - 1)
        return lastNonZero(raw, from: from, to: min(stale, blockEnd))
    }

    /// The LSN of a self-valid record with write start (batch start, or a merged write's start) > `lsn`
    /// at or after `from`, if any.
    static func laterBatch(_ segment: [UInt8], from: Int, after lsn: UInt64) -> UInt64? {
        segment.withUnsafeBytes { raw in laterBatch(raw, from: from, after: lsn) }
    }

    static func laterBatch(_ raw: UnsafeRawBufferPointer, from: Int, after lsn: UInt64) -> UInt64? {
        firstRecord(raw, from: from) { record, offset in
            // A merged write's stamp (WALFormat.swift): the write start, not the batch start, is
            // what proves earlier LSNs durable. decodeRecord checked the stamp; nil cannot occur.
            (WALFormat.writeStart(raw, at: offset, lsn: record.lsn, batchStart: record.batchStart,
                                  checksum: record.checksum) ?? record.batchStart) > lsn
        }?.record.lsn
    }

    /// The offset of the first stale record at or after `from` (8-byte aligned): valid on its
    /// own with an LSN below `firstLSN`, left by the segment's life before it was recycled (R3).
    static func firstStale(_ raw: UnsafeRawBufferPointer, from: Int, firstLSN: UInt64) -> Int? {
        firstRecord(raw, from: from) { record, _ in record.lsn < firstLSN }?.offset
    }

    /// The first record valid on its own (magic, header and payload checksums) at or after `from`
    /// (8-byte aligned) for which `wanted` holds. A block of zeros starts no record (the magic is
    /// not zero): it is skipped whole, so a preallocated segment costs a memcmp per block, not a
    /// decode per 8 bytes.
    private static func firstRecord(_ raw: UnsafeRawBufferPointer, from: Int,
                                    where wanted: (WALRecord, Int) -> Bool) -> (offset: Int, record: WALRecord)? {
        var offset = WALFormat.aligned(from)
        while offset + WALFormat.recordHeaderBytes <= raw.count {
            if offset % WALFormat.blockBytes == 0, isZero(raw, offset, min(WALFormat.blockBytes, raw.count - offset)) {
                offset += WALFormat.blockBytes
                continue
            }
            if raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian == WALFormat.recordMagic,
               case .record(let r, _) = WALFormat.decodeRecord(raw, at: offset), wanted(r, offset) {
                return (offset, r)
            }
            offset += WALFormat.alignmentBytes
        }
        return nil
    }

    /// The index of the last byte that is not zero at or after `from`, if any. Whole blocks are
    /// compared with memcmp (unused segment space is zeros): opening a node costs time in
    /// proportion to its records, not to the size of its preallocated segments.
    static func lastNonZero(_ raw: UnsafeRawBufferPointer, from: Int, to limit: Int? = nil) -> Int? {
        var end = min(limit ?? raw.count, raw.count)
        while end > from {
            let start = max(from, (end - 1) / WALFormat.blockBytes * WALFormat.blockBytes)
            if !isZero(raw, start, end - start) {
                for i in stride(from: end - 1, through: start, by: -1) where raw[i] != 0 { return i }
            }
            end = start
        }
        return nil
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: WALFormat.blockBytes)

    /// True when `count` (at most one block) bytes at `offset` are all zero.
    static func isZero(_ raw: UnsafeRawBufferPointer, _ offset: Int, _ count: Int) -> Bool {
        guard count > 0, let base = raw.baseAddress else { return true }
        return zeroBlock.withUnsafeBytes { memcmp(base + offset, $0.baseAddress!, count) == 0 }
    }

    static func corruption(_ segment: String, _ offset: Int, _ lsn: UInt64, _ proof: String) -> AeroError {
        AeroError(.walCorrupt, "WAL corrupt in \(segment) at offset \(offset), LSN \(lsn): the record is damaged but \(proof), so it had been acknowledged; refusing to start (run `aerodb verify`)", invariant: "D2")
    }

    static func zero(_ path: String, from offset: Int, count: Int, fs: any FileSystem) throws {
        let handle = try fs.open(path, create: false)
        defer { handle.close() }
        try handle.write([UInt8](repeating: 0, count: count), at: Int64(offset))
        try handle.sync()
    }

    static func removeSegments(_ indexes: [UInt64], fs: any FileSystem, directory: String) throws {
        guard !indexes.isEmpty else { return }
        for index in indexes { try fs.remove(Path.join(directory, WALFormat.segmentName(index))) }
        try fs.syncDirectory(directory)
    }
}

/// The segment files of one scan, each read whole into a buffer that is reused for the next
/// segment once released: a fresh 64 MiB array per segment cost a zero-fill and a page fault per
/// 4 KiB page on top of the read, as much as checking the records in it. A segment's bytes are
/// valid until it is released (or the scan ends); the scan holds at most the one it reads, the
/// next one (whose header it checks) and, at the end, one later file at a time.
///
/// Real files (a POSIX descriptor) are read with O_DIRECT where the file system allows it, and
/// the next segment of the listing is read ahead on a thread of its own while the scan checks
/// the current one (issue 19, recovery row). The WAL's own writes bypass the page cache
/// (IOEngine: O_DIRECT | O_DSYNC), so a buffered read of a segment fetched it from the device
/// into fresh page-cache pages (a page allocation, on this VM a host fault, per 4 KiB: about as
/// costly as the read itself) and then copied it; a direct read moves the device's bytes into
/// the scan's reused buffer with no page-cache page and no copy. O_DIRECT reads are coherent
/// with the page cache (the kernel writes back dirty pages of the range before it reads), so
/// the bytes are the ones a buffered read returns. Where O_DIRECT is refused (tmpfs) or a read
/// ends off a block boundary, the rest is read buffered. At most one read-ahead is in flight,
/// and only while the scan holds a single segment, so the scan's buffers stay two of a
/// segment's size, as without read-ahead.
final class SegmentImages: @unchecked Sendable {
    // @unchecked: `held`, `free` and `readAheadEnabled` belong to the scan's thread; `ahead` is
    // read and written under `condition` (the read-ahead thread only sets its outcome).
    private struct Buffer {
        var storage: UnsafeMutableRawBufferPointer
        var count: Int
    }

    /// A read-ahead: the segment, its buffer (a released one, or nil until the thread allocated
    /// one), and its outcome once the thread is done (the byte count, or the error the scan gets
    /// if it asks for it). The buffer is the thread's until the outcome is set.
    private struct Ahead {
        let index: UInt64
        var storage: UnsafeMutableRawBufferPointer?
        var outcome: Result<Int, any Error>?
    }

    private let fileSystem: any FileSystem
    private let directory: String
    private let listed: Set<UInt64>
    private var held: [UInt64: Buffer] = [:]
    private var free: [UnsafeMutableRawBufferPointer] = []
    private var readAheadEnabled = false
    private let condition = NSCondition()
    private var ahead: Ahead?

    /// `listed`: the segment indexes of the directory, the only files read ahead.
    init(fileSystem: any FileSystem, directory: String, listed: [UInt64] = []) {
        self.fileSystem = fileSystem
        self.directory = directory
        self.listed = Set(listed)
    }

    /// The bytes of segment `index` (the whole file, like `FileSystem.readFile`).
    func bytes(_ index: UInt64) throws -> UnsafeRawBufferPointer {
        if let b = held[index] { return UnsafeRawBufferPointer(rebasing: b.storage[0..<b.count]) }
        let count: Int
        if let taken = takeAhead(index) {
            held[index] = Buffer(storage: taken.storage, count: 0)  // owned from here on, freed by `deallocate` on a throw
            count = try taken.outcome.get()
        } else {
            let handle = try fileSystem.open(path(index), create: false)
            defer { handle.close() }
            let size = Int(try handle.size())
            var storage = free.popLast() ?? Self.allocate(size)
            if storage.count < Self.capacity(size) {
                storage.deallocate()
                storage = Self.allocate(size)
            }
            held[index] = Buffer(storage: storage, count: 0)
            readAheadEnabled = handle.descriptor != nil  // real files only: a simulated disk is read inline
            count = try Self.read(handle, size: size, into: storage)
        }
        let storage = held[index]!.storage
        held[index] = Buffer(storage: storage, count: count)
        startReadAhead()
        return UnsafeRawBufferPointer(rebasing: storage[0..<count])
    }

    /// The scan is done with segment `index`: its buffer serves the next one read.
    func release(_ index: UInt64) {
        if let b = held.removeValue(forKey: index) {
            free.append(b.storage)
            startReadAhead()
        }
    }

    /// Waits for a read-ahead in flight and frees every buffer; returns how many it freed.
    @discardableResult
    func deallocate() -> Int {
        condition.lock()
        while let a = ahead, a.outcome == nil { condition.wait() }
        let left = ahead?.storage
        ahead = nil
        condition.unlock()
        left?.deallocate()
        for b in held.values { b.storage.deallocate() }
        for s in free { s.deallocate() }
        let freed = (left == nil ? 0 : 1) + held.count + free.count
        held = [:]
        free = []
        return freed
    }

    // MARK: Read-ahead

    /// The read-ahead of `index` with its buffer, once done; nil when none was started for it.
    /// A read-ahead of another segment is waited for and its buffer kept for the next read.
    private func takeAhead(_ index: UInt64) -> (storage: UnsafeMutableRawBufferPointer, outcome: Result<Int, any Error>)? {
        condition.lock()
        defer { condition.unlock() }
        guard ahead != nil else { return nil }
        while ahead!.outcome == nil { condition.wait() }
        let done = ahead!
        ahead = nil
        guard let storage = done.storage else { return nil }  // failed before it had a buffer: read inline
        guard done.index == index else {
            free.append(storage)
            return nil
        }
        return (storage, done.outcome!)
    }

    /// Starts reading the segment after the one the scan holds when the scan holds only that one,
    /// the next is listed, and nothing is in flight: the scan holds its segment and the next one
    /// only while it checks the next one's header, and releases the first right after, which
    /// starts the read-ahead of the one after into its buffer. So a scan uses two buffers, as
    /// without read-ahead.
    private func startReadAhead() {
        guard readAheadEnabled, held.count == 1, let current = held.keys.first else { return }
        let next = current + 1
        guard listed.contains(next) else { return }
        condition.lock()
        guard ahead == nil else {
            condition.unlock()
            return
        }
        ahead = Ahead(index: next, storage: free.popLast(), outcome: nil)  // the thread's until it sets the outcome
        condition.unlock()
        let path = path(next)
        let fs = fileSystem
        NamedThread.start("aero-rec-read") { [self] in
            condition.lock()
            var storage = ahead?.storage
            condition.unlock()
            let outcome = Result { () throws -> Int in
                let handle = try fs.open(path, create: false)
                defer { handle.close() }
                let size = Int(try handle.size())
                if let s = storage, s.count < Self.capacity(size) {
                    s.deallocate()
                    storage = nil
                }
                let target = storage ?? Self.allocate(size)
                storage = target
                return try Self.read(handle, size: size, into: target)
            }
            condition.lock()
            ahead?.storage = storage
            ahead?.outcome = outcome
            condition.broadcast()
            condition.unlock()
        }
    }

    // MARK: Reading

    private func path(_ index: UInt64) -> String { Path.join(directory, WALFormat.segmentName(index)) }

    /// Room for `size` bytes read in whole blocks (an O_DIRECT read's length is a block multiple).
    private static func capacity(_ size: Int) -> Int {
        max(directAlignmentBytes, (size + directAlignmentBytes - 1) / directAlignmentBytes * directAlignmentBytes)
    }

    private static func allocate(_ size: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer.allocate(byteCount: capacity(size), alignment: directAlignmentBytes)
    }

    /// Up to `size` bytes from the start of the file (fewer when it is shorter by then).
    private static func read(_ handle: any FileHandle, size: Int, into storage: UnsafeMutableRawBufferPointer) throws -> Int {
        #if canImport(Glibc)
        if let fd = handle.descriptor {
            // A descriptor of the same file that bypasses the page cache (-1 where refused: tmpfs).
            var direct = POSIXFileSystem.reopen(fd: fd, path: handle.path, flags: O_RDONLY | O_CLOEXEC | CLIBURING_O_DIRECT)
            defer { if direct >= 0 { Glibc.close(direct) } }
            var done = 0
            while done < size {
                let n: Int
                if direct >= 0 && done % directAlignmentBytes == 0 {
                    // Whole blocks into the aligned buffer; a short read is the end of the file.
                    let want = min(capacity(size - done), storage.count - done)
                    n = pread(direct, storage.baseAddress! + done, want, off_t(done))
                    if n < 0 && errno == EINVAL {  // refused after all: the rest buffered
                        Glibc.close(direct)
                        direct = -1
                        continue
                    }
                } else {
                    n = pread(fd, storage.baseAddress! + done, size - done, off_t(done))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw POSIXFileSystem.error("pread", handle.path)
                }
                if n == 0 { break }
                done += n
            }
            return min(done, size)
        }
        #endif
        let bytes = try handle.read(at: 0, count: size)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        return bytes.count
    }
}
