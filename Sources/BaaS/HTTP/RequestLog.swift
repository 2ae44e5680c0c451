// One log line per request, after the answer: method, path, query, status, milliseconds.
// The query of an email link (`/auth/v1/verify?token=...`) is a bearer secret and is never
// logged; no header (keys, tokens) and no body is ever logged.

import Hummingbird
import Logging

struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    static var secretQueryPaths: Set<String> { ["/auth/v1/verify"] }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let response = try await next(request, context)
        let path = request.uri.path
        let query = Self.secretQueryPaths.contains(path) ? "(redacted)" : (request.uri.query ?? "")
        let elapsed = ContinuousClock.now - started
        context.logger.info("request", metadata: [
            "method": "\(request.method.rawValue)", "path": "\(path)", "query": "\(query)",
            "status": "\(response.status.code)",
            "ms": "\(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1e3)",
        ])
        return response
    }
}
