// The planner (T1): a fixed priority of access paths, first match wins, ties broken by index name.
//
//   1. keyLookup         primary key `eq` (or `$in` on the primary key)
//   2. uniqueIndex       a unique ordered index with every field bound by `eq`
//   3. indexEquality     the ordered index with the longest prefix of fields bound by `eq`
//                        (plus a range on the next field, if any)
//   4. indexRange        an ordered index whose first field has gt/gte/lt/lte bounds (combined)
//   5. fulltextIndex     a fulltext index on the field of a `$fts` (drives on its rarest word)
//   6. orderedIndexScan  an ordered index that yields the requested order (reads only what the
//                        limit needs when nothing else filters)
//   7. fullScan          every document in key order
//
// Only the top-level AND conjuncts feed access paths (`eq`, `$is`, ranges, `$in` on the key,
// `$fts`); every other predicate is residual, checked on each candidate. `$is`/`eq null` use
// indexes like any value. Ranges use indexes only on single-kind fields (not json or arrays).
//
// Bounds (Q1): a plan whose rows examined could exceed `scanRowsMax` is refused with
// AERO_QUERY_UNBOUNDED naming the index to declare. Rows examined are the candidate rows, or only
// offset + limit when nothing is residual and the path yields the requested order.

struct PreparedQuery: Sendable {
    let validated: ValidatedQuery
    let plan: Plan
    let residual: Predicate?
}

/// One range bound on a field.
private struct Endpoint {
    let value: JSONValue
    let inclusive: Bool
}

/// What the top-level conjuncts offer to access paths.
private struct ConjunctAnalysis {
    var equalities: [String: (value: JSONValue, conjunct: Int)] = [:]
    var lower: [String: Endpoint] = [:]
    var upper: [String: Endpoint] = [:]
    var rangeConjuncts: [String: [Int]] = [:]
    var keyList: (values: [JSONValue], conjunct: Int)?
    var fulltext: [(field: String, query: TextQuery, conjunct: Int)] = []

    init(_ conjuncts: [Filter], schema: CollectionSchema) throws {
        for (i, c) in conjuncts.enumerated() {
            switch c {
            case .compare(let f, .eq, let v), .is(let f, let v):
                if equalities[f] == nil { equalities[f] = (v, i) }
            case .compare(let f, let op, let v) where Self.isRangeable(schema.fields[f]?.type ?? (try? QueryValidator.fieldType(f, schema))):
                let endpoint = Endpoint(value: v, inclusive: op == .gte || op == .lte)
                if op == .gt || op == .gte {
                    lower[f] = Self.tighter(lower[f], endpoint, keepGreater: true)
                } else if op == .lt || op == .lte {
                    upper[f] = Self.tighter(upper[f], endpoint, keepGreater: false)
                } else { continue }
                rangeConjuncts[f, default: []].append(i)
            case .in(let f, let vs) where f == schema.primaryKey && keyList == nil:
                let keys = Set(vs.filter { !$0.isNull }.map(OrderedValue.init)).sorted().map(\.value)
                keyList = (keys, i)
            case .fulltext(let f, let q, let mode, _):
                fulltext.append((f, try TextQuery.parse(q, mode: mode), i))
            default:
                continue
            }
        }
    }

    static func isRangeable(_ type: FieldType?) -> Bool {
        switch type {
        case .int?, .float?, .text?, .uuid?, .timestamp?, .bool?: return true
        default: return false
        }
    }

    private static func tighter(_ current: Endpoint?, _ new: Endpoint, keepGreater: Bool) -> Endpoint {
        guard let current else { return new }
        let c = JSONValue.compare(new.value, current.value)
        if c == 0 { return current.inclusive ? new : current }
        return (c > 0) == keepGreater ? new : current
    }
}

/// A chosen access path before bounds are computed.
private struct Choice {
    let access: Plan.Access
    let index: String?
    let path: AccessPath
    let consumed: Set<Int>
    let sortSatisfied: Bool
}

enum Planner {
    static func prepare(_ query: Query, on data: CollectionData, options: QueryOptions) throws -> PreparedQuery {
        let validated = try QueryValidator.validate(query, schema: data.schema, options: options)
        if case .compare(let f, .eq, let v)? = validated.filter, f == data.schema.primaryKey, validated.after == nil {
            return try pointRead(query, validated, key: v, data, options)
        }
        let conjuncts = validated.filter?.conjuncts ?? []
        let choice = try choose(try ConjunctAnalysis(conjuncts, schema: data.schema), conjuncts, validated, data)
        let residualFilters = conjuncts.indices.filter { !choice.consumed.contains($0) }.map { conjuncts[$0] }
        var residualPredicates = try residualFilters.map(Predicate.compile)
        if let after = validated.after, query.after != nil { residualPredicates.append(after) }
        let candidates = candidateCount(choice.path, data, exact: query.count)
        let want = saturatingAdd(query.offset, validated.limit)
        let bound = residualPredicates.isEmpty && choice.sortSatisfied ? min(candidates, want) : candidates
        let plan = Plan(collection: data.schema.name, access: choice.access, index: choice.index,
                        reverse: isReverse(choice.path),
                        sortSatisfied: choice.sortSatisfied, candidateRows: candidates,
                        rowsExaminedBound: bound,
                        filters: .make(bound: choice.consumed.sorted().map { conjuncts[$0] }, residual: residualFilters),
                        after: validated.after == nil ? nil : query.after, path: choice.path)
        if bound > options.scanRowsMax {
            throw unbounded(plan, options, suggestion: suggestedFields(residualFilters, query.order))
        }
        let residual: Predicate? = residualPredicates.isEmpty ? nil
            : (residualPredicates.count == 1 ? residualPredicates[0] : .and(residualPredicates))
        return PreparedQuery(validated: validated, plan: plan, residual: residual)
    }

    /// Rule 1 for the commonest query, the filter one `eq` on the primary key: the plan `choose`
    /// makes for it (same access, path, bounds and counts), built without the conjunct
    /// analysis, the consumed set and the filter arrays (allocations on every point read).
    private static func pointRead(_ query: Query, _ validated: ValidatedQuery, key: JSONValue, _ data: CollectionData,
                                  _ options: QueryOptions) throws -> PreparedQuery {
        let path: AccessPath = key.isNull ? .keys([], reverse: false) : .key(key)
        let candidates = candidateCount(path, data, exact: query.count)
        let bound = min(candidates, saturatingAdd(query.offset, validated.limit))
        let plan = Plan(collection: data.schema.name, access: .keyLookup, index: nil, reverse: false,
                        sortSatisfied: true, candidateRows: candidates, rowsExaminedBound: bound,
                        filters: .single(validated.filter!), after: nil, path: path)
        if bound > options.scanRowsMax {  // at most one row: only a scanRowsMax of 0 refuses it
            throw unbounded(plan, options, suggestion: suggestedFields([], query.order))
        }
        return PreparedQuery(validated: validated, plan: plan, residual: nil)
    }

    // MARK: Choosing

    private static func choose(_ a: ConjunctAnalysis, _ conjuncts: [Filter], _ q: ValidatedQuery,
                               _ data: CollectionData) throws -> Choice {
        let schema = data.schema
        let pk = schema.primaryKey
        // 1. Key lookup.
        let keyOrder = sortDirection(keyFields: [], equalities: [], q.order, schema)
        if let eq = a.equalities[pk] {
            return Choice(access: .keyLookup, index: nil, path: eq.value.isNull ? .keys([], reverse: false) : .key(eq.value),
                          consumed: [eq.conjunct], sortSatisfied: true)
        }
        if let list = a.keyList {
            return Choice(access: .keyLookup, index: nil, path: .keys(list.values, reverse: keyOrder ?? false),
                          consumed: [list.conjunct], sortSatisfied: keyOrder != nil)
        }
        let ordered = schema.indexes.filter { $0.kind == .ordered }.sorted { $0.name < $1.name }
        // 2. Unique index, every field bound by eq.
        if let index = ordered.first(where: { $0.unique && $0.fields.allSatisfy { a.equalities[$0] != nil } }) {
            return indexChoice(.uniqueIndex, index, prefix: index.fields.count, a, q, schema)
        }
        // 3. Longest eq-bound prefix.
        var best: (index: IndexSchema, prefix: Int)?
        for index in ordered {
            let prefix = index.fields.prefix { a.equalities[$0] != nil }.count
            if prefix > 0 && prefix > (best?.prefix ?? 0) { best = (index, prefix) }
        }
        if let best { return indexChoice(.indexEquality, best.index, prefix: best.prefix, a, q, schema) }
        // 4. Range on an index's first field.
        if let index = ordered.first(where: { a.rangeConjuncts[$0.fields[0]] != nil }) {
            return indexChoice(.indexRange, index, prefix: 0, a, q, schema)
        }
        // 5. Fulltext index.
        let fulltextIndexes = schema.indexes.filter { $0.kind == .fulltext }.sorted { $0.name < $1.name }
        for index in fulltextIndexes {
            guard let fts = a.fulltext.first(where: { $0.field == index.fields[0] && !$0.query.requiredTerms.isEmpty }),
                  let entries = data.index(named: index.name)?.entries else { continue }
            let token = rarestToken(fts.query.requiredTerms, entries)
            return Choice(access: .fulltextIndex, index: index.name, path: .fulltext(name: index.name, token: token),
                          consumed: [], sortSatisfied: q.order.sorts.isEmpty)
        }
        // 6. An index that yields the requested order (unless key order already does).
        if !q.order.sorts.isEmpty && keyOrder == nil {
            for index in ordered {
                guard let reverse = sortDirection(keyFields: index.fields, equalities: [], q.order, schema) else { continue }
                return Choice(access: .orderedIndexScan, index: index.name,
                              path: .index(name: index.name, lower: nil, upper: nil, reverse: reverse),
                              consumed: [], sortSatisfied: true)
            }
        }
        // 7. Full scan.
        return Choice(access: .fullScan, index: nil, path: .documents(reverse: keyOrder ?? false),
                      consumed: [], sortSatisfied: keyOrder != nil)
    }

    /// An ordered index path: `prefix` leading fields bound by eq, then an optional range on the next.
    private static func indexChoice(_ access: Plan.Access, _ index: IndexSchema, prefix: Int,
                                    _ a: ConjunctAnalysis, _ q: ValidatedQuery, _ schema: CollectionSchema) -> Choice {
        let eqFields = Array(index.fields[..<prefix])
        let values = eqFields.map { a.equalities[$0]!.value }
        var consumed = Set(eqFields.map { a.equalities[$0]!.conjunct })
        var lower: IndexKey? = prefix > 0 ? IndexKey(values, edge: .beforeExtensions) : nil
        var upper: IndexKey? = prefix > 0 ? IndexKey(values, edge: .afterExtensions) : nil
        if prefix < index.fields.count, let conjuncts = a.rangeConjuncts[index.fields[prefix]] {
            let field = index.fields[prefix]
            consumed.formUnion(conjuncts)
            if let low = a.lower[field] {
                lower = IndexKey(values + [low.value], edge: low.inclusive ? .beforeExtensions : .afterExtensions)
            }
            if let high = a.upper[field] {
                upper = IndexKey(values + [high.value], edge: high.inclusive ? .afterExtensions : .beforeExtensions)
            } else {
                upper = IndexKey(values + [.null], edge: .beforeExtensions)  // nulls sort last; ranges never match them
            }
        }
        let reverse = sortDirection(keyFields: Array(index.fields[prefix...]), equalities: Set(eqFields), q.order, schema)
        return Choice(access: access, index: index.name,
                      path: .index(name: index.name, lower: lower, upper: upper, reverse: reverse ?? false),
                      consumed: consumed, sortSatisfied: reverse != nil)
    }

    /// Whether walking entries ordered by `keyFields` then the primary key yields `order`:
    /// nil if not, else whether to walk backwards. Terms on eq-bound fields are constant and
    /// skipped; all terms must share one direction; nullable fields need nulls last ascending and
    /// first descending (the SQL defaults) because null sorts last in index keys (IndexKey).
    private static func sortDirection(keyFields: [String], equalities: Set<String>, _ order: RowOrder,
                                      _ schema: CollectionSchema) -> Bool? {
        guard let direction = order.sorts.first?.direction else { return false }
        guard order.sorts.allSatisfy({ $0.direction == direction }) else { return nil }
        let terms = order.sorts.filter { !equalities.contains($0.field) }
        var fields = terms.map(\.field)
        if fields.last == schema.primaryKey { fields.removeLast() }
        guard fields == keyFields else { return nil }
        for term in terms where term.field != schema.primaryKey && schema.fields[term.field]?.nullable != false {
            guard term.nullsFirst == (direction == .desc) else { return nil }
        }
        return direction == .desc
    }

    private static func rarestToken(_ tokens: [String], _ entries: PersistentSortedMap<IndexKey, Void>) -> String {
        var best = tokens[0], bestCount = Int.max
        for token in tokens {
            let n = entries.count(from: .inclusive(IndexKey([.string(token)], edge: .beforeExtensions)),
                                  to: .inclusive(IndexKey([.string(token)], edge: .afterExtensions)))
            if n < bestCount { best = token; bestCount = n }
        }
        return best
    }

    // MARK: Bounds

    /// Rows the path can yield. For key lookups this is the number of keys (an upper bound)
    /// unless an exact count was asked for: probing each key twice would halve point-read speed.
    private static func candidateCount(_ path: AccessPath, _ data: CollectionData, exact: Bool) -> Int {
        switch path {
        case .key(let key):
            return exact && data.document(forKey: key) == nil ? 0 : 1
        case .keys(let keys, _):
            guard exact else { return keys.count }
            return keys.reduce(0) { $0 + (data.document(forKey: $1) == nil ? 0 : 1) }
        case .index(let name, let lower, let upper, _):
            return data.index(named: name)?.entries.count(from: lower.map(RangeBound.inclusive),
                                                          to: upper.map(RangeBound.inclusive)) ?? 0
        case .fulltext(let name, let token):
            return data.index(named: name)?.entries.count(
                from: .inclusive(IndexKey([.string(token)], edge: .beforeExtensions)),
                to: .inclusive(IndexKey([.string(token)], edge: .afterExtensions))) ?? 0
        case .documents:
            return data.count
        }
    }

    private static func isReverse(_ path: AccessPath) -> Bool {
        switch path {
        case .keys(_, let r), .index(_, _, _, let r), .documents(let r): return r
        case .key, .fulltext: return false
        }
    }

    static func saturatingAdd(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? Int.max : sum
    }

    /// Fields whose index would bound the query: residual equalities first, then a residual
    /// range, then the sort fields, then any field the residual filter reads.
    private static func suggestedFields(_ residual: [Filter], _ order: [Sort]) -> [String] {
        var fields: [String] = []
        for case .compare(let f, .eq, _) in residual where !fields.contains(f) { fields.append(f) }
        if let range = residual.lazy.compactMap({ f -> String? in
            if case .compare(let field, let op, _) = f, op != .eq, op != .ne { return field }
            return nil
        }).first, !fields.contains(range) {
            fields.append(range)
        }
        if fields.isEmpty { fields = order.map(\.field) }
        if fields.isEmpty, let any = residual.lazy.compactMap(firstField).first { fields = [any] }
        return fields
    }

    private static func firstField(_ filter: Filter) -> String? {
        switch filter {
        case .and(let parts), .or(let parts): return parts.lazy.compactMap(firstField).first
        case .not(let inner): return firstField(inner)
        case .compare(let f, _, _), .in(let f, _), .is(let f, _), .like(let f, _, _), .contains(let f, _),
             .containedBy(let f, _), .overlaps(let f, _), .fulltext(let f, _, _, _):
            return f
        }
    }

    private static func unbounded(_ plan: Plan, _ options: QueryOptions, suggestion: [String]) -> AeroError {
        let advice = suggestion.isEmpty
            ? "use a smaller offset, or keyset pagination with \"after\""
            : "declare an index on \(JSON.encodeString(.array(suggestion.map(JSONValue.string))))"
        return AeroError(.queryUnbounded,
                         "query on \(plan.collection) (\(plan.access.rawValue)) could examine \(plan.rowsExaminedBound) rows,"
                         + " more than the bound of \(options.scanRowsMax): \(advice)", invariant: "Q1")
    }
}
