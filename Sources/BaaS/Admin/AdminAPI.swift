// The admin API (`/admin/v1`, service_role key) and the health endpoints of a node.
// Every answer that reads or writes data carries `X-AeroDB-LSN`: the LSN it was read at, or
// the LSN of the write (durable when the answer is sent, D1).

import Hummingbird
import Kernel

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
    public static func router(database: Database, keys: KeyChecker, cluster: any ClusterView) -> Router<AeroRequestContext> {
        let router = Router(context: AeroRequestContext.self)
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: ClusterMiddleware(cluster: cluster, database: database))
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
                let (schema, lsn) = try await database.createCollection(try await HTTPJSON.body(request))
                return HTTPJSON.response(schema.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name") { request, context in
            try await guarded(request, keys) {
                let lsn = try await database.dropCollection(try context.parameters.require("name"))
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
        RESTAPI.register(on: router, database: database, keys: keys, cluster: cluster)
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
