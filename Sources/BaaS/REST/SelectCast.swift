// JSON paths and casts in `select=` (issue 22, PostgREST "JSON columns" and "Casting columns"):
//   select=id,doc->color,doc->>color,c:doc->tags->0,qty::text,n:doc->>n::int
// A selected path is named by its last key (an alias renames it), a cast keeps the column's
// name: `qty::text` answers `{"qty":"1"}`. Casts: text, int, float, bool, json (FieldPath.Cast).
//
// Errors, as PostgreSQL raises them through PostgREST (all 400):
// - an unknown type (`::money`): 42704 `type "money" does not exist`;
// - a cast PostgreSQL has no conversion for (`tags::int` on an array, `created::bool`):
//   42846 `cannot cast type ... to ...`, refused before anything is read;
// - `->`/`->>` on a column that is not json or an array: 42883 `operator does not exist`;
// - a value that does not convert (`name::int` on "abc"): 22P02
//   `invalid input syntax for type integer: "abc"`, refused while the answer is built.

import Kernel

enum SelectCast {
    /// The PostgreSQL names of the cast types (error messages).
    static func sqlName(_ cast: FieldPath.Cast) -> String {
        switch cast {
        case .text: return "text"
        case .int: return "integer"
        case .float: return "double precision"
        case .bool: return "boolean"
        case .json: return "json"
        }
    }

    static func sqlName(_ type: FieldType) -> String {
        switch type {
        case .text: return "text"
        case .int: return "bigint"
        case .float: return "double precision"
        case .bool: return "boolean"
        case .timestamp: return "timestamp with time zone"
        case .uuid: return "uuid"
        case .json: return "jsonb"
        case .array(let element): return sqlName(element) + "[]"
        }
    }

    private static func failure(_ code: String, _ message: String) -> PostgRESTFailure {
        PostgRESTFailure(code: code, message: message, details: nil, hint: nil, status: 400)
    }

    /// Parses a selected column that is a JSON path and/or has a cast, checked against `schema`.
    static func path(_ text: String, schema: CollectionSchema) throws -> FieldPath {
        if let range = text.range(of: "::") {
            let name = String(text[range.upperBound...])
            guard FieldPath.Cast(rawValue: name) != nil else {
                throw failure("42704", "type \"\(name.prefix(64))\" does not exist")
            }
        }
        let path = try FieldPath(parsing: text)
        guard let field = schema.fields[path.column] else { throw RESTError.unknownColumn(path.column, schema.name) }
        let uncast = FieldPath(column: path.column, steps: path.steps, asText: path.asText)
        let source: FieldType
        do {
            source = try uncast.valueType(in: schema)
        } catch let error as AeroError where error.code == .typeMismatch {
            throw failure("42883", "operator does not exist: \(sqlName(field.type)) -> unknown")
        }
        if let cast = path.cast, !possible(from: source, to: cast) {
            throw failure("42846", "cannot cast type \(sqlName(source)) to \(sqlName(cast))")
        }
        return path
    }

    /// Whether PostgreSQL has a conversion from `source` to `cast` (values may still fail).
    static func possible(from source: FieldType, to cast: FieldPath.Cast) -> Bool {
        switch (source, cast) {
        case (_, .text), (_, .json), (.json, _), (.text, _): return true
        case (.int, .int), (.int, .float), (.int, .bool), (.float, .int), (.float, .float), (.bool, .bool), (.bool, .int):
            return true
        default: return false
        }
    }

    /// The selected value of `path` in `doc`, cast as written (22P02 when it does not convert).
    static func value(_ path: FieldPath, in doc: Document, schema: CollectionSchema) throws -> JSONValue {
        let raw = FieldPath(column: path.column, steps: path.steps, asText: path.asText).value(in: doc)
        guard let cast = path.cast else { return raw }
        // JSON read as JSON stays itself (a JSON string is not parsed again); text is parsed.
        if cast == .json, (try? FieldPath(column: path.column, steps: path.steps, asText: path.asText).valueType(in: schema)) != .text {
            return raw
        }
        if cast == .text, path.steps.isEmpty, case .array(let items) = raw { return .string(arrayLiteral(items)) }
        if let converted = FieldPath.convert(raw, to: cast) { return converted }
        let shown: String
        if case .string(let s) = raw { shown = s } else { shown = JSON.encodeString(raw) }
        throw failure("22P02", "invalid input syntax for type \(sqlName(cast)): \"\(shown.prefix(100))\"")
    }

    /// PostgreSQL's text form of an array (`{a,"b c",NULL}`), as `tags::text` answers it.
    static func arrayLiteral(_ items: [JSONValue]) -> String {
        let parts = items.map { item -> String in
            switch item {
            case .null: return "NULL"
            case .string(let s):
                let needsQuotes = s.isEmpty || s.lowercased() == "null" || s.containsScalar(of: "{},\"\\ \t\n\r")
                guard needsQuotes else { return s }
                return "\"" + s.replacingScalar("\\", with: "\\\\").replacingScalar("\"", with: "\\\"") + "\""
            case .array(let inner): return arrayLiteral(inner)
            default: return JSON.encodeString(item)
            }
        }
        return "{" + parts.joined(separator: ",") + "}"
    }
}
