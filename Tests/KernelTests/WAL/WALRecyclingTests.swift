import Foundation
import Testing
@testable import Kernel

/// R3: segments freed by a checkpoint are renamed and reused as spares without a zero-fill; their
/// stale bytes are never read as records, never proof of corruption and never a torn tail.
@Suite struct WALRecyclingTests {
    static let segmentBytes = 64 << 10

    func options(_ dir: TemporaryDirectory, background: Bool = false) -> WALOptions {
        WALOptions(directory: dir.path + "/wal", segmentBytes: Self.segmentBytes, engine: .pwrite, preallocateInBackground: background)
    }

    func recycledFiles(_ dir: TemporaryDirectory) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path + "/wal").filter { $0.hasPrefix("recycled-") }.sorted()
    }

    /// The newest segment whose header names its own index (a spare made from a recycled segment
    /// still carries its old header).
    func newestStartedSegment(_ dir: TemporaryDirectory) throws -> String {
        try segmentFiles(dir).last { file in
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
            guard let header = bytes.withUnsafeBytes({ WALFormat.decodeSegmentHeader($0) }) else { return false }
            return WALFormat.segmentIndex(fromName: (file as NSString).lastPathComponent) == header.index
        }!
    }

    /// Offsets of the segment's records up to the first that does not continue the one before.
    func chainOffsets(_ segment: [UInt8]) -> [Int] {
        var offsets: [Int] = []
        var offset = WALFormat.segmentHeaderBytes
        var last: UInt64?
        segment.withUnsafeBytes { raw in
            while case .record(let r, let size) = WALFormat.decodeRecord(raw, at: offset), last.map({ r.lsn == $0 + 1 }) ?? true {
                offsets.append(offset)
                last = r.lsn
                offset += size
            }
        }
        return offsets
    }

    /// The position the retained log continues (what a checkpoint would hold).
    func base(_ wal: WriteAheadLog) throws -> LogPosition {
        let first = try #require(try wal.read(from: wal.oldestLSN, maxBytes: 1).first)
        return LogPosition(lsn: first.lsn - 1, checksum: first.previousChecksum)
    }

    /// Writes `count` records of 900 bytes after what the log holds; returns the last position.
    func fill(_ wal: WriteAheadLog, _ range: Range<Int>) async throws -> LogPosition {
        var last = LogPosition.origin
        for k in range {
            last = try wal.append(type: .transaction, epoch: 1, timestampMicros: Int64(k), payload: payload(k, size: 900))
        }
        try await wal.waitDurable(last.lsn)
        return last
    }

    @Test func R3_recycledSegmentsBecomeSparesAndTheirStaleRecordsAreNeverRead() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: nil)
        _ = try await fill(wal, 0..<400)  // ~6 segments of 64 KiB
        try wal.recycle(through: 300)
        let recycled = try recycledFiles(dir)
        #expect(!recycled.isEmpty && recycled.count <= KernelLimits.walRecycledSegmentsMax)
        // Enough records for more rollovers than recycled files: those come first, then zero-fill.
        let last = try await fill(wal, 400..<800)
        #expect(wal.spareCounts.reused == recycled.count)
        #expect(try recycledFiles(dir).isEmpty)
        let after = try base(wal)
        // Reads from disk stop at the end of the written part of a reused segment.
        #expect(try wal.read(from: 450, maxBytes: 1 << 30).map(\.lsn) == Array(450...last.lsn))
        wal.close()

        // Reopen: every record after 300 replayed in order, no torn tail (stale bytes are not one).
        var replayed: [UInt64] = []
        let (again, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir),
                                                     after: after) { replayed.append($0.lsn) }
        #expect(report.tornTail == nil)
        #expect(report.lastPosition == last)
        #expect(replayed.filter { $0 > 300 } == Array(301...last.lsn))
        let verified = try WriteAheadLog.verify(fileSystem: POSIXFileSystem(), options: options(dir), after: after)
        #expect(verified.tornTail == nil)
        // The log goes on after the reopen, and again after a second one.
        let more = try await fill(again, 800..<820)
        again.close()
        let (third, report3) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in }
        #expect(report3.tornTail == nil && report3.lastPosition == more)
        third.close()
    }

    @Test func R3_aTornTailInAReusedSegmentIsTruncatedOnlyOverItsWrittenBytes() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: nil)
        _ = try await fill(wal, 0..<400)
        try wal.recycle(through: 300)
        let last = try await fill(wal, 400..<520)
        #expect(wal.spareCounts.reused >= 1)
        let after = try base(wal)
        wal.close()
        // Damage the last record of the newest segment (a torn write): it had been written into a
        // reused segment whose stale records follow it.
        let path = try newestStartedSegment(dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        let firstLSN = bytes.withUnsafeBytes { WALFormat.decodeSegmentHeader($0) }!.firstLSN
        let offsets = chainOffsets(bytes)
        let stale = bytes.withUnsafeBytes { raw -> Bool in
            guard case .record(let r, _) = WALFormat.decodeRecord(raw, at: offsets.last! + 1024) else { return false }
            return r.lsn < firstLSN
        }
        let lastOffset = offsets.last!
        bytes[lastOffset + 100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (reopened, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in }
        #expect(report.lastPosition.lsn == last.lsn - 1)
        let torn = try #require(report.tornTail)
        #expect(torn.lsn == last.lsn)
        // Only the damaged record's bytes are discarded, not the stale rest of the segment.
        #expect(torn.bytesDiscarded <= 1024)
        if stale {
            let after = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(after.withUnsafeBytes { raw in
                if case .record(let r, _) = WALFormat.decodeRecord(raw, at: lastOffset + 1024) { return r.lsn < firstLSN }
                return false
            })
        }
        // The next record takes the torn one's LSN and survives a reopen.
        let next = try await fill(reopened, 900..<901)
        #expect(next.lsn == last.lsn)
        reopened.close()
        let (final, report2) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in }
        #expect(report2.tornTail == nil && report2.lastPosition == next)
        final.close()
    }

    @Test func R3_aDamagedRecordBeforeALaterBatchInAReusedSegmentIsStillCorruption() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: nil)
        _ = try await fill(wal, 0..<400)
        try wal.recycle(through: 300)
        _ = try await fill(wal, 400..<480)
        #expect(wal.spareCounts.reused >= 1)
        _ = try await fill(wal, 480..<481)  // a later write (batch) in the same segment
        let after = try base(wal)
        wal.close()
        let path = try newestStartedSegment(dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        let offsets = chainOffsets(bytes)
        #expect(offsets.count >= 2)
        bytes[offsets[offsets.count - 2] + 100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect { _ = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in } } throws: {
            ($0 as? AeroError)?.code == .walCorrupt
        }
    }

    @Test func R3_truncatingTheHistoryRemovesTheRecycledSegments() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: nil)
        _ = try await fill(wal, 0..<400)
        try wal.recycle(through: 300)
        #expect(try !recycledFiles(dir).isEmpty)
        let after = try base(wal)
        wal.close()
        try WriteAheadLog.truncate(fileSystem: POSIXFileSystem(), options: options(dir), after: 350)
        #expect(try recycledFiles(dir).isEmpty)
        let (reopened, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in }
        #expect(report.lastPosition.lsn == 350)
        reopened.close()
    }

    @Test func R3_recycledFilesAreBoundedAndAdoptedAgainAtOpen() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: nil)
        _ = try await fill(wal, 0..<1200)  // ~17 segments
        try wal.recycle(through: 1100)
        #expect(try recycledFiles(dir).count == KernelLimits.walRecycledSegmentsMax)
        let after = try base(wal)
        wal.close()
        let (reopened, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options(dir), after: after) { _ in }
        _ = try await fill(reopened, 1200..<1300)
        #expect(reopened.spareCounts.reused >= 1)
        #expect(try recycledFiles(dir).count < KernelLimits.walRecycledSegmentsMax)
        reopened.close()
    }
}
