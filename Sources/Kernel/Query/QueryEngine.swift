// Query execution on one collection snapshot: plan (Planner), walk the access path, check the
// residual predicate, sort unless the path already yields the order, then offset, limit,
// projection and the exact count when asked.

public struct QueryResult: Sendable {
    public let rows: [Document]
    /// Exact number of matching rows ignoring offset and limit, when the query asked for it.
    public let totalCount: Int?
    public let plan: Plan
    public let rowsExamined: Int
}

public enum QueryEngine {
    public static func explain(_ query: Query, on data: CollectionData,
                               options: QueryOptions = QueryOptions()) throws -> Plan {
        try Planner.prepare(query, on: data, options: options).plan
    }

    public static func execute(_ query: Query, on data: CollectionData,
                               options: QueryOptions = QueryOptions()) throws -> QueryResult {
        let prepared = try Planner.prepare(query, on: data, options: options)
        let plan = prepared.plan
        let limit = prepared.validated.limit
        let want = Planner.saturatingAdd(query.offset, limit)
        // The closure below takes these few values, not the plan and the prepared query (each a
        // struct of many references, copied at every call).
        let residual = prepared.residual, sortSatisfied = plan.sortSatisfied, bound = plan.rowsExaminedBound
        let offset = query.offset
        // With the order given by the path, stop once offset + limit rows matched, unless an
        // exact count needs every candidate checked.
        let canStop = sortSatisfied && (!query.count || residual == nil)
        var rows: [Document] = []
        var examined = 0, matched = 0
        try forEachCandidate(plan.path, data) { doc in
            if canStop && matched >= want { return false }
            examined += 1
            guard examined <= bound else {
                throw AeroError(.internalError, "query examined more rows than its plan bound \(bound)")
            }
            guard residual?.matches(doc) ?? true else { return true }
            matched += 1
            if !sortSatisfied || (matched > offset && rows.count < limit) { rows.append(doc) }
            return true
        }
        if !sortSatisfied {
            let order = prepared.validated.order
            rows.sort { order.compare($0, $1) < 0 }
            rows = Array(rows.dropFirst(offset).prefix(limit))
        }
        if let select = query.select {
            rows = rows.map { doc in
                var out: Document = [:]
                for field in select { out[field] = doc[field] ?? .null }
                return out
            }
        }
        let total: Int? = query.count ? (prepared.residual == nil ? plan.candidateRows : matched) : nil
        return QueryResult(rows: rows, totalCount: total, plan: plan, rowsExamined: examined)
    }

    /// Calls `body` with each candidate document of the path until it returns false.
    private static func forEachCandidate(_ path: AccessPath, _ data: CollectionData,
                                         _ body: (Document) throws -> Bool) throws {
        switch path {
        case .key(let key):
            guard let doc = data.document(forKey: key) else { return }
            _ = try body(doc)
        case .keys(let keys, let reverse):
            for key in reverse ? keys.reversed() : keys {
                guard let doc = data.document(forKey: key) else { continue }
                guard try body(doc) else { return }
            }
        case .index(let name, let lower, let upper, let reverse):
            let entries = try indexEntries(name, data)
            for (key, _) in entries.entries(from: lower.map(RangeBound.inclusive), to: upper.map(RangeBound.inclusive),
                                            reverse: reverse) {
                guard try body(try document(key, name, data)) else { return }
            }
        case .fulltext(let name, let token):
            let entries = try indexEntries(name, data)
            for (key, _) in entries.entries(from: .inclusive(IndexKey([.string(token)], edge: .beforeExtensions)),
                                            to: .inclusive(IndexKey([.string(token)], edge: .afterExtensions))) {
                guard try body(try document(key, name, data)) else { return }
            }
        case .documents(let reverse):
            for (_, doc) in data.documents.entries(reverse: reverse) {
                guard try body(doc) else { return }
            }
        }
    }

    private static func indexEntries(_ name: String, _ data: CollectionData) throws -> PersistentSortedMap<IndexKey, Void> {
        guard let index = data.index(named: name) else {
            throw AeroError(.internalError, "plan names index \(name), which \(data.schema.name) does not have")
        }
        return index.entries
    }

    private static func document(_ key: IndexKey, _ index: String, _ data: CollectionData) throws -> Document {
        guard let doc = data.document(forKey: key.primaryKey) else {
            throw AeroError(.internalError, "index \(index) holds \(key) but the document is missing")
        }
        return doc
    }
}
