// The GoTrue flows of `/auth/v1` over AuthStore: sign-up, sign-in, refresh-token rotation with
// reuse detection, user updates, sign-out scopes, email codes and links. Every event is one
// kernel transaction together with its audit row (and its outbox message, when it sends mail).
//
// Refresh tokens (invariants):
// - a refresh rotates: the presented token is marked revoked and a child token is issued in the
//   same session (`session_id` never changes);
// - a revoked token presented within `refresh_token_reuse_interval` of its rotation gets a new
//   sibling (two tabs refreshing at once); presented later it is reuse: the whole session (its
//   token family) is deleted and the caller gets `refresh_token_already_used`.

import Kernel
import Logging
import NIOPosix
import Synchronization

/// What a flow needs from the HTTP request.
struct AuthRequest: Sendable {
    let ip: String?
    let userAgent: String?
    /// `http://<Host>` as the client addressed this node.
    let baseURL: String
    let redirectTo: String?
    /// The PKCE challenge a client in PKCE mode sent with a request that mails a link.
    var pkce: PKCEChallenge?

    var issuer: String { baseURL + "/auth/v1" }
}

struct PKCEChallenge: Sendable {
    let challenge: String
    /// `s256` or `plain`.
    let method: String
    /// RFC 7636 §4.2: a challenge (and a verifier) is 43 to 128 characters.
    static let lengthRange = 43...128

    /// RFC 7636 §4.1: `lengthRange` characters of the unreserved set [A-Z a-z 0-9 - . _ ~].
    static func isWellFormed(_ text: String) -> Bool {
        lengthRange.contains(text.utf8.count) && text.utf8.allSatisfy { c in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || "-._~".utf8.contains(c)
        }
    }

    /// From a request body's `code_challenge` and `code_challenge_method`; nil when absent.
    init?(_ body: JSONValue) throws {
        guard case .string(let challenge)? = body["code_challenge"], !challenge.isEmpty else { return nil }
        let method = (body["code_challenge_method"]?.stringValue ?? "plain").lowercased()
        guard ["s256", "plain"].contains(method), Self.isWellFormed(challenge) else {
            throw AuthFailure.validation("code_challenge must be 43-128 characters of A-Z a-z 0-9 - . _ ~ with code_challenge_method s256 or plain")
        }
        self.challenge = challenge
        self.method = method
    }
}

final class AuthService: Sendable {
    let store: AuthStore
    private let fileSettings: AuthSettings
    /// The cluster-wide settings laid over the file's (ClusterSettings), read per request.
    private let liveSettings: (@Sendable () -> AuthSettings)?
    var settings: AuthSettings { liveSettings?() ?? fileSettings }
    let secret: [UInt8]
    let limiter = RateLimiter()
    let logger: Logger
    /// Verified when an email is unknown, so a sign-in takes as long whether or not it exists;
    /// remade at the current cost when `auth.argon2` changes (a cluster setting).
    private let decoy: Mutex<(cost: PasswordCost, hash: String)>

    init(database: Database, settings: AuthSettings, secret: [UInt8], clock: any KernelClock, logger: Logger,
         live: (@Sendable () -> AuthSettings)? = nil) throws {
        store = AuthStore(database: database, clock: clock, secret: secret)
        fileSettings = settings
        liveSettings = live
        self.secret = secret
        self.logger = logger
        decoy = Mutex((settings.passwordCost, try PasswordHasher.hash(SecureRandom.token(16), cost: settings.passwordCost)))
    }

    /// The decoy hash at the current cost (hashed off the cooperative pool when the cost changed).
    func decoyHash() async throws -> String {
        let cost = settings.passwordCost
        if let hit = decoy.withLock({ $0.cost == cost ? $0.hash : nil }) { return hit }
        let fresh = try await NIOThreadPool.singleton.runIfActive { try PasswordHasher.hash(SecureRandom.token(16), cost: cost) }
        decoy.withLock { $0 = (cost, fresh) }
        return fresh
    }

    // MARK: Commits

    func commit(_ operations: [WriteOperation], check: (any ChangeCheck)? = nil) async throws {
        try await store.ensureCollections()
        _ = try await store.database.commit(operations, check: check)
        for case .insert(AuthCollections.audit, let row) in operations {  // aerodb_auth_events_total
            NodeMetrics.shared.countAuthEvent(row["action"]?.stringValue ?? "")
        }
        deliver(operations.compactMap { op -> Document? in
            if case .insert(AuthCollections.outbox, let doc) = op { return doc }
            return nil
        })
    }

    /// Sends committed outbox messages over SMTP (when configured) off the request path, and
    /// deletes each delivered row; a failed delivery stays in the outbox and is logged.
    func deliver(_ messages: [Document]) {
        guard let smtp = settings.smtp, !messages.isEmpty else { return }
        let sender = SMTPSender(settings: smtp)
        let (database, logger) = (store.database, self.logger)
        Task.detached {
            for doc in messages {
                guard let message = MailMessage(doc), let id = doc["id"] else { continue }
                do {
                    try await NIOThreadPool.singleton.runIfActive { try sender.send(message) }  // blocking socket I/O
                    // By filter, not key: retention may have trimmed the row meanwhile (outbox ring).
                    _ = try await database.commit([.delete(collection: AuthCollections.outbox,
                                                           target: .matching(.compare(field: "id", op: .eq, value: id)))])
                    logger.info("mail delivered over SMTP", metadata: ["to": "\(message.to)", "type": "\(message.type)"])
                } catch {
                    logger.error("mail not delivered; it stays in the outbox", metadata: ["to": "\(message.to)", "error": "\(error)"])
                }
            }
        }
    }

    func event(_ action: String, user: String? = nil, role: String? = nil, target: String? = nil, _ request: AuthRequest,
               details: [String: JSONValue] = [:]) -> WriteOperation {
        AuthEvent(action: action, actorID: user, actorRole: role, target: target, ip: request.ip, details: details)
            .operation(now: store.now)
    }

    /// Records a refused attempt (its own transaction: nothing else changed).
    func recordFailure(_ action: String, target: String?, _ request: AuthRequest, reason: String) async {
        do {
            try await commit([event(action, target: target, request, details: ["reason": .string(reason)])])
        } catch {
            logger.error("audit row not written", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    // MARK: Rate limits

    func limit(_ name: String, _ budget: AuthRateLimits.Budget, _ request: AuthRequest) throws {
        guard limiter.allow(name, key: request.ip ?? "unknown", budget: budget, nowSeconds: store.nowSeconds) else {
            throw AuthFailure.rateLimited("over_request_rate_limit")
        }
    }

    func limitEmail(_ email: String) throws {
        guard limiter.allow("email", key: email, budget: settings.rateLimits.emailPerAddress, nowSeconds: store.nowSeconds) else {
            throw AuthFailure.rateLimited("over_email_send_rate_limit")
        }
    }

    // MARK: Validation

    static let emailBytesMax = 255

    func validEmail(_ value: JSONValue?) throws -> String {
        guard case .string(let raw)? = value else { throw AuthFailure.validation("An email address is required") }
        let email = AuthStore.normalizeEmail(raw)
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.utf8.count <= Self.emailBytesMax, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !parts[1].hasPrefix("."), !parts[1].hasSuffix("."), !email.contains(where: { $0.isWhitespace }) else {
            throw AuthFailure(status: .badRequest, code: "email_address_invalid", message: "Unable to validate email address: invalid format")
        }
        return email
    }

    func checkPassword(_ password: String) throws {
        guard password.utf8.count <= PasswordHasher.passwordBytesMax else {
            throw AuthFailure.validation("Password cannot be longer than \(PasswordHasher.passwordBytesMax) bytes")
        }
        var reasons: [JSONValue] = []
        if password.count < settings.passwordMinLength { reasons.append(.string("length")) }
        if settings.passwordRequiredCharacters.contains(where: { set in !password.contains(where: set.contains) }) {
            reasons.append(.string("characters"))
        }
        guard reasons.isEmpty else {
            var failure = AuthFailure.unprocessable("weak_password", reasons.first == .string("length")
                ? "Password should be at least \(settings.passwordMinLength) characters."
                : "Password should contain at least one character of each of: \(settings.passwordRequiredCharacters.joined(separator: ", "))")
            failure.extra["weak_password"] = .object(["reasons": .array(reasons)])
            throw failure
        }
    }

    func password(_ body: JSONValue) throws -> String {
        guard case .string(let password)? = body["password"], !password.isEmpty else {
            throw AuthFailure.validation("A password is required")
        }
        guard password.utf8.count <= PasswordHasher.passwordBytesMax else {
            throw AuthFailure.validation("Password cannot be longer than \(PasswordHasher.passwordBytesMax) bytes")
        }
        return password
    }

    /// argon2id runs for tens of milliseconds: on NIO's blocking-work pool, never on the
    /// cooperative executor (two threads on two cores: a burst of sign-ins would stall every request).
    func hash(_ password: String) async throws -> String {
        let cost = settings.passwordCost
        return try await NIOThreadPool.singleton.runIfActive { try PasswordHasher.hash(password, cost: cost) }
    }

    func verify(_ password: String, _ encoded: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { PasswordHasher.verify(password, encoded: encoded) }
    }

    static func metadata(_ body: JSONValue, _ key: String) throws -> [String: JSONValue] {
        switch body[key] {
        case nil, .null?: return [:]
        case .object(let o)?: return o
        default: throw AuthFailure.validation("\(key) must be an object")
        }
    }

    // MARK: Sessions

    func userJSON(_ user: Document) throws -> JSONValue {
        let id = user["id"]?.stringValue ?? ""
        return AuthWire.user(user, identities: try store.identities(of: id), factors: try factors(of: id))
    }

    /// ES256 with the cluster's current signing key when it has one (AuthSigningKeys), else HS256.
    func accessToken(_ user: Document, sessionID: String, aal: String = "aal1", amr: JSONValue, _ request: AuthRequest) -> String {
        let claims = AuthWire.claims(user: user, sessionID: sessionID, aal: aal, amr: amr, issuer: request.issuer, now: store.nowSeconds,
                                     lifetime: settings.accessTokenSeconds)
        do {
            if let (kid, key) = try AuthSigningKeys.current(store.database.snapshot(), secret: secret) {
                return try JWT.signES256(claims, kid: kid, key: key)
            }
        } catch {
            // A key that cannot be unsealed (another cluster secret?) must not stop sign-ins: say so.
            logger.error("the current signing key cannot be used; signing HS256", metadata: ["error": "\(error)"])
        }
        return JWT.sign(claims, secret: secret)
    }

    /// Starts a session for `userID` in one transaction with `operations` and `action`'s audit row.
    func signIn(_ userID: String, method: String, _ request: AuthRequest, with operations: [WriteOperation] = [],
                action: String = "login") async throws -> JSONValue {
        let session = store.newSession(userID: userID, method: method, ip: request.ip, userAgent: request.userAgent)
        try await commit(operations + session.operations
            + [event(action, user: userID, role: "authenticated", target: userID, request, details: ["method": .string(method)])])
        guard let user = try store.user(id: userID) else { throw AuthFailure.userNotFound }
        return AuthWire.session(accessToken: accessToken(user, sessionID: session.id, amr: session.amr, request),
                                refreshToken: session.refreshToken, lifetime: settings.accessTokenSeconds,
                                now: store.nowSeconds, user: try userJSON(user))
    }

    func isBanned(_ user: Document) -> Bool {
        guard case .string(let until)? = user["banned_until"], let t = Timestamp.parse(until) else { return false }
        return t > store.nowMicros
    }

    // MARK: Sign-up and sign-in

    func signUp(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("signup", settings.rateLimits.signup, request)
        if body["phone"]?.stringValue != nil {
            throw AuthFailure.badRequest("phone_provider_disabled", "Phone sign-ups are not built yet: use an email address")
        }
        let data = try Self.metadata(body, "data")
        guard body["email"] != nil, body["email"] != .null else { return try await signInAnonymously(data, request) }
        guard !settings.disableSignup else { throw AuthFailure.unprocessable("signup_disabled", "Signups not allowed for this instance") }
        let email = try validEmail(body["email"])
        let password = try password(body)
        try checkPassword(password)
        if let existing = try store.user(email: email) {
            guard existing["email_confirmed_at"]?.isNull ?? true else {
                // As GoTrue: with confirmations on, answer a look-alike user (nothing is sent), so
                // sign-up does not tell who has an account; with autoconfirm there is no hiding it.
                guard settings.mailerAutoconfirm else { return Self.obfuscatedUser(email: email, data: data, now: store.now) }
                throw AuthFailure.unprocessable("user_already_exists", "User already registered")
            }
            try await sendCode(type: "signup", user: existing, email: email, request)
            return try userJSON(try store.user(email: email) ?? existing)
        }
        let (user, ops) = store.newUser(email: email, passwordHash: try await hash(password), confirmed: settings.mailerAutoconfirm,
                                        userMetadata: data)
        let id = user["id"]!.stringValue!
        if settings.mailerAutoconfirm {
            return try await signIn(id, method: "password", request, with: ops, action: "user_signedup")
        }
        try limitEmail(email)
        let code = try confirmation(type: "signup", userID: id, email: email, request)
        try await commit(ops + code + [event("user_confirmation_requested", user: id, target: id, request)])
        return try userJSON(try store.user(id: id) ?? user)
    }

    static func obfuscatedUser(email: String, data: [String: JSONValue], now: JSONValue) -> JSONValue {
        AuthWire.user(["id": .string(UUIDText.random()), "email": .string(email), "user_metadata": .object(data),
                       "app_metadata": .object(["provider": .string("email"), "providers": .array([.string("email")])]),
                       "confirmation_sent_at": now, "created_at": now, "updated_at": now], identities: [])
    }

    func signInAnonymously(_ data: [String: JSONValue], _ request: AuthRequest) async throws -> JSONValue {
        guard settings.anonymousSignIns, !settings.disableSignup else {
            throw AuthFailure.unprocessable("anonymous_provider_disabled", "Anonymous sign-ins are disabled")
        }
        let (user, ops) = store.newUser(email: nil, passwordHash: nil, confirmed: false, userMetadata: data, anonymous: true)
        return try await signIn(user["id"]!.stringValue!, method: "anonymous", request, with: ops, action: "user_signedup")
    }

    func signInWithPassword(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("token", settings.rateLimits.token, request)
        if body["phone"]?.stringValue != nil { throw AuthFailure.badRequest("phone_provider_disabled", "Phone sign-in is not built yet") }
        let email = try validEmail(body["email"])
        let password = try password(body)
        // Per address too: guessing one account's password from many addresses.
        guard limiter.allow("token-address", key: email, budget: settings.rateLimits.token, nowSeconds: store.nowSeconds) else {
            throw AuthFailure.rateLimited("over_request_rate_limit")
        }
        let user = try store.user(email: email)
        let stored = user?["encrypted_password"]?.stringValue
        let encoded: String
        if let stored { encoded = stored } else { encoded = try await decoyHash() }
        let matches = try await verify(password, encoded) && stored != nil
        guard let user, matches else {
            await recordFailure("login_failed", target: email, request, reason: "invalid_credentials")
            throw AuthFailure.invalidCredentials
        }
        guard !isBanned(user) else { throw AuthFailure.badRequest("user_banned", "User is banned") }
        guard !(user["email_confirmed_at"]?.isNull ?? true) else {
            throw AuthFailure.badRequest("email_not_confirmed", "Email not confirmed")
        }
        return try await signIn(user["id"]!.stringValue!, method: "password", request)
    }

    func refresh(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("token", settings.rateLimits.token, request)
        guard case .string(let token)? = body["refresh_token"], !token.isEmpty else {
            throw AuthFailure.badRequest("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        }
        // Only the form this node issues (40 of [A-Za-z0-9]); anything else names no token.
        guard AuthStore.isRefreshToken(token) else {
            throw AuthFailure.badRequest("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        }
        let hash = AuthStore.sha256Hex(token)
        guard let row = try store.document(AuthCollections.refreshTokens, hash), case .string(let sessionID)? = row["session_id"],
              let session = try store.document(AuthCollections.sessions, sessionID),
              case .string(let userID)? = row["user_id"], let user = try store.user(id: userID) else {
            throw AuthFailure.badRequest("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        }
        guard !isBanned(user) else { throw AuthFailure.badRequest("user_banned", "User is banned") }
        let notFound = AuthFailure.badRequest("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        func reuse() async throws -> Never {
            let audit = event("token_revoked", user: userID, target: sessionID, request, details: ["reason": .string("refresh token reused")])
            do {
                try await commit(store.revokeSessions([.string(sessionID)]) + [audit])
            } catch let error as AeroError where error.code == .documentNotFound {
                try await commit([audit])  // a concurrent reuse of the family deleted the session first
            }
            throw AuthFailure.badRequest("refresh_token_already_used", "Invalid Refresh Token: Already Used")
        }
        // Interval 0: every second presentation is reuse, however close in time.
        let interval = settings.refreshReuseIntervalSeconds
        let withinReuseInterval = { (rotatedMicros: Int64) in
            interval > 0 && AuthInput.subtract(self.store.nowMicros, rotatedMicros) <= AuthInput.multiply(interval, 1_000_000)
        }
        let child = SecureRandom.token(AuthStore.refreshTokenLength)
        let childHash = AuthStore.sha256Hex(child)
        let issue: [WriteOperation] = [
            store.refreshTokenInsert(child, sessionID: sessionID, userID: userID, parent: hash),
            .update(collection: AuthCollections.sessions, target: .key(.string(sessionID)), set: ["updated_at": store.now]),
            event("token_refreshed", user: userID, role: "authenticated", target: sessionID, request),
        ]
        if row["revoked"] == .bool(true) {
            // Already rotated: a sibling within the reuse interval (two tabs), else reuse.
            guard withinReuseInterval(row["rotated_at"]?.stringValue.flatMap(Timestamp.parse) ?? 0) else { try await reuse() }
            try await commit(issue)
        } else {
            // The rotation is a compare-and-set in the writer: the transaction commits only if the
            // token is still unrevoked there (RefreshRotation), so of concurrent refreshes of one
            // token exactly one rotates it (C1). `rotated_to` (the child, unique to this attempt)
            // makes the update a change even when two attempts share a timestamp.
            let rotate = WriteOperation.update(collection: AuthCollections.refreshTokens, target: .key(.string(hash)),
                                               set: ["revoked": .bool(true), "rotated_at": store.now, "rotated_to": .string(childHash)])
            do {
                try await commit([rotate] + issue, check: RefreshRotation(tokenID: hash))
            } catch let error as AeroError where error.code == .documentNotFound {
                throw notFound  // the session (and its tokens) was revoked meanwhile
            } catch is RefreshRotation.Lost {
                // Another request rotated it a moment ago: what it is now decides, as for any
                // rotated token (a sibling within the interval; with interval 0, reuse).
                guard interval > 0 else { try await reuse() }
                try await commit(issue)
            }
        }
        let amr = session["amr"] ?? .array([])
        let aal = session["aal"]?.stringValue ?? "aal1"  // an MFA-verified session stays aal2 (AuthMFA)
        return AuthWire.session(accessToken: accessToken(user, sessionID: sessionID, aal: aal, amr: amr, request), refreshToken: child,
                                lifetime: settings.accessTokenSeconds, now: store.nowSeconds, user: try userJSON(user))
    }

    // MARK: Signed-in user

    func currentUser(_ caller: Caller) throws -> Document {
        guard caller.role == "authenticated", let id = caller.userID else {
            throw AuthFailure.forbidden("bad_jwt", "invalid claim: missing sub claim (a user access token is required)")
        }
        guard let user = try store.user(id: id) else { throw AuthFailure.forbidden("user_not_found", "User from sub claim in JWT does not exist") }
        return user
    }

    func logout(_ caller: Caller, scope: String, _ request: AuthRequest) async throws {
        let user = try currentUser(caller)
        let id = user["id"]!.stringValue!
        let sessions = try store.sessions(of: id).compactMap { $0["id"] }
        let current = caller.sessionID.flatMap(UUIDText.normalize).map(JSONValue.string)
        let revoked: [JSONValue]
        switch scope {
        case "global": revoked = sessions
        case "local": revoked = current.map { [$0] } ?? []
        case "others": revoked = sessions.filter { $0 != current }
        default: throw AuthFailure.validation("scope must be global, local or others")
        }
        try await commit(store.revokeSessions(revoked)
            + [event("logout", user: id, role: "authenticated", target: id, request, details: ["scope": .string(scope)])])
    }

    func updateUser(_ caller: Caller, _ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        let user = try currentUser(caller)
        let id = user["id"]!.stringValue!
        var set: Document = [:]
        var ops: [WriteOperation] = []
        var actions: [String] = []
        if body["data"] != nil, body["data"] != .null {
            set["user_metadata"] = .object(Self.merge(user["user_metadata"]?.objectValue ?? [:], try Self.metadata(body, "data")))
            actions.append("user_modified")
        }
        if case .string(let newPassword)? = body["password"] {
            ops += try await checkPasswordChange(user, caller, newPassword: newPassword, body)
            set["encrypted_password"] = .string(try await hash(newPassword))
            // A new password signs out every other session (a thief's refresh token dies with it).
            let current = caller.sessionID.flatMap(UUIDText.normalize).map(JSONValue.string)
            ops += store.revokeSessions(try store.sessions(of: id).compactMap { $0["id"] }.filter { $0 != current })
            actions.append("user_updated_password")
        }
        if body["email"] != nil, body["email"] != .null {
            let email = try validEmail(body["email"])
            if email != user["email"]?.stringValue {
                if let other = try store.user(email: email), other["id"] != user["id"] {
                    throw AuthFailure.unprocessable("email_exists", "A user with this email address has already been registered")
                }
                if settings.mailerAutoconfirm {
                    set["email"] = .string(email)
                    set["email_confirmed_at"] = store.now
                    set["is_anonymous"] = .bool(false)
                    ops += try store.syncEmailIdentity(id, email: email, verified: true)
                } else {
                    try limitEmail(email)
                    set["new_email"] = .string(email)
                    set["email_change_sent_at"] = store.now
                    ops += try confirmation(type: "email_change", userID: id, email: email, request)
                }
                actions.append("user_modified")
            }
        }
        guard !set.isEmpty else { return try userJSON(user) }
        try await commit([store.updateUser(id, set)] + ops
            + actions.map { event($0, user: id, role: "authenticated", target: id, request) })
        return try userJSON(try store.user(id: id) ?? user)
    }

    /// GoTrue's rules: never the same password; with `current_password` it must match; with
    /// `secure_password_change`, a sign-in older than a day needs the code from /reauthenticate
    /// (consumed by the change: the operations returned delete it).
    func checkPasswordChange(_ user: Document, _ caller: Caller, newPassword: String, _ body: JSONValue) async throws -> [WriteOperation] {
        try checkPassword(newPassword)
        let stored = user["encrypted_password"]?.stringValue
        if let stored, try await verify(newPassword, stored) {
            throw AuthFailure.unprocessable("same_password", "New password should be different from the old password.")
        }
        if case .string(let current)? = body["current_password"] {
            guard let stored, try await verify(current, stored) else {
                throw AuthFailure.badRequest("invalid_credentials", "Current password is incorrect")
            }
        }
        guard settings.securePasswordChange else { return [] }
        let signedIn = caller.claims["amr"]?.arrayValue?.first?["timestamp"]?.intValue ?? 0
        if AuthInput.subtract(store.nowSeconds, signedIn) <= AuthSettings.recentSignInSeconds { return [] }
        guard case .string(let nonce)? = body["nonce"] else {
            throw AuthFailure.badRequest("reauthentication_needed", "Password update requires reauthentication")
        }
        let email = user["email"]?.stringValue ?? ""
        guard let token = try store.liveOneTimeToken(hash: AuthStore.tokenHash(email: email, code: nonce)),
              token["type"] == .string("reauthentication"), token["user_id"] == user["id"] else {
            throw AuthFailure.badRequest("reauthentication_not_valid", "Verification code is invalid or has expired")
        }
        return [.delete(collection: AuthCollections.oneTimeTokens, target: .key(token["id"] ?? .null))]
    }

    /// Top-level merge as GoTrue does it: given keys replace, a null value removes the key.
    static func merge(_ base: [String: JSONValue], _ changes: [String: JSONValue]) -> [String: JSONValue] {
        var out = base
        for (key, value) in changes { out[key] = value.isNull ? nil : value }
        return out
    }

    func reauthenticate(_ caller: Caller, _ request: AuthRequest) async throws {
        let user = try currentUser(caller)
        guard case .string(let email)? = user["email"] else { throw AuthFailure.validation("Reauthentication needs an email address") }
        try limitEmail(email)
        let id = user["id"]!.stringValue!
        try await commit(try confirmation(type: "reauthentication", userID: id, email: email, request)
            + [event("user_reauthenticate_requested", user: id, target: id, request)])
    }
}

/// The compare-and-set of a refresh-token rotation, evaluated by the writer on the resolved
/// changes of the rotating transaction (under its lock, against the latest state): the token's
/// row must go from unrevoked to revoked in this very transaction, else the whole transaction is
/// refused with `Lost` and nothing of it happens (C1).
struct RefreshRotation: ChangeCheck {
    struct Lost: Error {}
    let tokenID: String

    func check(_ change: DocumentChange) throws {
        guard change.collection == AuthCollections.refreshTokens, change.key == .string(tokenID) else { return }
        guard change.before?["revoked"] == .bool(false) else { throw Lost() }
    }
}
