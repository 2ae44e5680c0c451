// How a connection's queued frames reach its socket: the RealtimeOutbox keeps them already
// framed in one buffer, and the connection's RealtimeChannelHandler hands everything waiting to
// NIO in one write and one flush, on the channel's event loop, with no task of its own.
//
// Why: swift-websocket's WebSocketOutboundWriter sends one frame per `write`, and each write
// hops to the event loop and flushes (one writev per frame); at a thousand frames per
// subscriber per second that was about 60% of the node's CPU. A first batched version (a writer
// task per connection taking [String] from the outbox, framing them into a buffer) still cost a
// task per connection, two task switches and an event loop hop per write, and a String per
// frame. Now a change's frame is appended to the outbox's buffer straight from its shared `data`
// bytes (ChangeFrame), and the writer is a callback on the event loop: scheduled by whoever
// queues frames while no write is in flight, it takes the whole buffer, writes it below
// WebSocketFrameEncoder, and when NIO has written it to the socket takes the next one (or stops
// when nothing waits). Since 2026-12-04 evening the reading side has no task either
// (RealtimeChannelHandler).
//
// Layout of the buffer (RFC 6455 §5.2, server to client: never masked, never fragmented), per
// Phoenix message in order:
//   0x81 (FIN, opcode 1 = text)
//   len < 126:            [len: UInt8]
//   len <= 65,535:        [126: UInt8][len: UInt16 big-endian]
//   else:                 [127: UInt8][len: UInt64 big-endian]
//   [len bytes: the message's UTF-8]
// A postgres_changes message is ChangeFrame's head + data + tail (RealtimeFrame.changeHead,
// the change's encoded `data` object, RealtimeFrame.changeTail). The buffer is written from
// WebSocketFrameEncoder's context toward the socket. The node negotiates no WebSocket extension
// (RealtimeHTTPChannel). Control frames (pong, close) are framed the same way by the handler;
// each write is whole frames, so they interleave only between frames.
//
// Invariants:
// - Frames reach the socket in the order they were queued, each exactly once, each whole.
// - At most one write is in flight per connection (RealtimeOutbox `writing`): the next buffer is
//   taken only once NIO has written the previous one to the socket, so a client that reads
//   slowly fills its own bounded outbox (RealtimeOutbox policy), never the node's memory.
// - A failed write (the peer is gone, the channel closed) closes the outbox.
// - Once the outbox is closed and drained, the close frame (if it closed for a reason) is sent,
//   then the outbox is told the writer finished.

import NIOCore
import NIOWebSocket

/// One postgres_changes frame: its subscription's head and tail around the change's `data`
/// bytes, which every subscriber of the same shape shares (ChangeMemo).
struct ChangeFrame: Sendable {
    let head: [UInt8]
    let data: [UInt8]
    let tail: [UInt8]

    var size: Int { head.count + data.count + tail.count }

    func append(to buffer: inout ByteBuffer) {
        RealtimeSocketWriter.appendTextHeader(size, to: &buffer)
        buffer.writeBytes(head)
        buffer.writeBytes(data)
        buffer.writeBytes(tail)
    }
}

/// The framing of what the node writes to realtime sockets, and the shared reader's batched
/// scheduling of writers. The writer itself is RealtimeChannelHandler.
enum RealtimeSocketWriter {
    /// Starts several writers with one hop per event loop (the shared reader's fan-out).
    static func schedule(_ writers: [any RealtimeOutboxWriter]) {
        if writers.count == 1 { return writers[0].schedule() }
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, writers: [RealtimeChannelHandler])] = [:]
        for writer in writers {
            guard let writer = writer as? RealtimeChannelHandler else { writer.schedule(); continue }
            let loop = writer.eventLoop
            byLoop[ObjectIdentifier(loop), default: (loop, [])].writers.append(writer)
        }
        for (_, group) in byLoop {
            let writers = group.writers
            group.loop.execute { for writer in writers { writer.writeNext() } }
        }
    }

    /// One unmasked, unfragmented text frame (the layout above).
    static func appendTextFrame(_ text: String, to buffer: inout ByteBuffer) {
        appendTextHeader(text.utf8.count, to: &buffer)
        buffer.writeString(text)
    }

    /// The header of a text frame of `size` bytes, shortest length form.
    static func appendTextHeader(_ size: Int, to buffer: inout ByteBuffer) {
        if size < 126 {
            buffer.writeInteger(UInt16(0x8100) | UInt16(size))
        } else if size <= 0xFFFF {
            buffer.writeInteger(UInt32(0x817E_0000) | UInt32(size))
        } else {
            buffer.writeInteger(UInt16(0x817F))
            buffer.writeInteger(UInt64(size))
        }
    }
}
