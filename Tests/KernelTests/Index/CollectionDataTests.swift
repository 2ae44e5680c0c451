import Testing
@testable import Kernel

enum IndexFixtures {
    static let schema = CollectionSchema(
        name: "items", primaryKey: "id",
        fields: [
            "id": FieldSchema(type: .text, required: true),
            "sku": FieldSchema(type: .text, nullable: true),
            "qty": FieldSchema(type: .int, nullable: true),
            "body": FieldSchema(type: .text, nullable: true),
        ],
        indexes: [
            IndexSchema(name: "items_sku", fields: ["sku"], unique: true),
            IndexSchema(name: "items_qty", fields: ["qty"]),
            IndexSchema(name: "items_body_fts", fields: ["body"], kind: .fulltext),
        ])

    static func doc(_ id: String, sku: String?, qty: Int64?, body: String? = nil) -> Document {
        ["id": .string(id), "sku": sku.map(JSONValue.string) ?? .null, "qty": qty.map(JSONValue.int) ?? .null,
         "body": body.map(JSONValue.string) ?? .null]
    }
}

/// Every index holds exactly the entries derived from the documents.
func expectConsistent(_ data: CollectionData) {
    for index in data.indexes {
        var expected: [IndexKey] = []
        for doc in data.allDocuments() { expected += index.keys(for: doc, primaryKey: doc[data.schema.primaryKey]!) }
        #expect(Array(index.entries).map(\.key) == expected.sorted(), "index \(index.schema.name)")
    }
}

@Suite struct CollectionDataTests {
    typealias F = IndexFixtures

    @Test func putReplaceRemoveKeepIndexesConsistent() throws {
        var data = CollectionData(schema: F.schema)
        #expect(try data.put(F.doc("a", sku: "S1", qty: 5, body: "Hello, World")) == nil)
        #expect(try data.put(F.doc("b", sku: nil, qty: 7, body: "hello again")) == nil)
        let old = try data.put(F.doc("a", sku: "S2", qty: 6, body: "bye"))
        #expect(old?["sku"] == .string("S1"))
        #expect(data.count == 2)
        expectConsistent(data)
        #expect(data.remove(key: .string("a"))?["qty"] == .int(6))
        #expect(data.remove(key: .string("zz")) == nil)
        #expect(data.count == 1)
        expectConsistent(data)
        #expect(data.document(forKey: .string("b"))?["qty"] == .int(7))
    }

    @Test func uniqueViolationThrowsAndLeavesDataUnchanged() throws {
        var data = CollectionData(schema: F.schema)
        try data.put(F.doc("a", sku: "S1", qty: 1))
        try data.put(F.doc("b", sku: "S2", qty: 2))
        let before = data
        let bytes = data.approximateBytes
        let error = #expect(throws: AeroError.self) { try data.put(F.doc("c", sku: "S1", qty: 3)) }
        #expect(error?.code == .duplicateKey)
        #expect(error?.message.contains("items_sku") == true)
        #expect(error?.message.contains("\"S1\"") == true)
        #expect(throws: AeroError.self) { try data.put(F.doc("b", sku: "S1", qty: 3)) }
        #expect(data.count == 2)
        #expect(data.document(forKey: .string("c")) == nil)
        #expect(data.document(forKey: .string("b"))?["sku"] == .string("S2"))
        #expect(data.approximateBytes == bytes)
        #expect(Array(data.allDocuments()) == Array(before.allDocuments()))
        expectConsistent(data)
        // Replacing a document with its own unique value is not a conflict.
        try data.put(F.doc("a", sku: "S1", qty: 10))
    }

    @Test func nullsNeverConflictInUniqueIndexes() throws {
        var data = CollectionData(schema: F.schema)
        for i in 0..<5 { try data.put(F.doc("n\(i)", sku: nil, qty: nil)) }
        #expect(data.count == 5)
        expectConsistent(data)
        _ = try CollectionData(schema: F.schema, documents: (0..<5).map { F.doc("n\($0)", sku: nil, qty: nil) })
    }

    @Test func bulkBuildSortsChecksAndMatchesIncrementalBuild() throws {
        let docs = (0..<3_000).map { F.doc("k\(($0 * 7919) % 3_000)", sku: "s\($0)", qty: Int64($0 % 17), body: "w\($0 % 5) common") }
        let bulk = try CollectionData(schema: F.schema, documents: docs)
        var incremental = CollectionData(schema: F.schema)
        for d in docs { try incremental.put(d) }
        #expect(Array(bulk.allDocuments()) == Array(incremental.allDocuments()))
        #expect(bulk.approximateBytes == incremental.approximateBytes)
        expectConsistent(bulk)
        for (a, b) in zip(bulk.indexes, incremental.indexes) { #expect(Array(a.entries).map(\.key) == Array(b.entries).map(\.key)) }

        let dupKey = #expect(throws: AeroError.self) { try CollectionData(schema: F.schema, documents: [docs[0], docs[0]]) }
        #expect(dupKey?.code == .duplicateKey)
        let dupUnique = #expect(throws: AeroError.self) {
            try CollectionData(schema: F.schema, documents: [F.doc("a", sku: "X", qty: 1), F.doc("b", sku: "X", qty: 2)])
        }
        #expect(dupUnique?.code == .duplicateKey)
        #expect(dupUnique?.message.contains("items_sku") == true)
    }

    @Test func approximateBytesTracksWritesAndReturnsToZero() throws {
        var data = CollectionData(schema: F.schema)
        try data.put(F.doc("a", sku: "S1", qty: 1, body: "some words here"))
        let one = data.approximateBytes
        #expect(one > 0)
        try data.put(F.doc("a", sku: "S1", qty: 1, body: String(repeating: "x", count: 1_000)))
        #expect(data.approximateBytes > one + 700)  // 1000 more text bytes, two fewer fulltext entries
        data.remove(key: .string("a"))
        #expect(data.approximateBytes == 0)
    }

    @Test func withSchemaAddsAndDropsIndexes() throws {
        var data = CollectionData(schema: F.schema)
        try data.put(F.doc("a", sku: "S1", qty: 1))
        try data.put(F.doc("b", sku: "S2", qty: 1))
        let byQty = CollectionSchema(name: "items", primaryKey: "id", fields: F.schema.fields,
                                     indexes: [IndexSchema(name: "items_qty_unique", fields: ["qty"], unique: true)])
        let error = #expect(throws: AeroError.self) { try data.withSchema(byQty) }
        #expect(error?.code == .duplicateKey)
        let noIndexes = CollectionSchema(name: "items", primaryKey: "id", fields: F.schema.fields, indexes: [])
        let dropped = try data.withSchema(noIndexes)
        #expect(dropped.indexes.isEmpty)
        #expect(dropped.approximateBytes < data.approximateBytes)
        let restored = try dropped.withSchema(F.schema)
        expectConsistent(restored)
        #expect(restored.approximateBytes == data.approximateBytes)
        #expect(data.indexes.count == 3)
    }

    @Test func fulltextTokenizationIsCaseFoldedUnicodeAndUnstemmed() {
        #expect(TextTokenizer.tokens("Hello, WORLD! runs-running") == ["hello", "world", "runs", "running"])
        #expect(TextTokenizer.tokens("Ünïcödé 東京 café2024") == ["ünïcödé", "東京", "café2024"])
        #expect(TextTokenizer.tokens("  ...  ").isEmpty)
    }

    /// A database state applies a change to its collection in place (the dictionary's modify
    /// accessor moves the value out while it changes): the first change after a snapshot copies
    /// the tree's path (MVCC: the snapshot never changes), a second change to the same path
    /// mutates that copy instead of copying it again, and a change for an unknown collection
    /// throws and adds nothing.
    @Test func stateChangesCopyThePathOnceAfterASnapshotAndThenMutateInPlace() throws {
        var state = DatabaseState.empty
        try state.apply(SchemaChange.create(IndexFixtures.schema))
        func insert(_ id: String) throws {
            try state.apply(DocumentChange(collection: "items", key: .string(id), before: nil,
                                           after: IndexFixtures.doc(id, sku: id, qty: 1)))
        }
        for i in 0..<5 { try insert("k\(i)") }
        func root(_ s: DatabaseState) -> ObjectIdentifier { ObjectIdentifier(s.collections["items"]!.documents.root!) }
        let snapshot = state
        try insert("k5")
        let copied = root(state)
        #expect(copied != root(snapshot))
        try insert("k6")
        #expect(root(state) == copied, "the second change mutates the copy the first one made")
        try state.apply(DocumentChange(collection: "items", key: .string("k0"), before: IndexFixtures.doc("k0", sku: "k0", qty: 1),
                                       after: nil))
        #expect(root(state) == copied)
        #expect(snapshot.collections["items"]!.count == 5)
        #expect(state.collections["items"]!.count == 6)
        expectConsistent(state.collections["items"]!)
        expectConsistent(snapshot.collections["items"]!)
        #expect(throws: AeroError.self) {
            try state.apply(DocumentChange(collection: "nothere", key: .string("x"), before: nil, after: ["id": .string("x")]))
        }
        #expect(state.collections["nothere"] == nil)
        #expect(state.collections.count == 1)
    }

    /// `version` and `schemaVersion` (what RealtimeService's policy watch compares): a new stamp
    /// with every write, schema change and built collection; none for a refused or empty write;
    /// a snapshot keeps its own.
    @Test func versionStampsChangeWithEveryWriteAndNeverRepeat() throws {
        var state = DatabaseState.empty
        let emptySchemas = state.schemaVersion
        try state.apply(SchemaChange.create(IndexFixtures.schema))
        #expect(state.schemaVersion != emptySchemas)
        var seen: Set<UInt64> = [state.collections["items"]!.version]
        func stamp() -> UInt64 { state.collections["items"]!.version }
        try state.apply(DocumentChange(collection: "items", key: .string("a"), before: nil, after: F.doc("a", sku: "S1", qty: 1)))
        #expect(seen.insert(stamp()).inserted)
        let snapshot = state
        try state.apply(DocumentChange(collection: "items", key: .string("b"), before: nil, after: F.doc("b", sku: "S2", qty: 2)))
        #expect(seen.insert(stamp()).inserted)
        #expect(snapshot.collections["items"]!.version != stamp(), "the snapshot keeps the stamp of its contents")
        #expect(state.schemaVersion == snapshot.schemaVersion, "a write changes no schema")
        // Refused and empty writes change nothing, so they keep the stamp.
        var data = state.collections["items"]!
        let before = data.version
        #expect(throws: AeroError.self) { try data.put(F.doc("c", sku: "S1", qty: 3)) }
        #expect(data.remove(key: .string("zz")) == nil)
        #expect(data.version == before)
        #expect(data.remove(key: .string("a")) != nil)
        #expect(seen.insert(data.version).inserted)
        // A collection built again from the same documents is a new collection: a new stamp.
        let rebuilt = try CollectionData(schema: F.schema, documents: Array(data.allDocuments()))
        #expect(seen.insert(rebuilt.version).inserted)
        #expect(seen.insert(try data.withSchema(F.schema).version).inserted)
        let schemas = state.schemaVersion
        try state.apply(SchemaChange.drop("items"))
        #expect(state.schemaVersion != schemas)
    }
}
