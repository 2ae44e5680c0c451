// What the planner decided, for execution and for `explain` (T1: same query + same schema =
// same plan; only the row counts depend on the data).

/// How candidate rows are found. Internal: the executor's instructions.
enum AccessPath: Sendable, Hashable {
    /// One primary key lookup (a non-null key `eq`: the point read, without an array of keys).
    case key(JSONValue)
    /// Primary key lookups, keys sorted ascending (visited in reverse when `reverse`).
    case keys([JSONValue], reverse: Bool)
    /// Entries of an ordered index between two probes (nil = open end).
    case index(name: String, lower: IndexKey?, upper: IndexKey?, reverse: Bool)
    /// Entries of a fulltext index for one token.
    case fulltext(name: String, token: String)
    /// Every document in primary key order.
    case documents(reverse: Bool)
}

public struct Plan: Sendable, Hashable {
    public enum Access: String, Sendable, Hashable, CaseIterable {
        case keyLookup, uniqueIndex, indexEquality, indexRange, fulltextIndex, orderedIndexScan, fullScan
    }

    public let collection: String
    public let access: Access
    /// The index used, if any (nil for key lookups and full scans).
    public let index: String?
    /// The predicates the access path answers exactly.
    public var bounds: [String] { filters.bound.map(\.description) }
    /// Whether the path is walked from its end (descending order).
    public let reverse: Bool
    /// Predicates checked on each candidate row.
    public var residual: [String] {
        filters.residual.map(\.description) + (after.map { ["after \(JSON.encodeString(.object($0)))"] } ?? [])
    }
    /// Whether the path already yields rows in the requested order (no sort step).
    public let sortSatisfied: Bool
    /// Rows the access path yields (exact, from the index counts).
    public let candidateRows: Int
    /// Most rows execution may examine (Q1: at most `QueryOptions.scanRowsMax`).
    public let rowsExaminedBound: Int
    /// The filters behind `bounds` and `residual`: their text is built only when asked (explain,
    /// errors), never on the read path (a point read spent a tenth of its time formatting it).
    let filters: PlanFilters
    /// The keyset position of a query with "after", a residual predicate.
    let after: [String: JSONValue]?
    let path: AccessPath

    public var json: JSONValue {
        .object([
            "collection": .string(collection),
            "access": .string(access.rawValue),
            "index": index.map(JSONValue.string) ?? .null,
            "bounds": .array(bounds.map(JSONValue.string)),
            "direction": .string(reverse ? "backward" : "forward"),
            "residual": .array(residual.map(JSONValue.string)),
            "sort_satisfied": .bool(sortSatisfied),
            "candidate_rows": .int(Int64(candidateRows)),
            "rows_examined_bound": .int(Int64(rowsExaminedBound)),
        ])
    }
}

/// The conjuncts a plan's access path answers (`bound`) and those checked on each row
/// (`residual`). A lone bound conjunct (every point read) is kept without building arrays; a
/// plan holds the same value whichever way it was made (`make`), so equal plans compare equal.
enum PlanFilters: Sendable, Hashable {
    case single(Filter)
    case split(bound: [Filter], residual: [Filter])

    static func make(bound: [Filter], residual: [Filter]) -> PlanFilters {
        bound.count == 1 && residual.isEmpty ? .single(bound[0]) : .split(bound: bound, residual: residual)
    }

    var bound: [Filter] {
        switch self {
        case .single(let f): return [f]
        case .split(let bound, _): return bound
        }
    }

    var residual: [Filter] {
        switch self {
        case .single: return []
        case .split(_, let residual): return residual
        }
    }
}

/// The order of result rows: the query's sort terms, then the primary key as the tiebreak in the
/// direction of the first term (ascending without terms), so the order is total and matches
/// what an index walk yields (index entries end with the primary key).
struct RowOrder: Sendable, Hashable {
    let sorts: [Sort]
    let primaryKey: String
    /// The JSON path of each sort term that names one (FieldPath), else nil.
    private let paths: [FieldPath?]

    init(sorts: [Sort], primaryKey: String) {
        self.sorts = sorts
        self.primaryKey = primaryKey
        paths = sorts.map { FieldPath.isPath($0.field) ? try? FieldPath(parsing: $0.field) : nil }
    }

    var tiebreakDescending: Bool { sorts.first?.direction == .desc }

    func compare(_ a: Document, _ b: Document) -> Int {
        for (sort, path) in zip(sorts, paths) {
            let x = path?.value(in: a) ?? a[sort.field] ?? .null, y = path?.value(in: b) ?? b[sort.field] ?? .null
            switch (x.isNull, y.isNull) {
            case (true, true): continue
            case (true, false): return sort.nullsFirst ? -1 : 1
            case (false, true): return sort.nullsFirst ? 1 : -1
            case (false, false):
                let c = JSONValue.compare(x, y)
                if c != 0 { return sort.direction == .asc ? c : -c }
            }
        }
        let c = JSONValue.compare(a[primaryKey] ?? .null, b[primaryKey] ?? .null)
        return tiebreakDescending ? -c : c
    }
}
