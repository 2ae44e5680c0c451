// The write-ahead log: placement of records (single writer), group commit (one flusher thread; a
// lone commit arriving one at a time is flushed by its caller, one flush at a time either way),
// segment preallocation, reads for the change stream, recycling behind checkpoints.
// Format: WALFormat.swift. Recovery: WALRecovery.swift.
//
// Invariants:
// - `append` is called by one writer at a time; it assigns LSN = last + 1 and extends the chain.
// - Records become durable in LSN order, a whole write (batch) at a time; `durable` only grows.
//   One flush runs at a time (`flushing`, taken with the groups under the lock), whether the
//   flusher thread or a caller flushing its lone commit (`waitDurable`) runs it.
// - The durable handler runs after `durable` advanced and before any waiter of those LSNs
//   resumes, so a commit that returns is already visible to readers (D1 then P2).
// - Local records are taken for a flush only inside the sealer (`setSealer`: the writer's lock,
//   after the writer handed its head to Visibility), so every flush of them ends at a state the
//   durable handler can publish (Writer.swift, "Sealing"); shipped records are taken without it.
// - The first flush error fails the log for good (F1): waiters and later appends get
//   AERO_WAL_FLUSH_FAILED; nothing is retried, the page cache is not trusted.
// - A record is placed only after the space for it is secured: when a new segment cannot be
//   preallocated (ENOSPC), `append` throws AERO_STORAGE_FULL and nothing changed (no LSN used).
// - A replica appends the primary's records byte for byte (`appendReplicated`): same LSN, epoch,
//   timestamp, batch start and chain. One group never mixes records of two primary batches, but
//   the flusher writes every group it takes from one segment as one merged write (`merged`):
//   later groups' records get the write's start stamped beside their batch start (WALFormat),
//   so what proves earlier LSNs flushed is still only a write that began after them (R2).
// - Recycling (R3): a checkpoint renames up to `walRecycledSegmentsMax` obsolete segments to
//   `recycled-*` (durably) instead of removing them; the next spare is such a file renamed to
//   its new index, not zero-filled. Its stale bytes are records with LSNs below the segment's
//   first LSN and the old header (another index): a reader stops at a record that does not
//   continue the one before, recovery never counts stale records as written or as proof. Every
//   path that shortens the history (rejoin's truncate, a checkpoint install) removes the
//   recycled files first, so stale LSNs always stay below every LSN written after them.

import Dispatch
import Foundation
import Synchronization
import CNuma

public struct WALOptions: Sendable {
    public var directory: String
    public var segmentBytes: Int
    public var engine: IOEngineChoice
    /// Preallocate the next segment on a background thread (true), or at the rollover that
    /// needs it (false: one order of disk operations, which the seeded crash harness replays).
    public var preallocateInBackground: Bool
    /// A lone commit is flushed by its caller only while the last flush took at most this long
    /// (`WriteAheadLog.callerFlushMaxMicrosDefault`); tests of the caller's flush itself raise it.
    var callerFlushMaxMicros = WriteAheadLog.callerFlushMaxMicrosDefault

    public init(directory: String, segmentBytes: Int = KernelLimits.walSegmentBytesDefault,
                engine: IOEngineChoice = .automatic, preallocateInBackground: Bool = true) {
        self.directory = directory
        self.segmentBytes = segmentBytes
        self.engine = engine
        self.preallocateInBackground = preallocateInBackground
    }
}

public struct RecoveryReport: Sendable {
    public let engine: String
    public let segmentsScanned: Int
    public let recordsRead: Int
    public let bytesRead: Int
    public let lastPosition: LogPosition
    /// Set when a torn tail was found (and, on open, truncated).
    public let tornTail: TornTail?
}

public final class WriteAheadLog: Sendable {
    /// LSNs between read hints: bounds how far `read(from:)` scans before the first wanted record.
    static let readHintEveryRecords: UInt64 = 64
    /// Zero-fill chunk when preallocating a segment.
    static let zeroChunkBytes = 1 << 20
    /// A spare segment prepared in the background is zero-filled and flushed this much at a
    /// time: one 64 MiB flush at the end stalled concurrent commit flushes (and replica
    /// visibility) for up to a quarter of a second; 1 MiB chunks still held a commit's flush
    /// behind each chunk's write-back (p50 0.57-1.06 ms beside a fill against 0.10-0.13 ms).
    static let spareChunkBytes = 256 << 10
    /// Pause between two chunks of a background zero-fill while the tail segment is less than
    /// half full (the spare is not needed soon): the fill's disk time is spread out, so commit
    /// flushes on the same disk do not queue behind it. Full speed once the tail is half full;
    /// the log's close stops the fill (its partial file is removed) and waits for it.
    static let spareChunkPauseMicros: UInt32 = 2_000
    /// Consecutive lone-commit flushes after which a lone commit is flushed by its own caller
    /// (`waitDurable`) instead of the flusher thread: commits come one at a time then, and the two
    /// thread hand-offs cost a lone commit more than its write. Concurrent commits break the run.
    static let callerFlushAfterLoneFlushes = 2
    /// A caller flushes its lone commit only while the last flush took at most this long. The
    /// caller's flush blocks a thread of the cooperative pool (two on this machine) for the disk
    /// write: about 0.1-0.2 ms on a quiet disk, the price of one thread hand-off saved. On a
    /// loaded disk a flush takes milliseconds to tens of them, a hand-off is then nothing beside
    /// it, and a pool thread blocked that long holds up every other task (the suspected cause of
    /// tasks waiting tens of seconds in s24's full `scripts/test` runs, not proven): the flusher
    /// thread takes every lone commit then, until a flush is quick again.
    static let callerFlushMaxMicrosDefault = 1_000
    /// How long the idle flusher thread sleeps before it looks for a lone commit its caller has
    /// not flushed: a bound on that commit's wait should its caller be late (a caller yields
    /// before it flushes, and on a loaded pool its task may resume tens of ms later; `Database`
    /// always waits right after placing). Long enough that the caller normally wins.
    static let callerFlushWaitMillis = 200

    /// Bytes of recently placed records kept in memory, so replication senders and change
    /// streams following the tail never read segment files (older reads go to disk).
    static let recentRecordsBytesMax = 16 << 20

    struct PendingGroup {
        let segment: UInt64
        let startOffset: Int
        var bytes: [UInt8]
        /// Where the group's own records begin in `bytes` (after a segment header and the copy
        /// of the tail block's earlier bytes).
        let recordsStart: Int
        let firstLSN: UInt64
        var last: LogPosition
        /// The batch start its records carry: `firstLSN` for local writes, the primary's batch
        /// start for replicated ones.
        let batchStart: UInt64
        let replicated: Bool
    }

    private enum Spare { case none, preparing, ready, failed(AeroError) }

    private struct State {
        var last: LogPosition
        var durable: LogPosition
        var tail: WALScan.Tail
        var pending: [PendingGroup] = []
        var failure: AeroError?
        var closed = false
        var waiters: [(lsn: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var segments: [(index: UInt64, firstLSN: UInt64)]
        var hints: [(lsn: UInt64, segment: UInt64, offset: Int)] = []
        var spare: Spare = .none
        var handler: (@Sendable (UInt64) -> Void)?
        var flushes = 0
        var recent = RecentRecords()
        /// Old indexes of the `recycled-*` files ready to become spares, oldest first.
        var recycled: [UInt64] = []
        /// Spares made from a recycled file / by zero-fill (metrics and tests).
        var sparesReused = 0
        var sparesZeroFilled = 0
        /// While a replica places one shipped frame (`holdingFlushes`): how many of the pending
        /// groups were complete when it began; the flusher takes only those until it ends.
        var held: Int?
        /// A flush is running (the flusher thread's, or a caller's for its lone commit): one at
        /// a time, so records become durable in LSN order.
        var flushing = false
        /// Consecutive flushes that were a single record (commits arriving one at a time).
        var loneFlushes = 0
        /// How long the last flush's writes took (`callerFlushMaxMicros`).
        var lastFlushMicros = 0
        /// Flushes run by a caller for its lone commit (tests).
        var callerFlushes = 0
        /// The one pending group is a lone commit placed without waking the flusher: its caller
        /// flushes it in `waitDurable` (the flusher's timed wait takes it if the caller is late).
        var awaitingCaller = false
        /// The writer's seal around takes of local records (`setSealer`); nil: takes run bare.
        var sealer: Sealer?
    }

    /// Runs a take of local records for a flush inside the writer's lock, after it handed the
    /// state of its last record to Visibility (Writer.swift, "Sealing"): every flush of local
    /// records then ends at a state that can be published. Set by `Database`; a log without one
    /// (its own tests) takes records as they are.
    public typealias Sealer = @Sendable (_ take: () -> Void) -> Void

    private let state: Mutex<State>
    private let fileSystem: any FileSystem
    private let options: WALOptions
    private let engine: any WALIOEngine
    /// The block-aligned write buffer of the running flush (one at a time: `flushing`).
    private let writeBuffer = AlignedWriteBuffer()
    private let work = DispatchSemaphore(value: 0)
    private let flusherExited = DispatchSemaphore(value: 0)
    private let handles = Mutex<[UInt64: any FileHandle]>([:])
    /// Entered while a background spare is being prepared; `close` waits on it before it closes
    /// the files, so no fill writes after close and every handle it opened is closed.
    private let spareRunning = DispatchGroup()

    public var engineName: String { engine.name }

    /// Flushes written through an O_DIRECT | O_DSYNC descriptor and through the buffered path, by
    /// the io_uring engine; nil for the pwrite engine (tests).
    var uringWrites: (direct: Int, buffered: Int)? {
        guard let uring = engine as? UringEngine else { return nil }
        return (uring.directWrites.load(ordering: .relaxed), uring.bufferedWrites.load(ordering: .relaxed))
    }

    private init(fileSystem: any FileSystem, options: WALOptions, engine: any WALIOEngine, scan: WALScan) {
        self.fileSystem = fileSystem
        self.options = options
        self.engine = engine
        state = Mutex(State(last: scan.last, durable: scan.last, tail: scan.tail, segments: scan.segmentFirstLSNs))
    }

    // MARK: Open

    /// Opens (creating if needed) and recovers: returns the records after `after`, in order.
    /// Holds them all in memory: for tests and small logs; recovery uses `open(...replay:)`.
    public static func open(fileSystem: any FileSystem, options: WALOptions,
                            after: LogPosition?) throws -> (WriteAheadLog, [WALRecord], RecoveryReport) {
        var records: [WALRecord] = []
        let (wal, report) = try open(fileSystem: fileSystem, options: options, after: after) { records.append($0) }
        return (wal, records, report)
    }

    /// Opens (creating if needed) and recovers, handing every record after `after` to `replay`
    /// in order, one at a time.
    public static func open(fileSystem: any FileSystem, options: WALOptions, after: LogPosition?,
                            replay: (WALRecord) throws -> Void) throws -> (WriteAheadLog, RecoveryReport) {
        try open(fileSystem: fileSystem, options: options) {
            try WALScan.run(fileSystem: fileSystem, directory: options.directory, segmentBytes: options.segmentBytes,
                            after: after, repair: true, visit: replay)
        }
    }

    /// Opens and recovers like `open(...replay:)` in three stages (RecoveryPipeline.swift): the
    /// scan on a thread of its own, each record's `prepare` (decoding its payload: a pure function
    /// of the record) on decoding threads, up to `KernelLimits.recoveryDecodeAheadRecords` records
    /// ahead, and `replay` on this thread, in LSN order. An error of either names the record's
    /// segment, offset and LSN, and stops recovery before the end of the log is repaired (D2).
    public static func open<Prepared: Sendable>(fileSystem: any FileSystem, options: WALOptions, after: LogPosition?,
                                                prepare: @escaping @Sendable (WALRecord) throws -> Prepared,
                                                replay: (WALRecord, Prepared) throws -> Void) throws -> (WriteAheadLog, RecoveryReport) {
        try open(fileSystem: fileSystem, options: options) {
            try RecoveryPipeline.run(prepare: prepare, scan: { deliver, drain in
                try WALScan.run(fileSystem: fileSystem, directory: options.directory, segmentBytes: options.segmentBytes,
                                after: after, repair: true, deliver: deliver, drain: drain)
            }, apply: replay)
        }
    }

    /// The open shared by both: `recover` scans the log (and repairs a torn tail).
    private static func open(fileSystem: any FileSystem, options: WALOptions,
                             recover: () throws -> WALScan) throws -> (WriteAheadLog, RecoveryReport) {
        precondition(WALFormat.blockBytes == directAlignmentBytes, "a WAL block is one O_DIRECT write unit")
        guard options.segmentBytes >= KernelLimits.walSegmentBytesMin, options.segmentBytes % WALFormat.blockBytes == 0 else {
            throw AeroError(.configInvalid, "wal segment size must be a multiple of 4096 and at least \(KernelLimits.walSegmentBytesMin) bytes")
        }
        if !fileSystem.exists(options.directory) {
            try fileSystem.makeDirectory(options.directory)
            try fileSystem.syncDirectory(Path.parent(of: options.directory))
        }
        let scan = try recover()
        let engine = try IOEngines.make(options.engine, fileSystem: fileSystem)
        let wal = WriteAheadLog(fileSystem: fileSystem, options: options, engine: engine, scan: scan)
        try wal.adoptRecycled()
        if !scan.tail.headerWritten { try wal.createSegment(scan.tail.segmentIndex) }
        wal.startFlusher()
        // The first rollover must not wait for a segment's zero-fill either: prepare its spare now.
        if options.preallocateInBackground {
            wal.state.withLock { $0.spare = .preparing }
            wal.prepareSpareInBackground(scan.tail.segmentIndex + 1)
        }
        let report = RecoveryReport(engine: engine.name, segmentsScanned: scan.segmentsScanned, recordsRead: scan.recordsRead,
                                    bytesRead: scan.bytesRead, lastPosition: scan.last, tornTail: scan.tornTail)
        return (wal, report)
    }

    /// Offline check (`aerodb verify`): the same scan as recovery, changing nothing. Every
    /// accepted record (also those at or before `after`) is handed to `inspect`; an error it
    /// throws is reported as AERO_WAL_CORRUPT naming the segment, offset and LSN.
    public static func verify(fileSystem: any FileSystem, options: WALOptions, after: LogPosition?,
                              inspect: (WALRecord) throws -> Void = { _ in }) throws -> RecoveryReport {
        let scan = try WALScan.run(fileSystem: fileSystem, directory: options.directory,
                                   segmentBytes: options.segmentBytes, after: after, repair: false, visitAll: true,
                                   visit: inspect)
        return RecoveryReport(engine: "none", segmentsScanned: scan.segmentsScanned, recordsRead: scan.recordsRead,
                              bytesRead: scan.bytesRead, lastPosition: scan.last, tornTail: scan.tornTail)
    }

    public var durablePosition: LogPosition { state.withLock { $0.durable } }

    public var lastPosition: LogPosition { state.withLock { $0.last } }

    public func setDurableHandler(_ handler: @escaping @Sendable (UInt64) -> Void) {
        state.withLock { $0.handler = handler }
    }

    public func setSealer(_ sealer: @escaping Sealer) {
        state.withLock { $0.sealer = sealer }
    }

    /// `take` inside `sealer`, or as it is without one.
    private func sealed<T>(_ sealer: Sealer?, _ take: () -> T) -> T {
        guard let sealer else { return take() }
        var result: T?
        sealer { result = take() }
        return result!
    }

    // MARK: Append

    private enum Placement {
        /// Placed; `prepare` names the next spare segment to preallocate in the background.
        /// `forCaller`: a lone commit left for its caller to flush (`waitDurable`); the flusher
        /// thread is not woken for it.
        case placed(LogPosition, prepare: UInt64?, forCaller: Bool)
        case needSpare(UInt64)
        case waitForSpare
    }

    /// Places a record (single writer). Returns its position; durable after `waitDurable`.
    /// `callerWaits`: the caller calls `waitDurable` for it right after (the writer's records:
    /// `Database` waits for every commit), so a lone commit may be left for the caller to flush.
    public func append(type: RecordType, epoch: UInt64, timestampMicros: Int64, payload: [UInt8],
                       callerWaits: Bool = false) throws -> LogPosition {
        try append(Placing(type: type, epoch: epoch, timestampMicros: timestampMicros, payload: payload, replicated: nil,
                           callerWaits: callerWaits))
    }

    /// Places a record received from the primary exactly as the primary wrote it (P1). Refuses a
    /// record that does not continue this log's chain; nothing changes then.
    public func appendReplicated(_ record: WALRecord) throws -> LogPosition {
        try append(Placing(type: record.type, epoch: record.epoch, timestampMicros: record.timestampMicros,
                           payload: record.payload, replicated: record))
    }

    private struct Placing {
        let type: RecordType
        let epoch: UInt64
        let timestampMicros: Int64
        let payload: [UInt8]
        /// The primary's record when replicating: its LSN, batch start and checksum must be kept.
        let replicated: WALRecord?
        var callerWaits = false
    }

    private func append(_ placing: Placing) throws -> LogPosition {
        let size = WALFormat.aligned(WALFormat.recordHeaderBytes + placing.payload.count)
        guard size <= options.segmentBytes - WALFormat.segmentHeaderBytes else {
            throw AeroError(.transactionTooLarge, "a record of \(size) bytes does not fit in a WAL segment of \(options.segmentBytes) bytes")
        }
        while true {
            switch try state.withLock({ s -> (Placement, Bool) in
                let placement = try place(&s, placing, size)
                return (placement, s.held != nil)
            }) {
            case (.placed(let position, let prepare, let forCaller), let held):
                // A hold's end wakes the flusher; a lone commit left to its caller does not.
                if !held && !forCaller { work.signal() }
                if let prepare { prepareSpareInBackground(prepare) }
                return position
            case (.needSpare(let index), _):
                try prepareSpare(index)
            case (.waitForSpare, _):
                usleep(200)  // another thread is preallocating the next segment; rare
            }
        }
    }

    private func place(_ s: inout State, _ placing: Placing, _ size: Int) throws -> Placement {
        if let failure = s.failure { throw failure }
        guard !s.closed else { throw AeroError(.walClosed, "the WAL is closed") }
        let lsn = s.last.lsn + 1
        let epoch = placing.epoch
        if let record = placing.replicated {
            guard record.lsn == lsn, record.previousChecksum == s.last.checksum else {
                throw AeroError(.replicationDiverged, "record \(record.position) does not continue this log at \(s.last)", invariant: "P1")
            }
        }
        let rollsOver = s.tail.offset + size > options.segmentBytes
        if rollsOver {  // first the spare: a record that must wait for it is encoded once, when it can be placed
            switch s.spare {
            case .ready: break
            case .preparing: return .waitForSpare
            case .none, .failed:
                s.spare = .preparing
                return .needSpare(s.tail.segmentIndex + 1)
            }
        }
        // A shipped record is encoded and checked before the placement changes anything: refused
        // after a segment rollover, it left the segment marked as having its header with no write
        // carrying it, and the next spare marked as being prepared by nobody (every later
        // rollover then waited forever; `aRecordRefusedForItsChecksumChangesNothing...`).
        var shipped: (bytes: [UInt8], checksum: UInt64)?
        if let record = placing.replicated {
            let encoded = WALFormat.encodeRecord(type: placing.type, lsn: lsn, epoch: epoch, batchStart: record.batchStart,
                                                 timestampMicros: placing.timestampMicros,
                                                 previousChecksum: s.last.checksum, payload: placing.payload)
            guard encoded.1 == record.checksum else {
                throw AeroError(.replicationDiverged, "record \(record.lsn) re-encodes to checksum \(String(encoded.1, radix: 16)), not the primary's \(String(record.checksum, radix: 16))", invariant: "P1")
            }
            shipped = encoded
        }
        var header: [UInt8] = []
        var prepare: UInt64?
        if rollsOver {
            s.tail = WALScan.Tail(segmentIndex: s.tail.segmentIndex + 1, offset: WALFormat.segmentHeaderBytes,
                                  headerWritten: false, partialBlock: [])
            // Preallocate the next spare now, off the commit path, so the next rollover does not
            // stall commits for a whole segment's zero-fill.
            if options.preallocateInBackground {
                s.spare = .preparing
                prepare = s.tail.segmentIndex + 1
            } else {
                s.spare = .none
            }
        }
        if !s.tail.headerWritten {
            header = WALFormat.encodeSegmentHeader(.init(index: s.tail.segmentIndex, firstLSN: lsn, epoch: epoch,
                                                          previousChecksum: s.last.checksum))
            s.tail.headerWritten = true
            s.segments.append((s.tail.segmentIndex, lsn))
        }
        // A write joins the open group only when it belongs to the same batch: a local write
        // joins a local group; a replicated record joins the group of its primary batch.
        let wantedBatch = placing.replicated?.batchStart
        let openGroup = s.pending.last.map { group in
            group.segment == s.tail.segmentIndex && group.replicated == (wantedBatch != nil)
                && (wantedBatch == nil || group.batchStart == wantedBatch)
        } ?? false
        let batchStart = wantedBatch ?? (openGroup ? s.pending[s.pending.count - 1].batchStart : lsn)
        let (bytes, checksum) = shipped ?? WALFormat.encodeRecord(type: placing.type, lsn: lsn, epoch: epoch, batchStart: batchStart,
                                                                  timestampMicros: placing.timestampMicros,
                                                                  previousChecksum: s.last.checksum, payload: placing.payload)
        precondition(bytes.count == size, "encoded size matches the placement")
        let position = LogPosition(lsn: lsn, checksum: checksum)
        if openGroup {
            s.pending[s.pending.count - 1].bytes += bytes
            s.pending[s.pending.count - 1].last = position
        } else {
            let start = header.isEmpty ? s.tail.offset & ~(WALFormat.blockBytes - 1) : 0
            s.pending.append(PendingGroup(segment: s.tail.segmentIndex, startOffset: start,
                                          bytes: header + s.tail.partialBlock + bytes,
                                          recordsStart: header.count + s.tail.partialBlock.count, firstLSN: lsn, last: position,
                                          batchStart: batchStart, replicated: wantedBatch != nil))
        }
        s.recent.append(WALRecord(lsn: lsn, epoch: epoch, type: placing.type, timestampMicros: placing.timestampMicros,
                                  batchStart: batchStart, previousChecksum: s.last.checksum, checksum: checksum,
                                  payload: placing.payload))
        if lsn % Self.readHintEveryRecords == 0 || !header.isEmpty {
            s.hints.append((lsn, s.tail.segmentIndex, s.tail.offset))
        }
        advanceTail(&s.tail, by: bytes)
        s.last = position
        // Commits come one at a time (the last flushes were lone ones) and this one is alone:
        // its caller flushes it. Any other record placed meanwhile joins its group, and the
        // flusher is woken for the group as usual.
        let lone = s.pending.count == 1 && s.pending[0].firstLSN == lsn && placing.callerWaits
        s.awaitingCaller = lone && !s.flushing && s.held == nil && s.loneFlushes >= Self.callerFlushAfterLoneFlushes
            && s.lastFlushMicros <= options.callerFlushMaxMicros
        return .placed(position, prepare: prepare, forCaller: s.awaitingCaller)
    }

    private func advanceTail(_ tail: inout WALScan.Tail, by bytes: [UInt8]) {
        let combined = tail.partialBlock + bytes
        tail.offset += bytes.count
        let keep = tail.offset & (WALFormat.blockBytes - 1)
        tail.partialBlock = Array(combined.suffix(keep))
    }

    /// At most one background spare at a time (`spare == .preparing`); `close` waits for it.
    private func prepareSpareInBackground(_ index: UInt64) {
        spareRunning.enter()
        NamedThread.start("aero-wal-spare") { [self] in
            defer { spareRunning.leave() }
            do {
                try prepareSpare(index, inBackground: true)
            } catch {
                // prepareSpare recorded the outcome: a fatal failure failed the log (F1); ENOSPC
                // left the spare `.failed`, so the next rollover retries and refuses cleanly; a
                // fill the log's close stopped removed its partial file.
            }
        }
    }

    /// Creates segment `index` ahead of need. ENOSPC refuses the write that needed it (nothing
    /// changed, writes resume when space returns); any other failure, a failed fsync above all,
    /// is fatal like a failed flush (F1): the disk can no longer be trusted.
    private func prepareSpare(_ index: UInt64, inBackground: Bool = false) throws {
        do {
            try createSegment(index, chunked: inBackground)
            state.withLock { $0.spare = .ready }
        } catch {
            let failure = AeroError.wrap(error)
            state.withLock { $0.spare = .failed(failure) }
            if error is SpareFillStopped { return }  // the log closed: nothing failed
            guard failure.code == .storageFull else {
                let fatal = AeroError(.walFlushFailed, "preallocating WAL segment \(index) failed, the node must stop: \(failure)", invariant: "F1")
                fail(fatal)
                throw fatal
            }
            throw AeroError(.storageFull, "the WAL cannot preallocate its next segment: \(failure.message); writes resume when space returns")
        }
    }

    /// Creates segment `index`: a recycled segment renamed (R3), else zero-filled (so fdatasync
    /// later flushes data only), durably; `chunked` (a spare prepared in the background) flushes
    /// a zero-fill a chunk at a time.
    private func createSegment(_ index: UInt64, chunked: Bool = false) throws {
        if let handle = try reuseRecycled(as: index) {
            handles.withLock { $0[index] = handle }
            state.withLock { $0.sparesReused += 1 }
            return
        }
        let half = options.segmentBytes / 2
        let handle = try Self.createZeroedSegment(fileSystem: fileSystem, options: options, index: index,
                                                  syncEveryBytes: chunked ? Self.spareChunkBytes : nil,
                                                  pace: chunked ? { [self] in
                                                      state.withLock { s -> SpareFillPace in
                                                          if s.closed { return .stop }
                                                          return s.tail.segmentIndex < index && s.tail.offset < half ? .pause : .go
                                                      }
                                                  } : nil)
        handles.withLock { $0[index] = handle }
        state.withLock { $0.sparesZeroFilled += 1 }
    }

    /// Renames the oldest recycled file to segment `index`, durably; nil when there is none (or
    /// it has another size: segments were resized since, it is removed). Its old header names
    /// another index, so until the first write of `index` puts the new header, recovery sees an
    /// unstarted spare. No data is written and nothing needs flushing but the directory.
    private func reuseRecycled(as index: UInt64) throws -> (any FileHandle)? {
        guard let old = state.withLock({ s in s.recycled.isEmpty ? nil : s.recycled.removeFirst() }) else { return nil }
        let from = Path.join(options.directory, WALFormat.recycledName(old))
        let to = Path.join(options.directory, WALFormat.segmentName(index))
        let handle = try fileSystem.open(from, create: false)
        guard try handle.size() == Int64(options.segmentBytes) else {
            handle.close()
            try fileSystem.remove(from)
            try fileSystem.syncDirectory(options.directory)
            return nil
        }
        if fileSystem.exists(to) { try fileSystem.remove(to) }
        try fileSystem.rename(from, to)
        try fileSystem.syncDirectory(options.directory)
        return handle
    }

    /// At open: the `recycled-*` files left by earlier checkpoints become available again (at
    /// most `walRecycledSegmentsMax`, the rest removed).
    private func adoptRecycled() throws {
        let found = try fileSystem.list(options.directory).compactMap(WALFormat.recycledIndex(fromName:)).sorted()
        let extra = found.dropLast(KernelLimits.walRecycledSegmentsMax)
        for index in extra { try fileSystem.remove(Path.join(options.directory, WALFormat.recycledName(index))) }
        if !extra.isEmpty { try fileSystem.syncDirectory(options.directory) }
        let kept = Array(found.suffix(KernelLimits.walRecycledSegmentsMax))
        state.withLock { $0.recycled = kept }
    }

    /// Removes every recycled file (before a path that shortens the history: their stale LSNs
    /// could then be above LSNs written later).
    static func removeRecycled(fileSystem fs: any FileSystem, directory: String) throws {
        let found = try fs.list(directory).compactMap(WALFormat.recycledIndex(fromName:))
        for index in found { try fs.remove(Path.join(directory, WALFormat.recycledName(index))) }
        if !found.isEmpty { try fs.syncDirectory(directory) }
    }

    /// A zero-filled, preallocated segment file, durable with its directory entry.
    private static func createZeroedSegment(fileSystem: any FileSystem, options: WALOptions, index: UInt64,
                                            header: [UInt8] = [], syncEveryBytes: Int? = nil,
                                            pace: (() -> SpareFillPace)? = nil) throws -> any FileHandle {
        let path = Path.join(options.directory, WALFormat.segmentName(index))
        if fileSystem.exists(path) { try fileSystem.remove(path) }
        let handle = try fileSystem.open(path, create: true)
        do {
            try handle.allocate(at: 0, length: Int64(options.segmentBytes))
            let step = syncEveryBytes ?? options.segmentBytes
            for start in stride(from: 0, to: options.segmentBytes, by: step) {
                try zeroFill(handle, from: start, to: min(start + step, options.segmentBytes))
                if syncEveryBytes != nil { try handle.sync() }
                switch pace?() ?? .go {
                case .go: break
                case .pause: usleep(Self.spareChunkPauseMicros)
                case .stop: throw SpareFillStopped()
                }
            }
            if !header.isEmpty { try handle.write(header, at: 0) }
            try handle.sync()
            try fileSystem.syncDirectory(options.directory)
        } catch {
            handle.close()
            try? fileSystem.remove(path)  // best effort: a partial spare is unused space either way
            throw error
        }
        return handle
    }

    private static func zeroFill(_ handle: any FileHandle, from start: Int, to end: Int) throws {
        let zeros = [UInt8](repeating: 0, count: min(zeroChunkBytes, end - start))
        var offset = start
        while offset < end {
            let count = min(zeros.count, end - offset)
            try handle.write(count == zeros.count ? zeros : Array(zeros[0..<count]), at: Int64(offset))
            offset += count
        }
    }

    /// Starts an empty log whose first record will be `after.lsn + 1`, continuing the chain at
    /// `after` (a replica that installed a checkpoint at that position). The directory must hold
    /// no segment.
    public static func createEmpty(fileSystem: any FileSystem, options: WALOptions, after: LogPosition,
                                   epoch: UInt64) throws {
        if !fileSystem.exists(options.directory) {
            try fileSystem.makeDirectory(options.directory)
            try fileSystem.syncDirectory(Path.parent(of: options.directory))
        }
        let existing = try fileSystem.list(options.directory).compactMap(WALFormat.segmentIndex(fromName:))
        precondition(existing.isEmpty, "an empty log is created in an empty directory")
        let header = WALFormat.encodeSegmentHeader(.init(index: 0, firstLSN: after.lsn + 1, epoch: epoch,
                                                         previousChecksum: after.checksum))
        try createZeroedSegment(fileSystem: fileSystem, options: options, index: 0, header: header).close()
    }

    /// Cuts a stopped node's log after `lsn` (`aerodb rejoin`): the records after it are zeroed
    /// and later segments removed, durably. What was cut is whatever `open` replayed past `lsn`.
    public static func truncate(fileSystem fs: any FileSystem, options: WALOptions, after lsn: UInt64) throws {
        try removeRecycled(fileSystem: fs, directory: options.directory)  // R3: stale LSNs may be above `lsn`
        let indexes = try fs.list(options.directory).compactMap(WALFormat.segmentIndex(fromName:)).sorted()
        var remove: [UInt64] = []
        for index in indexes {
            let path = Path.join(options.directory, WALFormat.segmentName(index))
            let handle = try fs.open(path, create: false)
            defer { handle.close() }
            let headerBytes = try handle.read(at: 0, count: WALFormat.segmentHeaderBytes)
            // No header, or another index's (a spare made from a recycled segment): unused.
            guard let header = headerBytes.withUnsafeBytes({ WALFormat.decodeSegmentHeader($0) }), header.index == index else {
                remove.append(index)
                continue
            }
            if header.firstLSN > lsn + 1 { remove.append(index); continue }
            var reader = SegmentReader(handle: handle, segmentBytes: options.segmentBytes, offset: WALFormat.segmentHeaderBytes)
            var cut: Int?
            while true {
                let offset = reader.offset
                guard let record = try reader.next() else { break }
                if record.lsn > lsn { cut = offset; break }
            }
            guard let cut else { continue }
            // Zero what was written after the cut, to the segment's end: a reused segment (R3)
            // may hold stale or torn bytes past a run of zeros, and once the history is cut their
            // batch starts could be above LSNs written next.
            var offset = cut
            while offset < options.segmentBytes {
                let end = min(offset + zeroChunkBytes, options.segmentBytes)
                if try handle.read(at: Int64(offset), count: end - offset).contains(where: { $0 != 0 }) {
                    try zeroFill(handle, from: offset, to: end)
                }
                offset = end
            }
            try handle.sync()
        }
        for index in remove { try fs.remove(Path.join(options.directory, WALFormat.segmentName(index))) }
        if !remove.isEmpty { try fs.syncDirectory(options.directory) }
    }

    // MARK: Group commit

    /// Resumes once `lsn` is durable (D1). Throws AERO_WAL_FLUSH_FAILED after a flush error (F1).
    /// A lone commit while commits come one at a time (`callerFlushAfterLoneFlushes`) and flushes
    /// are quick (`callerFlushMaxMicrosDefault`) is flushed by its caller, as the flusher thread
    /// would flush it: the wake-up of the flusher and the resumption of the caller's task (two
    /// thread hand-offs of a round trip that is one disk write) are saved. One flush at a time
    /// either way (`flushing`), in LSN order.
    /// `othersCommitting`: whether another commit may be placed meanwhile (false only when the
    /// caller knows it is the only commit in progress: then it does not yield first).
    public func waitDurable(_ lsn: UInt64, othersCommitting: Bool = true) async throws {
        // The writer's sealer, read with the check (a lone commit is local).
        if let sealer = state.withLock({ $0.awaitingCaller && $0.pending.first?.firstLSN == lsn ? Optional($0.sealer) : nil }) {
            // Let every committer that is ready place its record first: one that does joins this
            // group and wakes the flusher thread, which then flushes them together. Without this,
            // a caller that does not suspend keeps its pool thread from the other committers, each
            // of them then finds itself alone in turn, and group commit is lost (the attempt of
            // 2026-12-04 in docs/BENCHMARKS.md, reverted: 1,600 flushes for 1,600 commits of 32
            // writers on a busy pool). With no other commit in progress there is no one to wait
            // for, and the yield would only cost a thread hand-off (a wake-up of another pool
            // thread that resumes this task).
            if othersCommitting { await Task.yield() }
            if let group = sealed(sealer, { takeLoneGroup(lsn) }) {
                try flushTaken([group], byCaller: true)
                return
            }
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome: Result<Bool, AeroError> = state.withLock { s in
                if s.durable.lsn >= lsn { return .success(true) }
                if let failure = s.failure { return .failure(failure) }
                if s.closed && s.pending.isEmpty { return .failure(AeroError(.walClosed, "the WAL is closed")) }
                s.waiters.append((lsn, continuation))
                return .success(false)
            }
            switch outcome {
            case .success(true): continuation.resume()
            case .success(false): break
            case .failure(let error): continuation.resume(throwing: error)
            }
        }
    }

    private func startFlusher() {
        NamedThread.start("aero-wal-flush") { [self] in
            NUMAPlacement.pinCurrentThread()
            flushLoop()
            flusherExited.signal()
        }
    }

    /// Runs `place` (a replica placing one frame of shipped records) with the flusher taking no
    /// group begun meanwhile: the frame's records are flushed together once all are placed (still
    /// one write and flush per primary batch), not the first one alone while the rest arrive.
    public func holdingFlushes<T>(_ place: () throws -> T) rethrows -> T {
        state.withLock { $0.held = $0.pending.count }
        defer {
            state.withLock { $0.held = nil }
            work.signal()
        }
        return try place()
    }

    private func flushLoop() {
        while true {
            // Local records are taken inside the writer's seal; a replica's shipped records,
            // whose states the writer hands over at every primary batch end, without it (a
            // replica placing its next frame holds the writer's lock meanwhile).
            let sealer = state.withLock { $0.pending.first?.replicated == false ? $0.sealer : nil }
            let (groups, exit) = sealer == nil ? take(sealed: false) : sealed(sealer) { take(sealed: true) }
            if groups.isEmpty {
                if exit { return }
                // Timed: a lone commit left to its caller is flushed here if the caller is late.
                _ = work.wait(timeout: .now() + .milliseconds(Self.callerFlushWaitMillis))
                continue
            }
            do {
                try flushTaken(groups, byCaller: false)
            } catch {
                return  // the log failed (F1)
            }
        }
    }

    /// The flusher's take: the groups to flush now (`flushing` set when there are any), and
    /// whether the thread may exit (the log is closing and nothing is pending). `sealed`: called
    /// inside the sealer (else, with one set, only shipped records are taken).
    private func take(sealed: Bool) -> ([PendingGroup], Bool) {
        state.withLock { s -> ([PendingGroup], Bool) in
            // A caller flushing its lone commit signals `work` when it is done.
            if s.flushing { return ([], false) }
            // While a frame is being placed only the groups complete before it are taken
            // (all of them once the log is closing).
            var taken = s.closed ? s.pending.count : min(s.held ?? s.pending.count, s.pending.count)
            if !sealed && s.sealer != nil {
                taken = s.pending[0..<taken].prefix(while: \.replicated).count
            }
            defer {
                s.pending.removeFirst(taken)
                if s.held != nil { s.held = 0 }
                if taken > 0 {
                    s.flushing = true
                    s.awaitingCaller = false
                }
            }
            return (Array(s.pending[0..<taken]), s.closed && s.pending.isEmpty)
        }
    }

    /// Writes and completes groups taken for one flush (`flushing` set by the taker), then ends
    /// the flush. Called by the flusher thread, or by a caller for its lone commit (which wakes
    /// the flusher when records were placed meanwhile or the log is closing).
    private func flushTaken(_ groups: [PendingGroup], byCaller: Bool) throws {
        var nanos: Int64 = 0
        do {
            for write in Self.merged(groups) { nanos &+= try flush(write) }
        } catch {
            let failure = AeroError(.walFlushFailed, "WAL flush failed, the node must stop: \(error)", invariant: "F1")
            fail(failure)
            throw failure
        }
        let lone = groups.count == 1 && groups[0].firstLSN == groups[0].last.lsn
        if complete(through: groups[groups.count - 1].last, lone: lone, micros: Int(nanos / 1_000)) && byCaller { work.signal() }
    }

    /// Takes the pending group for a caller to flush itself: only when it is `lsn`'s alone (a
    /// single record, nothing else pending or waiting), no flush is running, no frame is being
    /// placed, and the last `callerFlushAfterLoneFlushes` flushes were lone commits too (commits
    /// come one at a time: under concurrency the flusher thread keeps every flush).
    private func takeLoneGroup(_ lsn: UInt64) -> PendingGroup? {
        state.withLock { s -> PendingGroup? in
            guard s.awaitingCaller, !s.flushing, !s.closed, s.failure == nil, s.held == nil, s.pending.count == 1,
                  s.pending[0].firstLSN == lsn, s.pending[0].last.lsn == lsn else { return nil }
            s.flushing = true
            s.awaitingCaller = false
            s.callerFlushes += 1
            return s.pending.removeFirst()
        }
    }

    /// Consecutive groups of one segment taken together become one write and one fdatasync
    /// (R2; WALFormat.swift, "merged writes"): a replica that fell behind flushes every primary
    /// batch waiting at once instead of one flush per batch. The records of each later group
    /// whose batch began after the write's first LSN are stamped with that first LSN, so none of
    /// them claims a durability that a torn write would not have.
    static func merged(_ groups: [PendingGroup]) -> [PendingGroup] {
        var writes: [PendingGroup] = []
        writes.reserveCapacity(1)
        for group in groups {
            // Taken out of the array while it grows: a run the array still referenced was copied
            // whole at every append (quadratic in the groups merged: a restore's backlog showed it).
            guard var run = writes.popLast() else {
                writes.append(group)
                continue
            }
            guard run.segment == group.segment, group.last.lsn - run.firstLSN <= WALFormat.mergedWriteSpanMax else {
                writes.append(run)
                writes.append(group)
                continue
            }
            // The group's copy of the tail block is the run's own last bytes: the run continues
            // exactly where the group's records begin.
            precondition(run.startOffset + run.bytes.count == group.startOffset + group.recordsStart,
                         "groups taken together are contiguous")
            var bytes = group.bytes
            if group.batchStart > run.firstLSN {
                var offset = group.recordsStart
                while offset < bytes.count { offset += WALFormat.stamp(&bytes, at: offset, writeStart: run.firstLSN) }
            }
            run.bytes.append(contentsOf: bytes[group.recordsStart...])
            run.last = group.last
            writes.append(run)
        }
        return writes
    }

    /// Writes one group durably; returns how long the write took (the flush-time metric, and
    /// `callerFlushMaxMicros`'s measure).
    private func flush(_ group: PendingGroup) throws -> Int64 {
        precondition(group.startOffset % WALFormat.blockBytes == 0, "WAL writes are block aligned")
        let handle = try handle(group.segment)
        let started = ContinuousClock.now
        // The group's bytes zero-padded to whole blocks, in the flusher's aligned buffer.
        let written = try writeBuffer.withPadded(group.bytes) { bytes in
            try engine.writeDurably(bytes, at: Int64(group.startOffset), to: handle,
                                    alone: group.last.lsn == group.firstLSN)  // one record: a lone commit
            return bytes.count
        }
        let nanos = KernelMetrics.nanos(since: started)
        KernelMetrics.walFsync.recordNanoseconds(nanos)
        KernelMetrics.walBytes.increment(by: Int64(written))
        return nanos
    }

    private func handle(_ index: UInt64) throws -> any FileHandle {
        if let h = handles.withLock({ $0[index] }) { return h }
        let h = try fileSystem.open(Path.join(options.directory, WALFormat.segmentName(index)), create: false)
        handles.withLock { all in
            for old in all.keys where old + 2 < index { all.removeValue(forKey: old)?.close() }
            all[index] = h
        }
        return h
    }

    /// Makes `position` durable, ends the flush, runs the durable handler and resumes the
    /// waiters. True when the flusher thread must look again: something is pending or the log is
    /// closing (it may have slept through a caller's flush).
    @discardableResult
    private func complete(through position: LogPosition, lone: Bool, micros: Int) -> Bool {
        let (handler, ready, more) = state.withLock { s -> ((@Sendable (UInt64) -> Void)?, [CheckedContinuation<Void, any Error>], Bool) in
            precondition(position.lsn > s.durable.lsn, "durability only moves forward")
            s.durable = position
            s.flushes += 1
            s.flushing = false
            s.loneFlushes = lone ? s.loneFlushes &+ 1 : 0
            s.lastFlushMicros = micros
            let ready = s.waiters.filter { $0.lsn <= position.lsn }.map(\.continuation)
            s.waiters.removeAll { $0.lsn <= position.lsn }
            return (s.handler, ready, !s.pending.isEmpty || s.closed)
        }
        handler?(position.lsn)
        for continuation in ready { continuation.resume() }
        return more
    }

    private func fail(_ failure: AeroError) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, any Error>] in
            s.failure = failure
            s.pending = []
            s.flushing = false  // a caller's failed flush: the flusher thread may still exit at close
            defer { s.waiters = [] }
            return s.waiters.map(\.continuation)
        }
        for continuation in waiters { continuation.resume(throwing: failure) }
    }

    /// Completed group commits (one write + one flush per segment touched); for tests and metrics.
    var flushCount: Int { state.withLock { $0.flushes } }

    /// Flushes a caller ran for its lone commit (`waitDurable`); for tests.
    var callerFlushCount: Int { state.withLock { $0.callerFlushes } }

    /// Nil while healthy; the fatal flush error once the log has failed (the node must exit).
    public var failure: AeroError? { state.withLock { $0.failure } }

    // MARK: Reads and recycling

    /// Durable records from `lsn` on, up to about `maxBytes` of payload (at least one record).
    /// Served from memory near the tail, from the segment files further back.
    public func read(from lsn: UInt64, maxBytes: Int) throws -> [WALRecord] {
        let (durable, segments, hint, cached) = state.withLock { s in
            (s.durable, s.segments, s.hints.last(where: { $0.lsn <= lsn }),
             s.recent.records(from: lsn, through: s.durable.lsn, maxBytes: maxBytes))
        }
        guard lsn <= durable.lsn else { return [] }
        if let cached { return cached }
        guard let first = segments.first, lsn >= first.firstLSN else {
            throw AeroError(.lsnUnavailable, "LSN \(lsn) is no longer in the WAL (oldest: \(segments.first?.firstLSN ?? 0))")
        }
        var segmentPosition = segments.lastIndex(where: { $0.firstLSN <= lsn })!
        var offset = WALFormat.segmentHeaderBytes
        if let hint, hint.segment == segments[segmentPosition].index { offset = hint.offset }
        var out: [WALRecord] = []
        var bytes = 0
        while segmentPosition < segments.count {
            let path = Path.join(options.directory, WALFormat.segmentName(segments[segmentPosition].index))
            var reader = SegmentReader(handle: try fileSystem.open(path, create: false), segmentBytes: options.segmentBytes,
                                       offset: offset)
            defer { reader.handle.close() }
            while let record = try reader.next() {
                if record.lsn > durable.lsn || (bytes >= maxBytes && !out.isEmpty) { return out }
                if record.lsn >= lsn { out.append(record); bytes += record.payload.count }
            }
            segmentPosition += 1
            offset = WALFormat.segmentHeaderBytes
        }
        return out
    }

    /// `read(from:maxBytes:)` when it needs no disk: the records kept in memory near the tail
    /// (`[]` past the durable end), nil when `lsn` is older than what is kept. For callers that
    /// must not block (an event loop); they take the disk path elsewhere on nil.
    public func readRecent(from lsn: UInt64, maxBytes: Int) -> [WALRecord]? {
        state.withLock { s in
            guard lsn <= s.durable.lsn else { return [] }
            return s.recent.records(from: lsn, through: s.durable.lsn, maxBytes: maxBytes)
        }
    }

    /// Whether records of `bytes` encoded bytes in all (`WALFormat.aligned` sizes) can be placed
    /// now without waiting: they fit in the tail segment, or they fit in one fresh segment whose
    /// spare is ready. False when placing them would wait for a spare's preallocation or do it
    /// (a zero-fill of a whole segment). Exact for a single writer (a replica's apply): nothing
    /// else changes the tail or makes the spare unready between this and the placements.
    public func placesWithoutWaiting(bytes: Int) -> Bool {
        state.withLock { s in
            if s.tail.offset + bytes <= options.segmentBytes { return true }
            guard case .ready = s.spare else { return false }
            return bytes <= options.segmentBytes - WALFormat.segmentHeaderBytes
        }
    }

    /// The position of the durable record at `lsn` (origin for 0); nil when `lsn` is past the
    /// durable end. Throws AERO_WAL_LSN_UNAVAILABLE when it was recycled.
    public func position(at lsn: UInt64) throws -> LogPosition? {
        if lsn == 0 { return .origin }
        guard let record = try read(from: lsn, maxBytes: 1).first else { return nil }
        precondition(record.lsn == lsn, "reads start at the asked LSN")
        return record.position
    }

    /// The first LSN of every segment file, oldest first (the WAL archiver's segment boundaries).
    public var segmentFirstLSNs: [UInt64] { state.withLock { $0.segments.map(\.firstLSN) } }

    /// The oldest LSN still in the segment files.
    public var oldestLSN: UInt64 { state.withLock { $0.segments.first?.firstLSN ?? ($0.last.lsn + 1) } }

    /// Removes segments whose records are all <= `lsn` (never the segment being written). With
    /// `retainFrom`, segments holding records >= it are kept too, at most `extraMax` of them
    /// (a connected replica still reading them).
    public func recycle(through lsn: UInt64, retainFrom floor: UInt64? = nil,
                        extraMax: Int = KernelLimits.walSegmentsRetainedForReplicasMax) throws {
        let obsolete = state.withLock { s -> [UInt64] in
            var out: [UInt64] = []
            for (i, segment) in s.segments.enumerated().dropLast() where s.segments[i + 1].firstLSN <= lsn + 1 {
                out.append(segment.index)
            }
            guard let floor else { return out }
            let needed = out.filter { index in
                let i = s.segments.firstIndex { $0.index == index }!
                return s.segments[i + 1].firstLSN > floor
            }
            let kept = Set(needed.suffix(extraMax))
            return out.filter { !kept.contains($0) }
        }
        guard !obsolete.isEmpty else { return }
        // The newest obsolete segments are kept as future spares (R3), up to the bound.
        let room = max(0, KernelLimits.walRecycledSegmentsMax - state.withLock { $0.recycled.count })
        let keep = Set(obsolete.suffix(room))
        for index in obsolete {
            handles.withLock { $0.removeValue(forKey: index)?.close() }
            let path = Path.join(options.directory, WALFormat.segmentName(index))
            if keep.contains(index) {
                try fileSystem.rename(path, Path.join(options.directory, WALFormat.recycledName(index)))
            } else {
                try fileSystem.remove(path)
            }
        }
        try fileSystem.syncDirectory(options.directory)
        state.withLock { s in
            s.segments.removeAll { obsolete.contains($0.index) }
            s.hints.removeAll { obsolete.contains($0.segment) }
            if let oldest = s.segments.first?.firstLSN { s.recent.drop(below: oldest) }
            s.recycled += keep.sorted()
        }
    }

    /// Spares made from recycled segments and by zero-fill since open (R3; tests and metrics).
    public var spareCounts: (reused: Int, zeroFilled: Int) { state.withLock { ($0.sparesReused, $0.sparesZeroFilled) } }

    /// Flushes what is pending, stops the flusher and closes the files.
    public func close() {
        let alreadyClosed = state.withLock { s in
            defer { s.closed = true }
            return s.closed
        }
        guard !alreadyClosed else { return }
        work.signal()
        flusherExited.wait()
        let stranded = state.withLock { s in
            defer { s.waiters = [] }
            return s.waiters.map(\.continuation)
        }
        for continuation in stranded { continuation.resume(throwing: AeroError(.walClosed, "the WAL is closed")) }
        // A background zero-fill sees `closed` before its next chunk, removes its partial file
        // and ends; a recycled rename or a finished fill registered its handle, closed below.
        spareRunning.wait()
        handles.withLock { all in
            for h in all.values { h.close() }
            all = [:]
        }
    }
}

/// What a background zero-fill does after a chunk: go on, pause (the spare is not needed
/// soon), or stop (the log closed: the partial file is removed, the spare is not made).
enum SpareFillPace { case go, pause, stop }

/// A background zero-fill stopped by the log's close (not a failure: nothing was written that
/// any record refers to, and the partial file is removed).
struct SpareFillStopped: Error {}

/// Pins the WAL flusher to NUMA node 0 on machines with several nodes, so its buffers and the
/// thread stay together; a no-op on single-node machines.
enum NUMAPlacement {
    static func pinCurrentThread() {
        guard numa_available() >= 0, numa_max_node() > 0 else { return }
        _ = numa_run_on_node(0)
        numa_set_preferred(0)
    }
}

/// Records placed recently, oldest first, bounded by payload bytes.
struct RecentRecords {
    private var records: [WALRecord] = []
    private var start = 0
    private var bytes = 0

    mutating func append(_ record: WALRecord) {
        records.append(record)
        bytes += record.payload.count + WALFormat.recordHeaderBytes
        while bytes > WriteAheadLog.recentRecordsBytesMax && start < records.count - 1 {
            bytes -= records[start].payload.count + WALFormat.recordHeaderBytes
            start += 1
        }
        if start > 4096 && start * 2 > records.count {
            records.removeFirst(start)
            start = 0
        }
    }

    /// Forgets records below `lsn` (their segments were recycled: reads must not serve them).
    mutating func drop(below lsn: UInt64) {
        while start < records.count && records[start].lsn < lsn {
            bytes -= records[start].payload.count + WALFormat.recordHeaderBytes
            start += 1
        }
    }

    /// Records `lsn...through`, at least one, up to about `maxBytes`; nil when `lsn` is older
    /// than what is kept (the caller reads the disk).
    func records(from lsn: UInt64, through last: UInt64, maxBytes: Int) -> [WALRecord]? {
        guard start < records.count, lsn >= records[start].lsn else { return nil }
        // `lsn` may come from a peer or a client (any u64): past the end there is nothing, and
        // the distance below then fits an Int.
        guard lsn <= last, lsn - records[start].lsn < UInt64(records.count - start) else { return [] }
        let first = start + Int(lsn - records[start].lsn)
        guard first < records.count else { return [] }
        precondition(records[first].lsn == lsn, "recent records are consecutive")
        var out: [WALRecord] = []
        var size = 0
        var i = first
        while i < records.count && records[i].lsn <= last && (size < maxBytes || out.isEmpty) {
            out.append(records[i])
            size += records[i].payload.count
            i += 1
        }
        return out
    }
}

/// Reads the records of one segment file sequentially from an offset, in chunks, so a reader
/// far behind the tail never loads a whole segment to get at a few records.
struct SegmentReader {
    /// Bytes read at a time; doubled when one record does not fit.
    static let chunkBytes = 1 << 20
    let handle: any FileHandle
    let segmentBytes: Int
    private var chunk: [UInt8] = []
    private var chunkStart: Int
    /// Where the next record starts.
    private(set) var offset: Int
    private var reachedEnd = false
    /// The LSN of the record returned last: the next must be the one after it (what follows the
    /// written part of a recycled segment are stale records of lower LSNs, R3).
    private var lastLSN: UInt64?

    init(handle: any FileHandle, segmentBytes: Int, offset: Int) {
        self.handle = handle
        self.segmentBytes = segmentBytes
        self.chunkStart = offset
        self.offset = offset
    }

    /// The next record valid on its own, or nil at the end of the written part.
    mutating func next() throws -> WALRecord? {
        var want = Self.chunkBytes
        while offset + WALFormat.recordHeaderBytes <= segmentBytes {
            let relative = offset - chunkStart
            if relative >= 0 && relative + WALFormat.recordHeaderBytes <= chunk.count {
                switch chunk.withUnsafeBytes({ WALFormat.decodeRecord($0, at: relative) }) {
                case .record(let record, let size):
                    if let lastLSN, record.lsn != lastLSN + 1 { return nil }
                    lastLSN = record.lsn
                    offset += size
                    return record
                case .empty:
                    return nil
                case .invalid:
                    // Either the end of the written part, or a record cut off by the chunk.
                    if reachedEnd { return nil }
                    if relative == 0 { want = chunk.count * 2 }
                }
            }
            chunkStart = offset
            let count = min(want, segmentBytes - offset)
            chunk = try handle.read(at: Int64(offset), count: count)
            reachedEnd = chunk.count < count || offset + count >= segmentBytes
            if chunk.count < WALFormat.recordHeaderBytes { return nil }
        }
        return nil
    }
}
