// The BaaS front ends' view of the cluster, over the replication layer.

import BaaS
import Kernel
import Replication

struct NodeClusterView: ClusterView {
    let replication: ReplicationNode
    let startedMicros: Int64

    var nodeID: String { replication.config.nodeID }

    func primaryHTTP() -> String? { replication.primaryHTTP() }

    func dataRefusal() -> AeroError? {
        replication.divergedReason.withLock { $0 }.map {
            AeroError(.replicationDiverged, "node \(nodeID) diverged from the primary and serves no data until `aerodb rejoin`: \($0)", invariant: "A4")
        }
    }

    func statusFields() async -> [String: JSONValue] {
        guard case .object(var status) = await replication.status() else { return [:] }
        var fields: [String: JSONValue] = [:]
        for key in ["role", "epoch", "primary"] { fields[key] = status.removeValue(forKey: key) }
        fields["replication"] = .object(status)
        return fields
    }
}
