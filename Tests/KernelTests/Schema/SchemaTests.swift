import Testing
@testable import Kernel

@Suite struct SchemaTests {
    static let itemsJSON = #"""
    {"name":"items","primary_key":"id","fields":{"id":{"type":"text","required":true},
     "name":{"type":"text","required":true},"qty":{"type":"int","nullable":true},
     "tags":{"type":"array<text>","nullable":true},"owner_id":{"type":"text","nullable":true},
     "created_at":{"type":"timestamp","default":"now()"}},
     "indexes":[{"fields":["qty"]},{"fields":["name"],"unique":false},{"fields":["name"],"type":"fulltext"}]}
    """#

    @Test func parsesTheIssueExampleAndRoundTrips() throws {
        let schema = try CollectionSchema.parse(try JSON.parse(Self.itemsJSON))
        #expect(schema.primaryKey == "id")
        #expect(schema.fields["tags"]?.type == .array(.text))
        #expect(schema.fields["name"]?.nullable == false)
        #expect(schema.fields["created_at"]?.defaultValue == .now)
        #expect(schema.indexes.map(\.name) == ["items_qty_ordered", "items_name_ordered", "items_name_fulltext"])
        #expect(try CollectionSchema.parse(schema.json) == schema)
    }

    @Test func declaresAMissingPrimaryKeyAsGeneratedUUID() throws {
        let schema = try CollectionSchema.parse(try JSON.parse(#"{"name":"t","fields":{"a":{"type":"int"}}}"#))
        #expect(schema.fields["id"] == FieldSchema(type: .uuid, nullable: false, defaultValue: .randomUUID))
    }

    @Test(arguments: [
        #"{"fields":{}}"#,
        #"{"name":"1bad"}"#,
        #"{"name":"t","extra":1}"#,
        #"{"name":"t","fields":{"a":{"type":"decimal"}}}"#,
        #"{"name":"t","fields":{"a":{"type":"int","default":"x"}}}"#,
        #"{"name":"t","fields":{"a":{"type":"int","default":"now()"}}}"#,
        #"{"name":"t","fields":{"id":{"type":"float"}}}"#,
        #"{"name":"t","fields":{"id":{"type":"text","nullable":true}}}"#,
        #"{"name":"t","indexes":[{"fields":["nope"]}]}"#,
        #"{"name":"t","fields":{"a":{"type":"int"}},"indexes":[{"fields":["a"],"type":"fulltext"}]}"#,
        #"{"name":"t","fields":{"a":{"type":"int"}},"indexes":[{"fields":["a"]},{"fields":["a"]}]}"#,
        #"{"name":"t","fields":{"a":{"type":"text","nullable":false,"references":{"collection":"u","on_delete":"set_null"}}}}"#,
    ])
    func refusesBadSchemas(_ text: String) throws {
        let json = try JSON.parse(text)
        #expect(throws: AeroError.self) { try CollectionSchema.parse(json) }
    }

    @Test func validatesDocumentsWithDefaultsAndNormalForms() throws {
        let schema = try CollectionSchema.parse(try JSON.parse(Self.itemsJSON))
        let clock = ManualClock(startMicros: 1_767_225_600_123_000)
        let doc = try FieldValidator.validateNew(["id": .string("a1"), "name": .string("x"), "tags": .array([.string("t")])],
                                                 schema: schema, clock: clock)
        #expect(doc["created_at"] == .string("2026-01-01T00:00:00.123+00:00"))
        #expect(doc["qty"] == .null)
        #expect(doc["owner_id"] == .null)
        #expect(throws: AeroError.self) { try FieldValidator.validateNew(["id": .string("a")], schema: schema, clock: clock) }
        #expect(throws: AeroError.self) {
            try FieldValidator.validateNew(["id": .string("a"), "name": .string("x"), "qty": .string("3")], schema: schema, clock: clock)
        }
        #expect(throws: AeroError.self) {
            try FieldValidator.validateNew(["id": .string("a"), "name": .string("x"), "nope": .int(1)], schema: schema, clock: clock)
        }
        #expect(throws: AeroError.self) {
            try FieldValidator.validateNew(["id": .string("a"), "name": .null], schema: schema, clock: clock)
        }
        #expect(throws: AeroError.self) {
            try FieldValidator.validateNew(["id": .string("a"), "name": .string("x"), "tags": .array([.int(1)])], schema: schema, clock: clock)
        }
        let updated = try FieldValidator.validateUpdate(doc, changes: ["qty": .int(4)], schema: schema)
        #expect(updated["qty"] == .int(4))
        #expect(throws: AeroError.self) { try FieldValidator.validateUpdate(doc, changes: ["id": .string("b")], schema: schema) }
    }

    @Test func timestampsParseToOneSortableForm() {
        let cases: [(String, String)] = [
            ("2026-11-24", "2026-11-24T00:00:00+00:00"),
            ("2026-11-24T10:20:30Z", "2026-11-24T10:20:30+00:00"),
            ("2026-11-24 10:20:30.5+02:00", "2026-11-24T08:20:30.5+00:00"),
            ("2026-11-24T10:20:30.1234567-0130", "2026-11-24T11:50:30.123456+00:00"),
            ("2024-02-29T23:59", "2024-02-29T23:59:00+00:00"),
            ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999999+00:00"),
        ]
        for (input, expected) in cases {
            let parsed = Timestamp.parse(input)
            #expect(parsed.map(Timestamp.format) == expected, "\(input)")
        }
        for bad in ["2025-02-29", "2026-13-01", "2026-11-24T25:00", "2026-11-24T10:20:30+", "yesterday", "2026-11-24T10:20:30Zjunk"] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
        #expect("2026-11-24T10:20:30+00:00" < "2026-11-24T10:20:30.5+00:00")
    }

    @Test func uuidsNormalize() {
        #expect(FieldValidator.normalizeUUID("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        #expect(FieldValidator.normalizeUUID("a0eebc999c0b4ef8bb6d6bb9bd380a11") == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        #expect(FieldValidator.normalizeUUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1") == nil)
        #expect(FieldValidator.normalizeUUID(FieldValidator.randomUUID()) != nil)
    }
}
