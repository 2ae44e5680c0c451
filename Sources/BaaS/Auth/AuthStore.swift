// Reads and writes of the auth system collections (AuthCollections). Every change that belongs
// together is one kernel transaction: a sign-in inserts the session, its first refresh token,
// the user's last-sign-in time and the audit event atomically (C1), so a crash never leaves a
// session without its token or an event without its audit row.

import Crypto
import Kernel

struct AuthStore: Sendable {
    let database: Database
    let clock: any KernelClock
    /// Keys the one-time token ids (see `storedID`).
    let secret: [UInt8]

    var nowMicros: Int64 { clock.nowMicros() }
    var nowSeconds: Int64 { nowMicros / 1_000_000 }
    var now: JSONValue { .string(Timestamp.format(nowMicros)) }

    func ensureCollections() async throws {
        try await SystemCollections.ensure(AuthCollections.all, in: database)
    }

    // MARK: Reads (missing collections read as empty: nothing was ever written)

    func document(_ collection: String, _ key: String) throws -> Document? {
        try database.snapshot().documentIfPresent(collection, key: .string(key))
    }

    func rows(_ collection: String, where field: String, equals value: JSONValue, limit: Int = 1_000) throws -> [Document] {
        try database.snapshot().rowsIfPresent(Query(collection: collection, filter: .compare(field: field, op: .eq, value: value),
                                                    limit: limit))
    }

    func user(id: String) throws -> Document? {
        guard let id = UUIDText.normalize(id) else { return nil }
        return try document(AuthCollections.users, id)
    }

    func user(email: String) throws -> Document? {
        try rows(AuthCollections.users, where: "email", equals: .string(Self.normalizeEmail(email))).first
    }

    func identities(of userID: String) throws -> [Document] {
        try rows(AuthCollections.identities, where: "user_id", equals: .string(userID))
    }

    func sessions(of userID: String) throws -> [Document] {
        try rows(AuthCollections.sessions, where: "user_id", equals: .string(userID))
    }

    static func normalizeEmail(_ email: String) -> String { email.trimmingCharacters(in: .whitespaces).lowercased() }

    // MARK: Users

    func newUser(email: String?, passwordHash: String?, confirmed: Bool, userMetadata: [String: JSONValue],
                 appMetadata: [String: JSONValue] = [:], anonymous: Bool = false, id: String? = nil) -> (Document, [WriteOperation]) {
        let id = id ?? UUIDText.random()
        var app = appMetadata
        if !anonymous {
            app["provider"] = app["provider"] ?? .string("email")
            app["providers"] = app["providers"] ?? .array([.string("email")])
        }
        let user: Document = [
            "id": .string(id), "aud": .string("authenticated"), "role": .string("authenticated"),
            "email": email.map { .string(Self.normalizeEmail($0)) } ?? .null, "encrypted_password": passwordHash.map(JSONValue.string) ?? .null,
            "email_confirmed_at": confirmed ? now : .null, "app_metadata": .object(app), "user_metadata": .object(userMetadata),
            "is_anonymous": .bool(anonymous), "created_at": now, "updated_at": now,
        ]
        var ops: [WriteOperation] = [.insert(collection: AuthCollections.users, document: user)]
        if let email { ops.append(emailIdentity(userID: id, email: Self.normalizeEmail(email), verified: confirmed)) }
        return (user, ops)
    }

    func emailIdentity(userID: String, email: String, verified: Bool) -> WriteOperation {
        .insert(collection: AuthCollections.identities, document: [
            "id": .string(UUIDText.random()), "user_id": .string(userID), "provider": .string("email"), "provider_id": .string(userID),
            "identity_data": .object(["sub": .string(userID), "email": .string(email), "email_verified": .bool(verified),
                                      "phone_verified": .bool(false)]),
            "created_at": now, "updated_at": now,
        ])
    }

    func updateUser(_ id: String, _ set: Document) -> WriteOperation {
        var set = set
        set["updated_at"] = now
        return .update(collection: AuthCollections.users, target: .key(.string(id)), set: set)
    }

    /// The email identity follows the user's address and confirmation (created when missing:
    /// an anonymous user who adds an email).
    func syncEmailIdentity(_ userID: String, email: String, verified: Bool) throws -> [WriteOperation] {
        let existing = try identities(of: userID).filter { $0["provider"] == .string("email") }
        if existing.isEmpty { return [emailIdentity(userID: userID, email: email, verified: verified)] }
        return existing.map { identity in
            var data = identity["identity_data"]?.objectValue ?? [:]
            data["email"] = .string(email)
            data["email_verified"] = .bool(verified)
            return .update(collection: AuthCollections.identities, target: .key(identity["id"] ?? .null),
                           set: ["identity_data": .object(data), "updated_at": now])
        }
    }

    // MARK: Sessions and refresh tokens

    struct NewSession {
        let id: String
        let refreshToken: String
        let amr: JSONValue
        let operations: [WriteOperation]
    }

    static let refreshTokenLength = 40

    /// A refresh token as this node issues it: `refreshTokenLength` of [A-Za-z0-9]
    /// (SecureRandom.token). Anything else is refused before a lookup: one token, one spelling.
    static func isRefreshToken(_ text: String) -> Bool {
        text.utf8.count == refreshTokenLength && text.utf8.allSatisfy { c in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
        }
    }

    func newSession(userID: String, method: String, ip: String?, userAgent: String?) -> NewSession {
        let id = UUIDText.random()
        let amr: JSONValue = .array([.object(["method": .string(method), "timestamp": .int(nowSeconds)])])
        let token = SecureRandom.token(Self.refreshTokenLength)
        let ops: [WriteOperation] = [
            .insert(collection: AuthCollections.sessions, document: [
                "id": .string(id), "user_id": .string(userID), "aal": .string("aal1"), "amr": amr,
                "ip": ip.map(JSONValue.string) ?? .null, "user_agent": userAgent.map(JSONValue.string) ?? .null,
                "created_at": now, "updated_at": now,
            ]),
            refreshTokenInsert(token, sessionID: id, userID: userID, parent: nil),
            updateUser(userID, ["last_sign_in_at": now]),
        ]
        return NewSession(id: id, refreshToken: token, amr: amr, operations: ops)
    }

    func refreshTokenInsert(_ token: String, sessionID: String, userID: String, parent: String?) -> WriteOperation {
        .insert(collection: AuthCollections.refreshTokens, document: [
            "id": .string(Self.sha256Hex(token)), "session_id": .string(sessionID), "user_id": .string(userID),
            "parent": parent.map(JSONValue.string) ?? .null, "revoked": .bool(false), "created_at": now,
        ])
    }

    func revokeSessions(_ ids: [JSONValue]) -> [WriteOperation] {
        ids.map { .delete(collection: AuthCollections.sessions, target: .key($0)) }
    }

    // MARK: One-time tokens (email codes and links)

    struct OneTimeToken {
        let code: String
        let hash: String
        let operations: [WriteOperation]
    }

    /// A new code of `type` for `email`; earlier codes of the same type for the user are dropped.
    func newOneTimeToken(userID: String, type: String, email: String, newEmail: String? = nil, length: Int,
                         lifetimeSeconds: Int64, pkce: PKCEChallenge? = nil) throws -> OneTimeToken {
        let code = SecureRandom.digits(length)
        let hash = Self.tokenHash(email: email, code: code)
        var ops: [WriteOperation] = try rows(AuthCollections.oneTimeTokens, where: "user_id", equals: .string(userID))
            .filter { $0["type"] == .string(type) }
            .map { .delete(collection: AuthCollections.oneTimeTokens, target: .key($0["id"] ?? .null)) }
        ops.append(.insert(collection: AuthCollections.oneTimeTokens, document: [
            "id": .string(storedID(hash)), "user_id": .string(userID), "type": .string(type), "email": .string(email),
            "new_email": newEmail.map(JSONValue.string) ?? .null,
            "expires_at": .string(Timestamp.format(nowMicros + lifetimeSeconds * 1_000_000)), "created_at": now,
            "code_challenge": pkce.map { .string($0.challenge) } ?? .null, "code_challenge_method": pkce.map { .string($0.method) } ?? .null,
        ]))
        return OneTimeToken(code: code, hash: hash, operations: ops)
    }

    /// The live token with this hash, or nil when unknown or expired.
    func liveOneTimeToken(hash: String) throws -> Document? {
        guard let token = try document(AuthCollections.oneTimeTokens, storedID(hash)),
              case .string(let expires)? = token["expires_at"], let expiry = Timestamp.parse(expires), expiry > nowMicros else {
            return nil
        }
        return token
    }

    // MARK: Hashes

    static func sha256Hex(_ text: String) -> String { hex(Array(SHA256.hash(data: Array(text.utf8)))) }

    /// A link's `token_hash` as this node writes it: 64 lowercase hex digits.
    static func isTokenHash(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
            || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }

    /// An email code as this node writes it: only decimal digits, as many as `otp_length` may be.
    static func isCode(_ text: String) -> Bool {
        AuthSettings.otpLengthRange.contains(Int64(text.utf8.count))
            && text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }

    /// A one-time token's hash: hex SHA-256 of the email followed by the code (GoTrue uses
    /// SHA-224; the value is opaque to clients).
    static func tokenHash(email: String, code: String) -> String { sha256Hex(email + code) }

    /// The key a one-time token is stored under: HMAC-SHA256 of its hash under the key of
    /// `SecretDomain.oneTimeTokenID` (derived from the cluster secret: no other MAC of the
    /// cluster equals a stored id). The hash is what a link carries (`token_hash`); a leaked
    /// backup holds neither it nor anything a 6-digit code can be guessed against without the secret.
    func storedID(_ tokenHash: String) -> String {
        Self.hex(Array(HMAC<SHA256>.authenticationCode(for: Array(tokenHash.utf8), using: SecretDomain.oneTimeTokenID.key(secret))))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        Hex.lowercase(bytes)
    }
}

/// UUID text as the clients expect it (lowercase, dashed).
enum UUIDText {
    static func random() -> String { FieldValidator.randomUUID() }

    static func normalize(_ text: String) -> String? {
        guard let value = try? FieldValidator.normalize(.string(text), as: .uuid, field: "id"), case .string(let s) = value else { return nil }
        return s
    }
}
