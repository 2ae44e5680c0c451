// The stored schema says what inserts enforce (issue 13 part 7): a field shows `"required": true`
// exactly when an insert without it is refused (no default, and declared required or not
// nullable); a primary key without a default is required.

import Testing
@testable import Kernel

@Suite struct SchemaRequiredTests {
    static let json = #"""
    {"name":"notes","primary_key":"id","fields":{"id":{"type":"text"},
     "title":{"type":"text","nullable":false},"body":{"type":"text"},
     "pinned":{"type":"bool","required":true,"default":false},
     "created_at":{"type":"timestamp","nullable":false,"default":"now()"},
     "rank":{"type":"int","required":true,"nullable":true}}}
    """#

    @Test func requiredIsExactlyWhatAnInsertRefusesWithout() throws {
        let schema = try CollectionSchema.parse(try JSON.parse(Self.json))
        let shown = schema.json["fields"]
        let full: Document = ["id": .string("a"), "title": .string("t"), "body": .null, "pinned": .bool(true),
                              "created_at": .string("2026-01-01T00:00:00Z"), "rank": .null]
        for name in schema.fields.keys.sorted() {
            var without = full
            without[name] = nil
            let refused = (try? FieldValidator.validateNew(without, schema: schema, clock: SystemClock())) == nil
            #expect(shown?[name]?["required"] == .bool(refused), "\(name)")
        }
        #expect(shown?["id"]?["required"] == .bool(true))  // the primary key, no default
        #expect(shown?["pinned"]?["required"] == .bool(false))  // declared required, but a default fills it
        #expect(try CollectionSchema.parse(schema.json) == schema)
    }
}
