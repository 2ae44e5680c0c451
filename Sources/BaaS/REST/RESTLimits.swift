// Bounds of the PostgREST surface, and how client integers are read.
//
// Client integers (`limit`, `offset`, `<embed>.limit`, `<embed>.offset`, the `Range` header) are
// read by `ClientInteger` into a named range with saturating arithmetic: no digit string, however
// long, traps (`Range: 0-9223372036854775807` once stopped a node on `to - from + 1`). A value
// that is not an integer is malformed (400 PGRST100); an integer outside its range is an
// unsatisfiable range (416 PGRST103), as PostgREST answers. Every bound below is in docs/LIMITS.md.
//
// The request budget (`RequestBudget`) bounds the work of one request across all its queries:
// the main query, every embedded sub-query (one per parent row and embedding) and the `!inner`
// look-ups. Each query is planned with at most the budget's remaining rows as its scan bound, so
// a request is refused (AERO_QUERY_BUDGET) before a query that could overrun it runs, never
// after the work exploded (Q1 for a whole request, not only for one query).

import Kernel

public enum RESTLimits {
    /// Rows one request may examine over all its queries (the main query, embedded resources at
    /// every level, `!inner` look-ups). Twice the default single-query scan bound, so an ordinary
    /// read with embeddings fits and a nested embedding that multiplies (N^3) is refused early.
    /// A node configured with a larger `scan_rows_max` uses that instead (one query alone is never
    /// refused by the budget where the kernel would run it).
    public static let requestRowsVisitedMax = 2 * KernelLimits.scanRowsMaxDefault
    /// Queries one request may run (each embedded resource of each parent row is one: a
    /// many-to-one look-up or a one-to-many query). 1,000 parent rows with ten embeddings fit.
    public static let requestSubQueriesMax = 10_000
    /// Encoded bytes of one response body (JSON or CSV), counted row by row as it is built: twice
    /// the largest request body, so a page of large documents fits and a fan-out cannot build an
    /// unbounded answer in memory.
    public static let responseBytesMax = 2 * HTTPLimits.requestBodyBytesMax
    /// Largest offset (`offset=`, the start of `Range:`), the kernel's: past it keyset pagination
    /// (a filter on the order column) is the way.
    public static let offsetRange = 0...Query.offsetMax
    /// `limit=` as written (an integer >= 0); the effective limit is then at most the node's
    /// `query.limit_max`, as PostgREST caps at `db-max-rows`.
    public static let limitRange = 0...Int.max
    /// Parent rows a read ordered by an embedded resource's column may sort (EmbeddedOrder.swift):
    /// they are all read and sorted in memory, so the bound is one page of the largest limit
    /// (`KernelLimits.queryLimitMax`).
    public static let orderByEmbeddedRowsMax = 10_000
    /// Rows one aggregate read folds (Aggregates.swift): the kernel's default scan bound, so an
    /// aggregate never reads more than one ordinary query may examine.
    public static let aggregateRowsMax = KernelLimits.scanRowsMaxDefault
}

/// A PostgREST error that is not a kernel error: its code, message and HTTP status as PostgREST
/// answers them (`{"code","message","details","hint"}`).
struct PostgRESTFailure: Error, Equatable {
    let code: String
    let message: String
    var details: String?
    var hint: String?
    let status: UInt16

    /// PGRST103 (416): a limit, offset or `Range` outside its range.
    static func unsatisfiableRange(_ details: String) -> PostgRESTFailure {
        PostgRESTFailure(code: "PGRST103", message: "Requested range not satisfiable", details: details,
                         hint: nil, status: 416)
    }
}

/// Integers from a client, read without trapping.
enum ClientInteger {
    enum Reading: Equatable {
        /// An integer, saturated to `Int.min...Int.max`.
        case value(Int)
        /// Not an optionally signed run of ASCII digits.
        case malformed
    }

    /// `[-]digits` (ASCII only, no spaces), saturating: `99999999999999999999` reads as `Int.max`.
    static func read(_ text: Substring) -> Reading {
        var digits = text.utf8[...]
        let negative = digits.first == UInt8(ascii: "-")
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty else { return .malformed }
        var magnitude = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return .malformed }
            let (shifted, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = shifted.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            magnitude = o1 || o2 ? Int.max : sum
        }
        return .value(negative ? -magnitude : magnitude)  // -Int.max never overflows
    }

    /// A query parameter as an integer in `range`: 400 (PGRST100) when malformed, 416 (PGRST103)
    /// when outside the range.
    static func parameter(_ text: String, _ name: String, in range: ClosedRange<Int>) throws -> Int {
        guard case .value(let n) = read(Substring(text)) else {
            throw RESTError.parse("\(name)=\(text.prefix(40)): \(name) must be an integer")
        }
        guard range.contains(n) else {
            throw PostgRESTFailure.unsatisfiableRange("\(name) must be from \(range.lowerBound) to \(range.upperBound), got \(n)")
        }
        return n
    }

    /// `a + b` for counts and positions that cannot meaningfully pass `Int.max`.
    static func saturatingAdd(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? Int.max : Int.min) : sum
    }
}

/// The `Range: <from>-<to>` request header (items, both ends inclusive; `<from>-` is open-ended).
struct RangeHeader: Equatable {
    let offset: Int
    /// Rows asked for; nil when open-ended. Saturating: `0-9223372036854775807` is Int.max rows.
    let count: Int?

    /// nil when the header is malformed (PostgREST ignores it then); PGRST103 when well formed but
    /// unsatisfiable (`to < from`, or `from` past `RESTLimits.offsetRange`).
    static func parse(_ header: String) throws -> RangeHeader? {
        var text = Substring(header).drop { $0 == " " }
        while text.last == " " { text = text.dropLast() }
        if text.hasPrefix("items=") { text = text.dropFirst(6) }
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, case .value(let from) = ClientInteger.read(parts[0]) else { return nil }
        guard RESTLimits.offsetRange.contains(from) else {
            throw PostgRESTFailure.unsatisfiableRange("Range starts at \(from), outside \(RESTLimits.offsetRange)")
        }
        if parts[1].isEmpty { return RangeHeader(offset: from, count: nil) }
        guard case .value(let to) = ClientInteger.read(parts[1]), to >= 0 else { return nil }
        guard to >= from else {
            throw PostgRESTFailure.unsatisfiableRange("Range \(from)-\(to) ends before it starts")
        }
        return RangeHeader(offset: from, count: ClientInteger.saturatingAdd(to - from, 1))
    }
}

/// The work one request may still do (see the file comment). One per request, used on the
/// request's own task only.
final class RequestBudget {
    let rowsVisitedMax: Int
    let subQueriesMax: Int
    let responseBytesMax: Int
    private(set) var rowsVisited = 0
    private(set) var subQueries = 0
    private(set) var responseBytes = 0
    /// The node's query options; each query's scan bound is lowered to the remaining rows.
    private let options: QueryOptions
    /// Largest limit of one query (embedded resources' `limit=` is capped to it, as the main one).
    var limitMax: Int { options.limitMax }

    init(options: QueryOptions, rowsVisitedMax: Int = RESTLimits.requestRowsVisitedMax,
         subQueriesMax: Int = RESTLimits.requestSubQueriesMax, responseBytesMax: Int = RESTLimits.responseBytesMax) {
        self.options = options
        self.rowsVisitedMax = max(rowsVisitedMax, options.scanRowsMax)
        self.subQueriesMax = subQueriesMax
        self.responseBytesMax = responseBytesMax
    }

    static let hint = "select fewer embedded resources or levels, filter or limit the parent rows, or use a smaller limit on embedded resources"

    private func exceeded(_ what: String) -> AeroError {
        AeroError(.queryBudget, "the request exceeds its budget: \(what) (docs/LIMITS.md, request budget)", invariant: "Q1")
    }

    /// Runs `query` on `snapshot` within the budget: counts one query, plans it with at most the
    /// remaining rows as its scan bound (refused before it runs if it could examine more), and
    /// charges the rows it examined.
    /// `limitMax` raises the node's largest limit for this query only (a read the REST layer
    /// sorts itself, EmbeddedOrder); the scan bound still applies.
    func query(_ query: Query, on snapshot: Snapshot, limitMax: Int? = nil) throws -> QueryResult {
        SlowLog.noteQuery(query, on: snapshot)  // its plan, if the request turns out slow (Ops/SlowLog.swift)
        try chargeQuery()
        let remaining = rowsVisitedMax - rowsVisited
        var bounded = options
        bounded.scanRowsMax = min(options.scanRowsMax, remaining)
        if let limitMax { bounded.limitMax = max(bounded.limitMax, limitMax) }
        let data = try snapshot.state.collection(query.collection)
        let result: QueryResult
        do {
            result = try QueryEngine.execute(query, on: data, options: bounded)
        } catch let error as AeroError where error.code == .queryUnbounded {
            SlowLog.noteRefusedQuery(query, on: snapshot, options: options)  // its plan in the query log (Ops/SlowLog.swift)
            guard bounded.scanRowsMax < options.scanRowsMax else { throw error }
            // Planning only: a query past the node's own bound keeps its error (it names the index to declare).
            var planning = options
            planning.limitMax = bounded.limitMax
            _ = try QueryEngine.explain(query, on: data, options: planning)
            throw exceeded("a query on \(query.collection) could examine more rows than the \(remaining) left of \(rowsVisitedMax)")
        }
        rowsVisited = ClientInteger.saturatingAdd(rowsVisited, result.rowsExamined)
        return result
    }

    /// A document read by key (a many-to-one embedding): one query, one row.
    func document(_ collection: String, key: JSONValue, on snapshot: Snapshot) throws -> Document? {
        try chargeQuery()
        guard rowsVisited < rowsVisitedMax else { throw exceeded("more than \(rowsVisitedMax) rows examined") }
        rowsVisited += 1
        return try snapshot.document(collection, key: key)
    }

    private func chargeQuery() throws {
        guard subQueries < subQueriesMax else { throw exceeded("more than \(subQueriesMax) queries (embedded resources count one per parent row)") }
        subQueries += 1
    }

    /// Charges `bytes` of response body.
    func chargeBytes(_ bytes: Int) throws {
        responseBytes = ClientInteger.saturatingAdd(responseBytes, bytes)
        guard responseBytes <= responseBytesMax else { throw exceeded("a response body over \(responseBytesMax) bytes") }
    }
}
