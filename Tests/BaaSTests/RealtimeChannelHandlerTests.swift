import NIOCore
import NIOPosix
import NIOWebSocket
import Synchronization
import Testing
@testable import BaaS

/// RealtimeChannelHandler: the realtime WebSocket served by NIO handlers with no task per
/// connection. A real server socket on 127.0.0.1 with the pipeline an upgrade installs (NIO's
/// frame encoder and decoder, then the handler) and a raw TCP client that writes masked frames
/// and reads the server's bytes. Waits are on conditions with a deadline, never on time.
@Suite struct RealtimeChannelHandlerTests {
    final class Peer: RealtimeSocketPeer {
        let messages = Mutex<[String]>([])
        let ended = Atomic<Int>(0)
        func received(_ message: RealtimeSocketMessage) {
            switch message {
            case .text(let text): messages.withLock { $0.append(text) }
            case .binary(let bytes): messages.withLock { $0.append("binary:\(bytes.count)") }
            }
        }
        func inputEnded() { ended.add(1, ordering: .relaxed) }
    }

    struct Weak: @unchecked Sendable {
        weak var handler: RealtimeChannelHandler?
    }

    final class Served: Sendable {
        let peer = Peer()
        let connections = Mutex<[(handler: Weak, outbox: RealtimeOutbox)]>([])
    }

    /// Collects what the server sends; notes when the server closed the socket.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)
        /// When set, written back on the client's event loop as soon as a close frame arrives, as a
        /// client answers a close: not from the test's task, which a full run may hold off the
        /// cooperative pool for longer than the node's close handshake deadline.
        let closeAnswer = Mutex<ByteBuffer?>(nil)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = Self.unwrapInboundIn(data)
            bytes.withLock { $0 += Array(buffer.readableBytesView) }
            if frames.contains(where: { $0.opcode == 0x8 }), let answer = closeAnswer.withLock({ $0.take() }) {
                context.writeAndFlush(NIOAny(answer), promise: nil)
            }
        }
        func channelInactive(context: ChannelHandlerContext) {
            closed.store(true, ordering: .relaxed)
            context.fireChannelInactive()
        }

        /// The complete frames received so far: (opcode, payload).
        var frames: [(opcode: UInt8, payload: [UInt8])] {
            let bytes = bytes.withLock { $0 }
            var out: [(UInt8, [UInt8])] = []
            var i = 0
            while i + 2 <= bytes.count {
                let opcode = bytes[i] & 0x0F
                var size = Int(bytes[i + 1] & 0x7F)
                var at = i + 2
                if size == 126 {
                    guard at + 2 <= bytes.count else { break }
                    size = Int(bytes[at]) << 8 | Int(bytes[at + 1])
                    at += 2
                } else if size == 127 {
                    guard at + 8 <= bytes.count else { break }
                    size = bytes[at..<at + 8].reduce(0) { $0 << 8 | Int($1) }
                    at += 8
                }
                guard at + size <= bytes.count else { break }
                out.append((opcode, Array(bytes[at..<at + size])))
                i = at + size
            }
            return out
        }
    }

    struct Timeout: Error {}

    /// Up to 2,000 polls 10 ms apart (at least 20 s), counted in this task's own polls rather than
    /// wall time: while other tests keep the cooperative pool busy, neither this task nor the work
    /// it waits for runs (CI once timed out here after 42 s of such a run).
    static func eventually(_ what: String, _ condition: () -> Bool) async throws {
        for _ in 0..<2_000 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard condition() else {
            Issue.record("timed out waiting for \(what)")
            throw Timeout()
        }
    }

    /// A masked client frame (RFC 6455 §5.3).
    static func frame(_ opcode: UInt8, fin: Bool = true, _ payload: [UInt8]) -> ByteBuffer {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 {
            out.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            out += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            out.append(0x80 | 127)
            out += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        out += mask
        out += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return ByteBuffer(bytes: out)
    }

    static func closePayload(_ code: UInt16, _ reason: String = "") -> [UInt8] {
        [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
    }

    static func code(_ payload: [UInt8]) -> Int { payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : -1 }

    static func server(_ served: Served) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)  // as Hummingbird's server
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: RealtimeLimits.messageBytesMax)))
                    let outbox = RealtimeOutbox(version: .v1)
                    let handler = RealtimeChannelHandler(peer: served.peer, outbox: outbox, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    outbox.attach(handler)
                    served.connections.withLock { $0.append((Weak(handler: handler), outbox)) }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    static func client(_ server: any Channel) async throws -> (any Channel, Collector) {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(to: server.localAddress!).get()
        return (channel, collector)
    }

    /// Fragments are joined into one message; a ping gets a pong with its payload; the client's
    /// close code is echoed, then the node closes the socket, tells the peer once, and the
    /// handler and outbox (which reference each other) are freed.
    @Test func fragmentsPingAndTheClientsCloseAreHandled() async throws {
        let served = Served()
        let server = try await Self.server(served)
        defer { server.close(promise: nil) }
        let (client, collector) = try await Self.client(server)
        try await client.writeAndFlush(Self.frame(0x1, fin: false, Array("hello".utf8))).get()
        try await client.writeAndFlush(Self.frame(0x0, fin: false, Array(", ".utf8))).get()
        try await client.writeAndFlush(Self.frame(0x0, fin: true, Array("world".utf8))).get()
        try await client.writeAndFlush(Self.frame(0x2, [1, 2, 3])).get()
        try await Self.eventually("two messages") { served.peer.messages.withLock { $0.count } == 2 }
        #expect(served.peer.messages.withLock { $0 } == ["hello, world", "binary:3"])
        try await client.writeAndFlush(Self.frame(0x9, Array("are you there".utf8))).get()
        try await Self.eventually("the pong") { !collector.frames.isEmpty }
        #expect(collector.frames[0].opcode == 0xA && collector.frames[0].payload == Array("are you there".utf8))
        // Something queued before the close is still written, then the echo, then the socket closes.
        let outbox = served.connections.withLock { $0[0].outbox }
        let reply = RealtimeFrame(joinRef: nil, ref: "1", topic: "phoenix", event: "phx_reply", payload: .object([:]))
        #expect(outbox.push(reply, .control))
        try await client.writeAndFlush(Self.frame(0x8, Self.closePayload(4001, "bye"))).get()
        try await Self.eventually("the node closing the socket") { collector.closed.load(ordering: .relaxed) }
        let frames = collector.frames
        #expect(frames.count == 3)
        #expect(frames[1].opcode == 0x1 && String(decoding: frames[1].payload, as: UTF8.self) == reply.encoded(.v1))
        #expect(frames[2].opcode == 0x8 && Self.code(frames[2].payload) == 4001)
        #expect(served.peer.ended.load(ordering: .relaxed) == 1)
        try await Self.eventually("the handler freed") { served.connections.withLock { $0[0].handler.handler == nil } }
        #expect(outbox.isClosed && !outbox.push(reply, .control))
    }

    /// Protocol errors close with their code after what was queued: a continuation without a
    /// message (1002), a fragmented message over messageBytesMax (1009), a reserved opcode (1002).
    @Test func protocolErrorsCloseWithTheirCode() async throws {
        let served = Served()
        let server = try await Self.server(served)
        defer { server.close(promise: nil) }
        let big = [UInt8](repeating: 0x61, count: RealtimeLimits.messageBytesMax / 2 + 1)
        let cases: [(frames: [ByteBuffer], code: Int)] = [
            ([Self.frame(0x0, Array("orphan".utf8))], 1002),
            ([Self.frame(0x1, fin: false, big), Self.frame(0x0, fin: true, big)], 1009),
            ([Self.frame(0x3, [])], 1002),
            ([Self.frame(0x1, fin: false, [0x61]), Self.frame(0x1, [0x62])], 1002),
        ]
        for (n, test) in cases.enumerated() {
            let (client, collector) = try await Self.client(server)
            for frame in test.frames { try await client.writeAndFlush(frame).get() }
            try await Self.eventually("case \(n): the node closing the socket") { collector.closed.load(ordering: .relaxed) }
            let frames = collector.frames
            #expect(frames.last?.opcode == 0x8 && Self.code(frames.last?.payload ?? []) == test.code, "case \(n)")
        }
        #expect(served.peer.messages.withLock { $0 }.isEmpty)
        #expect(served.peer.ended.load(ordering: .relaxed) == cases.count)
    }

    /// The node's own close (idle timeout, a limit): what was queued, then the close frame; the
    /// socket closes when the client answers, and a client that never answers is disconnected
    /// within closeHandshakeSeconds.
    @Test func theNodesCloseWaitsForTheAnswerOrTheDeadline() async throws {
        let served = Served()
        let server = try await Self.server(served)
        defer { server.close(promise: nil) }
        for answers in [true, false] {
            let (_, collector) = try await Self.client(server)
            try await Self.eventually("the connection") { served.connections.withLock { $0.count } == (answers ? 1 : 2) }
            let outbox = served.connections.withLock { $0.last!.outbox }
            if answers { collector.closeAnswer.withLock { $0 = Self.frame(0x8, Self.closePayload(1000)) } }
            let event = RealtimeFrame(joinRef: nil, ref: nil, topic: "realtime:t", event: "broadcast", payload: .object(["n": .int(1)]))
            #expect(outbox.push(event, .event))
            outbox.close(code: 1000, reason: "no heartbeat for 60 s")
            try await Self.eventually("the close frame") { collector.frames.count == 2 }
            let frames = collector.frames
            #expect(String(decoding: frames[0].payload, as: UTF8.self) == event.encoded(.v1))
            #expect(frames[1].opcode == 0x8 && Self.code(frames[1].payload) == 1000)
            try await Self.eventually("the node closing the socket") { collector.closed.load(ordering: .relaxed) }
            #expect(collector.closeAnswer.withLock { $0 } == nil, "the client answered the close")
        }
        #expect(served.peer.ended.load(ordering: .relaxed) == 2)
    }
}
