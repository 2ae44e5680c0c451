// Row-level-security policy expressions: a small, PostgreSQL-flavoured boolean language over one
// row's fields and the caller's identity. Parsed here; PolicyCompiler.swift validates an
// expression against a schema and compiles it, for one caller, into a kernel `Filter`.
//
// Grammar (keywords case-insensitive, field names case-sensitive, whitespace free between tokens):
//   expr      := or
//   or        := and ("or" and)*
//   and       := unary ("and" unary)*
//   unary     := "not" unary | primary
//   primary   := "(" expr ")" | "true" | "false" | predicate
//   predicate := operand cmp operand
//              | operand ["not"] "in" "(" literal ("," literal)* ")"
//              | operand ["not"] "in" "(" "select" name "from" name "where" name "=" value ")"
//              | operand "is" ["not"] ("null" | "true" | "false")
//   cmp       := "=" | "<>" | "!=" | "<" | "<=" | ">" | ">="
//   operand   := name | value
//   value     := "auth.uid()" | "auth.role()" | "auth.email()"
//              | "auth.jwt()" ("->" string)* "->>" string
//              | literal
//   literal   := string | number | "true" | "false" | "null"
//   name      := [A-Za-z_][A-Za-z0-9_]*, at most KernelLimits.nameBytesMax bytes, not a keyword
//   string    := "'" any bytes, "''" for a quote "'"
//   number    := ["-"] digits ["." digits]   (an integer must fit Int64; a decimal is finite)
// Keywords: and or not in is null true false select from where. `auth.uid()` and the other
// calls are single tokens: no spaces inside (`auth.uid ()` is refused); `auth` alone is a field.
// `true`/`false` followed by a comparison, `in`, `not in` or `is` start a predicate, else a constant.
//
// Invariants:
// - `parse` never crashes, hangs or recurses without bound: the text length is checked first, the
//   lexer is one linear pass, and each `(` and `not` checks the depth before descending. Every
//   refusal is `AERO_REQUEST_INVALID` "policy expression: <what> at offset <byte offset>".
// - Depth counts enclosing `not`s and parentheses; the parentheses right after a `not` do not
//   count again, so the canonical text (which always writes `not (...)`) is never deeper.
// - Parsed `and`/`or` are flat (no `and` directly inside `and`, nor `or` inside `or`) with at
//   least two parts; a claim path is never empty; an `in` list is never empty.
// - `description` is the canonical text: `parse(e.description) == e` for every parsed `e` (the
//   length bound applies to the canonical text too, so a stored canonical text always parses).

import Kernel

/// Bounds on a policy expression, enforced by `PolicyExpression.parse`.
public enum PolicyLimits {
    /// Longest expression text, in UTF-8 bytes.
    public static let textBytesMax = 4096
    /// Deepest nesting of parentheses and `not`.
    public static let depthMax = 32
    /// Most predicates (comparisons, `in`, `is`) in one expression.
    public static let predicatesMax = 256
    /// Most values in one `in (...)` list: the kernel's own bound.
    public static let inListMax = KernelLimits.inListMax
    /// Deepest `and`/`or`/`not` nesting of a compiled filter. Two below the kernel's bound, leaving
    /// room for `PolicyCompiler.combine`'s OR and the AND with the request's own filter.
    public static let compiledDepthMax = KernelLimits.filterDepthMax - 2
}

/// One side of a predicate: a field of the row, something about the caller, or a literal.
public enum PolicyOperand: Sendable, Hashable {
    case field(String)
    /// `auth.uid()`: the caller's user id, null for anon and service keys.
    case uid
    /// `auth.role()`: the caller's role, for example `anon` or `authenticated`.
    case role
    /// `auth.email()`: the caller's email, null when there is none.
    case email
    /// `auth.jwt() -> 'a' ->> 'b'`: the claim at `path` as text (never empty).
    case claim(path: [String])
    case literal(JSONValue)
}

public indirect enum PolicyExpression: Sendable, Hashable {
    case constant(Bool)
    case and([PolicyExpression])
    case or([PolicyExpression])
    case not(PolicyExpression)
    case compare(PolicyOperand, CompareOp, PolicyOperand)
    case inList(PolicyOperand, [JSONValue], negated: Bool)
    /// `x in (select field from collection where whereField = equals)`.
    case inSelect(PolicyOperand, field: String, collection: String, whereField: String,
                  equals: PolicyOperand, negated: Bool)
    case isNull(PolicyOperand, negated: Bool)
    case isBool(PolicyOperand, Bool, negated: Bool)

    public static func parse(_ text: String) throws -> PolicyExpression {
        try PolicyParser.parse(text)
    }
}

// MARK: - What an expression refers to

extension PolicyExpression {
    /// Fields of the row the policy reads (fields inside `select` belong to the other collection).
    public var referencedFields: Set<String> {
        switch self {
        case .constant: return []
        case .and(let parts), .or(let parts): return parts.reduce(into: []) { $0.formUnion($1.referencedFields) }
        case .not(let inner): return inner.referencedFields
        case .compare(let l, _, let r): return l.fieldNames.union(r.fieldNames)
        case .inList(let x, _, _), .isNull(let x, _), .isBool(let x, _, _): return x.fieldNames
        case .inSelect(let x, _, _, _, let v, _): return x.fieldNames.union(v.fieldNames)
        }
    }

    /// Collections read by `in (select ...)`.
    public var referencedCollections: Set<String> {
        switch self {
        case .and(let parts), .or(let parts): return parts.reduce(into: []) { $0.formUnion($1.referencedCollections) }
        case .not(let inner): return inner.referencedCollections
        case .inSelect(_, _, let collection, _, _, _): return [collection]
        case .constant, .compare, .inList, .isNull, .isBool: return []
        }
    }

    /// The parts of an OR (itself when it is not one); the parser keeps `or` flat with it.
    var disjuncts: [PolicyExpression] { if case .or(let parts) = self { return parts } else { return [self] } }

    /// The parts of an AND (itself when it is not one).
    var conjuncts: [PolicyExpression] { if case .and(let parts) = self { return parts } else { return [self] } }
}

extension PolicyOperand {
    var fieldNames: Set<String> { if case .field(let name) = self { return [name] } else { return [] } }
}

// MARK: - Canonical text

extension PolicyExpression: CustomStringConvertible {
    /// Canonical text: lowercase keywords, `<>` for not-equal, minimal parentheses except that
    /// `not` is always followed by a parenthesised operand.
    public var description: String {
        switch self {
        case .constant(let value): return value ? "true" : "false"
        case .and(let parts): return parts.isEmpty ? "true" : parts.map(\.asConjunct).joined(separator: " and ")
        case .or(let parts): return parts.isEmpty ? "false" : parts.map(\.asDisjunct).joined(separator: " or ")
        case .not(let inner): return "not (\(inner))"
        case .compare(let l, let op, let r): return "\(l) \(op.symbol) \(r)"
        case .inList(let x, let values, let negated):
            return "\(x) \(negated ? "not in" : "in") (\(values.map(PolicyText.literal).joined(separator: ",")))"
        case .inSelect(let x, let field, let collection, let whereField, let value, let negated):
            return "\(x) \(negated ? "not in" : "in") (select \(field) from \(collection) where \(whereField) = \(value))"
        case .isNull(let x, let negated): return "\(x) is \(negated ? "not " : "")null"
        case .isBool(let x, let value, let negated): return "\(x) is \(negated ? "not " : "")\(value)"
        }
    }

    private var asConjunct: String {
        switch self {
        case .and, .or: return "(\(self))"
        default: return description
        }
    }

    private var asDisjunct: String {
        if case .or = self { return "(\(self))" }
        return description
    }
}

extension PolicyOperand: CustomStringConvertible {
    public var description: String {
        switch self {
        case .field(let name): return name
        case .uid: return "auth.uid()"
        case .role: return "auth.role()"
        case .email: return "auth.email()"
        case .claim(let path):
            let steps = path.enumerated().map { index, key in
                (index == path.count - 1 ? " ->> " : " -> ") + PolicyText.quoted(key)
            }
            return "auth.jwt()" + steps.joined()
        case .literal(let value): return PolicyText.literal(value)
        }
    }
}

/// Literals as policy text.
enum PolicyText {
    static func literal(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .float(let d): return d.isFinite ? decimal(d) : "null"
        case .string(let s): return quoted(s)
        case .array, .object: return quoted(JSON.encodeString(value))  // never produced by the parser
        }
    }

    static func quoted(_ text: String) -> String {
        "'" + text.replacingScalar("'", with: "''") + "'"
    }

    /// A finite Double as `digits.digits`, the shortest text that reads back as the same value.
    static func decimal(_ d: Double) -> String {
        let shortest = "\(d)"  // for example 2.5, 1e-05 or 1.5e+20
        guard let e = shortest.firstIndex(of: "e"), let exponent = Int(shortest[shortest.index(after: e)...]) else {
            return shortest.contains(".") ? shortest : shortest + ".0"
        }
        var mantissa = Substring(shortest[..<e])
        let sign = mantissa.first == "-" ? "-" : ""
        if !sign.isEmpty { mantissa = mantissa.dropFirst() }
        let point = mantissa.firstIndex(of: ".").map { mantissa.distance(from: mantissa.startIndex, to: $0) } ?? mantissa.count
        let digits = Array(mantissa.filter { $0 != "." })
        return sign + placePoint(digits, at: point + exponent)
    }

    private static func placePoint(_ digits: [Character], at point: Int) -> String {
        if point <= 0 { return "0." + String(repeating: "0", count: -point) + String(digits) }
        if point >= digits.count { return String(digits) + String(repeating: "0", count: point - digits.count) + ".0" }
        return String(digits[..<point]) + "." + String(digits[point...])
    }
}

// MARK: - Lexer

/// The four `auth.*()` calls.
enum AuthFunction: String {
    case uid, role, email, jwt
}

/// One token and the byte offset where it starts.
struct PolicyToken: Equatable {
    enum Kind: Equatable {
        /// A name or keyword, as written.
        case word(String)
        case string(String)
        case number(JSONValue)
        case auth(AuthFunction)
        /// ( ) , = <> != < <= > >= -> ->>
        case symbol(String)
        case end
    }

    let kind: Kind
    let offset: Int
}

/// Splits the text into tokens in one pass; the last token is always `.end`.
struct PolicyLexer {
    private let bytes: [UInt8]
    private var position = 0

    private init(_ text: String) { bytes = Array(text.utf8) }

    static func tokens(_ text: String) throws -> [PolicyToken] {
        var lexer = PolicyLexer(text)
        var tokens: [PolicyToken] = []
        repeat { tokens.append(try lexer.next()) } while tokens.last?.kind != .end
        return tokens
    }

    private static let symbols = ["->>", "->", "<>", "<=", ">=", "!=", "(", ")", ",", "=", "<", ">"].map { Array($0.utf8) }

    private mutating func next() throws -> PolicyToken {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
        let start = position
        guard position < bytes.count else { return PolicyToken(kind: .end, offset: start) }
        let kind: PolicyToken.Kind
        switch bytes[position] {
        case let b where b.isNameStart: kind = try word()
        case let b where b.isDigit || (b == UInt8(ascii: "-") && byte(at: position + 1)?.isDigit == true): kind = try number()
        case UInt8(ascii: "'"): kind = try string()
        default: kind = try symbol()
        }
        return PolicyToken(kind: kind, offset: start)
    }

    private func byte(at index: Int) -> UInt8? { index < bytes.count ? bytes[index] : nil }

    private func error(_ what: String, at offset: Int) -> AeroError { PolicyParser.error(what, at: offset) }

    private mutating func name() -> String {
        let start = position
        while let b = byte(at: position), b.isNameStart || b.isDigit { position += 1 }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    private mutating func word() throws -> PolicyToken.Kind {
        let start = position
        let text = name()
        if text.lowercased() == "auth", byte(at: position) == UInt8(ascii: ".") { return try authCall(start) }
        guard text.utf8.count <= KernelLimits.nameBytesMax else {
            throw error("name longer than \(KernelLimits.nameBytesMax) bytes", at: start)
        }
        return .word(text)
    }

    /// `auth.<function>()` with nothing between its characters.
    private mutating func authCall(_ start: Int) throws -> PolicyToken.Kind {
        position += 1
        guard byte(at: position)?.isNameStart == true else { throw error("expected a function name after auth.", at: position) }
        let called = name()
        guard let function = AuthFunction(rawValue: called.lowercased()) else {
            throw error("unknown function auth.\(called)()", at: start)
        }
        guard byte(at: position) == UInt8(ascii: "("), byte(at: position + 1) == UInt8(ascii: ")") else {
            throw error("expected () right after auth.\(called)", at: position)
        }
        position += 2
        return .auth(function)
    }

    private mutating func digits() -> Int {
        let start = position
        while byte(at: position)?.isDigit == true { position += 1 }
        return position - start
    }

    private mutating func number() throws -> PolicyToken.Kind {
        let start = position
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        _ = digits()
        var decimal = false
        if byte(at: position) == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw error("expected digits after the decimal point", at: position) }
            decimal = true
        }
        if let b = byte(at: position), b.isNameStart || b == UInt8(ascii: ".") { throw error("malformed number", at: start) }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if decimal {
            guard let d = Double(text), d.isFinite else { throw error("number out of range", at: start) }
            return .number(.float(d))
        }
        guard let i = Int64(text) else { throw error("integer out of the 64-bit range", at: start) }
        return .number(.int(i))
    }

    private mutating func string() throws -> PolicyToken.Kind {
        let start = position
        position += 1
        var content: [UInt8] = []
        while true {
            guard let b = byte(at: position) else { throw error("unterminated string", at: start) }
            position += 1
            if b != UInt8(ascii: "'") { content.append(b); continue }
            guard byte(at: position) == UInt8(ascii: "'") else { break }
            content.append(b)
            position += 1
        }
        return .string(String(decoding: content, as: UTF8.self))
    }

    private mutating func symbol() throws -> PolicyToken.Kind {
        for symbol in Self.symbols where bytes[position...].starts(with: symbol) {
            position += symbol.count
            return .symbol(String(decoding: symbol, as: UTF8.self))
        }
        let b = bytes[position]
        let shown = (0x21...0x7E).contains(b) ? "\"\(Character(Unicode.Scalar(b)))\"" : "byte 0x" + String(b, radix: 16)
        throw error("unexpected character \(shown)", at: position)
    }
}

extension UInt8 {
    fileprivate var isDigit: Bool { self >= 0x30 && self <= 0x39 }
    fileprivate var isNameStart: Bool { (self >= 0x41 && self <= 0x5A) || (self >= 0x61 && self <= 0x7A) || self == 0x5F }
}

// MARK: - Parser

/// Recursive descent over the tokens; see the grammar at the top of this file.
struct PolicyParser {
    private let tokens: [PolicyToken]
    private var position = 0
    private var predicates = 0

    static let keywords: Set<String> = ["and", "or", "not", "in", "is", "null", "true", "false", "select", "from", "where"]

    private static let comparisons: [String: CompareOp] = [
        "=": .eq, "<>": .ne, "!=": .ne, "<": .lt, "<=": .lte, ">": .gt, ">=": .gte,
    ]

    static func error(_ what: String, at offset: Int) -> AeroError {
        AeroError(.requestInvalid, "policy expression: \(what) at offset \(offset)")
    }

    static func parse(_ text: String) throws -> PolicyExpression {
        guard text.utf8.count <= PolicyLimits.textBytesMax else {
            throw error("text longer than \(PolicyLimits.textBytesMax) bytes", at: PolicyLimits.textBytesMax)
        }
        var parser = PolicyParser(tokens: try PolicyLexer.tokens(text))
        let expression = try parser.parseOr(depth: 0)
        guard parser.current.kind == .end else { throw parser.unexpected(expected: "and, or or the end") }
        // The canonical text is what is stored and parsed again: it spaces out operators, so a
        // text under the bound can have a canonical form over it, which would then not parse back.
        guard expression.description.utf8.count <= PolicyLimits.textBytesMax else {
            throw error("canonical text (with spaces around operators) longer than \(PolicyLimits.textBytesMax) bytes", at: 0)
        }
        return expression
    }

    private init(tokens: [PolicyToken]) { self.tokens = tokens }

    // MARK: Token access

    private var current: PolicyToken { tokens[position] }

    private func token(ahead: Int) -> PolicyToken { tokens[min(position + ahead, tokens.count - 1)] }

    private mutating func advance() { position = min(position + 1, tokens.count - 1) }

    private func isKeyword(_ keyword: String, ahead: Int = 0) -> Bool {
        if case .word(let w) = token(ahead: ahead).kind { return w.lowercased() == keyword }
        return false
    }

    private func isSymbol(_ symbol: String, ahead: Int = 0) -> Bool { token(ahead: ahead).kind == .symbol(symbol) }

    private mutating func take(keyword: String) -> Bool {
        guard isKeyword(keyword) else { return false }
        advance()
        return true
    }

    private mutating func take(symbol: String) -> Bool {
        guard isSymbol(symbol) else { return false }
        advance()
        return true
    }

    private mutating func expect(keyword: String) throws {
        guard take(keyword: keyword) else { throw unexpected(expected: keyword) }
    }

    private mutating func expect(symbol: String) throws {
        guard take(symbol: symbol) else { throw unexpected(expected: "\"\(symbol)\"") }
    }

    private func unexpected(expected what: String) -> AeroError {
        let found: String
        switch current.kind {
        case .word(let w): found = "\"\(w)\""
        case .string: found = "a string"
        case .number: found = "a number"
        case .auth(let f): found = "auth.\(f.rawValue)()"
        case .symbol(let s): found = "\"\(s)\""
        case .end: found = "the end"
        }
        return Self.error("expected \(what), found \(found)", at: current.offset)
    }

    /// Refuses to go one level deeper than `PolicyLimits.depthMax`.
    private func enter(_ depth: Int) throws {
        guard depth < PolicyLimits.depthMax else {
            throw Self.error("nested deeper than \(PolicyLimits.depthMax)", at: current.offset)
        }
    }

    // MARK: Boolean structure

    private mutating func parseOr(depth: Int) throws -> PolicyExpression {
        var parts = [try parseAnd(depth: depth)]
        while take(keyword: "or") { parts.append(try parseAnd(depth: depth)) }
        return parts.count == 1 ? parts[0] : .or(parts.flatMap(\.disjuncts))
    }

    private mutating func parseAnd(depth: Int) throws -> PolicyExpression {
        var parts = [try parseUnary(depth: depth, afterNot: false)]
        while take(keyword: "and") { parts.append(try parseUnary(depth: depth, afterNot: false)) }
        return parts.count == 1 ? parts[0] : .and(parts.flatMap(\.conjuncts))
    }

    private mutating func parseUnary(depth: Int, afterNot: Bool) throws -> PolicyExpression {
        guard isKeyword("not") else { return try parsePrimary(depth: depth, afterNot: afterNot) }
        try enter(depth)
        advance()
        return .not(try parseUnary(depth: depth + 1, afterNot: true))
    }

    /// A group right after `not` is at the `not`'s depth (already counted).
    private mutating func parsePrimary(depth: Int, afterNot: Bool) throws -> PolicyExpression {
        if isSymbol("(") {
            if !afterNot { try enter(depth) }
            advance()
            let inner = try parseOr(depth: afterNot ? depth : depth + 1)
            try expect(symbol: ")")
            return inner
        }
        for value in [true, false] where isKeyword(String(value)) && !continuesPredicate(ahead: 1) {
            advance()
            return .constant(value)
        }
        return try parsePredicate()
    }

    /// Whether the token `ahead` makes a preceding `true`/`false` the left side of a predicate.
    private func continuesPredicate(ahead: Int) -> Bool {
        if case .symbol(let s) = token(ahead: ahead).kind { return Self.comparisons[s] != nil }
        return isKeyword("in", ahead: ahead) || isKeyword("is", ahead: ahead) || isKeyword("not", ahead: ahead)
    }

    // MARK: Predicates

    private mutating func parsePredicate() throws -> PolicyExpression {
        let start = current.offset
        let left = try parseOperand()
        let predicate: PolicyExpression
        if case .symbol(let s) = current.kind, let op = Self.comparisons[s] {
            advance()
            predicate = .compare(left, op, try parseOperand())
        } else if take(keyword: "is") {
            predicate = try parseIs(left)
        } else if isKeyword("in") || (isKeyword("not") && isKeyword("in", ahead: 1)) {
            let negated = take(keyword: "not")
            advance()
            predicate = try parseIn(left, negated: negated)
        } else {
            throw unexpected(expected: "a comparison, in or is")
        }
        predicates += 1
        guard predicates <= PolicyLimits.predicatesMax else {
            throw Self.error("more than \(PolicyLimits.predicatesMax) predicates", at: start)
        }
        return predicate
    }

    private mutating func parseIs(_ left: PolicyOperand) throws -> PolicyExpression {
        let negated = take(keyword: "not")
        if take(keyword: "null") { return .isNull(left, negated: negated) }
        if take(keyword: "true") { return .isBool(left, true, negated: negated) }
        if take(keyword: "false") { return .isBool(left, false, negated: negated) }
        throw unexpected(expected: "null, true or false")
    }

    private mutating func parseIn(_ left: PolicyOperand, negated: Bool) throws -> PolicyExpression {
        try expect(symbol: "(")
        if take(keyword: "select") { return try parseSelect(left, negated: negated) }
        var values = [try parseLiteral()]
        while take(symbol: ",") {
            guard values.count < PolicyLimits.inListMax else {
                throw Self.error("in list holds more than \(PolicyLimits.inListMax) values", at: current.offset)
            }
            values.append(try parseLiteral())
        }
        try expect(symbol: ")")
        return .inList(left, values, negated: negated)
    }

    private mutating func parseSelect(_ left: PolicyOperand, negated: Bool) throws -> PolicyExpression {
        let field = try parseName()
        try expect(keyword: "from")
        let collection = try parseName()
        try expect(keyword: "where")
        let whereField = try parseName()
        try expect(symbol: "=")
        let valueOffset = current.offset
        let value = try parseOperand()
        if case .field = value {
            throw Self.error("the value after where \(whereField) = must be auth.* or a literal", at: valueOffset)
        }
        try expect(symbol: ")")
        return .inSelect(left, field: field, collection: collection, whereField: whereField, equals: value, negated: negated)
    }

    // MARK: Operands

    private mutating func parseName() throws -> String {
        guard case .word(let w) = current.kind, !Self.keywords.contains(w.lowercased()) else {
            throw unexpected(expected: "a name")
        }
        advance()
        return w
    }

    private mutating func parseOperand() throws -> PolicyOperand {
        switch current.kind {
        case .word(let w) where !Self.keywords.contains(w.lowercased()):
            advance()
            return .field(w)
        case .auth(let function):
            advance()
            switch function {
            case .uid: return .uid
            case .role: return .role
            case .email: return .email
            case .jwt: return .claim(path: try parseClaimPath())
            }
        default:
            return .literal(try parseLiteral(expected: "a field, auth.* or a value"))
        }
    }

    /// `("->" string)* "->>" string` after `auth.jwt()`.
    private mutating func parseClaimPath() throws -> [String] {
        var path: [String] = []
        while true {
            let last = isSymbol("->>")
            guard last || isSymbol("->") else { throw unexpected(expected: "-> or ->> after auth.jwt()") }
            advance()
            guard case .string(let key) = current.kind else { throw unexpected(expected: "a quoted claim name") }
            advance()
            path.append(key)
            if last { return path }
        }
    }

    private mutating func parseLiteral(expected: String = "a value") throws -> JSONValue {
        let value: JSONValue
        switch current.kind {
        case .string(let s): value = .string(s)
        case .number(let n): value = n
        case .word(let w) where w.lowercased() == "null": value = .null
        case .word(let w) where w.lowercased() == "true": value = .bool(true)
        case .word(let w) where w.lowercased() == "false": value = .bool(false)
        default: throw unexpected(expected: expected)
        }
        advance()
        return value
    }
}
