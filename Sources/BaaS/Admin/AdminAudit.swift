// Every admin action that changes something is recorded in the audit log (`_audit_log`, SPEC §5
// Observability): action `admin <METHOD> <path>`, the service role as actor, the client address,
// the answer's status. The row is written after the answer, in the background. Data writes (`POST /admin/v1/transactions`, like REST writes) are not
// admin events: the WAL records them. Runs where the request executes (a replica forwards admin writes to the
// primary first), after the handler answered; the body is never stored. A failed audit write
// is logged (and the answer still returned: the action itself already happened).

import Hummingbird
import Kernel
import Logging

/// Called by FrontMiddleware (step 5) after the handler answered; not a middleware of its own.
struct AdminAudit<Context: ClientAddressContext>: Sendable {
    let database: Database
    let logger: Logger

    /// Records `request` when it was an admin action that changed something (FrontMiddleware
    /// calls this after the handler answered).
    func record(_ request: Request, context: Context, response: Response) {
        let path = request.uri.path
        guard path.hasPrefix("/admin/v1/"), request.method != .get, request.method != .head,
              !ClusterMiddleware<Context>.localAdminPaths.contains(path), path != "/admin/v1/transactions",
              response.status.code < 400,
              request.uri.queryParameters.get("dry_run") != "true" else { return }  // a dry run acts on nothing
        let event = AuthEvent(action: "admin \(request.method.rawValue) \(path)", actorRole: "service_role", target: nil,
                              ip: context.clientIP, details: ["status": .int(Int64(response.status.code))])
        // Off the answer's path: a sync-mode commit right after a promotion may wait for a
        // replica that is not following yet, and the operator's command must not wait for it.
        let (database, logger) = (self.database, self.logger)
        let operation = event.operation(now: .string(Timestamp.format(SystemClock().nowMicros())))
        Task {
            do {
                try await SystemCollections.ensure(AuthCollections.all, in: database)
                _ = try await database.commit([operation])
            } catch {
                logger.error("audit row not written", metadata: ["action": "\(event.action)", "error": "\(error)"])
            }
        }
    }
}
