import Foundation
import Kernel
import Logging
import Testing
@testable import BaaS

/// Cluster settings over the file's (issue 13 part 2, invariant CS1): object settings laid over
/// the file's one level deep, the file's ranges, redaction of the SMTP password, the key list.
@Suite struct ClusterSettingsTests {
    static let file: JSONValue = .object([
        "rate_limits": .object(["signup": .object(["limit": .int(7), "window_seconds": .int(60)]),
                                "token": .object(["limit": .int(9), "window_seconds": .int(60)])]),
        "argon2": .object(["memory_kib": .int(8192), "iterations": .int(3)]),
    ])

    static func withSettings(_ body: (ClusterSettings) async throws -> Void) async throws {
        try await RealtimeTests.withDatabase { db in
            let settings = ClusterSettings(database: db, fileAuth: file, fileSettings: try AuthSettings.parse(file),
                                           logger: Logger(label: "test"), secret: SettingsSecretsTests.secret)
            try await body(settings)
        }
    }

    @Test func objectSettingsAreLaidOverTheFilesPartByPart() async throws {
        try await Self.withSettings { settings in
            _ = try await settings.set("auth.rate_limits", .object(["signup": .object(["limit": .int(2), "window_seconds": .int(30)])]))
            _ = try await settings.set("auth.argon2", .object(["parallelism": .int(2)]))
            let auth = settings.auth()
            #expect(auth.rateLimits.signup.limit == 2 && auth.rateLimits.signup.windowSeconds == 30)
            #expect(auth.rateLimits.token.limit == 9)  // the file's, not the default 150
            #expect(auth.passwordCost == PasswordCost(memoryKiB: 8192, iterations: 3, parallelism: 2))
            _ = try await settings.unset("auth.rate_limits")
            #expect(settings.auth().rateLimits.signup.limit == 7)
        }
    }

    @Test func outOfRangeValuesAreRefusedAndNotStored() async throws {
        try await Self.withSettings { settings in
            for (key, value): (String, JSONValue) in [
                ("auth.rate_limits", .object(["signup": .object(["limit": .int(0), "window_seconds": .int(30)])])),
                ("auth.argon2", .object(["memory_kib": .int(Int64(PasswordCost.memoryKiBRange.lowerBound) - 1)])),
                ("auth.smtp", .object(["host": .string("mail.example.com"), "sender": .string("a@example.com"),
                                       "user": .string("u"), "password": .string("p")])),  // credentials over plain TCP off loopback
            ] {
                await #expect(throws: AeroError.self) { _ = try await settings.set(key, value) }
            }
            let stored = try settings.stored()
            #expect(stored.isEmpty)
        }
    }

    @Test func theSMTPPasswordIsNeverShownBack() async throws {
        try await Self.withSettings { settings in
            let smtp: JSONValue = .object(["host": .string("127.0.0.1"), "sender": .string("a@example.com"),
                                           "user": .string("u"), "password": .string("smtp-secret-42")])
            _ = try await settings.set("auth.smtp", smtp)
            #expect(settings.auth().smtp?.password == "smtp-secret-42")  // used for delivery
            let listed = JSON.encodeString(try settings.list())
            #expect(!listed.contains("smtp-secret-42"))
            #expect(!JSON.encodeString(ClusterSettings.shown("auth.smtp", smtp)).contains("smtp-secret-42"))
        }
    }

    /// Node settings that are cluster settings (issue 13): aerodb.json's value until one is
    /// stored, the kernel's query limits follow, the named ranges and limit_default <= limit_max.
    @Test func nodeSettingsOverrideTheFilesAndReachTheKernel() async throws {
        try await RealtimeTests.withDatabase { db in
            var query = QueryOptions()
            query.scanRowsMax = 5_000
            let settings = ClusterSettings(database: db, fileAuth: nil, fileSettings: AuthSettings(), logger: Logger(label: "test"),
                                           fileNode: NodeFileSettings(query: query, commitMode: "sync", explicit: [NodeSettingsKeys.scanRowsMax]),
                                           secret: SettingsSecretsTests.secret)
            func row(_ key: String) throws -> JSONValue? {
                try settings.list()["settings"]?.arrayValue?.first { $0["key"] == .string(key) }
            }
            #expect(try row("query.scan_rows_max") == .object(["key": .string("query.scan_rows_max"), "value": .int(5_000), "source": .string("aerodb.json")]))
            #expect(try row("replication.commit_mode")?["value"] == .string("sync"))
            _ = try await settings.set("query.scan_rows_max", .int(2_000))
            _ = try await settings.set("replication.commit_mode", .string("all"))
            #expect(settings.applyQueryLimits().scanRowsMax == 2_000 && db.queryOptions.scanRowsMax == 2_000)
            #expect(ClusterSettings.commitMode(in: db.snapshot()) == "all")
            #expect(try row("query.scan_rows_max")?["source"] == .string("cluster"))
            for (key, value): (String, JSONValue) in [("query.scan_rows_max", .int(999)), ("query.limit_max", .int(9_999)),
                                                      ("query.limit_default", .int(10_001)), ("replication.commit_mode", .string("fast")),
                                                      ("query.aggregates_enabled", .string("yes"))] {
                await #expect(throws: AeroError.self, "\(key)") { _ = try await settings.set(key, value) }
            }
            _ = try await settings.unset("query.scan_rows_max")
            #expect(settings.applyQueryLimits().scanRowsMax == 5_000)  // the file's again
        }
    }

    @Test func anUnknownKeyIsRefusedWithEverySettableKey() throws {
        do {
            _ = try ClusterSettings.settable("wal_engine")
            Issue.record("wal_engine is node-local (aerodb.json)")
        } catch let error as AeroError {
            #expect(error.code == .requestInvalid)
            for key in SettingsKeys.all { #expect(error.message.contains(key)) }
        }
        #expect(SettingsKeys.all.contains("auth.rate_limits") && SettingsKeys.all.contains("backup.schedule"))
    }
}
