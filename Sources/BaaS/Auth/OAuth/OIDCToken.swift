// Verification of an OpenID Connect id_token (OIDC Core §3.1.3.7) against its provider's JWKS
// (RFC 7517). Layout of the token: base64url(header) "." base64url(claims) "." base64url(signature),
// canonical base64url only (JWT.decodeBase64URL).
//
// Accepted: RS256 (RSA keys of `rsaBitsRange`, PKCS#1 v1.5) and ES256 (P-256, r||s), the key
// named by `kid` (or the only key of that algorithm when the token names none). Refused: any other
// algorithm (`none`, HS256: a provider's public JWKS must never turn into an HMAC key), a
// signature that does not verify, `iss` other than the provider's issuer, an `aud` that does
// not hold our client id, an expired token (`exp` past, `clockSkewSeconds` allowed), an `iat`
// in the future beyond the skew, and a nonce that does not match.

import _CryptoExtras
import Crypto
import Foundation
import Kernel

struct OIDCKeySet: Sendable {
    enum Key: Sendable {
        case rsa(_RSA.Signing.PublicKey)
        case p256(P256.Signing.PublicKey)
    }
    var keys: [(kid: String?, key: Key)] = []

    /// Keys a JWKS may hold at most (the rest are ignored: a provider publishes a handful).
    static let keysMax = 32
    /// RSA modulus sizes accepted.
    static let rsaBitsRange = 2_048...8_192

    /// Parses a JWKS document; keys of other types or uses are skipped.
    init(jwks: JSONValue) {
        for jwk in (jwks["keys"]?.arrayValue ?? []).prefix(Self.keysMax) {
            if let use = jwk["use"]?.stringValue, use != "sig" { continue }
            let kid = jwk["kid"]?.stringValue
            func bytes(_ name: String) -> [UInt8]? { jwk[name]?.stringValue.flatMap { JWT.decodeBase64URL(Substring(Self.unpadded($0))) } }
            switch jwk["kty"]?.stringValue {
            case "RSA":
                guard let n = bytes("n"), let e = bytes("e"),
                      let key = try? _RSA.Signing.PublicKey(n: n, e: e), Self.rsaBitsRange.contains(key.keySizeInBits) else { continue }
                keys.append((kid, .rsa(key)))
            case "EC":
                guard jwk["crv"]?.stringValue == "P-256", let x = bytes("x"), let y = bytes("y"), x.count == 32, y.count == 32,
                      let key = try? P256.Signing.PublicKey(rawRepresentation: x + y) else { continue }
                keys.append((kid, .p256(key)))
            default: continue
            }
        }
    }

    init(keys: [(kid: String?, key: Key)]) { self.keys = keys }

    /// Some providers pad their base64url; the value is the same.
    static func unpadded(_ s: String) -> String { String(s.prefix(while: { $0 != "=" })) }

    func key(kid: String?, alg: String) -> Key? {
        let candidates = keys.filter { entry in
            switch (entry.key, alg) {
            case (.rsa, "RS256"), (.p256, "ES256"): return true
            default: return false
            }
        }
        if let kid { return candidates.first(where: { $0.kid == kid })?.key }
        return candidates.count == 1 ? candidates[0].key : nil
    }
}

enum OIDCToken {
    /// Clock difference tolerated between the provider and this node.
    static let clockSkewSeconds: Int64 = 60
    /// An id_token at most this long.
    static let bytesMax = 16_384

    enum Refusal: Error, Equatable {
        case malformed(String)
        case unknownKey
        case badSignature
        case claim(String)
    }

    /// The token's header `kid` and `alg` (to decide whether the key set must be fetched again).
    static func header(_ token: String) -> (kid: String?, alg: String)? {
        guard let first = token.split(separator: ".", omittingEmptySubsequences: false).first,
              let bytes = JWT.decodeBase64URL(first), let header = try? JSON.parse(bytes), case .string(let alg)? = header["alg"] else {
            return nil
        }
        return (header["kid"]?.stringValue, alg)
    }

    /// The verified claims. `nonce`: the value the token must carry (nil: it must carry none, or
    /// `nonceOptional` lets a token without one pass, as for a token the app obtained itself).
    static func verify(_ token: String, keys: OIDCKeySet, issuer: String, clientID: String, nonce: NonceRule,
                       nowSeconds: Int64) throws(Refusal) -> JSONValue {
        guard token.utf8.count <= bytesMax else { throw .malformed("id_token too long") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = JWT.decodeBase64URL(parts[0]), let claimBytes = JWT.decodeBase64URL(parts[1]),
              let signature = JWT.decodeBase64URL(parts[2]), let header = try? JSON.parse(headerBytes),
              case .string(let alg)? = header["alg"] else { throw .malformed("not a signed JWT") }
        guard alg == "RS256" || alg == "ES256" else { throw .malformed("id_token algorithm \(alg) is not accepted (RS256, ES256)") }
        guard let key = keys.key(kid: header["kid"]?.stringValue, alg: alg) else { throw .unknownKey }
        let signingInput = Array((parts[0] + "." + parts[1]).utf8)
        switch key {
        case .rsa(let rsa):
            guard rsa.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: signingInput,
                                       padding: .insecurePKCS1v1_5) else { throw .badSignature }
        case .p256(let ec):
            guard signature.count == 64, let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature),
                  ec.isValidSignature(sig, for: signingInput) else { throw .badSignature }
        }
        guard let claims = try? JSON.parse(claimBytes), case .object = claims else { throw .malformed("claims are not an object") }
        guard claims["iss"]?.stringValue == issuer else { throw .claim("iss is not the provider's issuer") }
        let audiences: [String]
        switch claims["aud"] {
        case .string(let a)?: audiences = [a]
        case .array(let items)?: audiences = items.compactMap(\.stringValue)
        default: audiences = []
        }
        guard audiences.contains(clientID) else { throw .claim("aud does not name this client") }
        guard let exp = claims["exp"]?.numberValue, exp + Double(clockSkewSeconds) > Double(nowSeconds) else { throw .claim("id_token expired") }
        if let iat = claims["iat"]?.numberValue, iat > Double(nowSeconds + clockSkewSeconds) { throw .claim("iat is in the future") }
        let carried = claims["nonce"]?.stringValue
        switch nonce {
        case .exact(let expected):
            guard let carried, AuthService.constantTimeEqual(carried, expected) else { throw .claim("nonce mismatch") }
        case .hashedIfPresent(let given):
            // sign_in_with_id_token (GoTrue): the app passes its raw nonce; the token carries its SHA-256 in hex.
            switch (given, carried) {
            case (nil, nil): break
            case (let raw?, let inToken?):
                let hash = AuthStore.sha256Hex(raw)
                guard AuthService.constantTimeEqual(hash, inToken) || AuthService.constantTimeEqual(raw, inToken) else {
                    throw .claim("Nonces mismatch")
                }
            default: throw .claim("Passed nonce and nonce in id_token should either both exist or not.")
            }
        }
        return claims
    }

    enum NonceRule: Sendable {
        case exact(String)
        case hashedIfPresent(String?)
    }
}
