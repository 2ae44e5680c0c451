// The GoTrue admin API (`/auth/v1/admin/*`, `/auth/v1/invite`; service_role key only):
// user list/create/get/update/delete and generate_link. Deleting is always a hard delete
// (identities, sessions and refresh tokens go with the user); `should_soft_delete` is ignored.

import Kernel

extension AuthService {
    static let perPageDefault: Int64 = 50
    /// GoTrue's page-size ceiling: a larger `per_page` is clamped to it (as GoTrue does).
    static let perPageMax: Int64 = 1_000
    /// `per_page` accepted: at least one user a page, at most what an Int64 holds (clamped to
    /// `perPageMax`); anything else is GoTrue's 400 "Bad Pagination Parameters".
    static let perPageRange: ClosedRange<Int64> = 1...Int64.max
    /// `page` accepted: the first page is 1; past the page whose offset is the kernel's largest
    /// (`Query.offsetMax`) at one user a page nothing could ever be listed.
    static let pageRange: ClosedRange<Int64> = 1...Int64(Query.offsetMax) + 1
    /// `ban_duration` accepted: a second to a century (Go's durations end at ~292 years; a
    /// century keeps `now + duration` far inside the timestamp range).
    static let banDurationSecondsRange: ClosedRange<Int64> = 1...100 * 365 * 86_400

    func requireAdmin(_ caller: Caller) throws {
        guard caller.isService else { throw AuthFailure.forbidden("not_admin", "User not allowed") }
    }

    func adminUser(_ id: String) throws -> Document {
        guard let user = try store.user(id: id) else { throw AuthFailure.userNotFound }
        return user
    }

    /// GET /admin/users: `page` and `per_page` as the client sent them (query text).
    func listUsers(page pageText: String?, perPage perPageText: String?) throws -> (users: [JSONValue], total: Int) {
        let context = "Bad Pagination Parameters: "
        let perPage = min(try AuthInput.integer(perPageText, "per_page", in: Self.perPageRange, context: context) ?? Self.perPageDefault,
                          Self.perPageMax)
        let page = try AuthInput.integer(pageText, "page", in: Self.pageRange, context: context) ?? 1
        let offset = AuthInput.multiply(page - 1, perPage)
        let snapshot = store.database.snapshot()
        // Past the kernel's largest offset there are no rows to show (a node holds far fewer
        // users): the page is empty, as GoTrue answers a page past the end.
        let beyond = offset > Int64(Query.offsetMax)
        guard let result = try snapshot.queryIfPresent(Query(
            collection: AuthCollections.users, order: [Sort(field: "created_at"), Sort(field: "id")],
            limit: beyond ? 1 : Int(perPage), offset: beyond ? 0 : Int(offset), count: true)) else { return ([], 0) }
        return (beyond ? [] : try result.rows.map(userJSON), result.totalCount ?? result.rows.count)
    }

    func adminCreate(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        if body["phone"]?.stringValue != nil { throw AuthFailure.badRequest("phone_provider_disabled", "Phone users are not built yet") }
        let email = try validEmail(body["email"])
        if try store.user(email: email) != nil {
            throw AuthFailure.unprocessable("email_exists", "A user with this email address has already been registered")
        }
        var passwordHash: String?
        if case .string(let password)? = body["password"] {
            try checkPassword(password)
            passwordHash = try await hash(password)
        }
        let id = try body["id"].map { value -> String in
            guard case .string(let text) = value, let id = UUIDText.normalize(text) else { throw AuthFailure.validation("id must be a UUID") }
            return id
        }
        let metadata = try Self.metadata(body, body["user_metadata"] != nil ? "user_metadata" : "data")
        let (user, ops) = store.newUser(email: email, passwordHash: passwordHash, confirmed: body["email_confirm"]?.boolValue ?? false,
                                        userMetadata: metadata, appMetadata: try Self.metadata(body, "app_metadata"), id: id)
        let userID = user["id"]!.stringValue!
        var extra: [WriteOperation] = []
        if let ban = try banUntil(body) { extra.append(store.updateUser(userID, ["banned_until": ban])) }
        try await commit(ops + extra + [event("user_created", role: "service_role", target: userID, request)])
        return try userJSON(try adminUser(userID))
    }

    func adminUpdate(_ id: String, _ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        let user = try adminUser(id)
        let userID = user["id"]!.stringValue!
        var set: Document = [:]
        var ops: [WriteOperation] = []
        if body["email"] != nil, body["email"] != .null {
            let email = try validEmail(body["email"])
            if let other = try store.user(email: email), other["id"] != user["id"] {
                throw AuthFailure.unprocessable("email_exists", "A user with this email address has already been registered")
            }
            set["email"] = .string(email)
            set["is_anonymous"] = .bool(false)
            ops += try store.syncEmailIdentity(userID, email: email, verified: body["email_confirm"]?.boolValue ?? false)
        }
        if case .string(let password)? = body["password"] {
            try checkPassword(password)
            set["encrypted_password"] = .string(try await hash(password))
        }
        if let confirm = body["email_confirm"]?.boolValue {
            set["email_confirmed_at"] = confirm ? (user["email_confirmed_at"].flatMap { $0.isNull ? nil : $0 } ?? store.now) : .null
        }
        for key in ["user_metadata", "app_metadata"] where body[key] != nil && body[key] != .null {
            set[key] = .object(Self.merge(user[key]?.objectValue ?? [:], try Self.metadata(body, key)))
        }
        var signOut = false  // a new password or a ban ends every session
        if let ban = try banUntil(body) {
            set["banned_until"] = ban
            signOut = !ban.isNull
        }
        if case .string? = body["password"] { signOut = true }
        if signOut { ops += store.revokeSessions(try store.sessions(of: userID).compactMap { $0["id"] }) }
        if !set.isEmpty {
            try await commit([store.updateUser(userID, set)] + ops + [event("user_modified", role: "service_role", target: userID, request)])
        }
        return try userJSON(try adminUser(userID))
    }

    func adminDelete(_ id: String, _ request: AuthRequest) async throws {
        let user = try adminUser(id)
        try await commit([.delete(collection: AuthCollections.users, target: .key(user["id"]!)),
                          event("user_deleted", role: "service_role", target: user["id"]?.stringValue, request)])
    }

    /// `ban_duration`: "none" lifts a ban; otherwise Go-style "24h", "90m", "3600s" or "1h30m".
    func banUntil(_ body: JSONValue) throws -> JSONValue? {
        guard let value = body["ban_duration"], !value.isNull else { return nil }
        guard case .string(let text) = value else { throw AuthFailure.validation("ban_duration must be a string") }
        if text == "none" { return .null }
        guard let seconds = Self.durationSeconds(text) else {
            throw AuthFailure.validation("ban_duration must be \"none\" or a duration like 24h, 90m, 3600s, within "
                                         + "\(Self.banDurationSecondsRange.lowerBound)...\(Self.banDurationSecondsRange.upperBound) seconds")
        }
        return .string(Timestamp.format(AuthInput.micros(afterSeconds: seconds, now: store.nowMicros)))
    }

    /// A Go-style duration of h, m and s parts in `banDurationSecondsRange`, else nil. The sum
    /// saturates, so no number of parts or digits can overflow it.
    static func durationSeconds(_ text: String) -> Int64? {
        var total: Int64 = 0
        var digits = ""
        for ch in text {
            if ch.isASCII, ch.isNumber { digits.append(ch); continue }
            guard let n = Int64(digits) else { return nil }  // also nil past Int64: out of range anyway
            switch ch {
            case "h": total = AuthInput.add(total, AuthInput.multiply(n, 3_600))
            case "m": total = AuthInput.add(total, AuthInput.multiply(n, 60))
            case "s": total = AuthInput.add(total, n)
            default: return nil
            }
            digits = ""
        }
        return digits.isEmpty && banDurationSecondsRange.contains(total) ? total : nil
    }

    func invite(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        let email = try validEmail(body["email"])
        if try store.user(email: email) != nil {
            throw AuthFailure.unprocessable("email_exists", "A user with this email address has already been registered")
        }
        try limitEmail(email)
        let (user, ops) = store.newUser(email: email, passwordHash: nil, confirmed: false, userMetadata: try Self.metadata(body, "data"))
        let id = user["id"]!.stringValue!
        try await commit(ops + (try confirmation(type: "invite", userID: id, email: email, request))
            + [event("user_invited", role: "service_role", target: id, request)])
        return try userJSON(try adminUser(id))
    }

    /// An email action link without sending mail: the user fields plus the link (supabase-wire §2.2).
    func generateLink(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        guard case .string(let type)? = body["type"] else { throw AuthFailure.validation("generate_link needs a type") }
        let email = try validEmail(body["email"])
        var ops: [WriteOperation] = []
        var user = try store.user(email: email)
        var tokenType = type
        var tokenEmail = email
        var newEmail: String?
        switch type {
        case "signup", "invite":
            if user == nil {
                var passwordHash: String?
                if type == "signup" {
                    let password = try password(body)
                    try checkPassword(password)
                    passwordHash = try await hash(password)
                }
                let made = store.newUser(email: email, passwordHash: passwordHash, confirmed: false,
                                         userMetadata: try Self.metadata(body, "data"))
                user = made.0
                ops += made.1
            } else if type == "signup" {
                throw AuthFailure.unprocessable("email_exists", "A user with this email address has already been registered")
            }
        case "magiclink", "recovery":
            guard user != nil else { throw AuthFailure.userNotFound }
        case "email_change_current", "email_change_new":
            guard user != nil else { throw AuthFailure.userNotFound }
            let target = try validEmail(body["new_email"])
            newEmail = target
            tokenType = "email_change"
            tokenEmail = type == "email_change_new" ? target : email
        default:
            throw AuthFailure.validation("generate_link type must be signup, invite, magiclink, recovery, email_change_current or email_change_new")
        }
        guard let user, let id = user["id"]?.stringValue else { throw AuthFailure.userNotFound }
        let token = try issue(type: tokenType, userID: id, email: tokenEmail, newEmail: newEmail)
        ops += token.operations
        if let newEmail { ops.append(store.updateUser(id, ["new_email": .string(newEmail), "email_change_sent_at": store.now])) }
        try await commit(ops + [event("link_generated", role: "service_role", target: id, request, details: ["type": .string(type)])])
        guard case .object(var out) = try userJSON(try adminUser(id)) else { throw AuthFailure.userNotFound }
        out["action_link"] = .string(link(token.hash, type: tokenType, request))
        out["email_otp"] = .string(token.code)
        out["hashed_token"] = .string(token.hash)
        out["redirect_to"] = .string(request.redirectTo ?? settings.siteURL)
        out["verification_type"] = .string(type)
        return .object(out)
    }
}
