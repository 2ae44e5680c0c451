// The admin API (`/admin/v1`, service_role key) and the health endpoints of a node.
// Every answer that reads or writes data carries `X-AeroDB-LSN`: the LSN it was read at, or
// the LSN of the write (durable when the answer is sent, D1).

import Hummingbird
import Kernel
import Logging

/// What the HTTP front ends need to know of the node's place in the cluster. The Node module
/// implements it over the replication layer; BaaS never sees replication's internals.
public protocol ClusterView: Sendable {
    var nodeID: String { get }
    var startedMicros: Int64 { get }
    /// nil when this node accepts writes; otherwise the primary's HTTP HOST:PORT (writes go there).
    func primaryHTTP() -> String?
    /// Role, epoch, primary and replication progress, merged into `/admin/v1/status`.
    func statusFields() async -> [String: JSONValue]
    /// Why this node serves no data at all right now (a diverged replica), or nil.
    func dataRefusal() -> AeroError?
}

public enum AdminAPI {
    /// `routes` tells 405 from 404 for unmatched requests: it is loaded here, and the caller that
    /// registers more routes on the router (storage, cluster) loads it again once they are all in.
    public static func router(database: Database, keys: KeyChecker, cluster: any ClusterView, auth: AuthSettings,
                              logger: Logger, routes: KnownRoutes = KnownRoutes(),
                              clusterSettings: ClusterSettings? = nil) throws -> Router<AeroRequestContext> {
        let router = Router(context: AeroRequestContext.self)
        // Request id, metrics, request log, client address, cluster rules, admin audit: one pass
        // (Sources/BaaS/HTTP/FrontMiddleware.swift).
        router.add(middleware: FrontMiddleware(cluster: cluster, database: database, secret: keys.secret, logger: logger,
                                               routes: routes))
        router.get("/health") { _, _ in HTTPJSON.response(.object(["status": .string("ok")])) }
        router.get("/ready") { _, _ in
            if let failure = database.failure { return HTTPErrors.response(failure) }
            return HTTPJSON.response(.object(["status": .string("ready")]))
        }
        let admin = router.group("admin/v1")
        admin.get("status") { request, _ in
            try await guarded(request, keys) { try await status(database, cluster) }
        }
        admin.get("collections") { request, _ in
            try await guarded(request, keys) {
                let snapshot = database.snapshot()
                return HTTPJSON.response(.object(["collections": .array(snapshot.collections.map(\.json))]), lsn: snapshot.lsn)
            }
        }
        admin.post("collections") { request, _ in
            try await guarded(request, keys) {
                let (schema, lsn) = try await database.createCollection(try userSchema(try await HTTPJSON.body(request)))
                return HTTPJSON.response(schema.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name") { request, context in
            try await guarded(request, keys) {
                let lsn = try await dropUserCollection(try context.parameters.require("name"), database)
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("collections/:name/indexes") { request, context in
            try await guarded(request, keys) {
                let (index, lsn) = try await database.addIndex(collection: try context.parameters.require("name"),
                                                              try await HTTPJSON.body(request))
                return HTTPJSON.response(index.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name/indexes/:index") { request, context in
            try await guarded(request, keys) {
                let lsn = try await database.dropIndex(collection: try context.parameters.require("name"),
                                                       name: try context.parameters.require("index"))
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("collections/:name/fields") { request, context in
            try await guarded(request, keys) {
                let (field, lsn) = try await database.addField(collection: try context.parameters.require("name"),
                                                              try await HTTPJSON.body(request))
                return HTTPJSON.response(field.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name/fields/:field") { request, context in
            try await guarded(request, keys) {
                let lsn = try await database.dropField(collection: try context.parameters.require("name"),
                                                       name: try context.parameters.require("field"))
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.get("migrations") { request, _ in try await guarded(request, keys) { try Migrations.list(database) } }
        admin.post("migrations") { request, _ in
            try await guarded(request, keys) {
                return try await Migrations.apply(try await HTTPJSON.body(request), database)
            }
        }
        addDataRoutes(admin, database: database, keys: keys, cluster: cluster)
        addLogRoutes(admin, database: database, keys: keys)
        addPolicyRoutes(admin, database: database, keys: keys)
        RESTAPI.register(on: router, database: database, keys: keys, cluster: cluster)
        var live: (@Sendable () -> AuthSettings)? = nil
        if let clusterSettings { live = { clusterSettings.auth() } }
        let service = try AuthService(database: database, settings: auth, secret: keys.secret, clock: keys.clock, logger: logger,
                                      live: live)
        AuthAPI.register(on: router, service: service, keys: keys)
        routes.load(router)
        return router
    }

    private static func addDataRoutes(_ admin: RouterGroup<AeroRequestContext>, database: Database, keys: KeyChecker,
                                      cluster: any ClusterView) {
        admin.post("transactions") { request, _ in
            try await guarded(request, keys) {
                let result = try await database.commit(try await HTTPJSON.body(request))
                return HTTPJSON.response(.object(["lsn": .int(Int64(result.lsn))]), lsn: result.lsn)
            }
        }
        admin.post("query") { request, _ in
            try await guarded(request, keys) {
                let result = try database.query(try await HTTPJSON.body(request))
                var body: [String: JSONValue] = ["rows": .array(result.rows.map { .object($0) }),
                                                 "lsn": .int(Int64(result.lsn))]
                if let count = result.totalCount { body["count"] = .int(Int64(count)) }
                return HTTPJSON.response(.object(body), lsn: result.lsn)
            }
        }
        admin.post("explain") { request, _ in
            try await guarded(request, keys) {
                let snapshot = database.snapshot()
                let plan = try snapshot.explain(try Query.parse(try await HTTPJSON.body(request)))
                return HTTPJSON.response(plan.json, lsn: snapshot.lsn)
            }
        }
        admin.post("checkpoint") { request, _ in
            try await guarded(request, keys) {
                let lsn = try await database.checkpoint()
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
    }

    private static func addPolicyRoutes(_ admin: RouterGroup<AeroRequestContext>, database: Database, keys: KeyChecker) {
        admin.get("policies") { request, _ in
            try await guarded(request, keys) {
                let (body, lsn) = try PolicyAdmin.list(database)
                return HTTPJSON.response(body, lsn: lsn)
            }
        }
        admin.post("collections/:name/policies") { request, context in
            try await guarded(request, keys) {
                let (policy, lsn) = try await PolicyAdmin.create(collection: try context.parameters.require("name"),
                                                                 try await HTTPJSON.body(request), database)
                return HTTPJSON.response(policy, status: .created, lsn: lsn)
            }
        }
        admin.put("collections/:name/policies/:policy") { request, context in
            try await guarded(request, keys) {
                let (policy, lsn) = try await PolicyAdmin.update(collection: try context.parameters.require("name"),
                                                                 name: try context.parameters.require("policy"),
                                                                 try await HTTPJSON.body(request), database)
                return HTTPJSON.response(policy, lsn: lsn)
            }
        }
        admin.delete("collections/:name/policies/:policy") { request, context in
            try await guarded(request, keys) {
                let lsn = try await PolicyAdmin.drop(collection: try context.parameters.require("name"),
                                                     name: try context.parameters.require("policy"), database)
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("collections/:name/policies/test") { request, context in
            try await guarded(request, keys) {
                let caller = try PolicyAdmin.testCaller(try await HTTPJSON.body(request), keys)
                let snapshot = database.snapshot()
                let name = try context.parameters.require("name")
                guard !SystemCollections.isSystem(name), let schema = snapshot.state.collections[name]?.schema else {
                    throw AeroError(.collectionNotFound, "collection \(name) does not exist")
                }
                return HTTPJSON.response(PolicyAdmin.conditions(try PolicyEngine().view(schema, caller: caller, snapshot: snapshot), caller),
                                         lsn: snapshot.lsn)
            }
        }
        admin.post("collections/:name/rls") { request, context in
            try await guarded(request, keys) {
                guard case .bool(let enabled)? = try await HTTPJSON.body(request)["enabled"] else {
                    throw AeroError(.requestInvalid, "send {\"enabled\": true} or {\"enabled\": false}")
                }
                let lsn = try await PolicyAdmin.setEnabled(collection: try context.parameters.require("name"), enabled, database)
                return HTTPJSON.response(.object(["enabled": .bool(enabled), "lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
    }

    /// The dev outbox and the audit log, newest first: `?limit=` (default 50, at most
    /// `KernelLimits.queryLimitMax`), outbox `?to=<address>`, audit `?action=<name>`.
    private static func addLogRoutes(_ admin: RouterGroup<AeroRequestContext>, database: Database, keys: KeyChecker) {
        admin.get("outbox") { request, _ in
            try await guarded(request, keys) {
                try recent(AuthCollections.outbox, time: "created_at", filterField: "to", parameter: "to", request, database, key: "messages")
            }
        }
        admin.get("audit") { request, _ in
            try await guarded(request, keys) {
                try recent(AuthCollections.audit, time: "at", filterField: "action", parameter: "action", request, database, key: "events")
            }
        }
    }

    private static func recent(_ collection: String, time: String, filterField: String, parameter: String, _ request: Request,
                               _ database: Database, key: String) throws -> Response {
        let q = AuthAPI.query(request)
        let limit = try q["limit"].map { text -> Int in
            guard let n = Int(text), n > 0 else { throw AeroError(.requestInvalid, "limit must be a positive integer") }
            return min(n, KernelLimits.queryLimitMax)
        } ?? 50
        let snapshot = database.snapshot()
        let filter = q[parameter].map { Filter.compare(field: filterField, op: .eq, value: .string($0)) }
        let order = filter == nil ? [Sort(field: time, direction: .desc)] : [Sort(field: filterField), Sort(field: time, direction: .desc)]
        let rows = try snapshot.rowsIfPresent(Query(collection: collection, filter: filter, order: order, limit: limit))
        return HTTPJSON.response(.object([key: .array(rows.map { .object($0) })]), lsn: snapshot.lsn)
    }

    private static func status(_ database: Database, _ cluster: any ClusterView) async throws -> Response {
        let s = await database.status()
        let now = SystemClock().nowMicros()
        var body: [String: JSONValue] = [
            "node_id": .string(cluster.nodeID),
            "wal_epoch": .int(Int64(s.epoch)),
            "lsn": .object(["durable": .int(Int64(s.durableLSN)), "applied": .int(Int64(s.appliedLSN))]),
            "wal_engine": .string(s.walEngine),
            "collections": .int(Int64(s.collectionCount)),
            "documents": .int(Int64(s.documentCount)),
            "memory": .object(["used_bytes": .int(Int64(s.memoryBytesUsed)), "max_bytes": .int(Int64(s.memoryBytesMax))]),
            "uptime_seconds": .float(Double(now - cluster.startedMicros) / 1e6),
        ]
        for (key, value) in await cluster.statusFields() { body[key] = value }
        body["last_checkpoint_lsn"] = s.lastCheckpointLSN.map { .int(Int64($0)) } ?? .null
        if let error = s.lastCheckpointError { body["last_checkpoint_error"] = .string(error.description) }
        return HTTPJSON.response(.object(body), lsn: s.appliedLSN)
    }

    /// A schema for a user collection: names starting with `_` are reserved for the system.
    static func userSchema(_ schema: JSONValue) throws -> JSONValue {
        if case .string(let name)? = schema["name"], SystemCollections.isSystem(name) {
            throw AeroError(.schemaInvalid, "collection names starting with _ are reserved for system collections")
        }
        return schema
    }

    /// Drops a user collection and its row-level-security rows (a new collection of the same
    /// name starts without policies). System collections cannot be dropped: dropping `_rls`
    /// would switch every policy off.
    static func dropUserCollection(_ name: String, _ database: Database) async throws -> UInt64 {
        guard !SystemCollections.isSystem(name) else {
            throw AeroError(.schemaInvalid, "system collections (names starting with _) cannot be dropped")
        }
        let lsn = try await database.dropCollection(name)
        return try await PolicyAdmin.forget(collection: name, database) ?? lsn
    }

    /// Checks the service key, runs the handler, and turns any error into the error shape.
    public static func guarded(_ request: Request, _ keys: KeyChecker,
                                _ handler: () async throws -> Response) async throws -> Response {
        do {
            try keys.requireServiceRole(request)
            return try await handler()
        } catch {
            return HTTPErrors.response(error)
        }
    }
}
