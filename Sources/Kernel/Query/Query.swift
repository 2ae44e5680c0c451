// A read query and its JSON form (admin API):
//   {"collection":"items","filter":{...},"order":[{"field":"qty","dir":"desc","nulls":"first"}],
//    "limit":10,"offset":0,"select":["id","name"],"count":true,"after":{"qty":5,"id":"a1"}}
//
// Filter JSON: `{"field": value}` (equality), `{"field": {"$op": value, ...}}` with $eq $ne $gt $gte
// $lt $lte $in $is $like $ilike $contains $containedBy $overlaps $fts, and `$and: [..]`,
// `$or: [..]`, `$not: {..}`. Several keys in one object are ANDed, in key order (sorted by UTF-8
// bytes, so the parsed filter does not depend on dictionary order: T1).
// An object value whose keys all start with `$` is an operator object; with none, it is an
// equality on a json field; mixing both is refused.
//
// Parsing checks shape only; `execute`/`explain` check fields and types against the schema.

public struct Query: Sendable, Hashable {
    public var collection: String
    public var filter: Filter?
    public var order: [Sort]
    /// nil = `QueryOptions.limitDefault`.
    public var limit: Int?
    public var offset: Int
    /// Fields to return; nil = all.
    public var select: [String]?
    /// Whether to compute the exact number of matching rows (ignoring limit and offset).
    public var count: Bool
    /// Keyset pagination: values of the order fields and the primary key of the last row seen;
    /// only rows after it in the query's order are returned.
    public var after: [String: JSONValue]?

    public init(collection: String, filter: Filter? = nil, order: [Sort] = [], limit: Int? = nil,
                offset: Int = 0, select: [String]? = nil, count: Bool = false,
                after: [String: JSONValue]? = nil) {
        self.collection = collection
        self.filter = filter
        self.order = order
        self.limit = limit
        self.offset = offset
        self.select = select
        self.count = count
        self.after = after
    }

    static let topLevelKeys: Set<String> = ["collection", "filter", "order", "limit", "offset", "select", "count", "after"]
    /// Largest offset accepted: past it, keyset pagination (`after`) is the way.
    public static let offsetMax = 1_000_000

    public static func parse(_ json: JSONValue) throws -> Query {
        guard case .object(let fields) = json else { throw invalid("a query must be a JSON object") }
        if let unknown = fields.keys.sorted().first(where: { !topLevelKeys.contains($0) }) {
            throw invalid("unknown query key \"\(unknown)\"")
        }
        guard case .string(let collection)? = fields["collection"], !collection.isEmpty else {
            throw invalid("\"collection\" must be a non-empty string")
        }
        var query = Query(collection: collection)
        if let f = fields["filter"] { query.filter = try FilterParser.parse(f) }
        if let o = fields["order"] { query.order = try parseOrder(o) }
        if let l = fields["limit"] {
            guard case .int(let n) = l, n >= 0, n <= KernelLimits.queryLimitMax else {
                throw invalid("\"limit\" must be an integer from 0 to \(KernelLimits.queryLimitMax)")
            }
            query.limit = Int(n)
        }
        if let o = fields["offset"] {
            guard case .int(let n) = o, n >= 0, n <= offsetMax else {
                throw invalid("\"offset\" must be an integer from 0 to \(offsetMax)")
            }
            query.offset = Int(n)
        }
        if let s = fields["select"] { query.select = try parseSelect(s) }
        if let c = fields["count"] {
            guard case .bool(let b) = c else { throw invalid("\"count\" must be true or false") }
            query.count = b
        }
        if let a = fields["after"] {
            guard case .object(let values) = a, !values.isEmpty else {
                throw invalid("\"after\" must be a non-empty object of order field values")
            }
            query.after = values
        }
        return query
    }

    private static func parseOrder(_ json: JSONValue) throws -> [Sort] {
        guard case .array(let items) = json else { throw invalid("\"order\" must be an array") }
        return try items.map { item in
            guard case .object(let o) = item else { throw invalid("each order item must be an object") }
            if let unknown = o.keys.sorted().first(where: { !["field", "dir", "nulls"].contains($0) }) {
                throw invalid("unknown order key \"\(unknown)\"")
            }
            guard case .string(let field)? = o["field"] else { throw invalid("order item needs a \"field\" string") }
            var sort = Sort(field: field)
            if let d = o["dir"] {
                guard case .string(let s) = d, let dir = SortDirection(rawValue: s) else {
                    throw invalid("order \"dir\" must be \"asc\" or \"desc\"")
                }
                sort.direction = dir
            }
            if let n = o["nulls"] {
                guard case .string(let s) = n, let nulls = NullsOrder(rawValue: s) else {
                    throw invalid("order \"nulls\" must be \"first\" or \"last\"")
                }
                sort.nulls = nulls
            }
            return sort
        }
    }

    private static func parseSelect(_ json: JSONValue) throws -> [String] {
        guard case .array(let items) = json, !items.isEmpty else {
            throw invalid("\"select\" must be a non-empty array of field names")
        }
        let names = try items.map { item in
            guard case .string(let s) = item else { throw invalid("\"select\" items must be strings") }
            return s
        }
        guard Set(names).count == names.count else { throw invalid("\"select\" names a field twice") }
        return names
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.queryInvalid, message, invariant: "Q1") }
}

/// JSON filter -> `Filter`.
enum FilterParser {
    static func parse(_ json: JSONValue) throws -> Filter {
        try parseObject(json, depth: 0)
    }

    private static func parseObject(_ json: JSONValue, depth: Int) throws -> Filter {
        guard depth <= KernelLimits.filterDepthMax else {
            throw Query.invalid("filter nests deeper than \(KernelLimits.filterDepthMax)")
        }
        guard case .object(let o) = json else { throw Query.invalid("a filter must be a JSON object") }
        guard !o.isEmpty else { throw Query.invalid("a filter object may not be empty") }
        let parts = try sortedKeys(o).map { key in try parseEntry(key, o[key]!, depth: depth) }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private static func sortedKeys(_ o: [String: JSONValue]) -> [String] {
        o.keys.sorted { JSONValue.compareUTF8($0, $1) < 0 }
    }

    private static func parseEntry(_ key: String, _ value: JSONValue, depth: Int) throws -> Filter {
        switch key {
        case "$and", "$or":
            guard case .array(let items) = value, !items.isEmpty else {
                throw Query.invalid("\(key) takes a non-empty array of filters")
            }
            let parts = try items.map { try parseObject($0, depth: depth + 1) }
            return key == "$and" ? .and(parts) : .or(parts)
        case "$not":
            return .not(try parseObject(value, depth: depth + 1))
        default:
            guard !key.hasPrefix("$") else { throw Query.invalid("unknown filter operator \(key) at the top level") }
            return try parseField(key, value)
        }
    }

    private static func parseField(_ field: String, _ value: JSONValue) throws -> Filter {
        guard case .object(let ops) = value, !ops.isEmpty, ops.keys.contains(where: { $0.hasPrefix("$") }) else {
            return .compare(field: field, op: .eq, value: value)
        }
        guard ops.keys.allSatisfy({ $0.hasPrefix("$") }) else {
            throw Query.invalid("field \(field): an operator object may only hold $ operators")
        }
        let parts = try sortedKeys(ops).map { try parseOperator(field, $0, ops[$0]!) }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private static func parseOperator(_ field: String, _ op: String, _ value: JSONValue) throws -> Filter {
        switch op {
        case "$eq": return .compare(field: field, op: .eq, value: value)
        case "$ne": return .compare(field: field, op: .ne, value: value)
        case "$gt": return .compare(field: field, op: .gt, value: value)
        case "$gte": return .compare(field: field, op: .gte, value: value)
        case "$lt": return .compare(field: field, op: .lt, value: value)
        case "$lte": return .compare(field: field, op: .lte, value: value)
        case "$in":
            guard case .array(let values) = value else { throw Query.invalid("field \(field): $in takes an array") }
            return .in(field: field, values: values)
        case "$is": return .is(field: field, value: value)
        case "$like", "$ilike":
            guard case .string(let pattern) = value else {
                throw Query.invalid("field \(field): \(op) takes a string pattern")
            }
            return .like(field: field, pattern: pattern, caseInsensitive: op == "$ilike")
        case "$contains": return .contains(field: field, value: value)
        case "$containedBy": return .containedBy(field: field, value: value)
        case "$overlaps": return .overlaps(field: field, value: value)
        case "$fts": return try parseFullText(field, value)
        default: throw Query.invalid("field \(field): unknown operator \(op)")
        }
    }

    private static func parseFullText(_ field: String, _ value: JSONValue) throws -> Filter {
        switch value {
        case .string(let q):
            return .fulltext(field: field, query: q, mode: .plain, language: nil)
        case .object(let o):
            if let unknown = sortedKeys(o).first(where: { !["query", "mode", "language"].contains($0) }) {
                throw Query.invalid("field \(field): unknown $fts key \"\(unknown)\"")
            }
            guard case .string(let q)? = o["query"] else { throw Query.invalid("field \(field): $fts needs a \"query\" string") }
            var mode = FullTextMode.plain
            if let m = o["mode"] {
                guard case .string(let s) = m, let parsed = FullTextMode(rawValue: s) else {
                    throw Query.invalid("field \(field): $fts mode must be plain, phrase, websearch or tsquery")
                }
                mode = parsed
            }
            var language: String?
            if let l = o["language"] {
                guard case .string(let s) = l else { throw Query.invalid("field \(field): $fts language must be a string") }
                language = s
            }
            return .fulltext(field: field, query: q, mode: mode, language: language)
        default:
            throw Query.invalid("field \(field): $fts takes a string or {\"query\": ...}")
        }
    }
}
