// A node directory: `aerodb.json` (settings) and `secrets.json` (JWT secret and API keys,
// mode 0600), plus the data directory. Written by `aerodb init`, read by every other command.
//
// aerodb.json: {"node_id":"n1","http":"127.0.0.1:54321","data_dir":"data","wal_engine":"automatic",
//               "wal_segment_bytes":67108864,"memory_bytes_max":4294967296,
//               "query_limit_default":1000,"query_limit_max":10000,"scan_rows_max":100000,
//               "replication":"127.0.0.1:55321","commit_mode":"sync","replica_wait_ms":5000,
//               "cluster":[{"node_id":"n1","http":"127.0.0.1:54321","replication":"127.0.0.1:55321"}, ...]}
// `cluster` lists every member, this node included; a node without it runs alone (commit mode async).
// `db_aggregates_enabled` (optional, default false) allows REST aggregates (`select=count()`), as PostgREST's setting.
// `auth` (optional) holds the /auth/v1 settings, e.g. {"mailer_autoconfirm":true} (docs/AUTH.md).
// secrets.json: {"jwt_secret":"<base64url>","anon_key":"<jwt>","service_role_key":"<jwt>"}

import BaaS
import Foundation
import Kernel
import Replication

struct NodeConfig {
    static let fileName = "aerodb.json"
    static let secretsFileName = "secrets.json"
    static let defaultHTTP = "127.0.0.1:54321"
    /// Random bytes in a new JWT secret (HS256 needs at least 32).
    static let secretBytes = 48

    var nodeID = "n1"
    var http = defaultHTTP
    var dataDir = "data"
    var walEngine = IOEngineChoice.automatic
    var walSegmentBytes = KernelLimits.walSegmentBytesDefault
    var memoryBytesMax = KernelLimits.memoryBytesDefault
    var query = QueryOptions()
    /// Where this node listens for its peers (replication protocol).
    var replication: String?
    var members: [ClusterMember] = []
    var commitMode: CommitMode?
    /// How long a `sync`/`all` commit waits for replica flushes before it is in doubt.
    var replicaWaitMillis: Int64 = 5_000
    /// Requests slower than this are logged and kept in the slow log (0: off). `slow_query_ms`.
    var slowQueryMillis: Int64 = SlowLog.thresholdMillisDefault
    /// The region S3 requests are signed for (`storage_s3_region`; docs/STORAGE.md "S3").
    var s3Region = "local"
    /// HTTPS certificate and key files (`tls`); nil: plain HTTP.
    var tls: TLSFiles?
    /// The `auth` object as written (kept verbatim so `json` round-trips it) and its parse.
    var authJSON: JSONValue?
    var auth = AuthSettings()

    /// The `auth` settings of a development node or cluster (`--dev`, scripts/dev), like
    /// `supabase start`: sign-ups confirmed at once, anonymous sign-ins on. Production
    /// defaults (without `--dev`) keep both off.
    static let developmentAuth: JSONValue = .object(["mailer_autoconfirm": .bool(true), "anonymous_sign_ins": .bool(true)])
    static let developmentNotice = "development settings: sign-ups are confirmed at once (auth.mailer_autoconfirm) and anonymous sign-ins are on (auth.anonymous_sign_ins)"

    /// The commit mode in effect: as configured, else `sync` in a cluster and `async` alone.
    var effectiveCommitMode: CommitMode { commitMode ?? (members.count > 1 ? .sync : .async) }

    var json: JSONValue {
        .object(["node_id": .string(nodeID), "http": .string(http), "data_dir": .string(dataDir),
                 "wal_engine": .string(walEngine.rawValue), "wal_segment_bytes": .int(Int64(walSegmentBytes)),
                 "memory_bytes_max": .int(Int64(memoryBytesMax)),
                 "query_limit_default": .int(Int64(query.limitDefault)), "query_limit_max": .int(Int64(query.limitMax)),
                 "scan_rows_max": .int(Int64(query.scanRowsMax))].merging(clusterJSON) { a, _ in a })
    }

    private var clusterJSON: [String: JSONValue] {
        var o: [String: JSONValue] = ["replica_wait_ms": .int(replicaWaitMillis)]
        if let replication { o["replication"] = .string(replication) }
        if let commitMode { o["commit_mode"] = .string(commitMode.rawValue) }
        if let authJSON { o["auth"] = authJSON }
        if query.aggregatesEnabled { o["db_aggregates_enabled"] = .bool(true) }
        if slowQueryMillis != SlowLog.thresholdMillisDefault { o["slow_query_ms"] = .int(slowQueryMillis) }
        if let tls { o["tls"] = tls.json }
        if s3Region != "local" { o["storage_s3_region"] = .string(s3Region) }
        if !members.isEmpty {
            o["cluster"] = .array(members.map {
                .object(["node_id": .string($0.nodeID), "http": .string($0.http), "replication": .string($0.replication.description)])
            })
        }
        return o
    }

    private static func parseMembers(_ value: JSONValue) throws -> [ClusterMember] {
        guard case .array(let items) = value else { throw invalid("cluster must be an array of members") }
        let members = try items.map { item -> ClusterMember in
            guard case .string(let id)? = item["node_id"], case .string(let http)? = item["http"],
                  case .string(let replication)? = item["replication"] else {
                throw invalid("each cluster member needs node_id, http and replication")
            }
            _ = try HostPort.parse(http)
            return ClusterMember(nodeID: id, http: http, replication: try HostPort.parse(replication).peer)
        }
        guard Set(members.map(\.nodeID)).count == members.count else { throw invalid("cluster member ids must be unique") }
        return members
    }

    /// The replication layer's view of this config.
    func clusterConfig(clusterID: String, secret: [UInt8]) throws -> ClusterConfig {
        var members = self.members
        if members.isEmpty {
            let own = try HostPort.parse(replication ?? Self.defaultReplication(http: http))
            members = [ClusterMember(nodeID: nodeID, http: http, replication: own.peer)]
        }
        guard members.contains(where: { $0.nodeID == nodeID }) else {
            throw Self.invalid("cluster does not list this node (\(nodeID))")
        }
        return ClusterConfig(nodeID: nodeID, clusterID: clusterID, members: members, commitMode: effectiveCommitMode,
                             replicaWaitMillis: replicaWaitMillis, secret: secret)
    }

    /// A node alone listens nowhere in practice; its nominal replication address is HTTP port + 1000.
    static func defaultReplication(http: String) -> String {
        guard let hp = try? HostPort.parse(http) else { return "127.0.0.1:55321" }
        return "\(hp.host):\(min(65535, hp.port + 1000))"
    }

    static func load(directory: String) throws -> NodeConfig {
        let path = directory + "/" + fileName
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AeroError(.configInvalid, "no \(fileName) in \(directory): run `aerodb init --dir \(directory)` first")
        }
        guard case .object(let o) = try JSON.parse(Array(data)) else { throw invalid("must be a JSON object") }
        var config = NodeConfig()
        for (key, value) in o {
            switch (key, value) {
            case ("node_id", .string(let s)): config.nodeID = s
            case ("http", .string(let s)): _ = try HostPort.parse(s); config.http = s
            case ("data_dir", .string(let s)): config.dataDir = s
            case ("wal_engine", .string(let s)):
                guard let engine = IOEngineChoice(rawValue: s) else { throw invalid("wal_engine must be one of \(IOEngineChoice.names)") }
                config.walEngine = engine
            case ("wal_segment_bytes", .int(let n)): config.walSegmentBytes = Int(n)
            case ("memory_bytes_max", .int(let n)) where n > 0: config.memoryBytesMax = Int(n)
            // The query limits: the same named ranges as the cluster settings query.* (QuerySettingRanges).
            case ("query_limit_default", _): config.query.limitDefault = try within(key, value, QuerySettingRanges.limitDefaultRange)
            case ("query_limit_max", _): config.query.limitMax = try within(key, value, QuerySettingRanges.limitMaxRange)
            case ("scan_rows_max", _): config.query.scanRowsMax = try within(key, value, QuerySettingRanges.scanRowsMaxRange)
            case ("db_aggregates_enabled", .bool(let b)): config.query.aggregatesEnabled = b  // REST aggregates (docs/API.md)
            case ("replication", .string(let s)): _ = try HostPort.parse(s); config.replication = s
            case ("cluster", let v): config.members = try parseMembers(v)
            case ("commit_mode", .string(let s)):
                guard let mode = CommitMode(rawValue: s) else { throw invalid("commit_mode must be async, sync or all") }
                config.commitMode = mode
            case ("replica_wait_ms", .int(let n)) where n > 0: config.replicaWaitMillis = n
            case ("slow_query_ms", let v): config.slowQueryMillis = try SlowLog.parseThreshold(v)  // docs/OPERATIONS.md
            case ("tls", let v): config.tls = try TLSFiles.parse(v)
            case ("storage_s3_region", .string(let s)) where !s.isEmpty && s.utf8.count <= 64: config.s3Region = s  // docs/STORAGE.md "S3"
            case ("auth", let v):
                config.authJSON = v
                config.auth = try AuthSettings.parse(v)
            default: throw invalid("unknown or invalid setting \"\(key)\": \(JSON.encodeString(value))")
            }
        }
        guard config.query.limitDefault <= config.query.limitMax else {  // as the cluster settings query.* (ClusterSettings.checkQueryLimits)
            throw invalid("query_limit_default (\(config.query.limitDefault)) must not exceed query_limit_max (\(config.query.limitMax))")
        }
        return config
    }

    static func invalid(_ why: String) -> AeroError { AeroError(.configInvalid, "\(fileName): \(why)") }

    private static func within(_ key: String, _ value: JSONValue, _ range: ClosedRange<Int64>) throws -> Int {
        guard case .int(let n) = value, range.contains(n) else {
            throw invalid("\(key) must be an integer within \(range.lowerBound)...\(range.upperBound)")
        }
        return Int(n)
    }

    /// The file's values of the settings that are cluster settings too (defaults until stored).
    /// A key counts as set by aerodb.json only when its value differs from the built-in default
    /// (`cluster init` writes every query limit and the commit mode: `aerodb status` shows only
    /// what someone changed).
    func nodeFileSettings(file: [String: JSONValue]) -> NodeFileSettings {
        let builtIn = QueryOptions()
        let names: [(String, String, Bool)] = [
            ("commit_mode", NodeSettingsKeys.commitMode, effectiveCommitMode != (members.count > 1 ? .sync : .async)),
            ("query_limit_default", NodeSettingsKeys.limitDefault, query.limitDefault != builtIn.limitDefault),
            ("query_limit_max", NodeSettingsKeys.limitMax, query.limitMax != builtIn.limitMax),
            ("scan_rows_max", NodeSettingsKeys.scanRowsMax, query.scanRowsMax != builtIn.scanRowsMax),
            ("db_aggregates_enabled", NodeSettingsKeys.aggregatesEnabled, query.aggregatesEnabled != builtIn.aggregatesEnabled)]
        return NodeFileSettings(query: query, commitMode: effectiveCommitMode.rawValue,
                                explicit: Set(names.compactMap { file[$0.0] != nil && $0.2 ? $0.1 : nil }))
    }

    /// `nodeFileSettings` of the node directory's aerodb.json as written.
    func nodeFileSettings(directory: String) -> NodeFileSettings {
        let data = FileManager.default.contents(atPath: directory + "/" + Self.fileName).map { Array($0) } ?? []
        if case .object(let o)? = try? JSON.parse(data) { return nodeFileSettings(file: o) }
        return nodeFileSettings(file: [:])  // load() parsed this file a moment ago
    }

    func kernelOptions(directory: String) -> KernelOptions {
        var options = KernelOptions(dataDirectory: dataDir.hasPrefix("/") ? dataDir : directory + "/" + dataDir)
        options.walEngine = walEngine
        options.walSegmentBytes = walSegmentBytes
        options.memoryBytesMax = memoryBytesMax
        options.query = query
        return options
    }
}

struct NodeSecrets {
    let jwtSecret: [UInt8]
    let anonKey: String
    let serviceRoleKey: String

    static func generate(nowSeconds: Int64) -> NodeSecrets {
        var rng = SystemRandomNumberGenerator()
        let secret = (0..<NodeConfig.secretBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return NodeSecrets(jwtSecret: secret,
                           anonKey: APIKeys.make(role: "anon", secret: secret, nowSeconds: nowSeconds),
                           serviceRoleKey: APIKeys.make(role: "service_role", secret: secret, nowSeconds: nowSeconds))
    }

    var json: JSONValue {
        .object(["jwt_secret": .string(JWT.base64URL(jwtSecret)), "anon_key": .string(anonKey),
                 "service_role_key": .string(serviceRoleKey)])
    }

    static func load(directory: String) throws -> NodeSecrets {
        let path = directory + "/" + NodeConfig.secretsFileName
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AeroError(.configInvalid, "no \(NodeConfig.secretsFileName) in \(directory)")
        }
        let o = try JSON.parse(Array(data))
        guard case .string(let s)? = o["jwt_secret"], let secret = JWT.decodeBase64URL(Substring(s)),
              secret.count >= JWT.secretBytesMin, case .string(let anon)? = o["anon_key"],
              case .string(let service)? = o["service_role_key"] else {
            throw AeroError(.configInvalid, "\(NodeConfig.secretsFileName) is malformed")
        }
        return NodeSecrets(jwtSecret: secret, anonKey: anon, serviceRoleKey: service)
    }
}

struct HostPort {
    let host: String
    let port: Int

    static func parse(_ text: String) throws -> HostPort {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port), colon > text.startIndex else {
            throw AeroError(.configInvalid, "address \"\(text)\" must be HOST:PORT")
        }
        return HostPort(host: String(text[..<colon]), port: port)
    }

    var peer: PeerAddress { PeerAddress(host: host, port: port) }
}
