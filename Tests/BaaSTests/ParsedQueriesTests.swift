import Testing
import Kernel
@testable import BaaS

/// The bounded memory of parsed query strings (Sources/BaaS/REST/ParsedQueries.swift, issue 19):
/// a hit answers exactly what parsing the text against the same schema would.
@Suite struct ParsedQueriesTests {
    static func schema(qty: FieldType) -> CollectionSchema {
        CollectionSchema(name: "items", primaryKey: "id", fields: [
            "id": FieldSchema(type: .text, required: true), "name": FieldSchema(type: .text, nullable: true),
            "qty": FieldSchema(type: qty, nullable: true),
        ], indexes: [])
    }

    static func same(_ a: PostgRESTQuery, _ b: PostgRESTQuery) -> Bool {
        a.filters == b.filters && a.select == b.select && a.order == b.order && a.limit == b.limit && a.offset == b.offset
            && a.onConflict == b.onConflict && a.columns == b.columns && a.embedded.count == b.embedded.count
    }

    @Test func aHitAnswersWhatParsingWould() throws {
        let memory = ParsedQueries()
        let schema = Self.schema(qty: .int)
        let text = "select=*&id=eq.k42&qty=gt.3&order=qty.desc&limit=5&offset=2"
        let first = try memory.parse(text, schema: schema)
        #expect(memory.count == 1)
        let again = try memory.parse(text, schema: schema)
        #expect(memory.count == 1)
        let parsed = try PostgRESTQuery.parse(text, schema: schema)
        #expect(Self.same(first, parsed) && Self.same(again, parsed))
        #expect(again.filters == [.compare(field: "id", op: .eq, value: .string("k42")), .compare(field: "qty", op: .gt, value: .int(3))])
    }

    @Test func aChangedSchemaParsesAgain() throws {
        let memory = ParsedQueries()
        let text = "qty=eq.5"
        #expect(try memory.parse(text, schema: Self.schema(qty: .int)).filters == [.compare(field: "qty", op: .eq, value: .int(5))])
        // The same collection and text after `qty` became text: typed by the new schema, not remembered.
        #expect(try memory.parse(text, schema: Self.schema(qty: .text)).filters == [.compare(field: "qty", op: .eq, value: .string("5"))])
        #expect(try memory.parse(text, schema: Self.schema(qty: .int)).filters == [.compare(field: "qty", op: .eq, value: .int(5))])
        // Another collection with the same text is its own entry.
        let other = CollectionSchema(name: "other", primaryKey: "id", fields: [
            "id": FieldSchema(type: .text, required: true), "qty": FieldSchema(type: .float, nullable: true),
        ], indexes: [])
        #expect(try memory.parse(text, schema: other).filters == [.compare(field: "qty", op: .eq, value: .float(5))])
        #expect(memory.count == 2)
    }

    @Test func failuresAreNeverKept() throws {
        let memory = ParsedQueries()
        let schema = Self.schema(qty: .int)
        for _ in 0..<2 { #expect(throws: (any Error).self) { try memory.parse("nope=eq.1", schema: schema) } }
        for _ in 0..<2 { #expect(throws: (any Error).self) { try memory.parse("qty=eq.notanint", schema: schema) } }
        #expect(memory.count == 0)
    }

    @Test func theMemoryIsBoundedAndKeepsTextsInUse() throws {
        let memory = ParsedQueries()
        let schema = Self.schema(qty: .int)
        let long = "name=eq." + String(repeating: "x", count: ParsedQueries.queryBytesMax)
        #expect(try memory.parse(long, schema: schema).filters.count == 1)
        #expect(memory.count == 0)  // too long to keep
        _ = try memory.parse("id=eq.kept", schema: schema)
        for i in 0..<(3 * ParsedQueries.entriesMax) {
            _ = try memory.parse("id=eq.k\(i)", schema: schema)
            if i % 100 == 0 { _ = try memory.parse("id=eq.kept", schema: schema) }  // in use: copied forward
            #expect(memory.count <= 2 * ParsedQueries.entriesMax)
        }
        #expect(memory.holds("id=eq.kept", collection: "items"))
        #expect(!memory.holds("id=eq.k0", collection: "items"))  // dropped two turnovers ago
    }
}
