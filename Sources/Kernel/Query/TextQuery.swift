// Fulltext queries (`$fts`): parsed into a small boolean tree over tokens, matched against the
// tokens of a document's field. Tokens come from `TextTokenizer` (no stemming, no stop words).
//
// Modes: plain = every word; phrase = the words adjacent and in order; websearch = words (all
// required), "quoted phrases", -excluded, `or` between alternatives; tsquery = `&`, `|`, `!`,
// `<->` (followed by), parentheses. A query without any word matches nothing.

indirect enum TextQuery: Sendable, Hashable {
    case term(String)
    case phrase([String])
    case and([TextQuery])
    case or([TextQuery])
    case not(TextQuery)
    case nothing

    /// Words in one fulltext query (any mode). Far more than a search box sends; it bounds the
    /// work per row and the parser's phrase joining (`a<->b<->...` copies the phrase so far, so
    /// the parse is quadratic in the words of one phrase).
    static let termsMax = 256

    static func parse(_ text: String, mode: FullTextMode) throws -> TextQuery {
        let terms = TextTokenizer.tokens(text).count
        guard terms <= termsMax else {
            throw AeroError(.queryInvalid, "a fulltext query holds \(terms) words, more than \(termsMax)", invariant: "Q1")
        }
        switch mode {
        case .plain: return all(TextTokenizer.tokens(text).map(TextQuery.term))
        case .phrase: return phraseOf(TextTokenizer.tokens(text))
        case .websearch: return websearch(text)
        case .tsquery:
            var parser = TSQueryParser(Array(text))
            return try parser.parse()
        }
    }

    static func all(_ parts: [TextQuery]) -> TextQuery {
        parts.isEmpty ? .nothing : (parts.count == 1 ? parts[0] : .and(parts))
    }

    static func phraseOf(_ tokens: [String]) -> TextQuery {
        tokens.isEmpty ? .nothing : (tokens.count == 1 ? .term(tokens[0]) : .phrase(tokens))
    }

    /// Terms every matching document contains (what a fulltext index can look up).
    var requiredTerms: [String] {
        switch self {
        case .term(let t): return [t]
        case .phrase(let ts): return ts
        case .and(let parts): return parts.flatMap(\.requiredTerms)
        case .or, .not, .nothing: return []
        }
    }

    func matches(_ doc: TokenizedText) -> Bool {
        switch self {
        case .term(let t): return doc.positions[t] != nil
        case .phrase(let ts): return doc.containsPhrase(ts)
        case .and(let parts): return parts.allSatisfy { $0.matches(doc) }
        case .or(let parts): return parts.contains { $0.matches(doc) }
        case .not(let inner): return !inner.matches(doc)
        case .nothing: return false
        }
    }

    private static func websearch(_ text: String) -> TextQuery {
        var alternatives: [[TextQuery]] = [[]]
        var rest = Substring(text)
        while let first = rest.first {
            if first.isWhitespace { rest = rest.dropFirst(); continue }
            if first == "\"" {
                let body = rest.dropFirst()
                let close = body.firstIndex(of: "\"") ?? body.endIndex
                let item = phraseOf(TextTokenizer.tokens(String(body[..<close])))
                if item != .nothing { alternatives[alternatives.count - 1].append(item) }
                rest = close == body.endIndex ? body[close...] : body[body.index(after: close)...]
                continue
            }
            let end = rest.firstIndex(where: { $0.isWhitespace || $0 == "\"" }) ?? rest.endIndex
            let word = rest[..<end]
            rest = rest[end...]
            if word.lowercased() == "or" {
                if !alternatives[alternatives.count - 1].isEmpty { alternatives.append([]) }
                continue
            }
            let negated = word.hasPrefix("-")
            let item = phraseOf(TextTokenizer.tokens(String(negated ? word.dropFirst() : word)))
            guard item != .nothing else { continue }
            alternatives[alternatives.count - 1].append(negated ? .not(item) : item)
        }
        let groups = alternatives.filter { !$0.isEmpty }.map(all)
        return groups.isEmpty ? .nothing : (groups.count == 1 ? groups[0] : .or(groups))
    }
}

/// A document field's tokens with the positions of each, for term and phrase checks.
struct TokenizedText {
    let tokens: [String]
    let positions: [String: [Int]]

    init(_ text: String) {
        tokens = TextTokenizer.tokens(text)
        var positions: [String: [Int]] = [:]
        for (i, t) in tokens.enumerated() { positions[t, default: []].append(i) }
        self.positions = positions
    }

    func containsPhrase(_ phrase: [String]) -> Bool {
        guard let starts = positions[phrase[0]] else { return false }
        return starts.contains { start in
            start + phrase.count <= tokens.count
                && phrase.indices.allSatisfy { tokens[start + $0] == phrase[$0] }
        }
    }
}

/// tsquery: or := and ('|' and)* ; and := unary (('&' | '<->') unary)* ;
/// unary := '!' unary | '(' or ')' | word. `<->` joins words or phrases into a longer phrase.
///
/// The grammar recurses in two places, `'!' unary` and `'(' or ')'`; both count against one
/// nesting depth (`nestingDepthMax`), so no input (10,000 `!`, 10,000 `(`, or any mix) can grow
/// the parser's stack, nor the depth of the `TextQuery` tree that `matches` walks recursively.
/// Past the bound the query is refused (AERO_QUERY_INVALID, Q1), never a crash.
struct TSQueryParser {
    /// Deepest nesting of `!` and parentheses together. PostgreSQL's own bound is far higher, but
    /// no meaningful query negates or groups more than a few levels; the kernel's filter depth
    /// (16) is the same order. Each level is a few stack frames, so 32 is far from any stack limit.
    static let nestingDepthMax = 32

    private let chars: [Character]
    private var position = 0
    private var depth = 0

    init(_ chars: [Character]) { self.chars = chars }

    mutating func parse() throws -> TextQuery {
        let q = try parseOr()
        skipSpaces()
        guard position == chars.count else { throw error("unexpected \"\(chars[position])\"") }
        return q
    }

    private func error(_ what: String) -> AeroError {
        AeroError(.queryInvalid, "tsquery at character \(position): \(what)", invariant: "Q1")
    }

    private mutating func skipSpaces() {
        while position < chars.count && chars[position].isWhitespace { position += 1 }
    }

    private mutating func take(_ s: String) -> Bool {
        skipSpaces()
        let c = Array(s)
        guard position + c.count <= chars.count, Array(chars[position..<(position + c.count)]) == c else { return false }
        position += c.count
        return true
    }

    private mutating func parseOr() throws -> TextQuery {
        var parts = [try parseAnd()]
        while take("|") { parts.append(try parseAnd()) }
        return parts.count == 1 ? parts[0] : .or(parts)
    }

    private mutating func parseAnd() throws -> TextQuery {
        var parts = [try parseUnary()]
        while true {
            if take("&") {
                parts.append(try parseUnary())
            } else if take("<->") {
                let next = try parseUnary()
                guard let left = Self.phraseTokens(parts[parts.count - 1]), let right = Self.phraseTokens(next) else {
                    throw error("<-> joins only words and phrases")
                }
                parts[parts.count - 1] = TextQuery.phraseOf(left + right)
            } else {
                break
            }
        }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    private static func phraseTokens(_ q: TextQuery) -> [String]? {
        switch q {
        case .term(let t): return [t]
        case .phrase(let ts): return ts
        default: return nil
        }
    }

    /// Runs one recursive rule one level deeper, refusing past `nestingDepthMax`.
    private mutating func nested(_ rule: (inout TSQueryParser) throws -> TextQuery) throws -> TextQuery {
        guard depth < Self.nestingDepthMax else {
            throw error("! and parentheses nest deeper than \(Self.nestingDepthMax)")
        }
        depth += 1
        defer { depth -= 1 }
        return try rule(&self)
    }

    private mutating func parseUnary() throws -> TextQuery {
        if take("!") { return .not(try nested { try $0.parseUnary() }) }
        if take("(") {
            let inner = try nested { try $0.parseOr() }
            guard take(")") else { throw error("missing )") }
            return inner
        }
        skipSpaces()
        let start = position
        while position < chars.count && (chars[position].isLetter || chars[position].isNumber) { position += 1 }
        guard position > start else {
            throw error(position < chars.count ? "unexpected \"\(chars[position])\"" : "expected a word")
        }
        return TextQuery.phraseOf(TextTokenizer.tokens(String(chars[start..<position])))
    }
}
