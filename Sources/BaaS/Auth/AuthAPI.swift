// `/auth/v1`: the GoTrue HTTP surface the Supabase clients use (supabase-wire §2). Every POST
// needs a valid API key or user token (as behind Supabase's gateway); GET /verify is the link in
// an email and needs none. Errors are GoTrue-shaped (AuthErrorResponse). Not built yet, each
// answering a clear error: phone/SMS, SAML SSO, TLS to the SMTP server (OAuth/OIDC: OAuth/).
// PKCE: a mail link requested with a `code_challenge` redirects with `?code=`, which
// `grant_type=pkce` exchanges with the verifier.

import Foundation
import HTTPTypes
import Hummingbird
import Kernel

enum AuthAPI {
    static func register(on router: Router<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        let auth = router.group("auth/v1")
        auth.get("health") { request, ctx in
            reply(request) { .object(["version": .string("aerodb"), "name": .string("GoTrue"),
                                      "description": .string("AeroDB auth, GoTrue-compatible")]) }
        }
        auth.get("settings") { request, ctx in reply(request) { settingsJSON(service.settings) } }
        auth.post("signup") { request, ctx in
            await handle(request, service) {
                _ = try keys.caller(request)
                let b = try await body(request)
                return json(request, try await service.signUp(b, try context(request, ctx, service, body: b)))
            }
        }
        auth.post("token") { request, ctx in
            await handle(request, service) {
                _ = try keys.caller(request)
                let payload = try await body(request)
                let caller = context(request, ctx, service)
                switch query(request)["grant_type"] {
                case "password": return json(request, try await service.signInWithPassword(payload, caller))
                case "refresh_token": return json(request, try await service.refresh(payload, caller))
                case "pkce": return json(request, try await service.exchange(payload, caller))
                case "id_token": return json(request, try await service.signInWithIDToken(payload, caller))
                case let other:
                    throw AuthFailure.badRequest("validation_failed", "grant_type \(other ?? "(none)") is not supported (password, refresh_token, pkce, id_token)")
                }
            }
        }
        registerUserRoutes(auth, service: service, keys: keys)
        registerEmailRoutes(auth, service: service, keys: keys)
        registerAdminRoutes(auth, service: service, keys: keys)
        registerMFARoutes(auth, service: service, keys: keys)
        registerSigningKeyRoutes(auth, service: service, keys: keys)
        registerOAuthRoutes(auth, service: service, keys: keys)
        for path in ["sso"] {
            auth.on(RouterPath(path), method: .get, use: notBuilt)
            auth.on(RouterPath(path), method: .post, use: notBuilt)
        }
    }

    private static func registerUserRoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        auth.get("user") { request, ctx in
            await handle(request, service) { json(request, try service.userJSON(try service.currentUser(try keys.caller(request)))) }
        }
        auth.put("user") { request, ctx in
            await handle(request, service) {
                let caller = try keys.caller(request)
                let b = try await body(request)
                return json(request, try await service.updateUser(caller, b, try context(request, ctx, service, body: b)))
            }
        }
        auth.post("logout") { request, ctx in
            await handle(request, service) {
                let caller = try keys.caller(request)
                try await service.logout(caller, scope: query(request)["scope"] ?? "global", context(request, ctx, service))
                return Response(status: .noContent)
            }
        }
        auth.get("reauthenticate") { request, ctx in
            await handle(request, service) {
                try await service.reauthenticate(try keys.caller(request), context(request, ctx, service))
                return json(request, .object([:]))
            }
        }
    }

    /// TOTP multi-factor (AuthMFA): the client's `auth.mfa.*` and `auth.admin.mfa.*`.
    private static func registerMFARoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        auth.post("factors") { request, ctx in
            await handle(request, service) {
                json(request, try await service.enrollFactor(try keys.caller(request), try await body(request), context(request, ctx, service)))
            }
        }
        auth.post("factors/:factor/challenge") { request, ctx in
            await handle(request, service) {
                json(request, try await service.challengeFactor(try keys.caller(request), factorID: try ctx.parameters.require("factor"),
                                                                context(request, ctx, service)))
            }
        }
        auth.post("factors/:factor/verify") { request, ctx in
            await handle(request, service) {
                json(request, try await service.verifyFactor(try keys.caller(request), factorID: try ctx.parameters.require("factor"),
                                                             try await body(request), context(request, ctx, service)))
            }
        }
        auth.delete("factors/:factor") { request, ctx in
            await handle(request, service) {
                json(request, try await service.unenrollFactor(try keys.caller(request), factorID: try ctx.parameters.require("factor"),
                                                               context(request, ctx, service)))
            }
        }
        auth.get("admin/users/:id/factors") { request, ctx in
            await admin(request, service, keys) { json(request, try service.adminFactors(try ctx.parameters.require("id"))) }
        }
        auth.delete("admin/users/:id/factors/:factor") { request, ctx in
            await admin(request, service, keys) {
                json(request, try await service.adminDeleteFactor(try ctx.parameters.require("id"), factorID: try ctx.parameters.require("factor"),
                                                                  context(request, ctx, service)))
            }
        }
    }

    /// The JWKS (public, like GoTrue's) and the operator's key rotation (AuthSigningKeys).
    private static func registerSigningKeyRoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        auth.get(".well-known/jwks.json") { request, _ in
            await handle(request, service) {
                json(request, try AuthSigningKeys.jwks(service.store.database.snapshot(), nowSeconds: service.store.nowSeconds))
            }
        }
        auth.get("admin/signing-keys") { request, _ in
            await admin(request, service, keys) {
                json(request, try AuthSigningKeys.list(service.store.database.snapshot(), nowSeconds: service.store.nowSeconds))
            }
        }
        auth.post("admin/signing-keys/rotate") { request, ctx in
            await admin(request, service, keys) {
                let kid = try await AuthSigningKeys.rotate(service.store.database, secret: service.secret,
                                                           lifetimeSeconds: service.settings.accessTokenSeconds, nowSeconds: service.store.nowSeconds)
                try await service.commit([service.event("signing_key_rotated", role: "service_role", target: kid, context(request, ctx, service))])
                return json(request, try AuthSigningKeys.list(service.store.database.snapshot(), nowSeconds: service.store.nowSeconds))
            }
        }
    }

    private static func registerEmailRoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        // The mail-sending endpoints: any key, a body with an optional PKCE challenge, `{}` back.
        let mailers: [(String, @Sendable (JSONValue, AuthRequest) async throws -> Void)] = [
            ("recover", service.recover), ("otp", service.otp), ("resend", service.resend),
        ]
        for (path, send) in mailers {
            auth.post(RouterPath(path)) { request, ctx in
                await handle(request, service) {
                    _ = try keys.caller(request)
                    let b = try await body(request)
                    try await send(b, try context(request, ctx, service, body: b))
                    return json(request, .object([:]))
                }
            }
        }
        auth.post("verify") { request, ctx in
            await handle(request, service) {
                _ = try keys.caller(request)
                let b = try await body(request)
                return json(request, try await service.verify(type: b["type"]?.stringValue ?? "", tokenHash: b["token_hash"]?.stringValue,
                                                             email: b["email"]?.stringValue, code: b["token"]?.stringValue,
                                                             context(request, ctx, service)))
            }
        }
        auth.get("verify") { request, ctx in await verifyLink(request, ctx, service) }
    }

    private static func registerAdminRoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        auth.get("admin/users") { request, ctx in
            await handle(request, service) {
                try service.requireAdmin(try keys.caller(request))
                let q = query(request)
                let (users, total) = try service.listUsers(page: q["page"], perPage: q["per_page"])
                var response = json(request, .object(["users": .array(users), "aud": .string("authenticated")]))
                response.headers[HTTPField.Name("X-Total-Count")!] = String(total)
                return response
            }
        }
        auth.post("admin/users") { request, ctx in
            await admin(request, service, keys) { json(request, try await service.adminCreate(try await body(request), context(request, ctx, service))) }
        }
        auth.get("admin/users/:id") { request, ctx in
            await admin(request, service, keys) { json(request, try service.userJSON(try service.adminUser(try ctx.parameters.require("id")))) }
        }
        auth.put("admin/users/:id") { request, ctx in
            await admin(request, service, keys) {
                json(request, try await service.adminUpdate(try ctx.parameters.require("id"), try await body(request), context(request, ctx, service)))
            }
        }
        auth.delete("admin/users/:id") { request, ctx in
            await admin(request, service, keys) {
                try await service.adminDelete(try ctx.parameters.require("id"), context(request, ctx, service))
                return json(request, .object([:]))
            }
        }
        auth.post("admin/generate_link") { request, ctx in
            await admin(request, service, keys) { json(request, try await service.generateLink(try await body(request), context(request, ctx, service))) }
        }
        auth.post("invite") { request, ctx in
            await admin(request, service, keys) { json(request, try await service.invite(try await body(request), context(request, ctx, service))) }
        }
    }

    // MARK: The email link

    /// GET /verify (the link in a mail): verifies and redirects to `redirect_to` (or site_url)
    /// with the session in the fragment, or with `error`, `error_code`, `error_description`.
    private static func verifyLink(_ request: Request, _ ctx: AeroRequestContext, _ service: AuthService) async -> Response {
        let q = query(request)
        let target = service.settings.allowedRedirect(q["redirect_to"])
        var fragment: String
        do {
            switch try await service.verifyLink(type: q["type"] ?? "", tokenHash: q["token"], context(request, ctx, service)) {
            case .authCode(let code):  // PKCE: the app exchanges the code with its verifier
                return Response(status: .seeOther, headers: [.location: target + (target.contains("?") ? "&" : "?") + "code=" + code,
                                                             HTTPJSON.lsnHeader: String(service.store.database.snapshot().lsn)])
            case .session(let session):
                fragment = ["access_token", "expires_at", "expires_in", "refresh_token", "token_type"].map { key in
                    "\(key)=\(formValue(session[key]))"
                }.joined(separator: "&") + "&type=\(formValue(.string(q["type"] ?? "")))"
            }
        } catch {
            let failure = (error as? AuthFailure) ?? AuthErrorResponse.translate(AeroError.wrap(error))
            fragment = "error=access_denied&error_code=\(failure.code)&error_description=\(formValue(.string(failure.message)))"
        }
        return Response(status: .seeOther, headers: [.location: target + "#" + fragment,
                                                     HTTPJSON.lsnHeader: String(service.store.database.snapshot().lsn)])
    }

    static func formValue(_ value: JSONValue?) -> String {
        let text: String
        switch value {
        case .string(let s)?: text = s
        case .int(let i)?: text = String(i)
        default: text = ""
        }
        return text.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
    }

    // MARK: Plumbing

    static func context(_ request: Request, _ ctx: AeroRequestContext, _ service: AuthService) -> AuthRequest {
        let redirect = query(request)["redirect_to"].flatMap { $0.isEmpty ? nil : $0 }
        return AuthRequest(ip: ctx.clientIP, userAgent: request.headers[.userAgent],
                           baseURL: service.settings.externalURL ?? "http://localhost",
                           redirectTo: service.settings.allowedRedirect(redirect))
    }

    /// The same, with the PKCE challenge of a request that mails a link.
    static func context(_ request: Request, _ ctx: AeroRequestContext, _ service: AuthService, body: JSONValue) throws -> AuthRequest {
        var auth = context(request, ctx, service)
        auth.pkce = try PKCEChallenge(body)
        return auth
    }

    static func query(_ request: Request) -> [String: String] {
        var out: [String: String] = [:]
        for (key, value) in PostgRESTQuery.decodePairs(request.uri.query ?? "") where out[key] == nil { out[key] = value }
        return out
    }

    /// The JSON body, or `{}` when there is none (the client sends a JSON content type on
    /// body-less requests, supabase-wire §0.2).
    static func body(_ request: Request) async throws -> JSONValue {
        let value: JSONValue?
        do {
            value = try await HTTPJSON.optionalBody(request)
        } catch let error as AeroError where error.code == .jsonInvalid {
            throw AuthFailure.badRequest("bad_json", "Could not parse request body as JSON: \(error.message)")
        }
        guard let value else { return .object([:]) }
        guard case .object = value else { throw AuthFailure.badRequest("bad_json", "The request body must be a JSON object") }
        return value
    }

    static func json(_ request: Request, _ value: JSONValue) -> Response {
        var response = HTTPJSON.response(value)
        if let version = request.headers[AuthErrorResponse.versionHeader] { response.headers[AuthErrorResponse.versionHeader] = version }
        return response
    }

    static func reply(_ request: Request, _ value: () -> JSONValue) -> Response { json(request, value()) }

    /// Runs a handler; answers carry the node's LSN after it (a replica that forwarded a write
    /// waits to apply it before answering, so the new session works there at once).
    static func handle(_ request: Request, _ service: AuthService, _ body: () async throws -> Response) async -> Response {
        var response: Response
        do {
            response = try await body()
        } catch {
            if (error as? AuthFailure)?.status == .tooManyRequests { NodeMetrics.shared.countAuthEvent("rate_limited") }
            response = AuthErrorResponse.response(error, request: request)
        }
        // Also on errors: a refused refresh may have revoked a session (the replica must apply it).
        response.headers[HTTPJSON.lsnHeader] = String(service.store.database.snapshot().lsn)
        return response
    }

    static func admin(_ request: Request, _ service: AuthService, _ keys: KeyChecker,
                      _ body: () async throws -> Response) async -> Response {
        await handle(request, service) {
            try service.requireAdmin(try keys.caller(request))
            return try await body()
        }
    }

    @Sendable static func notBuilt(_ request: Request, _ context: AeroRequestContext) async throws -> Response {
        AuthErrorResponse.response(AuthFailure.badRequest("provider_disabled", "\(request.uri.path) is not built yet in AeroDB (email and password, magic links, email OTP and anonymous sign-in are)"), request: request)
    }

    static func settingsJSON(_ s: AuthSettings) -> JSONValue {
        .object([
            "external": .object(["email": .bool(true), "phone": .bool(false), "anonymous_users": .bool(s.anonymousSignIns)]
                .merging(s.oauthProviders.keys.map { ($0, JSONValue.bool(true)) }, uniquingKeysWith: { a, _ in a })),
            "disable_signup": .bool(s.disableSignup), "mailer_autoconfirm": .bool(s.mailerAutoconfirm),
            "phone_autoconfirm": .bool(false), "sms_provider": .string(""), "saml_enabled": .bool(false),
            "password_min_length": .int(Int64(s.passwordMinLength)),
        ])
    }
}
