// The request context of every AeroDB router: Hummingbird's core storage plus the peer's
// address (per-IP rate limits and the audit log's "from where").

import Hummingbird
import NIOCore

public struct AeroRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}
