// The whole database at one commit LSN, as an immutable value.
//
// MVCC by persistent data structures: `CollectionData` is a copy-on-write B+tree, so copying a
// DatabaseState is O(collections) and a copy never changes afterwards. A reader's snapshot is
// such a copy (P2/S-isolation: it sees exactly the transactions up to `position.lsn`); the writer
// changes its own head in place, and once the head was handed to readers (sealed, Writer.swift)
// its first change to a tree node copies that node and the path to it. Old versions are
// collected by ARC when the last snapshot holding them is released (version collection).

public struct DatabaseState: Sendable {
    /// The last transaction included: its LSN and checksum (a point on the history).
    public internal(set) var position: LogPosition
    public internal(set) var epoch: UInt64
    public internal(set) var collections: [String: CollectionData]
    /// Where each epoch begins in this log (P1, A4): what lets a primary prove that a follower
    /// older than its retained WAL is on its history. Extended by `replay` and the writer,
    /// carried in every checkpoint, cut with the log by `Database.truncateHistory`.
    public internal(set) var epochHistory = EpochHistory()
    /// A new stamp (`ContentVersion`) with every schema change applied and for every state built:
    /// equal stamps mean the same schemas (never persisted).
    public internal(set) var schemaVersion = ContentVersion.next()

    static let empty = DatabaseState(position: LogPosition(lsn: 0, checksum: 0), epoch: 0, collections: [:])

    init(position: LogPosition, epoch: UInt64, collections: [String: CollectionData], epochHistory: EpochHistory = EpochHistory()) {
        self.position = position
        self.epoch = epoch
        self.collections = collections
        self.epochHistory = epochHistory
    }

    public var lsn: UInt64 { position.lsn }

    public var memoryBytes: Int { collections.values.reduce(0) { $0 + $1.approximateBytes } }

    public func collection(_ name: String) throws -> CollectionData {
        guard let data = collections[name] else {
            throw AeroError(.collectionNotFound, "collection \(name) does not exist")
        }
        return data
    }

    /// Applies an already validated, resolved change (commit or replay). Throws only on a
    /// change that contradicts the state, which replay reports as corruption.
    mutating func apply(_ change: DocumentChange) throws {
        // Mutated in place through the dictionary's modify accessor, which moves the value out
        // while it is mutated (so the tree stays uniquely referenced): one hash lookup and no
        // copy of the collection (taking it out, setting nil and putting it back was three
        // lookups and a copy of its value, ~6 retains and releases, per change).
        try Self.apply(change, to: &collections[change.collection])
    }

    private static func apply(_ change: DocumentChange, to data: inout CollectionData?) throws {
        guard data != nil else {
            throw AeroError(.collectionNotFound, "change for unknown collection \(change.collection)")
        }
        if let after = change.after {
            _ = try data!.put(after)
        } else {
            _ = data!.remove(key: change.key)
        }
    }

    /// Applies a transaction's changes in order, taking each collection out of the dictionary
    /// once per run of changes to it (not once per change). On a throw, the changes before the
    /// failing one stay applied, as with `apply(_:)` one at a time; callers discard the state then.
    mutating func apply(_ changes: [DocumentChange]) throws {
        var i = 0
        while i < changes.count {
            let name = changes[i].collection
            guard var data = collections[name] else {
                throw AeroError(.collectionNotFound, "change for unknown collection \(name)")
            }
            collections[name] = nil  // keep the tree uniquely referenced while mutating
            defer { collections[name] = data }
            while i < changes.count && changes[i].collection == name {
                let change = changes[i]
                if let after = change.after {
                    _ = try data.put(after)
                } else {
                    _ = data.remove(key: change.key)
                }
                i += 1
            }
        }
    }

    /// Undoes `changes`, which were applied to this state in order (`apply`), last first, by
    /// applying each one's inverse: each collection holds again exactly the documents and index
    /// entries it held before them (its `version` and `approximateBytes` as recomputed by the
    /// writes, its tree possibly shaped otherwise). The writer's way to refuse a transaction
    /// built in place (C1).
    mutating func revert(_ changes: [DocumentChange]) {
        for change in changes.reversed() {
            do {
                try apply(DocumentChange(collection: change.collection, key: change.key, before: change.after, after: change.before))
            } catch {
                // Putting back what was there cannot conflict; carrying on would leave the head
                // differing from the log.
                preconditionFailure("reverting a refused transaction failed: \(error)")
            }
        }
    }

    /// This state, moved out: `self` is left empty (the writer's head while a transaction is
    /// built on it in place, and the builder's state when it hands it back).
    mutating func moveOut() -> DatabaseState {
        var out = DatabaseState.empty
        swap(&out, &self)
        return out
    }

    mutating func apply(_ change: SchemaChange) throws {
        switch change {
        case .create(let schema):
            guard collections[schema.name] == nil else {
                throw AeroError(.collectionExists, "collection \(schema.name) already exists")
            }
            collections[schema.name] = CollectionData(schema: schema)
        case .replace(let schema):
            let data = try collection(schema.name)
            collections[schema.name] = try data.withSchema(schema)
        case .drop(let name):
            _ = try collection(name)
            collections[name] = nil
        case .addField(let name, let field, let spec, let fill):
            let data = try collection(name)
            var fields = data.schema.fields
            fields[field] = spec
            collections[name] = try rebuilt(data, fields: fields) { doc in doc[field] = fill }
        case .dropField(let name, let field):
            let data = try collection(name)
            var fields = data.schema.fields
            fields[field] = nil
            collections[name] = try rebuilt(data, fields: fields) { doc in doc[field] = nil }
        }
        schemaVersion = ContentVersion.next()
    }

    /// The collection with new fields and every document rewritten (an O(documents) schema change).
    private func rebuilt(_ data: CollectionData, fields: [String: FieldSchema],
                         _ rewrite: (inout Document) -> Void) throws -> CollectionData {
        let schema = CollectionSchema(name: data.schema.name, primaryKey: data.schema.primaryKey, fields: fields,
                                      indexes: data.schema.indexes)
        var documents: [Document] = []
        documents.reserveCapacity(data.count)
        for doc in data.allDocuments() {
            var copy = doc
            rewrite(&copy)
            documents.append(copy)
        }
        return try CollectionData(schema: schema, sortedDocuments: documents)
    }

    /// A record's payload decoded, ready to replay: what recovery decodes on other threads while
    /// it applies earlier records (`Database.open`, RecoveryPipeline).
    enum DecodedRecord: Sendable {
        case changes([DocumentChange])
        case schema(SchemaChange)
        case nothing
    }

    /// Decodes a record's payload (a pure function of the record; safe on any thread).
    static func decode(_ record: WALRecord) throws -> DecodedRecord {
        switch record.type {
        case .transaction: return .changes(try TransactionRecord.decodeChanges(record.payload, lsn: record.lsn))
        case .schema: return .schema(try TransactionRecord.decodeSchemaChange(record.payload, lsn: record.lsn))
        default: return .nothing
        }
    }

    /// Replays one durable WAL record onto the state (recovery and replicas).
    mutating func replay(_ record: WALRecord) throws {
        guard record.lsn == position.lsn + 1 else {
            throw AeroError(.walCorrupt, "record LSN \(record.lsn) does not follow state LSN \(position.lsn)", invariant: "R1")
        }
        try replay(record, decoded: try Self.decode(record))
    }

    /// Replays a record whose payload `decode` already decoded.
    mutating func replay(_ record: WALRecord, decoded: DecodedRecord) throws {
        guard record.lsn == position.lsn + 1 else {
            throw AeroError(.walCorrupt, "record LSN \(record.lsn) does not follow state LSN \(position.lsn)", invariant: "R1")
        }
        switch decoded {
        case .changes(let changes): try apply(changes)
        case .schema(let change): try apply(change)
        case .nothing: break
        }
        position = LogPosition(lsn: record.lsn, checksum: record.checksum)
        epoch = max(epoch, record.epoch)
        epochHistory.extend(epoch: record.epoch, at: record.lsn)
    }
}

/// The epochs of one log, compactly: for each epoch, the LSN of its first record in this log
/// (the epoch record), oldest first. Like PostgreSQL's timeline history files and Raft's terms,
/// it names which writer wrote any LSN of the log without holding the records themselves.
///
/// Invariants: epochs and start LSNs strictly increase; an entry (E, s) followed by (E', s')
/// says records s ..< s' of this log are of epoch E (the last entry: from s through the log's
/// end). The first entry's start is where the history's knowledge begins: epoch E may have begun
/// earlier when older entries were dropped (`entriesMax`) or the history was read from a
/// checkpoint of format 1, which has none ("unknown before its LSN"). Below the first start
/// nothing is known, which only makes old positions unprovable, never wrongly proven.
public struct EpochHistory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let epoch: UInt64
        public let startLSN: UInt64

        public init(epoch: UInt64, startLSN: UInt64) {
            self.epoch = epoch
            self.startLSN = startLSN
        }
    }

    /// Entries kept: the last 10,000 epochs (160 KB in a checkpoint). One epoch per promotion or
    /// switchover, so this reaches back further than any WAL is retained; older entries are
    /// dropped, which only leaves positions that old unprovable (their node rejoins explicitly).
    public static let entriesMax = 10_000

    public private(set) var entries: [Entry]

    public init() { entries = [] }

    /// `entries` as given, when they satisfy the invariants (a checkpoint's, a test's); else nil.
    public init?(entries: [Entry]) {
        guard entries.count <= Self.entriesMax,
              zip(entries, entries.dropFirst()).allSatisfy({ $0.epoch < $1.epoch && $0.startLSN < $1.startLSN }),
              entries.allSatisfy({ $0.startLSN >= 1 && $0.startLSN <= KernelLimits.lsnMax && $0.epoch <= KernelLimits.lsnMax })
        else { return nil }
        self.entries = entries
    }

    /// The history of a log known only from LSN `lsn` on, whose record there is of `epoch` (a
    /// checkpoint of format 1).
    static func unknown(before lsn: UInt64, epoch: UInt64) -> EpochHistory {
        var history = EpochHistory()
        if lsn > 0 { history.entries = [Entry(epoch: epoch, startLSN: lsn)] }
        return history
    }

    /// Notes the record at `lsn` (the log's next one) being of `epoch`: a new entry when the
    /// epoch is above the last one (the epoch record), dropping the oldest past `entriesMax`.
    mutating func extend(epoch: UInt64, at lsn: UInt64) {
        if let last = entries.last, epoch <= last.epoch || lsn <= last.startLSN { return }
        entries.append(Entry(epoch: epoch, startLSN: lsn))
        if entries.count > Self.entriesMax { entries.removeFirst(entries.count - Self.entriesMax) }
    }

    /// The epoch of the record at `lsn` of a log whose last record is `last`; nil when the
    /// history does not know (before its first entry, after the log's end, LSN 0).
    public func epoch(at lsn: UInt64, last: UInt64) -> UInt64? {
        guard lsn >= 1, lsn <= last, let first = entries.first, lsn >= first.startLSN else { return nil }
        // The last entry starting at or before `lsn` (binary search: up to `entriesMax` entries).
        var low = 0, high = entries.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if entries[mid].startLSN <= lsn { low = mid } else { high = mid - 1 }
        }
        return entries[low].epoch
    }

    /// The history of this log cut after `lsn` (what `truncateHistory` leaves).
    public func truncated(after lsn: UInt64) -> EpochHistory {
        var cut = self
        cut.entries.removeAll { $0.startLSN > lsn }
        return cut
    }
}
