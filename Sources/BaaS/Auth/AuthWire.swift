// The JSON the Supabase auth client parses (supabase-wire §2.3, §2.4, §7): User, Session and the
// access token's claims. Required by the client's models: Session {access_token, refresh_token,
// expires_in (int), token_type, user}; User {id (UUID), aud, app_metadata {}, user_metadata {},
// created_at}; identities complete or absent. Stored secrets never leave through these shapes.

import Kernel

enum AuthWire {
    static let userFields = ["email_confirmed_at", "confirmation_sent_at", "recovery_sent_at", "email_change_sent_at",
                             "new_email", "invited_at", "last_sign_in_at", "banned_until", "created_at", "updated_at"]

    static func user(_ doc: Document, identities: [Document], factors: [Document] = []) -> JSONValue {
        var o: Document = [
            "id": doc["id"] ?? .null, "aud": doc["aud"] ?? .string("authenticated"), "role": doc["role"] ?? .string("authenticated"),
            "email": doc["email"].flatMap { $0.isNull ? nil : $0 } ?? .string(""), "phone": .string(""),
            "app_metadata": doc["app_metadata"] ?? .object([:]), "user_metadata": doc["user_metadata"] ?? .object([:]),
            "is_anonymous": doc["is_anonymous"] ?? .bool(false),
            "identities": .array(identities.map(identity)),
        ]
        if !factors.isEmpty { o["factors"] = .array(factors.map(AuthMFA.factorJSON)) }  // GoTrue omits an empty list
        for field in userFields { o[field] = doc[field] ?? .null }
        o["confirmed_at"] = doc["email_confirmed_at"] ?? .null
        return .object(o)
    }

    static func identity(_ doc: Document) -> JSONValue {
        let data = doc["identity_data"] ?? .object([:])
        return .object([
            "identity_id": doc["id"] ?? .null, "id": doc["provider_id"] ?? .null, "user_id": doc["user_id"] ?? .null,
            "identity_data": data, "provider": doc["provider"] ?? .null, "email": data["email"] ?? .null,
            "last_sign_in_at": doc["last_sign_in_at"] ?? .null, "created_at": doc["created_at"] ?? .null,
            "updated_at": doc["updated_at"] ?? .null,
        ])
    }

    /// GoTrue's claim set (§2.4); `iss` is this node's auth URL as the client addressed it.
    static func claims(user: Document, sessionID: String, aal: String = "aal1", amr: JSONValue, issuer: String, now: Int64, lifetime: Int64) -> JSONValue {
        .object([
            "iss": .string(issuer), "sub": user["id"] ?? .null, "aud": .string("authenticated"),
            "exp": .int(now + lifetime), "iat": .int(now),
            "email": user["email"].flatMap { $0.isNull ? nil : $0 } ?? .string(""), "phone": .string(""),
            "app_metadata": user["app_metadata"] ?? .object([:]), "user_metadata": user["user_metadata"] ?? .object([:]),
            "role": user["role"] ?? .string("authenticated"), "aal": .string(aal), "amr": amr,
            "session_id": .string(sessionID), "is_anonymous": user["is_anonymous"] ?? .bool(false),
        ])
    }

    static func session(accessToken: String, refreshToken: String, lifetime: Int64, now: Int64, user: JSONValue) -> JSONValue {
        .object([
            "access_token": .string(accessToken), "token_type": .string("bearer"), "expires_in": .int(lifetime),
            "expires_at": .int(now + lifetime), "refresh_token": .string(refreshToken), "user": user,
            "provider_token": .null, "provider_refresh_token": .null,
        ])
    }
}

/// Audit rows and dev-outbox messages, as write operations to add to the transaction of the
/// event they describe. An audit row never holds a password, a token or a code.
struct AuthEvent: Sendable {
    let action: String
    var actorID: String?
    var actorRole: String?
    var target: String?
    var ip: String?
    var details: [String: JSONValue] = [:]

    func operation(now: JSONValue) -> WriteOperation {
        .insert(collection: AuthCollections.audit, document: [
            "id": .string(UUIDText.random()), "at": now, "action": .string(action),
            "actor_id": actorID.map(JSONValue.string) ?? .null, "actor_role": actorRole.map(JSONValue.string) ?? .null,
            "target": target.map(JSONValue.string) ?? .null, "ip": ip.map(JSONValue.string) ?? .null,
            "details": details.isEmpty ? .null : .object(details),
        ])
    }
}

struct MailMessage: Sendable {
    let to: String
    let subject: String
    let body: String
    let type: String
    let link: String?

    init(to: String, subject: String, body: String, type: String, link: String?) {
        self.to = to
        self.subject = subject
        self.body = body
        self.type = type
        self.link = link
    }

    /// A message read back from its outbox row.
    init?(_ doc: Document) {
        guard case .string(let to)? = doc["to"], case .string(let subject)? = doc["subject"], case .string(let body)? = doc["body"],
              case .string(let type)? = doc["type"] else { return nil }
        self.init(to: to, subject: subject, body: body, type: type, link: doc["link"]?.stringValue)
    }

    func operation(now: JSONValue) -> WriteOperation {
        .insert(collection: AuthCollections.outbox, document: [
            "id": .string(UUIDText.random()), "to": .string(to), "subject": .string(subject), "body": .string(body),
            "type": .string(type), "link": link.map(JSONValue.string) ?? .null, "created_at": now,
        ])
    }

    static func compose(type: String, to: String, code: String, link: String) -> MailMessage {
        let subject: String
        switch type {
        case "signup": subject = "Confirm your signup"
        case "recovery": subject = "Reset your password"
        case "invite": subject = "You have been invited"
        case "email_change": subject = "Confirm your new email address"
        case "reauthentication": subject = "Confirm reauthentication"
        default: subject = "Your sign-in link"
        }
        return MailMessage(to: to, subject: subject, body: "\(subject): follow \(link) or enter the code \(code)",
                           type: type, link: link)
    }
}
