// The whole database at one commit LSN, as an immutable value.
//
// MVCC by persistent data structures: `CollectionData` is a copy-on-write B+tree, so copying a
// DatabaseState is O(collections) and a copy never changes afterwards. A reader's snapshot is
// such a copy (P2/S-isolation: it sees exactly the transactions up to `position.lsn`); the writer
// mutates its own copy, which copies only the touched tree paths. Old versions are collected by
// ARC when the last snapshot holding them is released (version collection).

public struct DatabaseState: Sendable {
    /// The last transaction included: its LSN and checksum (a point on the history).
    public internal(set) var position: LogPosition
    public internal(set) var epoch: UInt64
    public internal(set) var collections: [String: CollectionData]

    static let empty = DatabaseState(position: LogPosition(lsn: 0, checksum: 0), epoch: 0, collections: [:])

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
        guard var data = collections[change.collection] else {
            throw AeroError(.collectionNotFound, "change for unknown collection \(change.collection)")
        }
        collections[change.collection] = nil  // keep the tree uniquely referenced while mutating
        defer { collections[change.collection] = data }
        if let after = change.after {
            _ = try data.put(after)
        } else {
            _ = data.remove(key: change.key)
        }
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

    /// Replays one durable WAL record onto the state (recovery and replicas).
    mutating func replay(_ record: WALRecord) throws {
        guard record.lsn == position.lsn + 1 else {
            throw AeroError(.walCorrupt, "record LSN \(record.lsn) does not follow state LSN \(position.lsn)", invariant: "R1")
        }
        switch record.type {
        case .transaction:
            for change in try TransactionRecord.decodeChanges(record.payload, lsn: record.lsn) {
                try apply(change)
            }
        case .schema:
            try apply(try TransactionRecord.decodeSchemaChange(record.payload, lsn: record.lsn))
        case .epoch:
            epoch = max(epoch, record.epoch)
        default:
            break
        }
        position = LogPosition(lsn: record.lsn, checksum: record.checksum)
        epoch = max(epoch, record.epoch)
    }
}
