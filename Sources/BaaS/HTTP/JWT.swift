// JSON Web Tokens (RFC 7519): HS256 signed with the cluster's secret (the API keys, and user
// access tokens until the cluster has an asymmetric signing key), and ES256 (P-256) signed with
// the cluster's current signing key (AuthSigningKeys), named by `kid`. Only these two are
// accepted: `alg: none`, other algorithms, an ES256 token whose `kid` names no key allowed to
// verify now, malformed tokens, bad signatures and expired tokens are refused (401). HMACs are
// compared in constant time (HMAC.isValidAuthenticationCode).
//
// Base64url (RFC 4648 §5) is read in its canonical form only: the alphabet `A-Z a-z 0-9 - _`,
// no `=` padding, a length that is not 1 mod 4, and zero unused bits in the last character.
// Every byte string then has exactly one spelling (the one `base64URL` writes), so a token can
// neither be presented twice under different texts nor smuggle bytes past a text comparison.
//
// One secret, several MACs (domain separation; docs/POLICIES.md, threat model):
// a MAC of one purpose must never verify as a MAC of another, or any access token becomes a
// signature for something else. The domains:
// - JWT signatures (HS256): the raw secret, over `<base64url>.<base64url>`: always holds `.`
//   and only base64url characters (Supabase's clients and tools verify with the raw secret).
// - The replication membership token (`ClusterConfig.token`, Replication module): the raw
//   secret over `aerodb-replication:<cluster id>` (`:` never occurs in a JWT signing input).
// - Everything else: a key of its own, `SecretDomain.key` = HMAC-SHA256(secret, label), where
//   every label holds spaces (never a JWT signing input, never the replication prefix). A derived
//   key never leaves the process, so no answer is ever a MAC under it except its own purpose's.

import Crypto
import Foundation
import Kernel

public enum JWT {
    /// The secret must be at least this long: HMAC-SHA256 keys shorter than the hash weaken it.
    public static let secretBytesMin = 32

    public static func sign(_ claims: JSONValue, secret: [UInt8]) -> String {
        precondition(secret.count >= secretBytesMin, "JWT secrets are at least \(secretBytesMin) bytes")
        let header = base64URL(JSON.encode(.object(["alg": .string("HS256"), "typ": .string("JWT")])))
        let payload = base64URL(JSON.encode(claims))
        let signingInput = header + "." + payload
        let mac = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: secret))
        return signingInput + "." + base64URL(Array(mac))
    }

    /// An ES256 token signed with `key`, named `kid` in its header.
    public static func signES256(_ claims: JSONValue, kid: String, key: P256.Signing.PrivateKey) throws -> String {
        let header = base64URL(JSON.encode(.object(["alg": .string("ES256"), "typ": .string("JWT"), "kid": .string(kid)])))
        let signingInput = header + "." + base64URL(JSON.encode(claims))
        let signature = try key.signature(for: Array(signingInput.utf8))
        return signingInput + "." + base64URL(Array(signature.rawRepresentation))  // JWS: r || s, 64 bytes
    }

    /// The verified claims, or AERO_AUTH_UNAUTHORIZED saying why not. `publicKey` resolves the
    /// `kid` of an ES256 token to a key allowed to verify now (nil: ES256 is refused).
    public static func verify(_ token: String, secret: [UInt8], nowSeconds: Int64,
                              publicKey: ((String) -> P256.Signing.PublicKey?)? = nil) throws -> JSONValue {
        try verified(token, secret: secret, nowSeconds: nowSeconds, publicKey: publicKey).claims
    }

    /// `verify`, also saying whether the token was HS256 (verified by the secret alone, so its
    /// verification holds while the secret is the same: VerifiedTokens).
    static func verified(_ token: String, secret: [UInt8], nowSeconds: Int64,
                         publicKey: ((String) -> P256.Signing.PublicKey?)?) throws -> (claims: JSONValue, hs256: Bool) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = decodeBase64URL(parts[0]), let payloadBytes = decodeBase64URL(parts[1]),
              let signature = decodeBase64URL(parts[2]) else { throw unauthorized("malformed token") }
        guard let header = try? JSON.parse(headerBytes) else { throw unauthorized("malformed token header") }
        let signingInput = Array((parts[0] + "." + parts[1]).utf8)
        let hs256 = header["alg"] == .string("HS256")
        switch header["alg"] {
        case .string("HS256")?:
            guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: SymmetricKey(data: secret)) else {
                throw unauthorized("invalid token signature")
            }
        case .string("ES256")?:
            guard case .string(let kid)? = header["kid"], let publicKey, let key = publicKey(kid) else {
                throw unauthorized("token signing key (kid) is unknown or retired")
            }
            guard signature.count == 64, let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature),
                  key.isValidSignature(ecdsa, for: signingInput) else {
                throw unauthorized("invalid token signature")
            }
        default:
            throw unauthorized("token algorithm must be HS256 or ES256")
        }
        guard let claims = try? JSON.parse(payloadBytes), case .object = claims else { throw unauthorized("malformed token claims") }
        try checkExpiry(claims, nowSeconds: nowSeconds)
        return (claims, hs256)
    }

    /// Refuses claims whose `exp` has passed (on every use, also of a remembered token).
    static func checkExpiry(_ claims: JSONValue, nowSeconds: Int64) throws {
        if let exp = claims["exp"]?.numberValue, Double(nowSeconds) >= exp { throw unauthorized("token expired") }
    }

    static func unauthorized(_ why: String) -> AeroError { AeroError(.unauthorized, why) }

    /// Canonical unpadded base64url.
    public static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The bytes of canonical unpadded base64url, or nil for anything else (padding, `+`, `/`,
    /// whitespace, a dangling character, non-zero unused bits).
    public static func decodeBase64URL(_ text: Substring) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3 + 2)
        var accumulator: UInt32 = 0  // holds fewer than 8 pending bits between characters
        var bits = 0
        for c in text.utf8 {
            let value: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return nil
            }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        // Left over: 0 bits (length 0 mod 4), 4 (2 mod 4) or 2 (3 mod 4), all zero; 6 bits is a
        // dangling character (length 1 mod 4), which encodes nothing.
        guard bits < 6, accumulator == 0 else { return nil }
        return out
    }
}

/// The purposes that MAC with the cluster secret under a key of their own (see the file header).
public enum SecretDomain: String, Sendable, CaseIterable {
    /// `X-AeroDB-Client-IP`: the client address a node forwards with a request (ClientAddress).
    case clientAddress = "aerodb client-address v1"
    /// The storage key of a one-time token (email code, link, PKCE flow): AuthStore.storedID.
    case oneTimeTokenID = "aerodb one-time-token-id v1"
    /// Storage signed URLs (download and upload tokens): StorageSignedURL.
    case storageSignedURL = "aerodb storage-signed-url v1"
    /// Broadcast/presence batches between cluster members: RealtimeRelay.
    case realtimeRelay = "aerodb realtime-relay v1"
    /// The AES-GCM key sealing TOTP secrets at rest: AuthMFA.
    case mfaSecret = "aerodb mfa-secret v1"
    /// The AES-GCM key sealing the private signing keys of access tokens: AuthSigningKeys.
    case signingKey = "aerodb signing-key v1"
    /// The `state` of an OAuth sign-in (provider, redirect, PKCE challenge, nonce, expiry): OAuthState.
    case oauthState = "aerodb oauth-state v1"
    /// The AES-GCM key sealing S3 access key secrets at rest: S3Keys.
    case s3AccessKey = "aerodb s3-access-key v1"
    /// The AES-GCM key sealing storage `list_v2` cursors (a cursor may stop on a name the
    /// caller cannot see): StorageService.sealCursor.
    case storageListCursor = "aerodb storage-list-cursor v1"
    /// `X-AeroDB-Forwarded-Host`: the host a client addressed, on a request a member forwarded
    /// (S3 SigV4 signs the host): ForwardedHost.
    case forwardedHost = "aerodb forwarded-host v1"
    /// The AES-GCM key sealing OAuth client secrets in `_settings` (auth.oauth_providers): SettingsSecrets.
    case settingsOAuthClientSecret = "aerodb settings-oauth-client-secret v1"
    /// The AES-GCM key sealing the SMTP password in `_settings` (auth.smtp): SettingsSecrets.
    case settingsSMTPPassword = "aerodb settings-smtp-password v1"

    /// HMAC-SHA256(secret, label): the key of this purpose only.
    public func key(_ secret: [UInt8]) -> SymmetricKey { SymmetricKey(data: keyBytes(secret)) }

    /// `plain` sealed with AES-GCM under this purpose's key: base64 of nonce, ciphertext and tag.
    /// `context` (empty: none) is authenticated, not stored: `open` needs the same.
    func seal(_ plain: [UInt8], secret: [UInt8], context: [UInt8] = []) throws -> String {
        let box = try AES.GCM.seal(plain, using: key(secret), authenticating: context)
        guard let combined = box.combined else { throw AeroError(.internalError, "AES-GCM gave no combined form") }
        return Data(combined).base64EncodedString()
    }

    /// What `seal` sealed. `what` names the value in the error when the text is not base64;
    /// a wrong key, context or altered bytes throw CryptoKit's authentication failure.
    func open(_ sealed: String, secret: [UInt8], context: [UInt8] = [], what: String) throws -> [UInt8] {
        guard let data = Data(base64Encoded: sealed) else { throw AeroError(.internalError, "\(what) is not base64") }
        return Array(try AES.GCM.open(try AES.GCM.SealedBox(combined: data), using: key(secret), authenticating: context))
    }

    func keyBytes(_ secret: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(rawValue.utf8), using: SymmetricKey(data: secret)))
    }
}
