// TCP plumbing for the replication protocol: framed NIO channels for both sides, with a read
// timeout on every connection (a silent peer is cut off, never waited on forever).
//
// The listening side is reachable by anyone who can reach the port. Until a connection's HELLO
// passes the membership check it holds one of `unauthenticatedConnectionsMax` places, at most
// `unauthenticatedConnectionsPerAddressMax` of them per source address (more are closed at
// accept), its frames are limited to `helloFrameBytesMax`, and it is closed when that HELLO has
// not arrived within `handshakeMillis`. So strangers can make a node buffer at most places ×
// HELLO limit (plus one socket read each), whatever they send.
//
// With cluster TLS (`ReplicationTLS`, TLS1) the TLS handler is first in every pipeline: frames
// are read and written only inside a completed mutual-TLS handshake with the cluster CA.

import Kernel
import NIOCore
import NIOPosix
import Synchronization

public typealias ReplicationChannel = NIOAsyncChannel<ReplicationMessage, ReplicationMessage>

public enum ReplicationTimeouts {
    /// Connecting to a peer.
    public static let connectMillis: Int64 = 300
    /// A session without any frame for this long is dead (the primary heartbeats every
    /// `heartbeatMillis`; the replica answers a heartbeat no other ACK answered, Follower.acknowledge).
    public static let sessionIdleMillis: Int64 = 2_000
    /// A probe (one question, one answer) must be answered within this.
    public static let probeMillis: Int64 = 500
    /// How often an idle primary heartbeats its replicas.
    public static let heartbeatMillis: Int64 = 100
    /// A connection to the listener must have sent its whole HELLO within this (a peer trickling
    /// bytes keeps no place for longer); members send it right after connecting.
    public static let handshakeMillis: Int64 = 1_000
    /// `ReplicationNode.stop` waits this long at most for its loops and sessions to end (they
    /// end within a scheduling round once cancelled; the bound keeps a shutdown from hanging).
    public static let stopMillis: Int64 = 5_000
}

/// Closes the channel when no frame arrived within the idle time.
final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = ReplicationMessage
    typealias InboundOut = ReplicationMessage

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// Lets a session handle some messages on the channel's event loop, where they are decoded,
/// instead of passing them to its task through the async stream (one thread hand-off less on
/// the replication round trip: the replica applies shipped records there, the primary releases
/// the commits an ACK completes there). Inert until a session arms it; every message the hook
/// does not take goes on to the stream, in order.
///
/// The hook runs under this handler's lock, so `disarm` returns only once no hook call is in
/// progress: after it, nothing of the session runs here any more (a follower that stopped
/// appends nothing more, as before).
final class InlineMessages: ChannelInboundHandler, Sendable {
    typealias InboundIn = ReplicationMessage
    typealias InboundOut = ReplicationMessage

    /// Takes a message (true) or passes it on to the stream (false); a throw closes the channel.
    typealias Hook = @Sendable (ReplicationMessage) throws -> Bool

    /// The hook in a box: a closure kept directly in the mutex was reabstracted and written back
    /// at every call through `withLock`'s inout value, a thunk around the thunk each time, until
    /// one call took milliseconds (the same chain as `CommitModeSetting`'s reader had).
    private final class Box: Sendable {
        let call: Hook
        init(_ call: @escaping Hook) { self.call = call }
    }

    private let hook = Mutex<Box?>(nil)

    func arm(_ next: @escaping Hook) {
        let box = Box(next)
        hook.withLock { $0 = box }
    }

    func disarm() { hook.withLock { $0 = nil } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        let taken: Bool
        do {
            taken = try hook.withLock { box in try box?.call(message) ?? false }
        } catch {
            hook.withLock { $0 = nil }
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        if !taken { context.fireChannelRead(data) }
    }

    /// The handler of a configured replication channel.
    static func of(_ channel: ReplicationChannel) async throws -> InlineMessages {
        try await channel.channel.pipeline.handler(type: InlineMessages.self).get()
    }
}

/// An actor whose executor is a channel's event loop: a session's loop isolated to it resumes on
/// the event loop itself when the WAL's flusher publishes (no hand-off to the cooperative pool
/// and back to the event loop to write), and writes its frames there directly (`send`).
actor OnEventLoop {
    nonisolated let channel: any Channel

    init(_ channel: any Channel) { self.channel = channel }

    nonisolated var unownedExecutor: UnownedSerialExecutor { channel.eventLoop.executor.asUnownedSerialExecutor() }

    /// Writes `message` from the event loop while the channel is writable; otherwise through
    /// the async writer, which waits until it is (backpressure: a slow peer is never sent more
    /// than the channel buffers before it becomes unwritable).
    func send(_ message: ReplicationMessage, _ outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>) async throws {
        guard channel.isActive else { throw ChannelError.ioOnClosedChannel }
        if channel.isWritable {
            channel.writeAndFlush(message, promise: nil)
        } else {
            try await outbound.write(message)
        }
    }
}

public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }
}

enum Transport {
    static func configure(_ channel: any Channel, idleMillis: Int64, side: FrameDecoder.Side) throws -> ReplicationChannel {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(side: side)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .milliseconds(idleMillis)))
        try channel.pipeline.syncOperations.addHandler(CloseWhenIdle())
        try channel.pipeline.syncOperations.addHandler(InlineMessages())
        return try ReplicationChannel(wrappingChannelSynchronously: channel)
    }

    static func connect(_ address: PeerAddress, idleMillis: Int64, tls: ReplicationTLS? = nil) async throws -> ReplicationChannel {
        let connected: (ReplicationChannel, EventLoopFuture<Void>?)
        do {
            connected = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(ReplicationTimeouts.connectMillis))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: address.host, port: address.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handshake = try tls?.addClientHandlers(channel, host: address.host, peer: address.description)
                        return (try configure(channel, idleMillis: idleMillis, side: .opener), handshake)
                    }
                }
        } catch {
            throw AeroError(.primaryUnavailable, "cannot reach \(address): \(error)")
        }
        // TLS1: nothing is written before the handshake completed (AERO_CLUSTER_TLS otherwise).
        if let handshake = connected.1 {
            do { try await handshake.get() } catch {
                // Finished and closed, not dropped: a dropped NIOAsyncChannel traps (AcceptedConnection).
                try? await connected.0.executeThenClose { _, _ in }
                throw error
            }
        }
        return connected.0
    }

    /// Listens on `address`. Every accepted connection takes one of `places` until its first
    /// HELLO is decided by `authenticate` (or it closes), and is closed when none is free or when
    /// the HELLO has not arrived within `places.handshakeMillis`. Connections come boxed
    /// (`AcceptedConnection`): one the listener drops while it closes is closed, not a crash.
    static func listen(_ address: PeerAddress, places: HandshakePlaces, tls: ReplicationTLS? = nil,
                       authenticate: @escaping @Sendable (ReplicationMessage.Hello) -> Bool) async throws -> NIOAsyncChannel<AcceptedConnection, Never> {
        do {
            return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: address.host, port: address.port) { channel in
                    let source = channel.remoteAddress?.ipAddress ?? "unknown"
                    guard let handshake = Handshake(places: places, address: source, authenticate: authenticate) else {
                        // NIO ignores a failed initializer: the connection is closed here.
                        channel.close(promise: nil)
                        return channel.eventLoop.makeFailedFuture(AeroError(.replicationRefused, "too many connections awaiting their HELLO"))
                    }
                    channel.closeFuture.whenComplete { _ in handshake.release() }
                    let handshakeMillis = places.handshakeMillis
                    let deadline = channel.eventLoop.scheduleTask(in: .milliseconds(handshakeMillis)) {
                        if handshake.state == .awaitingHello { channel.close(promise: nil) }
                    }
                    channel.closeFuture.whenComplete { _ in deadline.cancel() }
                    return channel.eventLoop.makeCompletedFuture {
                        try tls?.addServerHandlers(channel)  // TLS1: first in the pipeline
                        // The idle timeout never cuts the handshake time short (with the real
                        // values it is the longer one anyway).
                        let idleMillis = max(ReplicationTimeouts.sessionIdleMillis, handshakeMillis)
                        return AcceptedConnection(try configure(channel, idleMillis: idleMillis, side: .listener(handshake)))
                    }
                }
        } catch {
            throw AeroError(.configInvalid, "cannot listen for replication on \(address): \(error)")
        }
    }

    /// One question, one answer (probe, adopt, demote), bounded in time.
    static func ask(_ address: PeerAddress, _ question: ReplicationMessage, idleMillis: Int64, tls: ReplicationTLS? = nil) async throws -> ReplicationMessage {
        let channel = try await connect(address, idleMillis: idleMillis, tls: tls)
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(question)
            for try await answer in inbound { return answer }
            throw AeroError(.primaryUnavailable, "\(address) closed the connection without answering")
        }
    }
}

/// A connection the listener accepted, until a session takes it.
///
/// NIO's listener can drop connections it accepted: those still buffered when the serving task
/// is cancelled, and one activated while the listening channel closes (apple/swift-nio#2813,
/// open). A `NIOAsyncChannel` dropped before its writer was finished traps ("Deinited
/// NIOAsyncWriter without calling finish()"): a node stopping while a peer connected crashed
/// after "node stopped", and the runtime's crash backtrace held the process for 10-20 s before it
/// died of SIGILL (docs/OPERATIONS.md "Stopping a node"). So the listener hands out this box: a
/// session `take`s the channel, once, and runs `executeThenClose` on it; a box dropped with its
/// channel still inside finishes and closes that channel from a task it starts (SD1).
final class AcceptedConnection: Sendable {
    private let pending: Mutex<ReplicationChannel?>

    init(_ channel: ReplicationChannel) {
        pending = Mutex(channel)
    }

    /// The channel, to the first caller only; it must run `executeThenClose` on it.
    func take() -> ReplicationChannel? {
        pending.withLock { channel in
            defer { channel = nil }
            return channel
        }
    }

    deinit {
        guard let dropped = take() else { return }
        Task { try? await dropped.executeThenClose { _, _ in } }
    }
}
