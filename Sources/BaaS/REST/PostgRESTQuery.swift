// PostgREST query-string syntax -> kernel queries (supabase-wire §3.2).
//
// Decoding: the clients form-encode the query string (`+` is a space, `%2B` a plus), so it is
// split and decoded here by hand, never with URLComponents (which keeps `+`).
// Supported: `select` (columns, `*`, `alias:column`, embedded references: Embedding.swift), filters `<col>=[not.]<op>.<value>` with
// eq neq gt gte lt lte like ilike (`*` or `%` wildcards) `like(any)`/`like(all)`/`ilike(...)`
// over `{p1,p2}`, is in cs cd ov fts plfts phfts wfts (optional `(language)`), `or=(...)`,
// `and=(...)` nested with `not.`, `order`, `limit`, `offset`, and the same on embedded
// resources (`<embed>.<col>=...`, EmbedParameters). Values are typed by the column's declared
// type. Not built yet (clear errors): range operators (`sl`, `sr`, `nxl`, `nxr`, `adj`).

import Kernel

struct PostgRESTQuery {
    var filters: [Filter] = []
    /// Raw `select=` text; parsed against the snapshot's collections by `SelectParser`.
    var select: String?
    var order: [Sort] = []
    var limit: Int?
    var offset = 0
    var onConflict: [String]?
    /// `columns=` of an insert: the payload keys that count (the client sends the union of its
    /// rows' keys for bulk inserts).
    var columns: [String]?
    /// Parameters of embedded resources (`comments.order=...`): path, key, value; attached to
    /// the parsed select by `EmbedParameters`.
    var embedded: [(path: [String], key: String, value: String)] = []

    static let reserved: Set<String> = ["select", "order", "limit", "offset", "on_conflict", "columns", "apikey"]

    static func parse(_ rawQuery: String?, schema: CollectionSchema) throws -> PostgRESTQuery {
        var query = PostgRESTQuery()
        for (key, value) in decodePairs(rawQuery ?? "") {
            switch key {
            case "select": query.select = value
            case "order": query.order = try parseOrder(value, schema: schema)
            case "limit": query.limit = try limit(value)
            case "offset": query.offset = try offset(value)
            case "on_conflict": query.onConflict = value.split(separator: ",").map { String($0).trimmingSpaces() }
            case "columns": query.columns = value.split(separator: ",").map { String($0).trimmingSpaces().replacingOccurrences(of: "\"", with: "") }
            case "apikey": continue  // the API key sent in the URL (KeyChecker.bearer): Supabase's gateway hides it from PostgREST
            case "or", "and", "not.or", "not.and":
                let logic = try LogicParser(text: value, schema: schema).parseGroup(and: key.hasSuffix("and"))
                query.filters.append(key.hasPrefix("not.") ? .not(logic) : logic)
            default:
                if let embedded = Self.embeddedKey(key) {
                    query.embedded.append((embedded.path, embedded.key, value))
                    continue
                }
                query.filters.append(try FilterParser.parse(column: key, expression: value, schema: schema))
            }
        }
        return query
    }

    var filter: Filter? { filters.isEmpty ? nil : (filters.count == 1 ? filters[0] : .and(filters)) }

    // MARK: Pieces

    /// `a.b.key` -> (["a","b"], "key"); `a.not.or` -> (["a"], "not.or"); nil without a dot.
    static func embeddedKey(_ key: String) -> (path: [String], key: String)? {
        guard key.utf8.contains(UInt8(ascii: ".")) else { return nil }  // a plain column: nothing to split
        var parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, !parts.contains(where: \.isEmpty) else { return nil }
        var last = parts.removeLast()
        if parts.count >= 2, parts.last == "not", last == "or" || last == "and" { last = "not." + last; parts.removeLast() }
        return (parts, last)
    }

    /// `limit=`: an integer in `RESTLimits.limitRange` (the node's `limit_max` caps it later).
    static func limit(_ text: String) throws -> Int {
        try ClientInteger.parameter(text, "limit", in: RESTLimits.limitRange)
    }

    /// `offset=`: an integer in `RESTLimits.offsetRange`.
    static func offset(_ text: String) throws -> Int {
        try ClientInteger.parameter(text, "offset", in: RESTLimits.offsetRange)
    }

    /// `order=a.desc,doc->>k.asc.nullsfirst,author(name).desc`. A term naming an embedded
    /// resource's column keeps the `alias(column)` text as its field (`embeddedOrder`), resolved
    /// against the select by `EmbeddedOrder`; the others are fields or JSON paths of `schema`.
    static func parseOrder(_ text: String, schema: CollectionSchema, allowEmbedded: Bool = true) throws -> [Sort] {
        try ListSplitter.split(text).filter { !$0.isEmpty }.map { term in
            var field: String
            var modifiers: [String]
            if let close = term.lastIndex(of: ")"), term.contains("(") {
                guard allowEmbedded else { throw RESTError.parse("order=\(term.prefix(60)): ordering by an embedded column is built for the top level only") }
                field = String(term[...close])
                modifiers = term[term.index(after: close)...].split(separator: ".").map(String.init)
                _ = try EmbeddedOrder.split(field)
            } else {
                let parts = term.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard let first = parts.first, !first.isEmpty else { throw RESTError.parse("order=\(text.prefix(60)): empty term") }
                field = try ColumnReference.resolve(first, schema: schema).name
                modifiers = Array(parts.dropFirst())
            }
            var sort = Sort(field: field)
            for modifier in modifiers {
                switch modifier {
                case "asc": sort.direction = .asc
                case "desc": sort.direction = .desc
                case "nullsfirst": sort.nulls = .first
                case "nullslast": sort.nulls = .last
                default: throw RESTError.parse("unknown order modifier \(modifier)")
                }
            }
            return sort
        }
    }

    /// Splits `a=1&b=2` and decodes each part (`+` = space, `%XX`).
    static func decodePairs(_ raw: String) -> [(String, String)] {
        // An ASCII query (what clients send: anything else is percent-encoded) is split on its
        // bytes: the same parts as splitting its Characters, without grapheme breaking (the
        // split was half of PostgRESTQuery.parse in the GET profile, issue 19). In ASCII no `&`
        // or `=` is part of a longer Character (only "\r\n" is, and neither byte is in it).
        if raw.utf8.allSatisfy({ $0 < 0x80 }) {
            var pairs: [(String, String)] = []
            for pair in raw.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
                if let eq = pair.firstIndex(of: UInt8(ascii: "=")) {
                    pairs.append((formDecode(Substring(pair[..<eq])), formDecode(Substring(pair[pair.index(after: eq)...]))))
                } else {
                    pairs.append((formDecode(Substring(pair)), ""))
                }
            }
            return pairs
        }
        return raw.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (formDecode(parts[0]), parts.count > 1 ? formDecode(parts[1]) : "")
        }
    }

    static func formDecode(_ text: Substring) -> String {
        // Most parts have nothing to decode: the text as it is (the same string the loop builds).
        if !text.utf8.contains(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "%") }) { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let b = iterator.next() {
            switch b {
            case UInt8(ascii: "+"): bytes.append(0x20)
            case UInt8(ascii: "%"):
                if let h = iterator.next(), let l = iterator.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) {
                    bytes.append(v)
                }
            default: bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

/// A column as filters and `order` name it: a declared field, or a JSON path into a json or
/// array field (`doc->a->0`, `doc->>k`, optionally cast: `doc->>n::int`; FieldPath). The name
/// is the field, or the path's canonical text, which the kernel reads (Filter, Sort).
enum ColumnReference {
    static func resolve(_ quoted: String, schema: CollectionSchema) throws -> (name: String, type: FieldType) {
        // The clients double-quote a column holding any of `,:()"\` (`"doc->>n::int"=gt.2`).
        let raw = quoted.utf8.first == UInt8(ascii: "\"") && quoted.count >= 2 && quoted.hasSuffix("\"") ? FilterParser.unquoted(quoted) : quoted
        if let field = schema.fields[raw] { return (raw, field.type) }
        guard FieldPath.isPath(raw) else { throw RESTError.unknownColumn(raw, schema.name) }
        let path = try FieldPath(parsing: raw)
        guard schema.fields[path.column] != nil else { throw RESTError.unknownColumn(path.column, schema.name) }
        return (path.description, try path.valueType(in: schema))
    }
}

/// One `<op>.<value>` expression on a column, typed by the column's declared type.
enum FilterParser {
    static func parse(column raw: String, expression: String, schema: CollectionSchema) throws -> Filter {
        let (column, type) = try ColumnReference.resolve(raw, schema: schema)
        var text = Substring(expression)
        var negated = false
        if text.hasPrefix("not.") { negated = true; text = text.dropFirst(4) }
        guard let dot = text.firstIndex(of: ".") else { throw RESTError.parse("\(column)=\(expression): expected <operator>.<value>") }
        let op = String(text[..<dot]), value = String(text[text.index(after: dot)...])
        let filter = try build(column, type, op, value)
        return negated ? .not(filter) : filter
    }

    private static func build(_ column: String, _ type: FieldType, _ op: String, _ value: String) throws -> Filter {
        switch op {
        case "eq", "neq", "gt", "gte", "lt", "lte":
            // A switch, not a dictionary literal built on every filter (issue 19: every GET by key passes here).
            let compare: CompareOp
            switch op {
            case "eq": compare = .eq
            case "neq": compare = .ne
            case "gt": compare = .gt
            case "gte": compare = .gte
            case "lt": compare = .lt
            default: compare = .lte
            }
            return .compare(field: column, op: compare, value: try typed(value, type, column))
        case "is":
            switch value.lowercased() {
            case "null", "unknown": return .is(field: column, value: .null)  // IS UNKNOWN is IS NULL
            case "true": return .is(field: column, value: .bool(true))
            case "false": return .is(field: column, value: .bool(false))
            default: throw RESTError.parse("is.\(value): expected null, unknown, true or false")
            }
        case "like", "ilike":
            return .like(field: column, pattern: value.replacingStars(), caseInsensitive: op == "ilike")
        case "like(any)", "like(all)", "ilike(any)", "ilike(all)":
            guard value.hasPrefix("{"), value.hasSuffix("}") else { throw RESTError.parse("\(op).\(value): expected {pattern1,pattern2}") }
            let patterns = try ListSplitter.split(String(value.dropFirst().dropLast()))
            guard !patterns.isEmpty, patterns.count <= KernelLimits.inListMax else {
                throw RESTError.parse("\(op) takes 1 to \(KernelLimits.inListMax) patterns")
            }
            let likes = patterns.map { Filter.like(field: column, pattern: $0.replacingStars(), caseInsensitive: op.hasPrefix("i")) }
            return likes.count == 1 ? likes[0] : (op.hasSuffix("(any)") ? .or(likes) : .and(likes))
        case "in":
            guard value.hasPrefix("("), value.hasSuffix(")") else { throw RESTError.parse("in.\(value): expected (v1,v2)") }
            let items = try ListSplitter.split(String(value.dropFirst().dropLast()))
            return .in(field: column, values: try items.map { try typed($0, type, column) })
        case "cs", "cd", "ov":
            let parsed: JSONValue
            if value.hasPrefix("{") && value.hasSuffix("}"), case .array(let element) = type {
                let items = try ListSplitter.split(String(value.dropFirst().dropLast()))
                parsed = .array(try items.map { try typed($0, element, column) })
            } else {
                parsed = try JSON.parse(value)
            }
            switch op {
            case "cs": return .contains(field: column, value: parsed)
            case "cd": return .containedBy(field: column, value: parsed)
            default: return .overlaps(field: column, value: parsed)
            }
        default:
            return try fullText(column, op, value)
        }
    }

    private static func fullText(_ column: String, _ op: String, _ value: String) throws -> Filter {
        var name = op
        var language: String?
        if let open = op.firstIndex(of: "("), op.hasSuffix(")") {
            name = String(op[..<open])
            language = String(op[op.index(after: open)..<op.index(before: op.endIndex)])
        }
        let modes: [String: FullTextMode] = ["fts": .tsquery, "plfts": .plain, "phfts": .phrase, "wfts": .websearch]
        guard let mode = modes[name] else { throw RESTError.parse("unknown operator \(op)") }
        return .fulltext(field: column, query: value, mode: mode, language: language)
    }

    /// A query-string value as the column's type: never a silent coercion of a malformed value.
    static func typed(_ text: String, _ type: FieldType, _ column: String) throws -> JSONValue {
        if text == "null" { return .null }
        switch type {
        case .int:
            guard let i = Int64(text) else { throw RESTError.invalidValue(text, column, type) }
            return .int(i)
        case .float:
            guard let d = Double(text) else { throw RESTError.invalidValue(text, column, type) }
            return .float(d)
        case .bool:
            guard text == "true" || text == "false" else { throw RESTError.invalidValue(text, column, type) }
            return .bool(text == "true")
        case .json, .array:
            if let parsed = try? JSON.parse(text) { return parsed }
            return .string(text)
        default:
            return .string(unquoted(text))
        }
    }

    static func unquoted(_ text: String) -> String {
        guard text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") else { return text }
        return String(text.dropFirst().dropLast()).unescapingQuotesAndBackslashes()
    }
}

extension String {
    /// PostgREST accepts `*` for `%` in like patterns.
    func replacingStars() -> String { replacingScalar("*", with: "%") }
}

/// Splits `a,"b,c",d` at top-level commas (quotes and parentheses respected).
enum ListSplitter {
    static func split(_ text: String) throws -> [String] {
        var items: [String] = []
        var current = ""
        var depth = 0
        var quoted = false
        var escaped = false
        for c in text {
            if escaped { current.append(c); escaped = false; continue }
            switch c {
            case "\\" where quoted: escaped = true; current.append(c)
            case "\"": quoted.toggle(); current.append(c)
            case "(" where !quoted: depth += 1; current.append(c)
            case ")" where !quoted: depth -= 1; current.append(c)
            case "," where !quoted && depth == 0: items.append(current); current = ""
            default: current.append(c)
            }
            guard depth >= 0 else { throw RESTError.parse("unbalanced parentheses in \(text)") }
        }
        guard !quoted, depth == 0 else { throw RESTError.parse("unbalanced quotes or parentheses in \(text)") }
        items.append(current)
        return items.map { $0.trimmingSpaces() }
    }
}

/// `or=(a.eq.1,and(b.gt.1,b.lt.4),not.c.is.null)`.
struct LogicParser {
    let text: String
    let schema: CollectionSchema

    /// Nesting of and()/or() accepted; deeper is refused (the kernel's filter depth bound).
    static let depthMax = KernelLimits.filterDepthMax

    func parseGroup(and: Bool, depth: Int = 0) throws -> Filter {
        guard depth < Self.depthMax else { throw RESTError.parse("logic nested deeper than \(Self.depthMax)") }
        guard text.hasPrefix("("), text.hasSuffix(")") else { throw RESTError.parse("expected (...) in \(text)") }
        let parts = try ListSplitter.split(String(text.dropFirst().dropLast()))
        let filters = try parts.map { try parseTerm($0, depth: depth) }
        return and ? .and(filters) : .or(filters)
    }

    private func parseTerm(_ term: String, depth: Int) throws -> Filter {
        var body = Substring(term)
        var negated = false
        if body.hasPrefix("not.") { negated = true; body = body.dropFirst(4) }
        let filter: Filter
        if body.hasPrefix("and(") || body.hasPrefix("or(") {
            let isAnd = body.hasPrefix("and(")
            let inner = String(body.dropFirst(isAnd ? 3 : 2))
            filter = try LogicParser(text: inner, schema: schema).parseGroup(and: isAnd, depth: depth + 1)
        } else {
            guard let dot = body.firstIndex(of: ".") else { throw RESTError.parse("expected <column>.<op>.<value> in \(term)") }
            let column = String(body[..<dot])
            let expression = String(body[body.index(after: dot)...])
            filter = try FilterParser.parse(column: column, expression: unquotedValue(expression), schema: schema)
        }
        return negated ? .not(filter) : filter
    }

    /// Inside logic trees PostgREST unquotes double-quoted scalar values (`name.eq."a, b"`).
    private func unquotedValue(_ expression: String) -> String {
        guard let dot = expression.firstIndex(of: ".") else { return expression }
        let head = expression[...dot]
        let value = String(expression[expression.index(after: dot)...])
        return head + (value.hasPrefix("(") ? value : FilterParser.unquoted(value))
    }
}
