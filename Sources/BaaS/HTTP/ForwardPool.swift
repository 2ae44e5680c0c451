// The lean client of forwarded writes (issue 19): a bounded pool of keep-alive HTTP/1.1 channels
// from a replica to the primary, written with NIO directly. A forward writes the head and body
// the replica already parsed and reads one answer, one request at a time per connection; there is
// no per-request state machine, no header re-encoding beyond the one HTTP/1 encode, no body
// sequence to iterate on the answer side. With cluster TLS (`MemberHTTPS`), each connection
// starts with swift-nio-ssl's `NIOSSLClientHandler` built from the same client configuration
// (the cluster CA only, full verification of the member's host), and is used only once the
// handshake completed.
//
// What a forward can tell about its request (ClusterMiddleware turns it into the stable codes):
// - `notSent`: no byte of the request left this node: connect refused or timed out, TLS
//   handshake refused, no connection free within `poolWait`, too many forwards waiting, or a
//   kept-alive connection found closed before the request was written (that one is replaced by
//   a new connection once, at once: the write was never sent).
// - `inDoubt`: the request was (or may have been) written and no whole answer came back: the
//   primary closed the connection, no answer within `answerTimeout`, or an answer over
//   `answerBytesMax`. Never sent again.
//
// Bounds: at most `connectionsMax` connections (connecting or open, to every primary together),
// at most `waitersMax` forwards waiting for one (each at most `poolWait`), connections idle for
// `idleTimeout` closed; `ForwardPoolTests` checks them against a fake primary.

import Hummingbird
import Kernel
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// How a forward pool behaves. `forwarding` is the node's (HTTPLimits); tests use smaller values.
struct ForwardPoolSettings: Sendable {
    var connectionsMax: Int
    var waitersMax: Int
    /// TCP connect, and the TLS handshake after it.
    var connectTimeout: TimeAmount
    /// From the request written to the whole answer read.
    var answerTimeout: TimeAmount
    /// Longest a forward waits for a connection when all `connectionsMax` are busy.
    var poolWait: TimeAmount
    var idleTimeout: TimeAmount
    var answerBytesMax: Int
    /// How often waiters past their deadline and idle connections are looked at.
    var sweepInterval: TimeAmount
    /// Client TLS (the cluster CA), nil for plain HTTP.
    var tls: TLSConfiguration?

    static var forwarding: ForwardPoolSettings {
        ForwardPoolSettings(connectionsMax: HTTPLimits.forwardConnectionsMax,
                            waitersMax: HTTPLimits.forwardWaitersMax,
                            connectTimeout: .milliseconds(HTTPLimits.forwardConnectMillis),
                            answerTimeout: .milliseconds(HTTPLimits.forwardTimeoutMillis),
                            poolWait: .milliseconds(HTTPLimits.forwardPoolWaitMillis),
                            idleTimeout: .milliseconds(HTTPLimits.forwardIdleMillis),
                            answerBytesMax: HTTPLimits.requestBodyBytesMax,
                            sweepInterval: .milliseconds(250),
                            tls: MemberHTTPS.tlsConfiguration)
    }
}

/// The body of a forwarded request.
enum ForwardBody: Sendable {
    case bytes(ByteBuffer)
    /// Sent as the client's bytes arrive (storage uploads, never collected); `length` when the
    /// client gave one, else chunked. A stream cannot be replayed.
    case stream(RequestBody, length: Int64?)
}

/// The primary's whole answer.
struct ForwardAnswer: Sendable {
    let head: HTTPResponseHead
    let body: ByteBuffer
}

/// Why a forward has no answer.
enum ForwardFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// No byte of the request left this node.
    case notSent(String)
    /// The request was or may have been written; no whole answer came back.
    case inDoubt(String)
    /// A kept-alive connection was found closed before anything was written (replaced once).
    case stale

    var description: String {
        switch self {
        case .notSent(let why), .inDoubt(let why): why
        case .stale: "the kept-alive connection to the primary was closed before the request was written"
        }
    }

    var sent: Bool { if case .inDoubt = self { true } else { false } }
}

/// HOST:PORT of a member, split once per forward.
struct ForwardTarget: Sendable, Equatable {
    let hostPort: String
    let host: String
    let port: Int

    init?(_ hostPort: String) {
        guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]),
              (1...65_535).contains(port) else { return nil }
        var host = hostPort[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }  // [IPv6]:port
        guard !host.isEmpty else { return nil }
        self.hostPort = hostPort
        self.host = String(host)
        self.port = port
    }

    static func == (a: ForwardTarget, b: ForwardTarget) -> Bool { a.hostPort == b.hostPort }
}

/// One kept-alive connection; its handler is touched on the channel's event loop only.
final class ForwardConnection: Sendable {
    let channel: any Channel
    let target: ForwardTarget
    fileprivate let handler: NIOLoopBound<ForwardHandler>

    fileprivate init(channel: any Channel, target: ForwardTarget, handler: ForwardHandler) {
        self.channel = channel
        self.target = target
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// One request and its answer; `reusable` when the connection may carry the next one.
    fileprivate func exchange(_ head: HTTPRequestHead, body: ForwardBody, settings: ForwardPoolSettings)
        async -> Result<(answer: ForwardAnswer, reusable: Bool), ForwardFailure> {
        let answer = channel.eventLoop.makePromise(of: ForwardExchange.self)
        let handler = self.handler
        switch body {
        case .bytes(let bytes):
            channel.eventLoop.execute {
                handler.value.start(head, body: bytes, ends: true, timeout: settings.answerTimeout, answer: answer, written: nil)
            }
        case .stream(let stream, let length):
            let written = channel.eventLoop.makePromise(of: Void.self)
            channel.eventLoop.execute {
                handler.value.start(head, body: nil, ends: false, timeout: settings.answerTimeout, answer: answer, written: written)
            }
            do {
                try await written.futureResult.get()
            } catch {
                return .failure(error as? ForwardFailure ?? .notSent("\(error)"))
            }
            do {
                var sent: Int64 = 0
                for try await part in stream {
                    sent &+= Int64(part.readableBytes)
                    if let length, sent > length { throw ForwardFailure.inDoubt("the upload was longer than its Content-Length \(length)") }
                    try await channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(part))).get()
                }
                if let length, sent != length { throw ForwardFailure.inDoubt("the upload ended after \(sent) of its \(length) bytes") }
                channel.eventLoop.execute { handler.value.endRequest() }
            } catch {
                // The client's upload broke, or the connection did: the primary holds part of a request.
                handler.eventLoop.execute { handler.value.abandon(ForwardFailure.inDoubt("the upload could not be sent whole (\(error))")) }
            }
        }
        do {
            let done = try await answer.futureResult.get()
            return .success((done.answer, done.reusable))
        } catch {
            return .failure(error as? ForwardFailure ?? .inDoubt("\(error)"))
        }
    }
}

private struct ForwardExchange: Sendable {
    let answer: ForwardAnswer
    let reusable: Bool
}

/// The last handler of a forward connection: one request at a time, its answer collected whole.
final class ForwardHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let tls: Bool
    private let settings: ForwardPoolSettings
    /// Completed when the connection can carry a request: at connect, or after the TLS handshake.
    fileprivate let ready: EventLoopPromise<Void>
    private var isReady = false
    private var readyTimeout: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    private var answer: EventLoopPromise<ForwardExchange>?
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var requestEnded = false
    private var timeout: Scheduled<Void>?

    fileprivate init(tls: Bool, settings: ForwardPoolSettings, ready: EventLoopPromise<Void>) {
        self.tls = tls
        self.settings = settings
        self.ready = ready
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { becameActive(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Every promise is completed, whatever ended the connection (a connect that failed never
        // made it active, so no channelInactive).
        failReady(.notSent("the connection to the primary closed before it could be used"))
        fail(.inDoubt("the primary closed the connection before answering"))
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        becameActive(context)
        context.fireChannelActive()
    }

    private func becameActive(_ context: ChannelHandlerContext) {
        guard !isReady, readyTimeout == nil else { return }
        guard tls else { return markReady() }
        let seconds = settings.connectTimeout
        readyTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: seconds) {
            self.failReady(ForwardFailure.notSent("the TLS handshake with the primary did not complete within \(seconds.nanoseconds / 1_000_000) ms"))
        }
    }

    private func markReady() {
        guard !isReady else { return }
        isReady = true
        readyTimeout?.cancel()
        readyTimeout = nil
        ready.succeed(())
    }

    private func failReady(_ failure: ForwardFailure) {
        guard !isReady else { return }
        isReady = true  // settled
        readyTimeout?.cancel()
        readyTimeout = nil
        ready.fail(failure)
        context?.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if tls, let event = event as? TLSUserEvent, case .handshakeCompleted = event { markReady() }
        context.fireUserInboundEventTriggered(event)
    }

    /// Writes a request (whole when `ends`; else the caller streams the body, then `endRequest`).
    /// `written` (streams only) completes once the head is written, or fails `stale` when the
    /// connection was closed before: then nothing was sent and nothing of the stream consumed.
    fileprivate func start(_ request: HTTPRequestHead, body: ByteBuffer?, ends: Bool, timeout wait: TimeAmount,
                           answer: EventLoopPromise<ForwardExchange>, written: EventLoopPromise<Void>?) {
        guard let context, context.channel.isActive, self.answer == nil else {
            answer.fail(ForwardFailure.stale)
            written?.fail(ForwardFailure.stale)
            return
        }
        self.answer = answer
        head = nil
        self.body = nil
        requestEnded = ends
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: wait) {
            self.fail(.inDoubt("no answer from the primary within \(wait.nanoseconds / 1_000_000) ms"))
        }
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        if let body, body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        if ends { context.write(wrapOutboundOut(.end(nil)), promise: nil) }
        context.flush()
        written?.succeed(())
    }

    fileprivate func endRequest() {
        guard let context, answer != nil || head != nil else { return }
        requestEnded = true
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// A streamed request that cannot be finished: answered in doubt, the connection closed.
    fileprivate func abandon(_ failure: ForwardFailure) {
        fail(failure)
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard answer != nil else {  // an answer nobody asked for: the connection cannot be trusted
            context.close(promise: nil)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > settings.answerBytesMax {
                return fail(.inDoubt("the primary's answer is \(length) bytes, over \(settings.answerBytesMax)"))
            }
            self.head = head
        case .body(let part):
            if body == nil {
                body = part
            } else {
                body!.writeImmutableBuffer(part)
            }
            if body!.readableBytes > settings.answerBytesMax {
                fail(.inDoubt("the primary's answer is over \(settings.answerBytesMax) bytes"))
            }
        case .end:
            guard let head, let answer else { return fail(.inDoubt("the primary's answer ended before its head")) }
            let reusable = requestEnded && head.isKeepAlive
            let whole = ForwardAnswer(head: head, body: body ?? ByteBuffer())
            clear()
            answer.succeed(ForwardExchange(answer: whole, reusable: reusable))
            if !reusable { context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !isReady {
            failReady(.notSent(tls ? "the TLS handshake with the primary failed (\(error))" : "\(error)"))
        } else {
            fail(.inDoubt("the connection to the primary failed (\(error))"))
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failReady(.notSent("the primary closed the connection before it could be used"))
        fail(.inDoubt("the primary closed the connection before answering"))
        context.fireChannelInactive()
    }

    /// Fails the request in flight (if any) and closes the connection: it holds a partial exchange.
    private func fail(_ failure: ForwardFailure) {
        guard let answer else { return }
        clear()
        answer.fail(failure)
        context?.close(promise: nil)
    }

    private func clear() {
        answer = nil
        head = nil
        body = nil
        timeout?.cancel()
        timeout = nil
    }
}

/// The bounded pool. Decisions under the lock; connecting, closing and resuming waiters outside it.
final class ForwardPool: Sendable {
    let settings: ForwardPoolSettings
    private let group: any EventLoopGroup
    private let sslContext: Result<NIOSSLContext, any Error>?
    private let state = Mutex(State())
    private let sweeper = Mutex<RepeatedTask?>(nil)

    private struct Waiter {
        let id: UInt64
        let target: ForwardTarget
        let deadline: NIODeadline
        let continuation: CheckedContinuation<Grant, any Error>
    }

    /// What a waiter is given: a free connection, or the right to open one (counted already).
    private enum Grant {
        case connection(ForwardConnection)
        case connect
    }

    private enum Step {
        case use(ForwardConnection)
        case connect
        case wait
        case refuse
    }

    private struct State {
        /// Free connections, most recently used last.
        var idle: [(connection: ForwardConnection, since: NIODeadline)] = []
        /// Connections connecting or open (each counted until its channel closed).
        var open = 0
        var waiters = CircularBuffer<Waiter>()
        var nextWaiter: UInt64 = 0
        var shutDown = false

        /// A free connection to `target`, else a slot to connect, else wait, else refuse. Free
        /// connections to another target (a former primary) are handed back to be closed.
        mutating func take(_ target: ForwardTarget, settings: ForwardPoolSettings, discard: inout [ForwardConnection]) -> Step {
            if shutDown { return .refuse }
            while let last = idle.last {
                idle.removeLast()
                if last.connection.target != target {
                    discard.append(last.connection)
                } else if last.connection.channel.isActive {
                    return .use(last.connection)
                }  // else closed while idle: its close already counted (or will)
            }
            if open < settings.connectionsMax {
                open += 1
                return .connect
            }
            return waiters.count < settings.waitersMax ? .wait : .refuse
        }
    }

    init(settings: ForwardPoolSettings, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.settings = settings
        self.group = group
        self.sslContext = settings.tls.map { configuration in Result { try NIOSSLContext(configuration: configuration) } }
        let task = group.next().scheduleRepeatedTask(initialDelay: settings.sweepInterval, delay: settings.sweepInterval) { [weak self] _ in
            self?.sweep()
        }
        sweeper.withLock { $0 = task }
    }

    deinit {
        sweeper.withLock { $0?.cancel() }
    }

    /// Connections open or connecting, free ones, forwards waiting (tests, metrics).
    var counts: (open: Int, idle: Int, waiting: Int) {
        state.withLock { ($0.open, $0.idle.count, $0.waiters.count) }
    }

    /// Sends one request to `hostPort` and reads its answer.
    func exchange(_ hostPort: String, head: HTTPRequestHead, body: ForwardBody) async -> Result<ForwardAnswer, ForwardFailure> {
        guard let target = ForwardTarget(hostPort) else { return .failure(.notSent("the primary's address \(hostPort) is not HOST:PORT")) }
        var attempt = 0
        while true {
            attempt += 1
            let connection: ForwardConnection
            do {
                connection = try await acquire(target)
            } catch {
                return .failure(error as? ForwardFailure ?? .notSent("\(error)"))
            }
            switch await connection.exchange(head, body: body, settings: settings) {
            case .success(let done):
                release(connection, reusable: done.reusable)
                return .success(done.answer)
            case .failure(.stale) where attempt < 2:
                release(connection, reusable: false)  // never written: once more on another connection
            case .failure(let failure):
                release(connection, reusable: false)
                return .failure(failure == .stale ? .notSent(failure.description) : failure)
            }
        }
    }

    private func acquire(_ target: ForwardTarget) async throws -> ForwardConnection {
        var discard: [ForwardConnection] = []
        let step = state.withLock { $0.take(target, settings: settings, discard: &discard) }
        close(discard)
        switch step {
        case .use(let connection): return connection
        case .connect: return try await connect(target)
        case .refuse: throw refusal
        case .wait: break
        }
        // Decided again under the lock that enqueues, so a connection freed in between is not missed.
        let grant: Grant = try await withCheckedThrowingContinuation { continuation in
            var discard: [ForwardConnection] = []
            let step = state.withLock { state -> Step in
                let step = state.take(target, settings: settings, discard: &discard)
                if case .wait = step {
                    state.nextWaiter &+= 1
                    state.waiters.append(Waiter(id: state.nextWaiter, target: target, deadline: .now() + settings.poolWait,
                                                continuation: continuation))
                }
                return step
            }
            close(discard)
            switch step {
            case .use(let connection): continuation.resume(returning: .connection(connection))
            case .connect: continuation.resume(returning: .connect)
            case .refuse: continuation.resume(throwing: refusal)
            case .wait: break  // resumed by a release, a close or the sweep
            }
        }
        switch grant {
        case .connection(let connection): return connection
        case .connect: return try await connect(target)
        }
    }

    private var refusal: ForwardFailure {
        .notSent("\(settings.waitersMax) forwards are already waiting for one of the \(settings.connectionsMax) connections to the primary")
    }

    /// Opens a connection for a slot already counted in `open`.
    private func connect(_ target: ForwardTarget) async throws -> ForwardConnection {
        let connection: ForwardConnection
        do {
            connection = try await open(target).get()
        } catch {
            slotFreed(nil)
            if let failure = error as? ForwardFailure { throw failure }
            throw ForwardFailure.notSent("cannot connect to \(target.hostPort) (\(error))")
        }
        connection.channel.closeFuture.whenComplete { [self] _ in slotFreed(connection) }
        return connection
    }

    private func open(_ target: ForwardTarget) -> EventLoopFuture<ForwardConnection> {
        let settings = self.settings
        let loop = group.next()
        var ssl: NIOSSLContext?
        switch sslContext {
        case .none: ssl = nil
        case .success(let context): ssl = context
        case .failure(let error): return loop.makeFailedFuture(ForwardFailure.notSent("the cluster TLS client configuration is unusable (\(error))"))
        }
        // An IP is checked against the certificate's IP SANs by the connected address (no SNI),
        // and connected to without a name lookup.
        let address = try? SocketAddress(ipAddress: target.host, port: target.port)
        let serverName: String? = address != nil ? nil : target.host
        let tlsContext = ssl
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(settings.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tlsContext { try sync.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: serverName)) }
                    try sync.addHTTPClientHandlers()
                    try sync.addHandler(ForwardHandler(tls: tlsContext != nil, settings: settings, ready: channel.eventLoop.makePromise()))
                }
            }
        let connected = address.map { bootstrap.connect(to: $0) } ?? bootstrap.connect(host: target.host, port: target.port)
        return connected.flatMap { channel in
            do {
                let handler = try channel.pipeline.syncOperations.handler(type: ForwardHandler.self)
                let connection = ForwardConnection(channel: channel, target: target, handler: handler)
                return handler.ready.futureResult.map { connection }
            } catch {
                channel.close(promise: nil)
                return channel.eventLoop.makeFailedFuture(error)
            }
        }
    }

    /// A connection is given back: to the first waiter, to the free list, or closed.
    private func release(_ connection: ForwardConnection, reusable: Bool) {
        guard reusable else {
            connection.channel.close(promise: nil)  // its close frees the slot
            return
        }
        enum Next { case give(Waiter), keep, close }
        let next = state.withLock { state -> Next in
            guard !state.shutDown, connection.channel.isActive else { return .close }
            if let waiter = state.waiters.first {
                guard waiter.target == connection.target else { return .close }  // the slot goes to it once closed
                _ = state.waiters.removeFirst()
                return .give(waiter)
            }
            state.idle.append((connection, .now()))
            return .keep
        }
        switch next {
        case .give(let waiter): waiter.continuation.resume(returning: .connection(connection))
        case .keep: break
        case .close: connection.channel.close(promise: nil)
        }
    }

    /// A connection closed (or one never opened): its slot goes to the first waiter, if any.
    private func slotFreed(_ connection: ForwardConnection?) {
        let waiter = state.withLock { state -> Waiter? in
            if let connection, let index = state.idle.firstIndex(where: { $0.connection === connection }) {
                state.idle.remove(at: index)
            }
            guard let waiter = state.waiters.popFirst() else {
                state.open -= 1
                return nil
            }
            return waiter  // the slot passes to it: `open` unchanged
        }
        waiter?.continuation.resume(returning: .connect)
    }

    /// Waiters past their deadline are answered; connections idle past `idleTimeout` are closed.
    private func sweep() {
        let now = NIODeadline.now()
        let (expired, stale) = state.withLock { state -> ([Waiter], [ForwardConnection]) in
            var expired: [Waiter] = []
            if state.waiters.contains(where: { $0.deadline <= now }) {
                expired = state.waiters.filter { $0.deadline <= now }
                state.waiters.removeAll { $0.deadline <= now }
            }
            var stale: [ForwardConnection] = []
            while let first = state.idle.first, first.since + settings.idleTimeout <= now {
                stale.append(first.connection)
                state.idle.removeFirst()
            }
            return (expired, stale)
        }
        for waiter in expired {
            waiter.continuation.resume(throwing: ForwardFailure.notSent(
                "no connection to the primary \(waiter.target.hostPort) became free within \(settings.poolWait.nanoseconds / 1_000_000) ms (\(settings.connectionsMax) busy)"))
        }
        close(stale)
    }

    private func close(_ connections: [ForwardConnection]) {
        for connection in connections { connection.channel.close(promise: nil) }
    }

    /// Closes every connection and refuses every waiter (tests; a node's pool lives as long as it).
    func shutdown() {
        sweeper.withLock { $0?.cancel() }
        let (waiters, idle) = state.withLock { state -> ([Waiter], [ForwardConnection]) in
            state.shutDown = true
            defer { state.waiters.removeAll(); state.idle.removeAll() }
            return (Array(state.waiters), state.idle.map(\.connection))
        }
        for waiter in waiters { waiter.continuation.resume(throwing: ForwardFailure.notSent("the forward pool was shut down")) }
        close(idle)
    }
}
