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
        for bad in [#"{"jwt_expiry":5}"#, #"{"argon2":{"memory_kib":-1}}"#, #"{"argon2":{"memory_kib":99999999999}}"#,
                    #"{"argon2":{"pepper":1}}"#, #"{"unknown":1}"#, #"{"mailer_autoconfirm":"yes"}"#, #"{"external_url":"ftp://x"}"#,
                    #"{"rate_limits":{"token":{"limit":0,"window_seconds":1}}}"#, #"{"smtp":{"host":"mail.example.com","sender":"a@b.c","user":"u","password":"p"}}"#,
                    #"{"otp_length":4}"#, "[]"] {
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
        for bad in ["", "h", "10", "5d", "-1h", "1h-", "9999999999h"] { #expect(AuthService.durationSeconds(bad) == nil, "\(bad)") }
    }
}
