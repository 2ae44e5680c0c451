// `/admin/v1/cluster/...`: status of every member, promotion and switchover (service key).
// Every promotion and switchover is written to the log with `"audit": true`, the caller's
// user agent and the full report (the audit collection arrives with the auth issue).

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
                let force = try await forceFlag(request)
                let report = await replication.promote(force: force)
                audit(logger, "promote", request, report)
                return HTTPJSON.response(report.json, status: report.promoted ? .ok : .conflict)
            }
        }
        cluster.post("switchover") { request, _ in
            try await AdminAPI.guarded(request, keys) {
                let report = await replication.switchover()
                audit(logger, "switchover", request, report)
                return HTTPJSON.response(report.json, status: report.promoted ? .ok : .conflict)
            }
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
        logger.notice("cluster operation", metadata: [
            "audit": "true", "action": "\(action)", "user_agent": "\(request.headers[.userAgent] ?? "none")",
            "promoted": "\(report.promoted)", "report": "\(JSON.encodeString(report.json))"])
    }
}
