// The node's HTTP/1 child channel: Hummingbird's HTTP handling, plus the realtime WebSocket
// upgrade served by NIO channel handlers with no task per connection (RealtimeChannelHandler).
//
// Hummingbird runs one task per accepted connection (`ServerChildChannel.handle`). With
// hummingbird-websocket's HTTP1WebSocketUpgradeChannel that task lived as long as the WebSocket
// (it ran swift-websocket's handler and our reader loop), and kept the task-allocator slabs of
// its deepest await: about 16.6 KB per idle subscriber, most of its memory (heaptrack,
// docs/REALTIME.md "Benchmarks"). Here the upgrade installs NIO's WebSocketFrameEncoder and
// WebSocketFrameDecoder (swift-nio's NIOTypedWebSocketServerUpgrader) and our handler on the
// channel's event loop, and `handle` returns at once for an upgraded connection: its task ends.
//
// Everything else is as HTTP1WebSocketUpgradeChannel (hummingbird-websocket 2.8.1) does it:
// - a request that is not an upgrade goes to the node's request loop (HTTPBridge.swift, in place
//   of Hummingbird's `handleHTTP`) with the same pipeline (HTTP1ToHTTPServerCodec, the additional
//   handlers, HTTPConnectionStateHandler); the connection's task then only waits for its close;
// - an upgrade that RealtimeService.upgrade refuses (wrong path, bad key or vsn, node full) is
//   answered 400 and closed;
// - an upgrade request after other requests on a kept-alive connection gets a 307 to the same
//   URL with `Connection: close` (NIO upgrades only a connection's first request).
// No WebSocket extension is negotiated (no permessage-deflate): the client's RSV bits must be clear.
//
// Stopping (SD1): `EarlyQuiesceHandler` sits ahead of the HTTP decoder, so a connection whose
// first request is not yet routed when the server quiesces is closed (no bytes yet) or closed
// after that request's answer, instead of being served on as if the node were not stopping.
// `handle` closes a connection still waiting for its first request when its task is cancelled
// (the node's drain limit, HTTPDrain.secondsMax).

import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

public struct RealtimeHTTPChannel: ServerChildChannel {
    public enum UpgradeResult: Sendable {
        /// Upgraded: RealtimeChannelHandler serves the channel; nothing is left to await.
        case realtime
        /// Plain HTTP: HTTPBridgeHandler serves the channel until it closes.
        case notUpgraded
        case failedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    public struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        public let channel: any Channel
    }

    let responder: HTTPBridgeResponder
    let configuration: HTTP1Channel.Configuration
    let realtime: RealtimeService

    /// `responder`: the node's router (HTTPBridge.swift); Hummingbird's own request loop and
    /// responder are not used.
    public init(responder: @escaping HTTPBridgeResponder, configuration: HTTP1Channel.Configuration, realtime: RealtimeService) {
        self.responder = Self.upgradeResponder(responder)
        self.configuration = configuration
        self.realtime = realtime
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let quiesce = EarlyQuiesceHandler()
            try channel.pipeline.syncOperations.addHandler(quiesce)  // ahead of the HTTP decoder
            let routed = NIOLoopBound(quiesce, eventLoop: channel.eventLoop)
            let upgradeAttempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let accepted = NIOLoopBoundBox.makeEmptyBox(valueType: RealtimeService.Upgrade.self, eventLoop: channel.eventLoop)
            let realtime = self.realtime
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: RealtimeLimits.messageBytesMax,
                enableAutomaticErrorHandling: false,  // RealtimeChannelHandler answers decoder errors (1002, 1009)
                shouldUpgrade: { channel, head in
                    upgradeAttempted.value = true
                    let upgrade = realtime.upgrade(target: head.uri)
                    accepted.value = upgrade
                    return channel.eventLoop.makeSucceededFuture(upgrade == nil ? nil : HTTPHeaders())
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let upgrade = accepted.value else { throw NIOWebSocketUpgradeError.unsupportedWebSocketTarget }
                        accepted.value = nil
                        try realtime.serve(channel, upgrade)
                        routed.value.routed(channel)
                        return UpgradeResult.realtime
                    }
                }
            )
            let configuration = self.configuration, responder = self.responder
            let serverUpgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(configuration.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger)
                        )
                        guard upgradeAttempted.value else {
                            try channel.pipeline.syncOperations.addHandler(HTTPBridgeHandler(responder: responder, channel: channel))
                            routed.value.routed(channel)
                            return UpgradeResult.notUpgraded
                        }
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                        routed.value.routed(channel)
                        return UpgradeResult.failedUpgrade(asyncChannel)
                    }
                }
            )
            var upgradeConfiguration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: serverUpgradeConfiguration)
            upgradeConfiguration.enablePipelining = false  // HTTPBridgeHandler serves requests in order
            upgradeConfiguration.enableErrorHandling = false  // HTTPBridgeHandler answers them
            upgradeConfiguration.enableResponseHeaderValidation = false  // HTTPTypes validate
            upgradeConfiguration.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            upgradeConfiguration.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            upgradeConfiguration.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: upgradeConfiguration)
            return Value(upgradeResult: result, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        do {
            // Until the first request is routed, a cancelled task (the drain limit) closes the
            // connection: its first request may never come.
            let upgradeResult = value.upgradeResult, channel = value.channel
            let routed = try await withTaskCancellationHandler {
                try await upgradeResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            switch routed {
            case .realtime:
                return  // RealtimeChannelHandler serves it; this task ends
            case .notUpgraded:
                // HTTPBridgeHandler serves it; the drain limit's cancellation closes it.
                try await withTaskCancellationHandler {
                    try await channel.closeFuture.get()
                } onCancel: {
                    channel.close(promise: nil)
                }
            case .failedUpgrade(let http1):
                await Self.writeFailedUpgrade(http1, logger: logger)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("upgrade not completed: input closed")
        } catch {
            logger.debug("upgrade failed", metadata: ["error": "\(error)"])
        }
    }

    /// 400 and close for a refused upgrade.
    private static func writeFailedUpgrade(_ asyncChannel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        do {
            try await asyncChannel.executeThenClose { _, outbound in
                let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
                try await outbound.write(contentsOf: [.head(head), .end(nil)])
            }
        } catch {
            logger.trace("refused upgrade: answer not written", metadata: ["error": "\(error)"])
        }
    }

    /// A WebSocket upgrade on a connection that already carried requests: 307 to the same URL
    /// with `Connection: close` (the connection closes after it: HTTPBridgeHandler), so the client
    /// upgrades on a new connection.
    static func upgradeResponder(_ responder: @escaping HTTPBridgeResponder) -> HTTPBridgeResponder {
        return { (request: Request, channel: any Channel) in
            guard request.headers[.upgrade] == "websocket" else { return await responder(request, channel) }
            var path = request.uri.path
            if let query = request.uri.query { path += "?\(query)" }
            return Response(status: .temporaryRedirect, headers: [.connection: "close", .location: path, .contentLength: "0"])
        }
    }
}
