// HTTP between cluster members: forwarded writes (ClusterMiddleware), blob pushes and fetches
// (BlobReplicator), realtime relays (RealtimeRelay). Without cluster TLS they use `http://`; with
// it (`tls.ca_file` in aerodb.json, `aerodb cluster init --tls`), `https://` trusting the cluster
// CA only (never the system's roots) and checking that the certificate names the member's host
// (TLS1 in docs/INVARIANTS.md).
//
// Set once by `aerodb start` before the front ends start (the member clients are created on
// first use and read it then); a node without it, and every in-process test, speaks plain HTTP.

import AsyncHTTPClient
import HummingbirdTLS
import Kernel
import Synchronization

public enum MemberHTTPS {
    private static let configuration = Mutex<TLSConfiguration?>(nil)

    /// Members speak HTTPS to each other, trusting the CA bundle in `caFile` (PEM). Throws
    /// AERO_CONFIG_INVALID when the file holds no readable certificate.
    public static func enable(caFile: String) throws {
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
            throw AeroError(.configInvalid, "tls.ca_file \(caFile): not a readable PEM certificate bundle (\(error))")
        }
        guard !roots.isEmpty else { throw AeroError(.configInvalid, "tls.ca_file \(caFile) holds no certificate") }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(roots)
        tls.certificateVerification = .fullVerification
        configuration.withLock { $0 = tls }
    }

    /// The client TLS configuration of member-to-member HTTP, nil for plain HTTP.
    public static var tlsConfiguration: TLSConfiguration? { configuration.withLock { $0 } }

    /// "https" with cluster TLS, else "http".
    public static var scheme: String { tlsConfiguration == nil ? "http" : "https" }

    /// The URL of `path` on the member at `hostPort` (HOST:PORT).
    public static func url(_ hostPort: String, _ path: String) -> String { "\(scheme)://\(hostPort)\(path)" }

    /// Makes a member client trust the cluster CA (when TLS is on).
    public static func apply(to client: inout HTTPClient.Configuration) {
        if let tls = tlsConfiguration { client.tlsConfiguration = tls }
    }
}
