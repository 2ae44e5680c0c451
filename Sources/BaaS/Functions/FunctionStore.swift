// Deployed functions, stored in three system collections of the kernel (durable, replicated and
// checkpointed like any data, so every node can run every function):
//
//   _functions          key name:  {name, active_version, updated_at}
//   _function_versions  key id = "<name>@<version>": {name, version, sha256 (hex of the module
//                       bytes), bytes, chunks, rpc (null or [{"name","type"}]), limits (object),
//                       verify_jwt, config (object of strings), secrets (object of strings),
//                       created_at}
//   _function_chunks    key id = "<name>@<version>#<index>": {name, version, index, data}
//                       data = base64 of module bytes [index*chunkBytes, (index+1)*chunkBytes)
//
// Chunking: a document holds at most KernelLimits.documentBytesMax (1 MiB), so a module is cut
// into chunks of FunctionRuntimeLimits.chunkBytes (512 KiB raw, ~683 KiB base64). On load the
// chunks are concatenated in index order and the SHA-256 and length are checked against the
// version row: a missing, extra or altered chunk is refused (AERO_FUNCTION_FAILED), never run.
//
// A deploy is ONE kernel transaction (the head row, the version row, all its chunks, and the
// deletion of versions beyond FunctionRuntimeLimits.versionsKept): it is all there or none of it
// (C1), which is why a module is at most moduleBytesMax (its base64 fits one transaction). The
// module is parsed and validated before the transaction; an invalid module stores nothing.
// Secrets are stored as given (not encrypted at rest); they are never returned by the list or
// get routes, only their names.

import Crypto
import Foundation
import Kernel

public struct FunctionVersion: Sendable {
    public var name: String
    public var version: Int
    public var sha256: String
    public var bytes: Int
    public var chunks: Int
    public var rpc: [RPCParameter]?
    public var limits: FunctionLimits
    public var verifyJWT: Bool
    public var config: [String: String]
    public var secrets: [String: String]
    /// A 5-field cron schedule (FunctionCron), or nil.
    public var schedule: String?
    /// The collection changes that invoke it (FunctionTriggers), or nil.
    public var trigger: FunctionTrigger?
    public var createdAt: JSONValue

    /// Config and secrets as the guest sees them (secrets win on a clash).
    var environment: [String: String] { config.merging(secrets) { _, secret in secret } }

    func json(active: Bool) -> JSONValue {
        .object([
            "name": .string(name), "version": .int(Int64(version)), "sha256": .string(sha256), "bytes": .int(Int64(bytes)),
            "chunks": .int(Int64(chunks)), "active": .bool(active),
            "rpc": rpc.map { .array($0.map(\.json)) } ?? .null, "limits": limits.json, "verify_jwt": .bool(verifyJWT),
            "config": .object(config.mapValues(JSONValue.string)),
            "secrets": .array(secrets.keys.sorted().map(JSONValue.string)), "created_at": createdAt,
            "schedule": schedule.map(JSONValue.string) ?? .null, "trigger": trigger?.json ?? .null,
        ])
    }
}

/// A declared rpc parameter: `a:int`.
public struct RPCParameter: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case int, float, text, bool, json }
    public var name: String
    public var kind: Kind

    var json: JSONValue { .object(["name": .string(name), "type": .string(kind.rawValue)]) }

    /// `a:int,b:int` (the CLI's --rpc), or a JSON array of {"name","type"}. Empty text: no parameters.
    static func parse(_ value: JSONValue) throws -> [RPCParameter] {
        var out: [RPCParameter] = []
        switch value {
        case .string(let text):
            for item in text.split(separator: ",", omittingEmptySubsequences: true) {
                let parts = item.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { throw AeroError(.functionInvalid, "rpc parameter \(item) must be name:type") }
                out.append(try make(parts[0], parts[1]))
            }
        case .array(let items):
            for item in items {
                guard case .string(let name)? = item["name"], case .string(let type)? = item["type"] else {
                    throw AeroError(.functionInvalid, "rpc parameters are objects {\"name\", \"type\"}")
                }
                out.append(try make(name, type))
            }
        default: throw AeroError(.functionInvalid, "rpc must be \"a:int,b:int\" or an array of {\"name\",\"type\"}")
        }
        guard out.count <= FunctionRuntimeLimits.rpcParametersMax else {
            throw AeroError(.functionInvalid, "at most \(FunctionRuntimeLimits.rpcParametersMax) rpc parameters")
        }
        guard Set(out.map(\.name)).count == out.count else { throw AeroError(.functionInvalid, "rpc parameter names must be distinct") }
        return out
    }

    private static func make(_ name: String, _ type: String) throws -> RPCParameter {
        guard FunctionStore.validIdentifier(name) else {
            throw AeroError(.functionInvalid, "rpc parameter name \(name.prefix(80)) must match [a-z_][a-z0-9_]* (at most \(FunctionRuntimeLimits.nameBytesMax) bytes)")
        }
        guard let kind = Kind(rawValue: type) else {
            throw AeroError(.functionInvalid, "rpc parameter type \(type.prefix(40)) is not one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return RPCParameter(name: name, kind: kind)
    }
}

/// What `POST /admin/v1/functions` asks for.
public struct DeployRequest: Sendable {
    public var name: String
    public var module: [UInt8]
    public var rpc: [RPCParameter]?
    public var limits: FunctionLimits
    public var verifyJWT: Bool
    public var config: [String: String]
    public var secrets: [String: String]
    public var schedule: String?
    public var trigger: FunctionTrigger?

    public init(json: JSONValue) throws {
        guard case .object(let o) = json else { throw AeroError(.functionInvalid, "deploy takes a JSON object") }
        let known: Set<String> = ["name", "module", "rpc", "limits", "verify_jwt", "config", "secrets", "schedule", "trigger"]
        if let unknown = o.keys.sorted().first(where: { !known.contains($0) }) {
            throw AeroError(.functionInvalid, "unknown deploy field \(unknown); known: \(known.sorted().joined(separator: ", "))")
        }
        guard case .string(let name)? = o["name"] else { throw AeroError(.functionInvalid, "deploy needs a name") }
        try FunctionStore.checkName(name)
        self.name = name
        guard case .string(let encoded)? = o["module"], let data = Data(base64Encoded: encoded) else {
            throw AeroError(.functionInvalid, "deploy needs module: the .wasm bytes in base64")
        }
        module = [UInt8](data)
        switch o["rpc"] {
        case nil, .null?: rpc = nil
        case let value?: rpc = try RPCParameter.parse(value)
        }
        limits = try FunctionLimits.parse(o["limits"])
        switch o["verify_jwt"] {
        case nil, .null?: verifyJWT = true
        case .bool(let b)?: verifyJWT = b
        default: throw AeroError(.functionInvalid, "verify_jwt must be true or false")
        }
        config = try Self.strings(o["config"], "config")
        secrets = try Self.strings(o["secrets"], "secrets")
        switch o["schedule"] {
        case nil, .null?: schedule = nil
        case .string(let text)?: schedule = try CronSchedule(text).text
        default: throw AeroError(.functionInvalid, "schedule must be a 5-field cron string such as \"*/5 * * * *\"")
        }
        switch o["trigger"] {
        case nil, .null?: trigger = nil
        case let value?: trigger = try FunctionTrigger(json: value)
        }
    }

    static func strings(_ value: JSONValue?, _ what: String) throws -> [String: String] {
        guard let value, !value.isNull else { return [:] }
        guard case .object(let o) = value else { throw AeroError(.functionInvalid, "\(what) must be an object of strings") }
        guard o.count <= FunctionRuntimeLimits.configEntriesMax else {
            throw AeroError(.functionInvalid, "at most \(FunctionRuntimeLimits.configEntriesMax) \(what) entries")
        }
        var out: [String: String] = [:]
        for (key, item) in o {
            guard case .string(let s) = item, s.utf8.count <= FunctionRuntimeLimits.configValueBytesMax, !key.isEmpty,
                  key.utf8.count <= 256 else {
                throw AeroError(.functionInvalid, "\(what).\(key.prefix(80)) must be a string of at most \(FunctionRuntimeLimits.configValueBytesMax) bytes (names 1-256 bytes)")
            }
            out[key] = s
        }
        return out
    }
}

public enum FunctionStore {
    static let heads = "_functions"
    static let versions = "_function_versions"
    static let chunks = "_function_chunks"

    static let schemas: [JSONValue] = {
        typealias C = AuthCollections
        return [
            C.schema(heads, key: "name", [
                "name": C.field("text", nullable: false), "active_version": C.field("int", nullable: false),
                "updated_at": C.created,
            ], []),
            C.schema(versions, key: "id", [
                "id": C.field("text", nullable: false), "name": C.field("text", nullable: false),
                "version": C.field("int", nullable: false), "sha256": C.field("text", nullable: false),
                "bytes": C.field("int", nullable: false), "chunks": C.field("int", nullable: false),
                "rpc": C.field("json"), "limits": C.field("json", nullable: false), "verify_jwt": C.field("bool", nullable: false),
                "config": C.field("json", nullable: false), "secrets": C.field("json", nullable: false), "created_at": C.created,
                "schedule": C.field("text"), "trigger": C.field("json"),
            ], [C.index("by_name", ["name", "version"])]),
            C.schema(chunks, key: "id", [
                "id": C.field("text", nullable: false), "name": C.field("text", nullable: false),
                "version": C.field("int", nullable: false), "index": C.field("int", nullable: false),
                "data": C.field("text", nullable: false),
            ], [C.index("by_name", ["name", "version", "index"])]),
        ]
    }()

    static func validIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= FunctionRuntimeLimits.nameBytesMax else { return false }
        guard (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first) || first == UInt8(ascii: "_") else { return false }
        return name.utf8.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_") }
    }

    /// Function names: `[a-z][a-z0-9_-]*`, at most nameBytesMax bytes (they appear in URLs).
    static func checkName(_ name: String) throws {
        let bytes = Array(name.utf8)
        let ok = !bytes.isEmpty && bytes.count <= FunctionRuntimeLimits.nameBytesMax
            && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[0])
            && bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
        guard ok else {
            throw AeroError(.functionInvalid, "function name \(name.prefix(80).debugDescription) must match [a-z][a-z0-9_-]* and be at most \(FunctionRuntimeLimits.nameBytesMax) bytes")
        }
    }

    static func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    // MARK: Reads (any node, one snapshot)

    static func activeVersion(_ name: String, _ snapshot: Snapshot) throws -> FunctionVersion? {
        guard snapshot.state.collections[heads] != nil, let head = try snapshot.document(heads, key: .string(name)),
              case .int(let active)? = head["active_version"] else { return nil }
        return try version(name, Int(active), snapshot)
    }

    static func version(_ name: String, _ version: Int, _ snapshot: Snapshot) throws -> FunctionVersion? {
        guard snapshot.state.collections[versions] != nil,
              let doc = try snapshot.document(versions, key: .string("\(name)@\(version)")) else { return nil }
        return try decode(doc)
    }

    static func allVersions(_ name: String, _ snapshot: Snapshot) throws -> [FunctionVersion] {
        try snapshot.rowsIfPresent(Query(collection: versions, filter: .compare(field: "name", op: .eq, value: .string(name)),
                                         order: [Sort(field: "name"), Sort(field: "version")], limit: FunctionRuntimeLimits.versionsKept + 1))
            .map(decode)
    }

    static func list(_ snapshot: Snapshot) throws -> [(head: Int, version: FunctionVersion)] {
        let rows = try snapshot.rowsIfPresent(Query(collection: heads, order: [Sort(field: "name")], limit: KernelLimits.queryLimitMax))
        return try rows.compactMap { row in
            guard case .string(let name)? = row["name"], case .int(let active)? = row["active_version"],
                  let v = try version(name, Int(active), snapshot) else { return nil }
            return (Int(active), v)
        }
    }

    static func decode(_ doc: Document) throws -> FunctionVersion {
        func int(_ key: String) -> Int { if case .int(let n)? = doc[key] { return Int(n) } else { return 0 } }
        func strings(_ key: String) -> [String: String] {
            guard case .object(let o)? = doc[key] else { return [:] }
            return o.compactMapValues { if case .string(let s) = $0 { return s } else { return nil } }
        }
        var rpc: [RPCParameter]?
        if let value = doc["rpc"], !value.isNull { rpc = try RPCParameter.parse(value) }
        return FunctionVersion(name: doc["name"]?.stringValue ?? "", version: int("version"), sha256: doc["sha256"]?.stringValue ?? "",
                               bytes: int("bytes"), chunks: int("chunks"), rpc: rpc,
                               limits: (try? FunctionLimits.parse(doc["limits"])) ?? .default,
                               verifyJWT: doc["verify_jwt"] == .bool(true), config: strings("config"), secrets: strings("secrets"),
                               schedule: doc["schedule"]?.stringValue,
                               trigger: doc["trigger"].flatMap { $0.isNull ? nil : try? FunctionTrigger(json: $0) },
                               createdAt: doc["created_at"] ?? .null)
    }

    /// The module bytes of a version, from its chunks, checked against length and SHA-256.
    static func moduleBytes(_ v: FunctionVersion, _ snapshot: Snapshot) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(v.bytes)
        for index in 0..<v.chunks {
            guard let chunk = try snapshot.document(chunks, key: .string("\(v.name)@\(v.version)#\(index)")),
                  case .string(let data)? = chunk["data"], let raw = Data(base64Encoded: data) else {
                throw AeroError(.functionFailed, "function \(v.name) version \(v.version): module chunk \(index) of \(v.chunks) is missing or unreadable")
            }
            bytes.append(contentsOf: raw)
        }
        guard bytes.count == v.bytes, sha256(bytes) == v.sha256 else {
            throw AeroError(.functionFailed, "function \(v.name) version \(v.version): the stored module does not match its checksum (\(bytes.count) of \(v.bytes) bytes); redeploy it")
        }
        return bytes
    }

    // MARK: Writes (the primary; routes forward)

    /// Stores a checked module as the next version and makes it active, in one transaction.
    static func deploy(_ request: DeployRequest, database: Database) async throws -> (FunctionVersion, lsn: UInt64) {
        try await SystemCollections.ensure(schemas + FunctionTriggers.schemas, in: database)
        let snapshot = database.snapshot()
        let existing = try allVersions(request.name, snapshot)
        let next = (existing.map(\.version).max() ?? 0) + 1
        let chunkCount = (request.module.count + FunctionRuntimeLimits.chunkBytes - 1) / FunctionRuntimeLimits.chunkBytes
        let v = FunctionVersion(name: request.name, version: next, sha256: sha256(request.module), bytes: request.module.count,
                                chunks: chunkCount, rpc: request.rpc, limits: request.limits, verifyJWT: request.verifyJWT,
                                config: request.config, secrets: request.secrets, schedule: request.schedule,
                                trigger: request.trigger, createdAt: .null)
        var ops: [WriteOperation] = [
            .upsert(collection: heads, document: ["name": .string(request.name), "active_version": .int(Int64(next))]),
            .insert(collection: versions, document: [
                "id": .string("\(request.name)@\(next)"), "name": .string(request.name), "version": .int(Int64(next)),
                "sha256": .string(v.sha256), "bytes": .int(Int64(v.bytes)), "chunks": .int(Int64(chunkCount)),
                "rpc": request.rpc.map { .array($0.map(\.json)) } ?? .null, "limits": request.limits.json,
                "verify_jwt": .bool(request.verifyJWT), "config": .object(request.config.mapValues(JSONValue.string)),
                "secrets": .object(request.secrets.mapValues(JSONValue.string)),
                "schedule": request.schedule.map(JSONValue.string) ?? .null, "trigger": request.trigger?.json ?? .null,
            ]),
        ]
        // A trigger starts after what this deploy saw; a redeploy keeps its cursor (FN5).
        if request.trigger != nil, let start = try FunctionTriggers.initialCursor(request.name, after: snapshot.lsn, snapshot) {
            ops.append(start)
        }
        for index in 0..<chunkCount {
            let start = index * FunctionRuntimeLimits.chunkBytes
            let end = min(start + FunctionRuntimeLimits.chunkBytes, request.module.count)
            ops.append(.insert(collection: chunks, document: [
                "id": .string("\(request.name)@\(next)#\(index)"), "name": .string(request.name), "version": .int(Int64(next)),
                "index": .int(Int64(index)), "data": .string(Data(request.module[start..<end]).base64EncodedString()),
            ]))
        }
        // Versions beyond the kept number go in the same transaction (never the new, active one).
        let keep = FunctionRuntimeLimits.versionsKept
        for old in existing.sorted(by: { $0.version > $1.version }).dropFirst(keep - 1) {
            ops += deleteOps(old)
        }
        let result = try await database.commit(ops)
        return (v, result.lsn)
    }

    private static func deleteOps(_ v: FunctionVersion) -> [WriteOperation] {
        var ops: [WriteOperation] = [.delete(collection: versions, target: .key(.string("\(v.name)@\(v.version)")))]
        for index in 0..<v.chunks { ops.append(.delete(collection: chunks, target: .key(.string("\(v.name)@\(v.version)#\(index)")))) }
        return ops
    }

    /// Makes `version` (default: the newest one older than the active one) active.
    static func rollback(_ name: String, to version: Int?, database: Database) async throws -> (FunctionVersion, lsn: UInt64) {
        let snapshot = database.snapshot()
        guard let current = try activeVersion(name, snapshot) else { throw notFound(name) }
        let all = try allVersions(name, snapshot)
        let target: FunctionVersion
        if let version {
            guard let found = all.first(where: { $0.version == version }) else {
                throw AeroError(.functionNotFound, "function \(name) has no version \(version); kept: \(all.map { String($0.version) }.joined(separator: ", "))")
            }
            target = found
        } else {
            guard let previous = all.filter({ $0.version < current.version }).max(by: { $0.version < $1.version }) else {
                throw AeroError(.functionInvalid, "function \(name) has no version older than \(current.version) to roll back to")
            }
            target = previous
        }
        let result = try await database.commit([.update(collection: heads, target: .key(.string(name)),
                                                        set: ["active_version": .int(Int64(target.version))])])
        return (target, result.lsn)
    }

    /// Deletes a function with every version and chunk, in one transaction.
    static func delete(_ name: String, database: Database) async throws -> UInt64 {
        let snapshot = database.snapshot()
        guard try activeVersion(name, snapshot) != nil else { throw notFound(name) }
        var ops: [WriteOperation] = [.delete(collection: heads, target: .key(.string(name)))]
        for v in try allVersions(name, snapshot) { ops += deleteOps(v) }
        ops += try FunctionTriggers.deleteOps(name, snapshot)
        return try await database.commit(ops).lsn
    }

    static func notFound(_ name: String) -> AeroError {
        AeroError(.functionNotFound, "function \(name.prefix(80)) is not deployed")
    }
}
