// Asymmetric signing keys for access tokens (ES256, P-256), published as a JWKS at
// GET /auth/v1/.well-known/jwks.json, the same replicated key set on every node.
//
// Stored in the replicated system collection `_auth_signing_keys`, key kid:
//   {kid, alg "ES256", status "current"|"previous", private (sealed), public_jwk, created_at,
//    verify_until (unix seconds; null while current)}
// `private` = base64(AES-GCM sealed raw P-256 private key) under SecretDomain.signingKey: the
// database, WAL, checkpoints and backups never hold it in the clear.
//
// Lifecycle: no key → access tokens are HS256 with the cluster secret (as before). The first
// `rotate` makes a current key: from then on every access token is ES256 with its `kid`. A later
// `rotate` makes a new current key; the old one becomes `previous` and still verifies until
// `verify_until` = rotation time + the access-token lifetime + `overlapMarginSeconds` (every token
// it signed has expired by then), then it is deleted at the next rotation and no longer verifies.
// The HS256 secret keeps verifying the legacy anon and service keys (and HS256 user tokens issued
// before the first rotation), as Supabase does.
//
// Invariants: a token verifies only with the key its `kid` names, and only while that key is
// current or within its window (JWT.verify with `AuthSigningKeys.publicKey`); a node never signs
// with a key other nodes cannot read (the key is committed before the first token it signs).

import Crypto
import Foundation
import Kernel
import Synchronization

public enum AuthSigningKeys {
    static let collection = "_auth_signing_keys"
    /// Seconds a previous key keeps verifying past the access-token lifetime (clock skew, in-flight requests).
    public static let overlapMarginSeconds: Int64 = 300
    /// Keys kept (current + previous within their window); a rotation deletes expired ones.
    static let keysMax = 16

    static let schema: JSONValue = AuthCollections.schema(collection, key: "kid", [
        "kid": AuthCollections.field("text", nullable: false), "alg": AuthCollections.field("text", nullable: false),
        "status": AuthCollections.field("text", nullable: false), "private": AuthCollections.field("text", nullable: false),
        "public_jwk": AuthCollections.field("json", nullable: false), "verify_until": AuthCollections.field("int"),
        "created_at": AuthCollections.created,
    ], [])

    /// Unsealed keys by kid (a key never changes under its kid).
    private static let privateCache = Mutex<[String: P256.Signing.PrivateKey]>([:])
    private static let publicCache = Mutex<[String: P256.Signing.PublicKey]>([:])

    static func rows(_ snapshot: Snapshot) throws -> [Document] {
        try snapshot.rowsIfPresent(Query(collection: collection, limit: keysMax * 4))
    }

    /// The key access tokens are signed with, or nil (HS256).
    static func current(_ snapshot: Snapshot, secret: [UInt8]) throws -> (kid: String, key: P256.Signing.PrivateKey)? {
        guard let row = try rows(snapshot).first(where: { $0["status"] == .string("current") }),
              case .string(let kid)? = row["kid"], case .string(let sealed)? = row["private"] else { return nil }
        if let hit = privateCache.withLock({ $0[kid] }) { return (kid, hit) }
        let raw = try SecretDomain.signingKey.open(sealed, secret: secret, what: "signing key \(kid)")
        let key = try P256.Signing.PrivateKey(rawRepresentation: raw)
        privateCache.withLock { $0[kid] = key }
        return (kid, key)
    }

    /// The public key `kid` names when it may verify at `nowSeconds`, else nil.
    public static func publicKey(_ kid: String, _ snapshot: Snapshot, nowSeconds: Int64) -> P256.Signing.PublicKey? {
        guard let row = try? snapshot.documentIfPresent(collection, key: .string(kid)) else { return nil }
        if row["status"] != .string("current") {
            guard case .int(let until)? = row["verify_until"], nowSeconds < until else { return nil }
        }
        if let hit = publicCache.withLock({ $0[kid] }) { return hit }
        guard case .string(let x)? = row["public_jwk"]?["x"], case .string(let y)? = row["public_jwk"]?["y"],
              let xb = JWT.decodeBase64URL(Substring(x)), let yb = JWT.decodeBase64URL(Substring(y)),
              let key = try? P256.Signing.PublicKey(rawRepresentation: xb + yb) else { return nil }
        publicCache.withLock { $0[kid] = key }
        return key
    }

    /// The JWKS: every key that may verify now (current first).
    static func jwks(_ snapshot: Snapshot, nowSeconds: Int64) throws -> JSONValue {
        let usable = try rows(snapshot).filter { row in
            if row["status"] == .string("current") { return true }
            if case .int(let until)? = row["verify_until"] { return nowSeconds < until }
            return false
        }.sorted { ($0["status"] == .string("current") ? 0 : 1) < ($1["status"] == .string("current") ? 0 : 1) }
        return .object(["keys": .array(usable.compactMap { $0["public_jwk"] })])
    }

    static func jwk(_ key: P256.Signing.PublicKey, kid: String) -> JSONValue {
        let raw = Array(key.rawRepresentation)  // x || y, 32 bytes each
        return .object(["kty": .string("EC"), "crv": .string("P-256"), "alg": .string("ES256"), "use": .string("sig"),
                        "key_ops": .array([.string("verify")]), "kid": .string(kid),
                        "x": .string(JWT.base64URL(Array(raw[0..<32]))), "y": .string(JWT.base64URL(Array(raw[32..<64])))])
    }

    /// Makes a new current key; the current one becomes previous (verifying for `lifetimeSeconds`
    /// + the margin); expired previous keys are deleted. One transaction. Returns the new kid.
    static func rotate(_ database: Database, secret: [UInt8], lifetimeSeconds: Int64, nowSeconds: Int64) async throws -> String {
        try await SystemCollections.ensure([schema], in: database)
        let existing = try rows(database.snapshot())
        let live = existing.filter { row in
            if case .int(let until)? = row["verify_until"] { return until > nowSeconds }
            return true  // current
        }
        guard live.count < keysMax else {
            throw AeroError(.requestInvalid, "\(live.count) signing keys still verify tokens (at most \(keysMax)); rotate again after the oldest previous key's window ends")
        }
        let key = P256.Signing.PrivateKey()
        let kid = UUIDText.random()
        let sealed = try SecretDomain.signingKey.seal(Array(key.rawRepresentation), secret: secret)
        var ops: [WriteOperation] = []
        for row in existing {
            guard let id = row["kid"] else { continue }
            if row["status"] == .string("current") {
                ops.append(.update(collection: collection, target: .key(id),
                                   set: ["status": .string("previous"), "verify_until": .int(nowSeconds &+ lifetimeSeconds &+ overlapMarginSeconds)]))
            } else if case .int(let until)? = row["verify_until"], until <= nowSeconds {
                ops.append(.delete(collection: collection, target: .key(id)))
            }
        }
        ops.append(.insert(collection: collection, document: [
            "kid": .string(kid), "alg": .string("ES256"), "status": .string("current"),
            "private": .string(sealed), "public_jwk": jwk(key.publicKey, kid: kid), "verify_until": .null,
        ]))
        _ = try await database.commit(ops)
        return kid
    }

    /// The key list an operator sees (no private material).
    static func list(_ snapshot: Snapshot, nowSeconds: Int64) throws -> JSONValue {
        .object(["keys": .array(try rows(snapshot).map { row in
            .object(["kid": row["kid"] ?? .null, "alg": row["alg"] ?? .null, "status": row["status"] ?? .null,
                     "created_at": row["created_at"] ?? .null, "verify_until": row["verify_until"] ?? .null])
        })])
    }
}
