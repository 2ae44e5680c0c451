// Cluster TLS at start and in the CLI (issue 18 part 6, TLS1): a node whose aerodb.json has
// `tls.ca_file` and cluster members speaks mutual TLS on its replication port (ReplicationTLS)
// and HTTPS to the other members (MemberHTTPS), with the same certificate as its HTTP port.
// `aerodb cluster cert` issues or replaces a member certificate from the cluster CA.

import ArgumentParser
import AsyncHTTPClient
import BaaS
import Foundation
import Kernel
import Logging
import Replication
import X509
import NIOSSL

extension NodeConfig {
    /// The hosts a member certificate names: where peers reach it (its own `cluster` entry's
    /// http and replication hosts) and its own `http` / `replication` hosts, wildcards left out.
    var certificateHosts: [String] {
        let own = members.first { $0.nodeID == nodeID }
        let hosts = [own.flatMap { try? HostPort.parse($0.http).host }, own?.replication.host,
                     try? HostPort.parse(http).host, try? HostPort.parse(replication ?? Self.defaultReplication(http: http)).host]
        return hosts.compactMap { $0 }.filter { !["0.0.0.0", "::", "[::]"].contains($0) }
    }

    /// Whether this node is a member of a cluster with TLS (`tls.ca_file` and peers).
    var hasClusterTLS: Bool { tls?.caFile != nil && members.count > 1 }

    /// The replication TLS of a cluster with TLS, nil otherwise (plain TCP between members).
    func replicationTLS(directory: String, logger: Logger) throws -> ReplicationTLS? {
        guard hasClusterTLS, let tls, let ca = tls.caFile else { return nil }
        return try ReplicationTLS(certFile: TLSFiles.path(tls.certFile, in: directory), keyFile: TLSFiles.path(tls.keyFile, in: directory),
                                  caFile: TLSFiles.path(ca, in: directory), logger: logger)
    }

    /// At `aerodb start`: member HTTP over HTTPS trusting the cluster CA, the replication TLS,
    /// and a warning when the certificate expires soon. Says at start when the cluster is plain.
    func startClusterTLS(directory: String, logger: Logger) throws -> ReplicationTLS? {
        guard members.count > 1 else { return nil }
        guard hasClusterTLS, let tls, let ca = tls.caFile else {
            logger.warning("cluster without TLS: replication, forwarded writes, blob copies and realtime relays between members travel in plain text (local development or a private network); `aerodb cluster init --tls` makes a cluster CA (docs/OPERATIONS.md \"TLS in a cluster\")")
            return nil
        }
        try MemberHTTPS.enable(caFile: TLSFiles.path(ca, in: directory))
        let replication = try replicationTLS(directory: directory, logger: logger)
        if let data = FileManager.default.contents(atPath: TLSFiles.path(tls.certFile, in: directory)),
           let certificate = try? Certificate(pemEncoded: String(decoding: data, as: UTF8.self)) {
            let days = ClusterCA.daysLeft(certificate)
            if days < ClusterTLSLimits.expiryWarningDays {
                logger.warning("the cluster TLS certificate of this member expires soon: replace it with `aerodb cluster cert`",
                               metadata: ["cert_file": "\(tls.certFile)", "days_left": "\(days)", "not_after": "\(certificate.notValidAfter)"])
            }
            logger.info("cluster TLS: mutual TLS on the replication port, HTTPS between members",
                        metadata: ["cert_file": "\(tls.certFile)", "ca_file": "\(ca)", "not_after": "\(certificate.notValidAfter)"])
        }
        return replication
    }
}

struct ClusterCertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cert",
        abstract: "Issue or replace a member's TLS certificate, signed by the cluster CA.",
        discussion: "Writes NODE/tls/node.pem (CN = the node id, SANs = the hosts of its http and replication addresses and every --san) and NODE/tls/node-key.pem (mode 0600), and adds the CA to NODE/tls/ca.pem when it is not there. Use it to replace an expiring or compromised certificate, after changing a member's host, or for a new member; then restart that member. The CA key is read from --ca only (no member holds it).\n\nExamples:\n  aerodb cluster cert --ca ./c/cluster-ca --dir ./c/n2\n  aerodb cluster cert --ca /secure/ca --dir /srv/aerodb/n4 --san db4.internal")

    @Option(help: "The cluster CA directory (ca.pem, ca-key.pem) written by `aerodb cluster init --tls`.") var ca: String
    @Option(help: "The member's node directory.") var dir: String
    @Option(help: "One more name (DNS or IP) in the certificate; repeatable.") var san: [String] = []

    func run() throws {
        let config = try NodeConfig.load(directory: dir)
        let authority = try ClusterCA.load(directory: ca)
        let hosts = config.certificateHosts + san
        let member = try authority.writeMember(nodeDirectory: dir, nodeID: config.nodeID, hosts: hosts)
        let files = ClusterCA.memberTLS
        print("wrote \(dir)/\(files.certFile) for \(config.nodeID) (hosts \(Array(Set(hosts)).sorted().joined(separator: ", ")), valid until \(member.notValidAfter)), \(dir)/\(files.keyFile) (mode 0600), \(dir)/\(files.caFile!)")
        if config.tls?.caFile == nil || config.tls?.certFile != files.certFile {
            print("aerodb.json of \(config.nodeID) does not use these files yet: set \"tls\": \(JSON.encodeString(files.json))")
        }
        print("restart \(config.nodeID) to use the new certificate (its peers need no restart)")
    }
}

/// HTTP clients of the CLI's admin commands (`status`, `promote`, `switchover`, `rejoin`): an
/// https:// URL of a cluster with TLS is verified against the cluster CA.
enum ClusterCLI {
    /// The CA bundle to trust: `--cacert`, else the `tls.ca_file` of `--dir`, else none (the system's roots).
    static func caFile(cacert: String?, dir: String?) throws -> String? {
        if let cacert { return cacert }
        guard let dir, let config = try? NodeConfig.load(directory: dir), let ca = config.tls?.caFile else { return nil }
        return TLSFiles.path(ca, in: dir)
    }

    /// Runs `body` with `HTTPClient.shared`, or with a client trusting only `caFile` (shut down after).
    static func withClient<T: Sendable>(trusting caFile: String?, _ body: (HTTPClient) async throws -> T) async throws -> T {
        guard let caFile else { return try await body(HTTPClient.shared) }
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
            throw AeroError(.configInvalid, "\(caFile): not a readable PEM CA bundle (\(error))")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(roots)
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = tls
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let result = try await body(client)
            try? await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
