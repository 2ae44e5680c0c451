// The durable authority marker (SPEC §4): which node of which cluster is primary, in which epoch.
//
// File `<data>/authority.json`, replaced atomically (temp, fsync, rename, fsync dir), read at boot:
//   {"cluster_id":"<uuid>","epoch":N,"primary":"n1","checksum":"<XXH64 hex of the canonical JSON without checksum>"}
//
// Invariants:
// - A node acts as primary only if its marker names it (A1 groundwork); it is never deleted.
// - The epoch in a marker only grows: `replace` refuses a lower or equal epoch (A2 groundwork).
// - A marker that fails its checksum is corruption: the node refuses to start (D2).
// Replication (Node/ReplicationNode.swift) replaces the marker on promotion, switchover and when
// a node learns of a newer epoch; `aerodb rejoin` when a diverged node follows the new primary.

import Kernel

public struct AuthorityMarker: Sendable, Equatable {
    public static let fileName = "authority.json"

    public let clusterID: String
    public let epoch: UInt64
    public let primary: String

    public init(clusterID: String, epoch: UInt64, primary: String) {
        precondition(epoch >= 1, "epochs start at 1")
        self.clusterID = clusterID
        self.epoch = epoch
        self.primary = primary
    }

    public func isPrimary(_ nodeID: String) -> Bool { primary == nodeID }

    private var canonical: JSONValue {
        .object(["cluster_id": .string(clusterID), "epoch": .int(Int64(epoch)), "primary": .string(primary)])
    }

    var encoded: [UInt8] {
        guard case .object(var fields) = canonical else { preconditionFailure("canonical form is an object") }
        fields["checksum"] = .string(String(XXH64.hash(JSON.encode(canonical)), radix: 16))
        return JSON.encode(.object(fields)) + [0x0A]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> AuthorityMarker {
        func corrupt(_ why: String) -> AeroError {
            AeroError(.authorityCorrupt, "authority marker \(path) \(why); refusing to start", invariant: "D2")
        }
        let json: JSONValue
        do { json = try JSON.parse(Array(bytes.prefix { $0 != 0x0A })) } catch { throw corrupt("is not valid JSON") }
        guard case .string(let cluster)? = json["cluster_id"], case .int(let epoch)? = json["epoch"], epoch >= 1,
              case .string(let primary)? = json["primary"], case .string(let checksum)? = json["checksum"] else {
            throw corrupt("is malformed")
        }
        let marker = AuthorityMarker(clusterID: cluster, epoch: UInt64(epoch), primary: primary)
        guard String(XXH64.hash(JSON.encode(marker.canonical)), radix: 16) == checksum else {
            throw corrupt("fails its checksum")
        }
        return marker
    }
}

/// Reads and replaces a node's marker through the kernel's disk interface.
public struct AuthorityStore: Sendable {
    let fileSystem: any FileSystem
    let path: String

    public init(fileSystem: any FileSystem = POSIXFileSystem(), dataDirectory: String) {
        self.fileSystem = fileSystem
        self.path = Path.join(dataDirectory, AuthorityMarker.fileName)
    }

    /// The marker, or nil when the node has none yet.
    public func read() throws -> AuthorityMarker? {
        guard fileSystem.exists(path) else { return nil }
        return try AuthorityMarker.decode(try fileSystem.readFile(path), path: path)
    }

    /// Writes the first marker of a node; refuses to overwrite one.
    public func create(_ marker: AuthorityMarker) throws {
        guard try read() == nil else {
            throw AeroError(.configInvalid, "\(path) already exists; an authority marker is never overwritten by init")
        }
        try fileSystem.writeAtomically(marker.encoded, to: path)
    }

    /// Replaces the marker with a higher epoch of the same cluster, atomically and durably.
    public func replace(with marker: AuthorityMarker) throws {
        guard let current = try read() else { throw AeroError(.configInvalid, "\(path) does not exist") }
        guard marker.clusterID == current.clusterID else {
            throw AeroError(.configInvalid, "marker of cluster \(marker.clusterID) cannot replace one of cluster \(current.clusterID)")
        }
        guard marker.epoch > current.epoch else {
            throw AeroError(.configInvalid, "epoch \(marker.epoch) is not above the current epoch \(current.epoch)", invariant: "A2")
        }
        try fileSystem.writeAtomically(marker.encoded, to: path)
    }
}
