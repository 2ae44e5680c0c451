// Writes a connection's queued frames to its socket in batches: every frame taken from the
// RealtimeOutbox in one step is written, then flushed once.
//
// Why: swift-websocket's WebSocketOutboundWriter sends one frame per `write`, and each write
// hops to the event loop and flushes (one writev per frame); at a thousand frames per
// subscriber per second that was about 60% of the node's CPU. Here the frames of one step
// become WebSocketFrames off the event loop (each buffer keeps room in front for the frame
// header, so WebSocketFrameEncoder prepends it in place: one iovec per frame), then one hop
// writes them all and flushes once.
//
// Layout on the wire: unchanged, one unmasked, unfragmented text frame (FIN, opcode 1) per
// Phoenix message, written below NIOAsyncChannel's outbound writer and above
// WebSocketFrameEncoder. No WebSocket extension is configured on the node (StartCommand);
// were permessage-deflate added, these frames would go uncompressed (RSV1 clear), which RFC
// 7692 allows.
//
// Invariants:
// - Frames reach the socket in the order they were taken, each exactly once.
// - Backpressure is kept: `write` returns only once NIO has written the batch's last frame to
//   the socket, so the connection's writer takes nothing more from its outbox until then and a
//   client that reads slowly fills its bounded outbox (RealtimeOutbox policy), not the node.
// - At most RealtimeLimits.writeBatchBytesMax bytes (or one bigger frame) are in one flush.
// - A failed write (the peer is gone, the channel closed) throws; the caller closes the outbox.

import NIOCore
import NIOWebSocket

struct RealtimeSocketWriter: Sendable {
    let channel: any Channel

    /// The most a server text frame header takes (2 + 8 bytes, no mask): reserved in front of
    /// each payload so the encoder writes the header into the same buffer.
    static let headerRoomBytes = 10

    /// Writes `texts` as text frames, one flush per at most `writeBatchBytesMax` bytes, and
    /// returns once they are written to the socket.
    func write(_ texts: [String]) async throws {
        var start = 0
        while start < texts.count {
            var frames: [WebSocketFrame] = []
            var bytes = 0
            var end = start
            while end < texts.count {
                let size = texts[end].utf8.count
                if !frames.isEmpty && bytes + size > RealtimeLimits.writeBatchBytesMax { break }
                frames.append(Self.frame(texts[end], allocator: channel.allocator))
                bytes += size
                end += 1
            }
            try await writeAndFlush(frames)
            start = end
        }
    }

    static func frame(_ text: String, allocator: ByteBufferAllocator) -> WebSocketFrame {
        var buffer = allocator.buffer(capacity: headerRoomBytes + text.utf8.count)
        buffer.moveWriterIndex(forwardBy: headerRoomBytes)
        buffer.moveReaderIndex(forwardBy: headerRoomBytes)
        buffer.writeString(text)
        return WebSocketFrame(fin: true, opcode: .text, data: buffer)
    }

    /// One hop to the event loop: every frame written, one flush; completes when the last one
    /// is on the socket (or fails with the channel).
    private func writeAndFlush(_ frames: [WebSocketFrame]) async throws {
        guard !frames.isEmpty else { return }
        let channel = self.channel
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute {
            let last = frames.count - 1
            for (i, frame) in frames.enumerated() {
                channel.write(frame, promise: i == last ? promise : nil)
            }
            channel.flush()
        }
        try await promise.futureResult.get()
    }
}
