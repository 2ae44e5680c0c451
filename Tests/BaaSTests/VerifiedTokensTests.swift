import Crypto
import Foundation
import Testing
import Kernel
@testable import BaaS

/// The bounded memory of verified HS256 tokens (Sources/BaaS/HTTP/VerifiedTokens.swift, issue 19):
/// a remembered token skips only the work whose answer cannot change under the same secret.
@Suite struct VerifiedTokensTests {
    let secret = Array(repeating: UInt8(3), count: 32)

    @Test func aRememberedTokenStillExpires() throws {
        let clock = ManualClock()
        let keys = KeyChecker(secret: secret, clock: clock)
        let now = clock.nowMicros() / 1_000_000
        let token = JWT.sign(.object(["role": .string("anon"), "exp": .int(now + 10)]), secret: secret)
        #expect(try keys.caller(token: token).role == "anon")
        #expect(keys.verified.count == 1)
        #expect(try keys.caller(token: token).role == "anon")  // answered from memory
        #expect(keys.verified.count == 1)
        clock.advance(micros: 10_000_000)
        #expect(throws: AeroError.self) { try keys.caller(token: token) }
    }

    @Test func aRememberedTokenStillNeedsAKnownRoleAndItsSession() throws {
        let clock = ManualClock()
        let keys = KeyChecker(secret: secret, clock: clock)
        let now = clock.nowMicros() / 1_000_000
        let unknownRole = JWT.sign(.object(["role": .string("postgres"), "exp": .int(now + 60)]), secret: secret)
        for _ in 0..<2 { #expect(throws: AeroError.self) { try keys.caller(token: unknownRole) } }
        let noSession = JWT.sign(.object(["role": .string("authenticated"), "sub": .string("u"), "exp": .int(now + 60)]), secret: secret)
        for _ in 0..<2 { #expect(throws: AeroError.self) { try keys.caller(token: noSession) } }
    }

    @Test func failuresAndOtherSecretsAreNeverRemembered() throws {
        let clock = ManualClock()
        let keys = KeyChecker(secret: secret, clock: clock)
        let now = clock.nowMicros() / 1_000_000
        let forged = JWT.sign(.object(["role": .string("service_role"), "exp": .int(now + 60)]), secret: Array(repeating: 4, count: 32))
        for _ in 0..<2 { #expect(throws: AeroError.self) { try keys.caller(token: forged) } }
        #expect(keys.verified.count == 0)
        let good = JWT.sign(.object(["role": .string("service_role"), "exp": .int(now + 60)]), secret: secret)
        #expect(try keys.caller(token: good).isService)
        // Another checker (another secret) has a memory of its own: the token is refused there.
        let other = KeyChecker(secret: Array(repeating: 5, count: 32), clock: clock)
        #expect(throws: AeroError.self) { try other.caller(token: good) }
    }

    @Test func es256TokensAreAlwaysVerifiedInFull() throws {
        let key = P256.Signing.PrivateKey()
        let now = ManualClock().nowMicros() / 1_000_000
        let token = try JWT.signES256(.object(["role": .string("anon"), "exp": .int(now + 60)]), kid: "k1", key: key)
        let es = try JWT.verified(token, secret: secret, nowSeconds: now, publicKey: { $0 == "k1" ? key.publicKey : nil })
        #expect(!es.hs256)
        let hs = try JWT.verified(JWT.sign(.object(["role": .string("anon")]), secret: secret), secret: secret, nowSeconds: now, publicKey: nil)
        #expect(hs.hs256)
    }

    @Test func theMemoryIsBoundedAndKeepsTokensInUse() throws {
        let memory = VerifiedTokens()
        let max = VerifiedTokens.verifiedTokensMax
        memory.remember("in use", .object([:]))
        for i in 0..<(3 * max) {
            memory.remember("t\(i)", .object(["i": .int(Int64(i))]))
            if i % (max / 2) == 0 { #expect(memory.claims("in use") != nil, "\(i)") }
            #expect(memory.count <= 2 * max)
        }
        #expect(memory.claims("t0") == nil)  // two turnovers ago
        #expect(memory.claims("t\(3 * max - 1)")?["i"] == .int(Int64(3 * max - 1)))
        let long = String(repeating: "x", count: VerifiedTokens.verifiedTokenBytesMax + 1)
        memory.remember(long, .object([:]))
        #expect(memory.claims(long) == nil)
    }
}
