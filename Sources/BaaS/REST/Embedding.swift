// `select=` with columns, renames and embedded references (supabase-wire §3.2):
//   select=*,label:name,author:users(name,email),comments(body)
// An embedded name is a collection related by a declared reference, in either direction:
// - many-to-one: this collection has a field referencing it -> an object (or null);
// - one-to-many: it has a field referencing this collection -> an array of its rows.
// Related rows are read from the same snapshot as the parent rows (P2), under the related
// collection's row-level-security policies for the caller (RLS1): an invisible row embeds as
// null (many-to-one) or is left out (one-to-many).

import Kernel

indirect enum SelectItem: Equatable {
    case all
    case column(name: String, alias: String)
    /// A JSON path and/or a cast (`doc->a->>b`, `qty::text`, `n:doc->>n::int`): named by its
    /// last key (or its column) unless aliased, as PostgREST names it.
    case path(FieldPath, alias: String)
    case embed(collection: String, alias: String, items: [SelectItem], options: EmbedOptions = EmbedOptions())
    /// `count()`, `qty.sum()`, ... (Aggregates.swift); `column` nil for `count()`.
    case aggregate(AggregateFunction, column: String?, alias: String)

    var outputName: String? {
        switch self {
        case .all: return nil
        case .column(_, let alias), .path(_, let alias), .embed(_, let alias, _, _), .aggregate(_, _, let alias): return alias
        }
    }
}

/// What the query string asks of one embedded resource: `<alias>.<column>=<op>.<value>`,
/// `<alias>.or=(...)`, `<alias>.order=`, `<alias>.limit=`, `<alias>.offset=` (nested resources:
/// `posts.comments.order=`), and `!inner` in the select (`author:users!inner(name)`): only
/// parents with a matching embedded row are returned.
struct EmbedOptions: Equatable {
    var inner = false
    /// `...rel(cols)`: a to-one resource whose columns are lifted into the parent row.
    var spread = false
    /// `rel(count)`: the number of related rows the caller may see, `[{"count":n}]`
    /// (one-to-many) or `{"count":n}` (many-to-one), instead of the rows.
    var count = false
    var filters: [Filter] = []
    var order: [Sort] = []
    var limit: Int?
    var offset = 0

    var filter: Filter? { filters.isEmpty ? nil : (filters.count == 1 ? filters[0] : .and(filters)) }
}

/// Embedding deeper than this is refused: bounds the reads one request can fan out into.
let embeddingDepthMax = 4

enum SelectParser {
    static func parse(_ text: String, schema: CollectionSchema, collections: [String: CollectionSchema],
                      depth: Int = 0) throws -> [SelectItem] {
        guard depth <= embeddingDepthMax else { throw RESTError.parse("embedding nested deeper than \(embeddingDepthMax)") }
        var items: [SelectItem] = []
        for raw in try ListSplitter.split(text) where !raw.isEmpty {
            items.append(try item(raw, schema: schema, collections: collections, depth: depth))
        }
        return items.isEmpty ? [.all] : items
    }

    private static func item(_ raw: String, schema: CollectionSchema, collections: [String: CollectionSchema],
                             depth: Int) throws -> SelectItem {
        if raw == "*" { return .all }
        if raw.hasSuffix("()") {
            let (alias, body) = split(raw)
            if let aggregate = try Aggregates.parse(body, alias: alias == body ? nil : alias, schema: schema) {
                guard depth == 0 else { throw RESTError.parse("aggregates inside an embedded resource are not built yet: \(raw.prefix(60))") }
                return aggregate
            }
        }
        if let open = raw.firstIndex(of: "("), raw.hasSuffix(")") {
            var head = String(raw[..<open])
            let spread = head.hasPrefix("...")
            if spread { head.removeFirst(3) }
            let inner = String(raw[raw.index(after: open)..<raw.index(before: raw.endIndex)])
            let (alias, target) = split(head)
            let hints = target.split(separator: "!").map(String.init)
            let name = hints.first ?? target  // !inner is kept, other !hints are dropped
            // System collections (users, sessions, tokens...) are never embedded, even when a
            // user collection references one (profiles.id -> _auth_users is a useful reference).
            guard !SystemCollections.isSystem(name), let related = collections[name] else {
                throw AeroError(.queryInvalid, "Could not find a relationship between '\(schema.name)' and '\(name)' in the schema cache")
            }
            guard let relationship = Relationship.between(schema, related) else {
                throw AeroError(.queryInvalid, "Could not find a relationship between '\(schema.name)' and '\(name)': declare a reference")
            }
            var options = EmbedOptions(inner: hints.dropFirst().contains("inner"), spread: spread)
            if spread, case .oneToMany = relationship {
                throw PostgRESTFailure(code: "PGRST119", message: "A spread operation on '\(name)' is not possible",
                                       details: "'\(schema.name)' and '\(name)' do not form a many-to-one or one-to-one relationship",
                                       hint: nil, status: 400)
            }
            let trimmed = inner.trimmingSpaces()
            if (trimmed == "count" || trimmed == "count()"), related.fields["count"] == nil {
                guard !spread else { throw RESTError.parse("a spread embedding cannot count: \(raw.prefix(60))") }
                options.count = true
                return .embed(collection: name, alias: alias == target ? name : alias, items: [], options: options)
            }
            return .embed(collection: name, alias: alias == target ? name : alias,
                          items: try parse(inner, schema: related, collections: collections, depth: depth + 1),
                          options: options)
        }
        let (alias, column) = split(raw)
        if FieldPath.isPath(column) {
            let path = try SelectCast.path(column, schema: schema)
            return .path(path, alias: alias == column ? path.outputName : alias)
        }
        guard schema.fields[column] != nil else { throw RESTError.unknownColumn(column, schema.name) }
        return .column(name: column, alias: alias)
    }

    /// `alias:name` -> (alias, name); `name` -> (name, name). A `::cast` suffix is not an alias.
    private static func split(_ text: String) -> (String, String) {
        if let range = text.range(of: ":"), !text[range.upperBound...].hasPrefix(":") {
            return (String(text[..<range.lowerBound]), String(text[range.upperBound...]))
        }
        return (text, text)
    }
}

enum Relationship {
    case manyToOne(field: String)
    case oneToMany(field: String)

    /// The declared reference linking `parent` to `child`, looked for in both directions.
    static func between(_ parent: CollectionSchema, _ child: CollectionSchema) -> Relationship? {
        if let field = parent.fields.keys.sorted().first(where: { parent.fields[$0]?.references?.collection == child.name }) {
            return .manyToOne(field: field)
        }
        if let field = child.fields.keys.sorted().first(where: { child.fields[$0]?.references?.collection == parent.name }) {
            return .oneToMany(field: field)
        }
        return nil
    }
}

/// Projects rows through the select items, reading embedded resources from the snapshot. Every
/// embedded read (a look-up by key or a query, one per parent row and embedding) goes through
/// the request's budget, so a nesting that multiplies is refused as soon as it would pass it.
struct Projector {
    let snapshot: Snapshot
    let budget: RequestBudget
    /// The caller's select condition on each embedded collection that has one.
    private var conditions: [String: (filter: Filter, matcher: FilterMatcher)] = [:]

    /// The caller's select condition on an embedded collection (nil: every row is visible).
    func condition(_ collection: String) -> Filter? { conditions[collection]?.filter }

    /// `condition` gives the caller's select condition on a collection (nil: all rows visible);
    /// it is asked once per embedded collection of `items`.
    init(snapshot: Snapshot, items: [SelectItem], budget: RequestBudget, condition: (CollectionSchema) throws -> Filter?) throws {
        self.snapshot = snapshot
        self.budget = budget
        for name in Set(Self.embedded(items)) {
            let schema = try snapshot.state.collection(name).schema
            if let filter = try condition(schema) { conditions[name] = (filter, try FilterMatcher(filter, schema: schema)) }
        }
    }

    private static func embedded(_ items: [SelectItem]) -> [String] {
        items.flatMap { item -> [String] in
            if case .embed(let name, _, let inner, _) = item { return [name] + embedded(inner) }
            return []
        }
    }

    func project(_ doc: Document, _ items: [SelectItem], schema: CollectionSchema) throws -> JSONValue {
        if items.count == 1, case .all = items[0] { return .object(doc) }  // select=*: the document as stored
        var out: Document = [:]
        for item in items {
            switch item {
            case .all: out.merge(doc) { current, _ in current }
            case .column(let name, let alias): out[alias] = doc[name] ?? .null
            case .path(let path, let alias): out[alias] = try SelectCast.value(path, in: doc, schema: schema)
            case .aggregate: throw RESTError.parse("aggregates are answered by the read of their collection only")
            case .embed(let name, let alias, let inner, let options):
                let value = try embedded(doc, schema: schema, related: name, items: inner, options: options)
                guard options.spread else { out[alias] = value; continue }
                if case .object(let fields) = value {
                    for (key, v) in fields { out[key] = v }
                } else {  // no related row (or not visible): its columns are null, as PostgREST's LEFT JOIN
                    let names = inner == [.all] || inner.contains(.all)
                        ? try snapshot.state.collection(name).schema.fieldNames : inner.compactMap(\.outputName)
                    for key in names { out[key] = .null }
                }
            }
        }
        return .object(out)
    }

    private func embedded(_ doc: Document, schema: CollectionSchema, related name: String,
                          items: [SelectItem], options: EmbedOptions) throws -> JSONValue {
        let related = try snapshot.state.collection(name).schema
        switch Relationship.between(schema, related) {
        case .manyToOne(let field)?:
            let zero: JSONValue = options.count ? .object(["count": .int(0)]) : .null
            guard let key = doc[field], !key.isNull, let target = try budget.document(name, key: key, on: snapshot) else { return zero }
            if let condition = conditions[name], !condition.matcher.matches(target) { return zero }
            if let filter = options.filter, !(try FilterMatcher(filter, schema: related).matches(target)) { return zero }
            if options.count { return .object(["count": .int(1)]) }
            return try project(target, items, schema: related)
        case .oneToMany(let field)?:
            guard let key = doc[schema.primaryKey] else { return .array([]) }
            let parts = [Filter.compare(field: field, op: .eq, value: key)] + [conditions[name]?.filter, options.filter].compactMap { $0 }
            if options.count {  // counts only the rows the caller may see (the policy condition is in `parts`)
                let counted = Query(collection: name, filter: parts.count == 1 ? parts[0] : .and(parts), limit: 0, count: true)
                return .array([.object(["count": .int(Int64(try budget.query(counted, on: snapshot).totalCount ?? 0))])])
            }
            let query = Query(collection: name, filter: parts.count == 1 ? parts[0] : .and(parts),
                              order: options.order.isEmpty ? [Sort(field: related.primaryKey)] : options.order,
                              limit: options.limit.map { min($0, budget.limitMax) }, offset: options.offset)
            return .array(try budget.query(query, on: snapshot).rows.map { try project($0, items, schema: related) })
        case nil:
            throw AeroError(.queryInvalid, "no relationship between \(schema.name) and \(name)")
        }
    }
}

/// Attaches the query string's embedded-resource parameters to the select items they name.
enum EmbedParameters {
    static func attach(_ pairs: [(path: [String], key: String, value: String)], to items: [SelectItem],
                       collections: [String: CollectionSchema]) throws -> [SelectItem] {
        var items = items
        for pair in pairs { items = try apply(pair, path: pair.path[...], items, collections) }
        return items
    }

    private static func apply(_ pair: (path: [String], key: String, value: String), path: ArraySlice<String>, _ items: [SelectItem],
                              _ collections: [String: CollectionSchema]) throws -> [SelectItem] {
        guard let head = path.first else { return items }
        var found = false
        let updated = try items.map { item -> SelectItem in
            guard case .embed(let name, let alias, let inner, var options) = item, alias == head || name == head, !found else { return item }
            found = true
            guard let schema = collections[name] else { return item }
            if path.count > 1 {
                return .embed(collection: name, alias: alias, items: try apply(pair, path: path.dropFirst(), inner, collections), options: options)
            }
            try set(&options, pair.key, pair.value, schema)
            return .embed(collection: name, alias: alias, items: inner, options: options)
        }
        guard found else {
            throw RESTError.parse("\(pair.path.joined(separator: ".")).\(pair.key): no embedded resource \(pair.path.joined(separator: ".")) in select")
        }
        return updated
    }

    private static func set(_ options: inout EmbedOptions, _ key: String, _ value: String, _ schema: CollectionSchema) throws {
        switch key {
        case "order": options.order = try PostgRESTQuery.parseOrder(value, schema: schema, allowEmbedded: false)
        case "limit": options.limit = try PostgRESTQuery.limit(value)
        case "offset": options.offset = try PostgRESTQuery.offset(value)
        case "or", "and", "not.or", "not.and":
            let logic = try LogicParser(text: value, schema: schema).parseGroup(and: key.hasSuffix("and"))
            options.filters.append(key.hasPrefix("not.") ? .not(logic) : logic)
        default: options.filters.append(try FilterParser.parse(column: key, expression: value, schema: schema))
        }
    }
}

/// `!inner` on a top-level embedding: the parent query keeps only rows with a matching related
/// row, as an `IN` over the related rows' keys read from the same snapshot (with the related
/// collection's policies and the embedding's own filters), so counts, ranges and limits stay
/// exact. At most `KernelLimits.inListMax` related rows may match (else 400: filter the parent).
enum InnerEmbedding {
    static func restrict(_ filter: Filter?, items: [SelectItem], schema: CollectionSchema, snapshot: Snapshot,
                         projector: Projector) throws -> Filter? {
        var parts = filter.map { [$0] } ?? []
        for item in items {
            guard case .embed(let name, let alias, let inner, let options) = item else { continue }
            if inner.contains(where: { if case .embed(_, _, _, let o) = $0 { return o.inner }; return false }) {
                throw RESTError.parse("!inner below the first embedding level (\(alias)) is not built yet")
            }
            guard options.inner else { continue }
            let related = try snapshot.state.collection(name).schema
            let conditions = [projector.condition(name), options.filter].compactMap { $0 }
            let relatedFilter = conditions.isEmpty ? nil : (conditions.count == 1 ? conditions[0] : .and(conditions))
            let rows = try projector.budget.query(Query(collection: name, filter: relatedFilter, limit: KernelLimits.inListMax + 1),
                                                  on: snapshot).rows
            guard rows.count <= KernelLimits.inListMax else {
                throw AeroError(.queryUnbounded, "\(alias)!inner matches more than \(KernelLimits.inListMax) rows of \(name): filter \(schema.name) itself, or narrow the embedded filter", invariant: "Q1")
            }
            switch Relationship.between(schema, related) {
            case .manyToOne(let field)?:
                parts.append(.in(field: field, values: rows.compactMap { $0[related.primaryKey] }))
            case .oneToMany(let field)?:
                parts.append(.in(field: schema.primaryKey, values: Array(Set(rows.compactMap { $0[field] }.filter { !$0.isNull }))
                    .sorted { JSONValue.compare($0, $1) < 0 }))
            case nil: continue
            }
        }
        return parts.isEmpty ? nil : (parts.count == 1 ? parts[0] : .and(parts))
    }
}
