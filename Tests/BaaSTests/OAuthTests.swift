import _CryptoExtras
import Crypto
import Foundation
import Kernel
import Testing
@testable import BaaS

/// OAuth pieces without a network (docs/AUTH.md "OAuth and OpenID Connect"; OA1..OA3 in
/// docs/INVARIANTS.md): the signed state, id_token verification and the provider settings.
/// The end-to-end flows against a real provider are in Tests/Compat/test_auth_oauth.py.
@Suite struct OAuthTests {
    let secret = Array(repeating: UInt8(9), count: 32)
    let now: Int64 = 1_800_000_000

    func state(expires: Int64? = nil) -> OAuthState {
        OAuthState(id: "flow-1", provider: "keycloak", redirectTo: "http://app.test/done", nonce: "n-1",
                   expiresAt: expires ?? now + 600, callback: "http://127.0.0.1:1/auth/v1/callback",
                   challenge: String(repeating: "c", count: 43), challengeMethod: "s256", linkUserID: nil)
    }

    /// OA1: a state verifies only as it was issued, under its own MAC domain, before its expiry.
    @Test func stateRoundTripsAndRefusesForgedExpiredAndOtherDomains() throws {
        let text = state().encode(secret: secret)
        #expect(try OAuthState.decode(text, secret: secret, nowSeconds: now) == state())
        // Another secret, a flipped payload byte, a MAC of another domain: forged.
        #expect(throws: OAuthState.Refusal.forged) { try OAuthState.decode(text, secret: Array(repeating: 1, count: 32), nowSeconds: now) }
        let parts = text.split(separator: ".").map(String.init)
        var payload = JWT.decodeBase64URL(Substring(parts[0]))!
        payload[payload.count - 2] ^= 1
        #expect(throws: OAuthState.Refusal.forged) {
            try OAuthState.decode(JWT.base64URL(payload) + "." + parts[1], secret: secret, nowSeconds: now)
        }
        let raw = JWT.decodeBase64URL(Substring(parts[0]))!
        for domain in SecretDomain.allCases where domain != .oauthState {
            let mac = HMAC<SHA256>.authenticationCode(for: raw, using: domain.key(secret))
            #expect(throws: OAuthState.Refusal.forged) {
                try OAuthState.decode(parts[0] + "." + JWT.base64URL(Array(mac)), secret: secret, nowSeconds: now)
            }
        }
        #expect(throws: OAuthState.Refusal.expired) { try OAuthState.decode(text, secret: secret, nowSeconds: now + 600) }
        #expect(throws: OAuthState.Refusal.malformed) { try OAuthState.decode("", secret: secret, nowSeconds: now) }
        #expect(throws: OAuthState.Refusal.malformed) {
            try OAuthState.decode(String(repeating: "A", count: OAuthState.bytesMax + 1), secret: secret, nowSeconds: now)
        }
    }

    func idToken(_ claims: [String: JSONValue], key: P256.Signing.PrivateKey, kid: String = "k1", alg: String = "ES256") throws -> String {
        let header = JWT.base64URL(JSON.encode(.object(["alg": .string(alg), "kid": .string(kid)])))
        let input = header + "." + JWT.base64URL(JSON.encode(.object(claims)))
        return input + "." + JWT.base64URL(Array(try key.signature(for: Array(input.utf8)).rawRepresentation))
    }

    /// OA2: an id_token is accepted only with a JWKS key's valid signature, our issuer and
    /// client, unexpired, and the nonce of its flow.
    @Test func idTokenVerification() throws {
        let key = P256.Signing.PrivateKey()
        let raw = key.publicKey.rawRepresentation
        let jwks: JSONValue = .object(["keys": .array([.object([
            "kty": .string("EC"), "crv": .string("P-256"), "kid": .string("k1"), "use": .string("sig"),
            "x": .string(JWT.base64URL(Array(raw.prefix(32)))), "y": .string(JWT.base64URL(Array(raw.suffix(32)))),
        ])])])
        let keys = OIDCKeySet(jwks: jwks)
        #expect(keys.keys.count == 1)
        let good: [String: JSONValue] = ["iss": .string("https://idp.test"), "aud": .string("client"), "sub": .string("u1"),
                                         "exp": .int(now + 300), "iat": .int(now), "nonce": .string("n-1")]
        func verify(_ claims: [String: JSONValue], nonce: OIDCToken.NonceRule = .exact("n-1"), kid: String = "k1",
                    signer: P256.Signing.PrivateKey? = nil) throws(OIDCToken.Refusal) -> JSONValue {
            let token = try! idToken(claims, key: signer ?? key, kid: kid)
            return try OIDCToken.verify(token, keys: keys, issuer: "https://idp.test", clientID: "client", nonce: nonce, nowSeconds: now)
        }
        #expect(try verify(good)["sub"] == .string("u1"))
        var other = good
        other["aud"] = .array([.string("someone-else"), .string("client")])
        #expect(try verify(other)["sub"] == .string("u1"))
        #expect(throws: OIDCToken.Refusal.badSignature) { try verify(good, signer: P256.Signing.PrivateKey()) }
        #expect(throws: OIDCToken.Refusal.unknownKey) { try verify(good, kid: "k2") }
        for (field, value) in [("iss", JSONValue.string("https://evil.test")), ("aud", .string("other")),
                               ("exp", .int(now - OIDCToken.clockSkewSeconds - 1)), ("nonce", .string("n-2")),
                               ("iat", .int(now + OIDCToken.clockSkewSeconds + 10))] {
            var bad = good
            bad[field] = value
            #expect(throws: OIDCToken.Refusal.self) { try verify(bad) }
        }
        // sign_in_with_id_token: the token carries SHA-256(nonce) in hex; both or neither.
        var hashed = good
        hashed["nonce"] = .string(AuthStore.sha256Hex("raw-nonce"))
        #expect(try verify(hashed, nonce: .hashedIfPresent("raw-nonce"))["sub"] == .string("u1"))
        #expect(throws: OIDCToken.Refusal.self) { try verify(hashed, nonce: .hashedIfPresent("other")) }
        #expect(throws: OIDCToken.Refusal.self) { try verify(hashed, nonce: .hashedIfPresent(nil)) }
        // alg none and HS256 (a public key as an HMAC secret) are refused whatever the signature.
        for alg in ["none", "HS256", "RS512"] {
            let token = try idToken(good, key: key, alg: alg)
            #expect(throws: OIDCToken.Refusal.self) {
                try OIDCToken.verify(token, keys: keys, issuer: "https://idp.test", clientID: "client", nonce: .exact("n-1"), nowSeconds: now)
            }
        }
    }

    @Test func rs256TokensVerifyWithAnRSAKeyOfTheJWKS() throws {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let pub = key.publicKey
        let numbers = try pub.getKeyPrimitives()
        let jwks: JSONValue = .object(["keys": .array([.object([
            "kty": .string("RSA"), "kid": .string("r1"), "n": .string(JWT.base64URL(Array(numbers.modulus))),
            "e": .string(JWT.base64URL(Array(numbers.publicExponent))),
        ])])])
        let header = JWT.base64URL(JSON.encode(.object(["alg": .string("RS256"), "kid": .string("r1")])))
        let input = header + "." + JWT.base64URL(JSON.encode(.object(["iss": .string("https://idp.test"), "aud": .string("client"),
                                                                      "sub": .string("u2"), "exp": .int(now + 60)])))
        let signature = try key.signature(for: Array(input.utf8), padding: .insecurePKCS1v1_5)
        let token = input + "." + JWT.base64URL(Array(signature.rawRepresentation))
        let claims = try OIDCToken.verify(token, keys: OIDCKeySet(jwks: jwks), issuer: "https://idp.test", clientID: "client",
                                          nonce: .hashedIfPresent(nil), nowSeconds: now)
        #expect(claims["sub"] == .string("u2"))
    }

    /// OA3: provider settings are validated and the client secret never appears redacted-out.
    @Test func providerSettingsParseAndRedact() throws {
        let parsed = try AuthSettings.parse(.object(["oauth_providers": .object([
            "keycloak": .object(["issuer": .string("https://idp.test/realms/x/"), "client_id": .string("id"), "client_secret": .string("S3CRET")]),
            "google": .object(["client_id": .string("g"), "client_secret": .string("S3CRET")]),
            "github": .object(["client_id": .string("h"), "client_secret": .string("S3CRET")]),
        ]), "manual_linking": .bool(true)]))
        #expect(parsed.manualLinking)
        #expect(parsed.oauthProviders["keycloak"]?.kind == .oidc(issuer: "https://idp.test/realms/x"))
        #expect(parsed.oauthProviders["google"]?.kind == .oidc(issuer: OAuthProviderSettings.googleIssuer))
        #expect(parsed.oauthProviders["github"]?.kind == .github)
        #expect(parsed.oauthProviders["keycloak"]?.scopes == ["openid", "email", "profile"])
        let shown = String(decoding: JSON.encode(OAuthSettings.redacted(parsed.oauthProviders)), as: UTF8.self)
        #expect(!shown.contains("S3CRET") && shown.contains(OAuthSettings.redactedSecret))
        let echo = String(decoding: JSON.encode(OAuthSettings.redacted(.object(["x": .object(["client_secret": .string("S3CRET")])]))),
                          as: UTF8.self)
        #expect(!echo.contains("S3CRET"))
        let bad: [JSONValue] = [
            .object(["Bad Name": .object(["issuer": .string("https://a"), "client_id": .string("i"), "client_secret": .string("s")])]),
            .object(["x": .object(["client_id": .string("i"), "client_secret": .string("s")])]),  // no issuer, not a preset
            .object(["x": .object(["issuer": .string("ftp://a"), "client_id": .string("i"), "client_secret": .string("s")])]),
            .object(["x": .object(["issuer": .string("https://a"), "client_id": .string("i")])]),
            .object(["x": .object(["issuer": .string("https://a"), "client_id": .string("i"), "client_secret": .string("s"),
                                   "extra": .bool(true)])]),
            .object(Dictionary(uniqueKeysWithValues: (0...OAuthSettings.providersMax).map { i in
                ("p\(i)", JSONValue.object(["issuer": .string("https://a"), "client_id": .string("i"), "client_secret": .string("s")]))
            })),
        ]
        for value in bad {
            #expect(throws: AeroError.self) { try AuthSettings.parse(.object(["oauth_providers": value])) }
        }
    }

    @Test func identityIDsAreStablePerProviderAndSubject() {
        let a = AuthService.identityID(provider: "keycloak", sub: "u1")
        #expect(a == AuthService.identityID(provider: "keycloak", sub: "u1"))
        #expect(a != AuthService.identityID(provider: "google", sub: "u1"))
        #expect(a != AuthService.identityID(provider: "keycloak", sub: "u2"))
        #expect(UUID(uuidString: a) != nil)
    }
}
