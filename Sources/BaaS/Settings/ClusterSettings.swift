// Cluster-wide settings (issue 13 part 2): settings every member must agree on live in the
// replicated database, not in each node's aerodb.json, so a change made through any node takes
// effect on every node (its WAL record reaches them like any commit) and is audited (an admin
// write: AdminAudit records `admin PUT /admin/v1/settings/<key>`).
//
// Collection `_settings`: one document per setting, {"key": "auth.mailer_autoconfirm",
// "value": <JSON>, "updated_at": <timestamp>}. Settable today: the `auth.<name>` settings of
// docs/AUTH.md that are read per request (SettingsKeys.auth). The effective `/auth/v1` settings
// are the node's aerodb.json `auth` object with the stored values laid over it, key by key;
// deleting a stored value falls back to the file; `auth.rate_limits` and `auth.argon2` are laid
// over the file's object one level deeper (budget by budget, part by part). Node-local settings
// (ports, directories) stay in the file. Secrets (OAuth client secrets, the SMTP password) are
// never shown back, and are stored sealed (SettingsSecrets: AES-GCM envelopes under their own
// keys of the cluster secret), opened when the settings are read for use.
//
// Node-file settings that are cluster settings too (NodeSettingsKeys), aerodb.json's value the
// default until one is stored:
// - `replication.commit_mode` (async | sync | all): read per commit by the primary's commit gate
//   (Replication/Cluster/CommitModeSetting.swift, CM1): it applies from the next commit after
//   its record; a stricter mode at once, a weaker one once the primary has seen it.
// - `query.limit_default`, `query.limit_max`, `query.scan_rows_max` (QuerySettingRanges) and
//   `query.aggregates_enabled`: pushed into the kernel (Database.setQueryOptions) on every
//   node by `applyQueryLimits`, which runs on every applied LSN signal (a few key lookups).
// - `auth.retention` (docs/AUTH.md "Retention"): merged rule by rule over the file's; the
//   primary's retention runs read it before every run.
// Invariants: a value is stored only after the merged settings parse (a bad value is refused
// with AERO_REQUEST_INVALID, never stored); at most `keysMax` documents.

import Hummingbird
import Kernel
import Logging
import Synchronization

public enum SettingsKeys {
    /// The `auth` settings that may be changed cluster-wide: each is read on every request
    /// (`retention` before every retention run).
    public static let auth: Set<String> = [
        "mailer_autoconfirm", "anonymous_sign_ins", "disable_signup", "site_url", "redirect_urls",
        "jwt_expiry", "refresh_token_reuse_interval", "password_min_length", "password_required_characters",
        "secure_password_change", "otp_length", "otp_expiry",
        "oauth_providers", "manual_linking",  // OAuth (Auth/OAuth): client secrets are never shown back
        "rate_limits", "argon2", "smtp",  // the SMTP password is never shown back
        "retention",
    ]
    /// `auth` objects merged one level deep over the file's (a budget or a cost part at a time).
    static let mergedObjects: Set<String> = ["rate_limits", "argon2", "retention"]

    /// Every settable key, for listings and error messages.
    public static var all: [String] { (auth.map { "auth." + $0 } + OpsClusterSettings.keys + NodeSettingsKeys.all).sorted() }
}

/// The ranges of the query limits, in aerodb.json and as cluster settings (Q1, docs/LIMITS.md).
public enum QuerySettingRanges {
    /// Rows a query returns when it names no limit: at most what `limitMaxRange` allows.
    public static let limitDefaultRange: ClosedRange<Int64> = 1...1_000_000
    /// Largest limit a query may ask for: at least `KernelLimits.queryLimitMax`, the most rows
    /// the node's own reads ask for (admin logs, system tables: a lower bound would refuse
    /// them); at most what one answer should hold in memory (and in one HTTP body, itself
    /// bounded by the REST response budget).
    public static let limitMaxRange: ClosedRange<Int64> = Int64(KernelLimits.queryLimitMax)...1_000_000
    /// Rows a plan may examine: at least the default query limit (the node's own scans of small
    /// system tables stay below it); a scan of 10^8 rows holds the snapshot for seconds.
    public static let scanRowsMaxRange: ClosedRange<Int64> = Int64(KernelLimits.queryLimitDefault)...100_000_000

    /// `value` as an integer within `range`, or AERO_REQUEST_INVALID naming `key`.
    static func within(_ key: String, _ value: JSONValue, _ range: ClosedRange<Int64>) throws -> Int {
        guard case .int(let n) = value, range.contains(n) else {
            throw AeroError(.requestInvalid, "\(key) must be an integer within \(range.lowerBound)...\(range.upperBound)")
        }
        return Int(n)
    }
}

/// aerodb.json settings that are also cluster settings (the file's value is the default).
public enum NodeSettingsKeys {
    public static let commitMode = "replication.commit_mode"
    public static let commitModes = ["async", "sync", "all"]
    public static let limitDefault = "query.limit_default", limitMax = "query.limit_max", scanRowsMax = "query.scan_rows_max"
    public static let aggregatesEnabled = "query.aggregates_enabled"
    public static let query = [limitDefault, limitMax, scanRowsMax, aggregatesEnabled]
    public static let all = [commitMode] + query

    /// Checks one value alone (the merged query limits are checked together by `query`).
    static func validate(_ key: String, _ value: JSONValue) throws {
        switch key {
        case commitMode:
            guard case .string(let mode) = value, commitModes.contains(mode) else {
                throw AeroError(.requestInvalid, "\(key) is \(commitModes.map { "\"\($0)\"" }.joined(separator: ", "))")
            }
        case limitDefault: _ = try QuerySettingRanges.within(key, value, QuerySettingRanges.limitDefaultRange)
        case limitMax: _ = try QuerySettingRanges.within(key, value, QuerySettingRanges.limitMaxRange)
        case scanRowsMax: _ = try QuerySettingRanges.within(key, value, QuerySettingRanges.scanRowsMaxRange)
        case aggregatesEnabled:
            guard case .bool = value else { throw AeroError(.requestInvalid, "\(key) is true or false") }
        default: throw AeroError(.requestInvalid, "\(key) is not a node setting")
        }
    }
}

/// The node's aerodb.json values of the NodeSettingsKeys (the defaults until a value is stored).
public struct NodeFileSettings: Sendable {
    public var query: QueryOptions
    /// The commit mode in effect from the file (its `commit_mode`, else the cluster default).
    public var commitMode: String
    /// The NodeSettingsKeys aerodb.json names explicitly (shown as source "aerodb.json").
    public var explicit: Set<String>

    public init(query: QueryOptions = QueryOptions(), commitMode: String = "async", explicit: Set<String> = []) {
        self.query = query
        self.commitMode = commitMode
        self.explicit = explicit
    }
}

public final class ClusterSettings: Sendable {
    public static let collection = "_settings"
    /// Stored settings at most (one per settable key; the bound keeps every read of the table small).
    public static let keysMax = 64

    static let schema: JSONValue = .object([
        "name": .string(collection), "primary_key": .string("key"),
        "fields": .object(["key": .object(["type": .string("text")]),
                           "value": .object(["type": .string("json"), "nullable": .bool(true)]),
                           "updated_at": .object(["type": .string("timestamp"), "nullable": .bool(false), "default": .string("now()")])]),
        "indexes": .array([]),
    ])

    let database: Database
    /// The node's aerodb.json `auth` object (may be absent) and its parse.
    let fileAuth: [String: JSONValue]
    let fileSettings: AuthSettings
    let logger: Logger
    /// The last merge, keyed by the stored values it was made from.
    private let cache = Mutex<(stored: [String: JSONValue], settings: AuthSettings)?>(nil)

    /// The node's file values of the NodeSettingsKeys.
    let fileNode: NodeFileSettings
    /// The cluster's JWT secret: the secrets in settings are sealed under keys derived from it (SettingsSecrets).
    let secret: [UInt8]

    public init(database: Database, fileAuth: JSONValue?, fileSettings: AuthSettings, logger: Logger,
                fileNode: NodeFileSettings = NodeFileSettings(), secret: [UInt8]) {
        self.database = database
        self.secret = secret
        self.fileNode = fileNode
        if case .object(let o)? = fileAuth { self.fileAuth = o } else { self.fileAuth = [:] }
        self.fileSettings = fileSettings
        self.logger = logger
    }

    /// The stored values, by key ("auth.mailer_autoconfirm"), as stored (secrets sealed).
    public func stored() throws -> [String: JSONValue] {
        let rows = try database.snapshot().rowsIfPresent(Query(collection: Self.collection, order: [Sort(field: "key")],
                                                                limit: Self.keysMax))
        var out: [String: JSONValue] = [:]
        for row in rows { if case .string(let key)? = row["key"] { out[key] = row["value"] ?? .null } }
        return out
    }

    /// One stored value on `snapshot` (nil: none stored), by key lookup (no scan).
    public static func storedValue(_ key: String, in snapshot: Snapshot) -> JSONValue? {
        guard let data = snapshot.state.collections[collection] else { return nil }
        return data.document(forKey: .string(key))?["value"]
    }

    /// The stored `replication.commit_mode` on `snapshot` (nil: none, or not a mode name).
    public static func commitMode(in snapshot: Snapshot) -> String? {
        guard case .string(let mode)? = storedValue(NodeSettingsKeys.commitMode, in: snapshot),
              NodeSettingsKeys.commitModes.contains(mode) else { return nil }
        return mode
    }

    /// The query limits in effect on `snapshot`: the file's with the stored ones over them. A
    /// stored value out of its range (it was checked when stored) keeps the file's.
    public func query(in snapshot: Snapshot) -> QueryOptions {
        var q = fileNode.query
        func int(_ key: String, _ range: ClosedRange<Int64>) -> Int? {
            guard let v = Self.storedValue(key, in: snapshot) else { return nil }
            return try? QuerySettingRanges.within(key, v, range)  // refused at set(); never stored
        }
        if let n = int(NodeSettingsKeys.limitDefault, QuerySettingRanges.limitDefaultRange) { q.limitDefault = n }
        if let n = int(NodeSettingsKeys.limitMax, QuerySettingRanges.limitMaxRange) { q.limitMax = n }
        if let n = int(NodeSettingsKeys.scanRowsMax, QuerySettingRanges.scanRowsMaxRange) { q.scanRowsMax = n }
        if case .bool(let b)? = Self.storedValue(NodeSettingsKeys.aggregatesEnabled, in: snapshot) { q.aggregatesEnabled = b }
        return q
    }

    /// Puts the query limits of the current snapshot into the kernel when they changed.
    @discardableResult
    public func applyQueryLimits() -> QueryOptions {
        let wanted = query(in: database.snapshot())
        if wanted != database.queryOptions {
            database.setQueryOptions(wanted)
            logger.info("query limits changed", metadata: ["limit_default": "\(wanted.limitDefault)", "limit_max": "\(wanted.limitMax)",
                                                           "scan_rows_max": "\(wanted.scanRowsMax)", "aggregates_enabled": "\(wanted.aggregatesEnabled)"])
        }
        return wanted
    }

    /// On every node: the query limits follow the stored values from every applied LSN on
    /// (a settings record arrives like any commit, locally or through replication).
    public func startApplying() -> Task<Void, Never> {
        applyQueryLimits()
        let signals = database.appliedSignals()
        return Task.detached { [self] in
            for await _ in signals {
                if Task.isCancelled { return }
                applyQueryLimits()
            }
        }
    }

    /// The effective `/auth/v1` settings: the file's, with the stored values laid over them.
    public func auth() -> AuthSettings {
        let current: [String: JSONValue]
        do { current = try stored() } catch {
            logger.error("cluster settings unreadable: using aerodb.json", metadata: ["error": "\(error)"])
            return fileSettings
        }
        if current.isEmpty { return fileSettings }
        if let hit = cache.withLock({ $0 }), hit.stored == current { return hit.settings }
        do {
            let (merged, unreadable) = try mergeOpened(current)
            for problem in unreadable {  // once per change of the stored values (the cache)
                logger.error("a secret in the cluster settings cannot be opened: its use fails until it is set again",
                             metadata: ["setting": "\(problem.path)", "error": "\(problem.message)"])
            }
            cache.withLock { $0 = (current, merged) }
            return merged
        } catch {
            logger.error("stored cluster settings do not parse: using aerodb.json", metadata: ["error": "\(error)"])
            return fileSettings
        }
    }

    /// The file's auth object with the stored values over it (the node's default external URL kept).
    func merge(_ stored: [String: JSONValue]) throws -> AuthSettings { try mergeOpened(stored).settings }

    /// `merge`, with the stored secrets opened (SettingsSecrets): a secret that does not open is
    /// marked on the parsed setting (its use fails naming it) and answered in `unreadable`.
    func mergeOpened(_ stored: [String: JSONValue]) throws -> (settings: AuthSettings, unreadable: [SettingsSecrets.Unreadable]) {
        var auth = fileAuth
        var unreadable: [SettingsSecrets.Unreadable] = []
        for (key, storedValue) in stored where key.hasPrefix("auth.") {
            let (value, problems) = SettingsSecrets.open(key, storedValue, secret: secret)
            unreadable += problems
            let name = String(key.dropFirst(5))
            if SettingsKeys.mergedObjects.contains(name), case .object(let over) = value, case .object(var base)? = auth[name] {
                for (part, v) in over { base[part] = v }
                auth[name] = .object(base)
            } else {
                auth[name] = value
            }
        }
        var merged = try AuthSettings.parse(.object(auth))
        if merged.externalURL == nil { merged.externalURL = fileSettings.externalURL }
        for problem in unreadable {
            if problem.path.hasPrefix("auth.smtp.") {
                merged.smtp?.passwordUnreadable = problem.message
            } else if problem.path.hasPrefix("auth.oauth_providers.") {
                let name = String(problem.path.dropFirst("auth.oauth_providers.".count).dropLast(".client_secret".count))
                merged.oauthProviders[name]?.clientSecretUnreadable = problem.message
            }
        }
        return (merged, unreadable)
    }

    /// Every settable key with its effective value and where it comes from.
    public func list() throws -> JSONValue {
        let current = try stored()
        let effective = Self.authJSON(auth())
        let snapshot = database.snapshot()
        let q = query(in: snapshot)
        let nodeEffective: [String: JSONValue] = [
            NodeSettingsKeys.commitMode: .string(Self.commitMode(in: snapshot) ?? fileNode.commitMode),
            NodeSettingsKeys.limitDefault: .int(Int64(q.limitDefault)), NodeSettingsKeys.limitMax: .int(Int64(q.limitMax)),
            NodeSettingsKeys.scanRowsMax: .int(Int64(q.scanRowsMax)), NodeSettingsKeys.aggregatesEnabled: .bool(q.aggregatesEnabled)]
        return .object(["settings": .array(SettingsKeys.auth.sorted().map { name in
            let key = "auth." + name
            let source = current[key] != nil ? "cluster" : (fileAuth[name] != nil ? "aerodb.json" : "default")
            return .object(["key": .string(key), "value": effective[name] ?? .null, "source": .string(source)])
        } + OpsClusterSettings.keys.sorted().map { key in  // operations settings (Ops/OpsSettings.swift)
            .object(["key": .string(key), "value": current[key] ?? .null, "source": .string(current[key] != nil ? "cluster" : "default")])
        } + NodeSettingsKeys.all.map { key in  // aerodb.json's node settings that are cluster settings
            let source = current[key] != nil ? "cluster" : (fileNode.explicit.contains(key) ? "aerodb.json" : "default")
            return .object(["key": .string(key), "value": nodeEffective[key] ?? .null, "source": .string(source)])
        })])
    }

    /// Validates and stores one value (on the primary: the route is an admin write, forwarded).
    public func set(_ key: String, _ value: JSONValue) async throws -> UInt64 {
        let name = try Self.settable(key)
        if OpsClusterSettings.keys.contains(key) { try OpsClusterSettings.validate(key, value) }
        if NodeSettingsKeys.all.contains(key) { try NodeSettingsKeys.validate(key, value) }
        try SettingsSecrets.checkSubmitted(key, value)  // an envelope is never taken from a client
        var current = try stored()
        current[key] = value
        try checkQueryLimits(current)
        do {
            _ = try merge(current)
        } catch let error as AeroError {
            throw AeroError(.requestInvalid, "\(key): \(error.message.replacingOccurrences(of: "aerodb.json: ", with: ""))")
        }
        _ = name
        try await SystemCollections.ensure([Self.schema], in: database)
        let sealed = try SettingsSecrets.seal(key, value, secret: secret)  // SS1: no secret in the clear in the commit
        let doc: Document = ["key": .string(key), "value": sealed, "updated_at": .string(Timestamp.format(SystemClock().nowMicros()))]
        return try await database.commit([.upsert(collection: Self.collection, document: doc)]).lsn
    }

    /// limit_default <= limit_max once the stored values are laid over the file's.
    func checkQueryLimits(_ stored: [String: JSONValue]) throws {
        var limitDefault = Int64(fileNode.query.limitDefault), limitMax = Int64(fileNode.query.limitMax)
        if case .int(let n)? = stored[NodeSettingsKeys.limitDefault] { limitDefault = n }
        if case .int(let n)? = stored[NodeSettingsKeys.limitMax] { limitMax = n }
        guard limitDefault <= limitMax else {
            throw AeroError(.requestInvalid, "\(NodeSettingsKeys.limitDefault) (\(limitDefault)) must not exceed \(NodeSettingsKeys.limitMax) (\(limitMax))")
        }
    }

    /// Removes a stored value: the file's (or the default) applies again.
    public func unset(_ key: String) async throws -> UInt64 {
        _ = try Self.settable(key)
        var remaining = try stored()
        remaining[key] = nil
        try checkQueryLimits(remaining)
        try await SystemCollections.ensure([Self.schema], in: database)
        return try await database.commit([.delete(collection: Self.collection, target: .key(.string(key)))]).lsn
    }

    static func settable(_ key: String) throws -> String {
        if OpsClusterSettings.keys.contains(key) || NodeSettingsKeys.all.contains(key) { return key }
        guard key.hasPrefix("auth."), SettingsKeys.auth.contains(String(key.dropFirst(5))) else {
            throw AeroError(.requestInvalid, "\(key) is not a cluster setting; settable: \(SettingsKeys.all.joined(separator: ", ")) (ports, directories, the WAL engine and memory_bytes_max stay in aerodb.json)")
        }
        return String(key.dropFirst(5))
    }

    /// The settable auth settings as JSON (the names of docs/AUTH.md).
    static func authJSON(_ s: AuthSettings) -> [String: JSONValue] {
        ["mailer_autoconfirm": .bool(s.mailerAutoconfirm), "anonymous_sign_ins": .bool(s.anonymousSignIns),
         "disable_signup": .bool(s.disableSignup), "site_url": .string(s.siteURL),
         "redirect_urls": .array(s.redirectURLs.map(JSONValue.string)), "jwt_expiry": .int(s.accessTokenSeconds),
         "refresh_token_reuse_interval": .int(s.refreshReuseIntervalSeconds),
         "password_min_length": .int(Int64(s.passwordMinLength)),
         "password_required_characters": .array(s.passwordRequiredCharacters.map(JSONValue.string)),
         "secure_password_change": .bool(s.securePasswordChange), "otp_length": .int(Int64(s.otpLength)),
         "otp_expiry": .int(s.otpExpirySeconds),
         "oauth_providers": OAuthSettings.redacted(s.oauthProviders), "manual_linking": .bool(s.manualLinking),
         "rate_limits": .object(["signup": budget(s.rateLimits.signup), "token": budget(s.rateLimits.token),
                                 "verify": budget(s.rateLimits.verify), "otp": budget(s.rateLimits.otp),
                                 "email_per_address": budget(s.rateLimits.emailPerAddress)]),
         "argon2": .object(["memory_kib": .int(Int64(s.passwordCost.memoryKiB)), "iterations": .int(Int64(s.passwordCost.iterations)),
                            "parallelism": .int(Int64(s.passwordCost.parallelism))]),
         "smtp": s.smtp.map(smtpJSON) ?? .null, "retention": retentionJSON(s.retention)]
    }

    static func retentionJSON(_ r: AuthRetentionSettings) -> JSONValue {
        var o: [String: JSONValue] = ["interval_seconds": .int(r.intervalSeconds), "rotated_refresh_token_seconds": .int(r.rotatedRefreshTokenSeconds),
                                      "audit_days": .int(r.auditDays), "audit_rows_max": .int(r.auditRowsMax),
                                      "outbox_messages_max": .int(r.outboxMessagesMax)]
        o["anonymous_user_days"] = r.anonymousUserDays.map { .int($0) } ?? .null
        return .object(o)
    }

    static func budget(_ b: AuthRateLimits.Budget) -> JSONValue {
        .object(["limit": .int(Int64(b.limit)), "window_seconds": .int(b.windowSeconds)])
    }

    /// `auth.smtp` as shown: the password replaced by `OAuthSettings.redactedSecret`.
    static func smtpJSON(_ s: SMTPSettings) -> JSONValue {
        var o: [String: JSONValue] = ["host": .string(s.host), "port": .int(Int64(s.port)), "sender": .string(s.sender),
                                      "timeout_seconds": .int(Int64(s.timeoutSeconds))]
        if let user = s.user { o["user"] = .string(user) }
        if s.password != nil { o["password"] = .string(s.passwordUnreadable == nil ? OAuthSettings.redactedSecret : OAuthSettings.unreadableSecret) }
        return .object(o)
    }

    /// A value as echoed by PUT: secrets replaced (never the stored value itself).
    static func shown(_ key: String, _ value: JSONValue) -> JSONValue {
        switch key {
        case "auth.oauth_providers": return OAuthSettings.redacted(value)
        case "auth.smtp":
            guard case .object(var o) = value else { return value }
            if o["password"] != nil { o["password"] = .string(OAuthSettings.redactedSecret) }
            return .object(o)
        default: return value
        }
    }
}

/// `/admin/v1/settings` (service key): GET lists every settable key with its effective value
/// and source; GET/PUT/DELETE `/admin/v1/settings/<key>` reads, sets (`{"value": <JSON>}`) or
/// removes one. Writes go to the primary (forwarded) and are audited.
public enum ClusterSettingsAPI {
    public static func register(on router: Router<AeroRequestContext>, settings: ClusterSettings, keys: KeyChecker) {
        let group = router.group("admin/v1/settings")
        group.get { request, _ in
            try await AdminAPI.guarded(request, keys) { HTTPJSON.response(try settings.list(), lsn: settings.database.snapshot().lsn) }
        }
        group.get(":key") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let key = try context.parameters.require("key")
                let name = try ClusterSettings.settable(key)
                let all = try settings.list()["settings"]?.arrayValue ?? []
                guard let row = all.first(where: { $0["key"] == .string(key) }) else {
                    throw AeroError(.notFound, "no setting \(key) (\(name))")
                }
                return HTTPJSON.response(row, lsn: settings.database.snapshot().lsn)
            }
        }
        group.put(":key") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let key = try context.parameters.require("key")
                guard case .object(let body) = try await HTTPJSON.body(request), let value = body["value"], body.count == 1 else {
                    throw AeroError(.requestInvalid, "the body is {\"value\": <JSON>}")
                }
                let lsn = try await settings.set(key, value)
                let shown = ClusterSettings.shown(key, value)  // no client secret or SMTP password in the echo
                return HTTPJSON.response(.object(["key": .string(key), "value": shown, "lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        group.delete(":key") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let key = try context.parameters.require("key")
                let lsn = try await settings.unset(key)
                return HTTPJSON.response(.object(["key": .string(key), "lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
    }
}
