// Mutual TLS on the replication port (issue 18 part 6, invariant TLS1 in docs/INVARIANTS.md).
//
// When a cluster has TLS (`tls.ca_file` in aerodb.json, written by `aerodb cluster init --tls`),
// every replication connection, both ways, is TLS 1.3 before any protocol byte:
//
//   TCP connect -> TLS handshake (both sides present a certificate; each verifies the other's
//   chain against the cluster CA; the opener also checks the listener's certificate names the
//   host it dialled, an IP or DNS subjectAltName) -> framed replication protocol (HELLO with the
//   HMAC cluster token first, as without TLS: defence in depth).
//
// Invariants:
// - A listener with TLS never decodes a frame from a peer that has not completed the handshake
//   with a certificate signed by the cluster CA: the TLS handler sits first in the pipeline, and
//   a failed handshake closes the connection (plain TCP gets nothing but, at most, a TLS alert).
// - An opener never sends a frame before its handshake completed: `Transport.connect` returns
//   only after `handshakeCompleted`, and a failed handshake is AERO_CLUSTER_TLS naming the peer
//   and BoringSSL's reason (unknown CA, bad certificate, wrong host), logged at most once per
//   `refusalLogIntervalMillis` per peer on each side.
// - The same files serve the HTTP port (HTTPS) and member-to-member HTTP (BaaS MemberHTTPS).

import Kernel
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

public struct ReplicationTLS: Sendable {
    /// A refused handshake is logged at most once per this long per peer address (a replica
    /// retries every `reconnectMillis`; the log says why once, not ten times a second).
    public static let refusalLogIntervalMillis: Int64 = 10_000

    let server: NIOSSLContext
    let client: NIOSSLContext
    let logger: Logger
    let refusals: RefusalLog

    /// Reads the PEM files (this member's certificate chain and key, the cluster CA bundle).
    /// Throws AERO_CONFIG_INVALID naming the file that cannot be read or parsed.
    public init(certFile: String, keyFile: String, caFile: String, logger: Logger) throws {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        let roots: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certFile) } catch {
            throw AeroError(.configInvalid, "tls.cert_file \(certFile): not a readable PEM certificate chain (\(error))")
        }
        do { key = try NIOSSLPrivateKey(file: keyFile, format: .pem) } catch {
            throw AeroError(.configInvalid, "tls.key_file \(keyFile): not a readable PEM private key (\(error))")
        }
        do { roots = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
            throw AeroError(.configInvalid, "tls.ca_file \(caFile): not a readable PEM certificate bundle (\(error))")
        }
        guard !chain.isEmpty, !roots.isEmpty else {
            throw AeroError(.configInvalid, "tls: \(chain.isEmpty ? certFile : caFile) holds no certificate")
        }
        var serverConfig = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key), trustRoots: .certificates(roots))
        serverConfig.minimumTLSVersion = .tlsv13  // both ends are AeroDB members
        var clientConfig = TLSConfiguration.makeClientConfiguration()
        clientConfig.minimumTLSVersion = .tlsv13
        clientConfig.trustRoots = .certificates(roots)  // the cluster CA only, never the system's roots
        clientConfig.certificateVerification = .fullVerification  // chain and the dialled host
        clientConfig.certificateChain = chain.map { .certificate($0) }
        clientConfig.privateKey = .privateKey(key)
        do {
            server = try NIOSSLContext(configuration: serverConfig)
            client = try NIOSSLContext(configuration: clientConfig)
        } catch {
            throw AeroError(.configInvalid, "tls: \(certFile) and \(keyFile) do not make a TLS identity (\(error))")
        }
        self.logger = logger
        self.refusals = RefusalLog()
    }

    /// The error of a refused handshake, as both sides report it.
    static func refusal(_ peer: String, _ error: any Error, opener: Bool) -> AeroError {
        let side = opener ? "the TLS handshake with \(peer) failed" : "refused a replication connection from \(peer): TLS handshake failed"
        return AeroError(.clusterTLS, "\(side) (\(error)); every member needs a certificate signed by this cluster's CA (tls.ca_file) naming its host")
    }

    /// Adds the listener's TLS handler (first in the pipeline) and the handler that logs and
    /// closes a connection whose handshake fails.
    func addServerHandlers(_ channel: any Channel) throws {
        let peer = channel.remoteAddress.map { "\($0)" } ?? "unknown"
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server))
        try channel.pipeline.syncOperations.addHandler(HandshakeWatch(peer: peer, opener: false, tls: self, promise: nil))
    }

    /// Adds the opener's TLS handler (SNI and host check for `host`); the future completes when
    /// the handshake did, or fails with AERO_CLUSTER_TLS.
    func addClientHandlers(_ channel: any Channel, host: String, peer: String) throws -> EventLoopFuture<Void> {
        let isIP = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        // An IP is checked against the certificate's IP SANs by the connected address (no SNI).
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: client, serverHostname: isIP ? nil : host))
        let promise = channel.eventLoop.makePromise(of: Void.self)
        try channel.pipeline.syncOperations.addHandler(HandshakeWatch(peer: peer, opener: true, tls: self, promise: promise))
        return promise.futureResult
    }

    /// Logs a refusal unless this peer's was logged within `refusalLogIntervalMillis`.
    func logRefusal(_ error: AeroError, peer: String) {
        guard refusals.shouldLog(peer) else { return }
        logger.warning("cluster TLS handshake refused", metadata: ["code": "\(error.code.rawValue)", "peer": "\(peer)", "error": "\(error.message)"])
    }
}

/// When each peer's refusal was last logged (bounded: at most `peersMax` entries, cleared when full).
final class RefusalLog: Sendable {
    /// Distinct peer addresses remembered; a flood of strangers clears the table, never grows it.
    static let peersMax = 256
    private let last = Mutex<[String: Int64]>([:])

    func shouldLog(_ peer: String) -> Bool {
        let now = SystemClock().nowMicros() / 1_000
        return last.withLock { table in
            // The address without its port: a replica reconnects from a new port each time.
            let key = peer.split(separator: ":").dropLast().joined(separator: ":")
            if let at = table[key], now - at < ReplicationTLS.refusalLogIntervalMillis { return false }
            if table.count >= Self.peersMax { table.removeAll() }
            table[key] = now
            return true
        }
    }
}

/// Sits right after the TLS handler: completes the opener's promise at `handshakeCompleted`;
/// an error or a close before it is a refused handshake (logged, the connection closed).
final class HandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    let peer: String
    let opener: Bool
    let tls: ReplicationTLS
    let promise: EventLoopPromise<Void>?
    private var done = false

    init(peer: String, opener: Bool, tls: ReplicationTLS, promise: EventLoopPromise<Void>?) {
        self.peer = peer
        self.opener = opener
        self.tls = tls
        self.promise = promise
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent, !done {
            done = true
            promise?.succeed(())
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            let refusal = ReplicationTLS.refusal(peer, error, opener: opener)
            tls.logRefusal(refusal, peer: peer)
            promise?.fail(refusal)
            context.close(promise: nil)
            return
        }
        // TLS 1.3: the opener finishes its handshake before the listener has checked the opener's
        // certificate, so a refusal of it (an alert: unknown CA, bad certificate) arrives at the
        // first read. Reported the same way.
        if error is NIOSSLError || error is BoringSSLError {
            let refusal = ReplicationTLS.refusal(peer, error, opener: opener)
            tls.logRefusal(refusal, peer: peer)
            context.fireErrorCaught(refusal)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise?.fail(AeroError(.clusterTLS, "\(peer) closed the connection during the TLS handshake (is its replication port TLS with this cluster's CA?)"))
        }
        context.fireChannelInactive()
    }

    /// A connection that never became active (refused, timed out) ends here, not in channelInactive.
    func handlerRemoved(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise?.fail(AeroError(.primaryUnavailable, "the connection to \(peer) closed before its TLS handshake"))
        }
    }
}
