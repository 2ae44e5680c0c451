// The OAuth routes of `/auth/v1` (AuthService+OAuth): GET /authorize (302 to the provider, or
// `{"url": ...}` with `skip_http_redirect=true`), GET /callback (302 to the app), GET
// /user/identities/authorize (a user token; `{"url": ...}` or 302) and DELETE
// /user/identities/{identity_id}. `grant_type=id_token` is dispatched by POST /token (AuthAPI).
// /authorize reads only (the state is signed, nothing is stored), so any node answers it; /callback
// writes (ClusterMiddleware forwards it to the primary).

import HTTPTypes
import Hummingbird
import Kernel

extension AuthAPI {
    static func registerOAuthRoutes(_ auth: RouterGroup<AeroRequestContext>, service: AuthService, keys: KeyChecker) {
        auth.get("authorize") { request, ctx in
            await handle(request, service) {
                let q = query(request)
                let url = try await service.oauthAuthorizeURL(q, context(request, ctx, service))
                return redirectOrURL(request, q, url)
            }
        }
        auth.get("callback") { request, ctx in
            await handle(request, service) {
                let location = await service.oauthCallback(query(request), context(request, ctx, service))
                return Response(status: .found, headers: [.location: location])
            }
        }
        auth.post("callback") { request, ctx in  // response_mode=form_post is not requested: say so
            await handle(request, service) {
                throw AuthFailure.badRequest("validation_failed", "the OAuth callback is a GET (response_mode=form_post is not supported)")
            }
        }
        auth.get("user/identities/authorize") { request, ctx in
            await handle(request, service) {
                let q = query(request)
                let url = try await service.linkIdentityURL(try keys.caller(request), q, context(request, ctx, service))
                return redirectOrURL(request, q, url)
            }
        }
        auth.delete("user/identities/:identity") { request, ctx in
            await handle(request, service) {
                try await service.unlinkIdentity(try keys.caller(request), identityID: try ctx.parameters.require("identity"),
                                                 context(request, ctx, service))
                return json(request, .object([:]))
            }
        }
    }

    static func redirectOrURL(_ request: Request, _ q: [String: String], _ url: String) -> Response {
        if q["skip_http_redirect"] == "true" { return json(request, .object(["url": .string(url)])) }
        return Response(status: .found, headers: [.location: url])
    }
}
