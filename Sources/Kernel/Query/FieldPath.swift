// A JSON path into a json (or array) field, as PostgREST writes it, usable wherever a filter,
// a sort or an ordered index names a field (issue 22). Text form, which is also the canonical
// field name the path goes by in `Filter`, `Sort` and `IndexSchema.fields`:
//
//   <column> ( "->" <step> )* [ "->>" <step> ] [ "::" <cast> ]
//   <step>  = an array index (`0`, `-1`: from the end) or an object key
//   <cast>  = text | int | float | bool | json
//
// `->` yields JSON (compared as JSON), `->>` yields text (the string itself, or the compact
// JSON text of a number, bool, array or object; JSON null is null). A missing key, an index out
// of range, or a step into a scalar reads as null, as in PostgreSQL. A cast converts the value
// read; in filters and sorts a value that cannot be converted reads as null (the REST select
// refuses it instead, 22P02).
//
// Invariants: a plain field name (an identifier, CollectionSchema.validateName) never contains
// `-`, `>` or `:`, so a path can never be mistaken for a field; `description` renders the same
// text `init(parsing:)` reads (round trip), so two spellings of one path plan alike (T1).
// Bounds: at most `stepsMax` steps of at most `keyBytesMax` bytes each.

public struct FieldPath: Sendable, Hashable, CustomStringConvertible {
    public enum Step: Sendable, Hashable {
        case key(String)
        case index(Int)
    }

    public enum Cast: String, Sendable, Hashable, CaseIterable {
        case text, int, float, bool, json

        /// The declared type a cast value is typed as (filter operands, index ranges).
        public var fieldType: FieldType {
            switch self {
            case .text: return .text
            case .int: return .int
            case .float: return .float
            case .bool: return .bool
            case .json: return .json
            }
        }
    }

    /// Steps one path may take: deeper documents are rare, and it bounds the work per row.
    public static let stepsMax = 16
    /// Bytes of one key of a path (the same order as a field name's bound, with room for
    /// keys that are not identifiers).
    public static let keyBytesMax = 256

    public let column: String
    public let steps: [Step]
    /// The last step was `->>`: the value is read as text.
    public let asText: Bool
    public let cast: Cast?

    public init(column: String, steps: [Step], asText: Bool, cast: Cast? = nil) {
        self.column = column
        self.steps = steps
        self.asText = asText
        self.cast = cast
    }

    /// Whether `name` is written as a path (or a cast) rather than a plain field name.
    public static func isPath(_ name: String) -> Bool {
        name.utf8.contains { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":") }
    }

    /// Parses the text form. Errors are AERO_QUERY_INVALID naming the path.
    public init(parsing text: String) throws {
        var rest = Substring(text)
        var cast: Cast?
        if let range = rest.range(of: "::") {
            let name = rest[range.upperBound...]
            guard let parsed = Cast(rawValue: String(name)) else {
                throw Self.invalid(text, "unknown cast ::\(name.prefix(32)) (text, int, float, bool or json)")
            }
            cast = parsed
            rest = rest[..<range.lowerBound]
        }
        guard let first = rest.range(of: "->") else {
            guard cast != nil, !rest.isEmpty else { throw Self.invalid(text, "expected <column>-><key>") }
            // A plain column with a cast (`qty::text`): no steps.
            self.init(column: String(rest), steps: [], asText: false, cast: cast)
            return
        }
        let column = String(rest[..<first.lowerBound])
        guard !column.isEmpty else { throw Self.invalid(text, "a path starts with a column name") }
        var steps: [Step] = []
        var asText = false
        rest = rest[first.lowerBound...]
        while !rest.isEmpty {
            guard !asText else { throw Self.invalid(text, "->> must be the last step") }
            guard rest.hasPrefix("->") else { throw Self.invalid(text, "expected -> or ->>") }
            rest = rest.dropFirst(2)
            if rest.hasPrefix(">") { asText = true; rest = rest.dropFirst() }
            let end = rest.range(of: "->")?.lowerBound ?? rest.endIndex
            let token = rest[..<end]
            rest = rest[end...]
            guard !token.isEmpty, token.utf8.count <= Self.keyBytesMax, !token.contains(where: { ">:".contains($0) }),
                  !token.hasSuffix("-") else {
                throw Self.invalid(text, "a step must be 1-\(Self.keyBytesMax) bytes without >, : or a trailing -")
            }
            steps.append(Self.step(token))
            guard steps.count <= Self.stepsMax else { throw Self.invalid(text, "more than \(Self.stepsMax) steps") }
        }
        self.init(column: column, steps: steps, asText: asText, cast: cast)
    }

    private static func step(_ token: Substring) -> Step {
        let digits = token.hasPrefix("-") ? token.dropFirst() : token
        if !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(token) {
            return .index(n)
        }
        return .key(String(token))
    }

    private static func invalid(_ text: String, _ why: String) -> AeroError {
        AeroError(.queryInvalid, "JSON path \(text.prefix(80)): \(why)", invariant: "Q1")
    }

    public var description: String {
        var out = column
        for (i, step) in steps.enumerated() {
            out += asText && i == steps.count - 1 ? "->>" : "->"
            switch step {
            case .key(let k): out += k
            case .index(let n): out += String(n)
            }
        }
        if let cast { out += "::" + cast.rawValue }
        return out
    }

    /// The output name PostgREST gives a selected path: its last key (or the column when the
    /// path ends in array indexes only, or has no steps).
    public var outputName: String {
        for step in steps.reversed() { if case .key(let k) = step { return k } }
        return column
    }

    /// The declared type of what the path reads, checked against `schema`: the column must be a
    /// json or array field (AERO_QUERY_UNKNOWN_FIELD / AERO_QUERY_TYPE_MISMATCH otherwise).
    public func valueType(in schema: CollectionSchema) throws -> FieldType {
        guard let field = schema.fields[column] else {
            throw AeroError(.unknownField, "collection \(schema.name) has no field \"\(column)\"", invariant: "Q1")
        }
        if !steps.isEmpty {
            switch field.type {
            case .json, .array: break
            default:
                throw AeroError(.typeMismatch, "field \(column) is \(field.type): -> and ->> need a json or array field", invariant: "Q1")
            }
        }
        if let cast { return cast.fieldType }
        if steps.isEmpty { return field.type }
        return asText ? .text : .json
    }

    /// The value at the path in `doc` (null when absent), read as text and cast as written.
    public func value(in doc: Document) -> JSONValue {
        var current = doc[column] ?? .null
        for step in steps {
            switch (step, current) {
            case (.key(let k), .object(let o)): current = o[k] ?? .null
            case (.index(let n), .array(let items)):
                let i = n < 0 ? items.count + n : n
                current = items.indices.contains(i) ? items[i] : .null
            default: current = .null
            }
        }
        if asText { current = Self.text(current) }
        guard let cast else { return current }
        if cast == .json, !asText, !steps.isEmpty { return current }  // JSON stays JSON
        return Self.convert(current, to: cast) ?? .null
    }

    /// `->>`: strings stay strings, null stays null, anything else is its compact JSON text.
    public static func text(_ value: JSONValue) -> JSONValue {
        switch value {
        case .null, .string: return value
        default: return .string(JSON.encodeString(value))
        }
    }

    /// PostgreSQL's conversion of `value` to `cast`; nil when it cannot be converted (PostgreSQL
    /// raises 22P02/22003 there). Null converts to null.
    public static func convert(_ value: JSONValue, to cast: Cast) -> JSONValue? {
        if value.isNull { return .null }
        switch cast {
        case .text:
            return text(value)
        case .int:
            switch value {
            case .int: return value
            case .float(let d):
                let rounded = d.rounded(.toNearestOrAwayFromZero)
                guard rounded.isFinite, rounded >= -9.223372036854775808e18, rounded < 9.223372036854775808e18 else { return nil }
                return .int(Int64(rounded))
            case .bool(let b): return .int(b ? 1 : 0)
            case .string(let s): return Int64(s.trimmingASCIISpaces()).map(JSONValue.int)
            default: return nil
            }
        case .float:
            switch value {
            case .int(let i): return .float(Double(i))
            case .float: return value
            case .string(let s):
                let t = s.trimmingASCIISpaces()
                guard !t.isEmpty, let d = Double(t) else { return nil }
                return .float(d)
            default: return nil
            }
        case .bool:
            switch value {
            case .bool: return value
            case .int(let i): return .bool(i != 0)
            case .string(let s):
                switch s.trimmingASCIISpaces().lowercased() {
                case "t", "true", "y", "yes", "on", "1": return .bool(true)
                case "f", "false", "n", "no", "off", "0": return .bool(false)
                default: return nil
                }
            default: return nil
            }
        case .json:
            if case .string(let s) = value { return try? JSON.parse(s) }
            return value
        }
    }

    /// The value a field name reads in `doc`: a plain field, or a path (`doc->a->>b`).
    /// For callers that hold only the name (index keys); unparsable paths read as null.
    public static func read(_ doc: Document, _ name: String) -> JSONValue {
        if let value = doc[name] { return value }
        guard isPath(name), let path = try? FieldPath(parsing: name) else { return .null }
        return path.value(in: doc)
    }
}

extension String {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
