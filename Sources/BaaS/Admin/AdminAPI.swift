// The admin API (`/admin/v1`, service_role key) and the health endpoints of a node.
// Every answer that reads or writes data carries `X-AeroDB-LSN`: the LSN it was read at, or
// the LSN of the write (durable when the answer is sent, D1).

import Hummingbird
import Kernel

public struct NodeIdentity: Sendable {
    public let nodeID: String
    public let startedMicros: Int64
    /// From the authority marker read at boot.
    public let epoch: UInt64
    public let primaryID: String

    public init(nodeID: String, startedMicros: Int64, epoch: UInt64, primaryID: String) {
        self.nodeID = nodeID
        self.startedMicros = startedMicros
        self.epoch = epoch
        self.primaryID = primaryID
    }

    public var isPrimary: Bool { nodeID == primaryID }

    /// Writes are accepted only by the node the authority marker names (A1).
    func requirePrimary() throws {
        guard isPrimary else {
            throw AeroError(.notPrimary, "node \(nodeID) is not the primary of epoch \(epoch) (the primary is \(primaryID)); forwarding writes to it is not built yet", invariant: "A1")
        }
    }
}

public enum AdminAPI {
    public static func router(database: Database, keys: KeyChecker, identity: NodeIdentity) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: LogRequestsMiddleware(.info))
        router.get("/health") { _, _ in HTTPJSON.response(.object(["status": .string("ok")])) }
        router.get("/ready") { _, _ in
            if let failure = database.failure { return HTTPErrors.response(failure) }
            return HTTPJSON.response(.object(["status": .string("ready")]))
        }
        let admin = router.group("admin/v1")
        admin.get("status") { request, _ in
            try await guarded(request, keys) { try await status(database, identity) }
        }
        admin.get("collections") { request, _ in
            try await guarded(request, keys) {
                let snapshot = database.snapshot()
                return HTTPJSON.response(.object(["collections": .array(snapshot.collections.map(\.json))]), lsn: snapshot.lsn)
            }
        }
        admin.post("collections") { request, _ in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let (schema, lsn) = try await database.createCollection(try await HTTPJSON.body(request))
                return HTTPJSON.response(schema.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name") { request, context in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let lsn = try await database.dropCollection(try context.parameters.require("name"))
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("collections/:name/indexes") { request, context in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let (index, lsn) = try await database.addIndex(collection: try context.parameters.require("name"),
                                                              try await HTTPJSON.body(request))
                return HTTPJSON.response(index.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name/indexes/:index") { request, context in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let lsn = try await database.dropIndex(collection: try context.parameters.require("name"),
                                                       name: try context.parameters.require("index"))
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("collections/:name/fields") { request, context in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let (field, lsn) = try await database.addField(collection: try context.parameters.require("name"),
                                                              try await HTTPJSON.body(request))
                return HTTPJSON.response(field.json, status: .created, lsn: lsn)
            }
        }
        admin.delete("collections/:name/fields/:field") { request, context in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                let lsn = try await database.dropField(collection: try context.parameters.require("name"),
                                                       name: try context.parameters.require("field"))
                return HTTPJSON.response(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.get("migrations") { request, _ in try await guarded(request, keys) { try Migrations.list(database) } }
        admin.post("migrations") { request, _ in
            try await guarded(request, keys) {
                try identity.requirePrimary()
                return try await Migrations.apply(try await HTTPJSON.body(request), database)
            }
        }
        addDataRoutes(admin, database: database, keys: keys, identity: identity)
        RESTAPI.register(on: router, database: database, keys: keys, identity: identity)
        return router
    }

    private static func addDataRoutes(_ admin: RouterGroup<BasicRequestContext>, database: Database, keys: KeyChecker,
                                      identity: NodeIdentity) {
        admin.post("transactions") { request, _ in
            try await guarded(request, keys) {
                try identity.requirePrimary()
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

    private static func status(_ database: Database, _ identity: NodeIdentity) async throws -> Response {
        let s = await database.status()
        let now = SystemClock().nowMicros()
        var body: [String: JSONValue] = [
            "node_id": .string(identity.nodeID),
            "role": .string(identity.isPrimary ? "primary" : "replica"),
            "epoch": .int(Int64(identity.epoch)),
            "primary": .string(identity.primaryID),
            "wal_epoch": .int(Int64(s.epoch)),
            "replication": .string("not built yet: WAL shipping and promotion are issue #3"),
            "lsn": .object(["durable": .int(Int64(s.durableLSN)), "applied": .int(Int64(s.appliedLSN))]),
            "wal_engine": .string(s.walEngine),
            "collections": .int(Int64(s.collectionCount)),
            "documents": .int(Int64(s.documentCount)),
            "memory": .object(["used_bytes": .int(Int64(s.memoryBytesUsed)), "max_bytes": .int(Int64(s.memoryBytesMax))]),
            "uptime_seconds": .float(Double(now - identity.startedMicros) / 1e6),
        ]
        body["last_checkpoint_lsn"] = s.lastCheckpointLSN.map { .int(Int64($0)) } ?? .null
        if let error = s.lastCheckpointError { body["last_checkpoint_error"] = .string(error.description) }
        return HTTPJSON.response(.object(body), lsn: s.appliedLSN)
    }

    /// Checks the service key, runs the handler, and turns any error into the error shape.
    private static func guarded(_ request: Request, _ keys: KeyChecker,
                                _ handler: () async throws -> Response) async throws -> Response {
        do {
            try keys.requireServiceRole(request)
            return try await handler()
        } catch {
            return HTTPErrors.response(error)
        }
    }
}
