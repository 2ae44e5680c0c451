// A server that stops (SIGTERM) fires `ChannelShouldQuiesceEvent` once into every open HTTP
// connection (swift-nio-extras' ServerQuiescingHelper, through Hummingbird's Server): Hummingbird's
// HTTPConnectionStateHandler then closes an idle connection, or closes a busy one after its
// response. That handler is installed only once the connection's first request is routed
// (RealtimeHTTPChannel: plain HTTP, or the realtime WebSocket upgrade). A connection accepted
// before the stop that had not yet sent a whole first request head lost the event: it was then
// served like any other, kept alive, and held the stopping node for as long as the client kept
// it (a member relaying realtime every second held a node about 15 minutes, SD1).
//
// `EarlyQuiesceHandler` sits ahead of the HTTP decoder from the connection's start. Decisions
// (`EarlyQuiesce`, a value with no I/O):
// - quiesce before any byte was read: close the connection (nothing was asked, nothing is lost;
//   a client retries a request on a kept-alive connection closed under it);
// - quiesce after some bytes of a first request but before it was routed: remember it, and once
//   routed fire it again, after the request reaches the installed handlers, so the request is
//   answered and then the connection closes (an upgraded WebSocket gets close 1001);
// - quiesce after routing: pass it on to the installed handlers.
// A first request that never completes is closed by the node's drain limit
// (`HTTPDrain.secondsMax`, RealtimeHTTPChannel.handle closes on cancellation).

import NIOCore

/// The node's stop (SD1, docs/OPERATIONS.md "Stopping a node").
public enum HTTPDrain {
    /// After SIGTERM or SIGINT the HTTP server accepts no connection, closes idle ones and lets
    /// requests in progress finish for at most this long; connections still open then are
    /// closed. Below `scripts/dev stop-node`'s 10 s.
    public static let secondsMax = 8
}

/// What a stopping server's quiesce event does to a connection, before and after its first
/// request is routed.
struct EarlyQuiesce: Sendable, Equatable {
    enum Action: Sendable, Equatable {
        case none
        /// Close the connection now.
        case close
        /// Hand the event to the handlers after this one.
        case forward
    }

    private(set) var bytesRead = false
    private(set) var routed = false
    /// A quiesce came after some bytes of the first request, before it was routed.
    private(set) var pending = false

    mutating func read() { bytesRead = true }

    /// The server is stopping.
    mutating func quiesce() -> Action {
        if routed { return .forward }
        if !bytesRead { return .close }
        pending = true
        return .none
    }

    /// The first request was routed (HTTP handlers or the WebSocket handler are installed).
    /// True when a remembered quiesce must be fired again from the pipeline's head.
    mutating func route() -> Bool {
        routed = true
        defer { pending = false }
        return pending
    }
}

/// Applies `EarlyQuiesce` on a connection's event loop; passes reads through unchanged.
final class EarlyQuiesceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private var state = EarlyQuiesce()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        state.read()
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state.quiesce() {
        case .close: context.close(promise: nil)
        case .forward: context.fireUserInboundEventTriggered(event)
        case .none: break
        }
    }

    /// On `channel`'s event loop, once the first request is routed. A remembered quiesce is fired
    /// again on the next loop turn: after the routed request has reached the new handlers.
    func routed(_ channel: any Channel) {
        guard state.route() else { return }
        channel.eventLoop.execute {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }
}
