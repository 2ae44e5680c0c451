// Aggregate functions in `select=` (PostgREST 12 "Aggregate functions", issue 22 part 4):
//   select=count()                      -> [{"count":4}]
//   select=qty.sum(),ok                 -> one row per distinct ok: [{"sum":6,"ok":true},...]
//   select=n:count(),total:qty.sum(),doc->>color,qty.avg(),qty.min(),qty.max(),qty.count()
// Off by default, as PostgREST's `db-aggregates-enabled`: a node turns them on with
// `"db_aggregates_enabled": true` in aerodb.json (QueryOptions.aggregatesEnabled); otherwise
// 400 PGRST123. The other selected columns (fields, JSON paths, casts) are the grouping keys.
//
// How it runs: a lone `count()` is the kernel's exact count (the planner's index counts where
// it can). Otherwise the kernel runs the read's query (its filter with the caller's policy condition
// injected, RLS1) through the request budget, with at most `RESTLimits.aggregateRowsMax` rows
// (more: 400 AERO_QUERY_UNBOUNDED, filter first; a plan that could examine more than the budget
// is refused before it runs, Q1); the rows are then grouped and folded here. Groups come out
// ordered by their keys (or by `order=` on grouping columns), then offset and limit apply.
// count() counts rows, col.count() non-null values; sum of ints stays an int (a float past
// 2^63), avg is a float; sum/avg need a number (else 42883, as PostgreSQL's "function does not
// exist"), min/max a scalar. Not built (400): aggregates inside embedded resources, embedding or
// `*` next to aggregates, casts of an aggregate's result.

import Kernel

enum AggregateFunction: String, Sendable, CaseIterable {
    case count, sum, avg, min, max
}

enum Aggregates {
    /// `count()` or `<column>.<function>()` (after the alias is split off); nil when `raw` is not one.
    static func parse(_ raw: String, alias: String?, schema: CollectionSchema) throws -> SelectItem? {
        guard raw.hasSuffix("()") else { return nil }
        let head = raw.dropLast(2)
        if head == "count" { return .aggregate(.count, column: nil, alias: alias ?? "count") }
        guard let dot = head.lastIndex(of: "."), let function = AggregateFunction(rawValue: String(head[head.index(after: dot)...])) else {
            return nil
        }
        let (column, type) = try ColumnReference.resolve(String(head[..<dot]), schema: schema)
        switch (function, type) {
        case (.sum, .int), (.sum, .float), (.avg, .int), (.avg, .float), (.count, _): break
        case (.min, _), (.max, _):
            if case .array = type { throw unsupported(function, type) }
            if type == .json { throw unsupported(function, type) }
        default: throw unsupported(function, type)
        }
        return .aggregate(function, column: column, alias: alias ?? function.rawValue)
    }

    private static func unsupported(_ function: AggregateFunction, _ type: FieldType) -> PostgRESTFailure {
        PostgRESTFailure(code: "42883", message: "function \(function.rawValue)(\(SelectCast.sqlName(type))) does not exist",
                         details: nil, hint: "No function matches the given name and argument types.", status: 400)
    }

    static func contains(_ items: [SelectItem]) -> Bool {
        items.contains { if case .aggregate = $0 { return true }; return false }
    }

    static let disabled = PostgRESTFailure(code: "PGRST123", message: "Use of aggregate functions is not allowed",
                                           details: nil, hint: nil, status: 400)

    /// The aggregated rows of `query` (filter already restricted by policies), grouped by the
    /// non-aggregate items, ordered, offset and limited; and the number of groups.
    static func rows(_ query: Query, order: [Sort], items: [SelectItem], schema: CollectionSchema, snapshot: Snapshot,
                     budget: RequestBudget) throws -> (rows: [JSONValue], total: Int) {
        for item in items {
            switch item {
            case .all, .embed: throw RESTError.parse("aggregates next to * or an embedded resource are not built yet: select the grouping columns")
            default: continue
            }
        }
        if items.count == 1, case .aggregate(.count, nil, let alias) = items[0] {
            // A lone count() is the planner's exact count: index counts where the plan allows, no rows folded.
            let counted = try budget.query(Query(collection: query.collection, filter: query.filter, limit: 0, count: true), on: snapshot)
            let row: JSONValue = .object([alias: .int(Int64(counted.totalCount ?? 0))])
            return (query.offset == 0 && query.limit != 0 ? [row] : [], 1)
        }
        let most = RESTLimits.aggregateRowsMax
        let read = try budget.query(Query(collection: query.collection, filter: query.filter, limit: most + 1), on: snapshot,
                                    limitMax: most + 1).rows
        guard read.count <= most else {
            throw AeroError(.queryUnbounded, "aggregates read at most \(most) rows of \(schema.name): filter \(schema.name) first", invariant: "Q1")
        }
        let keys = items.filter { if case .aggregate = $0 { return false }; return true }
        let folds = items.compactMap { item -> (AggregateFunction, String?)? in
            if case .aggregate(let f, let c, _) = item { return (f, c) }
            return nil
        }
        var groups: [[JSONValue]: [Accumulator]] = [:]
        var firstSeen: [[JSONValue]] = []
        for doc in read {
            let key = try keys.map { try value($0, doc, schema) }
            if groups[key] == nil { groups[key] = folds.map { Accumulator(function: $0.0) }; firstSeen.append(key) }
            for (i, fold) in folds.enumerated() {
                groups[key]![i].add(fold.1.map { FieldPath.read(doc, $0) }, row: true)
            }
        }
        if keys.isEmpty && groups.isEmpty { groups[[]] = folds.map { Accumulator(function: $0.0) }; firstSeen = [[]] }
        var out: [(key: [JSONValue], row: JSONValue)] = firstSeen.map { key in
            var row: Document = [:]
            for (i, item) in keys.enumerated() { if let name = item.outputName { row[name] = key[i] } }
            for (i, item) in items.enumerated() where { if case .aggregate = item { return true }; return false }() {
                let index = items[..<i].filter { if case .aggregate = $0 { return true }; return false }.count
                row[item.outputName ?? ""] = groups[key]![index].result
            }
            return (key, .object(row))
        }
        let sorts = try order.map { sort -> (Int, Sort) in
            guard let i = keys.firstIndex(where: { $0.outputName == sort.field || keyName($0) == sort.field }) else {
                throw RESTError.parse("with aggregates, order= names grouping columns only (\(sort.field.prefix(60)) is not one)")
            }
            return (i, sort)
        }
        out.sort { a, b in
            for (i, sort) in sorts {
                let x = a.key[i], y = b.key[i]
                if let first = sort.precedes(x, y) { return first }
            }
            for (x, y) in zip(a.key, b.key) {
                let c = JSONValue.compare(x, y)
                if c != 0 { return c < 0 }
            }
            return false
        }
        let page = out.dropFirst(query.offset).prefix(query.limit ?? out.count).map(\.row)
        return (Array(page), out.count)
    }

    private static func keyName(_ item: SelectItem) -> String? {
        switch item {
        case .column(let name, _): return name
        case .path(let path, _): return path.description
        default: return nil
        }
    }

    private static func value(_ item: SelectItem, _ doc: Document, _ schema: CollectionSchema) throws -> JSONValue {
        switch item {
        case .column(let name, _): return doc[name] ?? .null
        case .path(let path, _): return try SelectCast.value(path, in: doc, schema: schema)
        default: return .null
        }
    }

    /// One aggregate of one group.
    struct Accumulator {
        let function: AggregateFunction
        private var count = 0
        private var intSum: Int64 = 0
        private var floatSum = 0.0
        private var floating = false
        private var extreme: JSONValue?

        init(function: AggregateFunction) { self.function = function }

        /// `value` nil: `count()` (every row counts).
        mutating func add(_ value: JSONValue?, row: Bool) {
            guard let value else { count += 1; return }
            guard !value.isNull else { return }
            count += 1
            switch function {
            case .count: break
            case .sum, .avg:
                switch value {
                case .int(let i) where !floating:
                    let (s, overflow) = intSum.addingReportingOverflow(i)
                    if overflow { floating = true; floatSum = Double(intSum) + Double(i) } else { intSum = s }
                case .int(let i): floatSum += Double(i)
                case .float(let d):
                    if !floating { floating = true; floatSum = Double(intSum) }
                    floatSum += d
                default: break
                }
            case .min, .max:
                if let current = extreme {
                    let c = JSONValue.compare(value, current)
                    if function == .min ? c < 0 : c > 0 { extreme = value }
                } else {
                    extreme = value
                }
            }
        }

        var result: JSONValue {
            switch function {
            case .count: return .int(Int64(count))
            case .sum:
                guard count > 0 else { return .null }
                return floating ? .float(floatSum) : .int(intSum)
            case .avg:
                guard count > 0 else { return .null }
                return .float((floating ? floatSum : Double(intSum)) / Double(count))
            case .min, .max: return extreme ?? .null
            }
        }
    }
}
