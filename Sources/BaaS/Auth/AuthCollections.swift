// The system collections of `/auth/v1` (SPEC §3.2: system data lives in the kernel, so it is
// durable, replicated and backed up like any data). Names start with `_`: the REST API never
// serves them and user collections cannot take such names. Secrets are stored hashed:
// passwords as argon2id, refresh tokens as SHA-256, one-time tokens under an HMAC (cluster
// secret) of their link hash, SHA-256 of email + code.
// Deleting a user cascades to identities, sessions and their tokens; deleting a session
// cascades to its refresh tokens (that is what revocation is).

import Kernel

enum AuthCollections {
    static let users = "_auth_users"
    static let identities = "_auth_identities"
    static let sessions = "_auth_sessions"
    static let refreshTokens = "_auth_refresh_tokens"
    static let oneTimeTokens = "_auth_one_time_tokens"
    static let outbox = "_auth_outbox"
    static let audit = "_audit_log"

    static func field(_ type: String, nullable: Bool = true, default value: String? = nil,
                      references: String? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["type": .string(type)]
        o["nullable"] = .bool(nullable)
        if !nullable { o["required"] = .bool(value == nil) }
        if let value { o["default"] = .string(value) }
        if let references { o["references"] = .object(["collection": .string(references), "on_delete": .string("cascade")]) }
        return .object(o)
    }

    static func index(_ name: String, _ fields: [String], unique: Bool = false) -> JSONValue {
        .object(["name": .string(name), "fields": .array(fields.map(JSONValue.string)), "unique": .bool(unique)])
    }

    static func schema(_ name: String, key: String, _ fields: [String: JSONValue], _ indexes: [JSONValue]) -> JSONValue {
        .object(["name": .string(name), "primary_key": .string(key), "fields": .object(fields), "indexes": .array(indexes)])
    }

    static let created = field("timestamp", nullable: false, default: "now()")

    static let all: [JSONValue] = {
        return [
            schema(users, key: "id", [
                "id": field("uuid", nullable: false), "aud": field("text", nullable: false), "role": field("text", nullable: false),
                "email": field("text"), "phone": field("text"), "encrypted_password": field("text"),
                "email_confirmed_at": field("timestamp"), "confirmation_sent_at": field("timestamp"),
                "recovery_sent_at": field("timestamp"), "email_change_sent_at": field("timestamp"), "new_email": field("text"),
                "invited_at": field("timestamp"), "last_sign_in_at": field("timestamp"), "banned_until": field("timestamp"),
                "app_metadata": field("json", nullable: false), "user_metadata": field("json", nullable: false),
                "is_anonymous": field("bool", nullable: false), "created_at": created, "updated_at": created,
            ], [index("by_email", ["email"], unique: true), index("by_new_email", ["new_email"]), index("by_created", ["created_at"]),
                index("by_anonymous", ["is_anonymous", "updated_at"])]),
            schema(identities, key: "id", [
                "id": field("text", nullable: false), "user_id": field("uuid", nullable: false, references: users),
                "provider": field("text", nullable: false), "provider_id": field("text", nullable: false),
                "identity_data": field("json", nullable: false), "last_sign_in_at": field("timestamp"),
                "created_at": created, "updated_at": created,
            ], [index("by_user", ["user_id"])]),
            schema(sessions, key: "id", [
                "id": field("uuid", nullable: false), "user_id": field("uuid", nullable: false, references: users),
                "aal": field("text", nullable: false), "amr": field("json", nullable: false), "ip": field("text"),
                "user_agent": field("text"), "created_at": created, "updated_at": created,
            ], [index("by_user", ["user_id"])]),
            schema(refreshTokens, key: "id", [
                "id": field("text", nullable: false), "session_id": field("uuid", nullable: false, references: sessions),
                "user_id": field("uuid", nullable: false), "parent": field("text"), "revoked": field("bool", nullable: false),
                // The child that rotated it out (the rotation's compare-and-set writes it).
                "rotated_at": field("timestamp"), "rotated_to": field("text"), "created_at": created,
            ], [index("by_session", ["session_id"]), index("by_rotated", ["rotated_at"])]),
            schema(oneTimeTokens, key: "id", [
                "id": field("text", nullable: false), "user_id": field("uuid", nullable: false, references: users),
                "type": field("text", nullable: false), "email": field("text", nullable: false), "new_email": field("text"),
                "expires_at": field("timestamp", nullable: false), "created_at": created,
                // PKCE (a client in PKCE mode asked for the mail): the challenge and, on an
                // authorization code (type pkce), the sign-in method it will stand for.
                "code_challenge": field("text"), "code_challenge_method": field("text"), "method": field("text"),
            ], [index("by_user", ["user_id"]), index("by_expires", ["expires_at"])]),
            schema(outbox, key: "id", [
                "id": field("uuid", nullable: false), "to": field("text", nullable: false), "subject": field("text", nullable: false),
                "body": field("text", nullable: false), "type": field("text", nullable: false), "link": field("text"),
                "created_at": created,
            ], [index("by_created", ["created_at"]), index("by_to", ["to", "created_at"])]),
            schema(audit, key: "id", [
                "id": field("uuid", nullable: false), "at": created, "action": field("text", nullable: false),
                "actor_id": field("text"), "actor_role": field("text"), "target": field("text"), "ip": field("text"),
                "details": field("json"),
            ], [index("by_at", ["at"]), index("by_action", ["action", "at"])]),
        ] + AuthMFA.schemas
    }()
}

/// Reads of collections that may not exist yet: system collections are created lazily, so
/// before their first write they read as empty.
extension Snapshot {
    func documentIfPresent(_ collection: String, key: JSONValue) throws -> Document? {
        guard state.collections[collection] != nil else { return nil }
        return try document(collection, key: key)
    }

    /// nil when the collection does not exist.
    func queryIfPresent(_ query: Query) throws -> ReadResult? {
        guard state.collections[query.collection] != nil else { return nil }
        return try self.query(query)
    }

    func rowsIfPresent(_ query: Query) throws -> [Document] { try queryIfPresent(query)?.rows ?? [] }
}

/// Creates missing system collections lazily, before the first write that needs them (not at
/// start: in sync mode a primary's first commit waits for a replica that may not be up yet).
/// Creating one that another request just created is fine.
public enum SystemCollections {
    static func ensure(_ schemas: [JSONValue], in database: Database) async throws {
        for schema in schemas {
            guard case .string(let name)? = schema["name"] else { continue }
            if let existing = database.snapshot().state.collections[name]?.schema {
                try await addMissingFields(schema, to: existing, in: database)
                try await addMissingIndexes(schema, to: existing, in: database)
                continue
            }
            do {
                _ = try await database.createCollection(schema)
            } catch let error as AeroError where error.code == .collectionExists {
                continue
            }
        }
    }

    /// A system collection made by an older version gains the nullable fields added since.
    static func addMissingFields(_ schema: JSONValue, to existing: CollectionSchema, in database: Database) async throws {
        guard case .object(let fields)? = schema["fields"] else { return }
        for (field, definition) in fields.filter({ existing.fields[$0.key] == nil }).sorted(by: { $0.key < $1.key }) {
            guard case .object(var o) = definition else { continue }
            o["name"] = .string(field)
            do {
                _ = try await database.addField(collection: existing.name, .object(o))
            } catch let error as AeroError where error.code == .schemaInvalid && error.message.contains("already has a field") {
                continue
            }
        }
    }

    /// The collections of `schemas` that exist gain the fields and indexes added since they
    /// were made; missing ones stay missing (they are created by their first write).
    static func upgradeExisting(_ schemas: [JSONValue], in database: Database) async throws {
        for schema in schemas {
            guard case .string(let name)? = schema["name"], let existing = database.snapshot().state.collections[name]?.schema else { continue }
            try await addMissingFields(schema, to: existing, in: database)
            try await addMissingIndexes(schema, to: existing, in: database)
        }
    }

    /// A system collection made by an older version gains the indexes added since (their fields
    /// are added first; building one is a schema change like any other).
    static func addMissingIndexes(_ schema: JSONValue, to existing: CollectionSchema, in database: Database) async throws {
        guard case .array(let indexes)? = schema["indexes"] else { return }
        let present = Set(existing.indexes.map(\.name))
        for index in indexes {
            guard case .string(let name)? = index["name"], !present.contains(name) else { continue }
            do {
                _ = try await database.addIndex(collection: existing.name, index)
            } catch let error as AeroError where error.code == .indexExists {
                continue  // another request added it just now
            }
        }
    }

    /// Names starting with `_` belong to the system.
    public static func isSystem(_ name: String) -> Bool { name.hasPrefix("_") }
}
