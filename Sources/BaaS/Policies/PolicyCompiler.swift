// Policy expressions (PolicyExpression.swift) checked against a schema, and compiled for one
// caller into the kernel `Filter` that selects the rows the caller may see.
//
// Semantics: SQL three-valued logic collapsed the way PostgreSQL RLS does it: a row is visible
// only when the expression is TRUE; UNKNOWN hides it, and so does NOT UNKNOWN.
// - Caller operands are constants: `auth.uid()`, `auth.email()` (null when absent), `auth.role()`,
//   `auth.jwt() -> 'a' ->> 'b'` (the claim as text: strings as they are, other JSON as its text,
//   missing or JSON null -> null).
// - A null or mixed-kind comparison is UNKNOWN, so is a caller value that cannot be read as the
//   field's type (a uid that is not a uuid against a uuid field); caller text is read as an
//   int, float or bool where the field is one. Literals must already fit (validation).
// - NOT is pushed down to the leaves (De Morgan): `NOT f = x` is `f <> x`, `NOT f < x` is
//   `f >= x` (the kernel's `ne/gt/...` are false on null, as in SQL); `NOT IN` also needs the field
//   non-null and is never TRUE when the list holds a null; `x IN ()` is FALSE, `x NOT IN ()` TRUE.
// - Constants fold; the kernel filter has none, so FALSE is `pk IN []` and TRUE `NOT pk IN []`.
//   Never an empty `and`/`or`. A compiled filter nests at most `PolicyLimits.compiledDepthMax`.
//
// Every refusal is `AERO_REQUEST_INVALID` "policy expression: ...", except a membership lookup
// returning more than `KernelLimits.inListMax` values: `AERO_QUERY_UNBOUNDED`.

import Kernel

/// Who is asking: from the verified JWT. uid/email are nil for anon and service keys.
public struct PolicyCaller: Sendable {
    public var uid: String?
    public var role: String
    public var email: String?
    /// Every claim of the JWT (an object; `.null` when there is no token).
    public var claims: JSONValue

    public init(uid: String?, role: String, email: String?, claims: JSONValue) {
        self.uid = uid
        self.role = role
        self.email = email
        self.claims = claims
    }
}

/// Answers `x in (select f from c where g = v)` at request time (the BaaS layer queries a snapshot).
/// `value` is never null; it is caller text or a literal, as written: the lookup reads it as the
/// type of `whereField` and answers `[]` when it cannot.
public protocol MembershipLookup {
    func values(of field: String, in collection: String, where whereField: String, equals value: JSONValue) throws -> [JSONValue]
}

private func policyError(_ what: String) -> AeroError {
    AeroError(.requestInvalid, "policy expression: \(what)")
}

private let fieldVersusField = "compare a field with a value or auth.*, not with another field"

private func fieldType(_ name: String, in schema: CollectionSchema) throws -> FieldType {
    guard let field = schema.fields[name] else { throw policyError("collection \(schema.name) has no field \"\(name)\"") }
    return field.type
}

// MARK: - Validation

extension PolicyExpression {
    /// Checks the expression against the schema of the collection it guards and the other
    /// collections `in (select ...)` may read: fields exist, no field is compared with another,
    /// literals fit their field's type and values compare with values of the same kind.
    public func validate(for schema: CollectionSchema, collections: [String: CollectionSchema]) throws {
        try PolicyValidator(schema: schema, collections: collections).check(self)
    }
}

struct PolicyValidator {
    let schema: CollectionSchema
    let collections: [String: CollectionSchema]

    func check(_ expression: PolicyExpression) throws {
        switch expression {
        case .constant: return
        case .and(let parts), .or(let parts): try parts.forEach(check)
        case .not(let inner): try check(inner)
        case .compare(let l, _, let r): try checkComparison(l, r)
        case .inList(let x, let values, _): try values.forEach { try checkComparison(x, .literal($0)) }
        case .inSelect(let x, let field, let collection, let whereField, let value, _):
            try checkSelect(x, field, collection, whereField, value)
        case .isNull(let x, _): try x.fieldNames.forEach { _ = try fieldType($0, in: schema) }
        case .isBool(let x, _, _): try checkIsBool(x)
        }
    }

    private func checkComparison(_ l: PolicyOperand, _ r: PolicyOperand) throws {
        switch (l, r) {
        case (.field, .field): throw policyError(fieldVersusField)
        case (.field(let name), let value), (let value, .field(let name)):
            try checkFit(value, field: name, type: try fieldType(name, in: schema))
        default: try checkSameKind(l, r)
        }
    }

    /// A value (not a field) compared with a field of `type`.
    private func checkFit(_ value: PolicyOperand, field: String, type: FieldType) throws {
        switch value {
        case .field: throw policyError(fieldVersusField)
        case .uid, .role, .email:
            guard [.text, .uuid, .json].contains(type) else {
                throw policyError("field \(field) is \(type): cannot compare with \(value) (text)")
            }
        case .claim:
            if case .array = type { throw policyError("field \(field) is \(type): cannot compare with \(value) (text)") }
        case .literal(let v):
            guard v.isNull || PolicyValues.coerce(v, to: type, fromText: false) != nil else {
                throw policyError("field \(field) is \(type): cannot compare with \(v.kindName) \(value)")
            }
        }
    }

    private func checkSameKind(_ l: PolicyOperand, _ r: PolicyOperand) throws {
        guard let a = PolicyValues.kind(of: l), let b = PolicyValues.kind(of: r), a != b else { return }
        throw policyError("cannot compare \(l) (\(a)) with \(r) (\(b))")
    }

    private func checkSelect(_ x: PolicyOperand, _ field: String, _ collection: String, _ whereField: String,
                             _ value: PolicyOperand) throws {
        guard let other = collections[collection] else { throw policyError("collection \(collection) does not exist") }
        let selected = try fieldType(field, in: other)
        try checkFit(value, field: "\(collection).\(whereField)", type: try fieldType(whereField, in: other))
        guard case .field(let name) = x else { return try checkFit(x, field: "\(collection).\(field)", type: selected) }
        let type = try fieldType(name, in: schema)
        guard PolicyValues.comparable(type, selected) else {
            throw policyError("field \(name) is \(type) but \(collection).\(field) is \(selected)")
        }
    }

    private func checkIsBool(_ x: PolicyOperand) throws {
        switch x {
        case .field(let name):
            let type = try fieldType(name, in: schema)
            guard type == .bool || type == .json else { throw policyError("field \(name) is \(type): is true/false needs a bool field") }
        case .literal(let v):
            guard v.isNull || v.boolValue != nil else { throw policyError("\(x) is \(v.kindName): is true/false needs a bool") }
        case .uid, .role, .email, .claim:
            throw policyError("\(x) is text: is true/false needs a bool")
        }
    }
}

// MARK: - Values

enum PolicyValues {
    /// `value` in the normal form of `type`, or nil when it can never equal a value of that type.
    /// Caller text (`fromText`) may also be read as an int, float or bool.
    static func coerce(_ value: JSONValue, to type: FieldType, fromText: Bool) -> JSONValue? {
        switch (type, value) {
        case (.json, _), (.int, .int), (.int, .float), (.float, .float): return value
        case (.float, .int(let i)): return .float(Double(i))
        case (.int, .string(let s)) where fromText: return Int64(s).map(JSONValue.int)
        case (.float, .string(let s)) where fromText: return Double(s).flatMap { $0.isFinite ? .float($0) : nil }
        case (.bool, .string(let s)) where fromText: return ["true": JSONValue.bool(true), "false": .bool(false)][s]
        default: return try? FieldValidator.normalize(value, as: type, field: "")
        }
    }

    /// Three-way order of two known values of one kind; nil (UNKNOWN) for null or mixed kinds.
    static func order(_ a: JSONValue, _ b: JSONValue) -> Int? {
        switch (a, b) {
        case (.string, .string), (.bool, .bool): return JSONValue.compare(a, b)
        default: return a.numberValue != nil && b.numberValue != nil ? JSONValue.compare(a, b) : nil
        }
    }

    /// The kind of a non-field operand as validation sees it: auth.* is text; nil for null and fields.
    static func kind(of operand: PolicyOperand) -> String? {
        switch operand {
        case .field: return nil
        case .uid, .role, .email, .claim: return "text"
        case .literal(let v):
            switch v {
            case .null: return nil
            case .int, .float: return "number"
            default: return v.kindName
            }
        }
    }

    /// Whether values of two field types can be equal (for `in (select ...)`).
    static func comparable(_ a: FieldType, _ b: FieldType) -> Bool {
        let numbers: Set<FieldType> = [.int, .float], strings: Set<FieldType> = [.text, .uuid]
        return a == b || a == .json || b == .json || (numbers.contains(a) && numbers.contains(b))
            || (strings.contains(a) && strings.contains(b))
    }

    /// `auth.jwt() -> path[0] ... ->> path.last`: the claim as text, null when missing.
    static func claimText(_ claims: JSONValue, path: [String]) -> JSONValue {
        let found = path.reduce(claims) { current, key in current[key] ?? .null }
        switch found {
        case .null, .string: return found
        default: return .string(JSON.encodeString(found))
        }
    }
}

extension CompareOp {
    /// The operator that is TRUE exactly when this one is FALSE (for known values).
    var inverse: CompareOp {
        switch self {
        case .eq: return .ne
        case .ne: return .eq
        case .lt: return .gte
        case .gte: return .lt
        case .gt: return .lte
        case .lte: return .gt
        }
    }

    /// The operator with its sides swapped: `a < b` is `b > a`.
    var mirrored: CompareOp {
        switch self {
        case .eq, .ne: return self
        case .lt: return .gt
        case .gt: return .lt
        case .lte: return .gte
        case .gte: return .lte
        }
    }

    func holds(_ order: Int) -> Bool {
        switch self {
        case .eq: return order == 0
        case .ne: return order != 0
        case .lt: return order < 0
        case .lte: return order <= 0
        case .gt: return order > 0
        case .gte: return order >= 0
        }
    }
}

// MARK: - Compiler

/// A compiled (sub)expression: known now, or a filter the kernel evaluates per row.
enum PolicyOutcome: Hashable {
    case known(Bool)
    case rows(Filter)
}

enum PolicyCompiler {
    static func filter(_ expr: PolicyExpression, caller: PolicyCaller, schema: CollectionSchema,
                       lookup: any MembershipLookup) throws -> Filter {
        let compilation = PolicyCompilation(caller: caller, schema: schema, lookup: lookup)
        switch try compilation.compile(expr, negated: false) {
        case .known(let value): return value ? alwaysTrue(schema) : alwaysFalse(schema)
        case .rows(let filter):
            guard depth(of: filter) <= PolicyLimits.compiledDepthMax else {
                throw policyError("compiles to a filter nested deeper than \(PolicyLimits.compiledDepthMax)")
            }
            return filter
        }
    }

    /// OR of several permissive policies; no policy at all denies every row.
    static func combine(_ policies: [Filter], schema: CollectionSchema) -> Filter {
        var junction = PolicyJunction(isAnd: false)
        for policy in policies {
            if isAlwaysTrue(policy, schema: schema) {
                junction.add(.known(true))
            } else {
                junction.add(isAlwaysFalse(policy, schema: schema) ? .known(false) : .rows(policy))
            }
        }
        switch junction.outcome {
        case .known(let value): return value ? alwaysTrue(schema) : alwaysFalse(schema)
        case .rows(let filter): return filter
        }
    }

    /// The filter no row matches: `pk IN []`.
    static func alwaysFalse(_ schema: CollectionSchema) -> Filter { .in(field: schema.primaryKey, values: []) }

    /// The filter every row matches: `NOT pk IN []` (the primary key is never null).
    static func alwaysTrue(_ schema: CollectionSchema) -> Filter { .not(alwaysFalse(schema)) }

    static func isAlwaysFalse(_ filter: Filter, schema: CollectionSchema) -> Bool { filter == alwaysFalse(schema) }

    static func isAlwaysTrue(_ filter: Filter, schema: CollectionSchema) -> Bool { filter == alwaysTrue(schema) }

    /// Nesting of `and`/`or`/`not`, counted as the kernel counts it (a leaf is 0).
    static func depth(of filter: Filter) -> Int {
        switch filter {
        case .and(let parts), .or(let parts): return 1 + (parts.map(depth(of:)).max() ?? 0)
        case .not(let inner): return 1 + depth(of: inner)
        default: return 0
        }
    }
}

/// Collects the parts of an AND or OR, folding constants and flattening nested ones of its kind.
struct PolicyJunction {
    let isAnd: Bool
    private var filters: [Filter] = []
    /// Set once a part decides the whole (FALSE in an AND, TRUE in an OR).
    private(set) var decided = false

    init(isAnd: Bool) { self.isAnd = isAnd }

    mutating func add(_ part: PolicyOutcome) {
        switch part {
        case .known(let value): if value != isAnd { decided = true }
        case .rows(.and(let parts)) where isAnd: filters += parts
        case .rows(.or(let parts)) where !isAnd: filters += parts
        case .rows(let filter): filters.append(filter)
        }
    }

    var outcome: PolicyOutcome {
        if decided { return .known(!isAnd) }
        switch filters.count {
        case 0: return .known(isAnd)
        case 1: return .rows(filters[0])
        default: return .rows(isAnd ? .and(filters) : .or(filters))
        }
    }
}

/// One compilation: the caller's constants, the guarded collection and the membership lookup.
struct PolicyCompilation {
    let caller: PolicyCaller
    let schema: CollectionSchema
    let lookup: any MembershipLookup

    /// An operand is a field of the row or a value known now (`fromText`: caller text).
    private enum Side {
        case field(String)
        case value(JSONValue, fromText: Bool)
    }

    /// Compiles `expr`, or its negation when `negated` (NOT pushed down to the leaves).
    func compile(_ expr: PolicyExpression, negated: Bool) throws -> PolicyOutcome {
        switch expr {
        case .constant(let value): return .known(value != negated)
        case .and(let parts): return try junction(parts, isAnd: !negated, negated: negated)
        case .or(let parts): return try junction(parts, isAnd: negated, negated: negated)
        case .not(let inner): return try compile(inner, negated: !negated)
        case .compare(let l, let op, let r): return try compare(l, negated ? op.inverse : op, r)
        case .inList(let x, let values, let n): return try membership(x, values, negated: n != negated)
        case .inSelect(let x, let field, let collection, let whereField, let value, let n):
            let values = try lookUp(field, collection, whereField, value)
            return try membership(x, values, negated: n != negated)
        case .isNull(let x, let n): return try isNull(x, negated: n != negated)
        case .isBool(let x, let value, let n): return try isBool(x, value, negated: n != negated)
        }
    }

    /// Stops compiling the parts once one decides the whole: no needless lookups.
    private func junction(_ parts: [PolicyExpression], isAnd: Bool, negated: Bool) throws -> PolicyOutcome {
        var junction = PolicyJunction(isAnd: isAnd)
        for part in parts where !junction.decided { junction.add(try compile(part, negated: negated)) }
        return junction.outcome
    }

    private func side(_ operand: PolicyOperand) -> Side {
        switch operand {
        case .field(let name): return .field(name)
        case .uid: return .value(caller.uid.map(JSONValue.string) ?? .null, fromText: true)
        case .role: return .value(.string(caller.role), fromText: true)
        case .email: return .value(caller.email.map(JSONValue.string) ?? .null, fromText: true)
        case .claim(let path): return .value(PolicyValues.claimText(caller.claims, path: path), fromText: true)
        case .literal(let value): return .value(value, fromText: false)
        }
    }

    private func compare(_ l: PolicyOperand, _ op: CompareOp, _ r: PolicyOperand) throws -> PolicyOutcome {
        switch (side(l), side(r)) {
        case (.field, .field): throw policyError(fieldVersusField)
        case (.field(let f), .value(let v, let text)): return try compare(field: f, op, v, fromText: text)
        case (.value(let v, let text), .field(let f)): return try compare(field: f, op.mirrored, v, fromText: text)
        case (.value(let a, _), .value(let b, _)): return .known(PolicyValues.order(a, b).map(op.holds) ?? false)
        }
    }

    private func compare(field: String, _ op: CompareOp, _ value: JSONValue, fromText: Bool) throws -> PolicyOutcome {
        let type = try fieldType(field, in: schema)
        guard !value.isNull, let typed = PolicyValues.coerce(value, to: type, fromText: fromText) else { return .known(false) }
        return .rows(.compare(field: field, op: op, value: typed))
    }

    private func lookUp(_ field: String, _ collection: String, _ whereField: String, _ value: PolicyOperand) throws -> [JSONValue] {
        guard case .value(let key, _) = side(value) else {
            throw policyError("the value after where \(whereField) = must be auth.* or a literal")
        }
        if key.isNull { return [] }
        let values = try lookup.values(of: field, in: collection, where: whereField, equals: key)
        guard values.count <= KernelLimits.inListMax else {
            throw AeroError(.queryUnbounded, "policy expression: select \(field) from \(collection) found \(values.count) "
                + "values, more than KernelLimits.inListMax (\(KernelLimits.inListMax))", invariant: "Q1")
        }
        return values
    }

    /// `x [not] in (values)`; literals and looked-up values are never read from text.
    private func membership(_ x: PolicyOperand, _ values: [JSONValue], negated: Bool) throws -> PolicyOutcome {
        if values.isEmpty { return .known(negated) }
        let holdsNull = values.contains(where: \.isNull)
        switch side(x) {
        case .field(let f):
            let type = try fieldType(f, in: schema)
            let typed = values.compactMap { $0.isNull ? nil : PolicyValues.coerce($0, to: type, fromText: false) }
            if !negated { return typed.isEmpty ? .known(false) : .rows(.in(field: f, values: typed)) }
            if holdsNull { return .known(false) }
            let present = Filter.not(.is(field: f, value: .null))
            return .rows(typed.isEmpty ? present : .and([present, .not(.in(field: f, values: typed))]))
        case .value(let v, _):
            if v.isNull { return .known(false) }
            let equal = values.map { PolicyValues.order(v, $0).map { $0 == 0 } }
            if equal.contains(true) { return .known(!negated) }
            return .known(equal.contains(nil) ? false : negated)
        }
    }

    private func isNull(_ x: PolicyOperand, negated: Bool) throws -> PolicyOutcome {
        switch side(x) {
        case .field(let f):
            _ = try fieldType(f, in: schema)
            let test = Filter.is(field: f, value: .null)
            return .rows(negated ? .not(test) : test)
        case .value(let v, _): return .known(v.isNull != negated)
        }
    }

    private func isBool(_ x: PolicyOperand, _ value: Bool, negated: Bool) throws -> PolicyOutcome {
        switch side(x) {
        case .field(let f):
            _ = try fieldType(f, in: schema)
            let test = Filter.is(field: f, value: .bool(value))
            return .rows(negated ? .not(test) : test)
        case .value(let v, _): return .known((v == .bool(value)) != negated)
        }
    }
}
