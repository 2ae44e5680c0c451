// Signed URL tokens of storage (download: `/object/sign/<bucket>/<name>?token=`, upload:
// `/object/upload/sign/<bucket>/<name>?token=`).
//
// Token layout: `<base64url(JSON payload)>.<base64url(HMAC-SHA256)>`, the MAC over the first
// part under SecretDomain.storageSignedURL's key (never the JWT secret itself: a signed URL is
// never an access token and an access token never a signed URL). Payload:
// `{"k":"download"|"upload","b":bucket,"n":name,"exp":unix seconds,"u":upsert?,"o":owner?}`.
// Checked on use: length bound, canonical base64url, MAC (constant time), kind, the path it was
// issued for, expiry. Any failure is 400 InvalidJWT (Supabase's answer).

import Crypto
import Kernel

struct StorageSignedURL: Sendable {
    enum Kind: String { case download, upload }
    let kind: Kind
    let bucket: String
    let name: String
    let expires: Int64
    var upsert = false
    var owner: String?

    func token(secret: [UInt8]) -> String {
        var payload: [String: JSONValue] = ["k": .string(kind.rawValue), "b": .string(bucket), "n": .string(name), "exp": .int(expires)]
        if upsert { payload["u"] = .bool(true) }
        if let owner { payload["o"] = .string(owner) }
        let body = JWT.base64URL(JSON.encode(.object(payload)))
        let mac = HMAC<SHA256>.authenticationCode(for: Array(body.utf8), using: SecretDomain.storageSignedURL.key(secret))
        return body + "." + JWT.base64URL(Array(mac))
    }

    static func verify(_ token: String, kind: Kind, bucket: String, name: String, secret: [UInt8], nowSeconds: Int64) throws -> StorageSignedURL {
        guard token.utf8.count <= StorageLimits.tokenBytesMax else { throw StorageError.invalidSignature("token too long") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let body = JWT.decodeBase64URL(parts[0]), let mac = JWT.decodeBase64URL(parts[1]) else {
            throw StorageError.invalidSignature("malformed token")
        }
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Array(parts[0].utf8),
                                                      using: SecretDomain.storageSignedURL.key(secret)) else {
            throw StorageError.invalidSignature("invalid signature")
        }
        guard let payload = try? JSON.parse(body), payload["k"]?.stringValue == kind.rawValue,
              case .int(let expires)? = payload["exp"] else {
            throw StorageError.invalidSignature("the token is not a \(kind.rawValue) token")
        }
        guard payload["b"]?.stringValue == bucket, payload["n"]?.stringValue == name else {
            throw StorageError.invalidSignature("the token was issued for another object")
        }
        guard nowSeconds < expires else { throw StorageError.invalidSignature("jwt expired") }
        return StorageSignedURL(kind: kind, bucket: bucket, name: name, expires: expires,
                                upsert: payload["u"] == .bool(true), owner: payload["o"]?.stringValue)
    }
}
