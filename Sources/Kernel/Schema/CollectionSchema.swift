// Declared schemas: what a collection's documents must look like (S1).
//
// JSON shape (the admin API and the WAL both use it):
//   {"name":"items","primary_key":"id",
//    "fields":{"id":{"type":"text","required":true},
//              "qty":{"type":"int","nullable":true},
//              "owner_id":{"type":"text","nullable":true,
//                          "references":{"collection":"users","on_delete":"set_null"}},
//              "created_at":{"type":"timestamp","default":"now()"}},
//    "indexes":[{"fields":["qty"]},{"fields":["name"],"unique":true},{"fields":["name"],"type":"fulltext"}]}
//
// Invariants:
// - The primary key is a declared field of type uuid, text or int; it is always required, never null.
// - A field's `required` is what an insert enforces: no default, and declared required or not
//   nullable (so a primary key without a default shows `"required": true`).
// - Every index names declared fields; fulltext indexes name exactly one text field.
// - Index names are unique in a collection; an unnamed index is named `<collection>_<fields>_<kind>`.

public indirect enum FieldType: Sendable, Hashable, CustomStringConvertible {
    case text, int, float, bool, timestamp, uuid, json
    case array(FieldType)

    public var description: String {
        switch self {
        case .text: return "text"
        case .int: return "int"
        case .float: return "float"
        case .bool: return "bool"
        case .timestamp: return "timestamp"
        case .uuid: return "uuid"
        case .json: return "json"
        case .array(let element): return "array<\(element)>"
        }
    }

    public static func parse(_ text: String) -> FieldType? {
        switch text {
        case "text": return .text
        case "int": return .int
        case "float": return .float
        case "bool": return .bool
        case "timestamp": return .timestamp
        case "uuid": return .uuid
        case "json": return .json
        default:
            guard text.hasPrefix("array<"), text.hasSuffix(">") else { return nil }
            let inner = String(text.dropFirst(6).dropLast())
            guard let element = parse(inner) else { return nil }
            return .array(element)
        }
    }
}

public enum ReferenceAction: String, Sendable, Hashable {
    case restrict, cascade
    case setNull = "set_null"
}

public struct FieldReference: Sendable, Hashable {
    public let collection: String
    public let onDelete: ReferenceAction

    public init(collection: String, onDelete: ReferenceAction) {
        self.collection = collection
        self.onDelete = onDelete
    }
}

public enum DefaultValue: Sendable, Hashable {
    case now
    case randomUUID
    case literal(JSONValue)
}

public struct FieldSchema: Sendable, Hashable {
    public let type: FieldType
    /// What an insert enforces: the field must be given, because it has no default and is
    /// declared required or not nullable (a primary key without a default is). Normalized at
    /// construction so the stored and shown schema says so (issue 13; FieldValidator.validateNew).
    public let required: Bool
    public let nullable: Bool
    public let defaultValue: DefaultValue?
    public let references: FieldReference?

    public init(type: FieldType, required: Bool = false, nullable: Bool = false,
                defaultValue: DefaultValue? = nil, references: FieldReference? = nil) {
        self.type = type
        self.required = defaultValue == nil && (required || !nullable)
        self.nullable = nullable
        self.defaultValue = defaultValue
        self.references = references
    }
}

public enum IndexKind: String, Sendable, Hashable {
    case ordered
    case fulltext
}

public struct IndexSchema: Sendable, Hashable {
    public let name: String
    public let fields: [String]
    public let unique: Bool
    public let kind: IndexKind

    public init(name: String, fields: [String], unique: Bool = false, kind: IndexKind = .ordered) {
        self.name = name
        self.fields = fields
        self.unique = unique
        self.kind = kind
    }
}

public struct CollectionSchema: Sendable, Hashable {
    public let name: String
    public let primaryKey: String
    public let fields: [String: FieldSchema]
    public let indexes: [IndexSchema]

    public init(name: String, primaryKey: String, fields: [String: FieldSchema], indexes: [IndexSchema]) {
        self.name = name
        self.primaryKey = primaryKey
        self.fields = fields
        self.indexes = indexes
    }

    /// Field names in a stable order (primary key first, then by name).
    public var fieldNames: [String] {
        [primaryKey] + fields.keys.filter { $0 != primaryKey }.sorted()
    }

    public func index(named name: String) -> IndexSchema? { indexes.first { $0.name == name } }
}
