// Compiles a collection's stored policies for one caller against one snapshot (PolicyView).
// Parsed expressions are cached by their text (bounded); compilation runs per request, since
// it folds in the caller's claims and answers `in (select ...)` from the snapshot.

import Kernel
import Synchronization

final class PolicyEngine: Sendable {
    static let cachedExpressionsMax = 4_096
    private let parsed = Mutex<[String: PolicyExpression]>([:])

    func expression(_ text: String) throws -> PolicyExpression {
        if let hit = parsed.withLock({ $0[text] }) { return hit }
        let expression = try PolicyExpression.parse(text)
        parsed.withLock { cache in
            if cache.count >= Self.cachedExpressionsMax { cache.removeAll(keepingCapacity: true) }
            cache[text] = expression
        }
        return expression
    }

    /// The policies of `schema`'s collection for `caller`: inactive for the service role and for
    /// collections without row-level security.
    func view(_ schema: CollectionSchema, caller: Caller, snapshot: Snapshot) throws -> PolicyView {
        guard !caller.isService, try PolicyStore.isEnabled(schema.name, snapshot) else { return PolicyView(schema: schema, filters: nil) }
        let policyCaller = PolicyCaller(uid: caller.userID, role: caller.role, email: caller.email, claims: caller.claims)
        let lookup = SnapshotLookup(snapshot: snapshot)
        var parts: [PolicyCondition: [Filter]] = [:]
        for row in try PolicyStore.rows(schema.name, snapshot) where Self.applies(row, to: caller.role) {
            let operation = row["operation"]?.stringValue ?? ""
            func compiled(_ key: String) throws -> Filter? {
                guard case .string(let text)? = row[key] else { return nil }
                do {
                    return try PolicyCompiler.filter(try expression(text), caller: policyCaller, schema: schema, lookup: lookup)
                } catch let error as AeroError {
                    throw AeroError(error.code, "policy \(row["name"]?.stringValue ?? "?") on \(schema.name): \(error.message)")
                }
            }
            let using = try compiled("using")
            let check = try compiled("check") ?? using
            for condition in Self.conditions(operation) {
                let filter = (condition == .insertCheck || condition == .updateCheck) ? check : using
                if let filter { parts[condition, default: []].append(filter) }
            }
        }
        var filters: [PolicyCondition: Filter] = [:]
        for condition in [PolicyCondition.select, .insertCheck, .updateUsing, .updateCheck, .delete] {
            filters[condition] = PolicyCompiler.combine(parts[condition] ?? [], schema: schema)
        }
        return PolicyView(schema: schema, filters: filters)
    }

    static func applies(_ row: Document, to role: String) -> Bool {
        (row["roles"]?.arrayValue ?? PolicyStore.rolesDefault).contains(.string(role))
    }

    static func conditions(_ operation: String) -> [PolicyCondition] {
        switch operation {
        case "select": return [.select]
        case "insert": return [.insertCheck]
        case "update": return [.updateUsing, .updateCheck]
        case "delete": return [.delete]
        case "all": return [.select, .insertCheck, .updateUsing, .updateCheck, .delete]
        default: return []
        }
    }
}

/// `x in (select f from c where g = v)` answered from the request's snapshot, bounded by
/// `KernelLimits.inListMax` (+1 so the compiler can report the overflow).
struct SnapshotLookup: MembershipLookup {
    let snapshot: Snapshot

    func values(of field: String, in collection: String, where whereField: String, equals value: JSONValue) throws -> [JSONValue] {
        guard let data = snapshot.state.collections[collection], let type = data.schema.fields[whereField]?.type else { return [] }
        guard let typed = PolicyValues.coerce(value, to: type, fromText: value.stringValue != nil) else { return [] }
        let rows = try snapshot.query(Query(collection: collection, filter: .compare(field: whereField, op: .eq, value: typed),
                                            limit: KernelLimits.inListMax + 1)).rows
        return rows.map { $0[field] ?? .null }
    }
}
