// One upgraded realtime WebSocket served by NIO channel handlers, with no task per connection:
// this handler sits after NIO's WebSocketFrameEncoder and ByteToMessageHandler(WebSocketFrameDecoder)
// (RealtimeHTTPChannel installs them at the upgrade), reads client frames on the channel's event
// loop and hands whole messages to the connection (RealtimeConnection, synchronously, in order),
// and is the connection's outbox writer (RealtimeOutboxWriter): everything queued goes to the
// socket in one write and one flush, below the frame encoder, one write in flight at a time.
//
// Why (docs/REALTIME.md "Benchmarks"): with hummingbird-websocket every connection kept one task
// alive for its whole life (Hummingbird's child-channel task running swift-websocket's handler,
// its task group, the inbound stream and our reader loop). heaptrack of 2,000 idle subscribers:
// 16.6 KB of task-allocator slabs per connection (a task keeps the slabs its deepest await
// needed), plus NIOAsyncChannel's stream and writer objects. Here the child-channel task ends as
// soon as the upgrade is done; an idle subscriber is its channel, its pipeline and its state.
//
// The frames (RFC 6455): text and binary messages, fragmented or not, up to
// RealtimeLimits.messageBytesMax (a bigger one closes with 1009); ping answered with pong; pong
// ignored; a reserved opcode or RSV bit (no extension is negotiated), a continuation without a
// message, a new message inside a fragmented one, or a decoder error close with 1002 (1009 for a
// frame over the size limit). The server's frames are never masked; the client's are unmasked
// (`unmaskedData`).
//
// Closing:
// - The client's close frame: its code is echoed (1000 without one, 1002 for an invalid one)
//   after whatever was queued, then the socket is closed.
// - The connection closes its outbox with a reason (idle timeout, rate, not reading, shutdown):
//   what was queued is written, then the close frame; the socket closes when the client answers
//   with its close frame.
// - Every close of the outbox starts a deadline (RealtimeLimits.closeHandshakeSeconds): a client
//   that never answers, or never reads (its write never completes), is disconnected then.
// - The input ending (close frame, EOF, error, channel inactive) tells the connection once
//   (`inputEnded`: its channels leave, its slot is released).
//
// Invariants:
// - All mutable state is confined to the channel's event loop; `schedule` and `closing` (called
//   from any thread by the outbox) only hop to it. Hence `@unchecked Sendable`.
// - Frames reach the socket in the order they were queued, each whole: the outbox's buffer,
//   pongs and the close frame are each one write of whole frames on the one event loop.
// - At most one outbox write is in flight (RealtimeOutbox `writing`); a slow reader fills its own
//   bounded outbox, never the node's memory.
// - When the channel goes inactive the outbox forgets this writer (RealtimeOutbox.detach): the
//   outbox and its writer never keep each other (or the closed channel) alive.

import NIOCore
import NIOWebSocket

/// A whole client message (fragments joined).
enum RealtimeSocketMessage {
    case text(String)
    case binary([UInt8])
}

/// What a RealtimeChannelHandler hands its input to (RealtimeConnection; tests use their own).
/// Both are called on the channel's event loop and must not block it.
protocol RealtimeSocketPeer: AnyObject, Sendable {
    /// One whole message, in order.
    func received(_ message: RealtimeSocketMessage)
    /// The input ended (the client's close frame, EOF, an error, the channel closed); called once.
    func inputEnded()
}

final class RealtimeChannelHandler: ChannelInboundHandler, RealtimeOutboxWriter, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let outbox: RealtimeOutbox
    let eventLoop: any EventLoop
    private let peer: any RealtimeSocketPeer

    // Event loop only.
    private var context: ChannelHandlerContext?
    /// The frame encoder's context: framed bytes are written from it toward the socket.
    private var encoder: ChannelHandlerContext?
    /// A fragmented message being read.
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false
    private var inputDone = false
    private var closeSent = false
    private var closeTimer: Scheduled<Void>?

    init(peer: any RealtimeSocketPeer, outbox: RealtimeOutbox, eventLoop: any EventLoop) {
        self.peer = peer
        self.outbox = outbox
        self.eventLoop = eventLoop
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        encoder = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finishInput()
        outbox.detach()
        closeTimer?.cancel()
        closeTimer = nil
        self.context = nil
        encoder = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        finishInput()
        outbox.detach()
        closeTimer?.cancel()
        closeTimer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .connectionClose:
            if closeSent || inputDone {
                // The answer to our close frame (or input we no longer read): done.
                finishInput()
                context.close(promise: nil)
                return
            }
            // Echo the client's code after what is queued, then close (writeNext).
            outbox.close(code: Self.echoCode(frame.unmaskedData), reason: "")
            finishInput()
        case .ping:
            guard !closeSent else { return }
            var pong = context.channel.allocator.buffer(capacity: frame.data.readableBytes + 2)
            var payload = frame.unmaskedData
            Self.appendHeader(opcode: 0x8A, size: payload.readableBytes, to: &pong)
            pong.writeBuffer(&payload)
            encoder?.writeAndFlush(NIOAny(pong), promise: nil)
        case .pong:
            return
        case .text, .binary, .continuation:
            guard !inputDone, !closeSent, !outbox.isClosed else { return }
            guard frame.reservedBits.isEmpty else { return fail(1002, "reserved bits set without an extension") }
            readData(frame)
        default:
            fail(1002, "reserved opcode")
        }
    }

    private func readData(_ frame: WebSocketFrame) {
        var data = frame.unmaskedData
        if frame.opcode == .continuation {
            guard var message = fragments else { return fail(1002, "continuation frame without a message") }
            fragments = nil
            guard message.readableBytes + data.readableBytes <= RealtimeLimits.messageBytesMax else {
                return fail(1009, "message larger than \(RealtimeLimits.messageBytesMax) bytes")
            }
            message.writeBuffer(&data)
            if frame.fin { deliver(message, text: fragmentsAreText) } else { fragments = message }
            return
        }
        guard fragments == nil else { return fail(1002, "a new message inside a fragmented one") }
        if frame.fin {
            deliver(data, text: frame.opcode == .text)
        } else {
            fragments = data
            fragmentsAreText = frame.opcode == .text
        }
    }

    private func deliver(_ buffer: ByteBuffer, text: Bool) {
        peer.received(text ? .text(String(buffer: buffer)) : .binary(Array(buffer.readableBytesView)))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let event as ChannelEvent where event == .inputClosed:
            // EOF without a close frame (remote half-closure is on): nothing more to read.
            finishInput()
            outbox.close()
        case is ChannelShouldQuiesceEvent:
            // The server is shutting down: say so, then the handshake or the deadline closes it.
            outbox.close(code: 1001, reason: "server shutting down")
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            // The decoder reads nothing more after an error.
            switch error {
            case .invalidFrameLength: fail(1009, "frame larger than \(RealtimeLimits.messageBytesMax) bytes")
            default: fail(1002, "protocol error")
            }
            return
        }
        // I/O errors (reset by peer, ...): the socket is gone.
        finishInput()
        context.close(promise: nil)
    }

    /// A protocol error: close with `code` after what was queued; nothing more is read.
    private func fail(_ code: Int, _ reason: String) {
        fragments = nil
        outbox.close(code: code, reason: reason)
        finishInput()
    }

    private func finishInput() {
        guard !inputDone else { return }
        inputDone = true
        fragments = nil
        peer.inputEnded()
    }

    /// The code to echo for a client's close frame (RFC 6455 §5.5.1, §7.4).
    static func echoCode(_ payload: ByteBuffer) -> Int {
        guard payload.readableBytes >= 2, let code = payload.getInteger(at: payload.readerIndex, as: UInt16.self) else {
            return payload.readableBytes == 0 ? 1000 : 1002
        }
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return Int(code)
        default: return 1002
        }
    }

    // MARK: Writer (RealtimeOutboxWriter)

    /// Starts the writer (the outbox decided that no write is in flight).
    func schedule() {
        eventLoop.execute { self.writeNext() }
    }

    /// The outbox closed: whatever happens, the socket closes within the deadline.
    func closing() {
        eventLoop.execute {
            guard self.closeTimer == nil, self.context != nil else { return }
            self.closeTimer = self.eventLoop.scheduleTask(in: .seconds(RealtimeLimits.closeHandshakeSeconds)) {
                self.context?.close(promise: nil)
            }
        }
    }

    /// On the event loop: writes what waits, and again once that is on the socket.
    func writeNext() {
        guard let encoder else { return }  // removed from the pipeline: the outbox was detached
        switch outbox.takeForWrite() {
        case .idle:
            return
        case .write(let buffer):
            let promise = eventLoop.makePromise(of: Void.self)
            encoder.writeAndFlush(NIOAny(buffer), promise: promise)
            promise.futureResult.whenComplete { result in
                switch result {
                case .success:
                    // A new turn of the loop: a write completed inline does not nest writers.
                    self.eventLoop.execute { self.writeNext() }
                case .failure:
                    self.outbox.close()
                    self.outbox.writerFinished()
                    self.finishInput()
                    self.context?.close(promise: nil)
                }
            }
        case .finished(let close):
            outbox.writerFinished()
            guard let close, !closeSent else {
                // Nothing to say (the input ended, a write failed) or already said.
                context?.close(promise: nil)
                return
            }
            closeSent = true
            var frame = encoder.channel.allocator.buffer(capacity: 4 + close.reason.utf8.count)
            let reason = close.reason.utf8.prefix(123)  // a control frame's payload is at most 125 bytes
            Self.appendHeader(opcode: 0x88, size: 2 + reason.count, to: &frame)
            frame.writeInteger(UInt16(truncatingIfNeeded: close.code))
            frame.writeBytes(reason)
            let promise = eventLoop.makePromise(of: Void.self)
            encoder.writeAndFlush(NIOAny(frame), promise: promise)
            let closeNow = inputDone  // else the client's close frame (or the deadline) closes it
            promise.futureResult.whenComplete { result in
                switch result {
                case .failure: self.context?.close(promise: nil)
                case .success: if closeNow { self.context?.close(promise: nil) }
                }
            }
        }
    }

    /// The header of an unmasked, unfragmented frame (RealtimeSocketWriter's layout).
    static func appendHeader(opcode: UInt8, size: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(opcode)
        if size < 126 {
            buffer.writeInteger(UInt8(size))
        } else if size <= 0xFFFF {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(size))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(size))
        }
    }
}
