import Foundation
import Testing
import Synchronization
@testable import Kernel
import CLiburing

/// Every engine must pass the same tests: pwrite, io_uring writing O_DIRECT | O_DSYNC and io_uring
/// with a linked fdatasync. io_uring is skipped only where it cannot be set up.
let walEngines: [IOEngineChoice] = UringEngine() == nil ? [.pwrite] : [.pwrite, .uring, .uringBuffered]

/// Whether the file system holding `directory` opens files with O_DIRECT (tmpfs before Linux 6.6 does not).
func fileSystemAllowsDirectIO(_ directory: String) -> Bool {
    let probe = directory + "/.direct-probe"
    let fd = open(probe, O_CREAT | O_WRONLY | O_CLOEXEC | CLIBURING_O_DIRECT, 0o644)
    defer { unlink(probe) }
    guard fd >= 0 else { return false }
    close(fd)
    return true
}

func walOptions(_ dir: TemporaryDirectory, _ engine: IOEngineChoice = .pwrite, segmentBytes: Int = 64 << 10) -> WALOptions {
    WALOptions(directory: dir.path + "/wal", segmentBytes: segmentBytes, engine: engine)
}

func payload(_ i: Int, size: Int = 100) -> [UInt8] {
    Array("record \(i) ".utf8) + [UInt8](repeating: UInt8(i % 251), count: size)
}

@discardableResult
func appendDurably(_ wal: WriteAheadLog, _ range: Range<Int>, size: Int = 100) async throws -> [LogPosition] {
    var positions: [LogPosition] = []
    for i in range {
        // Waited for right below (the last one; the others share its flush), as Database does.
        positions.append(try wal.append(type: .transaction, epoch: 1, timestampMicros: Int64(i), payload: payload(i, size: size),
                                        callerWaits: true))
    }
    if let last = positions.last { try await wal.waitDurable(last.lsn) }
    return positions
}

@Suite struct WALFormatTests {
    @Test func xxh64MatchesTheReferenceVectors() {
        #expect(XXH64.hash([]) == 0xEF46_DB37_51D8_E999)
        #expect(XXH64.hash(Array("a".utf8)) == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXH64.hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
        let long = Array("Nobody inspects the spammish repetition".utf8)
        #expect(XXH64.hash(long) == 0xFBCE_A83C_8A37_8BF1)
    }

    @Test func recordsRoundTripAndEveryDamageIsDetected() {
        let (bytes, checksum) = WALFormat.encodeRecord(type: .schema, lsn: 7, epoch: 2, batchStart: 5, timestampMicros: -3,
                                                       previousChecksum: 99, payload: Array("hello".utf8))
        #expect(bytes.count % 8 == 0)
        let decoded = bytes.withUnsafeBytes { WALFormat.decodeRecord($0, at: 0) }
        guard case .record(let r, let size) = decoded else {
            Issue.record("valid record not decoded")
            return
        }
        #expect(size == bytes.count)
        #expect(r == WALRecord(lsn: 7, epoch: 2, type: .schema, timestampMicros: -3, batchStart: 5,
                               previousChecksum: 99, checksum: checksum, payload: Array("hello".utf8)))
        for i in 0..<(64 + 5) {
            var damaged = bytes
            damaged[i] ^= 0x10
            if case .record = damaged.withUnsafeBytes({ WALFormat.decodeRecord($0, at: 0) }) {
                Issue.record("flip at byte \(i) not detected")
            }
        }
        let zeros = [UInt8](repeating: 0, count: 128)
        guard case .empty = zeros.withUnsafeBytes({ WALFormat.decodeRecord($0, at: 0) }) else {
            Issue.record("zeros are empty space")
            return
        }
    }
}

/// A failure message written by a plain thread, read by the test.
final class LockedText: @unchecked Sendable {
    private let lock = NSLock()
    private var text: String?
    func set(_ value: String) { lock.withLock { text = value } }
    func get() -> String? { lock.withLock { text } }
}

@Suite struct WALTests {
    @Test(arguments: walEngines)
    func appendsSurviveReopenAcrossSegmentRollovers(engine: IOEngineChoice) async throws {
        let dir = TemporaryDirectory()
        var (wal, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine), after: nil)
        #expect(records.isEmpty)
        #expect(wal.engineName == ["pwrite": "pwrite", "uring": "io_uring", "uring-buffered": "io_uring-buffered"][engine.rawValue])
        let positions = try await appendDurably(wal, 0..<600, size: 700)
        wal.close()
        let segments = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/wal").count
        #expect(segments > 5)
        (wal, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine), after: nil)
        #expect(records.map(\.position) == positions)
        #expect(records.enumerated().allSatisfy { $1.payload == payload($0, size: 700) })
        let next = try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: [1])
        #expect(next.lsn == 601)
        try await wal.waitDurable(next.lsn)
        wal.close()
    }

    @Test(arguments: walEngines)
    func concurrentCommitsShareFlushes(engine: IOEngineChoice) async throws {
        try await concurrentCommitsShareFlushes(engine: engine, busyPoolThread: false)
    }

    /// The same with one thread of the cooperative pool kept busy by other work (a node's HTTP
    /// tasks, other suites): the committers share the remaining thread, and a lone commit flushed
    /// by its caller must not keep them from placing theirs (each would then be alone in turn:
    /// one flush per commit: the reverted attempt of 2026-12-04 in BENCHMARKS).
    /// One engine: each case would keep a pool thread busy, and cases run in parallel.
    @Test func concurrentCommitsShareFlushesWithAPoolThreadBusy() async throws {
        try await concurrentCommitsShareFlushes(engine: walEngines.last!, busyPoolThread: true)
    }

    private func concurrentCommitsShareFlushes(engine: IOEngineChoice, busyPoolThread: Bool) async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine, segmentBytes: 1 << 20), after: nil)
        let appendLock = NSLock()  // the Database's single writer, played by a lock here
        let writersDone = Atomic<Bool>(false)
        if busyPoolThread {
            // Spins on a pool thread until the writers are done (at most 5 s, should the pool
            // have a single thread here).
            Task.detached {
                let end = ContinuousClock.now + .seconds(5)
                while !writersDone.load(ordering: .relaxed) && ContinuousClock.now < end {}
            }
        }
        defer { writersDone.store(true, ordering: .relaxed) }
        let acknowledged = try await withThrowingTaskGroup(of: [LogPosition].self) { group in
            for task in 0..<32 {
                group.addTask {
                    var mine: [LogPosition] = []
                    for i in 0..<50 {
                        // Placed as Database places a commit: its caller waits right after.
                        let position = try appendLock.withLock {
                            try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: payload(task * 1000 + i),
                                           callerWaits: true)
                        }
                        try await wal.waitDurable(position.lsn)
                        #expect(wal.durablePosition.lsn >= position.lsn)
                        mine.append(position)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [LogPosition]()) { $0 += $1 }
        }
        writersDone.store(true, ordering: .relaxed)
        let flushes = wal.flushCount
        wal.close()
        #expect(acknowledged.count == 1600)
        // Group commit: 32 writers share flushes (a few hundred at most, not one per commit).
        #expect(flushes < 800, "group commit: \(flushes) flushes for 1600 commits")
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine, segmentBytes: 1 << 20), after: nil)
        #expect(Set(records.map(\.position)) == Set(acknowledged))
        #expect(records.map(\.lsn) == Array(1...1600))
        reopened.close()
    }

    /// Records placed while the flusher flushes, is about to sleep or sleeps must all be flushed.
    /// Appends come from a plain thread with pauses of 0-2 ms; each waited record must become
    /// durable before a deadline (a lost wake-up leaves a record placed but never flushed). D1.
    @Test(arguments: walEngines)
    func recordsPlacedWhileTheFlusherWorksOrSleepsAreAllFlushed(engine: IOEngineChoice) async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine, segmentBytes: 1 << 20), after: nil)
        let pauses: [Int] = [0, 0, 5, 20, 50, 90, 100, 110, 300, 2000]  // microseconds
        let outcome = LockedText()
        let appender = { (finished: CheckedContinuation<Void, Never>) in Thread {
            defer { finished.resume() }
            var rng = SystemRandomNumberGenerator()
            for i in 0..<1500 {
                let pause = pauses.randomElement(using: &rng)!
                if pause > 0 { usleep(UInt32(pause)) }
                let position: LogPosition
                do {
                    position = try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: payload(i))
                } catch {
                    outcome.set("append \(i) failed: \(error)")
                    return
                }
                // Half the records are waited for at once (the flusher then idles after them),
                // half are left to the next ones' flush.
                guard Bool.random(using: &rng) || i == 1499 else { continue }
                let deadline = DispatchTime.now().uptimeNanoseconds + 30_000_000_000
                while wal.durablePosition.lsn < position.lsn {
                    if DispatchTime.now().uptimeNanoseconds > deadline {
                        outcome.set("record \(position.lsn) placed but not flushed within 30 s")
                        return
                    }
                    usleep(20)
                }
            }
        } }
        await withCheckedContinuation { appender($0).start() }  // a plain thread, not the cooperative pool
        #expect(outcome.get() == nil, "\(outcome.get() ?? "")")
        #expect(wal.durablePosition.lsn == 1500)
        wal.close()
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir, engine, segmentBytes: 1 << 20), after: nil)
        #expect(records.map(\.lsn) == Array(1...1500))
        reopened.close()
    }

    @Test func aTornTailIsTruncatedAndReported() async throws {
        let dir = TemporaryDirectory()
        var (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        let positions = try await appendDurably(wal, 0..<10)
        wal.close()
        let file = try lastWrittenSegment(dir)
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
        let last = try recordOffsets(bytes).last!
        for i in last + 70..<last + 120 { bytes[i] = 0xEE }   // tear the payload of the last record
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        var report: RecoveryReport
        var records: [WALRecord]
        (wal, records, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        #expect(records.map(\.position) == Array(positions.dropLast()))
        #expect(report.tornTail?.lsn == 10)
        #expect(report.tornTail?.offset == last)
        let replacement = try await appendDurably(wal, 100..<101)
        #expect(replacement.first?.lsn == 10)
        wal.close()
        (wal, records, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        #expect(report.tornTail == nil)
        #expect(records.count == 10 && records.last?.payload == payload(100))
        wal.close()
    }

    @Test func midLogCorruptionRefusesToStartNamingSegmentOffsetAndLSN() async throws {
        let dir = TemporaryDirectory()
        var (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        try await appendDurably(wal, 0..<5)     // separate flushes: separate batches
        try await appendDurably(wal, 5..<10)
        wal.close()
        let file = try segmentFiles(dir).first!
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
        let third = try recordOffsets(bytes)[2]
        bytes[third + 80] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        do {
            (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
            Issue.record("corruption in the middle of the log was accepted")
            wal.close()
        } catch let error as AeroError {
            #expect(error.code == .walCorrupt)
            #expect(error.message.contains(Path.name(of: file)))
            #expect(error.message.contains("offset \(third)"))
            #expect(error.message.contains("LSN 3"))
            #expect(error.invariant == "D2")
        }
        #expect(throws: AeroError.self) {
            try WriteAheadLog.verify(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        }
    }

    /// A write torn in its middle: a later record of the SAME write survived. Never acknowledged: torn tail.
    @Test func aTornBatchWithASurvivingLaterRecordOfTheSameBatchIsATornTail() async throws {
        let dir = TemporaryDirectory()
        let ends = try await writeRawBatch(dir, damage: 1, laterBatchAtEnd: false)
        let (wal, records, report) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        #expect(records.count == ends.durable + 1)  // record 4 of the torn write survived whole
        #expect(report.tornTail?.lsn == UInt64(ends.durable + 2))
        wal.close()
    }

    /// The same damage, but a record of a LATER write survived: the damaged one was durable: corruption.
    @Test func aDamagedRecordFollowedByALaterBatchIsCorruption() async throws {
        let dir = TemporaryDirectory()
        _ = try await writeRawBatch(dir, damage: 1, laterBatchAtEnd: true)
        #expect(throws: AeroError.self) {
            try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        }
    }

    /// Writes 3 durable records, then appends by hand a batch of 3 records (batch start = 4),
    /// damaging record number 4 + `damage`; optionally the last one claims a later batch.
    func writeRawBatch(_ dir: TemporaryDirectory, damage: Int, laterBatchAtEnd: Bool) async throws -> (durable: Int, Void) {
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        let positions = try await appendDurably(wal, 0..<3)
        wal.close()
        let file = try segmentFiles(dir).first!
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
        let offsets = try recordOffsets(bytes)
        var offset = offsets.last! + WALFormat.aligned(64 + payload(2).count)
        var previous = positions.last!.checksum
        for k in 0..<3 {
            let lsn = UInt64(4 + k)
            let batchStart: UInt64 = laterBatchAtEnd && k == 2 ? lsn : 4
            var (record, checksum) = WALFormat.encodeRecord(type: .transaction, lsn: lsn, epoch: 1, batchStart: batchStart,
                                                            timestampMicros: 0, previousChecksum: previous, payload: payload(Int(lsn)))
            if k == damage { record[70] ^= 0xFF }
            bytes.replaceSubrange(offset..<offset + record.count, with: record)
            offset += record.count
            previous = checksum
        }
        try Data(bytes).write(to: URL(fileURLWithPath: file))
        return (positions.count, ())
    }

    @Test func aFlushErrorIsFatal() async throws {
        let dir = TemporaryDirectory()
        let fs = FaultyFileSystem()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil)
        try await appendDurably(wal, 0..<3)
        fs.faults.withLock { $0.failSyncs = true }
        let position = try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: [1])
        await #expect(throws: AeroError.self) { try await wal.waitDurable(position.lsn) }
        #expect(wal.failure?.code == .walFlushFailed)
        fs.faults.withLock { $0.failSyncs = false }   // even if the disk recovers, the log stays failed (F1)
        #expect(throws: AeroError.self) { try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: [2]) }
        #expect(wal.durablePosition.lsn == 3)
        wal.close()
    }

    /// Commits one at a time: after `callerFlushAfterLoneFlushes` lone flushes by the flusher
    /// thread each commit is flushed by its own caller, and every one is read back (D1). Then a
    /// failing disk fails the log from a caller's flush as from the thread's (F1): the caller
    /// gets the error, nothing more is accepted, and close still returns.
    @Test(arguments: walEngines)
    func loneCommitsOneAtATimeAreFlushedByTheirCallers(engine: IOEngineChoice) async throws {
        let dir = TemporaryDirectory()
        var options = walOptions(dir, engine)
        options.callerFlushMaxMicros = .max  // however slow a loaded disk is (its own test below)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        var positions: [LogPosition] = []
        // All but the first `callerFlushAfterLoneFlushes` are their callers', unless a caller was
        // descheduled for `callerFlushWaitMillis` between placing and waiting (then the flusher
        // took it; on a loaded machine half of them): commits until 100 callers flushed, bounded.
        var placed = 0
        while wal.callerFlushCount < 100 && placed < 2_000 {
            positions += try await appendDurably(wal, placed..<(placed + 1), size: 300)
            placed += 1
        }
        #expect(wal.callerFlushCount >= 100, "\(wal.callerFlushCount) caller flushes of \(placed) lone commits")
        #expect(wal.flushCount == placed)
        // Concurrent commits break the run of lone flushes: the flusher thread takes them.
        let before = wal.callerFlushCount
        positions += try await appendDurably(wal, placed..<(placed + 64), size: 300)
        #expect(wal.callerFlushCount == before)
        wal.close()
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(records.map(\.position) == positions)
        reopened.close()
    }

    /// On a loaded machine a caller may resume after the flusher thread's timed wait took its
    /// commit: fresh logs are tried until a caller runs the failing flush (a few tries at most).
    @Test func aCallersFailedFlushIsFatalToo() async throws {
        var callerRanIt = false
        for _ in 0..<20 where !callerRanIt {
            let dir = TemporaryDirectory()
            let fs = FaultyFileSystem()
            var options = walOptions(dir)
            options.callerFlushMaxMicros = .max
            let (wal, _, _) = try WriteAheadLog.open(fileSystem: fs, options: options, after: nil)
            // Lone commits until callers flush them (the first ones are the thread's).
            var placed = 0
            while wal.callerFlushCount == 0 && placed < 200 {
                try await appendDurably(wal, placed..<(placed + 1))
                placed += 1
            }
            let callerFlushes = wal.callerFlushCount
            #expect(callerFlushes > 0)
            fs.faults.withLock { $0.failSyncs = true }
            let position = try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: [1], callerWaits: true)
            await #expect(throws: AeroError.self) { try await wal.waitDurable(position.lsn) }
            callerRanIt = wal.callerFlushCount == callerFlushes + 1
            #expect(wal.failure?.code == .walFlushFailed)  // whoever ran it (F1)
            fs.faults.withLock { $0.failSyncs = false }
            #expect(throws: AeroError.self) { try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: [2]) }
            #expect(wal.durablePosition.lsn == UInt64(placed))
            wal.close()  // returns: the flusher thread exits although the failed flush was not its own
        }
        #expect(callerRanIt, "a caller ran the failing flush in one of 20 tries")
    }

    /// A lone commit is flushed by its caller only while the last flush was quick
    /// (`callerFlushMaxMicros`): on a slow disk the caller's task would block its thread of the
    /// cooperative pool for each flush, so the flusher thread takes them all; once flushes are
    /// quick again, callers flush their own. Every record is read back either way (D1).
    @Test func slowFlushesLeaveLoneCommitsToTheFlusherThread() async throws {
        let dir = TemporaryDirectory()
        let fs = FaultyFileSystem()
        var options = walOptions(dir)
        // Margins far above a loaded disk's flush (bound) and far above the bound (delay).
        options.callerFlushMaxMicros = 20_000
        fs.faults.withLock { $0.syncDelayMicros = 40_000 }
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: fs, options: options, after: nil)
        var positions: [LogPosition] = []
        for i in 0..<20 { positions += try await appendDurably(wal, i..<(i + 1)) }
        #expect(wal.flushCount == 20)
        #expect(wal.callerFlushCount == 0, "\(wal.callerFlushCount) slow flushes run by callers")
        fs.faults.withLock { $0.syncDelayMicros = 0 }
        for i in 20..<120 { positions += try await appendDurably(wal, i..<(i + 1)) }
        #expect(wal.callerFlushCount > 0, "no caller flushed once flushes were quick")
        wal.close()
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(records.map(\.position) == positions)
        reopened.close()
    }

    @Test func aFullDiskRefusesWritesCleanlyAndTheyResumeWithSpace() async throws {
        let dir = TemporaryDirectory()
        let fs = FaultyFileSystem()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: fs, options: walOptions(dir), after: nil)
        fs.faults.withLock { $0.diskFull = true }
        var refused: AeroError?
        var appended = 0
        while refused == nil && appended < 1000 {
            do {
                try await appendDurably(wal, appended..<appended + 1, size: 1000)
                appended += 1
            } catch let error as AeroError {
                refused = error
            }
        }
        #expect(refused?.code == .storageFull)
        #expect(wal.lastPosition.lsn == UInt64(appended))
        fs.faults.withLock { $0.diskFull = false }
        let resumed = try await appendDurably(wal, 0..<1, size: 1000)
        #expect(resumed.first?.lsn == UInt64(appended + 1))
        wal.close()
    }

    @Test func readsFollowTheLogAndRecycledSegmentsAreGone() async throws {
        let dir = TemporaryDirectory()
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions(dir), after: nil)
        try await appendDurably(wal, 0..<400, size: 500)
        let some = try wal.read(from: 130, maxBytes: 2000)
        #expect(some.first?.lsn == 130)
        #expect(some.map(\.lsn) == Array(130..<130 + UInt64(some.count)))
        #expect(some.count >= 3)
        let before = try segmentFiles(dir).count
        try wal.recycle(through: 300)
        #expect(try segmentFiles(dir).count < before)
        #expect(throws: AeroError.self) { try wal.read(from: 2, maxBytes: 100) }
        #expect(try wal.read(from: 350, maxBytes: 1 << 20).map(\.lsn) == Array(350...400))
        wal.close()
    }

    /// The io_uring engine writes each group through the segment's O_DIRECT | O_DSYNC descriptor
    /// where the file system allows it and through the buffered linked write + fdatasync where it
    /// does not (tmpfs before Linux 6.6; /dev/shm is tried, and which path is expected comes from
    /// probing it); either way every acknowledged record is read back after a reopen (D1).
    /// `uring-buffered` never writes direct.
    @Test(arguments: [(IOEngineChoice.uring, false), (.uring, true), (.uringBuffered, false)])
    func directWritesWhereTheFileSystemAllowsThemAndBufferedElsewhere(engine: IOEngineChoice, onTmpfs: Bool) async throws {
        guard UringEngine() != nil else { return }
        let root = onTmpfs ? "/dev/shm/aerodb-direct-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : TemporaryDirectory().path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if onTmpfs { try? FileManager.default.removeItem(atPath: root) } }
        let direct = engine == .uring && fileSystemAllowsDirectIO(root)
        let options = WALOptions(directory: root + "/wal", segmentBytes: 64 << 10, engine: engine)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        var positions: [LogPosition] = []
        for round in 0..<30 {  // lone commits and groups, across segment rollovers
            positions += try await appendDurably(wal, (round * 5)..<(round * 5 + 1 + round % 5), size: 900)
        }
        let writes = try #require(wal.uringWrites)
        wal.close()
        #expect(direct ? (writes.direct > 0 && writes.buffered == 0) : (writes.direct == 0 && writes.buffered > 0), "\(writes)")
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(records.map(\.position) == positions)
        reopened.close()
    }

    /// A direct write bypasses the page cache, so a block a buffered reader cached before it must
    /// not be served stale afterwards: records written direct over a tail block that a disk read
    /// cached are all read back from the segment files (the read path a catching-up replica uses).
    @Test func readsAfterDirectWritesSeeThemOverABlockReadBefore() async throws {
        let dir = TemporaryDirectory()
        let options = walOptions(dir, walEngines.last!)
        var (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        try await appendDurably(wal, 0..<10, size: 200)
        wal.close()
        (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(wal.readRecent(from: 1, maxBytes: 1 << 20) == nil, "a reopened log keeps nothing in memory")
        #expect(try wal.read(from: 1, maxBytes: 1 << 20).map(\.lsn) == Array(1...10))  // caches the tail block
        try await appendDurably(wal, 10..<20, size: 200)  // written over that block
        #expect(try wal.read(from: 1, maxBytes: 1 << 20).map(\.lsn) == Array(1...20))
        wal.close()
    }

    /// The reads and placements an event loop may make: `readRecent` serves from memory or says
    /// nil (never the disk), and `placesWithoutWaiting` is false exactly when a placement would
    /// roll over to a segment whose spare is not ready (here: none is prepared in the background).
    @Test func nonBlockingReadsAndPlacementsSayWhenTheyWouldBlock() async throws {
        let dir = TemporaryDirectory()
        let options = WALOptions(directory: dir.path + "/wal", segmentBytes: 64 << 10, engine: .pwrite,
                                 preallocateInBackground: false)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        try await appendDurably(wal, 0..<20, size: 500)
        #expect(wal.readRecent(from: 5, maxBytes: 1 << 20)?.map(\.lsn) == Array(5...20))
        #expect(wal.readRecent(from: 21, maxBytes: 1 << 20)?.isEmpty == true, "past the durable end")
        #expect(wal.placesWithoutWaiting(bytes: 1_000))
        let fresh = options.segmentBytes - WALFormat.segmentHeaderBytes  // fits a new segment, not the tail
        #expect(!wal.placesWithoutWaiting(bytes: fresh), "a rollover with no spare ready")
        wal.close()
        // Reopened, nothing is kept in memory: the read would go to disk, so nil.
        let (reopened, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(reopened.readRecent(from: 5, maxBytes: 1 << 20) == nil)
        #expect(try reopened.read(from: 5, maxBytes: 1 << 20).map(\.lsn) == Array(5...20))
        reopened.close()
    }

    /// A spare zero-filled in the background is written `spareChunkBytes` at a time with a pause
    /// of `spareChunkPauseMicros` between chunks while the tail segment is less than half full:
    /// every rollover still finds its spare, and every acknowledged record is there after a
    /// reopen (D1). Segments of four chunks, so fills pause; closing while one may run returns.
    @Test func pacedBackgroundSparesServeEveryRollover() async throws {
        let dir = TemporaryDirectory()
        let options = WALOptions(directory: dir.path + "/wal", segmentBytes: 4 * WriteAheadLog.spareChunkBytes,
                                 engine: .pwrite, preallocateInBackground: true)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        var acknowledged: [LogPosition] = []
        for round in 0..<40 {
            acknowledged += try await appendDurably(wal, (round * 100)..<(round * 100 + 100), size: 1_000)
        }
        let spares = wal.spareCounts
        wal.close()
        #expect(spares.zeroFilled >= 4, "\(spares)")  // ~4.4 MB over 1 MiB segments
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(records.map(\.position) == acknowledged)
        let closing = try await appendDurably(reopened, 4_000..<4_010, size: 1_000)
        reopened.close()  // a paced fill of the next spare may be running: close still returns
        #expect(closing.count == 10)
    }

    /// Closing while a spare is zero-filled in the background stops the fill: after `close` no
    /// file of the log is open (the fill's handle was never closed before) and the spare is either
    /// whole (the fill ended first) or gone, never a partial file written to after close.
    @Test func closeStopsABackgroundFillAndLeavesNoPartialSpare() throws {
        let dir = TemporaryDirectory()
        // 64 chunks paced 2 ms apart: the fill takes over 128 ms, the close comes first.
        let options = WALOptions(directory: dir.path + "/wal", segmentBytes: 64 * WriteAheadLog.spareChunkBytes,
                                 engine: .pwrite, preallocateInBackground: true)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        let spare = options.directory + "/" + WALFormat.segmentName(1)  // segment 0 takes the records
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: spare) && Date() < deadline { usleep(1_000) }
        #expect(FileManager.default.fileExists(atPath: spare), "the open prepares the first spare")
        wal.close()
        let counts = wal.spareCounts
        #expect(openFiles(under: dir.path).isEmpty, "\(openFiles(under: dir.path))")
        #expect(counts.zeroFilled == 1 || !FileManager.default.fileExists(atPath: spare), "\(counts)")
        // What is left opens cleanly and the next spare is prepared again.
        let (reopened, records, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: options, after: nil)
        #expect(records.isEmpty)
        reopened.close()
        #expect(openFiles(under: dir.path).isEmpty)
    }
}

/// Paths of this process's open file descriptors under `directory` (/proc/self/fd).
func openFiles(under directory: String) -> [String] {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.compactMap { fd in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd),
              target.hasPrefix(directory) else { return nil }
        return target
    }
}

func segmentFiles(_ dir: TemporaryDirectory) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir.path + "/wal").filter { $0.hasSuffix(".wal") }.sorted()
        .map { dir.path + "/wal/" + $0 }
}

/// The newest segment that holds records (a spare prepared in the background may follow it).
func lastWrittenSegment(_ dir: TemporaryDirectory) throws -> String {
    try segmentFiles(dir).last { file in
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
        return bytes.withUnsafeBytes { WALFormat.decodeSegmentHeader($0) } != nil
    }!
}

func recordOffsets(_ segment: [UInt8]) throws -> [Int] {
    var offsets: [Int] = []
    var offset = WALFormat.segmentHeaderBytes
    try segment.withUnsafeBytes { raw in
        while case .record(_, let size) = WALFormat.decodeRecord(raw, at: offset) {
            offsets.append(offset)
            offset += size
        }
        guard !offsets.isEmpty else { throw AeroError(.internalError, "no records in segment") }
    }
    return offsets
}
