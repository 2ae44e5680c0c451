import Foundation
import Testing
@testable import Kernel

/// Recovery in three stages (RecoveryPipeline): scan, decoding on other threads, applying in
/// LSN order on the caller's thread. R1: the same records in the same order as the sequential
/// scan. D2: a record that does not decode or apply is named by segment, offset and LSN, after
/// every record before it was applied, and before the end of the log is repaired.
@Suite struct RecoveryPipelineTests {
    /// Segment file name and offset of the record at `lsn`.
    func place(of lsn: UInt64, _ dir: TemporaryDirectory) throws -> (name: String, offset: Int) {
        for file in try segmentFiles(dir) {
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
            var offset = WALFormat.segmentHeaderBytes
            while case .record(let record, let size) = bytes.withUnsafeBytes({ WALFormat.decodeRecord($0, at: offset) }) {
                if record.lsn == lsn { return ((file as NSString).lastPathComponent, offset) }
                offset += size
            }
        }
        throw AeroError(.internalError, "no record \(lsn)")
    }

    @Test func R1_pipelinedRecoveryAppliesTheRecordsOfTheSequentialScanInLSNOrder() async throws {
        let dir = TemporaryDirectory()
        let fs = POSIXFileSystem()
        let wal = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil).0
        try await appendDurably(wal, 0..<400, size: 700)  // 64 KiB segments: several rollovers
        wal.close()
        let (sequential, expected, _) = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil)
        sequential.close()
        #expect(expected.count == 400)
        // More decoding threads than cores and a small window: decodings finish out of order.
        for (workers, window) in [(1, 1), (3, 2), (2, 16)] {
            var applied: [WALRecord] = []
            let scan = try RecoveryPipeline.run(workers: workers, window: window, prepare: { record in
                Array(record.payload.reversed())
            }, scan: { deliver, drain in
                try WALScan.run(fileSystem: fs, directory: walOptions(dir).directory, segmentBytes: walOptions(dir).segmentBytes,
                                after: nil, repair: false, deliver: deliver, drain: drain)
            }, apply: { record, reversed in
                #expect(reversed == Array(record.payload.reversed()), "prepare's result goes with its own record")
                applied.append(record)
            })
            #expect(applied == expected, "workers \(workers), window \(window)")
            #expect(scan.last == expected.last!.position && scan.tornTail == nil)
        }
        // The public entry point, after a position: only the records after it.
        var lsns: [UInt64] = []
        let (reopened, report) = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: expected[99].position,
                                                        prepare: { $0.lsn }) { record, lsn in
            #expect(record.lsn == lsn)
            lsns.append(lsn)
        }
        #expect(lsns == Array(101...400))
        #expect(report.lastPosition == expected.last!.position && reopened.lastPosition == expected.last!.position)
        reopened.close()
    }

    @Test func D2_aRecordThatDoesNotDecodeOrApplyIsNamedAfterEveryEarlierOneAndBeforeTheTailIsRepaired() async throws {
        let dir = TemporaryDirectory()
        let fs = POSIXFileSystem()
        let wal = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil).0
        try await appendDurably(wal, 0..<60, size: 700)
        wal.close()
        // A torn tail: the payload of the last record (LSN 60) damaged.
        let file = try lastWrittenSegment(dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
        let last = try recordOffsets(bytes).last!
        for i in last + 70..<last + 120 { bytes[i] = 0xEE }
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        let bad: UInt64 = 20
        let (name, offset) = try place(of: bad, dir)

        func expectNamed(_ error: AeroError, _ why: String) {
            #expect(error.code == .walCorrupt)
            #expect(error.message.contains("\(name) at offset \(offset), LSN \(bad)") && error.message.contains(why),
                    "\(error.message)")
        }
        // Decoding fails at LSN 20.
        var applied: [UInt64] = []
        do {
            _ = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil, prepare: { record in
                if record.lsn == bad { throw AeroError(.jsonInvalid, "undecodable on purpose") }
                return record.lsn
            }) { _, lsn in applied.append(lsn) }
            Issue.record("recovery went past a record that does not decode")
        } catch let error as AeroError { expectNamed(error, "undecodable on purpose") }
        #expect(applied == Array(1..<bad))
        // Applying fails at LSN 20.
        applied = []
        do {
            _ = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil, prepare: { $0.lsn }) { _, lsn in
                if lsn == bad { throw AeroError(.collectionNotFound, "unappliable on purpose") }
                applied.append(lsn)
            }
            Issue.record("recovery went past a record that does not apply")
        } catch let error as AeroError { expectNamed(error, "unappliable on purpose") }
        #expect(applied == Array(1..<bad))
        // Neither failure repaired anything: the torn bytes are still on disk.
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: file))) == bytes)
        // A recovery that applies everything truncates the torn tail, as the sequential one does.
        var count = 0
        let (reopened, report) = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil,
                                                        prepare: { $0.lsn }) { _, _ in count += 1 }
        #expect(count == 59 && report.tornTail?.lsn == 60 && report.tornTail?.offset == last)
        reopened.close()
    }

    @Test func R1_aDatabaseRecoveredThroughThePipelineEqualsTheOneThatWroteIt() async throws {
        let dir = TemporaryDirectory()
        var options = smallOptions(dir)
        options.walSegmentBytes = KernelLimits.walSegmentBytesMin  // several segments
        let db = try await Database.open(options)
        _ = try await db.createCollection(try JSON.parse(#"{"name":"t","fields":{"id":{"type":"text"},"n":{"type":"int"}},"indexes":[{"name":"by_n","fields":["n"]}]}"#))
        for batch in 0..<30 {
            let ops: [WriteOperation] = (0..<20).map { i in
                .insert(collection: "t", document: ["id": .string("k\(batch * 20 + i)"), "n": .int(Int64((batch * 7 + i) % 50))])
            }
            _ = try await db.commit(ops)
        }
        _ = try await db.commit([.delete(collection: "t", target: .key(.string("k3"))),
                                 .delete(collection: "t", target: .key(.string("k599"))),
                                 .update(collection: "t", target: .key(.string("k10")), set: ["n": .int(99)])])
        let before = db.snapshot().state
        await db.close()
        let reopened = try await Database.open(options)
        let after = reopened.snapshot().state
        #expect(after.position == before.position)
        #expect(try Array(after.collection("t").allDocuments()) == Array(before.collection("t").allDocuments()))
        #expect(try after.collection("t").count == 598)
        #expect(try after.collection("t").document(forKey: .string("k10"))?["n"] == .int(99))
        #expect(try after.collection("t").index(named: "by_n")?.entries.count == 598)
        #expect(reopened.openReport.recordsReplayed > 30)
        await reopened.close()
    }
}
