// One collection's documents and indexes at one version: a value, so a snapshot is a copy (MVCC).
//
// Invariants:
// - `documents` maps each primary key to its document; every declared index holds exactly the
//   entries derived from those documents (checked by tests after random operations).
// - A unique index never holds two entries with equal non-null values (nulls never conflict,
//   as in SQL). A write that would break this throws `AERO_UNIQUE_VIOLATION` and changes nothing.
// - `approximateBytes` is maintained on every write (used for the memory limit).
// - `version` is a stamp unique in the process: every write and every built collection takes a
//   new one (`ContentVersion`), so equal stamps mean the same documents and schema. It is never
//   persisted: a collection loaded again, replayed or installed gets new stamps.

import Synchronization

/// The process-wide source of `CollectionData.version` and `DatabaseState.schemaVersion` stamps.
enum ContentVersion {
    private static let last = Atomic<UInt64>(0)

    /// A stamp never handed out before in this process.
    static func next() -> UInt64 { last.wrappingAdd(1, ordering: .relaxed).newValue }
}

/// Entries of one declared index.
struct IndexData: Sendable {
    let schema: IndexSchema
    var entries: PersistentSortedMap<IndexKey, Void>

    /// The entries a document contributes (sorted, unique).
    func keys(for doc: Document, primaryKey: JSONValue) -> [IndexKey] {
        switch schema.kind {
        case .ordered:
            return [IndexKey(schema.fields.map { FieldPath.read(doc, $0) } + [primaryKey])]  // fields or JSON paths
        case .fulltext:
            guard case .string(let text)? = doc[schema.fields[0]] else { return [] }
            return Set(TextTokenizer.tokens(text)).sorted { JSONValue.compareUTF8($0, $1) < 0 }
                .map { IndexKey([.string($0), primaryKey]) }
        }
    }

    /// The indexed values of an ordered index when they may conflict under `unique` (no nulls).
    func uniqueValues(for doc: Document) -> [JSONValue]? {
        guard schema.unique, schema.kind == .ordered else { return nil }
        let values = schema.fields.map { FieldPath.read(doc, $0) }
        return values.contains(where: \.isNull) ? nil : values
    }

    /// Primary key of an entry with these values other than `excluding`, if any.
    func conflict(values: [JSONValue], excluding primaryKey: JSONValue) -> JSONValue? {
        let range = entries.entries(from: .inclusive(IndexKey(values, edge: .beforeExtensions)),
                                    to: .inclusive(IndexKey(values, edge: .afterExtensions)))
        for (key, _) in range where JSONValue.compare(key.primaryKey, primaryKey) != 0 { return key.primaryKey }
        return nil
    }

    func duplicateError(_ collection: String, _ values: [JSONValue]) -> AeroError {
        let shown = values.count == 1 ? JSON.encodeString(values[0]) : JSON.encodeString(.array(values))
        return AeroError(.duplicateKey,
                         "\(collection): unique index \(schema.name) on \(schema.fields) already holds \(shown)",
                         invariant: "C1")
    }
}

public struct CollectionData: Sendable {
    public let schema: CollectionSchema
    private(set) var documents: PersistentSortedMap<OrderedValue, Document>
    /// Parallel to `schema.indexes`.
    private(set) var indexes: [IndexData]
    public private(set) var approximateBytes: Int
    /// Changes with every write to this collection and differs for every collection built
    /// (`ContentVersion`): a reader that kept it tells whether the collection changed since,
    /// without reading the change stream (RealtimeService's policy watch).
    public private(set) var version = ContentVersion.next()

    public init(schema: CollectionSchema) {
        self.schema = schema
        documents = PersistentSortedMap()
        indexes = schema.indexes.map { IndexData(schema: $0, entries: PersistentSortedMap()) }
        approximateBytes = 0
    }

    /// Bulk build (checkpoint load). Input sorted by primary key is fastest; other input is sorted
    /// first. Throws on a missing or null primary key, duplicate keys or a unique violation.
    public init(schema: CollectionSchema, documents input: [Document]) throws {
        var entries: [(key: OrderedValue, value: Document)] = []
        entries.reserveCapacity(input.count)
        var documentBytes = 0
        for doc in input {
            entries.append((try Self.primaryKey(of: doc, schema), doc))
            documentBytes += Self.bytes(of: doc)
        }
        try self.init(schema: schema, keyedEntries: entries, documentBytes: documentBytes)
    }

    /// A document's primary key, for the bulk build; a missing or null key is refused (S1).
    static func primaryKey(of doc: Document, _ schema: CollectionSchema) throws -> OrderedValue {
        guard let key = doc[schema.primaryKey], !key.isNull else {
            throw AeroError(.schemaViolation, "\(schema.name): a document has no \(schema.primaryKey)", invariant: "S1")
        }
        return OrderedValue(key)
    }

    /// Bulk build from documents already paired with their primary key (`primaryKey(of:)`) and the
    /// sum of their `bytes(of:)`: the checkpoint loader computes both in its parsing pieces, on
    /// every core. Otherwise as `init(schema:documents:)`.
    init(schema: CollectionSchema, keyedEntries input: [(key: OrderedValue, value: Document)], documentBytes: Int) throws {
        var entries = input
        // Strictly increasing keys are also unique: only other input is sorted and searched for
        // a duplicate.
        if !zip(entries, entries.dropFirst()).allSatisfy({ $0.key < $1.key }) {
            entries.sort { $0.key < $1.key }
            if let dup = zip(entries, entries.dropFirst()).first(where: { $0.key == $1.key }) {
                throw AeroError(.duplicateKey, "\(schema.name): two documents with \(schema.primaryKey) = "
                                + JSON.encodeString(dup.0.key.value), invariant: "C1")
            }
        }
        self.schema = schema
        documents = PersistentSortedMap(sortedUniqueEntries: entries)
        indexes = try schema.indexes.map { try Self.buildIndex($0, schema: schema, documents: entries) }
        approximateBytes = documentBytes
            + indexes.reduce(0) { total, index in total + index.entries.count * Self.indexEntryOverheadBytes }
    }

    /// Same as `init(schema:documents:)`; the name says what the checkpoint loader gives.
    public init(schema: CollectionSchema, sortedDocuments: [Document]) throws {
        try self.init(schema: schema, documents: sortedDocuments)
    }

    private static func buildIndex(_ index: IndexSchema, schema: CollectionSchema,
                                   documents: [(key: OrderedValue, value: Document)]) throws -> IndexData {
        var data = IndexData(schema: index, entries: PersistentSortedMap())
        var keys: [IndexKey] = []
        keys.reserveCapacity(documents.count)
        for (key, doc) in documents { keys += data.keys(for: doc, primaryKey: key.value) }
        keys.sort()
        if index.unique && index.kind == .ordered {
            let width = index.fields.count
            for (a, b) in zip(keys, keys.dropFirst()) {
                let values = Array(a.values[..<width])
                if !values.contains(where: \.isNull) && IndexKey(values) == IndexKey(Array(b.values[..<width])) {
                    throw data.duplicateError(schema.name, values)
                }
            }
        }
        data.entries = PersistentSortedMap(sortedUniqueEntries: keys.map { ($0, ()) })
        return data
    }

    // MARK: Reads

    public var count: Int { documents.count }

    public func document(forKey key: JSONValue) -> Document? { documents.value(forKey: OrderedValue(key)) }

    /// Every document in primary key order.
    public func allDocuments() -> LazyMapSequence<PersistentSortedMap<OrderedValue, Document>, Document> {
        documents.lazy.map(\.value)
    }

    func index(named name: String) -> IndexData? { indexes.first { $0.schema.name == name } }

    // MARK: Writes

    /// Inserts or replaces the document with the same primary key; returns the replaced one.
    /// On a unique violation throws and leaves `self` unchanged.
    @discardableResult
    public mutating func put(_ doc: Document) throws -> Document? {
        guard let key = doc[schema.primaryKey], !key.isNull else {
            throw AeroError(.schemaViolation, "\(schema.name): document has no \(schema.primaryKey)", invariant: "S1")
        }
        for index in indexes {
            if let values = index.uniqueValues(for: doc), index.conflict(values: values, excluding: key) != nil {
                throw index.duplicateError(schema.name, values)
            }
        }
        let old = documents.insert(doc, forKey: OrderedValue(key))
        for i in indexes.indices {
            let oldKeys = old.map { indexes[i].keys(for: $0, primaryKey: key) } ?? []
            let newKeys = indexes[i].keys(for: doc, primaryKey: key)
            guard oldKeys != newKeys else { continue }
            for k in oldKeys { indexes[i].entries.remove(k) }
            for k in newKeys { indexes[i].entries.insert((), forKey: k) }
            approximateBytes += (newKeys.count - oldKeys.count) * Self.indexEntryOverheadBytes
        }
        approximateBytes += Self.bytes(of: doc) - (old.map(Self.bytes(of:)) ?? 0)
        version = ContentVersion.next()
        return old
    }

    /// Removes the document with this primary key; returns it.
    @discardableResult
    public mutating func remove(key: JSONValue) -> Document? {
        guard let old = documents.remove(OrderedValue(key)) else { return nil }
        for i in indexes.indices {
            let oldKeys = indexes[i].keys(for: old, primaryKey: key)
            for k in oldKeys { indexes[i].entries.remove(k) }
            approximateBytes -= oldKeys.count * Self.indexEntryOverheadBytes
        }
        approximateBytes -= Self.bytes(of: old)
        version = ContentVersion.next()
        return old
    }

    /// The same documents under a schema whose indexes changed: kept indexes are shared, new ones
    /// built. Throws when a new unique index finds duplicates (then nothing changes).
    public func withSchema(_ newSchema: CollectionSchema) throws -> CollectionData {
        guard newSchema.primaryKey == schema.primaryKey else {
            throw AeroError(.schemaInvalid, "\(schema.name): the primary key cannot change")
        }
        var copy = CollectionData(schema: newSchema)
        copy.documents = documents
        let entries = newSchema.indexes.contains(where: { schema.indexes.contains($0) == false })
            ? Array(documents) : []
        copy.indexes = try newSchema.indexes.map { wanted in
            if let kept = indexes.first(where: { $0.schema == wanted }) { return kept }
            return try Self.buildIndex(wanted, schema: newSchema, documents: entries)
        }
        copy.approximateBytes = approximateBytes
            + (copy.indexes.reduce(0) { $0 + $1.entries.count } - indexes.reduce(0) { $0 + $1.entries.count })
            * Self.indexEntryOverheadBytes
        return copy
    }

    // MARK: Size estimate

    /// Per document: tree slot, dictionary header and key (not exact; stable and cheap).
    static let documentOverheadBytes = 96
    /// Per index entry: tree slot plus the key array.
    static let indexEntryOverheadBytes = 64

    static func bytes(of doc: Document) -> Int {
        doc.reduce(documentOverheadBytes) { $0 + $1.key.utf8.count + 16 + bytes(of: $1.value) }
    }

    /// Roughly the encoded size of a value, without encoding it.
    static func bytes(of value: JSONValue) -> Int {
        switch value {
        case .null, .bool: return 5
        case .int, .float: return 8
        case .string(let s): return s.utf8.count + 2
        case .array(let items): return items.reduce(2) { $0 + 1 + bytes(of: $1) }
        case .object(let fields): return fields.reduce(2) { $0 + $1.key.utf8.count + 4 + bytes(of: $1.value) }
        }
    }
}
