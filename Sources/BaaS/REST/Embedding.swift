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
    case embed(collection: String, alias: String, items: [SelectItem])

    var outputName: String? {
        switch self {
        case .all: return nil
        case .column(_, let alias), .embed(_, let alias, _): return alias
        }
    }
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
        if let open = raw.firstIndex(of: "("), raw.hasSuffix(")") {
            let head = String(raw[..<open])
            let inner = String(raw[raw.index(after: open)..<raw.index(before: raw.endIndex)])
            let (alias, target) = split(head)
            let name = String(target.split(separator: "!").first ?? Substring(target))  // drops !inner / !hint
            // System collections (users, sessions, tokens...) are never embedded, even when a
            // user collection references one (profiles.id -> _auth_users is a useful reference).
            guard !SystemCollections.isSystem(name), let related = collections[name] else {
                throw AeroError(.queryInvalid, "Could not find a relationship between '\(schema.name)' and '\(name)' in the schema cache")
            }
            guard Relationship.between(schema, related) != nil else {
                throw AeroError(.queryInvalid, "Could not find a relationship between '\(schema.name)' and '\(name)': declare a reference")
            }
            return .embed(collection: name, alias: alias == target ? name : alias,
                          items: try parse(inner, schema: related, collections: collections, depth: depth + 1))
        }
        let (alias, column) = split(raw)
        let name = String(column.split(separator: ":").first ?? Substring(column))
        guard schema.fields[name] != nil else { throw RESTError.unknownColumn(name, schema.name) }
        return .column(name: name, alias: alias)
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

struct Projector {
    let snapshot: Snapshot
    /// The caller's select condition on each embedded collection that has one.
    private var conditions: [String: (filter: Filter, matcher: FilterMatcher)] = [:]

    /// `condition` gives the caller's select condition on a collection (nil: all rows visible);
    /// it is asked once per embedded collection of `items`.
    init(snapshot: Snapshot, items: [SelectItem], condition: (CollectionSchema) throws -> Filter?) throws {
        self.snapshot = snapshot
        for name in Set(Self.embedded(items)) {
            let schema = try snapshot.state.collection(name).schema
            if let filter = try condition(schema) { conditions[name] = (filter, try FilterMatcher(filter, schema: schema)) }
        }
    }

    private static func embedded(_ items: [SelectItem]) -> [String] {
        items.flatMap { item -> [String] in
            if case .embed(let name, _, let inner) = item { return [name] + embedded(inner) }
            return []
        }
    }

    func project(_ doc: Document, _ items: [SelectItem], schema: CollectionSchema) throws -> JSONValue {
        if items == [.all] { return .object(doc) }
        var out: Document = [:]
        for item in items {
            switch item {
            case .all: out.merge(doc) { current, _ in current }
            case .column(let name, let alias): out[alias] = doc[name] ?? .null
            case .embed(let name, let alias, let inner):
                out[alias] = try embedded(doc, schema: schema, related: name, items: inner)
            }
        }
        return .object(out)
    }

    private func embedded(_ doc: Document, schema: CollectionSchema, related name: String,
                          items: [SelectItem]) throws -> JSONValue {
        let related = try snapshot.state.collection(name).schema
        switch Relationship.between(schema, related) {
        case .manyToOne(let field)?:
            guard let key = doc[field], !key.isNull, let target = try snapshot.document(name, key: key) else { return .null }
            if let condition = conditions[name], !condition.matcher.matches(target) { return .null }
            return try project(target, items, schema: related)
        case .oneToMany(let field)?:
            guard let key = doc[schema.primaryKey] else { return .array([]) }
            let link = Filter.compare(field: field, op: .eq, value: key)
            let query = Query(collection: name, filter: conditions[name].map { .and([link, $0.filter]) } ?? link,
                              order: [Sort(field: related.primaryKey)])
            return .array(try snapshot.query(query).rows.map { try project($0, items, schema: related) })
        case nil:
            throw AeroError(.queryInvalid, "no relationship between \(schema.name) and \(name)")
        }
    }
}
