// A validated filter compiled for evaluation on documents: LIKE patterns and fulltext queries
// are parsed once per query, not once per row. Semantics are documented on `Filter`.
//
// Evaluation is SQL's three-valued logic: a leaf on a null (or missing) field is UNKNOWN unless
// the operator is defined on null (`is`, `eq null`/`ne null`, the keyset bound); AND/OR/NOT
// combine TRUE/FALSE/UNKNOWN as SQL does (NOT UNKNOWN is UNKNOWN); a row matches only when the
// whole predicate is TRUE. So `NOT qty = 1` leaves out rows whose qty is null, as PostgreSQL
// (and PostgREST's `not.eq`) does.

indirect enum Predicate: Sendable {
    case and([Predicate])
    case or([Predicate])
    case not(Predicate)
    case compare(field: String, op: CompareOp, value: JSONValue)
    case `in`(field: String, values: [JSONValue])
    case `is`(field: String, value: JSONValue)
    case like(field: String, pattern: LikePattern)
    case contains(field: String, value: JSONValue)
    case containedBy(field: String, value: JSONValue)
    case overlaps(field: String, values: [JSONValue])
    case fulltext(field: String, query: TextQuery)
    /// Keyset pagination: rows strictly after this one in the query's order.
    case after(row: Document, order: RowOrder)
    /// A leaf on a JSON path (FieldPath): `inner` reads field `name` of a one-field document
    /// holding the value at the path.
    case path(FieldPath, name: String, inner: Predicate)

    /// Compiles a filter already checked by `QueryValidator` (so shapes are known to be right).
    static func compile(_ filter: Filter) throws -> Predicate {
        let leaf = try compileLeaf(filter)
        switch filter {
        case .and, .or, .not: return leaf
        case .compare(let f, _, _), .in(let f, _), .is(let f, _), .like(let f, _, _), .contains(let f, _),
             .containedBy(let f, _), .overlaps(let f, _), .fulltext(let f, _, _, _):
            guard FieldPath.isPath(f) else { return leaf }
            return .path(try FieldPath(parsing: f), name: f, inner: leaf)
        }
    }

    private static func compileLeaf(_ filter: Filter) throws -> Predicate {
        switch filter {
        case .and(let parts): return .and(try parts.map(compile))
        case .or(let parts): return .or(try parts.map(compile))
        case .not(let inner): return .not(try compile(inner))
        case .compare(let f, let op, let v): return .compare(field: f, op: op, value: v)
        case .in(let f, let vs): return .in(field: f, values: vs)
        case .is(let f, let v): return .is(field: f, value: v)
        case .like(let f, let p, let ci): return .like(field: f, pattern: try LikePattern(p, caseInsensitive: ci))
        case .contains(let f, let v): return .contains(field: f, value: v)
        case .containedBy(let f, let v): return .containedBy(field: f, value: v)
        case .overlaps(let f, let v): return .overlaps(field: f, values: v.arrayValue ?? [])
        case .fulltext(let f, let q, let mode, _): return .fulltext(field: f, query: try TextQuery.parse(q, mode: mode))
        }
    }

    /// Whether the row is selected: the predicate is TRUE (not FALSE, not UNKNOWN).
    func matches(_ doc: Document) -> Bool { evaluate(doc) == .true }

    /// The predicate's SQL truth value on `doc`. Recursion is bounded by the validated filter's
    /// depth (`KernelLimits.filterDepthMax`).
    func evaluate(_ doc: Document) -> Truth {
        switch self {
        case .and(let parts):
            var result = Truth.true
            for part in parts {
                switch part.evaluate(doc) {
                case .false: return .false
                case .unknown: result = .unknown
                case .true: continue
                }
            }
            return result
        case .or(let parts):
            var result = Truth.false
            for part in parts {
                switch part.evaluate(doc) {
                case .true: return .true
                case .unknown: result = .unknown
                case .false: continue
                }
            }
            return result
        case .not(let inner): return inner.evaluate(doc).negated
        case .compare(let f, let op, let v): return Self.compare(doc[f] ?? .null, op, v)
        case .in(let f, let vs):
            // An OR of `eq` over the list: TRUE if some element is equal, else UNKNOWN when the
            // field is null (and no element is null), else FALSE. An empty list is FALSE.
            let actual = doc[f] ?? .null
            var result = Truth.false
            for value in vs {
                switch Self.compare(actual, .eq, value) {
                case .true: return .true
                case .unknown: result = .unknown
                case .false: continue
                }
            }
            return result
        case .is(let f, let v):
            let actual = doc[f] ?? .null
            return Truth(v.isNull ? actual.isNull : actual == v)
        case .like(let f, let pattern):
            guard let actual = doc[f], !actual.isNull else { return .unknown }
            guard case .string(let s) = actual else { return .false }
            return Truth(pattern.matches(s))
        case .contains(let f, let v):
            guard let actual = doc[f], !actual.isNull else { return .unknown }
            return Truth(Self.jsonContains(actual, v))
        case .containedBy(let f, let v):
            guard let actual = doc[f], !actual.isNull else { return .unknown }
            return Truth(Self.jsonContains(v, actual))
        case .overlaps(let f, let vs):
            guard let actual = doc[f], !actual.isNull else { return .unknown }
            guard case .array(let items) = actual else { return .false }
            return Truth(items.contains { item in vs.contains { JSONValue.compare(item, $0) == 0 } })
        case .fulltext(let f, let q):
            guard let actual = doc[f], !actual.isNull else { return .unknown }
            guard case .string(let s) = actual else { return .false }
            return Truth(q.matches(TokenizedText(s)))
        case .after(let row, let order):
            return Truth(order.compare(doc, row) > 0)
        case .path(let path, let name, let inner):
            return inner.evaluate([name: path.value(in: doc)])
        }
    }

    /// SQL comparison. `eq null`/`ne null` are the kernel's spelling of IS [NOT] NULL (never
    /// UNKNOWN); otherwise a null field is UNKNOWN; values of different kinds never compare (FALSE;
    /// validation refuses them except on json fields).
    static func compare(_ actual: JSONValue, _ op: CompareOp, _ value: JSONValue) -> Truth {
        if value.isNull {
            switch op {
            case .eq: return Truth(actual.isNull)
            case .ne: return Truth(!actual.isNull)
            default: return .false
            }
        }
        if actual.isNull { return .unknown }
        guard sameKind(actual, value) else { return .false }
        let c = JSONValue.compare(actual, value)
        switch op {
        case .eq: return Truth(c == 0)
        case .ne: return Truth(c != 0)
        case .gt: return Truth(c > 0)
        case .gte: return Truth(c >= 0)
        case .lt: return Truth(c < 0)
        case .lte: return Truth(c <= 0)
        }
    }

    static func sameKind(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null), (.bool, .bool), (.string, .string), (.array, .array), (.object, .object): return true
        case (.int, .int), (.int, .float), (.float, .int), (.float, .float): return true
        default: return false
        }
    }

    /// jsonb `@>`: objects contain objects key by key, arrays contain arrays element by element
    /// (each wanted element contained in some element), scalars are equal (1 equals 1.0).
    static func jsonContains(_ container: JSONValue, _ wanted: JSONValue) -> Bool {
        switch (container, wanted) {
        case (.object(let c), .object(let w)):
            return w.allSatisfy { key, value in c[key].map { jsonContains($0, value) } ?? false }
        case (.array(let c), .array(let w)):
            return w.allSatisfy { item in c.contains { jsonContains($0, item) } }
        case (.object, _), (.array, _), (_, .object), (_, .array):
            return false
        default:
            return sameKind(container, wanted) && JSONValue.compare(container, wanted) == 0
        }
    }
}

/// SQL's three truth values.
enum Truth: Sendable, Equatable {
    case `true`, `false`, unknown

    init(_ value: Bool) { self = value ? .true : .false }

    /// NOT: TRUE and FALSE swap, UNKNOWN stays UNKNOWN.
    var negated: Truth {
        switch self {
        case .true: return .false
        case .false: return .true
        case .unknown: return .unknown
        }
    }
}

/// A compiled SQL LIKE pattern over characters (grapheme clusters).
struct LikePattern: Sendable {
    enum Token: Sendable, Equatable { case literal(Character), one, run }
    let tokens: [Token]
    let caseInsensitive: Bool

    init(_ pattern: String, caseInsensitive: Bool) throws {
        var tokens: [Token] = []
        var escaped = false
        for ch in caseInsensitive ? pattern.lowercased() : pattern {
            if escaped { tokens.append(.literal(ch)); escaped = false; continue }
            switch ch {
            case "\\": escaped = true
            case "%": if tokens.last != .run { tokens.append(.run) }
            case "_": tokens.append(.one)
            default: tokens.append(.literal(ch))
            }
        }
        guard !escaped else { throw Query.invalid("LIKE pattern must not end with the escape character \\") }
        self.tokens = tokens
        self.caseInsensitive = caseInsensitive
    }

    /// Iterative matching with one backtrack point per `%`: O(text × pattern), no recursion.
    func matches(_ text: String) -> Bool {
        let s = Array(caseInsensitive ? text.lowercased() : text)
        var si = 0, pi = 0
        var runPattern = -1, runText = 0
        while si < s.count {
            if pi < tokens.count {
                switch tokens[pi] {
                case .run:
                    runPattern = pi; runText = si; pi += 1
                    continue
                case .one:
                    si += 1; pi += 1
                    continue
                case .literal(let ch) where ch == s[si]:
                    si += 1; pi += 1
                    continue
                case .literal:
                    break
                }
            }
            guard runPattern >= 0 else { return false }
            pi = runPattern + 1
            runText += 1
            si = runText
        }
        while pi < tokens.count && tokens[pi] == .run { pi += 1 }
        return pi == tokens.count
    }
}
