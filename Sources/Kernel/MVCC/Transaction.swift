// Transactions: a list of write operations applied atomically (C1) after validation (S1,
// unique indexes, references). The single writer applies them to its own copy of the state;
// nothing is visible to anyone unless every operation succeeded and the record is durable (D1).
//
// Request JSON: {"ops":[
//   {"op":"insert","collection":"items","doc":{...}},
//   {"op":"upsert","collection":"items","doc":{...}},            // insert, or merge into the existing doc
//   {"op":"update","collection":"items","key":"a1","set":{...}},
//   {"op":"update","collection":"items","filter":{...},"set":{...}},
//   {"op":"delete","collection":"items","key":"a1"},
//   {"op":"delete","collection":"items","filter":{...}}]}

public enum WriteOperation: Sendable, Equatable {
    case insert(collection: String, document: Document)
    case upsert(collection: String, document: Document)
    case update(collection: String, target: Target, set: Document)
    case delete(collection: String, target: Target)

    public enum Target: Sendable, Equatable {
        case key(JSONValue)
        /// A filter in the query language; every matching document (bounded by the query limits).
        case filter(JSONValue)
        /// The same, already parsed (the REST front end builds filters from PostgREST syntax).
        case matching(Filter)
    }

    public var collection: String {
        switch self {
        case .insert(let c, _), .upsert(let c, _), .update(let c, _, _), .delete(let c, _): return c
        }
    }

    public static func parseList(_ json: JSONValue) throws -> [WriteOperation] {
        guard case .object(let root) = json, case .array(let items)? = root["ops"] else {
            throw invalid("a transaction is {\"ops\":[...]}")
        }
        guard root.count == 1 else { throw invalid("a transaction has only the key \"ops\"") }
        guard !items.isEmpty else { throw invalid("a transaction needs at least one operation") }
        guard items.count <= KernelLimits.transactionOpsMax else {
            throw AeroError(.transactionTooLarge, "at most \(KernelLimits.transactionOpsMax) operations per transaction")
        }
        return try items.enumerated().map { i, item in try parse(item, index: i) }
    }

    static func parse(_ json: JSONValue, index: Int) throws -> WriteOperation {
        guard case .object(let o) = json, case .string(let op)? = o["op"], case .string(let collection)? = o["collection"] else {
            throw invalid("ops[\(index)] needs \"op\" and \"collection\" strings")
        }
        func document(_ key: String) throws -> Document {
            guard case .object(let d)? = o[key] else { throw invalid("ops[\(index)] (\(op)) needs \"\(key)\" as an object") }
            return d
        }
        func target() throws -> Target {
            switch (o["key"], o["filter"]) {
            case (let k?, nil): return .key(k)
            case (nil, let f?): return .filter(f)
            default: throw invalid("ops[\(index)] (\(op)) needs exactly one of \"key\" or \"filter\"")
            }
        }
        func allow(_ keys: Set<String>) throws {
            for key in o.keys where !keys.contains(key) && key != "op" && key != "collection" {
                throw invalid("ops[\(index)] (\(op)): unknown key \"\(key)\"")
            }
        }
        switch op {
        case "insert": try allow(["doc"]); return .insert(collection: collection, document: try document("doc"))
        case "upsert": try allow(["doc"]); return .upsert(collection: collection, document: try document("doc"))
        case "update":
            try allow(["key", "filter", "set"])
            return .update(collection: collection, target: try target(), set: try document("set"))
        case "delete": try allow(["key", "filter"]); return .delete(collection: collection, target: try target())
        default: throw invalid("ops[\(index)]: unknown op \"\(op)\" (insert, upsert, update, delete)")
        }
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.requestInvalid, message) }
}

/// Applies operations to the state it is given and records the resolved changes. The writer
/// gives it the head itself (not a copy: Writer.swift, "Sealing"), so the state is changed in
/// place; a refused transaction is undone with `revert`. Reads of a collection end before a
/// change to it is applied (`record`): a copy of it still alive then would make the change copy
/// the tree's path (correct, as copy on write, but what building in place avoids).
struct TransactionBuilder {
    private(set) var state: DatabaseState
    private(set) var changes: [DocumentChange] = []
    /// The record's payload, encoded as changes are recorded (its size bounds the work).
    private(set) var payload = TransactionRecord.Payload()

    /// The record's payload, ending the building (`Payload.take`: no copy when it is sized close).
    mutating func takePayload() -> [UInt8] { payload.take() }

    /// The state with every recorded change applied, moved out (the building ends).
    mutating func finish() -> DatabaseState { state.moveOut() }

    /// The state as it was given, every recorded change undone (last first), moved out (the
    /// building ends). A change that failed to apply changed nothing and was not recorded.
    mutating func revert() -> DatabaseState {
        state.revert(changes)
        changes = []
        return finish()
    }
    let clock: any KernelClock
    let queryOptions: QueryOptions

    init(state: DatabaseState, clock: any KernelClock, queryOptions: QueryOptions) {
        self.state = state
        self.clock = clock
        self.queryOptions = queryOptions
    }

    /// Operations applied so far. Every write path (JSON transactions, REST, auth, storage,
    /// functions) commits through here, so this is where `transactionOpsMax` holds for all.
    private(set) var operationsApplied = 0

    mutating func apply(_ op: WriteOperation) throws {
        guard operationsApplied < KernelLimits.transactionOpsMax else {
            throw AeroError(.transactionTooLarge, "at most \(KernelLimits.transactionOpsMax) operations per transaction")
        }
        operationsApplied += 1
        switch op {
        case .insert(let c, let doc): try insert(c, doc)
        case .upsert(let c, let doc): try upsert(c, doc)
        case .update(let c, let target, let set):
            for key in try keys(c, target) { try update(c, key: key, set: set) }
        case .delete(let c, let target):
            for key in try keys(c, target) { try delete(c, key: key, depth: 0) }
        }
    }

    private mutating func insert(_ collection: String, _ input: Document) throws {
        let (doc, key) = try validatedInsert(collection, input)
        try record(DocumentChange(collection: collection, key: key, before: nil, after: doc))
    }

    /// The document to insert and its key (the collection's copy ends here, before `record`).
    private func validatedInsert(_ collection: String, _ input: Document) throws -> (Document, JSONValue) {
        let data = try state.collection(collection)
        let doc = try FieldValidator.validateNew(input, schema: data.schema, clock: clock)
        let key = doc[data.schema.primaryKey]!
        guard data.document(forKey: key) == nil else {
            throw AeroError(.duplicateKey, "\(collection): a document with \(data.schema.primaryKey) = \(JSON.encodeString(key)) already exists", invariant: "C1")
        }
        try checkReferences(doc, schema: data.schema)
        return (doc, key)
    }

    private mutating func upsert(_ collection: String, _ input: Document) throws {
        switch try existingKey(collection, input) {
        case .some(let key): try update(collection, key: key, set: input)
        case .none: try insert(collection, input)  // no key (generated: never matches) or no such document
        }
    }

    /// The normalized key of the document `input` names, when one with it exists.
    private func existingKey(_ collection: String, _ input: Document) throws -> JSONValue? {
        let data = try state.collection(collection)
        guard let key = input[data.schema.primaryKey] else { return nil }
        let normalizedKey = try FieldValidator.normalize(key, as: data.schema.fields[data.schema.primaryKey]!.type,
                                                         field: data.schema.primaryKey)
        return data.document(forKey: normalizedKey) == nil ? nil : normalizedKey
    }

    private mutating func update(_ collection: String, key: JSONValue, set: Document) throws {
        guard let change = try validatedUpdate(collection, key: key, set: set) else { return }
        try record(change)
    }

    /// The change an update makes; nil when it changes nothing.
    private func validatedUpdate(_ collection: String, key: JSONValue, set: Document) throws -> DocumentChange? {
        let data = try state.collection(collection)
        let key = try normalizedKey(key, data.schema)
        guard let existing = data.document(forKey: key) else {
            throw AeroError(.documentNotFound, "\(collection): no document with \(data.schema.primaryKey) = \(JSON.encodeString(key))")
        }
        let doc = try FieldValidator.validateUpdate(existing, changes: set, schema: data.schema)
        guard doc != existing else { return nil }
        try checkReferences(doc, schema: data.schema)
        return DocumentChange(collection: collection, key: key, before: existing, after: doc)
    }

    private mutating func delete(_ collection: String, key: JSONValue, depth: Int) throws {
        let (key, existing) = try existingDocument(collection, key: key)
        guard depth < Self.cascadeDepthMax else {
            throw AeroError(.referenceViolation, "cascading deletes deeper than \(Self.cascadeDepthMax) levels")
        }
        try record(DocumentChange(collection: collection, key: key, before: existing, after: nil))
        try enforceOnDelete(collection: collection, key: key, depth: depth)
    }

    /// The normalized key and the document it names; throws when there is none.
    private func existingDocument(_ collection: String, key: JSONValue) throws -> (JSONValue, Document) {
        let data = try state.collection(collection)
        let key = try normalizedKey(key, data.schema)
        guard let existing = data.document(forKey: key) else {
            throw AeroError(.documentNotFound, "\(collection): no document with \(data.schema.primaryKey) = \(JSON.encodeString(key))")
        }
        return (key, existing)
    }

    /// Cascades deeper than this are refused: bounds the work of one delete.
    static let cascadeDepthMax = 16

    private mutating func record(_ change: DocumentChange) throws {
        // AR1 (acknowledged implies replayable): what joins the record must decode at replay.
        if let after = change.after { try TransactionRecord.checkDepth(after, collection: change.collection) }
        // The payload grows with each change: a transaction (cascades, updates by filter) is
        // refused as soon as its record passes transactionBytesMax, not after all its work.
        let documentBytes = payload.append(change)
        try TransactionRecord.checkSize(documentBytes: documentBytes, payloadBytes: payload.byteCount,
                                        collection: change.collection)
        try state.apply(change)
        changes.append(change)
    }

    private func normalizedKey(_ key: JSONValue, _ schema: CollectionSchema) throws -> JSONValue {
        try FieldValidator.normalize(key, as: schema.fields[schema.primaryKey]!.type, field: schema.primaryKey)
    }

    private func keys(_ collection: String, _ target: WriteOperation.Target) throws -> [JSONValue] {
        switch target {
        case .key(let k): return [k]
        case .filter(let json):
            let parsed = try Query.parse(.object(["collection": .string(collection), "filter": json]))
            return try matchingKeys(collection, parsed.filter)
        case .matching(let filter):
            return try matchingKeys(collection, filter)
        }
    }

    /// Keys of every document matching `filter`; more than transactionOpsMax is refused, never cut.
    private func matchingKeys(_ collection: String, _ filter: Filter?) throws -> [JSONValue] {
        let data = try state.collection(collection)
        var options = queryOptions
        options.limitMax = KernelLimits.transactionOpsMax + 1
        let query = Query(collection: collection, filter: filter, limit: options.limitMax)
        let rows = try QueryEngine.execute(query, on: data, options: options).rows
        guard rows.count <= KernelLimits.transactionOpsMax else {
            // Never change a silent subset: refuse the whole operation (C1).
            throw AeroError(.transactionTooLarge, "the filter matches more than \(KernelLimits.transactionOpsMax) documents of \(collection); narrow it")
        }
        return rows.map { $0[data.schema.primaryKey]! }
    }

    // MARK: References

    private func checkReferences(_ doc: Document, schema: CollectionSchema) throws {
        for (name, field) in schema.fields {
            guard let reference = field.references, let value = doc[name], !value.isNull else { continue }
            let target = try state.collection(reference.collection)
            guard target.document(forKey: value) != nil else {
                throw AeroError(.referenceViolation, "\(schema.name).\(name) = \(JSON.encodeString(value)): no such document in \(reference.collection)", invariant: "S1")
            }
        }
    }

    private mutating func enforceOnDelete(collection: String, key: JSONValue, depth: Int) throws {
        for (otherName, other) in state.collections.sorted(by: { $0.key < $1.key }) {
            for (field, schema) in other.schema.fields.sorted(by: { $0.key < $1.key }) {
                guard let reference = schema.references, reference.collection == collection else { continue }
                let referencing = try referencingKeys(other, field: field, value: key, deleting: collection,
                                                      onlyOne: reference.onDelete == .restrict)
                guard !referencing.isEmpty else { continue }
                switch reference.onDelete {
                case .restrict:
                    throw AeroError(.referenceViolation, "\(collection) \(JSON.encodeString(key)) is still referenced by \(otherName).\(field)", invariant: "S1")
                case .cascade:
                    for k in referencing where try state.collection(otherName).document(forKey: k) != nil {
                        try delete(otherName, key: k, depth: depth + 1)
                    }
                case .setNull:
                    for k in referencing { try update(otherName, key: k, set: [field: .null]) }
                }
            }
        }
    }

    /// Keys of the documents of `data` whose `field` references `value`. This runs under the
    /// writer's lock, so it is bounded like any query (Q1): the planner uses an index starting
    /// with `field` when one is declared (a range of exactly the referencing rows); without one,
    /// a scan is allowed up to `referenceScanRowsMax` rows and refused past it naming the index
    /// to declare. More than `transactionOpsMax` referencing rows to cascade or set null is
    /// refused, never cut (C1). `onlyOne`: restrict needs only to know whether one exists.
    private func referencingKeys(_ data: CollectionData, field: String, value: JSONValue, deleting: String,
                                 onlyOne: Bool) throws -> [JSONValue] {
        var options = queryOptions
        options.limitMax = KernelLimits.transactionOpsMax + 1
        // An index path examines at most the limit; a scan at most referenceScanRowsMax rows.
        options.scanRowsMax = max(Self.referenceScanRowsMax, options.limitMax)
        let name = data.schema.name
        let query = Query(collection: name, filter: .compare(field: field, op: .eq, value: value),
                          limit: onlyOne ? 1 : options.limitMax)
        let tooMany = AeroError(.transactionTooLarge, "deleting from \(deleting): more than \(KernelLimits.transactionOpsMax) documents of \(name) reference it through \(field); delete or detach them in smaller transactions first", invariant: "C1")
        let rows: [Document]
        do {
            rows = try QueryEngine.execute(query, on: data, options: options).rows
        } catch let error as AeroError where error.code == .queryUnbounded {
            if data.schema.indexes.contains(where: { $0.kind == .ordered && $0.fields.first == field }) { throw tooMany }
            throw AeroError(.queryUnbounded, "deleting from \(deleting) must find the documents of \(name) whose \(field) references it, and \(name) has more than \(Self.referenceScanRowsMax) documents and no index on \(field): declare one ({\"fields\":[\"\(field)\"]} on \(name))", invariant: "Q1")
        }
        guard rows.count <= KernelLimits.transactionOpsMax else { throw tooMany }
        return rows.map { $0[data.schema.primaryKey]! }
    }

    /// Rows of a referencing collection a delete may scan, under the writer's lock, when no
    /// index starts with the referencing field (restrict, cascade and set null must find the
    /// referencing rows). Past it the delete is refused naming the index to declare.
    static let referenceScanRowsMax = 10_000
}
