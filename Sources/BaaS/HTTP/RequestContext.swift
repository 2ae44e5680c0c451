// The request context of every AeroDB router: Hummingbird's core storage plus the peer's
// address (per-IP rate limits and the audit log's "from where").

import Hummingbird
import NIOCore

/// A context that carries the client's address (set by FrontMiddleware).
public protocol ClientAddressContext: RequestContext {
    var clientIP: String? { get set }
}

public struct AeroRequestContext: RequestContext, RemoteAddressRequestContext, ClientAddressContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The original client's address: the TCP peer, or the verified address a cluster node
    /// forwarded the request for.
    public var clientIP: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}
