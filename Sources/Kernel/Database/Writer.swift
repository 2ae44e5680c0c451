// The single writer (SPEC §3.3): validates and applies transactions in LSN order against the
// head state (which includes commits still waiting for their flush), appends their records to
// the WAL and hands states to Visibility. A mutex serializes commits: every step is synchronous
// and short (no I/O: the WAL only places the record), and a mutex costs far less than an actor
// hop per commit. It never waits for a flush, so concurrent commits pile into one group commit.
//
// Sealing (issue 19: copying each commit's B-tree path and freeing the old one was a quarter of
// `commit_32w`'s CPU). A local commit changes the head state in place: its transaction is built
// on the head itself, not on a copy, and a transaction that fails after changing it is reverted
// change by change (`DatabaseState.revert`, C1). The head is handed to Visibility (sealed) only
// when the WAL takes records for a flush (`sealing`, the WAL's sealer): while the head is shared
// with nothing, the next commit changes its tree in place; after a seal, the first change to a
// node copies it (copy on write, MVCC), so a node is copied once per flush, not once per commit.
// Invariants:
// - Every local record the WAL takes for a flush has its state sealed first, under this lock: a
//   flush through LSN n always has a pending state at n to publish (D1: published only once durable).
// - A sealed (or published) state is never changed: only the unshared head is changed in place.
// - Replicated records seal at every primary batch end as before (`replicate`); schema changes and
//   epoch records seal as they are placed.

import Synchronization

final class Writer: Sendable {
    private let state: Mutex<WriterState>
    private let sinceCheckpoint: CheckpointCounter

    init(head: DatabaseState, wal: WriteAheadLog, visibility: Visibility, options: KernelOptions) {
        sinceCheckpoint = CheckpointCounter(every: options.checkpointEveryWALBytes)
        state = Mutex(WriterState(head: head, wal: wal, visibility: visibility, options: options, sinceCheckpoint: sinceCheckpoint))
    }

    /// `query`: the limits in effect (update/delete by filter are bounded by them); nil: the options'.
    func commit(_ operations: [WriteOperation], check: (any ChangeCheck)? = nil, query: QueryOptions? = nil) throws -> (UInt64, [DocumentChange]) {
        try state.withLock { try $0.commit(operations, check: check, query: query) }
    }

    /// The WAL's sealer: seals the head, then runs `take` (the WAL taking records for a flush)
    /// under this lock, so no record is placed between the seal and the take.
    func sealing(_ take: () -> Void) {
        state.withLock { s in
            s.seal()
            take()
        }
    }

    func changeSchema(_ make: (DatabaseState) throws -> SchemaChange) throws -> UInt64 {
        try state.withLock { try $0.changeSchema(make) }
    }

    func openEpoch(_ epoch: UInt64) throws -> UInt64 {
        try state.withLock { try $0.openEpoch(epoch) }
    }

    /// Appends records received from the primary (a replica's only writes); returns the last LSN.
    func replicate(_ records: [WALRecord]) throws -> UInt64 {
        try state.withLock { try $0.replicate(records) }
    }

    /// Whether local commits are accepted: true on a primary, false on a replica or a fenced
    /// node. Changing it under the writer's lock means no local commit starts after it returns.
    func setAcceptsWrites(_ accepts: Bool, reason: AeroError?) {
        state.withLock { s in
            s.refusal = accepts ? nil : (reason ?? AeroError(.notPrimary, "this node does not accept writes", invariant: "A1"))
        }
    }

    var acceptsWrites: Bool { state.withLock { $0.refusal == nil } }

    /// True (once) when enough WAL was written since the last checkpoint to start another.
    /// Asked after every commit, so it does not take the writer's lock.
    func checkpointDue() -> Bool { sinceCheckpoint.takeDue() }

    func checkpointStarted() { sinceCheckpoint.reset() }
}

/// Payload bytes appended since the last checkpoint started (drives automatic checkpoints):
/// added by the writer under its lock, read and reset by committers without it (a commit asked
/// the writer's lock a second time for this, and under 32 writers that wait was 3% of the CPU).
final class CheckpointCounter: Sendable {
    private let bytes = Atomic<Int>(0)
    /// `KernelOptions.checkpointEveryWALBytes`; 0: no automatic checkpoints.
    let every: Int

    init(every: Int) { self.every = every }

    func add(_ count: Int) { bytes.wrappingAdd(count, ordering: .relaxed) }

    /// True for one caller once `every` bytes were added since the last reset; resets then.
    func takeDue() -> Bool {
        guard every > 0 else { return false }
        var seen = bytes.load(ordering: .relaxed)
        while seen >= every {
            let (taken, now) = bytes.compareExchange(expected: seen, desired: 0, ordering: .relaxed)
            if taken { return true }
            seen = now
        }
        return false
    }

    func reset() { bytes.store(0, ordering: .relaxed) }
}

struct WriterState: ~Copyable {
    private var head: DatabaseState
    /// The LSN of the last state handed to Visibility (sealed); the head is past it while local
    /// commits wait for the WAL's next take.
    private var sealedLSN: UInt64
    private let wal: WriteAheadLog
    private let visibility: Visibility
    let options: KernelOptions
    private let sinceCheckpoint: CheckpointCounter
    /// Why local writes are refused (a replica, a fenced or draining primary); nil when accepted.
    var refusal: AeroError?

    init(head: DatabaseState, wal: WriteAheadLog, visibility: Visibility, options: KernelOptions, sinceCheckpoint: CheckpointCounter) {
        self.head = head
        self.sealedLSN = head.lsn  // Visibility starts with it published
        self.wal = wal
        self.visibility = visibility
        self.options = options
        self.sinceCheckpoint = sinceCheckpoint
    }

    mutating func commit(_ operations: [WriteOperation], check: (any ChangeCheck)?, query: QueryOptions?) throws -> (UInt64, [DocumentChange]) {
        if let refusal { throw refusal }
        let bytesBefore = head.memoryBytes
        // Built on the head itself, moved out (not shared: changed in place unless sealed).
        var builder = TransactionBuilder(state: head.moveOut(), clock: options.clock, queryOptions: query ?? options.query)
        do {
            for operation in operations { try builder.apply(operation) }
            guard !builder.changes.isEmpty else {  // nothing changed: nothing to log
                head = builder.finish()
                return (head.lsn, [])
            }
            if let check { for change in builder.changes { try check.check(change) } }
            try checkMemory(builder.state, before: bytesBefore)
            let payload = builder.takePayload()  // encoded and size-checked change by change (TransactionBuilder.record)
            let position = try place(type: .transaction, epoch: builder.state.epoch, payload: payload, after: builder.state.lsn)
            let changes = builder.changes
            install(builder.finish(), at: position, payloadBytes: payload.count, seal: false)
            return (head.lsn, changes)
        } catch {
            head = builder.revert()  // C1: nothing of a refused transaction stays
            throw error
        }
    }

    /// Hands the head to Visibility unless it was handed already (the WAL is about to take
    /// records through it for a flush).
    mutating func seal() {
        guard head.lsn > sealedLSN else { return }
        visibility.enqueue(head)
        sealedLSN = head.lsn
    }

    /// Applies a schema change computed from the head state, as one WAL transaction.
    mutating func changeSchema(_ make: (DatabaseState) throws -> SchemaChange) throws -> UInt64 {
        if let refusal { throw refusal }
        let change = try make(head)
        var next = head
        try next.apply(change)
        try append(next, type: .schema, payload: TransactionRecord.encode(change), seal: true)
        return head.lsn
    }

    /// Writes the record opening an epoch (a new database starts epoch 1).
    mutating func openEpoch(_ epoch: UInt64) throws -> UInt64 {
        precondition(epoch > head.epoch, "epochs only move forward")
        var next = head
        next.epoch = epoch
        try append(next, type: .epoch, payload: TransactionRecord.encodeEpoch(epoch), seal: true)
        return head.lsn
    }

    /// Applies and logs the primary's records byte for byte, in order (P1). A record of a lower
    /// epoch than the log already holds is refused (A2); nothing after a refused record changes.
    /// Only the state at the end of each primary batch (and of the frame) waits for visibility:
    /// the WAL flushes whole batches (a group never mixes two, and a frame is placed whole), so
    /// durability lands there. Intermediate states are released here, as the next one replaces
    /// them, not kept for the flusher's thread to free when it publishes.
    mutating func replicate(_ records: [WALRecord]) throws -> UInt64 {
        // The last placed state, until it is enqueued: a record refused mid-batch still leaves
        // the ones placed before it to be published once flushed.
        var placed: DatabaseState?
        defer {
            if let placed {
                visibility.enqueue(placed)
                sealedLSN = placed.lsn
            }
        }
        for (i, record) in records.enumerated() {
            guard record.epoch >= head.epoch else {
                throw AeroError(.replicationRefused, "record \(record.lsn) is of epoch \(record.epoch), below this log's epoch \(head.epoch)", invariant: "A2")
            }
            var next = head
            try next.replay(record)
            let position = try wal.appendReplicated(record)
            precondition(position == record.position, "a replicated record keeps its position")
            head = next
            sinceCheckpoint.add(record.payload.count)
            placed = next
            if i == records.count - 1 || records[i + 1].batchStart != record.batchStart {
                visibility.enqueue(next)
                sealedLSN = next.lsn
                placed = nil
            }
        }
        return head.lsn
    }

    /// `before`: the head's bytes before the transaction (a write that does not grow the
    /// database is always allowed).
    private func checkMemory(_ next: DatabaseState, before: Int) throws {
        let bytes = next.memoryBytes
        guard bytes <= options.memoryBytesMax || bytes <= before else {
            throw AeroError(.memoryLimit, "this write would take the database to \(bytes) bytes, over the memory limit of \(options.memoryBytesMax) bytes; delete data or raise memory_bytes_max")
        }
    }

    /// Places `next`'s record and makes `next` the head; `seal`: hands it to Visibility at once
    /// (else the WAL's next take does, `seal()`). Throws with nothing placed and the head unchanged.
    private mutating func append(_ next: DatabaseState, type: RecordType, payload: [UInt8], seal: Bool) throws {
        let position = try place(type: type, epoch: next.epoch, payload: payload, after: next.lsn)
        install(next, at: position, payloadBytes: payload.count, seal: seal)
    }

    /// Places a local record after the one at `lsn` (the head's); nothing is placed on a throw.
    private func place(type: RecordType, epoch: UInt64, payload: [UInt8], after lsn: UInt64) throws -> LogPosition {
        // Every local record is waited for by `Database` right after (`waitVisible`).
        let position = try wal.append(type: type, epoch: epoch, timestampMicros: options.clock.nowMicros(),
                                      payload: payload, callerWaits: true)
        precondition(position.lsn == lsn + 1, "the WAL assigns the next LSN to the single writer")
        return position
    }

    /// Makes `next`, whose record was placed at `position`, the head.
    private mutating func install(_ next: DatabaseState, at position: LogPosition, payloadBytes: Int, seal: Bool) {
        var committed = next
        committed.position = position
        committed.epochHistory.extend(epoch: next.epoch, at: position.lsn)  // a new epoch's first record
        head = committed
        sinceCheckpoint.add(payloadBytes)
        if seal { self.seal() }
    }
}
