// The filter language as a Swift value: built by `Query.parse` from JSON, or directly by callers
// (the REST layer builds it from PostgREST syntax). Semantics (Predicate.evaluate):
// - A missing field reads as null. Comparisons follow SQL's three-valued logic: a comparison,
//   `in`, `like`, containment or fulltext test on a null field is UNKNOWN; `eq null`/`ne null`
//   are IS [NOT] NULL and `is` is never UNKNOWN; ints and floats compare as numbers.
// - `and`/`or`/`not` combine TRUE, FALSE and UNKNOWN as SQL does (`not` of UNKNOWN is UNKNOWN);
//   a row matches only when the filter is TRUE. So `not(qty = 1)` leaves out rows whose qty is
//   null, and `not(qty in [1,2])` too, as in PostgreSQL (Predicate.swift evaluates it).
// - Values of a different kind than the field never match (validation refuses them first).

public enum CompareOp: String, Sendable, Hashable, CaseIterable {
    case eq, ne, gt, gte, lt, lte

    /// SQL text of the operator (explain, policy text).
    public var symbol: String {
        switch self {
        case .eq: return "="
        case .ne: return "<>"
        case .gt: return ">"
        case .gte: return ">="
        case .lt: return "<"
        case .lte: return "<="
        }
    }
}

public enum FullTextMode: String, Sendable, Hashable, CaseIterable {
    /// Every token must appear.
    case plain
    /// The tokens must appear adjacent and in order.
    case phrase
    /// Words (all required), "quoted phrases", -excluded words, `or` between alternatives.
    case websearch
    /// `&`, `|`, `!`, parentheses and `<->` (followed by) over words.
    case tsquery
}

public indirect enum Filter: Sendable, Hashable {
    case and([Filter])
    case or([Filter])
    case not(Filter)
    case compare(field: String, op: CompareOp, value: JSONValue)
    case `in`(field: String, values: [JSONValue])
    /// `value` is null, true or false.
    case `is`(field: String, value: JSONValue)
    /// SQL LIKE: `%` any run, `_` one character, `\` escapes the next character.
    case like(field: String, pattern: String, caseInsensitive: Bool)
    /// Array field holds every given element; json field contains the given value (jsonb @>).
    case contains(field: String, value: JSONValue)
    /// Every element of the array field is among the given ones; json: jsonb <@.
    case containedBy(field: String, value: JSONValue)
    /// The array field and the given array share an element.
    case overlaps(field: String, value: JSONValue)
    case fulltext(field: String, query: String, mode: FullTextMode, language: String?)
}

public enum SortDirection: String, Sendable, Hashable { case asc, desc }
public enum NullsOrder: String, Sendable, Hashable { case first, last }

public struct Sort: Sendable, Hashable {
    public var field: String
    public var direction: SortDirection
    /// nil = SQL default: nulls last ascending, first descending.
    public var nulls: NullsOrder?

    public init(field: String, direction: SortDirection = .asc, nulls: NullsOrder? = nil) {
        self.field = field
        self.direction = direction
        self.nulls = nulls
    }

    var nullsFirst: Bool { (nulls ?? (direction == .asc ? .last : .first)) == .first }
}

extension Filter: CustomStringConvertible {
    /// Readable text (for explain's residual predicates).
    public var description: String {
        switch self {
        case .and(let parts): return "(" + parts.map(\.description).joined(separator: " AND ") + ")"
        case .or(let parts): return "(" + parts.map(\.description).joined(separator: " OR ") + ")"
        case .not(let inner): return "NOT \(inner)"
        case .compare(let f, let op, let v): return "\(f) \(op.symbol) \(JSON.encodeString(v))"
        case .in(let f, let vs): return "\(f) IN \(JSON.encodeString(.array(vs)))"
        case .is(let f, let v): return "\(f) IS \(JSON.encodeString(v))"
        case .like(let f, let p, let ci): return "\(f) \(ci ? "ILIKE" : "LIKE") \(JSON.encodeString(.string(p)))"
        case .contains(let f, let v): return "\(f) @> \(JSON.encodeString(v))"
        case .containedBy(let f, let v): return "\(f) <@ \(JSON.encodeString(v))"
        case .overlaps(let f, let v): return "\(f) && \(JSON.encodeString(v))"
        case .fulltext(let f, let q, let mode, _): return "\(f) @@ \(mode.rawValue)(\(JSON.encodeString(.string(q))))"
        }
    }

    /// Whether `and`/`or`/`not` nest deeper than `limit` (a leaf is depth 0). Stops descending at
    /// the limit, so a hostile, very deep filter cannot exhaust the stack here.
    func nestsDeeper(than limit: Int) -> Bool {
        guard limit >= 0 else { return true }
        switch self {
        case .and(let parts), .or(let parts): return parts.contains { $0.nestsDeeper(than: limit - 1) }
        case .not(let inner): return inner.nestsDeeper(than: limit - 1)
        default: return false
        }
    }

    /// The top-level conjuncts (nested ANDs flattened).
    var conjuncts: [Filter] {
        if case .and(let parts) = self { return parts.flatMap(\.conjuncts) }
        return [self]
    }
}
