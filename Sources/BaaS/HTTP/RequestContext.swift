// The request context of every AeroDB router: Hummingbird's core storage plus the peer's
// address (per-IP rate limits and the audit log's "from where").

import Hummingbird
import NIOCore

/// A context that carries the client's address (set by FrontMiddleware).
protocol ClientAddressContext: RequestContext {
    var clientIP: String? { get set }
    /// Called by FrontMiddleware once per request: `clientIP` is then the address `verifier`
    /// finds for `request` (the verified forwarded address, else the TCP peer), worked out when a
    /// handler reads it, not on every request (issue 19: most routes never read it, and the peer's
    /// text cost an `inet_ntop` per request).
    mutating func resolveClientIP(with verifier: ClientAddressVerifier, for request: Request)
}

public struct AeroRequestContext: RequestContext, RemoteAddressRequestContext, ClientAddressContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// How the client's address is found: given outright (`clientIP` set), or left to a verifier
    /// and the request it came with.
    private enum Address {
        case given(String?)
        case pending(ClientAddressVerifier, Request)
    }
    private var address = Address.given(nil)

    /// The original client's address: the TCP peer, or the verified address a cluster node
    /// forwarded the request for.
    public var clientIP: String? {
        get {
            switch address {
            case .given(let ip): return ip
            case .pending(let verifier, let request): return verifier.clientIP(request, remote: remoteAddress)
            }
        }
        set { address = .given(newValue) }
    }

    mutating func resolveClientIP(with verifier: ClientAddressVerifier, for request: Request) {
        address = .pending(verifier, request)
    }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}
