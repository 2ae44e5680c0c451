// A filter validated against a collection's schema and compiled once, for callers that test
// single documents outside a query: the row-level-security checks on a write's new and old
// rows (SPEC §5, RLS1). Same semantics as a query's filter (see `Filter`): a document matches
// only when the filter is TRUE under SQL's three-valued logic (UNKNOWN does not match).

public struct FilterMatcher: Sendable {
    private let predicate: Predicate

    /// Validates `filter` against `schema` (unknown fields, operand types) and compiles it.
    public init(_ filter: Filter, schema: CollectionSchema) throws {
        predicate = try Predicate.compile(try QueryValidator.normalize(filter, schema))
    }

    public func matches(_ document: Document) -> Bool { predicate.matches(document) }
}

/// Inspects every change of a transaction under the writer's lock, before its record is
/// written: throwing refuses the whole transaction (nothing is logged or applied). The check
/// sees the transaction's exact before and after images, so no commit can slip in between.
public protocol ChangeCheck: Sendable {
    func check(_ change: DocumentChange) throws
}
