// HS256 JSON Web Tokens (RFC 7519) signed with the cluster's secret: the API keys and, later,
// user access tokens. Only HS256 is accepted: `alg: none`, other algorithms, malformed tokens,
// bad signatures and expired tokens are refused (401). Signatures are compared in constant time
// (HMAC.isValidAuthenticationCode).

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

    /// The verified claims, or AERO_AUTH_UNAUTHORIZED saying why not.
    public static func verify(_ token: String, secret: [UInt8], nowSeconds: Int64) throws -> JSONValue {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = decodeBase64URL(parts[0]), let payloadBytes = decodeBase64URL(parts[1]),
              let signature = decodeBase64URL(parts[2]) else { throw unauthorized("malformed token") }
        guard let header = try? JSON.parse(headerBytes), header["alg"] == .string("HS256") else {
            throw unauthorized("token algorithm must be HS256")
        }
        let signingInput = Array((parts[0] + "." + parts[1]).utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: SymmetricKey(data: secret)) else {
            throw unauthorized("invalid token signature")
        }
        guard let claims = try? JSON.parse(payloadBytes), case .object = claims else { throw unauthorized("malformed token claims") }
        if let exp = claims["exp"]?.numberValue, Double(nowSeconds) >= exp { throw unauthorized("token expired") }
        return claims
    }

    static func unauthorized(_ why: String) -> AeroError { AeroError(.unauthorized, why) }

    public static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    public static func decodeBase64URL(_ text: Substring) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { Array($0) }
    }
}
