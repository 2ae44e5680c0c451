// Ordering the parent rows by a column of a to-one embedded resource (issue 22):
//   select=title,author:users(name)&order=author(name).desc,id
// The kernel sorts one collection only, so these reads are sorted here: the parent rows that
// match the filter (at most `RESTLimits.orderByEmbeddedRowsMax`, else 400: filter the parent)
// are read through the request budget, each related row is read by key through the budget too
// (once per distinct key), under the related collection's select policy for the caller (a row the
// caller may not see sorts as null, RLS1), then sorted as the kernel sorts (RowOrder: nulls last
// ascending unless asked, the primary key as the tiebreak) and cut to offset and limit.
// The term's resource is found among the select's embeddings by alias or name, or else is a
// collection related to this one; it must be many-to-one (else 400 PGRST118, as PostgREST).

import Kernel

enum EmbeddedOrder {
    /// `author(name)` -> ("author", "name"); the column may be a JSON path.
    static func split(_ field: String) throws -> (alias: String, column: String) {
        guard let open = field.firstIndex(of: "("), field.hasSuffix(")") else {
            throw RESTError.parse("order term \(field.prefix(60)): expected <embedded>(<column>)")
        }
        let alias = String(field[..<open]).trimmingSpaces()
        let column = String(field[field.index(after: open)..<field.index(before: field.endIndex)]).trimmingSpaces()
        guard !alias.isEmpty, !column.isEmpty, !column.contains("("), !column.contains(",") else {
            throw RESTError.parse("order term \(field.prefix(60)): expected <embedded>(<column>)")
        }
        return (alias, column)
    }

    static func isEmbedded(_ sort: Sort) -> Bool { sort.field.hasSuffix(")") }

    private enum Term {
        case own(Sort)
        case related(Sort, collection: String, field: String, column: String, visible: FilterMatcher?)
    }

    /// The page of `query` (its filter, offset and limit) in `order`, and the number of matching rows.
    static func rows(_ query: Query, order: [Sort], items: [SelectItem], schema: CollectionSchema, snapshot: Snapshot,
                     budget: RequestBudget, condition: (CollectionSchema) throws -> Filter?) throws -> (rows: [Document], total: Int) {
        let terms = try order.map { try resolve($0, items: items, schema: schema, snapshot: snapshot, condition: condition) }
        let most = RESTLimits.orderByEmbeddedRowsMax
        let all = Query(collection: query.collection, filter: query.filter, limit: most + 1)
        let rows = try budget.query(all, on: snapshot, limitMax: most + 1).rows
        guard rows.count <= most else {
            throw AeroError(.queryUnbounded, "ordering by an embedded column sorts at most \(most) rows of \(schema.name): filter \(schema.name) first", invariant: "Q1")
        }
        var related: [String: [JSONValue: Document?]] = [:]
        func relatedRow(_ collection: String, _ key: JSONValue, _ visible: FilterMatcher?) throws -> Document? {
            if let known = related[collection]?[key] { return known }
            var row = try budget.document(collection, key: key, on: snapshot)
            if let row2 = row, let visible, !visible.matches(row2) { row = nil }
            related[collection, default: [:]][key] = .some(row)
            return row
        }
        var keyed: [(keys: [JSONValue], doc: Document)] = []
        keyed.reserveCapacity(rows.count)
        for doc in rows {
            let keys = try terms.map { term -> JSONValue in
                switch term {
                case .own(let sort): return FieldPath.read(doc, sort.field)
                case .related(_, let collection, let field, let column, let visible):
                    guard let key = doc[field], !key.isNull, let row = try relatedRow(collection, key, visible) else { return .null }
                    return FieldPath.read(row, column)
                }
            }
            keyed.append((keys, doc))
        }
        let sorts = terms.map { term -> Sort in
            switch term {
            case .own(let sort), .related(let sort, _, _, _, _): return sort
            }
        }
        let pk = schema.primaryKey
        keyed.sort { a, b in
            for (i, sort) in sorts.enumerated() {
                let x = a.keys[i], y = b.keys[i]
                if let first = sort.precedes(x, y) { return first }
            }
            let c = JSONValue.compare(a.doc[pk] ?? .null, b.doc[pk] ?? .null)
            return sorts.first?.direction == .desc ? c > 0 : c < 0
        }
        let page = keyed.dropFirst(query.offset).prefix(query.limit ?? most).map(\.doc)
        return (Array(page), keyed.count)
    }

    private static func resolve(_ sort: Sort, items: [SelectItem], schema: CollectionSchema, snapshot: Snapshot,
                                condition: (CollectionSchema) throws -> Filter?) throws -> Term {
        guard isEmbedded(sort) else { return .own(sort) }
        let (alias, column) = try split(sort.field)
        var name = alias
        for case .embed(let collection, let itemAlias, _, _) in items where itemAlias == alias || collection == alias {
            name = collection
            break
        }
        guard !SystemCollections.isSystem(name), let related = snapshot.state.collections[name]?.schema else {
            throw AeroError(.queryInvalid, "Could not find a relationship between '\(schema.name)' and '\(name)' in the schema cache")
        }
        guard case .manyToOne(let field)? = Relationship.between(schema, related) else {
            throw PostgRESTFailure(code: "PGRST118", message: "A related order on '\(name)' is not possible",
                                   details: "'\(schema.name)' and '\(name)' do not form a many-to-one or one-to-one relationship",
                                   hint: nil, status: 400)
        }
        let resolved = try ColumnReference.resolve(column, schema: related).name
        let visible = try condition(related).map { try FilterMatcher($0, schema: related) }
        return .related(sort, collection: name, field: field, column: resolved, visible: visible)
    }
}

extension Sort {
    /// Whether `x` comes before `y` under this sort as PostgREST orders (nulls last ascending and
    /// first descending unless `nulls` says otherwise), or nil when they are equal.
    func precedes(_ x: JSONValue, _ y: JSONValue) -> Bool? {
        let nullsFirst = (nulls ?? (direction == .asc ? .last : .first)) == .first
        switch (x.isNull, y.isNull) {
        case (true, true): return nil
        case (true, false): return nullsFirst
        case (false, true): return !nullsFirst
        case (false, false):
            let c = JSONValue.compare(x, y)
            return c == 0 ? nil : (direction == .asc ? c < 0 : c > 0)
        }
    }
}
