// Writes a connection's queued frames to its socket in batches: every frame taken from the
// RealtimeOutbox in one step is framed into one buffer, written, then flushed once.
//
// Why: swift-websocket's WebSocketOutboundWriter sends one frame per `write`, and each write
// hops to the event loop and flushes (one writev per frame); at a thousand frames per
// subscriber per second that was about 60% of the node's CPU. Here the frames of one step are
// framed into one buffer off the event loop, and one hop writes it and flushes once, below
// WebSocketFrameEncoder (which would add a WebSocketFrame, a header buffer and a pending write
// per frame: about a third of the node's CPU in a profile of the first batched version).
//
// Layout of a batch (RFC 6455 §5.2, server to client: never masked, never fragmented), per
// Phoenix message in order:
//   0x81 (FIN, opcode 1 = text)
//   len < 126:            [len: UInt8]
//   len <= 65,535:        [126: UInt8][len: UInt16 big-endian]
//   else:                 [127: UInt8][len: UInt64 big-endian]
//   [len bytes: the message's UTF-8]
// The buffer is written from WebSocketFrameEncoder's context toward the socket. The node
// configures no WebSocket extension (StartCommand); frames with RSV1 clear are valid even
// where permessage-deflate were negotiated (RFC 7692). Control frames (pong, close) still go
// through swift-websocket; each write is whole frames, so they interleave only between frames.
//
// Invariants:
// - Frames reach the socket in the order they were taken, each exactly once, each whole.
// - Backpressure is kept: `write` returns only once NIO has written the batch to the socket, so
//   the connection's writer takes nothing more from its outbox until then and a client that
//   reads slowly fills its bounded outbox (RealtimeOutbox policy), not the node.
// - At most RealtimeLimits.writeBatchBytesMax bytes (or one bigger frame) are in one flush.
// - A failed write (the peer is gone, the channel closed) throws; the caller closes the outbox.

import NIOCore
import NIOWebSocket

struct RealtimeSocketWriter: Sendable {
    let channel: any Channel

    /// Writes `texts` as text frames, one buffer and one flush per at most `writeBatchBytesMax`
    /// bytes, and returns once they are written to the socket.
    func write(_ texts: [String]) async throws {
        var start = 0
        while start < texts.count {
            var end = start
            var bytes = 0
            while end < texts.count {
                let size = texts[end].utf8.count + 10  // the largest header
                if end > start && bytes + size > RealtimeLimits.writeBatchBytesMax { break }
                bytes += size
                end += 1
            }
            var buffer = channel.allocator.buffer(capacity: bytes)
            for text in texts[start..<end] { Self.appendTextFrame(text, to: &buffer) }
            try await writeAndFlush(buffer)
            start = end
        }
    }

    /// One unmasked, unfragmented text frame (the layout above).
    static func appendTextFrame(_ text: String, to buffer: inout ByteBuffer) {
        let size = text.utf8.count
        buffer.writeInteger(UInt8(0x81))
        if size < 126 {
            buffer.writeInteger(UInt8(size))
        } else if size <= 0xFFFF {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(size))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(size))
        }
        buffer.writeString(text)
    }

    /// One hop to the event loop: the buffer written below the frame encoder and flushed;
    /// completes when it is on the socket (or fails with the channel).
    private func writeAndFlush(_ buffer: ByteBuffer) async throws {
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute {
            do {
                let encoder = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
                encoder.writeAndFlush(NIOAny(buffer), promise: promise)
            } catch {
                promise.fail(error)
            }
        }
        try await promise.futureResult.get()
    }
}
