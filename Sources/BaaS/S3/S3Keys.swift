// S3 access keys (docs/STORAGE.md "S3 access keys").
//
// `_storage_s3_keys`: id (the access key id, text key), secret (sealed), description, created_at.
// SigV4 needs the secret itself to recompute a signature, so it cannot be stored hashed: it is
// sealed with AES-GCM under its own key, SecretDomain.s3AccessKey of the JWT secret, and
// `secret` = base64(nonce || ciphertext || tag). The database, its WAL, checkpoints and backups
// never hold it in the clear; it is shown once, in the answer that creates it.
// A key acts as the service role. At most `S3Limits.accessKeysMax` keys; revoking deletes the row
// (the next request signed with it is InvalidAccessKeyId on every node once replicated).

import Crypto
import Foundation
import Kernel

public enum S3Keys {
    static let collection = "_storage_s3_keys"

    static let schema: JSONValue = AuthCollections.schema(collection, key: "id", [
        "id": AuthCollections.field("text", nullable: false), "secret": AuthCollections.field("text", nullable: false),
        "description": AuthCollections.field("text"), "created_at": AuthCollections.created,
    ], [])

    static func randomText(_ count: Int, alphabet: String) -> String {
        let a = Array(alphabet)
        var g = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in a[Int(g.next(upperBound: UInt32(a.count)))] })
    }

    static func seal(_ plain: String, _ jwtSecret: [UInt8]) throws -> String {
        try SecretDomain.s3AccessKey.seal(Array(plain.utf8), secret: jwtSecret)
    }

    static func open(_ sealed: String, _ jwtSecret: [UInt8]) throws -> String {
        String(decoding: try SecretDomain.s3AccessKey.open(sealed, secret: jwtSecret, what: "a sealed S3 secret"), as: UTF8.self)
    }

    /// Creates a key; answers the row's public fields and the secret (shown this once).
    static func create(description: String?, storage: StorageService) async throws -> (JSONValue, UInt64) {
        if let description, description.utf8.count > S3Limits.keyDescriptionBytesMax {
            throw AeroError(.requestInvalid, "description is longer than \(S3Limits.keyDescriptionBytesMax) bytes")
        }
        try await SystemCollections.ensure([schema], in: storage.database)
        let count = try storage.database.snapshot().rowsIfPresent(Query(collection: collection, limit: S3Limits.accessKeysMax + 1)).count
        guard count < S3Limits.accessKeysMax else { throw AeroError(.requestInvalid, "at most \(S3Limits.accessKeysMax) S3 access keys; revoke one first") }
        let id = "AK" + randomText(18, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        let secret = randomText(40, alphabet: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        let doc: Document = ["id": .string(id), "secret": .string(try seal(secret, storage.secret)),
                             "description": description.map(JSONValue.string) ?? .null, "created_at": storage.now]
        let lsn = try await storage.database.commit([.insert(collection: collection, document: doc)]).lsn
        return (.object(["access_key_id": .string(id), "secret_access_key": .string(secret),
                         "description": doc["description"]!, "created_at": doc["created_at"]!]), lsn)
    }

    static func list(_ storage: StorageService) throws -> JSONValue {
        let rows = try storage.database.snapshot().rowsIfPresent(Query(collection: collection, order: [Sort(field: "id")], limit: S3Limits.accessKeysMax))
        return .array(rows.map { .object(["access_key_id": $0["id"] ?? .null, "description": $0["description"] ?? .null,
                                          "created_at": $0["created_at"] ?? .null]) })
    }

    static func revoke(_ id: String, _ storage: StorageService) async throws -> UInt64 {
        guard try storage.database.snapshot().documentIfPresent(collection, key: .string(id)) != nil else {
            throw AeroError(.notFound, "no S3 access key \(id)")
        }
        return try await storage.database.commit([.delete(collection: collection, target: .key(.string(id)))]).lsn
    }

    /// The secret of `id`, nil when no such key.
    static func secret(_ id: String, _ storage: StorageService) throws -> String? {
        guard id.utf8.count <= 64, let row = try storage.database.snapshot().documentIfPresent(collection, key: .string(id)),
              case .string(let sealed)? = row["secret"] else { return nil }
        return try open(sealed, storage.secret)
    }
}
