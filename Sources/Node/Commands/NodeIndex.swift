// `GET /`: a small JSON index of what this node serves, without a key (like PostgREST's and
// GoTrue's own roots, it names nothing secret):
//   {"name":"AeroDB","version":"0.1.0","build":"debug","node_id":"n1","role":"primary","epoch":1,
//    "apis":{"rest":"/rest/v1","auth":"/auth/v1","storage":"/storage/v1","functions":"/functions/v1",
//            "realtime":"/realtime/v1/websocket","admin":"/admin/v1"},
//    "health":"/health","ready":"/ready"}
// `role` is `primary` or `replica` as this node's replication layer has it at the time of the request.

import BaaS
import Hummingbird
import Kernel
import Replication

enum NodeIndex {
    static let apis: [String: JSONValue] = [
        "rest": .string("/rest/v1"), "auth": .string("/auth/v1"), "storage": .string("/storage/v1"),
        "functions": .string("/functions/v1"), "realtime": .string("/realtime/v1/websocket"), "admin": .string("/admin/v1"),
    ]

    static func body(nodeID: String, role: ReplicationNode.RoleSnapshot) -> JSONValue {
        .object(["name": .string("AeroDB"), "version": .string(BuildInfo.version), "build": .string(BuildInfo.configuration),
                 "node_id": .string(nodeID), "role": .string(role.isPrimary ? "primary" : "replica"),
                 "epoch": .int(Int64(role.epoch)), "apis": .object(apis),
                 "health": .string("/health"), "ready": .string("/ready")])
    }

    static func add(to router: Router<AeroRequestContext>, nodeID: String, replication: ReplicationNode) {
        router.get("/") { _, _ in HTTPJSON.response(body(nodeID: nodeID, role: replication.currentRole)) }
    }
}
