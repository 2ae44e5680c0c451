// Checks a query against a collection's schema and the query bounds (Q1), and puts filter values
// in the schema's normal form (uuid lowercase, timestamps in UTC form) so they compare with what
// is stored. Errors: unknown field -> AERO_QUERY_UNKNOWN_FIELD; a value of the wrong kind for its
// field -> AERO_QUERY_TYPE_MISMATCH (int and float are both numbers); bad shapes or bounds ->
// AERO_QUERY_INVALID. An inverted range is not an error: it matches nothing.

public struct QueryOptions: Sendable, Hashable {
    /// Rows returned when a query names no limit.
    public var limitDefault: Int = KernelLimits.queryLimitDefault
    /// Largest limit accepted.
    public var limitMax: Int = KernelLimits.queryLimitMax
    /// Rows a plan may examine; plans that could examine more are refused (Q1).
    public var scanRowsMax: Int = KernelLimits.scanRowsMaxDefault
    /// REST aggregates (`select=count()`, `qty.sum()`), PostgREST's `db-aggregates-enabled`:
    /// off unless the node's config turns them on (they fold up to a scan's worth of rows).
    public var aggregatesEnabled = false

    public init(limitDefault: Int = KernelLimits.queryLimitDefault, limitMax: Int = KernelLimits.queryLimitMax,
                scanRowsMax: Int = KernelLimits.scanRowsMaxDefault) {
        self.limitDefault = limitDefault
        self.limitMax = limitMax
        self.scanRowsMax = scanRowsMax
    }
}

/// A query checked against a schema, with its effective limit and normalized filter.
struct ValidatedQuery: Sendable {
    let filter: Filter?
    let limit: Int
    let order: RowOrder
    let after: Predicate?
}

enum QueryValidator {
    static func validate(_ query: Query, schema: CollectionSchema, options: QueryOptions) throws -> ValidatedQuery {
        guard query.collection == schema.name else {
            throw Query.invalid("query names collection \(query.collection), not \(schema.name)")
        }
        let limit = query.limit ?? options.limitDefault
        guard limit >= 0, limit <= options.limitMax else {
            throw Query.invalid("limit \(limit) is outside 0...\(options.limitMax)")
        }
        guard query.offset >= 0 else { throw Query.invalid("offset may not be negative") }
        for sort in query.order { _ = try fieldType(sort.field, schema) }
        guard query.order.count < 2 || Set(query.order.map(\.field)).count == query.order.count else {
            throw Query.invalid("order names a field twice")
        }
        for name in query.select ?? [] { _ = try fieldType(name, schema) }
        let order = RowOrder(sorts: query.order, primaryKey: schema.primaryKey)
        var filter: Filter?
        if let f = query.filter {
            guard !f.nestsDeeper(than: KernelLimits.filterDepthMax) else {
                throw Query.invalid("filter nests deeper than \(KernelLimits.filterDepthMax)")
            }
            filter = try normalize(f, schema)
        }
        let after = try query.after.map { try afterPredicate($0, order: order, schema) }
        return ValidatedQuery(filter: filter, limit: limit, order: order, after: after)
    }

    private static func afterPredicate(_ values: [String: JSONValue], order: RowOrder,
                                       _ schema: CollectionSchema) throws -> Predicate {
        let expected = Set(order.sorts.map(\.field) + [schema.primaryKey])
        guard Set(values.keys) == expected else {
            throw Query.invalid("\"after\" must give exactly the order fields and the primary key: \(expected.sorted())")
        }
        var row: Document = [:]
        for (name, value) in values {
            row[name] = value.isNull ? .null : try operand(value, name, try fieldType(name, schema))
        }
        return .after(row: row, order: order)
    }

    static func fieldType(_ name: String, _ schema: CollectionSchema) throws -> FieldType {
        guard let field = schema.fields[name] else {
            if FieldPath.isPath(name) { return try FieldPath(parsing: name).valueType(in: schema) }
            throw AeroError(.unknownField, "collection \(schema.name) has no field \"\(name)\"", invariant: "Q1")
        }
        return field.type
    }

    private static func mismatch(_ field: String, _ type: FieldType, _ what: String) -> AeroError {
        AeroError(.typeMismatch, "field \(field) is \(type): \(what)", invariant: "Q1")
    }

    /// A non-null comparison value in the field's normal form.
    static func operand(_ value: JSONValue, _ field: String, _ type: FieldType) throws -> JSONValue {
        if isNormal(value, type) { return value }
        switch (type, value) {
        case (.int, _), (.float, _): throw mismatch(field, type, "cannot compare with \(value.kindName)")
        default:
            do {
                return try FieldValidator.normalize(value, as: type, field: field)
            } catch let error as AeroError {
                throw mismatch(field, type, error.message)
            }
        }
    }

    /// Whether `value` is already an operand for a field of `type` (nothing to check or rewrite;
    /// `FieldValidator.normalize` returns text and bool values as they are).
    static func isNormal(_ value: JSONValue, _ type: FieldType) -> Bool {
        switch (type, value) {
        case (.json, _), (.int, .int), (.int, .float), (.float, .int), (.float, .float), (.text, .string), (.bool, .bool):
            return true
        default:
            return false
        }
    }

    static func normalize(_ filter: Filter, _ schema: CollectionSchema) throws -> Filter {
        switch filter {
        case .and(let parts), .or(let parts):
            guard !parts.isEmpty else { throw Query.invalid("and/or need at least one filter") }
            let normalized = try parts.map { try normalize($0, schema) }
            if case .and = filter { return .and(normalized) }
            return .or(normalized)
        case .not(let inner):
            return .not(try normalize(inner, schema))
        case .compare(let f, let op, let v):
            let type = try fieldType(f, schema)
            if v.isNull {
                guard op == .eq || op == .ne else { throw Query.invalid("field \(f): \(op.rawValue) null is never true; use $is") }
                return filter
            }
            if isNormal(v, type) { return filter }  // kept as it came: no new box per read
            return .compare(field: f, op: op, value: try operand(v, f, type))
        case .in(let f, let vs):
            let type = try fieldType(f, schema)
            guard vs.count <= KernelLimits.inListMax else {
                throw Query.invalid("field \(f): $in holds \(vs.count) values, more than \(KernelLimits.inListMax)")
            }
            return .in(field: f, values: try vs.map { $0.isNull ? .null : try operand($0, f, type) })
        case .is(let f, let v):
            let type = try fieldType(f, schema)
            switch v {
            case .null: return filter
            case .bool:
                guard type == .bool || type == .json else { throw mismatch(f, type, "IS true/false needs a bool field") }
                return filter
            default: throw Query.invalid("field \(f): $is takes null, true or false")
            }
        case .like(let f, _, _):
            let type = try fieldType(f, schema)
            guard [.text, .uuid, .timestamp, .json].contains(type) else { throw mismatch(f, type, "LIKE needs a text field") }
            return filter
        case .contains(let f, let v), .containedBy(let f, let v):
            let value = try containerOperand(v, f, try fieldType(f, schema))
            if case .contains = filter { return .contains(field: f, value: value) }
            return .containedBy(field: f, value: value)
        case .overlaps(let f, let v):
            let type = try fieldType(f, schema)
            guard case .array = v else { throw Query.invalid("field \(f): $overlaps takes an array") }
            return .overlaps(field: f, value: try containerOperand(v, f, type))
        case .fulltext(let f, _, _, let language):
            let type = try fieldType(f, schema)
            guard type == .text else { throw mismatch(f, type, "$fts needs a text field") }
            if let language, !FullTextLanguages.supported.contains(language) {
                throw Query.invalid("$fts language \"\(language)\" is not supported (\(FullTextLanguages.supported.sorted()))")
            }
            return filter
        }
    }

    private static func containerOperand(_ value: JSONValue, _ field: String, _ type: FieldType) throws -> JSONValue {
        switch type {
        case .json: return value
        case .array:
            guard case .array = value else { throw mismatch(field, type, "expected an array of elements") }
            return try operand(value, field, type)
        default: throw mismatch(field, type, "array operators need an array or json field")
        }
    }
}

/// Languages `$fts` accepts. Tokenization is the same for all (no stemming, no stop words).
public enum FullTextLanguages {
    public static let supported: Set<String> = ["simple", "english"]
}
