import Foundation
import Testing
import Kernel
@testable import BaaS

@Suite struct AuthUnitTests {
    @Test func argon2idHashesVerifyAndCarryTheirCost() throws {
        let cost = PasswordCost(memoryKiB: 8_192, iterations: 1, parallelism: 1)
        let hash = try PasswordHasher.hash("correct horse", cost: cost)
        #expect(hash.hasPrefix("$argon2id$v=19$m=8192,t=1,p=1$"))
        #expect(PasswordHasher.verify("correct horse", encoded: hash))
        #expect(!PasswordHasher.verify("correct horsE", encoded: hash))
        #expect(!PasswordHasher.verify("correct horse", encoded: "not a hash"))
        #expect(try PasswordHasher.hash("correct horse", cost: cost) != hash)  // a new salt each time
    }

    @Test func settingsParseAndRefuseBadValues() throws {
        let s = try AuthSettings.parse(try JSON.parse(Array(#"{"mailer_autoconfirm":true,"jwt_expiry":600,"redirect_urls":["https://app.test/*"],"argon2":{"memory_kib":8192}}"#.utf8)))
        #expect(s.mailerAutoconfirm && s.accessTokenSeconds == 600 && s.passwordCost.memoryKiB == 8_192 && s.passwordCost.iterations == 2)
        #expect(s.allowedRedirect("https://app.test/cb?x=1") == "https://app.test/cb?x=1")
        #expect(s.allowedRedirect("https://evil.test/") == s.siteURL)
        #expect(s.allowedRedirect(nil) == s.siteURL)
        #expect(s.retention.anonymousUserDays == nil && s.retention.auditDays == 30 && s.retention.outboxMessagesMax == 1_000)  // defaults
        let r = try AuthSettings.parse(try JSON.parse(Array(#"{"retention":{"interval_seconds":5,"anonymous_user_days":7,"audit_rows_max":5000}}"#.utf8))).retention
        #expect(r.intervalSeconds == 5 && r.anonymousUserDays == 7 && r.auditRowsMax == 5_000)
        for bad in [#"{"jwt_expiry":5}"#, #"{"argon2":{"memory_kib":-1}}"#, #"{"argon2":{"memory_kib":99999999999}}"#,
                    #"{"argon2":{"pepper":1}}"#, #"{"unknown":1}"#, #"{"mailer_autoconfirm":"yes"}"#, #"{"external_url":"ftp://x"}"#,
                    #"{"rate_limits":{"token":{"limit":0,"window_seconds":1}}}"#, #"{"smtp":{"host":"mail.example.com","sender":"a@b.c","user":"u","password":"p"}}"#,
                    #"{"otp_length":4}"#, "[]", #"{"retention":{"audit_days":0}}"#, #"{"retention":{"pepper":1}}"#,
                    #"{"retention":{"interval_seconds":"1"}}"#, #"{"retention":{"outbox_messages_max":9}}"#,
                    #"{"retention":{"anonymous_user_days":3651}}"#, #"{"rate_limits":{"token":{"limit":1000000001,"window_seconds":1}}}"#,
                    #"{"rate_limits":{"token":{"limit":1,"window_seconds":604801}}}"#] {
            #expect(throws: AeroError.self, "\(bad)") { try AuthSettings.parse(try JSON.parse(Array(bad.utf8))) }
        }
    }

    @Test func rateLimiterCountsPerKeyAndWindow() {
        let limiter = RateLimiter()
        let budget = AuthRateLimits.Budget(limit: 2, windowSeconds: 10)
        #expect(limiter.allow("t", key: "a", budget: budget, nowSeconds: 100))
        #expect(limiter.allow("t", key: "a", budget: budget, nowSeconds: 101))
        #expect(!limiter.allow("t", key: "a", budget: budget, nowSeconds: 102))
        #expect(limiter.allow("t", key: "b", budget: budget, nowSeconds: 102))  // another key
        #expect(limiter.allow("u", key: "a", budget: budget, nowSeconds: 102))  // another budget
        #expect(limiter.allow("t", key: "a", budget: budget, nowSeconds: 110))  // a new window
    }

    @Test func clientAddressesVerifyOnlyWithTheClusterSecret() {
        let secret = Array(repeating: UInt8(7), count: 32)
        let signed = ClientAddress.sign("203.0.113.9", secret: secret)
        #expect(ClientAddress.verify(signed, secret: secret) == "203.0.113.9")
        #expect(ClientAddress.verify(signed, secret: Array(repeating: 8, count: 32)) == nil)
        #expect(ClientAddress.verify("203.0.113.9", secret: secret) == nil)
        #expect(ClientAddress.verify(signed.replacingOccurrences(of: "203.0.113.9", with: "10.0.0.1"), secret: secret) == nil)
    }

    @Test func tokensNeedAKnownRoleAnExpiryAndTheRightSecret() throws {
        let secret = Array(repeating: UInt8(1), count: 32)
        let keys = KeyChecker(secret: secret, clock: SystemClock())
        let now = SystemClock().nowMicros() / 1_000_000
        #expect(try keys.caller(token: APIKeys.make(role: "anon", secret: secret, nowSeconds: now)).role == "anon")
        let noExp = JWT.sign(.object(["role": .string("service_role")]), secret: secret)
        let expired = JWT.sign(.object(["role": .string("anon"), "exp": .int(now - 1)]), secret: secret)
        let unknownRole = JWT.sign(.object(["role": .string("postgres"), "exp": .int(now + 60)]), secret: secret)
        let forged = JWT.sign(.object(["role": .string("service_role"), "exp": .int(now + 60)]), secret: Array(repeating: 2, count: 32))
        let userWithoutSession = JWT.sign(.object(["role": .string("authenticated"), "sub": .string("x"), "exp": .int(now + 60)]), secret: secret)
        let none = JWT.base64URL(Array(#"{"alg":"none"}"#.utf8)) + "." + JWT.base64URL(Array(#"{"role":"service_role"}"#.utf8)) + "."
        for token in [noExp, expired, unknownRole, forged, userWithoutSession, none, "garbage", ""] {
            #expect(throws: AeroError.self, "\(token)") { try keys.caller(token: token) }
        }
    }

    @Test func systemCollectionsFromAnOlderVersionGainNewFields() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-auth-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        guard case .object(var old) = AuthCollections.all.first(where: { $0["name"] == .string(AuthCollections.oneTimeTokens) }),
              case .object(var fields)? = old["fields"] else { Issue.record("no schema"); return }
        fields["code_challenge"] = nil
        fields["method"] = nil
        old["fields"] = .object(fields)
        for schema in AuthCollections.all.prefix(while: { $0["name"] != .string(AuthCollections.oneTimeTokens) }) {
            _ = try await db.createCollection(schema)
        }
        _ = try await db.createCollection(.object(old))
        try await SystemCollections.ensure(AuthCollections.all, in: db)
        let schema = try #require(db.snapshot().state.collections[AuthCollections.oneTimeTokens]?.schema)
        #expect(schema.fields["code_challenge"]?.nullable == true && schema.fields["method"] != nil)
        #expect(db.snapshot().state.collections[AuthCollections.audit] != nil)  // later ones are created
        try await SystemCollections.ensure(AuthCollections.all, in: db)  // idempotent
        await db.close()
    }

    @Test func goTrueDurationsParse() {
        #expect(AuthService.durationSeconds("24h") == 86_400)
        #expect(AuthService.durationSeconds("1h30m") == 5_400)
        #expect(AuthService.durationSeconds("3600s") == 3_600)
        #expect(AuthService.durationSeconds("876000h") == AuthService.banDurationSecondsRange.upperBound)  // a century
        // Out of range, never an overflow: the parts saturate and the total is checked.
        for bad in ["", "h", "10", "5d", "-1h", "1h-", "9999999999h", "876000h1s", "999999999h999999999h999999999h",
                    "9223372036854775807h9223372036854775807h", "99999999999999999999999s", "0s"] {
            #expect(AuthService.durationSeconds(bad) == nil, "\(bad)")
        }
    }

    @Test func clientIntegersSaturate() throws {
        #expect(AuthInput.multiply(.max, 2) == .max && AuthInput.multiply(.max, -2) == .min && AuthInput.multiply(3, 4) == 12)
        #expect(AuthInput.add(.max, 1) == .max && AuthInput.add(.min, -1) == .min)
        #expect(AuthInput.subtract(0, .min) == .max && AuthInput.subtract(.min, 1) == .min)
        #expect(AuthInput.micros(afterSeconds: .max, now: 5) == .max)
        #expect(throws: AuthFailure.self) { try AuthInput.integer("9223372036854775808", "page", in: 1...10) }
        #expect(throws: AuthFailure.self) { try AuthInput.integer("-1", "page", in: 1...10) }
        #expect(throws: AuthFailure.self) { try AuthInput.integer("+3", "page", in: 1...10) }
        #expect(try AuthInput.integer("", "page", in: 1...10) == nil)  // `page=`: absent, as GoTrue reads it
        #expect(throws: AuthFailure.self) { try AuthInput.integer("1 ", "page", in: 1...10) }
        #expect(throws: AuthFailure.self) { try AuthInput.integer("11", "page", in: 1...10) }
        #expect(try AuthInput.integer("10", "page", in: 1...10) == 10)
        #expect(try AuthInput.integer(nil, "page", in: 1...10) == nil)
    }

    /// Issue 12 item 15: one spelling per byte string. Every non-canonical variant of a valid
    /// token's signature (padding, `+`/`/`, other unused bits, a dangling character) is refused.
    @Test func base64URLIsReadInItsCanonicalFormOnly() throws {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = JWT.base64URL(bytes)
            #expect(JWT.decodeBase64URL(Substring(text)) == bytes)
            if n % 3 != 0 { #expect(JWT.decodeBase64URL(Substring(text + "=")) == nil) }
        }
        #expect(JWT.decodeBase64URL("") == [])
        for bad in ["QQ==", "QR", "QUI=", "QUJ", "A", "AAAAA", "a+b/", "ab c", "ab\n", "YQ=", "-_-=", "Zm9v\u{0}"] {
            #expect(JWT.decodeBase64URL(Substring(bad)) == nil, "\(bad)")
        }
        #expect(JWT.decodeBase64URL("QQ") == [0x41] && JWT.decodeBase64URL("QUI") == [0x41, 0x42] && JWT.decodeBase64URL("-_8") == [0xfb, 0xff])

        let secret = Array(repeating: UInt8(3), count: 32)
        let now = SystemClock().nowMicros() / 1_000_000
        let token = APIKeys.make(role: "anon", secret: secret, nowSeconds: now)
        #expect(throws: Never.self) { try JWT.verify(token, secret: secret, nowSeconds: now) }
        let parts = token.split(separator: ".").map(String.init)
        let signature = parts[2]  // 32 bytes: 43 characters, the last carrying 2 unused bits
        let last = signature.last!
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        let index = alphabet.firstIndex(of: last)!
        let sameBytes = String(signature.dropLast()) + String(alphabet[index | 1])  // a non-zero unused bit
        let variants = [signature + "=", sameBytes,
                        signature.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")].filter { $0 != signature }
        #expect(!variants.isEmpty)
        for variant in variants {
            #expect(throws: AeroError.self, "\(variant)") { try JWT.verify(parts[0] + "." + parts[1] + "." + variant, secret: secret, nowSeconds: now) }
        }
        #expect(throws: AeroError.self) { try JWT.verify(parts[0] + "=." + parts[1] + "." + signature, secret: secret, nowSeconds: now) }
    }

    @Test func issuedTokenFormsOnly() {
        let token = SecureRandom.token(AuthStore.refreshTokenLength)
        #expect(AuthStore.isRefreshToken(token))
        for bad in [token + "=", String(token.dropLast()), " " + token.dropFirst(), String(token.dropLast()) + "+", ""] {
            #expect(!AuthStore.isRefreshToken(bad), "\(bad)")
        }
        let hash = AuthStore.tokenHash(email: "a@b.c", code: "123456")
        #expect(AuthStore.isTokenHash(hash) && !AuthStore.isTokenHash(hash.uppercased()) && !AuthStore.isTokenHash(hash + "0"))
        #expect(AuthStore.isCode("123456") && AuthStore.isCode("0123456789"))
        for bad in [" 123456", "123456 ", "12345", "12345a", "１２３４５６", "12345678901"] { #expect(!AuthStore.isCode(bad), "\(bad)") }
        #expect(PKCEChallenge.isWellFormed(String(repeating: "a-._~", count: 9)))
        #expect(!PKCEChallenge.isWellFormed(String(repeating: "a", count: 42)) && !PKCEChallenge.isWellFormed(String(repeating: "a+", count: 30)))
    }

    /// Issue 12 item 6: every MAC has its own domain. A JWT (here the public anon key) is an
    /// HMAC of its own `header.payload` under the raw secret: as an address signature it must
    /// not verify; nor may any derived key equal the raw secret's MACs.
    @Test func aJWTIsNoSignatureForAClientAddress() {
        let secret = Array(repeating: UInt8(9), count: 32)
        let anon = APIKeys.make(role: "anon", secret: secret, nowSeconds: 1_700_000_000)
        let parts = anon.split(separator: ".")
        let forged = parts[0] + "." + parts[1] + ";" + parts[2]
        #expect(ClientAddress.verify(String(forged), secret: secret) == nil)
        // A correctly signed value that is not an IP address is refused too.
        #expect(ClientAddress.verify(ClientAddress.sign("not-an-address", secret: secret), secret: secret) == nil)
        #expect(ClientAddress.verify(ClientAddress.sign("2001:db8::1", secret: secret), secret: secret) == "2001:db8::1")
        // Domains differ from each other and from the raw secret.
        let keys = SecretDomain.allCases.map { $0.keyBytes(secret) }
        #expect(Set(keys).count == keys.count && !keys.contains(secret))
        #expect(SecretDomain.allCases.allSatisfy { $0.rawValue.contains(" ") && !$0.rawValue.hasPrefix("aerodb-replication:") })
    }
}

/// A clock the test sets.
final class TestClock: KernelClock, @unchecked Sendable {
    private let lock = NSLock()
    private var micros: Int64
    init(_ micros: Int64) { self.micros = micros }
    func nowMicros() -> TimestampMicros { lock.withLock { micros } }
    func monotonicNanos() -> UInt64 { UInt64(lock.withLock { micros }) * 1_000 }
}

/// Issue 12 item 7: the retention rules delete what they should and nothing else, in bounded
/// batches, and never on a replica.
@Suite struct AuthRetentionTests {
    static let day: Int64 = 86_400 * 1_000_000
    static let now: Int64 = 1_800_000_000 * 1_000_000

    func at(_ micros: Int64) -> JSONValue { .string(Timestamp.format(micros)) }

    func open() async throws -> (Database, String) {
        let dir = NSTemporaryDirectory() + "aerodb-retention-\(UUID().uuidString)"
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        try await SystemCollections.ensure(AuthCollections.all, in: db)
        return (db, dir)
    }

    func user(_ id: String, anonymous: Bool, updated: Int64) -> WriteOperation {
        .insert(collection: AuthCollections.users, document: [
            "id": .string(id), "aud": .string("authenticated"), "role": .string("authenticated"), "app_metadata": .object([:]),
            "user_metadata": .object([:]), "is_anonymous": .bool(anonymous), "created_at": at(updated), "updated_at": at(updated)])
    }

    func session(_ id: String, user: String, updated: Int64) -> WriteOperation {
        .insert(collection: AuthCollections.sessions, document: [
            "id": .string(id), "user_id": .string(user), "aal": .string("aal1"), "amr": .array([]),
            "created_at": at(updated), "updated_at": at(updated)])
    }

    func token(_ id: String, session: String, user: String, rotated: Int64?) -> WriteOperation {
        .insert(collection: AuthCollections.refreshTokens, document: [
            "id": .string(id), "session_id": .string(session), "user_id": .string(user), "revoked": .bool(rotated != nil),
            "rotated_at": rotated.map(at) ?? .null, "created_at": at(Self.now - 3 * Self.day)])
    }

    func audit(_ n: Int, at time: Int64) -> WriteOperation {
        .insert(collection: AuthCollections.audit, document: [
            "id": .string(UUIDText.random()), "at": at(time), "action": .string("login_failed"), "target": .string("t\(n)")])
    }

    func mail(_ n: Int) -> WriteOperation {
        .insert(collection: AuthCollections.outbox, document: [
            "id": .string(UUIDText.random()), "to": .string("m\(n)@example.com"), "subject": .string("s"), "body": .string("b"),
            "type": .string("signup"), "created_at": at(Self.now - Self.day + Int64(n))])
    }

    func ids(_ db: Database, _ collection: String, field: String = "id") throws -> Set<String> {
        Set(try db.snapshot().rowsIfPresent(Query(collection: collection, limit: 10_000)).compactMap { $0[field]?.stringValue })
    }

    func retention(_ db: Database, _ settings: AuthSettings, primary: Bool = true) -> AuthRetention {
        AuthRetention(database: db, settings: settings, clock: TestClock(Self.now), isPrimary: { primary })
    }

    func fixture(_ db: Database) async throws {
        let (u1, u2, u3, u4) = ("00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002",
                                "00000000-0000-4000-8000-000000000003", "00000000-0000-4000-8000-000000000004")
        let (s1, s2) = ("10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002")
        var ops: [WriteOperation] = [
            user(u1, anonymous: true, updated: Self.now - 40 * Self.day),   // idle anonymous: goes (when enabled)
            user(u2, anonymous: true, updated: Self.now - 40 * Self.day),   // its session was refreshed yesterday: stays
            user(u3, anonymous: true, updated: Self.now - Self.day),        // recent: stays
            user(u4, anonymous: false, updated: Self.now - 400 * Self.day), // a real account: always stays
            session(s1, user: u4, updated: Self.now - 400 * Self.day),
            session(s2, user: u2, updated: Self.now - Self.day),
            token("rotated-2-days-ago", session: s1, user: u4, rotated: Self.now - 2 * Self.day),
            token("rotated-1-hour-ago", session: s1, user: u4, rotated: Self.now - Self.day / 24),
            token("live", session: s1, user: u4, rotated: nil),
            token("anon-live", session: s2, user: u2, rotated: nil),
        ]
        ops += (0..<3).map { audit($0, at: Self.now - 40 * Self.day) }
        ops += (3..<5).map { audit($0, at: Self.now - 10 * Self.day) }
        ops += (0..<15).map(mail)
        for (id, expires) in [("expired-code", Self.now - 1), ("live-code", Self.now + Self.day)] {
            ops.append(.insert(collection: AuthCollections.oneTimeTokens, document: [
                "id": .string(id), "user_id": .string(u4), "type": .string("recovery"), "email": .string("r@example.com"),
                "expires_at": at(expires), "created_at": at(Self.now - Self.day)]))
        }
        _ = try await db.commit(ops)
    }

    @Test func rulesDeleteWhatTheyShouldAndNothingElse() async throws {
        let (db, dir) = try await open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await fixture(db)
        var settings = AuthSettings()
        settings.retention.outboxMessagesMax = 10
        let report = try #require(await retention(db, settings).run())
        #expect(report == AuthRetention.Report(refreshTokens: 1, auditRows: 3, outboxMessages: 5, anonymousUsers: 0, expiredCodes: 1))
        #expect(try ids(db, AuthCollections.oneTimeTokens) == ["live-code"])
        #expect(try ids(db, AuthCollections.refreshTokens) == ["rotated-1-hour-ago", "live", "anon-live"])
        #expect(try ids(db, AuthCollections.audit, field: "target") == ["t3", "t4"])
        #expect(try ids(db, AuthCollections.outbox, field: "to") == Set((5..<15).map { "m\($0)@example.com" }))  // the newest 10
        #expect(try ids(db, AuthCollections.users).count == 4)  // anonymous users are kept unless configured

        settings.retention.anonymousUserDays = 30
        let second = try #require(await retention(db, settings).run())
        #expect(second == AuthRetention.Report(refreshTokens: 0, auditRows: 0, outboxMessages: 0, anonymousUsers: 1, expiredCodes: 0))
        #expect(try ids(db, AuthCollections.users) == ["00000000-0000-4000-8000-000000000002", "00000000-0000-4000-8000-000000000003",
                                                        "00000000-0000-4000-8000-000000000004"])
        #expect(try ids(db, AuthCollections.refreshTokens) == ["rotated-1-hour-ago", "live", "anon-live"])
        #expect(await retention(db, settings).run() == AuthRetention.Report())  // nothing left to do
        await db.close()
    }

    @Test func candidatesAreReadThroughIndexesInTheirOrder() async throws {
        let (db, dir) = try await open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cutoff = at(Self.now)
        let queries = [
            AuthRetention.olderThan(AuthCollections.refreshTokens, "rotated_at", cutoff), AuthRetention.olderThan(AuthCollections.audit, "at", cutoff),
            AuthRetention.olderThan(AuthCollections.oneTimeTokens, "expires_at", cutoff), AuthRetention.anonymousCandidates(cutoff),
            AuthRetention.oldest(AuthCollections.outbox, "created_at", limit: 10), AuthRetention.oldest(AuthCollections.audit, "at", limit: 10),
        ]
        for query in queries {
            let plan = try db.snapshot().explain(query)
            #expect(plan.index != nil && plan.sortSatisfied && plan.residual.isEmpty, "\(query.collection): \(plan.json)")
        }
        await db.close()
    }

    @Test func aReplicaNeverRunsTheRules() async throws {
        let (db, dir) = try await open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await fixture(db)
        var settings = AuthSettings()
        settings.retention.outboxMessagesMax = 10
        settings.retention.anonymousUserDays = 1
        let lsn = db.snapshot().lsn
        #expect(await retention(db, settings, primary: false).run() == nil)
        #expect(db.snapshot().lsn == lsn)
        #expect(try ids(db, AuthCollections.outbox).count == 15)
        #expect(try ids(db, AuthCollections.audit).count == 5)
        #expect(try ids(db, AuthCollections.oneTimeTokens).count == 2)
        await db.close()
    }

    @Test func aPassIsABoundedBatchAndTheRowCeilingHolds() async throws {
        let (db, dir) = try await open()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 700 rows past the age, 1,300 recent ones: the age rule and the 1,000-row ceiling.
        _ = try await db.commit((0..<700).map { audit($0, at: Self.now - 40 * Self.day + Int64($0)) })
        _ = try await db.commit((700..<2_000).map { audit($0, at: Self.now - Self.day + Int64($0)) })
        var settings = AuthSettings()
        settings.retention.auditRowsMax = 1_000
        let r = retention(db, settings)
        let first = await r.pass()
        #expect(first.auditRows <= 2 * AuthRetention.batchRowsMax && first.auditRows >= AuthRetention.batchRowsMax)
        _ = await r.run()
        let left = try ids(db, AuthCollections.audit, field: "target")
        #expect(left == Set((1_000..<2_000).map { "t\($0)" }))  // the newest 1,000
        await db.close()
    }
}
