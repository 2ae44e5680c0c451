// Migrations on the server side: `GET /admin/v1/migrations` lists what was applied (from the
// system collection `_migrations`), `POST /admin/v1/migrations` applies one migration's steps
// in order and records it (up), or applies its down steps and removes the record (down).
//
// A step is one schema change, one WAL transaction:
//   {"create_collection":<schema>} {"drop_collection":"name"}
//   {"add_index":{"collection":"c","index":{...}}} {"drop_index":{"collection":"c","name":"i"}}
//   {"add_field":{"collection":"c","field":{"name":"f",...}}} {"drop_field":{"collection":"c","name":"f"}}
//   {"create_policy":{"collection":"c","policy":{...}}} {"drop_policy":{"collection":"c","name":"p"}}
//   {"enable_rls":"c"} {"disable_rls":"c"}   (docs/POLICIES.md)
// Steps run in order; the first failure stops the migration, which is then not recorded (the
// error names the step; steps before it stay applied, as in PostgreSQL without transactional DDL).

import Hummingbird
import Kernel

enum Migrations {
    static let collection = "_migrations"
    static let schema: JSONValue = .object([
        "name": .string(collection), "primary_key": .string("version"),
        "fields": .object([
            "version": .object(["type": .string("text")]), "name": .object(["type": .string("text")]),
            "checksum": .object(["type": .string("text")]),
            "applied_at": .object(["type": .string("timestamp"), "default": .string("now()")]),
        ]),
    ])
    /// Steps in one migration: bounds the work of one request.
    static let stepsMax = 1_000

    static func list(_ database: Database) throws -> Response {
        let snapshot = database.snapshot()
        let rows = try snapshot.rowsIfPresent(Query(collection: collection, order: [Sort(field: "version")],
                                                    limit: KernelLimits.queryLimitMax))
        return HTTPJSON.response(.object(["migrations": .array(rows.map { .object($0) })]), lsn: snapshot.lsn)
    }

    static func apply(_ body: JSONValue, _ database: Database) async throws -> Response {
        guard case .string(let version)? = body["version"], case .string(let name)? = body["name"],
              case .string(let checksum)? = body["checksum"], case .string(let direction)? = body["direction"],
              direction == "up" || direction == "down", case .array(let steps)? = body["steps"] else {
            throw AeroError(.requestInvalid, "a migration is {\"version\",\"name\",\"checksum\",\"direction\":\"up|down\",\"steps\":[...]}")
        }
        guard steps.count <= stepsMax else { throw AeroError(.requestInvalid, "at most \(stepsMax) steps per migration") }
        if database.snapshot().state.collections[collection] == nil { _ = try await database.createCollection(schema) }
        let applied = try database.snapshot().document(collection, key: .string(version))
        if direction == "up" {
            if let applied {
                guard applied["checksum"] == .string(checksum) else {
                    throw AeroError(.requestInvalid, "migration \(version) was applied with checksum \(applied["checksum"].map(JSON.encodeString) ?? "?") and has changed since; refusing")
                }
                return HTTPJSON.response(.object(["version": .string(version), "status": .string("already applied")]))
            }
        } else {
            guard applied != nil else { throw AeroError(.requestInvalid, "migration \(version) is not applied") }
        }
        for (i, step) in steps.enumerated() {
            do {
                try await run(step, database)
            } catch {
                let aero = AeroError.wrap(error)
                throw AeroError(aero.code, "migration \(version) step \(i + 1) failed: \(aero.message)")
            }
        }
        let op: JSONValue = direction == "up"
            ? .object(["op": .string("insert"), "collection": .string(collection),
                       "doc": .object(["version": .string(version), "name": .string(name), "checksum": .string(checksum)])])
            : .object(["op": .string("delete"), "collection": .string(collection), "key": .string(version)])
        let result = try await database.commit(.object(["ops": .array([op])]))
        return HTTPJSON.response(.object(["version": .string(version), "status": .string(direction == "up" ? "applied" : "reverted")]),
                                 lsn: result.lsn)
    }

    private static func run(_ step: JSONValue, _ database: Database) async throws {
        guard case .object(let o) = step, o.count == 1, let (kind, value) = o.first else {
            throw AeroError(.requestInvalid, "a step is an object with exactly one key")
        }
        switch (kind, value) {
        case ("create_collection", _): _ = try await database.createCollection(try AdminAPI.userSchema(value))
        case ("drop_collection", .string(let name)): _ = try await AdminAPI.dropUserCollection(name, database)
        case ("add_index", _):
            _ = try await database.addIndex(collection: try string(value, "collection"), value["index"] ?? .null)
        case ("drop_index", _):
            _ = try await database.dropIndex(collection: try string(value, "collection"), name: try string(value, "name"))
        case ("add_field", _):
            _ = try await database.addField(collection: try string(value, "collection"), value["field"] ?? .null)
        case ("drop_field", _):
            _ = try await database.dropField(collection: try string(value, "collection"), name: try string(value, "name"))
        case ("create_policy", _):
            _ = try await PolicyAdmin.create(collection: try string(value, "collection"), value["policy"] ?? .null, database)
        case ("drop_policy", _):
            _ = try await PolicyAdmin.drop(collection: try string(value, "collection"), name: try string(value, "name"), database)
        case ("enable_rls", .string(let name)): _ = try await PolicyAdmin.setEnabled(collection: name, true, database)
        case ("disable_rls", .string(let name)): _ = try await PolicyAdmin.setEnabled(collection: name, false, database)
        default:
            throw AeroError(.requestInvalid, "unknown step \(kind) (create_collection, drop_collection, add_index, drop_index, add_field, drop_field, create_policy, drop_policy, enable_rls, disable_rls)")
        }
    }

    private static func string(_ value: JSONValue, _ key: String) throws -> String {
        guard case .string(let s)? = value[key] else { throw AeroError(.requestInvalid, "the step needs \"\(key)\"") }
        return s
    }
}
