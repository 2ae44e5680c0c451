// WAL on-disk format. Little-endian throughout; checksums are XXH64 (seed 0).
//
// Segment file `wal/segment-<16 hex digits>.wal`, `segmentBytes` long, preallocated and zero-filled:
//
//   block 0 (4096 bytes): segment header
//     0   8  magic "AEROWAL1"
//     8   4  format version (1)
//     12  4  reserved (0)
//     16  8  segment index
//     24  8  LSN of the first record in this segment
//     32  8  epoch of that record
//     40  8  checksum of the record before it (the hash chain crosses segments)
//     48  8  XXH64 of bytes 0..<48
//     56..4095 zero
//   from 4096: records, each starting at an 8-byte aligned offset; records never span segments.
//
// Record (64-byte header + payload):
//     0   4  magic 0x41455243 ("CREA" on disk)      32  8  batch-start LSN (first LSN of the write it was part of)
//     4   1  type (RecordType)                       40  8  commit timestamp, microseconds since the epoch
//     5   1  flags (0)                               48  8  checksum of the previous record (hash chain)
//     6   2  reserved (0)                            56  8  XXH64 of header bytes 0..<56 + payload,
//     8   4  payload length                                 with bytes 12..<16 read as zeros
//     12  2  merged-write distance D (0)             64  …  payload
//     14  2  merged-write check C (0)
//     16  8  LSN
//     24  8  epoch
//
// Invariants:
// - Every integer read from a file goes through a checked range before it is used: LSNs and
//   epochs within 1...KernelLimits.lsnMax (0 for an epoch), segment indexes likewise, lengths
//   within the segment; anything else is a damaged record or header, never an overflow trap.
// - LSNs are consecutive from 1; never reused, never reset (checkpoints do not restart them).
// - Every record's `previous checksum` equals the checksum of the record with LSN - 1, so a
//   (LSN, checksum) pair identifies one history (P1 builds on it).
// - Records of one write share a batch-start LSN. A write begins only after the previous one
//   was flushed, so a valid record whose batch start is greater than LSN L proves L was durable:
//   that is how recovery tells a torn tail from corruption (R2, D2).
// - Merged writes (R2): a replica flushes several primary batches that wait together with one
//   write and one fdatasync. Their records keep the primary's batch starts (the checksum and the
//   chain must stay the primary's, P1), so every record after the first batch of such a write is
//   stamped with D = LSN - (first LSN of the write), 1...65,535, and C = the low 16 bits of
//   XXH64(checksum, D) (seed `stampSeed`). The checksum reads both fields as zeros: a stamp
//   changes no checksum, and an unstamped record (D = 0, C = 0) is byte for byte what format 1
//   always wrote, so older logs read unchanged. A record's *write start* is LSN - D when stamped,
//   else its batch start; it is what proves earlier LSNs durable. D and C are damage-checked like
//   the rest (D = 0 needs C = 0; otherwise C must match and LSN - D must lie in 1...batch start).
//   A later write may rewrite a stamped record's block unstamped (the tail block's copy taken
//   when its records were placed): by then that merged write was flushed, so the unstamped
//   claim is true when it reaches the disk. D and C share one aligned 4-byte field: records
//   start 8-byte aligned and blocks and sectors are multiples of 8, so no block boundary splits
//   it and every copy on disk is one version whole (a split stamp would read as damage).
//   Binaries older than the stamp read a stamped record as damaged: they refuse the log when a
//   later write follows, but would cut the log's last write as a torn tail, so a replica's
//   directory must not be opened by them (docs/OPERATIONS.md, "Upgrades and downgrades").

public enum RecordType: UInt8, Sendable, CaseIterable {
    case transaction = 1
    case schema = 2
    case epoch = 3
    case checkpoint = 4
}

/// A point in a history: the LSN of a record and its checksum.
public struct LogPosition: Sendable, Hashable, CustomStringConvertible {
    public let lsn: UInt64
    public let checksum: UInt64

    public init(lsn: UInt64, checksum: UInt64) {
        self.lsn = lsn
        self.checksum = checksum
    }

    public static let origin = LogPosition(lsn: 0, checksum: 0)

    public var description: String { "\(lsn)/\(String(checksum, radix: 16))" }
}

public struct WALRecord: Sendable, Equatable {
    public let lsn: UInt64
    public let epoch: UInt64
    public let type: RecordType
    public let timestampMicros: Int64
    public let batchStart: UInt64
    public let previousChecksum: UInt64
    public let checksum: UInt64
    public let payload: [UInt8]

    public var position: LogPosition { LogPosition(lsn: lsn, checksum: checksum) }
}

enum WALFormat {
    static let blockBytes = 4096
    static let segmentHeaderBytes = blockBytes
    static let recordHeaderBytes = 64
    static let recordMagic: UInt32 = 0x4145_5243
    static let segmentMagic: [UInt8] = Array("AEROWAL1".utf8)
    static let version: UInt32 = 1
    static let alignmentBytes = 8
    /// Where a record header keeps its merged-write distance and check (UInt16 each, bytes 12..<16).
    static let stampDistanceOffset = 12
    static let stampCheckOffset = 14
    /// Records one merged write may span after its first: the distance is 16 bits.
    static let mergedWriteSpanMax = UInt64(UInt16.max)
    /// Seed of the stamp check ("STAMP"): its own domain, never equal to a record checksum's.
    static let stampSeed: UInt64 = 0x5354_414D_50

    static func aligned(_ n: Int) -> Int { (n + alignmentBytes - 1) & ~(alignmentBytes - 1) }

    static func segmentName(_ index: UInt64) -> String {
        "segment-" + String(index, radix: 16).leftPadded(to: 16) + ".wal"
    }

    static func segmentIndex(fromName name: String) -> UInt64? {
        guard name.hasPrefix("segment-"), name.hasSuffix(".wal"), name.count == 8 + 16 + 4 else { return nil }
        guard let index = UInt64(name.dropFirst(8).dropLast(4), radix: 16), index <= KernelLimits.lsnMax else { return nil }
        return index
    }

    /// A segment kept after recycling, to become a later segment without a zero-fill
    /// (`recycled-<old index, 16 hex digits>.spare`). Its bytes are stale: records whose LSNs are
    /// all below the first LSN of any segment it becomes, and the old header, whose index is not
    /// the new file's. Recovery and readers tell them apart by that (see WALRecovery.swift).
    static func recycledName(_ index: UInt64) -> String {
        "recycled-" + String(index, radix: 16).leftPadded(to: 16) + ".spare"
    }

    static func recycledIndex(fromName name: String) -> UInt64? {
        guard name.hasPrefix("recycled-"), name.hasSuffix(".spare"), name.count == 9 + 16 + 6 else { return nil }
        guard let index = UInt64(name.dropFirst(9).dropLast(6), radix: 16), index <= KernelLimits.lsnMax else { return nil }
        return index
    }

    // MARK: Records

    /// Encodes a record; returns its bytes (padded to the alignment) and checksum.
    static func encodeRecord(type: RecordType, lsn: UInt64, epoch: UInt64, batchStart: UInt64,
                             timestampMicros: Int64, previousChecksum: UInt64, payload: [UInt8]) -> ([UInt8], UInt64) {
        precondition(batchStart <= lsn && lsn > 0, "batch start precedes the record; LSNs start at 1")
        var w = ByteWriter()
        w.bytes.reserveCapacity(aligned(recordHeaderBytes + payload.count))
        w.append(recordMagic)
        w.append(type.rawValue)
        w.append(UInt8(0))
        w.append(UInt16(0))
        w.append(UInt32(payload.count))
        w.append(UInt32(0))
        w.append(lsn)
        w.append(epoch)
        w.append(batchStart)
        w.append(timestampMicros)
        w.append(previousChecksum)
        var hasher = XXH64.Streaming()
        w.bytes.withUnsafeBytes { hasher.update($0) }
        payload.withUnsafeBytes { hasher.update($0) }
        let checksum = hasher.finish()
        w.append(checksum)
        w.append(payload)
        let padding = aligned(w.bytes.count) - w.bytes.count
        if padding > 0 { w.append([UInt8](repeating: 0, count: padding)) }
        return (w.bytes, checksum)
    }

    enum Decoded {
        case record(WALRecord, size: Int)
        /// Zero bytes where a header would start: nothing was ever written here.
        case empty
        case invalid(String)
    }

    /// Decodes the record at `offset` on its own (magic, bounds, checksum); chain checks are the caller's.
    static func decodeRecord(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Decoded {
        guard offset + recordHeaderBytes <= bytes.count else { return .invalid("header past the end of the segment") }
        let magic = bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian
        guard magic == recordMagic else {
            let header = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + recordHeaderBytes])
            return header.allSatisfy { $0 == 0 } ? .empty : .invalid("bad record magic")
        }
        func u64(_ at: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: offset + at, as: UInt64.self).littleEndian }
        let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self).littleEndian)
        guard offset + recordHeaderBytes + length <= bytes.count else { return .invalid("length past the end of the segment") }
        guard let type = RecordType(rawValue: bytes[offset + 4]) else { return .invalid("unknown record type") }
        let checksum = u64(56)
        guard recordChecksum(header: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + 56]),
                             payload: UnsafeRawBufferPointer(rebasing: bytes[offset + 64..<offset + 64 + length])) == checksum
        else { return .invalid("checksum mismatch") }
        let record = WALRecord(lsn: u64(16), epoch: u64(24), type: type, timestampMicros: Int64(bitPattern: u64(40)),
                               batchStart: u64(32), previousChecksum: u64(48), checksum: checksum,
                               payload: Array(UnsafeRawBufferPointer(rebasing: bytes[offset + 64..<offset + 64 + length])))
        guard record.lsn > 0, record.lsn <= KernelLimits.lsnMax, record.batchStart <= record.lsn,
              record.epoch <= KernelLimits.lsnMax else { return .invalid("impossible LSN or epoch fields") }
        guard writeStart(bytes, at: offset, lsn: record.lsn, batchStart: record.batchStart, checksum: checksum) != nil else {
            return .invalid("damaged merged-write stamp")
        }
        return .record(record, size: aligned(recordHeaderBytes + length))
    }

    /// XXH64 of a record's 56 header bytes, with the stamp fields read as zeros, and its payload.
    static func recordChecksum(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt64 {
        withUnsafeTemporaryAllocation(byteCount: 56, alignment: 8) { copy in
            copy.copyMemory(from: header)
            copy.storeBytes(of: 0, toByteOffset: stampDistanceOffset, as: UInt32.self)  // D and C
            var hasher = XXH64.Streaming()
            hasher.update(UnsafeRawBufferPointer(copy))
            hasher.update(payload)
            return hasher.finish()
        }
    }

    static func stampCheck(checksum: UInt64, distance: UInt16) -> UInt16 {
        withUnsafeTemporaryAllocation(byteCount: 10, alignment: 8) { input in
            input.storeBytes(of: checksum.littleEndian, toByteOffset: 0, as: UInt64.self)
            input.storeBytes(of: distance.littleEndian, toByteOffset: 8, as: UInt16.self)
            return UInt16(truncatingIfNeeded: XXH64.hash(UnsafeRawBufferPointer(input), seed: stampSeed))
        }
    }

    /// The write start of the record at `offset` (its batch start, or LSN - D when stamped);
    /// nil when the stamp is damaged. The rest of the record must already be checked.
    static func writeStart(_ bytes: UnsafeRawBufferPointer, at offset: Int, lsn: UInt64, batchStart: UInt64,
                           checksum: UInt64) -> UInt64? {
        let distance = bytes.loadUnaligned(fromByteOffset: offset + stampDistanceOffset, as: UInt16.self).littleEndian
        let check = bytes.loadUnaligned(fromByteOffset: offset + stampCheckOffset, as: UInt16.self).littleEndian
        if distance == 0 { return check == 0 ? batchStart : nil }
        guard check == stampCheck(checksum: checksum, distance: distance), UInt64(distance) < lsn,
              lsn - UInt64(distance) <= batchStart else { return nil }
        return lsn - UInt64(distance)
    }

    /// Stamps the encoded record at `offset` of `bytes` as part of a merged write that began at
    /// LSN `writeStart` (before the record's own batch). Returns the record's size on disk.
    static func stamp(_ bytes: inout [UInt8], at offset: Int, writeStart: UInt64) -> Int {
        bytes.withUnsafeMutableBytes { raw in
            func u64(_ at: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: offset + at, as: UInt64.self).littleEndian }
            let lsn = u64(16)
            precondition(writeStart < lsn && lsn - writeStart <= mergedWriteSpanMax && writeStart <= u64(32),
                         "a stamp names an earlier start within the span")
            let distance = UInt16(lsn - writeStart)
            raw.storeBytes(of: distance.littleEndian, toByteOffset: offset + stampDistanceOffset, as: UInt16.self)
            raw.storeBytes(of: stampCheck(checksum: u64(56), distance: distance).littleEndian,
                           toByteOffset: offset + stampCheckOffset, as: UInt16.self)
            let length = Int(raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self).littleEndian)
            return aligned(recordHeaderBytes + length)
        }
    }

    // MARK: Segment headers

    struct SegmentHeader: Equatable {
        let index: UInt64
        let firstLSN: UInt64
        let epoch: UInt64
        let previousChecksum: UInt64
    }

    static func encodeSegmentHeader(_ h: SegmentHeader) -> [UInt8] {
        var w = ByteWriter()
        w.append(segmentMagic)
        w.append(version)
        w.append(UInt32(0))
        w.append(h.index)
        w.append(h.firstLSN)
        w.append(h.epoch)
        w.append(h.previousChecksum)
        w.append(XXH64.hash(w.bytes))
        w.append([UInt8](repeating: 0, count: segmentHeaderBytes - w.bytes.count))
        return w.bytes
    }

    static func decodeSegmentHeader(_ bytes: UnsafeRawBufferPointer) -> SegmentHeader? {
        guard bytes.count >= 56, Array(bytes[0..<8]) == segmentMagic else { return nil }
        func u64(_ at: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }
        guard XXH64.hash(UnsafeRawBufferPointer(rebasing: bytes[0..<48])) == u64(48),
              bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian == version else { return nil }
        let header = SegmentHeader(index: u64(16), firstLSN: u64(24), epoch: u64(32), previousChecksum: u64(40))
        guard header.index <= KernelLimits.lsnMax, (1...KernelLimits.lsnMax).contains(header.firstLSN),
              header.epoch <= KernelLimits.lsnMax else { return nil }
        return header
    }
}

extension WALRecord {
    /// The record's bytes exactly as the WAL stores them (header, payload, padding): what a
    /// primary ships to its replicas.
    public var encoded: [UInt8] {
        let (bytes, checksum) = WALFormat.encodeRecord(type: type, lsn: lsn, epoch: epoch, batchStart: batchStart,
                                                       timestampMicros: timestampMicros,
                                                       previousChecksum: previousChecksum, payload: payload)
        precondition(checksum == self.checksum, "a record re-encodes to its own checksum")
        return bytes
    }

    /// Decodes one record shipped by a primary, checking its magic, bounds and checksum (D2).
    public static func decode(_ bytes: [UInt8]) throws -> WALRecord {
        let decoded = bytes.withUnsafeBytes { WALFormat.decodeRecord($0, at: 0) }
        switch decoded {
        case .record(let record, let size) where size == bytes.count:
            guard bytes[(WALFormat.recordHeaderBytes + record.payload.count)...].allSatisfy({ $0 == 0 }) else {
                throw AeroError(.replicationRefused, "a shipped record has non-zero padding", invariant: "D2")
            }
            return record
        case .record:
            throw AeroError(.replicationRefused, "a shipped record has trailing bytes", invariant: "P1")
        case .empty:
            throw AeroError(.replicationRefused, "a shipped record is empty", invariant: "P1")
        case .invalid(let why):
            throw AeroError(.replicationRefused, "a shipped record is damaged: \(why)", invariant: "D2")
        }
    }
}
