// Retention of the auth tables a client can grow (docs/AUTH.md "Retention", docs/LIMITS.md).
// Without it, failed sign-ins (audit rows), refreshes (one token row each), mail (the dev
// outbox) and anonymous sign-ins would fill `memory_bytes_max` until every write is refused.
//
// Rules (each a named setting of `auth.retention`):
// - rotated refresh tokens: a revoked row whose `rotated_at` is older than
//   `rotated_refresh_token_seconds` (never less than `refresh_token_reuse_interval`, so a
//   sibling can still be issued) is deleted. Presented later, such a token answers
//   `refresh_token_not_found` instead of revoking its session (reuse detection lasts that long).
//   Live tokens go with their session (sign-out, reuse, password change, user deletion).
// - audit rows: older than `audit_days`, and beyond the newest `audit_rows_max`.
// - the dev outbox: a ring of the newest `outbox_messages_max` messages.
// - expired one-time tokens (codes, links, PKCE flow states): deleted once past `expires_at`
//   (they can never verify again; a PKCE flow row is written per link opened).
// - anonymous users: off unless `anonymous_user_days` is set (as Supabase, which leaves it to
//   the operator); then an anonymous user with no activity (sign-in, update, refresh of any of
//   its sessions) for that many days is deleted with its sessions and tokens.
//
// How it runs: on the primary only (`isPrimary` is asked before every run; a replica receives
// the deletions through replication like any write), every `interval_seconds`. Decide, then
// act: each rule reads its candidates on a snapshot (outside the writer lock, through indexes,
// at most `batchRowsMax` rows) and deletes them in one ordinary transaction by key (`in` on
// the primary key: a row another request removed meanwhile is simply not there). A run repeats
// passes until nothing is left or `passesPerRunMax`, so the writer is never held for more than
// one bounded batch and a backlog drains over a few runs.

import Kernel
import Logging

public struct AuthRetentionSettings: Sendable {
    public var intervalSeconds: Int64 = 60
    public var rotatedRefreshTokenSeconds: Int64 = 86_400
    public var auditDays: Int64 = 30
    public var auditRowsMax: Int64 = 1_000_000
    public var outboxMessagesMax: Int64 = 1_000
    /// nil: anonymous users are kept (the default).
    public var anonymousUserDays: Int64?

    /// How often the primary runs the rules: at least every second (tests), at most hourly.
    public static let intervalSecondsRange: ClosedRange<Int64> = 1...3_600
    /// A minute to a year: below, a slow client's second refresh would already be unknown.
    public static let rotatedRefreshTokenSecondsRange: ClosedRange<Int64> = 60...365 * 86_400
    /// A day to ten years of audit history.
    public static let auditDaysRange: ClosedRange<Int64> = 1...3_650
    /// Audit rows kept at most: at least a useful history, at most what memory comfortably holds
    /// (an audit row is ~300 bytes: 10^8 rows is ~30 GB).
    public static let auditRowsMaxRange: ClosedRange<Int64> = 1_000...100_000_000
    /// Dev-outbox ring size: at least a test's worth of mail, at most 100,000 messages.
    public static let outboxMessagesMaxRange: ClosedRange<Int64> = 10...100_000
    public static let anonymousUserDaysRange: ClosedRange<Int64> = 1...3_650

    public init() {}

    static func parse(_ o: [String: JSONValue]) throws -> AuthRetentionSettings {
        var r = AuthRetentionSettings()
        for (key, value) in o {
            guard case .int(let n) = value else { throw AuthSettings.invalid("auth.retention.\(key) must be an integer") }
            func within(_ range: ClosedRange<Int64>) throws -> Int64 { try AuthSettings.within(n, range, "retention." + key) }
            switch key {
            case "interval_seconds": r.intervalSeconds = try within(intervalSecondsRange)
            case "rotated_refresh_token_seconds": r.rotatedRefreshTokenSeconds = try within(rotatedRefreshTokenSecondsRange)
            case "audit_days": r.auditDays = try within(auditDaysRange)
            case "audit_rows_max": r.auditRowsMax = try within(auditRowsMaxRange)
            case "outbox_messages_max": r.outboxMessagesMax = try within(outboxMessagesMaxRange)
            case "anonymous_user_days": r.anonymousUserDays = try within(anonymousUserDaysRange)
            default:
                throw AuthSettings.invalid("unknown auth.retention setting \"\(key)\" (interval_seconds, rotated_refresh_token_seconds, "
                                           + "audit_days, audit_rows_max, outbox_messages_max, anonymous_user_days)")
            }
        }
        return r
    }
}

public final class AuthRetention: Sendable {
    /// Rows one rule deletes in one transaction: bounds the time the writer spends on a batch.
    static let batchRowsMax = 500
    /// Anonymous users one pass deletes: each takes its identities, sessions and tokens along.
    static let anonymousUsersPerPassMax = 100
    /// How often the running task re-reads `interval_seconds` (a changed cluster setting).
    static let settingsCheckSeconds: Int64 = 1
    /// Passes in one run (at most `batchRowsMax` rows per rule each): bounds a run's work.
    static let passesPerRunMax = 20

    /// Rows deleted, per rule.
    struct Report: Equatable, Sendable {
        var refreshTokens = 0
        var auditRows = 0
        var outboxMessages = 0
        var anonymousUsers = 0
        var expiredCodes = 0
        var total: Int { refreshTokens + auditRows + outboxMessages + anonymousUsers + expiredCodes }
    }

    let database: Database
    let settings: AuthRetentionSettings
    let reuseIntervalSeconds: Int64
    let clock: any KernelClock
    let isPrimary: @Sendable () -> Bool
    let logger: Logger

    init(database: Database, settings: AuthSettings, clock: any KernelClock, isPrimary: @escaping @Sendable () -> Bool,
         logger: Logger = Logger(label: "aerodb.auth-retention")) {
        self.database = database
        self.settings = settings.retention
        reuseIntervalSeconds = settings.refreshReuseIntervalSeconds
        self.clock = clock
        self.isPrimary = isPrimary
        self.logger = logger
    }

    /// Runs the rules every `interval_seconds` until the task is cancelled (the node's hook).
    /// `settings` is asked before every wait and run: the cluster-wide `auth.retention`
    /// (Settings/ClusterSettings.swift) takes effect at the next run, without a restart.
    public static func start(database: Database, settings: @escaping @Sendable () -> AuthSettings, isPrimary: @escaping @Sendable () -> Bool,
                             logger: Logger) -> Task<Void, Never> {
        Task.detached {
            var waited: Int64 = 0
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: .seconds(settingsCheckSeconds))
                } catch {
                    return  // cancelled: the node is stopping
                }
                waited += settingsCheckSeconds
                guard waited >= settings().retention.intervalSeconds else { continue }  // a shorter interval applies at once
                waited = 0
                let retention = AuthRetention(database: database, settings: settings(), clock: SystemClock(), isPrimary: isPrimary, logger: logger)
                _ = await retention.run()
            }
        }
    }

    /// One run: nothing on a replica (nil); on the primary, passes until no rule has work left.
    func run() async -> Report? {
        guard isPrimary() else { return nil }
        do {
            try await SystemCollections.upgradeExisting(AuthCollections.all, in: database)  // the indexes the rules read through
        } catch {
            logger.error("auth retention: system collections not upgraded", metadata: ["error": "\(error)"])
        }
        var report = Report()
        for _ in 0..<Self.passesPerRunMax {
            guard isPrimary(), !Task.isCancelled else { break }
            let pass = await self.pass()
            report.refreshTokens += pass.refreshTokens
            report.auditRows += pass.auditRows
            report.outboxMessages += pass.outboxMessages
            report.anonymousUsers += pass.anonymousUsers
            report.expiredCodes += pass.expiredCodes
            guard pass.total > 0 else { break }
            await Task.yield()
        }
        if report.total > 0 {
            logger.info("auth retention run", metadata: [
                "refresh_tokens": "\(report.refreshTokens)", "audit_rows": "\(report.auditRows)",
                "outbox_messages": "\(report.outboxMessages)", "anonymous_users": "\(report.anonymousUsers)",
                "expired_codes": "\(report.expiredCodes)"])
        }
        return report
    }

    /// One batch of every rule, each its own transaction; a failed rule is logged, the others run.
    func pass() async -> Report {
        let now = clock.nowMicros()
        var report = Report()
        report.refreshTokens = await apply("rotated refresh tokens", AuthCollections.refreshTokens) { snapshot in
            let keep = AuthInput.multiply(max(self.settings.rotatedRefreshTokenSeconds, self.reuseIntervalSeconds), 1_000_000)
            return try self.keys(snapshot, Self.olderThan(AuthCollections.refreshTokens, "rotated_at", Self.time(now, minus: keep)))
        }
        report.auditRows = await apply("audit rows", AuthCollections.audit) { snapshot in
            let age = AuthInput.multiply(self.settings.auditDays, 86_400 * 1_000_000)
            var keys = try self.keys(snapshot, Self.olderThan(AuthCollections.audit, "at", Self.time(now, minus: age)))
            keys += try self.oldestBeyond(snapshot, AuthCollections.audit, time: "at", keep: self.settings.auditRowsMax, not: keys)
            return keys
        }
        report.outboxMessages = await apply("outbox messages", AuthCollections.outbox) { snapshot in
            try self.oldestBeyond(snapshot, AuthCollections.outbox, time: "created_at", keep: self.settings.outboxMessagesMax, not: [])
        }
        report.expiredCodes = await apply("expired one-time tokens", AuthCollections.oneTimeTokens) { snapshot in
            try self.keys(snapshot, Self.olderThan(AuthCollections.oneTimeTokens, "expires_at", Self.time(now, minus: 0)))
        }
        if let days = settings.anonymousUserDays {
            report.anonymousUsers = await apply("anonymous users", AuthCollections.users) { snapshot in
                try self.idleAnonymousUsers(snapshot, cutoff: Self.time(now, minus: AuthInput.multiply(days, 86_400 * 1_000_000)))
            }
        }
        return report
    }

    /// Decides on a snapshot, then deletes in one transaction; the number of rows deleted.
    private func apply(_ rule: String, _ collection: String, _ decide: (Snapshot) throws -> [JSONValue]) async -> Int {
        do {
            let snapshot = database.snapshot()
            guard snapshot.state.collections[collection] != nil else { return 0 }
            let keys = try decide(snapshot)
            guard !keys.isEmpty else { return 0 }
            let key = snapshot.state.collections[collection]!.schema.primaryKey
            let result = try await database.commit([.delete(collection: collection, target: .matching(.in(field: key, values: keys)))])
            return result.changes.filter { $0.collection == collection && $0.after == nil }.count
        } catch {
            logger.error("auth retention: rule failed; it runs again next time", metadata: ["rule": "\(rule)", "error": "\(error)"])
            return 0
        }
    }

    private func keys(_ snapshot: Snapshot, _ query: Query) throws -> [JSONValue] {
        guard let key = snapshot.state.collections[query.collection]?.schema.primaryKey else { return [] }
        return try snapshot.rowsIfPresent(query).compactMap { $0[key] }
    }

    /// The oldest rows past the newest `keep` (by `time`), at most a batch, excluding `not`.
    private func oldestBeyond(_ snapshot: Snapshot, _ collection: String, time: String, keep: Int64, not: [JSONValue]) throws -> [JSONValue] {
        guard let count = snapshot.state.collections[collection]?.count else { return [] }
        let excess = AuthInput.subtract(Int64(count - not.count), keep)
        guard excess > 0 else { return [] }
        let skip = Set(not)
        let rows = try keys(snapshot, Self.oldest(collection, time, limit: min(Self.batchRowsMax, Int(excess) + not.count)))
        return Array(rows.filter { !skip.contains($0) }.prefix(Int(min(excess, Int64(Self.batchRowsMax)))))
    }

    /// Anonymous users untouched since `cutoff` whose sessions were not refreshed since either.
    private func idleAnonymousUsers(_ snapshot: Snapshot, cutoff: JSONValue) throws -> [JSONValue] {
        let candidates = try snapshot.rowsIfPresent(Self.anonymousCandidates(cutoff))
        return try candidates.compactMap { user -> JSONValue? in
            guard let id = user["id"] else { return nil }
            let active = try snapshot.rowsIfPresent(Query(
                collection: AuthCollections.sessions,
                filter: .and([.compare(field: "user_id", op: .eq, value: id), .compare(field: "updated_at", op: .gte, value: cutoff)]),
                limit: 1))
            return active.isEmpty ? id : nil
        }
    }

    // The candidate queries: each is read through an index in its own order, so a batch examines
    // only the rows it returns (Q1), however large the table (AuthRetentionTests checks the plans).

    /// The oldest rows whose `field` is before `cutoff` (nulls never match), a batch.
    static func olderThan(_ collection: String, _ field: String, _ cutoff: JSONValue) -> Query {
        Query(collection: collection, filter: .compare(field: field, op: .lt, value: cutoff), order: [Sort(field: field)], limit: batchRowsMax)
    }

    /// The oldest `limit` rows by `field`.
    static func oldest(_ collection: String, _ field: String, limit: Int) -> Query {
        Query(collection: collection, order: [Sort(field: field)], limit: limit)
    }

    static func anonymousCandidates(_ cutoff: JSONValue) -> Query {
        Query(collection: AuthCollections.users,
              filter: .and([.compare(field: "is_anonymous", op: .eq, value: .bool(true)), .compare(field: "updated_at", op: .lt, value: cutoff)]),
              order: [Sort(field: "is_anonymous"), Sort(field: "updated_at")], limit: anonymousUsersPerPassMax)
    }

    static func time(_ now: Int64, minus micros: Int64) -> JSONValue {
        .string(Timestamp.format(max(AuthInput.subtract(now, micros), 0)))
    }
}
