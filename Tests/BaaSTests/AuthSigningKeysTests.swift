import Foundation
import Kernel
import Testing
@testable import BaaS

/// Signing keys (AuthSigningKeys, docs/AUTH.md "Signing keys"): a previous key verifies only
/// within its window, an unknown kid never, the private key is sealed at rest.
@Suite struct AuthSigningKeysTests {
    @Test func aPreviousKeyVerifiesOnlyWithinItsWindowAndThePrivateKeyIsSealed() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-keys-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        let secret = Array(repeating: UInt8(7), count: 32)
        let now: Int64 = 1_800_000_000
        let first = try await AuthSigningKeys.rotate(db, secret: secret, lifetimeSeconds: 3_600, nowSeconds: now)
        let (kid, key) = try #require(try AuthSigningKeys.current(db.snapshot(), secret: secret))
        #expect(kid == first)
        let claims: JSONValue = .object(["role": .string("anon"), "exp": .int(now + 60)])
        let token = try JWT.signES256(claims, kid: kid, key: key)
        let resolve = { (at: Int64) in { (k: String) in AuthSigningKeys.publicKey(k, db.snapshot(), nowSeconds: at) } }
        let verified = try JWT.verify(token, secret: secret, nowSeconds: now, publicKey: resolve(now))
        #expect(verified["role"] == .string("anon"))
        // Without a resolver, or with another cluster secret's HS256 view, ES256 is refused.
        #expect(throws: AeroError.self) { try JWT.verify(token, secret: secret, nowSeconds: now) }

        let second = try await AuthSigningKeys.rotate(db, secret: secret, lifetimeSeconds: 3_600, nowSeconds: now + 10)
        #expect(second != first)
        let window = now + 10 + 3_600 + AuthSigningKeys.overlapMarginSeconds
        #expect(AuthSigningKeys.publicKey(first, db.snapshot(), nowSeconds: window - 1) != nil)
        #expect(AuthSigningKeys.publicKey(first, db.snapshot(), nowSeconds: window) == nil)
        #expect(throws: AeroError.self) { try JWT.verify(token, secret: secret, nowSeconds: window, publicKey: resolve(window)) }
        #expect(AuthSigningKeys.publicKey("no-such-kid", db.snapshot(), nowSeconds: now) == nil)
        // A third rotation past the window deletes the expired key.
        _ = try await AuthSigningKeys.rotate(db, secret: secret, lifetimeSeconds: 3_600, nowSeconds: window + 1)
        #expect(try db.snapshot().documentIfPresent(AuthSigningKeys.collection, key: .string(first)) == nil)
        // At most `keysMax` keys verify at once: rotating faster than their windows end is refused.
        var rotations = 0
        await #expect(throws: AeroError.self) {
            for _ in 0..<AuthSigningKeys.keysMax + 1 {
                _ = try await AuthSigningKeys.rotate(db, secret: secret, lifetimeSeconds: 3_600, nowSeconds: window + 2)
                rotations += 1
            }
        }
        #expect(rotations < AuthSigningKeys.keysMax)
        #expect(try AuthSigningKeys.current(db.snapshot(), secret: secret) != nil)
        // At rest: no row holds the raw private key.
        let raw = JWT.base64URL(Array(key.rawRepresentation))
        let stored = try AuthSigningKeys.rows(db.snapshot()).map { JSON.encodeString(.object($0)) }.joined()
        #expect(!stored.contains(raw) && !stored.contains(Data(key.rawRepresentation).base64EncodedString()))
        await db.close()
    }
}
