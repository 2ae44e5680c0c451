// The kernel's facade: open (recover), commit, read snapshots, checkpoint, stream changes.
//
// Guarantees kept here (SPEC §7): D1 (commit returns only after the WAL flush of its record),
// R1 (open = newest valid checkpoint + replay of the WAL after it, in order), C1 (a transaction
// is one record, applied whole or not at all), S1 (the writer validates every write),
// P2 (every read runs on a snapshot and reports its LSN).

import Synchronization

/// What a commit waits for after its local flush and before it is acknowledged (the
/// replication layer's replica flushes in `sync`/`all` mode). Throwing makes the commit's
/// outcome an error (in doubt): it is durable here but not acknowledged.
public protocol CommitGate: Sendable {
    func wait(_ lsn: UInt64) async throws
}

/// The oldest LSN a connected replica still needs from this node's WAL (nil when none): the
/// WAL keeps those segments past its checkpoints, within a bound (SPEC §3.5).
public protocol RetentionFloor: Sendable {
    var lsn: UInt64? { get }
}

/// Shared by the database and its checkpoint runner.
final class RetentionSetting: Sendable {
    private let floor = Mutex<(any RetentionFloor)?>(nil)
    func set(_ value: (any RetentionFloor)?) { floor.withLock { $0 = value } }
    /// B5 (Kernel/Backup/BackupHolds.swift): the WAL running online backups still read.
    let backups: BackupHolds
    init(clock: any KernelClock) { backups = BackupHolds(clock: clock) }
    /// The lowest of the replicas' floor and the backups' holds.
    var lsn: UInt64? {
        let replicas = floor.withLock { $0 }?.lsn
        guard let held = backups.floor else { return replicas }
        return min(replicas ?? held, held)
    }
    /// WA3 (Kernel/Backup/Archive.swift): the last LSN the WAL archive holds; segments with
    /// records after it are never recycled (nil: no archive on this node).
    private let archive = Mutex<(any RetentionFloor)?>(nil)
    func setArchive(_ value: (any RetentionFloor)?) { archive.withLock { $0 = value } }
    var archivedLSN: UInt64? { archive.withLock { $0 }?.lsn }
}

public final class Database: Sendable {
    public let options: KernelOptions
    public let openReport: OpenReport
    private let visibility: Visibility
    private let store: CheckpointStore
    /// The log and its writer. Replaced only when a replica installs a checkpoint shipped by the
    /// primary (`install(checkpoint:)`); every other method reads it once per call.
    private let core: Mutex<Core>
    /// Called after a commit is durable here and before it is acknowledged: the replication
    /// layer waits there for replica flushes (`sync`, `all` commit modes).
    private let commitGate = Mutex<(any CommitGate)?>(nil)
    private let retention: RetentionSetting
    /// The query limits in effect (Q1): `options.query` until the node's cluster settings set
    /// others (`query.*` in `_settings`); read by every snapshot and commit.
    private let queryLimits: Mutex<QueryOptions>
    /// The committed-transaction stream all subscribers read (ChangeHub.swift).
    private let hub: ChangeHub
    /// Local commits between their entry into `commit` and their return (`othersMayCommit`).
    private let committing = Atomic<Int>(0)
    /// Commits in a row that found themselves alone and flushed without yielding.
    private let aloneWithoutYield = Atomic<Int>(0)
    /// A commit alone yields (lets others place theirs) once per this many (`othersMayCommit`).
    static let aloneCommitsPerYield = 8

    private struct Core: Sendable {
        let wal: WriteAheadLog
        let writer: Writer
        let checkpointRunner: CheckpointRunner
    }

    private var wal: WriteAheadLog { core.withLock { $0.wal } }
    private var writer: Writer { core.withLock { $0.writer } }
    private var checkpointRunner: CheckpointRunner { core.withLock { $0.checkpointRunner } }
    /// The WAL's flushes so far, and those a committer did itself (tests of group commit).
    var walFlushes: (all: Int, byCallers: Int) { let wal = wal; return (wal.flushCount, wal.callerFlushCount) }

    /// Marks a replica's checkpoint installation in progress: a node that finds it at open
    /// discards the partial state and starts empty (the primary ships the checkpoint again).
    static let installPendingFile = "install.pending"

    private init(options: KernelOptions, wal: WriteAheadLog, state: DatabaseState, report: OpenReport,
                 store: CheckpointStore, lastCheckpointLSN: UInt64?) {
        self.options = options
        self.queryLimits = Mutex(options.query)
        self.openReport = report
        self.store = store
        self.retention = RetentionSetting(clock: options.clock)
        self.visibility = Visibility(initial: state)
        self.hub = ChangeHub(visible: state.lsn)
        self.core = Mutex(Self.makeCore(wal: wal, state: state, visibility: visibility, hub: hub, options: options,
                                        store: store, lastCheckpointLSN: lastCheckpointLSN, retention: retention))
    }

    private static func makeCore(wal: WriteAheadLog, state: DatabaseState, visibility: Visibility, hub: ChangeHub, options: KernelOptions,
                                 store: CheckpointStore, lastCheckpointLSN: UInt64?, retention: RetentionSetting) -> Core {
        let writer = Writer(head: state, wal: wal, visibility: visibility, options: options)
        if options.role == .replica {
            writer.setAcceptsWrites(false, reason: AeroError(.notPrimary, "this node is a replica", invariant: "A1"))
        }
        wal.setDurableHandler { lsn in
            visibility.publish(through: lsn)
            hub.visibleAdvanced(to: visibility.current.lsn)
        }
        // The WAL takes local records for a flush only inside the writer's seal (Writer.swift,
        // "Sealing"). Weak: the writer holds the log.
        wal.setSealer { [weak writer] take in
            guard let writer else { return take() }
            writer.sealing(take)
        }
        return Core(wal: wal, writer: writer,
                    checkpointRunner: CheckpointRunner(store: store, wal: wal, lastLSN: lastCheckpointLSN, retention: retention))
    }

    private var walOptions: WALOptions { options.walOptions }

    // MARK: Open and recovery

    public static func open(_ options: KernelOptions) async throws -> Database {
        let started = options.clock.monotonicNanos()
        let fs = options.fileSystem
        if !fs.exists(options.dataDirectory) {
            try fs.makeDirectory(options.dataDirectory)
            try fs.syncDirectory(Path.parent(of: options.dataDirectory))
        }
        let store = CheckpointStore(fileSystem: fs, directory: options.checkpointDirectory)
        try store.prepare()
        try discardInterruptedInstall(options, store)
        let loaded = try store.loadNewest()
        var state = loaded?.state ?? .empty
        let walOptions = options.walOptions
        var replayed = 0
        // The log is scanned and payloads are decoded on other threads, a few records ahead;
        // records are applied here, in LSN order (RecoveryPipeline).
        let (wal, walReport) = try WriteAheadLog.open(fileSystem: fs, options: walOptions,
                                                      after: loaded.map { $0.state.position },
                                                      prepare: { try DatabaseState.decode($0) }) { record, decoded in
            try state.replay(record, decoded: decoded)
            replayed += 1
        }
        let report = OpenReport(checkpointFile: loaded?.file, skippedCheckpoints: loaded?.skipped ?? [],
                                recordsReplayed: replayed, wal: walReport,
                                elapsedNanos: options.clock.monotonicNanos() - started)
        let database = Database(options: options, wal: wal, state: state, report: report, store: store,
                                lastCheckpointLSN: loaded?.state.lsn)
        if state.epoch == 0 && options.role == .primary {
            // A new database opens epoch 1 with an epoch record, like every later epoch (SPEC §4).
            let lsn = try database.writer.openEpoch(1)
            try await database.waitLocallyDurable(lsn)
        }
        return database
    }

    /// A crash in the middle of `install(checkpoint:)` left a partial state: remove it, so the
    /// node starts empty and the primary ships its checkpoint again (only replicas install).
    private static func discardInterruptedInstall(_ options: KernelOptions, _ store: CheckpointStore) throws {
        let fs = options.fileSystem
        let marker = Path.join(options.dataDirectory, installPendingFile)
        // A crash while the marker itself was written leaves only its temp file: the install had
        // not started (the marker comes first), so the temp file is all there is to remove.
        if fs.exists(marker + ".tmp") { try fs.remove(marker + ".tmp") }
        guard fs.exists(marker) else { return }
        try removeLogAndCheckpoints(options, store)
        try fs.remove(marker)
        try fs.syncDirectory(options.dataDirectory)
    }

    private static func removeLogAndCheckpoints(_ options: KernelOptions, _ store: CheckpointStore) throws {
        let fs = options.fileSystem
        if fs.exists(options.walDirectory) {
            for name in try fs.list(options.walDirectory) { try fs.remove(Path.join(options.walDirectory, name)) }
            try fs.syncDirectory(options.walDirectory)
        }
        for lsn in try store.list() { try fs.remove(Path.join(options.checkpointDirectory, CheckpointFile.fileName(lsn: lsn))) }
        try fs.syncDirectory(options.checkpointDirectory)
    }

    // MARK: Writes

    /// Parses and commits `{"ops":[...]}`; returns once the record is durable (D1) and visible.
    public func commit(_ request: JSONValue) async throws -> CommitResult {
        try await commit(try WriteOperation.parseList(request))
    }

    /// `check` (if any) sees every change before the record is written and may refuse the
    /// transaction (row-level-security `with check` conditions).
    public func commit(_ operations: [WriteOperation], check: (any ChangeCheck)? = nil) async throws -> CommitResult {
        let started = ContinuousClock.now
        committing.wrappingAdd(1, ordering: .relaxed)
        defer { committing.wrappingSubtract(1, ordering: .relaxed) }
        let (lsn, changes) = try writer.commit(operations, check: check, query: queryOptions)
        try await waitVisible(lsn, othersCommitting: othersMayCommit())
        KernelMetrics.commit.recordNanoseconds(KernelMetrics.nanos(since: started))
        KernelMetrics.commits.increment()
        checkpointIfDue()
        return CommitResult(lsn: lsn, changes: changes)
    }

    public func createCollection(_ schemaJSON: JSONValue) async throws -> (CollectionSchema, lsn: UInt64) {
        let schema = try CollectionSchema.parse(schemaJSON)
        let lsn = try writer.changeSchema { head in
            guard head.collections.count < KernelLimits.collectionsMax else {
                throw AeroError(.schemaInvalid, "at most \(KernelLimits.collectionsMax) collections")
            }
            guard head.collections[schema.name] == nil else {
                throw AeroError(.collectionExists, "collection \(schema.name) already exists")
            }
            try Self.checkReferenceTargets(schema, in: head)
            return .create(schema)
        }
        try await waitVisible(lsn)
        return (schema, lsn)
    }

    public func dropCollection(_ name: String) async throws -> UInt64 {
        let lsn = try writer.changeSchema { head in
            _ = try head.collection(name)
            for other in head.collections.values where other.schema.name != name {
                for (field, spec) in other.schema.fields where spec.references?.collection == name {
                    throw AeroError(.referenceViolation, "collection \(name) is referenced by \(other.schema.name).\(field); drop that first")
                }
            }
            return .drop(name)
        }
        try await waitVisible(lsn)
        return lsn
    }

    /// Adds an index (`{"fields":[...],"unique":..,"type":..,"name":..}`); builds it as one transaction.
    public func addIndex(collection: String, _ indexJSON: JSONValue) async throws -> (IndexSchema, lsn: UInt64) {
        let box = Mutex<IndexSchema?>(nil)
        let lsn = try writer.changeSchema { head in
            let schema = try head.collection(collection).schema
            let index = try CollectionSchema.parseIndex(indexJSON, collection: collection, fields: schema.fields)
            guard schema.index(named: index.name) == nil else {
                throw AeroError(.indexExists, "index \(index.name) already exists on \(collection)")
            }
            guard schema.indexes.count < KernelLimits.indexesPerCollectionMax else {
                throw AeroError(.schemaInvalid, "at most \(KernelLimits.indexesPerCollectionMax) indexes per collection")
            }
            box.withLock { $0 = index }
            return .replace(CollectionSchema(name: schema.name, primaryKey: schema.primaryKey, fields: schema.fields,
                                             indexes: schema.indexes + [index]))
        }
        try await waitVisible(lsn)
        return (box.withLock { $0! }, lsn)
    }

    public func dropIndex(collection: String, name: String) async throws -> UInt64 {
        let lsn = try writer.changeSchema { head in
            let schema = try head.collection(collection).schema
            guard schema.index(named: name) != nil else {
                throw AeroError(.indexNotFound, "no index \(name) on \(collection)")
            }
            return .replace(CollectionSchema(name: schema.name, primaryKey: schema.primaryKey, fields: schema.fields,
                                             indexes: schema.indexes.filter { $0.name != name }))
        }
        try await waitVisible(lsn)
        return lsn
    }

    /// Adds a field (`{"name":"x","type":"int","nullable":true,"default":..}`); existing documents
    /// get its default (resolved once, now) or null, so the field must be nullable or have a default.
    public func addField(collection: String, _ fieldJSON: JSONValue) async throws -> (FieldSchema, lsn: UInt64) {
        guard case .object(var spec) = fieldJSON, case .string(let name)? = spec.removeValue(forKey: "name") else {
            throw AeroError(.schemaInvalid, "a field is {\"name\":\"...\",\"type\":\"...\", ...}")
        }
        try CollectionSchema.validateName(name, what: "field name")
        let field = try CollectionSchema.parseField(name, .object(spec), isPrimaryKey: false)
        let clock = options.clock
        let lsn = try writer.changeSchema { head in
            let schema = try head.collection(collection).schema
            guard schema.fields[name] == nil else { throw AeroError(.schemaInvalid, "\(collection) already has a field \(name)") }
            guard schema.fields.count < KernelLimits.fieldsPerCollectionMax else {
                throw AeroError(.schemaInvalid, "at most \(KernelLimits.fieldsPerCollectionMax) fields per collection")
            }
            guard field.nullable || field.defaultValue != nil else {
                throw AeroError(.schemaInvalid, "a field added to existing documents must be nullable or have a default")
            }
            var extended = schema.fields
            extended[name] = field
            try Self.checkReferenceTargets(CollectionSchema(name: schema.name, primaryKey: schema.primaryKey,
                                                            fields: extended, indexes: schema.indexes), in: head)
            let fill = try field.defaultValue.map { try FieldValidator.normalize(FieldValidator.resolve($0, clock: clock),
                                                                                  as: field.type, field: name) } ?? .null
            if field.references != nil && !fill.isNull {
                throw AeroError(.schemaInvalid, "a reference field added to existing documents cannot have a default")
            }
            return .addField(collection: collection, name: name, field: field, fill: fill)
        }
        try await waitVisible(lsn)
        return (field, lsn)
    }

    /// Drops a field that is neither the primary key nor part of an index.
    public func dropField(collection: String, name: String) async throws -> UInt64 {
        let lsn = try writer.changeSchema { head in
            let schema = try head.collection(collection).schema
            guard schema.fields[name] != nil else { throw AeroError(.schemaInvalid, "\(collection) has no field \(name)") }
            guard name != schema.primaryKey else { throw AeroError(.schemaInvalid, "the primary key cannot be dropped") }
            if let index = schema.indexes.first(where: { $0.fields.contains { $0 == name || (try? FieldPath(parsing: $0))?.column == name } }) {
                throw AeroError(.schemaInvalid, "field \(name) is part of index \(index.name); drop the index first")
            }
            return .dropField(collection: collection, name: name)
        }
        try await waitVisible(lsn)
        return lsn
    }

    private static func checkReferenceTargets(_ schema: CollectionSchema, in head: DatabaseState) throws {
        for (field, spec) in schema.fields {
            guard let reference = spec.references else { continue }
            let target = reference.collection == schema.name ? schema : try head.collection(reference.collection).schema
            let keyType = target.fields[target.primaryKey]!.type
            guard spec.type == keyType else {
                throw AeroError(.schemaInvalid, "\(schema.name).\(field) is \(spec.type) but references \(target.name).\(target.primaryKey) of type \(keyType)")
            }
        }
    }

    /// Whether a commit about to wait for its flush should first let other commits place theirs
    /// (`WriteAheadLog.waitDurable` yields then). True when another commit is in progress. When
    /// none is, yielding would only cost a thread hand-off, but tasks queued on a busy pool
    /// behind this one have not entered `commit` yet and are not counted: a task that never
    /// suspended would keep them out and flush alone every time. So a commit alone still yields
    /// once per `aloneCommitsPerYield`, which lets them in (CommitFlushTests).
    private func othersMayCommit() -> Bool {
        if committing.load(ordering: .relaxed) > 1 { return true }
        guard aloneWithoutYield.wrappingAdd(1, ordering: .relaxed).newValue >= Self.aloneCommitsPerYield else { return false }
        aloneWithoutYield.store(0, ordering: .relaxed)
        return true
    }

    /// Durable here, visible, and through the commit gate (replica flushes in `sync` mode).
    private func waitVisible(_ lsn: UInt64, othersCommitting: Bool = true) async throws {
        try await waitLocallyDurable(lsn, othersCommitting: othersCommitting)
        if let gate = commitGate.withLock({ $0 }) {
            try await gate.wait(lsn)
            hub.acknowledged(through: lsn)
        }
    }

    private func waitLocallyDurable(_ lsn: UInt64, othersCommitting: Bool = true) async throws {
        try await wal.waitDurable(lsn, othersCommitting: othersCommitting)
        visibility.publish(through: lsn)
        hub.visibleAdvanced(to: visibility.current.lsn)
    }

    /// Opens `epoch` with an epoch record when the database is behind it (the authority
    /// marker names a newer epoch than the log has seen). Never moves backwards. Returns the
    /// position of the last record before the epoch record (the fork point of a promotion).
    @discardableResult
    public func advanceEpoch(to epoch: UInt64) async throws -> LogPosition {
        let before = visibility.current.position
        guard visibility.current.epoch < epoch else { return before }
        let lsn = try writer.openEpoch(epoch)
        try await waitLocallyDurable(lsn)
        return before
    }

    /// What connected replicas still need; the replication layer sets it on a primary.
    public func setRetentionFloor(_ floor: (any RetentionFloor)?) {
        retention.set(floor)
    }

    /// The WAL archiver on a primary: `floor.lsn` is the last archived LSN; checkpoints never
    /// recycle a segment holding a record after it (WA3). nil removes the floor.
    public func setArchiveFloor(_ floor: (any RetentionFloor)?) {
        retention.setArchive(floor)
    }

    /// B5: the holds of running online backups (Kernel/Backup/BackupHolds.swift).
    var backupHolds: BackupHolds { retention.backups }

    /// B5: a new backup hold on all the WAL there is, in the checkpoint runner's turn.
    func holdWALForBackup() async throws -> UInt64 {
        try await checkpointRunner.holdWAL()
    }

    /// The first LSN of every WAL segment file, oldest first: every segment but the last is
    /// complete (its records end at the next one's first LSN - 1).
    public var walSegmentFirstLSNs: [UInt64] { wal.segmentFirstLSNs }

    public func setCommitGate(_ gate: (any CommitGate)?) {
        commitGate.withLock { $0 = gate }
        hub.setGated(gate != nil)
    }

    /// Starts or stops accepting local writes (promotion, fencing, switchover). When it returns
    /// with `false`, no local commit can start any more; commits already placed still finish.
    public func setAcceptsWrites(_ accepts: Bool, reason: AeroError? = nil) {
        writer.setAcceptsWrites(accepts, reason: reason)
    }

    public var acceptsWrites: Bool { writer.acceptsWrites }

    // MARK: Replication

    /// Applies records received from the primary, in order, logging them byte for byte (P1).
    /// Returns the last LSN placed; it is durable after `waitDurable`, visible then.
    public func applyReplicated(_ records: [WALRecord]) throws -> UInt64 {
        // The frame is flushed once all its records are placed (one write per primary batch).
        let (wal, writer) = core.withLock { ($0.wal, $0.writer) }
        return try wal.holdingFlushes { try writer.replicate(records) }
    }

    /// `applyReplicated` for a caller that must not block (a channel's event loop): nil, with
    /// nothing placed, when the frame would wait for the WAL's next segment to be preallocated
    /// (or preallocate it); the caller then applies it where it may wait.
    public func applyReplicatedWithoutWaiting(_ records: [WALRecord]) throws -> UInt64? {
        let (wal, writer) = core.withLock { ($0.wal, $0.writer) }
        let bytes = records.reduce(0) { $0 + WALFormat.aligned(WALFormat.recordHeaderBytes + $1.payload.count) }
        guard wal.placesWithoutWaiting(bytes: bytes) else { return nil }
        return try wal.holdingFlushes { try writer.replicate(records) }
    }

    /// The last durable record of this node's log: what a replica presents to the primary.
    public var durablePosition: LogPosition { wal.durablePosition }

    /// The last record placed in the log (durable or about to be).
    public var lastPosition: LogPosition { wal.lastPosition }

    public func waitDurable(_ lsn: UInt64) async throws {
        try await waitLocallyDurable(lsn)
    }

    /// Durable records from `lsn` on, about `maxBytes` of payload (what a primary ships).
    public func records(from lsn: UInt64, maxBytes: Int) throws -> [WALRecord] {
        try wal.read(from: lsn, maxBytes: maxBytes)
    }

    /// `records(from:maxBytes:)` from memory only: nil when they must be read from the segment
    /// files (the caller reads them where it may block; an event loop must not).
    public func recentRecords(from lsn: UInt64, maxBytes: Int) -> [WALRecord]? {
        wal.readRecent(from: lsn, maxBytes: maxBytes)
    }

    /// The durable record at `lsn` (origin for 0), nil past the end; throws AERO_WAL_LSN_UNAVAILABLE
    /// when it was recycled. A primary checks a replica's position with it (P1, A4).
    public func position(at lsn: UInt64) throws -> LogPosition? {
        try wal.position(at: lsn)
    }

    public var oldestLSN: UInt64 { wal.oldestLSN }

    /// The LSNs this node publishes (makes visible), starting with the current one; newest
    /// only when the consumer is slow. Senders and waiters wake on it.
    public func appliedSignals() -> AsyncStream<UInt64> { visibility.subscribe() }

    /// Waits until this node has applied (made visible) `lsn`, up to `timeout`. False on timeout.
    public func waitApplied(_ lsn: UInt64, timeout: Duration) async -> Bool {
        await visibility.wait(lsn, timeout: timeout)
    }

    /// A checkpoint of the current state, as file bytes (what a primary ships to a replica too
    /// far behind its retained WAL).
    public func checkpointForShipping() async throws -> (lsn: UInt64, bytes: [UInt8]) {
        let lsn = try await checkpoint()
        let bytes = try options.fileSystem.readFile(Path.join(options.checkpointDirectory, CheckpointFile.fileName(lsn: lsn)))
        return (lsn, bytes)
    }

    /// Replaces this replica's whole state and log with a checkpoint shipped by the primary:
    /// the log restarts right after the checkpoint's position, on the same history. Crash-safe:
    /// an interrupted install is discarded at the next open (the replica starts empty).
    public func install(checkpoint bytes: [UInt8]) async throws {
        guard !acceptsWrites else {
            throw AeroError(.notPrimary, "a node that accepts writes never replaces its state with a shipped checkpoint", invariant: "A1")
        }
        let state = try CheckpointFile.decode(bytes, name: "shipped checkpoint")
        let fs = options.fileSystem
        let old = core.withLock { $0 }
        old.writer.setAcceptsWrites(false, reason: nil)
        old.wal.close()
        let marker = Path.join(options.dataDirectory, Self.installPendingFile)
        try fs.writeAtomically([], to: marker)
        try Self.removeLogAndCheckpoints(options, store)
        _ = try store.write(state)
        try WriteAheadLog.createEmpty(fileSystem: fs, options: walOptions, after: state.position, epoch: state.epoch)
        try fs.remove(marker)
        try fs.syncDirectory(options.dataDirectory)
        let (wal, _) = try WriteAheadLog.open(fileSystem: fs, options: walOptions, after: state.position) { record in
            throw AeroError(.internalError, "a freshly installed log holds record \(record.lsn)")
        }
        let next = Self.makeCore(wal: wal, state: state, visibility: visibility, hub: hub, options: options, store: store,
                                 lastCheckpointLSN: state.lsn, retention: retention)
        core.withLock { $0 = next }
        visibility.reset(to: state)
        hub.reset(to: state.lsn)
    }

    // MARK: Reads

    /// A consistent snapshot at the newest durable commit; never blocks the writer.
    public func snapshot() -> Snapshot { Snapshot(state: visibility.current, options: queryOptions) }

    /// The query limits in effect (Q1): every snapshot taken after `setQueryOptions` uses them.
    public var queryOptions: QueryOptions { queryLimits.withLock { $0 } }

    /// Replaces the query limits (cluster settings changed); snapshots already taken keep theirs.
    public func setQueryOptions(_ query: QueryOptions) {
        queryLimits.withLock { $0 = query }
    }

    public func collections() -> [CollectionSchema] { snapshot().collections }

    /// Runs an admin-API query (`{"collection":..,"filter":..}`) on a fresh snapshot.
    public func query(_ request: JSONValue) throws -> ReadResult {
        try snapshot().query(try Query.parse(request))
    }

    public func explain(_ request: JSONValue) throws -> JSONValue {
        try snapshot().explain(try Query.parse(request)).json
    }

    // MARK: Change stream

    /// Every released transaction with LSN > `lsn`, in order, then live ones as they are
    /// released (ChangeHub: durable, and acknowledged through the commit gate in `sync`/`all`
    /// mode). Fails with AERO_WAL_LSN_UNAVAILABLE when `lsn` is older than the retained WAL.
    /// Pull-based: the stream reads the next batch only when its consumer asks for it.
    public func changes(after lsn: UInt64) -> AsyncThrowingStream<CommittedTransaction, any Error> {
        // The unfolding closure runs once at a time; the mutex only makes that state Sendable.
        let state = Mutex<(cursor: UInt64, pending: [CommittedTransaction])>((min(lsn, KernelLimits.lsnMax), []))
        return AsyncThrowingStream(unfolding: { [self] in
            while true {
                let (cursor, next) = state.withLock { s in (s.cursor, s.pending.popLast()) }
                if let next { return next }
                let batch = try await nextChanges(after: cursor, maxCount: 256)
                state.withLock { $0 = (batch.through, batch.transactions.reversed()) }
            }
        })
    }

    /// One pull of the change stream: the released records after `lsn` (at most `maxCount`),
    /// waiting until there is at least one. Move the cursor to the batch's `through`.
    public func nextChanges(after lsn: UInt64, maxCount: Int) async throws -> ChangeBatch {
        try await hub.next(after: min(lsn, KernelLimits.lsnMax), maxCount: maxCount) { [self] from, maxBytes in
            try wal.read(from: from, maxBytes: maxBytes)  // the current log (a replica may have installed a new one)
        }
    }

    /// The newest LSN the change stream may show (visible, and acknowledged when gated).
    public var releasedLSN: UInt64 { hub.released }

    static func decode(_ record: WALRecord) throws -> CommittedTransaction { try ChangeHub.decode(record) }

    // MARK: Checkpoints, status, shutdown

    /// Writes a checkpoint of the newest durable state; returns its LSN.
    public func checkpoint() async throws -> UInt64 {
        writer.checkpointStarted()
        return try await checkpointRunner.run(visibility.current)
    }

    private func checkpointIfDue() {
        guard writer.checkpointDue() else { return }
        let runner = checkpointRunner, state = visibility.current
        Task.detached { await runner.runInBackground(state) }
    }

    /// The WAL's fatal error (F1) once a flush failed: the node must stop.
    public var failure: AeroError? { wal.failure }

    public func status() async -> KernelStatus {
        let state = visibility.current
        return KernelStatus(durableLSN: wal.durablePosition.lsn, appliedLSN: state.lsn, epoch: state.epoch,
                            walEngine: wal.engineName, collectionCount: state.collections.count,
                            documentCount: state.collections.values.reduce(0) { $0 + $1.count },
                            memoryBytesUsed: state.memoryBytes, memoryBytesMax: options.memoryBytesMax,
                            lastCheckpointLSN: await checkpointRunner.lastLSN,
                            lastCheckpointError: await checkpointRunner.lastError)
    }

    /// Stops accepting writes and closes the WAL; every acknowledged commit is already durable.
    public func close() async {
        visibility.finishSubscribers()
        wal.close()
    }
}

/// A read-only view of the database at one LSN (P2).
public struct Snapshot: Sendable {
    public let state: DatabaseState
    let options: QueryOptions

    public var lsn: UInt64 { state.lsn }

    public var collections: [CollectionSchema] { state.collections.keys.sorted().map { state.collections[$0]!.schema } }

    public func query(_ query: Query) throws -> ReadResult {
        let result = try QueryEngine.execute(query, on: try state.collection(query.collection), options: options)
        return ReadResult(rows: result.rows, totalCount: result.totalCount, lsn: lsn, plan: result.plan)
    }

    public func explain(_ query: Query) throws -> Plan {
        try QueryEngine.explain(query, on: try state.collection(query.collection), options: options)
    }

    public func document(_ collection: String, key: JSONValue) throws -> Document? {
        try state.collection(collection).document(forKey: key)
    }
}

/// Rows read from a snapshot, with the LSN they were read at.
public struct ReadResult: Sendable {
    public let rows: [Document]
    public let totalCount: Int?
    public let lsn: UInt64
    public let plan: Plan
}

/// Runs one checkpoint at a time and recycles the WAL behind the oldest kept checkpoint.
actor CheckpointRunner {
    private let store: CheckpointStore
    private let wal: WriteAheadLog
    private(set) var lastLSN: UInt64?
    private(set) var lastError: AeroError?
    private let retention: RetentionSetting

    init(store: CheckpointStore, wal: WriteAheadLog, lastLSN: UInt64?, retention: RetentionSetting) {
        self.store = store
        self.wal = wal
        self.lastLSN = lastLSN
        self.retention = retention
    }

    func run(_ state: DatabaseState) throws -> UInt64 {
        if let lastLSN, lastLSN >= state.lsn { return lastLSN }
        let started = ContinuousClock.now
        defer { KernelMetrics.checkpoint.recordNanoseconds(KernelMetrics.nanos(since: started)) }
        do {
            _ = try store.write(state)
            lastLSN = state.lsn
            if let oldestKept = try store.prune() {
                // WA3: never past the archive (a record not archived yet stays in the WAL).
                let through = retention.archivedLSN.map { min($0, oldestKept) } ?? oldestKept
                try wal.recycle(through: through, retainFrom: retention.lsn)
            }
            lastError = nil
            return state.lsn
        } catch {
            lastError = AeroError.wrap(error)
            throw error
        }
    }

    /// B5: a hold on everything the WAL holds now, taken in this actor's turn so that every
    /// checkpoint that recycles after it sees it (one already running has finished).
    func holdWAL() throws -> UInt64 {
        try retention.backups.take(floor: wal.oldestLSN)
    }

    /// Automatic checkpoints report failure through `status()` (lastCheckpointError).
    func runInBackground(_ state: DatabaseState) {
        do {
            _ = try run(state)
        } catch {
            // Already recorded in `lastError` by run(); status() reports it.
        }
    }
}

// MARK: - Offline verification

/// What `aerodb verify` found: every checkpoint decoded and checked, the WAL scanned like
/// recovery, every record's payload decoded and the records after the newest checkpoint replayed.
public struct VerifyReport: Sendable {
    public let checkpointLSNs: [UInt64]
    public let wal: RecoveryReport
    public let summary: String
}

extension Database {
    /// Checks a stopped node's data directory without changing it. Throws the AeroError that
    /// makes it unsound: a damaged checkpoint (even one recovery could fall back from: D2 says
    /// corruption is never ignored) or WAL corruption (segment, offset, LSN), including a record
    /// whose checksum passes but whose payload does not decode or does not replay onto the
    /// newest checkpoint: "sound" means `aerodb start` replays this directory.
    public static func verify(dataDirectory: String, fileSystem: any FileSystem = POSIXFileSystem()) throws -> VerifyReport {
        guard fileSystem.exists(dataDirectory) else {
            throw AeroError(.dataDirectoryInvalid, "no data directory at \(dataDirectory)")
        }
        let options = KernelOptions(dataDirectory: dataDirectory)
        let store = CheckpointStore(fileSystem: fileSystem, directory: options.checkpointDirectory)
        var newest: DatabaseState?
        let lsns = fileSystem.exists(options.checkpointDirectory) ? try store.list() : []
        for lsn in lsns {
            let name = CheckpointFile.fileName(lsn: lsn)
            let state = try CheckpointFile.decode(try fileSystem.readFile(Path.join(options.checkpointDirectory, name)), name: name)
            guard state.position.lsn == lsn else {
                throw AeroError(.checkpointCorrupt, "checkpoint \(name) holds LSN \(state.position.lsn)", invariant: "D2")
            }
            if newest == nil { newest = state }
        }
        // Replays like `open` (records after the newest checkpoint onto its state) and decodes the
        // records before it too: a record recovery would fail on is reported here, not at start.
        var state = newest ?? .empty
        let start = newest?.position.lsn ?? 0
        let wal = try WriteAheadLog.verify(fileSystem: fileSystem,
                                           options: WALOptions(directory: options.walDirectory, segmentBytes: KernelLimits.walSegmentBytesMin),
                                           after: newest?.position) { record in
            if record.lsn > start {
                try state.replay(record)
            } else {
                _ = try decode(record)
            }
        }
        var summary = "sound: \(lsns.count) checkpoint(s)"
        if let newest { summary += " (newest at LSN \(newest.lsn))" }
        summary += ", WAL \(wal.segmentsScanned) segment(s), \(wal.recordsRead) record(s) decoded, last LSN \(wal.lastPosition.lsn)"
        if let torn = wal.tornTail { summary += "; \(torn) (truncated at the next start)" }
        return VerifyReport(checkpointLSNs: lsns, wal: wal, summary: summary)
    }
}

// MARK: - Rejoin of a diverged node (offline)

extension Database {
    /// The positions of the last `count` records of a stopped node's log, oldest first (what a
    /// diverged node sends the primary to find where their histories fork).
    public static func lastPositions(_ options: KernelOptions, count: Int) throws -> [LogPosition] {
        // The WAL keeps every record after the oldest kept checkpoint: scan from there.
        let fs = options.fileSystem
        let store = CheckpointStore(fileSystem: fs, directory: options.checkpointDirectory)
        let oldest = try (fs.exists(options.checkpointDirectory) ? store.list() : []).reversed().lazy.compactMap { lsn in
            let name = CheckpointFile.fileName(lsn: lsn)
            return try? CheckpointFile.decode(try fs.readFile(Path.join(options.checkpointDirectory, name)), name: name)
        }.first
        var positions: [LogPosition] = oldest.map { [$0.position] } ?? []
        let walOptions = WALOptions(directory: options.walDirectory, segmentBytes: options.walSegmentBytes)
        _ = try WALScan.run(fileSystem: fs, directory: walOptions.directory,
                            segmentBytes: walOptions.segmentBytes, after: oldest?.position, repair: false) { record in
            positions.append(record.position)
            if positions.count > 2 * count { positions.removeFirst(positions.count - count) }
        }
        return Array(positions.suffix(count))
    }

    /// Cuts a stopped node's history after `fork` (`aerodb rejoin`): checkpoints past it are
    /// removed, the WAL is truncated, and the transactions that were cut are returned (for the
    /// rejoin report). Refuses when the record at the fork is not the one named (A4).
    public static func truncateHistory(_ options: KernelOptions, after fork: LogPosition) throws -> [CommittedTransaction] {
        let fs = options.fileSystem
        let store = CheckpointStore(fileSystem: fs, directory: options.checkpointDirectory)
        try store.prepare()
        let later = try store.list().filter { $0 > fork.lsn }
        for lsn in later { try fs.remove(Path.join(options.checkpointDirectory, CheckpointFile.fileName(lsn: lsn))) }
        if !later.isEmpty { try fs.syncDirectory(options.checkpointDirectory) }
        let loaded = try store.loadNewest()
        var matched = fork.lsn == 0 || loaded?.state.position == fork
        var discarded: [CommittedTransaction] = []
        let walOptions = WALOptions(directory: options.walDirectory, segmentBytes: options.walSegmentBytes,
                                    engine: .pwrite, preallocateInBackground: false)
        let (wal, _) = try WriteAheadLog.open(fileSystem: fs, options: walOptions, after: loaded?.state.position) { record in
            if record.lsn == fork.lsn { matched = record.checksum == fork.checksum }
            if record.lsn > fork.lsn { discarded.append(try decode(record)) }
        }
        wal.close()
        guard matched else {
            throw AeroError(.replicationDiverged, "this node's log does not hold the record \(fork) where the primary's history forks; it needs a full resync (`aerodb rejoin --resync`)", invariant: "A4")
        }
        try WriteAheadLog.truncate(fileSystem: fs, options: walOptions, after: fork.lsn)
        return discarded
    }

    /// Removes a stopped node's whole log and checkpoints: it starts empty and the primary ships
    /// it a checkpoint (`aerodb rejoin --resync`).
    public static func discardHistory(_ options: KernelOptions) throws {
        let store = CheckpointStore(fileSystem: options.fileSystem, directory: options.checkpointDirectory)
        try store.prepare()
        try removeLogAndCheckpoints(options, store)
    }
}
