// Email codes and links: sign-up confirmation, magic links and email OTP, recovery, email
// change, invites, reauthentication. A code is `otp_length` digits, valid `otp_expiry` seconds,
// single use; its link is `<node>/auth/v1/verify?token=<hash>&type=<type>&redirect_to=<url>`.
// Mail goes to the outbox (`_auth_outbox`) in the transaction that issues the code; with
// `auth.smtp` it is then delivered and removed (SMTPSender), without it it stays there: the dev
// outbox (GET /admin/v1/outbox), also announced in the log. /recover and /otp answer the same whether or not the address is known.

import Crypto
import Foundation
import Kernel

extension AuthService {
    /// Which stored code types a verify of `type` accepts.
    static func acceptedTokenTypes(_ type: String) -> [String]? {
        switch type {
        case "signup": return ["signup"]
        case "invite": return ["invite"]
        case "magiclink": return ["magiclink", "signup"]
        case "email": return ["magiclink", "signup", "invite"]
        case "recovery": return ["recovery"]
        case "email_change": return ["email_change"]
        default: return nil
        }
    }

    func link(_ hash: String, type: String, _ request: AuthRequest) -> String {
        let redirect = request.redirectTo ?? settings.siteURL
        let encoded = redirect.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        return "\(request.baseURL)/auth/v1/verify?token=\(hash)&type=\(type)&redirect_to=\(encoded)"
    }

    /// The operations that issue a code of `type` to `email` and put the message in the outbox.
    func confirmation(type: String, userID: String, email: String, newEmail: String? = nil,
                      _ request: AuthRequest) throws -> [WriteOperation] {
        let token = try issue(type: type, userID: userID, email: email, newEmail: newEmail, pkce: request.pkce)
        let message = MailMessage.compose(type: type, to: email, code: token.code, link: link(token.hash, type: type, request))
        if settings.smtp == nil {
            logger.info("dev outbox: mail kept, not sent (no auth.smtp); read it at GET /admin/v1/outbox",
                        metadata: ["to": "\(email)", "type": "\(type)", "subject": "\(message.subject)"])
        }
        var ops = token.operations + [message.operation(now: store.now)]
        if let field = Self.sentField(type) { ops.append(store.updateUser(userID, [field: store.now])) }
        return ops
    }

    func issue(type: String, userID: String, email: String, newEmail: String? = nil, pkce: PKCEChallenge? = nil) throws -> AuthStore.OneTimeToken {
        try store.newOneTimeToken(userID: userID, type: type, email: email, newEmail: newEmail, length: settings.otpLength,
                                  lifetimeSeconds: settings.otpExpirySeconds, pkce: pkce)
    }

    static func sentField(_ type: String) -> String? {
        switch type {
        case "signup": return "confirmation_sent_at"
        case "recovery", "magiclink": return "recovery_sent_at"
        case "email_change": return "email_change_sent_at"
        case "invite": return "invited_at"
        default: return nil
        }
    }

    func sendCode(type: String, user: Document, email: String, _ request: AuthRequest) async throws {
        try limitEmail(email)
        let id = user["id"]!.stringValue!
        let action = type == "recovery" ? "user_recovery_requested" : "user_confirmation_requested"
        try await commit(try confirmation(type: type, userID: id, email: email, request) + [event(action, user: id, target: id, request)])
    }

    // MARK: Endpoints

    func recover(_ body: JSONValue, _ request: AuthRequest) async throws {
        try limit("otp", settings.rateLimits.otp, request)
        let email = try validEmail(body["email"])
        guard let user = try store.user(email: email) else { return }
        try await sendCode(type: "recovery", user: user, email: email, request)
    }

    func otp(_ body: JSONValue, _ request: AuthRequest) async throws {
        try limit("otp", settings.rateLimits.otp, request)
        if body["phone"]?.stringValue != nil { throw AuthFailure.badRequest("phone_provider_disabled", "Phone OTP is not built yet") }
        let email = try validEmail(body["email"])
        if let user = try store.user(email: email) {
            let confirmed = !(user["email_confirmed_at"]?.isNull ?? true)
            return try await sendCode(type: confirmed ? "magiclink" : "signup", user: user, email: email, request)
        }
        guard body["create_user"]?.boolValue ?? true else {
            throw AuthFailure.unprocessable("otp_disabled", "Signups not allowed for otp")
        }
        guard !settings.disableSignup else { throw AuthFailure.unprocessable("signup_disabled", "Signups not allowed for this instance") }
        try limitEmail(email)
        let (user, ops) = store.newUser(email: email, passwordHash: nil, confirmed: false, userMetadata: try Self.metadata(body, "data"))
        let id = user["id"]!.stringValue!
        try await commit(ops + (try confirmation(type: "signup", userID: id, email: email, request))
            + [event("user_confirmation_requested", user: id, target: id, request)])
    }

    func resend(_ body: JSONValue, _ request: AuthRequest) async throws {
        try limit("otp", settings.rateLimits.otp, request)
        guard case .string(let type)? = body["type"], ["signup", "email_change"].contains(type) else {
            throw AuthFailure.validation("resend supports type signup or email_change (phone is not built yet)")
        }
        let email = try validEmail(body["email"])
        if type == "signup" {
            guard let user = try store.user(email: email), user["email_confirmed_at"]?.isNull ?? true else { return }
            return try await sendCode(type: "signup", user: user, email: email, request)
        }
        // By the current address, or by the pending new one.
        guard let user = try store.user(email: email) ?? store.rows(AuthCollections.users, where: "new_email", equals: .string(email)).first,
              case .string(let newEmail)? = user["new_email"] else { return }
        try limitEmail(newEmail)
        let id = user["id"]!.stringValue!
        try await commit(try confirmation(type: "email_change", userID: id, email: newEmail, request)
            + [event("user_confirmation_requested", user: id, target: id, request)])
    }

    /// Verifies a code (`email` + `token`) or a link's `token_hash`; answers a session.
    func verify(type: String, tokenHash: String?, email: String?, code: String?, _ request: AuthRequest) async throws -> JSONValue {
        let v = try await verified(type: type, tokenHash: tokenHash, email: email, code: code, request)
        return try await signIn(v.userID, method: v.method, request, with: v.operations, action: v.action)
    }

    /// The mail link (GET /verify): a session, or for a code requested by a client in PKCE mode
    /// an authorization code to exchange with its verifier (`grant_type=pkce`).
    func verifyLink(type: String, tokenHash: String?, _ request: AuthRequest) async throws -> VerifyOutcome {
        let v = try await verified(type: type, tokenHash: tokenHash, email: nil, code: nil, request)
        guard case .string(let challenge)? = v.token["code_challenge"], case .string(let method)? = v.token["code_challenge_method"] else {
            return .session(try await signIn(v.userID, method: v.method, request, with: v.operations, action: v.action))
        }
        let authCode = UUIDText.random()
        let flow: Document = [
            "id": .string(store.storedID(AuthStore.sha256Hex(authCode))), "user_id": .string(v.userID), "type": .string("pkce"),
            "email": v.token["email"] ?? .string(""), "code_challenge": .string(challenge), "code_challenge_method": .string(method),
            "method": .string(v.method), "expires_at": .string(Timestamp.format(store.nowMicros + Self.flowStateSeconds * 1_000_000)),
            "created_at": store.now,
        ]
        try await commit(v.operations + [.insert(collection: AuthCollections.oneTimeTokens, document: flow)])
        return .authCode(authCode)
    }

    enum VerifyOutcome {
        case session(JSONValue)
        case authCode(String)
    }

    /// How long a PKCE authorization code can be exchanged (GoTrue's flow state: 5 minutes).
    static let flowStateSeconds: Int64 = 300

    /// `grant_type=pkce`: the authorization code from a mail link and the verifier whose SHA-256
    /// (s256) or text (plain) is the challenge the client sent when it asked for the mail.
    func exchange(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("token", settings.rateLimits.token, request)
        guard case .string(let authCode)? = body["auth_code"], case .string(let verifier)? = body["code_verifier"], !verifier.isEmpty else {
            throw AuthFailure.validation("grant_type=pkce needs auth_code and code_verifier")
        }
        guard PKCEChallenge.isWellFormed(verifier) else {
            throw AuthFailure.validation("code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~")
        }
        // The code is a UUID this node issued, in its canonical (lowercase) text only.
        guard UUIDText.normalize(authCode) == authCode,
              let flow = try store.liveOneTimeToken(hash: AuthStore.sha256Hex(authCode)), flow["type"] == .string("pkce"),
              case .string(let userID)? = flow["user_id"], case .string(let challenge)? = flow["code_challenge"] else {
            throw AuthFailure.notFound("flow_state_not_found", "invalid flow state, no valid flow state found")
        }
        let computed = flow["code_challenge_method"] == .string("plain")
            ? verifier : JWT.base64URL(Array(SHA256.hash(data: Array(verifier.utf8))))
        guard Self.constantTimeEqual(computed, challenge) else {
            throw AuthFailure.forbidden("bad_code_verifier", "code challenge does not match previously saved code verifier")
        }
        return try await signIn(userID, method: flow["method"]?.stringValue ?? "otp", request,
                                with: [.delete(collection: AuthCollections.oneTimeTokens, target: .key(flow["id"] ?? .null))])
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    struct Verified {
        let userID: String
        let token: Document
        let operations: [WriteOperation]
        let method: String
        let action: String
    }

    /// Checks and consumes a code; the operations confirm the address (or switch it, for an
    /// email change) and delete the code. Nothing is committed here.
    func verified(type: String, tokenHash: String?, email: String?, code: String?, _ request: AuthRequest) async throws -> Verified {
        try limit("verify", settings.rateLimits.verify, request)
        guard let accepted = Self.acceptedTokenTypes(type) else {
            throw AuthFailure.validation("Verify requires a valid type (signup, invite, magiclink, email, recovery, email_change; phone is not built yet)")
        }
        let hash: String?
        if let tokenHash, !tokenHash.isEmpty {
            hash = AuthStore.isTokenHash(tokenHash) ? tokenHash : nil
        } else if let email, let code, !code.isEmpty {
            let address = AuthStore.normalizeEmail(email)
            // Guessing a code: the per-IP budget alone would let many addresses spread the work.
            guard limiter.allow("verify-address", key: address, budget: settings.rateLimits.verify, nowSeconds: store.nowSeconds) else {
                throw AuthFailure.rateLimited("over_request_rate_limit")
            }
            hash = AuthStore.isCode(code) ? AuthStore.tokenHash(email: address, code: code) : nil
        } else {
            throw AuthFailure.validation("Verify requires a token_hash, or an email and a token")
        }
        // A code or hash not in the one form this node issues names no token (answered as one
        // that expired, like any unknown one).
        guard let hash, let token = try store.liveOneTimeToken(hash: hash), case .string(let stored)? = token["type"], accepted.contains(stored),
              case .string(let userID)? = token["user_id"], let user = try store.user(id: userID) else {
            await recordFailure("verify_failed", target: email, request, reason: "otp_expired")
            throw AuthFailure.otpExpired
        }
        var ops: [WriteOperation] = [.delete(collection: AuthCollections.oneTimeTokens, target: .key(token["id"] ?? .null))]
        var set: Document = [:]
        let address = (stored == "email_change" ? token["new_email"]?.stringValue : nil) ?? token["email"]?.stringValue ?? ""
        if stored == "email_change" {
            set = ["email": .string(address), "new_email": .null, "email_confirmed_at": store.now, "is_anonymous": .bool(false)]
            ops += try store.syncEmailIdentity(userID, email: address, verified: true)
        } else if user["email_confirmed_at"]?.isNull ?? true {
            set["email_confirmed_at"] = store.now
            ops += try store.syncEmailIdentity(userID, email: address, verified: true)
        }
        if !set.isEmpty { ops.append(store.updateUser(userID, set)) }
        let action = stored == "signup" && (user["email_confirmed_at"]?.isNull ?? true) ? "user_signedup" : "login"
        return Verified(userID: userID, token: token, operations: ops, method: Self.method(stored), action: action)
    }

    static func method(_ tokenType: String) -> String {
        switch tokenType {
        case "signup": return "email/signup"
        case "magiclink": return "otp"
        default: return tokenType
        }
    }
}
