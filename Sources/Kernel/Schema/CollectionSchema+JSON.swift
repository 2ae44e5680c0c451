// CollectionSchema <-> JSON (the shape documented at the top of CollectionSchema.swift).
//
// Parsing is strict: unknown keys, wrong types, undeclared index fields, bad defaults and
// bad names are refused with AERO_SCHEMA_INVALID naming the offending part. Defaults filled in:
// `primary_key` = "id"; a primary key missing from `fields` is declared as uuid with
// default gen_random_uuid(); `nullable` = not `required`; index `type` = ordered.

extension CollectionSchema {
    public static func parse(_ json: JSONValue) throws -> CollectionSchema {
        let root = try SchemaReader(json, at: "schema")
        try root.allowOnly(["name", "primary_key", "fields", "indexes"])
        let name = try root.requiredString("name")
        try validateName(name, what: "collection name")
        let primaryKey = try root.optionalString("primary_key") ?? "id"
        try validateName(primaryKey, what: "primary key")
        var fields = try parseFields(root.value["fields"] ?? .object([:]), primaryKey: primaryKey)
        if fields[primaryKey] == nil {
            fields[primaryKey] = FieldSchema(type: .uuid, required: false, nullable: false, defaultValue: .randomUUID)
        }
        let pk = fields[primaryKey]!
        guard [.uuid, .text, .int].contains(pk.type) else {
            throw invalid("primary key \(primaryKey) must be uuid, text or int, not \(pk.type)")
        }
        guard !pk.nullable else { throw invalid("primary key \(primaryKey) cannot be nullable") }
        guard pk.references == nil else { throw invalid("primary key \(primaryKey) cannot be a reference") }
        let indexes = try parseIndexes(root.value["indexes"] ?? .array([]), collection: name, fields: fields)
        return CollectionSchema(name: name, primaryKey: primaryKey, fields: fields, indexes: indexes)
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.schemaInvalid, message, invariant: "S1") }

    /// Names: ASCII letter or `_`, then letters, digits, `_`; at most KernelLimits.nameBytesMax bytes.
    public static func validateName(_ name: String, what: String) throws {
        let bytes = Array(name.utf8)
        let ok = !bytes.isEmpty && bytes.count <= KernelLimits.nameBytesMax && bytes.enumerated().allSatisfy { i, b in
            (b >= 97 && b <= 122) || (b >= 65 && b <= 90) || b == 95 || (i > 0 && b >= 48 && b <= 57)
        }
        guard ok else {
            throw invalid("\(what) \"\(name)\" must be 1-\(KernelLimits.nameBytesMax) ASCII letters, digits or _, not starting with a digit")
        }
    }

    private static func parseFields(_ json: JSONValue, primaryKey: String) throws -> [String: FieldSchema] {
        guard case .object(let entries) = json else { throw invalid("fields must be an object") }
        guard entries.count <= KernelLimits.fieldsPerCollectionMax else {
            throw invalid("at most \(KernelLimits.fieldsPerCollectionMax) fields per collection")
        }
        var fields: [String: FieldSchema] = [:]
        for (name, spec) in entries {
            try validateName(name, what: "field name")
            fields[name] = try parseField(name, spec, isPrimaryKey: name == primaryKey)
        }
        return fields
    }

    /// `nullable` defaults to `!required`, except for the primary key, which is never nullable.
    static func parseField(_ name: String, _ json: JSONValue, isPrimaryKey: Bool) throws -> FieldSchema {
        let reader = try SchemaReader(json, at: "field \(name)")
        try reader.allowOnly(["type", "required", "nullable", "default", "references"])
        let typeName = try reader.requiredString("type")
        guard let type = FieldType.parse(typeName) else {
            throw invalid("field \(name): unknown type \"\(typeName)\" (text, int, float, bool, timestamp, uuid, json, array<T>)")
        }
        let required = try reader.optionalBool("required") ?? false
        let nullable = try reader.optionalBool("nullable") ?? (!required && !isPrimaryKey)
        let defaultValue = try reader.value["default"].map { try parseDefault($0, type: type, field: name) }
        let references = try reader.value["references"].map { try parseReference($0, field: name) }
        if references?.onDelete == .setNull && !nullable {
            throw invalid("field \(name): on_delete set_null needs a nullable field")
        }
        return FieldSchema(type: type, required: required, nullable: nullable,
                           defaultValue: defaultValue, references: references)
    }

    private static func parseDefault(_ json: JSONValue, type: FieldType, field: String) throws -> DefaultValue {
        if case .string("now()") = json {
            guard type == .timestamp else { throw invalid("field \(field): default now() needs a timestamp field") }
            return .now
        }
        if case .string("gen_random_uuid()") = json {
            guard type == .uuid || type == .text else {
                throw invalid("field \(field): default gen_random_uuid() needs a uuid or text field")
            }
            return .randomUUID
        }
        // A default is logged inside the schema record (TransactionRecord.framing.fieldDefault):
        // deeper than documentDepthMax it would not decode at replay.
        guard json.nestingDepth(cappedAt: KernelLimits.documentDepthMax + 1) <= KernelLimits.documentDepthMax else {
            throw invalid("field \(field): a default may nest at most \(KernelLimits.documentDepthMax) levels deep")
        }
        do {
            return .literal(try FieldValidator.normalize(json, as: type, field: field))
        } catch let error as AeroError {
            throw invalid("field \(field): default \(JSON.encodeString(json)) is not a valid \(type): \(error.message)")
        }
    }

    private static func parseReference(_ json: JSONValue, field: String) throws -> FieldReference {
        if case .string(let collection) = json {
            try validateName(collection, what: "referenced collection")
            return FieldReference(collection: collection, onDelete: .restrict)
        }
        let reader = try SchemaReader(json, at: "field \(field) references")
        try reader.allowOnly(["collection", "on_delete"])
        let collection = try reader.requiredString("collection")
        try validateName(collection, what: "referenced collection")
        let actionName = try reader.optionalString("on_delete") ?? "restrict"
        guard let action = ReferenceAction(rawValue: actionName) else {
            throw invalid("field \(field): on_delete must be restrict, cascade or set_null")
        }
        return FieldReference(collection: collection, onDelete: action)
    }

    private static func parseIndexes(_ json: JSONValue, collection: String,
                                     fields: [String: FieldSchema]) throws -> [IndexSchema] {
        guard case .array(let items) = json else { throw invalid("indexes must be an array") }
        guard items.count <= KernelLimits.indexesPerCollectionMax else {
            throw invalid("at most \(KernelLimits.indexesPerCollectionMax) indexes per collection")
        }
        var indexes: [IndexSchema] = []
        for item in items {
            let index = try parseIndex(item, collection: collection, fields: fields)
            guard !indexes.contains(where: { $0.name == index.name }) else {
                throw AeroError(.indexExists, "index \(index.name) is declared twice on \(collection)")
            }
            indexes.append(index)
        }
        return indexes
    }

    static func parseIndex(_ json: JSONValue, collection: String, fields: [String: FieldSchema]) throws -> IndexSchema {
        let reader = try SchemaReader(json, at: "index")
        try reader.allowOnly(["name", "fields", "unique", "type"])
        guard case .array(let names)? = reader.value["fields"], !names.isEmpty else {
            throw invalid("index fields must be a non-empty array of field names")
        }
        let fieldNames = try names.map { value -> String in
            guard case .string(let s) = value else { throw invalid("index names an undeclared field \(JSON.encodeString(value))") }
            if fields[s] != nil { return s }
            // A JSON path into a json or array field (`doc->>color`, `doc->n::int`; FieldPath),
            // stored in its canonical text so filters written either way find it (T1).
            guard FieldPath.isPath(s), let path = try? FieldPath(parsing: s), let field = fields[path.column], !path.steps.isEmpty else {
                throw invalid("index names an undeclared field \(JSON.encodeString(value))")
            }
            switch field.type {
            case .json, .array: return path.description
            default: throw invalid("index path \(s) needs a json or array field, \(path.column) is \(field.type)")
            }
        }
        guard Set(fieldNames).count == fieldNames.count else { throw invalid("index names a field twice") }
        let kindName = try reader.optionalString("type") ?? "ordered"
        guard let kind = IndexKind(rawValue: kindName) else { throw invalid("index type must be ordered or fulltext") }
        let unique = try reader.optionalBool("unique") ?? false
        if kind == .fulltext {
            guard fieldNames.count == 1, fields[fieldNames[0]]?.type == .text else {
                throw invalid("a fulltext index names exactly one text field")
            }
            guard !unique else { throw invalid("a fulltext index cannot be unique") }
        }
        let name = try reader.optionalString("name")
            ?? String("\(collection)_\(fieldNames.joined(separator: "_"))_\(unique ? "unique" : kind.rawValue)"
                .map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" }.prefix(KernelLimits.nameBytesMax))  // paths: doc->>c -> doc___c
        try validateName(name, what: "index name")
        return IndexSchema(name: name, fields: fieldNames, unique: unique, kind: kind)
    }

    /// The schema as JSON, in the same shape `parse` accepts (parse(json) == self).
    public var json: JSONValue {
        var fieldsJSON: [String: JSONValue] = [:]
        for (name, field) in fields { fieldsJSON[name] = field.json }
        return .object([
            "name": .string(name),
            "primary_key": .string(primaryKey),
            "fields": .object(fieldsJSON),
            "indexes": .array(indexes.map(\.json)),
        ])
    }
}

extension FieldSchema {
    public var json: JSONValue {
        var out: [String: JSONValue] = [
            "type": .string(type.description), "required": .bool(required), "nullable": .bool(nullable),
        ]
        switch defaultValue {
        case .now?: out["default"] = .string("now()")
        case .randomUUID?: out["default"] = .string("gen_random_uuid()")
        case .literal(let v)?: out["default"] = v
        case nil: break
        }
        if let references {
            out["references"] = .object(["collection": .string(references.collection),
                                         "on_delete": .string(references.onDelete.rawValue)])
        }
        return .object(out)
    }
}

extension IndexSchema {
    public var json: JSONValue {
        .object(["name": .string(name), "fields": .array(fields.map { .string($0) }),
                 "unique": .bool(unique), "type": .string(kind.rawValue)])
    }
}

/// Reads an object strictly, with errors that say where.
struct SchemaReader {
    let value: [String: JSONValue]
    let location: String

    init(_ json: JSONValue, at location: String) throws {
        guard case .object(let o) = json else { throw CollectionSchema.invalid("\(location) must be a JSON object") }
        self.value = o
        self.location = location
    }

    func allowOnly(_ keys: Set<String>) throws {
        for key in value.keys where !keys.contains(key) {
            throw CollectionSchema.invalid("\(location): unknown key \"\(key)\" (allowed: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    func requiredString(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw CollectionSchema.invalid("\(location): \(key) is required") }
        return s
    }

    func optionalString(_ key: String) throws -> String? {
        guard let v = value[key] else { return nil }
        guard case .string(let s) = v else { throw CollectionSchema.invalid("\(location): \(key) must be a string") }
        return s
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let v = value[key] else { return nil }
        guard case .bool(let b) = v else { throw CollectionSchema.invalid("\(location): \(key) must be true or false") }
        return b
    }
}
