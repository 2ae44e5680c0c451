// Who may do what to objects (docs/STORAGE.md "Policies"). Decided before any byte moves.
//
// - service_role: everything; it is the only bypass.
// - Reads of objects in a public bucket: anyone (public URLs need no key, as on Supabase).
// - Signed URLs: exactly the object and operation they were issued for, until they expire
//   (checked in StorageAPI, StorageSignedURL).
// - Everything else: a storage policy must allow it. Policies are rows of `_storage_policies`
//   in the policy language of docs/POLICIES.md, evaluated against the object's row (fields
//   bucket_id, name, owner, mime_type, metadata, top_folder, ...). `storage.foldername(name)[1]`
//   is the object's first folder (the field `top_folder`). No policy: denied (403).
// - Buckets are created, changed and deleted by the service role only.

import Kernel

enum StorageOperation: String, CaseIterable {
    case select, insert, update, delete
}

struct StorageAccess: Sendable {
    let database: Database
    let engine = PolicyEngine()

    static let policiesMax = 100

    func requireService(_ caller: Caller) throws {
        guard caller.isService else {
            throw StorageError(403, "Unauthorized", "buckets are managed with the service_role key", code: "AERO_STORAGE_UNAUTHORIZED")
        }
    }

    func allows(_ caller: Caller, _ op: StorageOperation, row: Document, newRow: Document? = nil, bucket: Document,
                snapshot: Snapshot) -> Bool {
        (try? authorize(caller, op, row: row, newRow: newRow, bucket: bucket, snapshot: snapshot)) != nil
    }

    func authorize(_ caller: Caller, _ op: StorageOperation, row: Document, newRow: Document? = nil, bucket: Document,
                   snapshot: Snapshot) throws {
        if caller.isService { return }
        if op == .select, bucket["public"] == .bool(true) { return }
        guard let schema = snapshot.state.collections[StorageCollections.objects]?.schema ?? Self.objectsSchema else {
            throw StorageError.unauthorized
        }
        let rows = try snapshot.rowsIfPresent(Query(collection: StorageCollections.policies, limit: Self.policiesMax))
        let policyCaller = PolicyCaller(uid: caller.userID, role: caller.role, email: caller.email, claims: caller.claims)
        func passes(_ key: String, _ target: Document) throws -> Bool {
            for policy in rows where PolicyEngine.applies(policy, to: caller.role)
                && (policy["operation"]?.stringValue == op.rawValue || policy["operation"]?.stringValue == "all") {
                guard let text = (policy[key]?.stringValue ?? policy["using"]?.stringValue) else { continue }
                let expression = try engine.expression(Self.rewrite(text))
                let filter = try PolicyCompiler.filter(expression, caller: policyCaller, schema: schema,
                                                       lookup: SnapshotLookup(snapshot: snapshot))
                if try FilterMatcher(filter, schema: schema).matches(target) { return true }
            }
            return false
        }
        let ok: Bool
        switch op {
        case .select, .delete: ok = try passes("using", row)
        case .insert: ok = try passes("check", row)
        case .update: ok = try passes("using", row) && passes("check", newRow ?? row)
        }
        guard ok else { throw StorageError.unauthorized }
    }

    /// `storage.foldername(name)[1]` (with or without parentheses around the call) is the field
    /// `top_folder`; other indexes are refused when the policy is declared.
    static func rewrite(_ text: String) -> String {
        text.replacingOccurrences(of: "(storage.foldername(name))[1]", with: "top_folder")
            .replacingOccurrences(of: "storage.foldername(name)[1]", with: "top_folder")
    }

    /// The objects schema before the collection exists (policies are declared before uploads).
    static let objectsSchema: CollectionSchema? = StorageCollections.all
        .first { $0["name"]?.stringValue == StorageCollections.objects }
        .flatMap { try? CollectionSchema.parse($0) }

    /// Validates and stores a policy (service role). Body: {name, operation, roles?, using?, check?}.
    func create(_ body: JSONValue, service: StorageService) async throws -> (Document, UInt64) {
        guard case .object(let o) = body else { throw StorageError.invalid("the body must be a JSON object") }
        let allowed: Set<String> = ["name", "operation", "roles", "using", "check"]
        if let extra = o.keys.first(where: { !allowed.contains($0) }) { throw StorageError.invalid("unknown key \(extra)") }
        guard case .string(let name)? = o["name"], !name.isEmpty, name.utf8.count <= 63,
              name.unicodeScalars.allSatisfy({ ($0.value >= 48 && $0.value <= 57) || ($0.value >= 65 && $0.value <= 90) || ($0.value >= 97 && $0.value <= 122) || $0 == "_" }) else {
            throw StorageError.invalid("name: 1..63 ASCII letters, digits or _")
        }
        guard case .string(let operation)? = o["operation"], ["select", "insert", "update", "delete", "all"].contains(operation) else {
            throw StorageError.invalid("operation: select, insert, update, delete or all")
        }
        let roles = o["roles"] ?? .array([.string("anon"), .string("authenticated")])
        guard case .array(let list) = roles, !list.isEmpty,
              list.allSatisfy({ $0 == .string("anon") || $0 == .string("authenticated") }) else {
            throw StorageError.invalid("roles: a non-empty subset of [\"anon\",\"authenticated\"]")
        }
        var doc: Document = ["name": .string(name), "operation": .string(operation), "roles": roles, "created_at": service.now]
        guard let schema = Self.objectsSchema else { throw StorageError.invalid("objects schema unavailable") }
        for key in ["using", "check"] {
            guard let value = o[key], value != .null else { continue }
            guard case .string(let text) = value else { throw StorageError.invalid("\(key) must be a string") }
            if text.contains("storage.foldername") && !Self.rewrite(text).contains("top_folder") || Self.rewrite(text).contains("storage.foldername") {
                throw StorageError.invalid("only storage.foldername(name)[1] is supported")
            }
            do {
                let expression = try PolicyExpression.parse(Self.rewrite(text))
                _ = try PolicyCompiler.filter(expression, caller: PolicyCaller(uid: "00000000-0000-0000-0000-000000000000", role: "authenticated", email: nil, claims: .object([:])),
                                              schema: schema, lookup: SnapshotLookup(snapshot: database.snapshot()))
            } catch let error as AeroError {
                throw StorageError.invalid("\(key): \(error.message)")
            }
            doc[key] = .string(text)
        }
        guard doc["using"] != nil || doc["check"] != nil else { throw StorageError.invalid("a policy needs using or check") }
        if operation != "insert", doc["using"] == nil { throw StorageError.invalid("\(operation) policies need using") }
        try await service.ensureCollections()
        let count = try database.snapshot().rowsIfPresent(Query(collection: StorageCollections.policies, limit: Self.policiesMax + 1)).count
        guard count < Self.policiesMax else { throw StorageError.invalid("at most \(Self.policiesMax) storage policies") }
        do {
            let lsn = try await database.commit([.insert(collection: StorageCollections.policies, document: doc)]).lsn
            return (doc, lsn)
        } catch let error as AeroError where error.code == .duplicateKey {
            throw StorageError.duplicate
        }
    }
}
