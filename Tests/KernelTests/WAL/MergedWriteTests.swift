// Merged writes (R2, WALFormat.swift "merged writes"): a replica flushes every primary batch
// that waits together with one write and one fdatasync. The records after the first batch are
// stamped with the write's start, so recovery still tells a torn tail (nothing of the merged
// write was acknowledged) from corruption (a later write survived), and the stamps change no
// checksum: the replica's log stays the primary's, record for record (P1).

import Foundation
import Testing
@testable import Kernel

@Suite struct MergedWriteTests {
    static let batches = 3, perBatch = 8, size = 900

    /// The primary's records: `batches` batches of `perBatch` records, each batch one write.
    func primaryRecords(_ dir: TemporaryDirectory, batches: Int = batches) async throws -> [WALRecord] {
        let (primary, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        for batch in 0..<batches {
            let last = try primary.holdingFlushes {
                try (0..<Self.perBatch).map { i in
                    try primary.append(type: .transaction, epoch: 1, timestampMicros: 0,
                                       payload: payload(batch * Self.perBatch + i, size: Self.size))
                }.last!
            }
            try await primary.waitDurable(last.lsn)
        }
        let records = try primary.read(from: 1, maxBytes: 1 << 20)
        primary.close()
        #expect(Set(records.map(\.batchStart)) == Set((0..<batches).map { UInt64($0 * Self.perBatch + 1) }))
        return records
    }

    /// Places `frames` on a replica's log, each frame whole before the flusher takes any of it.
    func replicate(_ frames: [ArraySlice<WALRecord>], into dir: TemporaryDirectory) async throws {
        let (replica, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        for frame in frames {
            try replica.holdingFlushes { for record in frame { _ = try replica.appendReplicated(record) } }
            try await replica.waitDurable(frame.last!.lsn)
        }
        replica.close()
    }

    /// LSN -> (offset, write start) of every record in the replica's first segment.
    func onDisk(_ dir: TemporaryDirectory) throws -> (bytes: [UInt8], records: [UInt64: (offset: Int, writeStart: UInt64)]) {
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: try segmentFiles(dir).first!)))
        var found: [UInt64: (Int, UInt64)] = [:]
        bytes.withUnsafeBytes { raw in
            var offset = WALFormat.segmentHeaderBytes
            while case .record(let r, let size) = WALFormat.decodeRecord(raw, at: offset) {
                found[r.lsn] = (offset, WALFormat.writeStart(raw, at: offset, lsn: r.lsn, batchStart: r.batchStart,
                                                            checksum: r.checksum)!)
                offset += size
            }
        }
        return (bytes, found)
    }

    @Test func batchesWaitingTogetherAreOneStampedWriteAndRecoverByteIdentical() async throws {
        let pdir = TemporaryDirectory(), rdir = TemporaryDirectory()
        let records = try await primaryRecords(pdir)
        try await replicate([records[...]], into: rdir)
        let (_, disk) = try onDisk(rdir)
        #expect(disk.count == records.count)
        // Every record of the one frame names LSN 1 as its write's start: batches 2 and 3 by a stamp.
        #expect(records.allSatisfy { disk[$0.lsn]?.writeStart == 1 })
        let (reopened, recovered, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(rdir), after: nil)
        #expect(report.tornTail == nil)
        #expect(recovered == records)
        #expect(recovered.map(\.encoded) == records.map(\.encoded))
        reopened.close()
    }

    /// A block in the first batch of a merged write never reached the disk, the later batches'
    /// blocks did: nothing of that write was acknowledged, so it is a torn tail, not corruption.
    /// (Before merged writes carried their start, batch 2's batch start "proved" batch 1 durable.)
    @Test func aMergedWriteTornInItsFirstBatchIsATornTail() async throws {
        let pdir = TemporaryDirectory(), rdir = TemporaryDirectory()
        let records = try await primaryRecords(pdir)
        try await replicate([records[...]], into: rdir)
        var (bytes, disk) = try onDisk(rdir)
        let lost = disk[6]!.offset & ~(WALFormat.blockBytes - 1)  // the block holding LSN 6's header
        bytes.replaceSubrange(lost..<lost + WALFormat.blockBytes, with: [UInt8](repeating: 0, count: WALFormat.blockBytes))
        try Data(bytes).write(to: URL(fileURLWithPath: try segmentFiles(rdir).first!))
        let firstLost = records.first { disk[$0.lsn]!.offset + WALFormat.aligned(64 + $0.payload.count) > lost }!.lsn
        #expect(firstLost > 1 && firstLost <= 6)  // inside the first batch
        #expect(disk[records.last!.lsn]!.offset > lost + WALFormat.blockBytes)  // later batches survive whole
        let (wal, recovered, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(rdir), after: nil)
        #expect(report.tornTail?.lsn == firstLost)
        #expect(recovered == Array(records.prefix(Int(firstLost) - 1)))
        wal.close()
    }

    /// The same damage once a later write (the next frame) survived: the merged write had been
    /// flushed, so the damaged record was acknowledged: corruption, refused (D2).
    @Test func aDamagedMergedWriteFollowedByALaterWriteIsCorruption() async throws {
        let pdir = TemporaryDirectory(), rdir = TemporaryDirectory()
        let records = try await primaryRecords(pdir, batches: 4)
        let split = 3 * Self.perBatch
        try await replicate([records[..<split], records[split...]], into: rdir)
        var (bytes, disk) = try onDisk(rdir)
        #expect(disk[UInt64(split + 1)]?.writeStart == UInt64(split + 1))  // the second frame is its own write
        bytes[disk[3]!.offset + 100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: try segmentFiles(rdir).first!))
        do {
            _ = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(rdir), after: nil)
            Issue.record("a damaged acknowledged record was not refused")
        } catch let error as AeroError {
            #expect(error.code == .walCorrupt)
            #expect(error.message.contains("LSN 3"))
        }
    }

    /// The next write rewrites the tail block from the copy taken when its records were placed,
    /// unstamped. A stamped record whose header crosses into that block (at byte 8: records are
    /// 8-byte aligned) keeps one whole version of its stamp on each side, so it still decodes.
    /// (With the distance and the check in different words the rewrite left half a stamp.)
    @Test func aStampIsNeverSplitByTheBlockALaterWriteRewrites() async throws {
        let pdir = TemporaryDirectory(), rdir = TemporaryDirectory()
        let (primary, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(pdir), after: nil)
        // Record 1 fills the first block but 8 bytes, so record 2's header starts 8 bytes before block 2.
        let firstSize = WALFormat.blockBytes - 8 - WALFormat.recordHeaderBytes - payload(1, size: 0).count
        for (i, size) in [(1, firstSize), (2, 300), (3, 300)] {
            let position = try primary.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: payload(i, size: size))
            try await primary.waitDurable(position.lsn)  // three batches
        }
        let records = try primary.read(from: 1, maxBytes: 1 << 20)
        primary.close()
        try await replicate([records[0..<2], records[2...]], into: rdir)  // batches 1+2 merged, then 3
        let (_, disk) = try onDisk(rdir)
        #expect(disk[2]!.offset == 2 * WALFormat.blockBytes - 8)
        #expect(disk[3]!.writeStart == 3)
        let (wal, recovered, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(rdir), after: nil)
        #expect(report.tornTail == nil)
        #expect(recovered == records)
        wal.close()
    }

    /// A stamp changes neither the checksum nor the record; every damaged byte, stamp included,
    /// is still detected.
    @Test func aStampKeepsTheChecksumAndItsDamageIsDetected() {
        let (plain, checksum) = WALFormat.encodeRecord(type: .transaction, lsn: 20, epoch: 1, batchStart: 17, timestampMicros: 5,
                                                       previousChecksum: 42, payload: Array("hello".utf8))
        var stamped = plain
        #expect(WALFormat.stamp(&stamped, at: 0, writeStart: 9) == plain.count)
        #expect(stamped != plain)
        let decode = { (bytes: [UInt8]) in bytes.withUnsafeBytes { WALFormat.decodeRecord($0, at: 0) } }
        guard case .record(let a, _) = decode(plain), case .record(let b, _) = decode(stamped) else {
            Issue.record("a stamped record does not decode")
            return
        }
        #expect(a == b && b.checksum == checksum)
        #expect(stamped.withUnsafeBytes { WALFormat.writeStart($0, at: 0, lsn: 20, batchStart: 17, checksum: checksum) } == 9)
        for i in 0..<(64 + 5) {
            var damaged = stamped
            damaged[i] ^= 0x10
            if case .record = decode(damaged) { Issue.record("flip at byte \(i) of a stamped record not detected") }
        }
        // A stamp copied onto another record does not check.
        let (other, _) = WALFormat.encodeRecord(type: .transaction, lsn: 20, epoch: 1, batchStart: 17, timestampMicros: 6,
                                                previousChecksum: 42, payload: Array("hello".utf8))
        var forged = other
        forged.replaceSubrange(12..<16, with: stamped[12..<16])
        if case .record = decode(forged) { Issue.record("a stamp moved to another record was accepted") }
    }

    /// A merged write spans at most `mergedWriteSpanMax` records after its start (the stamp's
    /// distance is 16 bits); the group that would pass it starts a new write.
    @Test func aMergedWriteStopsAtItsSpan() {
        func group(_ first: UInt64, _ count: UInt64, at offset: Int, bytes: Int) -> WriteAheadLog.PendingGroup {
            WriteAheadLog.PendingGroup(segment: 1, startOffset: offset, bytes: [UInt8](repeating: 0, count: bytes),
                                       recordsStart: 0, firstLSN: first,
                                       last: LogPosition(lsn: first + count - 1, checksum: 0), batchStart: first, replicated: true)
        }
        let span = WALFormat.mergedWriteSpanMax
        // Zero-length groups: nothing to stamp, only the decision is under test.
        let writes = WriteAheadLog.merged([group(1, span, at: 4096, bytes: 0), group(span + 1, 1, at: 4096, bytes: 0),
                                           group(span + 2, 1, at: 4096, bytes: 0)])
        #expect(writes.map(\.firstLSN) == [1, span + 2])
        #expect(writes.map(\.last.lsn) == [span + 1, span + 2])
    }
}
