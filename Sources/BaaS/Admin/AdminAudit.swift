// Every admin action that changes something is recorded in the audit log (`_audit_log`, SPEC §5
// Observability): action `admin <METHOD> <path>`, the service role as actor, the client address,
// the answer's status. Data writes (`POST /admin/v1/transactions`, like REST writes) are not
// admin events: the WAL records them. Runs where the request executes (a replica forwards admin writes to the
// primary first), after the handler answered; the body is never stored. A failed audit write
// is logged (and the answer still returned: the action itself already happened).

import Hummingbird
import Kernel
import Logging

struct AdminAuditMiddleware<Context: ClientAddressContext>: RouterMiddleware {
    let database: Database
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        let path = request.uri.path
        guard path.hasPrefix("/admin/v1/"), request.method != .get, request.method != .head,
              !ClusterMiddleware<Context>.localAdminPaths.contains(path), path != "/admin/v1/transactions",
              response.status.code < 400 else { return response }
        let event = AuthEvent(action: "admin \(request.method.rawValue) \(path)", actorRole: "service_role", target: nil,
                              ip: context.clientIP, details: ["status": .int(Int64(response.status.code))])
        do {
            try await SystemCollections.ensure(AuthCollections.all, in: database)
            _ = try await database.commit([event.operation(now: .string(Timestamp.format(SystemClock().nowMicros())))])
        } catch {
            logger.error("audit row not written", metadata: ["action": "\(event.action)", "error": "\(error)"])
        }
        return response
    }
}
