// `/admin/v1/cluster/...`: status of every member, promotion and switchover (service key).
// Every promotion and switchover is written to the log with `"audit": true`, the caller's
// user agent and the full report (the audit collection arrives with the auth issue).
// `?dry_run=true` on promote and switchover runs the same checks and acts on nothing (the report
// carries `dry_run` and `would_promote`; 200 when the call would go on, 409 with the refusal as the
// real call would answer it); a dry run is logged without `audit` and is not an audit row.

import BaaS
import Hummingbird
import Kernel
import Logging
import NIOCore
import Replication

enum ClusterRoutes {
    static func add(to router: Router<AeroRequestContext>, replication: ReplicationNode, keys: KeyChecker, logger: Logger) {
        let cluster = router.group("admin/v1/cluster")
        cluster.get("status") { request, _ in
            try await AdminAPI.guarded(request, keys) { HTTPJSON.response(await replication.clusterStatus()) }
        }
        cluster.post("promote") { request, _ in
            try await AdminAPI.guarded(request, keys) {
                let dryRun = try dryRunFlag(request)
                let force = try await forceFlag(request)
                let report = await replication.promote(force: force, dryRun: dryRun)
                audit(logger, "promote", request, report)
                return HTTPJSON.response(report.json, status: report.promoted || report.wouldPromote ? .ok : .conflict)
            }
        }
        cluster.post("switchover") { request, _ in
            try await AdminAPI.guarded(request, keys) {
                let report = await replication.switchover(dryRun: try dryRunFlag(request))
                audit(logger, "switchover", request, report)
                return HTTPJSON.response(report.json, status: report.promoted || report.wouldPromote ? .ok : .conflict)
            }
        }
    }

    /// `?dry_run=true|false` (absent: false); any other value is refused.
    static func dryRunFlag(_ request: Request) throws -> Bool {
        guard let text = request.uri.queryParameters.get("dry_run") else { return false }
        switch text {
        case "true": return true
        case "false": return false
        default: throw AeroError(.requestInvalid, "dry_run must be true or false")
        }
    }

    /// `{"force": true}` or an empty body.
    private static func forceFlag(_ request: Request) async throws -> Bool {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: 4096)
        } catch {
            throw AeroError(.requestInvalid, "the body is {\"force\": true|false} or empty (at most 4096 bytes)")
        }
        guard body.readableBytes > 0 else { return false }
        let json = try JSON.parse(Array(body.readableBytesView))
        guard case .object(let o) = json, o.keys.allSatisfy({ $0 == "force" }) else {
            throw AeroError(.requestInvalid, "the body is {\"force\": true|false} or empty")
        }
        guard let force = o["force"] else { return false }
        guard case .bool(let flag) = force else { throw AeroError(.requestInvalid, "force must be true or false") }
        return flag
    }

    private static func audit(_ logger: Logger, _ action: String, _ request: Request,
                              _ report: PromotionReport) {
        guard !report.dryRun else {
            logger.info("cluster operation dry run", metadata: [
                "action": "\(action)", "would_promote": "\(report.wouldPromote)", "report": "\(JSON.encodeString(report.json))"])
            return
        }
        logger.notice("cluster operation", metadata: [
            "audit": "true", "action": "\(action)", "user_agent": "\(request.headers[.userAgent] ?? "none")",
            "promoted": "\(report.promoted)", "report": "\(JSON.encodeString(report.json))"])
    }
}
