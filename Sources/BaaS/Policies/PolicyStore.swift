// Row-level-security policies, stored in the kernel (SPEC §5, RLS1):
// - `_rls` {collection, enabled}: a collection with enabled = true denies by default;
// - `_policies` {id = "<collection>.<name>", collection, name, operation (select, insert,
//   update, delete or all), roles (["anon","authenticated"] by default), using, check}.
// Policies are permissive: a caller may touch a row when ANY policy for the operation and one of
// its roles allows it. `service_role` bypasses every policy; nothing else does.
//
// What each operation enforces (before execution, never by filtering results afterwards):
// - select, update, delete: the OR of the policies' `using` is ANDed into the query or the
//   write's target filter, so invisible rows are never read, counted, changed or deleted;
// - insert: every new row must satisfy the OR of the insert policies' `check` (or `using`);
// - update: every new row image must satisfy the OR of `check ?? using`; an upsert that hits an
//   existing row needs that row to pass update `using` too. Write checks run in the writer
//   (ChangeCheck), on the exact rows the transaction changes.
// `in (select ...)` lookups read the other collection without its policies (like a
// PostgreSQL security-definer function) from the request's snapshot.

import Kernel
import Synchronization

enum PolicyOperation: String, CaseIterable, Sendable {
    case select, insert, update, delete
}

/// The conditions one caller's requests are held to (an update has two).
enum PolicyCondition: Hashable, Sendable {
    case select, insertCheck, updateUsing, updateCheck, delete
}

enum PolicyStore {
    static let policies = "_policies"
    static let enabled = "_rls"
    static let rolesDefault: [JSONValue] = [.string("anon"), .string("authenticated")]
    /// Policies on one collection: bounds the work of compiling them on every request.
    static let policiesPerCollectionMax = 100

    static let schemas: [JSONValue] = {
        return [
            AuthCollections.schema(policies, key: "id", [
                "id": AuthCollections.field("text", nullable: false), "collection": AuthCollections.field("text", nullable: false),
                "name": AuthCollections.field("text", nullable: false), "operation": AuthCollections.field("text", nullable: false),
                "roles": AuthCollections.field("json", nullable: false), "using": AuthCollections.field("text"),
                "check": AuthCollections.field("text"), "created_at": AuthCollections.created,
            ], [AuthCollections.index("by_collection", ["collection", "name"])]),
            AuthCollections.schema(enabled, key: "collection", [
                "collection": AuthCollections.field("text", nullable: false), "enabled": AuthCollections.field("bool", nullable: false),
                "updated_at": AuthCollections.created,
            ], []),
        ]
    }()

    /// Throws rather than answering "off" when the enablement cannot be read (fail closed).
    static func isEnabled(_ collection: String, _ snapshot: Snapshot) throws -> Bool {
        try snapshot.documentIfPresent(enabled, key: .string(collection))?["enabled"] == .bool(true)
    }

    /// The collection's policies; more than `policiesPerCollectionMax` (two creates racing past
    /// the check) is an error, never a silently shortened list.
    static func rows(_ collection: String, _ snapshot: Snapshot) throws -> [Document] {
        let rows = try snapshot.rowsIfPresent(Query(collection: policies, filter: .compare(field: "collection", op: .eq, value: .string(collection)),
                                                    order: [Sort(field: "collection"), Sort(field: "name")], limit: policiesPerCollectionMax + 1))
        guard rows.count <= policiesPerCollectionMax else {
            throw AeroError(.queryUnbounded, "\(collection) has more than \(policiesPerCollectionMax) policies: drop some", invariant: "RLS1")
        }
        return rows
    }
}

/// The policies of one collection as they apply to one caller, compiled against one snapshot.
struct PolicyView {
    let schema: CollectionSchema
    /// nil: no row-level security for this caller (policies off, or the service role).
    let filters: [PolicyCondition: Filter]?

    var isActive: Bool { filters != nil }

    /// The condition a row must meet, or nil when nothing is enforced.
    func condition(_ condition: PolicyCondition) -> Filter? { filters?[condition] }

    /// ANDs the policy condition into a request's filter.
    func restrict(_ filter: Filter?, for condition: PolicyCondition) -> Filter? {
        guard let policy = self.condition(condition) else { return filter }
        guard let filter else { return policy }
        return .and([filter, policy])
    }

    /// The write check the writer runs on the changes of this collection.
    func writeCheck(includeInsert: Bool) throws -> PolicyWriteCheck? {
        guard let filters else { return nil }
        func matcher(_ c: PolicyCondition) throws -> FilterMatcher? { try filters[c].map { try FilterMatcher($0, schema: schema) } }
        return PolicyWriteCheck(collection: schema.name, insert: includeInsert ? try matcher(.insertCheck) : nil,
                                updateUsing: try matcher(.updateUsing), updateCheck: try matcher(.updateCheck),
                                delete: try matcher(.delete))
    }
}

/// Refuses a transaction whose changes to `collection` break the caller's policies (RLS1).
struct PolicyWriteCheck: ChangeCheck {
    let collection: String
    let insert: FilterMatcher?
    let updateUsing: FilterMatcher?
    let updateCheck: FilterMatcher?
    let delete: FilterMatcher?

    func check(_ change: DocumentChange) throws {
        guard change.collection == collection else { return }  // cascades follow the referenced row's fate
        switch (change.before, change.after) {
        case (nil, let after?):
            if let insert, !insert.matches(after) { throw violation("new row violates row-level security policy") }
        case (let before?, let after?):
            if let updateUsing, !updateUsing.matches(before) { throw violation("the row to update is not visible under row-level security policy") }
            if let updateCheck, !updateCheck.matches(after) { throw violation("new row violates row-level security policy") }
        case (let before?, nil):
            if let delete, !delete.matches(before) { throw violation("the row to delete is not visible under row-level security policy") }
        case (nil, nil):
            return
        }
    }

    private func violation(_ what: String) -> AeroError {
        AeroError(.policyViolation, "\(what) for table \"\(collection)\"", invariant: "RLS1")
    }
}
