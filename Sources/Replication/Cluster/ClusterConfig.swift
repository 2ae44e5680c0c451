// Static cluster membership and replication settings (SPEC §4: membership is static config).

import Crypto
import Foundation
import Kernel

public enum CommitMode: String, Sendable, CaseIterable {
    /// Acknowledge after the primary's flush.
    case async
    /// Acknowledge after the primary and at least one replica flushed (default for a cluster).
    case sync
    /// Acknowledge after the primary and every replica flushed.
    case all
}

public struct ClusterMember: Sendable, Equatable {
    public let nodeID: String
    /// HOST:PORT of its HTTP API (forwarded writes, status).
    public let http: String
    public let replication: PeerAddress

    public init(nodeID: String, http: String, replication: PeerAddress) {
        self.nodeID = nodeID
        self.http = http
        self.replication = replication
    }
}

public struct ClusterConfig: Sendable {
    public let nodeID: String
    public let clusterID: String
    /// Every member, this node included.
    public let members: [ClusterMember]
    public let commitMode: CommitMode
    /// How long a commit waits for replica flushes before it is reported in doubt.
    public let replicaWaitMillis: Int64
    /// Proves membership in HELLO: HMAC-SHA256 of the cluster id with the cluster's JWT secret.
    public let token: String
    /// Mutual TLS with the cluster CA on every replication connection (TLS1); nil: plain TCP.
    public var tls: ReplicationTLS?

    public init(nodeID: String, clusterID: String, members: [ClusterMember], commitMode: CommitMode,
                replicaWaitMillis: Int64, secret: [UInt8]) {
        precondition(members.contains { $0.nodeID == nodeID }, "a node is a member of its own cluster")
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.members = members
        self.commitMode = commitMode
        self.replicaWaitMillis = replicaWaitMillis
        self.token = Self.token(clusterID: clusterID, secret: secret)
    }

    public static func token(clusterID: String, secret: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(("aerodb-replication:" + clusterID).utf8),
                                                  using: SymmetricKey(data: secret))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    public var peers: [ClusterMember] { members.filter { $0.nodeID != nodeID } }

    public var me: ClusterMember { members.first { $0.nodeID == nodeID }! }

    public func member(_ id: String) -> ClusterMember? { members.first { $0.nodeID == id } }

    /// Replica flushes a commit needs before it is acknowledged, given the configured peers
    /// (aerodb.json's mode; the mode in effect is `ReplicationNode.commitModes`).
    public var replicaAcksNeeded: Int { acksNeeded(commitMode) }

    /// Replica flushes a commit in `mode` needs, given the configured peers.
    public func acksNeeded(_ mode: CommitMode) -> Int {
        switch mode {
        case .async: 0
        case .sync: peers.isEmpty ? 0 : 1
        case .all: peers.count
        }
    }

    /// The membership check every session starts with: this cluster's id, its token, a listed
    /// node id. Anything else is a stranger, answered a REFUSE that names nothing.
    func admits(_ hello: ReplicationMessage.Hello) -> Bool {
        let cluster = hello.clusterID == clusterID
        let token = accepts(token: hello.token)
        let member = member(hello.nodeID) != nil
        return cluster && token && member
    }

    /// Constant-time comparison of a presented token.
    func accepts(token presented: String) -> Bool {
        let a = Array(presented.utf8), b = Array(token.utf8)
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
