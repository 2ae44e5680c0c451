// One log line per request, after the answer: method, path, query, status, milliseconds; the
// same record goes to the node's request ring (RequestRing.swift, `GET /admin/v1/requests`).
// Written by FrontMiddleware (step 2); this file holds what it uses: redaction, routes, errors.
// Queries are redacted by `RequestRedaction.query` (the whole query of an email link, the
// realtime socket, an OAuth callback; secret parameters such as `apikey`/`token` elsewhere);
// no header (keys, tokens) and no body is ever logged.
//
// As the outer part of the one middleware it also gives every answer that no handler produced the JSON
// error shape of the API the path belongs to (RouteErrors): an unknown route is a 404, a known
// path with another method a 405 with `Allow`, and an error thrown past the handlers keeps its
// status. Nothing leaves the node as an empty error body.

import HTTPTypes
import Hummingbird
import Kernel
import Logging
import Synchronization

/// The routes a router registered: path patterns and their methods. Filled once, after every
/// route is added (`load`), read on each unmatched request.
public final class KnownRoutes: Sendable {
    private let routes = Mutex<[(path: RouterPath, method: HTTPRequest.Method)]>([])

    public init() {}

    public func load<Context>(_ router: Router<Context>) {
        let table = router.routes.map { (path: $0.path, method: $0.method) }
        routes.withLock { $0 = table }
    }

    /// Methods registered for a path matching `path`, sorted; empty when no route matches it.
    func methods(for path: String) -> [HTTPRequest.Method] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        let methods = routes.withLock { table in
            table.filter { Self.matches($0.path, parts) }.map(\.method)
        }
        return Array(Set(methods)).sorted { $0.rawValue < $1.rawValue }
    }

    private static func matches(_ pattern: RouterPath, _ parts: [Substring]) -> Bool {
        var i = 0
        for element in pattern.components {
            if element.description == "**" { return true }
            guard i < parts.count, element ~= parts[i] else { return false }
            i += 1
        }
        return i == parts.count
    }
}

/// The error answers no handler wrote, in the shape of the path's API.
enum RouteErrors {
    /// The API a path belongs to: its first two segments (`/storage/v1/...` is storage).
    /// Paths of no API (`/`, `/nope`) answer in AeroDB's own shape `{"code","message"}`.
    enum API { case rest, auth, storage, functions, realtime, admin, other }

    static func api(of path: String) -> API {
        func under(_ root: String) -> Bool { path == root || path.hasPrefix(root + "/") }
        if under("/rest/v1") { return .rest }
        if under("/auth/v1") { return .auth }
        if under("/storage/v1") { return .storage }
        if under("/functions/v1") { return .functions }
        if under("/realtime/v1") { return .realtime }
        if under("/admin/v1") { return .admin }
        return .other
    }

    /// The error of one API in its own shape (how the official client of that API reads it):
    /// PostgREST `{code,details,hint,message}`, GoTrue `{code,error_code,msg}`, Supabase Storage
    /// `{statusCode,error,message}`, the edge runtime `{code,message,error}`; realtime, admin and
    /// the rest of the node AeroDB's `{code,message}`. Every shape keeps the stable AERO_ code
    /// (in `details`, `code` or `error_code` as the shape allows).
    static func shaped(_ aero: AeroError, status: HTTPResponse.Status, request: Request,
                       rest restCode: String? = nil, auth authCode: String? = nil, storageError: String? = nil) -> Response {
        switch api(of: request.uri.path) {
        case .rest:
            let code = restCode ?? RESTError.postgrest(aero.code).0
            return RESTError.response(code: code, message: aero.message, details: aero.code.rawValue, status: status)
        case .auth:
            var failure = AuthErrorResponse.translate(aero)
            failure = AuthFailure(status: status, code: authCode ?? failure.code, message: aero.message)
            return AuthErrorResponse.response(failure, request: request)
        case .storage:
            let word = storageError ?? (status.reasonPhrase.isEmpty ? "Error" : status.reasonPhrase)
            return StorageError(Int(status.code), word, aero.message, code: aero.code.rawValue).response
        case .functions:
            return HTTPJSON.response(.object(["code": .string(aero.code.rawValue), "message": .string(aero.message),
                                              "error": .string(aero.message)]), status: status)
        case .realtime, .admin, .other:
            return HTTPJSON.response(.object(["code": .string(aero.code.rawValue), "message": .string(aero.message)]), status: status)
        }
    }

    /// `error` was thrown past every handler: Hummingbird's not-found (no route, or no route for
    /// this method: then `allowed` is not empty), an HTTP error of the framework (its status), or
    /// any other error (an AeroError keeps its code and status).
    static func response(_ error: any Error, request: Request, allowed: [HTTPRequest.Method]) -> Response {
        let method = request.method.rawValue, path = request.uri.path
        if let http = error as? HTTPError, http.status == .notFound {
            if !allowed.isEmpty, !allowed.contains(request.method) {
                var response = methodNotAllowed(method, path, allowed: allowed, request: request)
                response.headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
                return response
            }
            return notFound(method, path, request: request)
        }
        let aero: AeroError
        let status: HTTPResponse.Status
        if let http = error as? HTTPError {
            status = http.status
            aero = AeroError(status.code >= 500 ? .internalError : .requestInvalid, http.body ?? status.reasonPhrase)
        } else if let storage = error as? StorageError {
            return storage.response
        } else {
            aero = AeroError.wrap(error)
            status = HTTPErrors.status(of: aero.code)
        }
        return shaped(aero, status: status, request: request)
    }

    private static func notFound(_ method: String, _ path: String, request: Request) -> Response {
        switch api(of: path) {
        case .rest:
            // PostgREST's answer to a path it does not serve.
            return RESTError.response(code: "PGRST125", message: "Invalid path specified in request URL",
                                      details: "\(method) \(path)", status: .notFound)
        case .storage:
            // Supabase Storage (fastify) names the route it did not find.
            return shaped(AeroError(.notFound, "Route \(method):\(path) not found"), status: .notFound, request: request,
                          storageError: "not_found")
        default:
            return shaped(AeroError(.notFound, "no such route: \(method) \(path)"), status: .notFound, request: request,
                          auth: "not_found")
        }
    }

    private static func methodNotAllowed(_ method: String, _ path: String, allowed: [HTTPRequest.Method],
                                         request: Request) -> Response {
        let list = allowed.map(\.rawValue).joined(separator: ", ")
        switch api(of: path) {
        case .rest:
            // PostgREST's code for an HTTP method it does not support on a resource.
            return RESTError.response(code: "PGRST117", message: "Unsupported HTTP method: \(method)",
                                      details: "\(path) allows \(list)", status: .methodNotAllowed)
        default:
            return shaped(AeroError(.methodNotAllowed, "\(method) is not allowed on \(path) (allowed: \(list))"),
                          status: .methodNotAllowed, request: request, auth: "method_not_allowed",
                          storageError: "Method Not Allowed")
        }
    }
}
