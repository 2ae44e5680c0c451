// Declaring policies (service_role): the admin API and the migration steps share these.
//   GET    /admin/v1/policies                           every policy and every _rls row
//   POST   /admin/v1/collections/:name/policies         {"name","operation","roles"?,"using"?,"check"?}
//   PUT    /admin/v1/collections/:name/policies/:policy  the same body as POST: replaces the policy in one
//                                                        transaction (a new "name" renames it); a refused one changes nothing
//   DELETE /admin/v1/collections/:name/policies/:policy
//   POST   /admin/v1/collections/:name/rls              {"enabled": true|false}
//   POST   /admin/v1/collections/:name/policies/test    {"token"} or {"role","claims"?}: the compiled conditions
// Migration steps: {"create_policy":{"collection":"c","policy":{...}}}, {"drop_policy":{"collection":"c","name":"p"}},
//   {"enable_rls":"c"}, {"disable_rls":"c"}.
// A policy is parsed and validated against the collection's schema when declared; select,
// update and delete need `using`, insert needs `check` (or `using`), all needs `using`.

import Kernel

enum PolicyAdmin {
    static let roles: Set<String> = ["anon", "authenticated"]

    static func ensure(_ database: Database) async throws {
        try await SystemCollections.ensure(PolicyStore.schemas, in: database)
    }

    static func create(collection: String, _ body: JSONValue, _ database: Database) async throws -> (JSONValue, UInt64) {
        let doc = try document(collection: collection, body, database.snapshot())
        try await ensure(database)
        guard try PolicyStore.rows(collection, database.snapshot()).count < PolicyStore.policiesPerCollectionMax else {
            throw invalid("a collection has at most \(PolicyStore.policiesPerCollectionMax) policies")
        }
        let result = try await database.commit([.insert(collection: PolicyStore.policies, document: doc)])
        return (.object(doc), result.lsn)
    }

    /// Replaces policy `name` of `collection` by the policy `body` declares (`name` absent: the
    /// same name), atomically: the new one is validated first (a refusal changes nothing), then the
    /// old row is deleted and the new one inserted in one commit. A rename onto an existing policy
    /// is refused by the insert (the commit as a whole).
    static func update(collection: String, name: String, _ body: JSONValue, _ database: Database) async throws -> (JSONValue, UInt64) {
        guard case .object(var o) = body else { throw invalid("a policy is a JSON object") }
        if o["name"] == nil { o["name"] = .string(name) }
        let snapshot = database.snapshot()
        let old = JSONValue.string("\(collection).\(name)")
        guard try snapshot.documentIfPresent(PolicyStore.policies, key: old) != nil else {
            throw AeroError(.notFound, "no policy \(name) on \(collection)")
        }
        let doc = try document(collection: collection, .object(o), snapshot)
        let result = try await database.commit([.delete(collection: PolicyStore.policies, target: .key(old)),
                                                .insert(collection: PolicyStore.policies, document: doc)])
        return (.object(doc), result.lsn)
    }

    /// The stored row of a policy declared by `body`, validated against the collection's schema.
    static func document(collection: String, _ body: JSONValue, _ snapshot: Snapshot) throws -> Document {
        guard case .object(let o) = body else { throw invalid("a policy is a JSON object") }
        let allowed: Set<String> = ["name", "operation", "roles", "using", "check"]
        if let unknown = o.keys.first(where: { !allowed.contains($0) }) { throw invalid("unknown policy key \"\(unknown)\" (\(allowed.sorted().joined(separator: ", ")))") }
        guard case .string(let name)? = o["name"] else { throw invalid("a policy needs a \"name\"") }
        try CollectionSchema.validateName(name, what: "policy name")
        guard case .string(let operation)? = o["operation"], PolicyOperation(rawValue: operation) != nil || operation == "all" else {
            throw invalid("operation must be select, insert, update, delete or all")
        }
        let roles = try self.roles(o["roles"])
        guard !SystemCollections.isSystem(collection), let data = snapshot.state.collections[collection] else {
            throw AeroError(.collectionNotFound, "collection \(collection) does not exist")
        }
        let collections = snapshot.state.collections.mapValues(\.schema)
        var doc: Document = ["id": .string("\(collection).\(name)"), "collection": .string(collection), "name": .string(name),
                             "operation": .string(operation), "roles": .array(roles.map(JSONValue.string))]
        for key in ["using", "check"] {
            guard let value = o[key], value != .null else { continue }
            guard case .string(let text) = value else { throw invalid("\(key) must be a policy expression string") }
            do {
                let expression = try PolicyExpression.parse(text)
                try expression.validate(for: data.schema, collections: collections)
                doc[key] = .string(expression.description)
            } catch let error as AeroError {
                // Name the expression, so an editor can mark the mistake in the right one (the dashboard).
                throw AeroError(error.code, "\(key): \(error.message)", invariant: error.invariant)
            }
        }
        let needsUsing = operation != "insert"
        if needsUsing && doc["using"] == nil { throw invalid("a \(operation) policy needs \"using\"") }
        if !needsUsing && doc["using"] == nil && doc["check"] == nil { throw invalid("an insert policy needs \"check\"") }
        return doc
    }

    static func roles(_ value: JSONValue?) throws -> [String] {
        guard let value, value != .null else { return PolicyStore.rolesDefault.compactMap(\.stringValue) }
        guard case .array(let items) = value, !items.isEmpty else { throw invalid("roles is a non-empty array of anon, authenticated") }
        return try items.map { item in
            guard case .string(let role) = item, Self.roles.contains(role) else {
                throw invalid("roles holds anon or authenticated (service_role bypasses policies)")
            }
            return role
        }
    }

    static func drop(collection: String, name: String, _ database: Database) async throws -> UInt64 {
        let id = JSONValue.string("\(collection).\(name)")
        guard try database.snapshot().documentIfPresent(PolicyStore.policies, key: id) != nil else {
            throw AeroError(.notFound, "no policy \(name) on \(collection)")
        }
        return try await database.commit([.delete(collection: PolicyStore.policies, target: .key(id))]).lsn
    }

    static func setEnabled(collection: String, _ enabled: Bool, _ database: Database) async throws -> UInt64 {
        guard !SystemCollections.isSystem(collection), database.snapshot().state.collections[collection] != nil else {
            throw AeroError(.collectionNotFound, "collection \(collection) does not exist")
        }
        try await ensure(database)
        return try await database.commit([.upsert(collection: PolicyStore.enabled, document: [
            "collection": .string(collection), "enabled": .bool(enabled), "updated_at": .string(Timestamp.format(SystemClock().nowMicros())),
        ])]).lsn
    }

    /// Deletes a dropped collection's policies and enablement row; the commit's LSN, or nil
    /// when it had none.
    static func forget(collection: String, _ database: Database) async throws -> UInt64? {
        let snapshot = database.snapshot()
        var ops: [WriteOperation] = try PolicyStore.rows(collection, snapshot).compactMap { row in
            row["id"].map { .delete(collection: PolicyStore.policies, target: .key($0)) }
        }
        if try snapshot.documentIfPresent(PolicyStore.enabled, key: .string(collection)) != nil {
            ops.append(.delete(collection: PolicyStore.enabled, target: .key(.string(collection))))
        }
        guard !ops.isEmpty else { return nil }
        return try await database.commit(ops).lsn
    }

    static func list(_ database: Database) throws -> (JSONValue, UInt64) {
        let snapshot = database.snapshot()
        func all(_ collection: String, _ order: [Sort]) throws -> [JSONValue] {
            try snapshot.rowsIfPresent(Query(collection: collection, order: order, limit: KernelLimits.queryLimitMax)).map { .object($0) }
        }
        return (.object(["policies": .array(try all(PolicyStore.policies, [Sort(field: "collection"), Sort(field: "name")])),
                         "rls": .array(try all(PolicyStore.enabled, [Sort(field: "collection")]))]), snapshot.lsn)
    }

    /// The policy tester's caller: `{"token":"<access token or key>"}`, or `{"role":"anon"|
    /// "authenticated","claims":{...}}` (claims as a token would carry them, e.g. `sub`).
    static func testCaller(_ body: JSONValue, _ keys: KeyChecker) throws -> Caller {
        if case .string(let token)? = body["token"] { return try keys.caller(token: token) }
        guard case .string(let role)? = body["role"], roles.contains(role) || role == "service_role" else {
            throw invalid("the tester needs {\"token\"} or {\"role\": anon|authenticated|service_role, \"claims\"?: {...}}")
        }
        var claims = body["claims"]?.objectValue ?? [:]
        claims["role"] = .string(role)
        return Caller(role: role, claims: .object(claims))
    }

    /// What the tester answers: each condition the caller's requests would be held to, as text.
    static func conditions(_ view: PolicyView, _ caller: Caller) -> JSONValue {
        func text(_ c: PolicyCondition) -> JSONValue { view.condition(c).map { .string($0.description) } ?? .null }
        return .object(["role": .string(caller.role), "enabled": .bool(view.isActive), "select": text(.select),
                        "insert_check": text(.insertCheck), "update_using": text(.updateUsing),
                        "update_check": text(.updateCheck), "delete": text(.delete)])
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.requestInvalid, "policy: " + message) }
}
