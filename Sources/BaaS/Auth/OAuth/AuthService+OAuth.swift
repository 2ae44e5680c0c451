// OAuth / OpenID Connect sign-in as GoTrue serves it (docs/AUTH.md, "OAuth and OpenID Connect"):
// GET /authorize → the provider → GET /callback → a session (implicit: in the fragment) or an
// authorization code (PKCE: `?code=`, exchanged by `grant_type=pkce` with the verifier);
// `grant_type=id_token`; identities (link through /user/identities/authorize, unlink).
//
// Who the provider's user is here (GoTrue's rules), decided in `resolve` before one commit:
// 1. the identity (provider, sub) exists: its user (linking it to another user is refused);
// 2. a link flow: the identity is added to the signed-in user who started it;
// 3. a user has the provider's email: the identity is added to that user only when the provider
//    verified the email (else refused: an unverified address must not take over an account);
// 4. otherwise a new user (refused when sign-ups are disabled or the email is not verified).
// The identity's row id is derived from (provider, sub) (`identityID`), so two concurrent first
// sign-ins cannot create it twice: the second insert conflicts and its transaction is refused.
// The state's flow id is consumed by a marker row in the same transaction (OAuthState).

import Crypto
import Foundation
import Kernel

struct ProviderIdentity: Sendable {
    let sub: String
    let email: String?
    let emailVerified: Bool
    /// GoTrue's identity_data (and the new user's user_metadata).
    let data: [String: JSONValue]
}

extension AuthService {
    /// A provider's `code` at most this long.
    static let oauthCodeBytesMax = 2_048
    /// The `scopes` a client adds at most this long.
    static let oauthScopesBytesMax = 1_024
    /// The method recorded in `amr` and the session of an OAuth sign-in.
    static let oauthMethod = "oauth"

    func oauthProvider(_ name: String?) throws -> (String, OAuthProviderSettings) {
        guard let name, !name.isEmpty else { throw AuthFailure.validation("Unsupported provider: provider is required") }
        guard let provider = settings.oauthProviders[name] else {
            throw AuthFailure.badRequest("provider_disabled", "Unsupported provider: \(name) is not configured (auth.oauth_providers)")
        }
        return (name, provider)
    }

    /// The provider URL a browser is sent to (GET /authorize, GET /user/identities/authorize).
    func oauthAuthorizeURL(_ q: [String: String], linkUserID: String? = nil, _ request: AuthRequest) async throws -> String {
        let (name, provider) = try oauthProvider(q["provider"])
        if let raw = q["redirect_to"], raw.utf8.count > OAuthState.redirectBytesMax {
            throw AuthFailure.validation("redirect_to is longer than \(OAuthState.redirectBytesMax) bytes")
        }
        var pkce: PKCEChallenge?
        if let challenge = q["code_challenge"], !challenge.isEmpty {
            pkce = try PKCEChallenge(.object(["code_challenge": .string(challenge),
                                              "code_challenge_method": .string(q["code_challenge_method"] ?? "plain")]))
        }
        var scopes = provider.scopes
        if let extra = q["scopes"], !extra.isEmpty {
            guard extra.utf8.count <= Self.oauthScopesBytesMax else { throw AuthFailure.validation("scopes is too long") }
            scopes += extra.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init).filter { !scopes.contains($0) }
        }
        let state = OAuthState(id: SecureRandom.token(22), provider: name, redirectTo: settings.allowedRedirect(q["redirect_to"]),
                               nonce: SecureRandom.token(22), expiresAt: store.nowSeconds + OAuthState.lifetimeSeconds, callback: callbackURL(request),
                               challenge: pkce?.challenge, challengeMethod: pkce?.method, linkUserID: linkUserID)
        var fields: [(String, String)] = [("client_id", provider.clientID), ("redirect_uri", state.callback),
                                          ("response_type", "code"), ("scope", scopes.joined(separator: " ")),
                                          ("state", state.encode(secret: secret))]
        let endpoint: String
        switch provider.kind {
        case .oidc(let issuer):
            endpoint = try await providerMetadata(issuer).authorizationEndpoint
            fields.append(("nonce", state.nonce))
        case .github:
            endpoint = OAuthProviderSettings.githubAuthorize
        }
        let query = fields.map { "\($0.0)=\(OAuthProviderClient.formEncode($0.1))" }.joined(separator: "&")
        return endpoint + (endpoint.contains("?") ? "&" : "?") + query
    }

    func callbackURL(_ request: AuthRequest) -> String { request.issuer + "/callback" }

    func providerMetadata(_ issuer: String, unknownKid: Bool = false) async throws -> OIDCMetadata {
        do {
            return try await OAuthProviderClient.shared.metadata(issuer: issuer, nowSeconds: store.nowSeconds, unknownKid: unknownKid)
        } catch let error as OAuthProviderError {
            throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "OAuth provider unreachable or invalid: \(error.message)")
        }
    }

    // MARK: Callback

    enum CallbackOutcome {
        case authCode(String)
        case session(JSONValue)
    }

    /// GET /callback: where the browser goes next (the app, with a code, a session or an error).
    func oauthCallback(_ q: [String: String], _ request: AuthRequest) async -> String {
        // Before anything else: each callback costs a provider round trip or an audit row.
        do {
            try limit("token", settings.rateLimits.token, request)
        } catch {
            return Self.withError(settings.siteURL, pkce: true, code: "over_request_rate_limit", description: "Request rate limit reached")
        }
        let state: OAuthState
        do {
            state = try OAuthState.decode(q["state"] ?? "", secret: secret, nowSeconds: store.nowSeconds)
        } catch {
            let why = error == .expired ? "OAuth state has expired" : "OAuth callback with invalid state"
            await recordFailure("oauth_callback_refused", target: nil, request, reason: why)
            return Self.withError(settings.siteURL, pkce: true, code: "bad_oauth_state", description: why)
        }
        let pkce = state.challenge != nil
        do {
            if let error = q["error"] {  // the provider refused (the user declined consent, ...)
                throw AuthFailure.forbidden("provider_refused", "\(error): \(q["error_description"] ?? "the provider refused the sign-in")")
            }
            switch try await finishCallback(state, code: q["code"], request) {
            case .authCode(let code): return state.redirectTo + (state.redirectTo.contains("?") ? "&" : "?") + "code=" + code
            case .session(let session):
                let keys = ["access_token", "expires_at", "expires_in", "provider_token", "refresh_token", "token_type"]
                return state.redirectTo + "#" + keys.map { "\($0)=\(AuthAPI.formValue(session[$0]))" }.joined(separator: "&")
            }
        } catch {
            let failure = (error as? AuthFailure) ?? AuthErrorResponse.translate(AeroError.wrap(error))
            await recordFailure("oauth_callback_refused", target: state.provider, request, reason: failure.code + ": " + failure.message)
            return Self.withError(state.redirectTo, pkce: pkce, code: failure.code, description: failure.message)
        }
    }

    static func withError(_ target: String, pkce: Bool, code: String, description: String) -> String {
        let error = code == "bad_oauth_state" || code == "provider_refused" ? "access_denied" : "server_error"
        let text = "error=\(error)&error_code=\(code)&error_description=\(AuthAPI.formValue(.string(description)))"
        return pkce ? target + (target.contains("?") ? "&" : "?") + text : target + "#" + text
    }

    func stateMarkerID(_ state: OAuthState) -> String { store.storedID(AuthStore.sha256Hex("oauth-state " + state.id)) }

    func finishCallback(_ state: OAuthState, code: String?, _ request: AuthRequest) async throws -> CallbackOutcome {
        guard let code, !code.isEmpty, code.utf8.count <= Self.oauthCodeBytesMax else {
            throw AuthFailure.badRequest("bad_oauth_callback", "OAuth callback without a code")
        }
        let markerID = stateMarkerID(state)
        guard try store.document(AuthCollections.oneTimeTokens, markerID) == nil else {
            throw AuthFailure.badRequest("bad_oauth_state", "OAuth state has already been used")
        }
        let (name, provider) = try oauthProvider(state.provider)
        let identity = try await providerIdentity(name, provider, code: code, state: state)
        let resolved = try resolve(provider: name, identity, linkUserID: state.linkUserID)
        let marker: WriteOperation = .insert(collection: AuthCollections.oneTimeTokens, document: [
            "id": .string(markerID), "user_id": .string(resolved.userID), "type": .string("oauth_state"), "email": .string(""),
            "expires_at": .string(Timestamp.format(AuthInput.multiply(state.expiresAt, 1_000_000))), "created_at": store.now,
        ])
        let ops = resolved.operations + [marker]
        do {
            guard let challenge = state.challenge, let method = state.challengeMethod else {
                return .session(try await signIn(resolved.userID, method: Self.oauthMethod, request, with: ops, action: resolved.action))
            }
            let authCode = UUIDText.random()
            let flow: Document = [
                "id": .string(store.storedID(AuthStore.sha256Hex(authCode))), "user_id": .string(resolved.userID), "type": .string("pkce"),
                "email": .string(identity.email ?? ""), "code_challenge": .string(challenge), "code_challenge_method": .string(method),
                "method": .string(Self.oauthMethod),
                "expires_at": .string(Timestamp.format(store.nowMicros + Self.flowStateSeconds * 1_000_000)), "created_at": store.now,
            ]
            try await commit(ops + [.insert(collection: AuthCollections.oneTimeTokens, document: flow),
                                    event(resolved.action, user: resolved.userID, target: resolved.userID, request,
                                          details: ["provider": .string(name), "flow": .string("pkce")])])
            return .authCode(authCode)
        } catch let error as AeroError where error.code == .duplicateKey {
            // The marker (a replayed state) or the identity (a concurrent first sign-in) exists.
            throw AuthFailure.badRequest("bad_oauth_state", "OAuth state has already been used or the identity was just created: \(error.message)")
        }
    }

    /// Exchanges the code and reads who the user is at the provider.
    func providerIdentity(_ name: String, _ provider: OAuthProviderSettings, code: String,
                          state: OAuthState) async throws -> ProviderIdentity {
        let client = OAuthProviderClient.shared
        if let problem = provider.clientSecretUnreadable {  // SettingsSecrets: never send a wrong secret
            logger.error("OAuth sign-in refused: the client secret cannot be opened", metadata: ["provider": "\(name)", "error": "\(problem)"])
            throw AuthFailure(status: .internalServerError, code: "unexpected_failure", message: "AERO_CONFIG_INVALID: \(problem)")
        }
        let fields = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", state.callback),
                      ("client_id", provider.clientID), ("client_secret", provider.clientSecret)]
        do {
            switch provider.kind {
            case .oidc(let issuer):
                let metadata = try await providerMetadata(issuer)
                let token = try await client.postForm(metadata.tokenEndpoint, fields)
                guard case .string(let idToken)? = token["id_token"] else {
                    throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "the provider's token answer has no id_token")
                }
                var claims = try await verifiedIDToken(idToken, issuer: issuer, provider: provider, nonce: .exact(state.nonce))
                if claims["email"] == nil, let userinfo = metadata.userinfoEndpoint, case .string(let access)? = token["access_token"] {
                    let info = try await client.getJSON(userinfo, bearer: access)
                    guard info["sub"] == claims["sub"] else {
                        throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "userinfo names another subject than the id_token")
                    }
                    if case .object(var o) = claims, case .object(let extra) = info {
                        for (k, v) in extra where o[k] == nil { o[k] = v }
                        claims = .object(o)
                    }
                }
                return try Self.identity(claims, issuer: issuer)
            case .github:
                let token = try await client.postForm(OAuthProviderSettings.githubToken, fields)
                guard case .string(let access)? = token["access_token"] else {
                    throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "GitHub's token answer has no access_token")
                }
                let user = try await client.getJSON(OAuthProviderSettings.githubUser, bearer: access)
                let emails = try await client.getJSON(OAuthProviderSettings.githubEmails, bearer: access).arrayValue ?? []
                let primary = emails.first { $0["primary"] == .bool(true) && $0["verified"] == .bool(true) }
                    ?? emails.first { $0["verified"] == .bool(true) }
                guard let id = user["id"]?.intValue else {
                    throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "GitHub's user answer has no id")
                }
                var data: [String: JSONValue] = ["sub": .string(String(id)), "provider_id": .string(String(id)),
                                                 "iss": .string("https://api.github.com")]
                for (from, to) in [("login", "user_name"), ("name", "full_name"), ("avatar_url", "avatar_url")] {
                    if case .string(let v)? = user[from] { data[to] = .string(v) }
                }
                if let email = primary?["email"]?.stringValue { data["email"] = .string(email); data["email_verified"] = .bool(true) }
                return ProviderIdentity(sub: String(id), email: primary?["email"]?.stringValue, emailVerified: primary != nil, data: data)
            }
        } catch let error as OAuthProviderError {
            throw AuthFailure(status: .badGateway, code: "unexpected_failure", message: "OAuth provider: \(error.message)")
        }
    }

    func verifiedIDToken(_ token: String, issuer: String, provider: OAuthProviderSettings,
                         nonce: OIDCToken.NonceRule) async throws -> JSONValue {
        var metadata = try await providerMetadata(issuer)
        if let header = OIDCToken.header(token), metadata.keys.key(kid: header.kid, alg: header.alg) == nil {
            metadata = try await providerMetadata(issuer, unknownKid: true)  // rotated at the provider?
        }
        do {
            return try OIDCToken.verify(token, keys: metadata.keys, issuer: issuer, clientID: provider.clientID, nonce: nonce,
                                        nowSeconds: store.nowSeconds)
        } catch {
            let why: String
            switch error {
            case .malformed(let m): why = m
            case .unknownKey: why = "no key of the provider's JWKS signs this id_token"
            case .badSignature: why = "the id_token signature does not verify"
            case .claim(let m): why = m
            }
            throw AuthFailure.badRequest("bad_oauth_callback", "invalid id_token: \(why)")
        }
    }

    static func identity(_ claims: JSONValue, issuer: String) throws -> ProviderIdentity {
        guard case .string(let sub)? = claims["sub"], !sub.isEmpty else {
            throw AuthFailure.badRequest("bad_oauth_callback", "the id_token has no subject")
        }
        var data: [String: JSONValue] = ["sub": .string(sub), "provider_id": .string(sub), "iss": .string(issuer)]
        for key in ["email", "name", "picture", "preferred_username", "given_name", "family_name", "nickname", "phone_number"] {
            if case .string(let v)? = claims[key], !v.isEmpty { data[key] = .string(v) }
        }
        if case .string(let name)? = data["name"] { data["full_name"] = .string(name) }
        if case .string(let picture)? = data["picture"] { data["avatar_url"] = .string(picture) }
        // email_verified is a boolean, but some providers send "true".
        let verified = claims["email_verified"] == .bool(true) || claims["email_verified"] == .string("true")
        let email = data["email"]?.stringValue.map(AuthStore.normalizeEmail)
        if email != nil { data["email_verified"] = .bool(verified) }
        return ProviderIdentity(sub: sub, email: email, emailVerified: verified, data: data)
    }

    // MARK: Who the user is

    struct Resolved {
        let userID: String
        let operations: [WriteOperation]
        let action: String
    }

    /// The identity row's id: a UUID-shaped text derived from (provider, sub).
    static func identityID(provider: String, sub: String) -> String {
        let h = Array(SHA256.hash(data: Array("aerodb identity \(provider)\u{0}\(sub)".utf8)).prefix(16))
        let hex = AuthStore.hex(h)
        let c = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(c[$0]) }.joined(separator: "-")
    }

    func resolve(provider: String, _ identity: ProviderIdentity, linkUserID: String?) throws -> Resolved {
        let rowID = Self.identityID(provider: provider, sub: identity.sub)
        if let existing = try store.document(AuthCollections.identities, rowID), case .string(let owner)? = existing["user_id"] {
            if let linkUserID, linkUserID != owner {
                throw AuthFailure.unprocessable("identity_already_exists", "Identity is already linked to another user")
            }
            guard let user = try store.user(id: owner) else { throw AuthFailure.userNotFound }
            guard !isBanned(user) else { throw AuthFailure.badRequest("user_banned", "User is banned") }
            return Resolved(userID: owner, operations: [.update(collection: AuthCollections.identities, target: .key(.string(rowID)),
                                                                set: ["identity_data": .object(identity.data), "last_sign_in_at": store.now,
                                                                      "updated_at": store.now])],
                            action: linkUserID == nil ? "login" : "identity_linked")
        }
        let insert = WriteOperation.insert(collection: AuthCollections.identities, document: [
            "id": .string(rowID), "user_id": .null, "provider": .string(provider), "provider_id": .string(identity.sub),
            "identity_data": .object(identity.data), "last_sign_in_at": store.now, "created_at": store.now, "updated_at": store.now,
        ])
        func attach(_ user: Document, confirm: Bool) throws -> [WriteOperation] {
            guard case .string(let id)? = user["id"] else { throw AuthFailure.userNotFound }
            var app = user["app_metadata"]?.objectValue ?? [:]
            var providers = app["providers"]?.arrayValue ?? []
            if !providers.contains(.string(provider)) { providers.append(.string(provider)) }
            app["providers"] = .array(providers)
            if app["provider"] == nil { app["provider"] = .string(provider) }
            var set: Document = ["app_metadata": .object(app)]
            if confirm, user["email_confirmed_at"]?.isNull ?? true { set["email_confirmed_at"] = store.now }
            return [Self.withUser(insert, id), store.updateUser(id, set)]
        }
        if let linkUserID {
            guard let user = try store.user(id: linkUserID) else { throw AuthFailure.userNotFound }
            return Resolved(userID: linkUserID, operations: try attach(user, confirm: false), action: "identity_linked")
        }
        guard let email = identity.email else {
            throw AuthFailure.unprocessable("provider_email_needs_verification", "Error getting user email from external provider")
        }
        if let user = try store.user(email: email) {
            guard identity.emailVerified else {
                throw AuthFailure.unprocessable("email_exists", "A user with this email exists and \(provider) did not verify the email address")
            }
            guard !isBanned(user) else { throw AuthFailure.badRequest("user_banned", "User is banned") }
            return Resolved(userID: user["id"]?.stringValue ?? "", operations: try attach(user, confirm: true), action: "login")
        }
        guard !settings.disableSignup else { throw AuthFailure.unprocessable("signup_disabled", "Signups not allowed for this instance") }
        guard identity.emailVerified || settings.mailerAutoconfirm else {
            throw AuthFailure.unprocessable("provider_email_needs_verification", "\(provider) did not verify the email address \(email)")
        }
        let (user, ops) = store.newUser(email: email, passwordHash: nil, confirmed: true, userMetadata: identity.data,
                                        appMetadata: ["provider": .string(provider), "providers": .array([.string(provider)])])
        let id = user["id"]?.stringValue ?? ""
        return Resolved(userID: id, operations: [ops[0], Self.withUser(insert, id)], action: "user_signedup")
    }

    static func withUser(_ op: WriteOperation, _ userID: String) -> WriteOperation {
        guard case .insert(let collection, var doc) = op else { return op }
        doc["user_id"] = .string(userID)
        return .insert(collection: collection, document: doc)
    }

    // MARK: id_token grant and identities

    /// POST /token?grant_type=id_token (`sign_in_with_id_token`).
    func signInWithIDToken(_ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("token", settings.rateLimits.token, request)
        let (name, provider) = try oauthProvider(body["provider"]?.stringValue)
        guard case .oidc(let issuer) = provider.kind else {
            throw AuthFailure.badRequest("provider_disabled", "\(name) issues no id_token (only OpenID Connect providers)")
        }
        guard case .string(let token)? = body["id_token"], !token.isEmpty else { throw AuthFailure.validation("id_token is required") }
        let nonce = body["nonce"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        let claims = try await verifiedIDToken(token, issuer: issuer, provider: provider, nonce: .hashedIfPresent(nonce))
        let resolved = try resolve(provider: name, try Self.identity(claims, issuer: issuer), linkUserID: nil)
        do {
            return try await signIn(resolved.userID, method: "id_token", request, with: resolved.operations, action: resolved.action)
        } catch let error as AeroError where error.code == .duplicateKey {
            throw AuthFailure.unprocessable("identity_already_exists", "The identity was created by a concurrent sign-in: retry")
        }
    }

    /// DELETE /user/identities/{identity_id}.
    func unlinkIdentity(_ caller: Caller, identityID: String, _ request: AuthRequest) async throws {
        guard settings.manualLinking else { throw AuthFailure.notFound("manual_linking_disabled", "Manual linking is disabled") }
        let user = try currentUser(caller)
        let id = user["id"]?.stringValue ?? ""
        let identities = try store.identities(of: id)
        guard let target = identities.first(where: { $0["id"] == .string(identityID) }) else {
            throw AuthFailure.notFound("identity_not_found", "Identity doesn't exist")
        }
        guard identities.count > 1 else {
            throw AuthFailure.unprocessable("single_identity_not_deletable", "User must have at least 1 identity after unlinking")
        }
        let remaining = identities.filter { $0["id"] != target["id"] }
        var providers: [JSONValue] = []
        for p in remaining.compactMap({ $0["provider"] }) where !providers.contains(p) { providers.append(p) }
        var app = user["app_metadata"]?.objectValue ?? [:]
        app["providers"] = .array(providers)
        if let first = providers.first, !providers.contains(app["provider"] ?? .null) { app["provider"] = first }
        try await commit([.delete(collection: AuthCollections.identities, target: .key(.string(identityID))),
                          store.updateUser(id, ["app_metadata": .object(app)]),
                          event("identity_unlinked", user: id, role: "authenticated", target: id, request,
                                details: ["provider": target["provider"] ?? .null])])
    }

    /// GET /user/identities/authorize: the provider URL of a link flow for the signed-in user.
    func linkIdentityURL(_ caller: Caller, _ q: [String: String], _ request: AuthRequest) async throws -> String {
        guard settings.manualLinking else { throw AuthFailure.notFound("manual_linking_disabled", "Manual linking is disabled") }
        let user = try currentUser(caller)
        return try await oauthAuthorizeURL(q, linkUserID: user["id"]?.stringValue, request)
    }
}
