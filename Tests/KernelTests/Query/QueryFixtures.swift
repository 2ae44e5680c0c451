@testable import Kernel

enum QueryFixtures {
    static let schema = CollectionSchema(
        name: "items", primaryKey: "id",
        fields: [
            "id": FieldSchema(type: .text, required: true),
            "sku": FieldSchema(type: .text, nullable: true),
            "name": FieldSchema(type: .text, nullable: true),
            "qty": FieldSchema(type: .int, nullable: true),
            "price": FieldSchema(type: .float, nullable: true),
            "active": FieldSchema(type: .bool, nullable: true),
            "tags": FieldSchema(type: .array(.text), nullable: true),
            "meta": FieldSchema(type: .json, nullable: true),
            "cat": FieldSchema(type: .text, nullable: true),
            "body": FieldSchema(type: .text, nullable: true),
        ],
        indexes: [
            IndexSchema(name: "items_sku", fields: ["sku"], unique: true),
            IndexSchema(name: "items_qty", fields: ["qty"]),
            IndexSchema(name: "items_cat_qty", fields: ["cat", "qty"]),
            IndexSchema(name: "items_body_fts", fields: ["body"], kind: .fulltext),
        ])

    static func doc(_ id: String, sku: String? = nil, name: String? = nil, qty: Int64? = nil, price: Double? = nil,
                    active: Bool? = nil, tags: [String]? = nil, meta: JSONValue = .null, cat: String? = nil,
                    body: String? = nil) -> Document {
        ["id": .string(id), "sku": sku.map(JSONValue.string) ?? .null, "name": name.map(JSONValue.string) ?? .null,
         "qty": qty.map(JSONValue.int) ?? .null, "price": price.map(JSONValue.float) ?? .null,
         "active": active.map(JSONValue.bool) ?? .null,
         "tags": tags.map { .array($0.map(JSONValue.string)) } ?? .null, "meta": meta,
         "cat": cat.map(JSONValue.string) ?? .null, "body": body.map(JSONValue.string) ?? .null]
    }

    /// A small collection with nulls, mixed values and text.
    static func data() throws -> CollectionData {
        try CollectionData(schema: schema, documents: [
            doc("a1", sku: "S-1", name: "Apple", qty: 5, price: 1.5, active: true, tags: ["red", "fruit"],
                meta: .object(["color": .string("red"), "size": .int(3)]), cat: "fruit",
                body: "The quick brown fox jumps over the lazy dog"),
            doc("a2", sku: "S-2", name: "apricot", qty: 12, price: 3, active: false, tags: ["orange", "fruit"],
                meta: .object(["color": .string("orange")]), cat: "fruit", body: "Brown bread and quick lunch"),
            doc("b1", sku: "S-3", name: "Banana_split", qty: nil, price: nil, active: nil, tags: ["yellow"],
                cat: "dessert", body: "lazy afternoon"),
            doc("c1", sku: nil, name: "carrot 100%", qty: 0, price: 0.25, active: true, tags: [], cat: "veg",
                body: nil),
            doc("d1", sku: nil, name: nil, qty: -3, price: 2.0, active: false, tags: nil, cat: nil,
                body: "fox and dog are friends"),
        ])
    }

    static func json(_ text: String) throws -> JSONValue { try JSON.parse(text) }

    /// Runs a JSON query and returns the ids of the rows in order.
    static func ids(_ text: String, on data: CollectionData, options: QueryOptions = QueryOptions()) throws -> [String] {
        let result = try QueryEngine.execute(try Query.parse(try json(text)), on: data, options: options)
        return result.rows.map { $0["id"]?.stringValue ?? "?" }
    }

    static func plan(_ text: String, on data: CollectionData, options: QueryOptions = QueryOptions()) throws -> Plan {
        try QueryEngine.explain(try Query.parse(try json(text)), on: data, options: options)
    }
}
