// The lean forwarding client (ForwardPool, issue 19) against a fake primary on loopback that
// misbehaves on purpose: kept-alive connections closed by the primary, a request read and the
// connection closed without an answer, a primary that never answers, a pool at its bound and a
// waiter queue at its bound, nothing listening. And the hop-by-hop rules (RFC 9110 §7.6.1) of
// what a replica sends and returns. The real cluster paths (read-your-writes, 503 while the
// primary is down, client address, request id, TLS) are in ClusterEndToEndTests,
// ClusterAuthTests, OperationsTests, Tests/Compat/test_replica.py and test_cluster_tls.py.

@testable import BaaS
import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import LiveCluster
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// An HTTP/1.1 server on 127.0.0.1 whose answers the test chooses.
final class FakePrimary: Sendable {
    enum Behavior: Sendable {
        /// 201 with a small JSON body, keep-alive.
        case answer
        /// 201 keep-alive, then the connection is closed (no `Connection: close`).
        case answerThenClose
        /// The request is read, the connection closed without a byte of answer.
        case closeWithoutAnswer
        /// The request is read and never answered.
        case neverAnswer
        /// Answered when the test calls `releaseHeld()`.
        case hold
    }

    let behavior: Mutex<Behavior>
    let accepted = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let lastHead = Mutex<HTTPRequestHead?>(nil)
    let lastBody = Mutex<[UInt8]>([])
    fileprivate let held = Mutex<[NIOLoopBound<ChannelHandlerContext>]>([])
    private let server = Mutex<(any Channel)?>(nil)
    let port: Int

    private init(behavior: Behavior, port: Int) {
        self.behavior = Mutex(behavior)
        self.port = port
    }

    static func start(_ behavior: Behavior) async throws -> FakePrimary {
        let primary = FakePrimary(behavior: behavior, port: LiveCluster.freePort())
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakePrimaryHandler(primary))
                }
            }
            .bind(host: "127.0.0.1", port: primary.port).get()
        primary.server.withLock { $0 = channel }
        return primary
    }

    var address: String { "127.0.0.1:\(port)" }

    func releaseHeld() {
        let contexts = held.withLock { held in defer { held.removeAll() }; return held }
        for bound in contexts {
            bound.eventLoop.execute { FakePrimaryHandler.answer(bound.value, keepAlive: true) }
        }
    }

    func stop() async {
        let channel = server.withLock { $0 }
        try? await channel?.close()
    }
}

private final class FakePrimaryHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let primary: FakePrimary
    init(_ primary: FakePrimary) { self.primary = primary }

    func channelActive(context: ChannelHandlerContext) {
        primary.accepted.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            primary.lastHead.withLock { $0 = head }
            primary.lastBody.withLock { $0 = [] }
        case .body(let part):
            primary.lastBody.withLock { $0 += Array(part.readableBytesView) }
        case .end:
            primary.requests.add(1, ordering: .relaxed)
            switch primary.behavior.withLock({ $0 }) {
            case .answer: Self.answer(context, keepAlive: true)
            case .answerThenClose:
                Self.answer(context, keepAlive: true)
                context.close(promise: nil)
            case .closeWithoutAnswer: context.close(promise: nil)
            case .neverAnswer: break
            case .hold: primary.held.withLock { $0.append(NIOLoopBound(context, eventLoop: context.eventLoop)) }
            }
        }
    }

    static func answer(_ context: ChannelHandlerContext, keepAlive: Bool) {
        let body = ByteBuffer(string: #"{"ok":true}"#)
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(body.readableBytes)),
                                   ("X-AeroDB-LSN", "7"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .created, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
    }
}

private final class AnsweredFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Waits for `condition`: up to 4,000 polls 5 ms apart, so at least 20 s (a bound, not a timing
/// assertion). The bound counts this task's own polls, not wall time: while the cooperative pool
/// is busy with other tests (two threads here, a full run keeps them busy for tens of seconds),
/// neither this task nor the work it waits for runs, and a wall-clock deadline would expire with
/// the condition never checked in between (CI failed that way once after 42 s).
private func waitFor(_ what: String, _ condition: () -> Bool) async throws {
    for _ in 0..<4_000 {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    guard condition() else { throw AeroError(.internalError, "timed out waiting for \(what)") }
}

/// The pool's timeouts are long unless a test is about one of them: a full run may hold the test's
/// task off the cooperative pool for tens of seconds, and a held request must not time out while
/// the test is not looking.
private func settings(connectionsMax: Int = 4, waitersMax: Int = 16, answerMillis: Int64 = 120_000,
                      poolWaitMillis: Int64 = 120_000) -> ForwardPoolSettings {
    ForwardPoolSettings(connectionsMax: connectionsMax, waitersMax: waitersMax, connectTimeout: .seconds(60),
                        answerTimeout: .milliseconds(answerMillis), poolWait: .milliseconds(poolWaitMillis),
                        idleTimeout: .seconds(60), answerBytesMax: 1 << 20, sweepInterval: .milliseconds(20), tls: nil)
}

extension ForwardPool {
    /// A POST of `body` to /rest/v1/items through the pool, with the head a forward sends.
    func post(to address: String, body: String = #"{"id":"a"}"#) async -> Result<ForwardAnswer, ForwardFailure> {
        let bytes = ByteBuffer(string: body)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/rest/v1/items",
                                   headers: HTTPHeaders([("Host", "primary"), ("Content-Length", String(bytes.readableBytes))]))
        return await exchange(address, head: head, body: .bytes(bytes))
    }
}

@Suite struct ForwardPoolTests {
    @Test func answersAreReadWholeAndConnectionsKeptAlive() async throws {
        let primary = try await FakePrimary.start(.answer)
        let pool = ForwardPool(settings: settings())
        for i in 0..<5 {
            let answer = try await pool.post(to: primary.address, body: #"{"id":"\#(i)"}"#).get()
            #expect(answer.head.status == .created)
            #expect(String(buffer: answer.body) == #"{"ok":true}"#)
            #expect(answer.head.headers["Set-Cookie"] == ["a=1", "b=2"])
            #expect(primary.lastBody.withLock { String(decoding: $0, as: UTF8.self) } == #"{"id":"\#(i)"}"#)
        }
        #expect(primary.accepted.load(ordering: .relaxed) == 1, "one kept-alive connection carried all five")
        #expect(pool.counts.open == 1 && pool.counts.idle == 1)
        // A streamed body (storage uploads) of a known length, on the same connection.
        let upload = ByteBuffer(string: String(repeating: "x", count: 100_000))
        let head = HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/storage/v1/object/b/o",
                                   headers: HTTPHeaders([("Host", "primary"), ("Content-Length", "100000")]))
        let answer = try await pool.exchange(primary.address, head: head, body: .stream(RequestBody(buffer: upload), length: 100_000)).get()
        #expect(answer.head.status == .created)
        #expect(primary.lastBody.withLock { $0.count } == 100_000)
        #expect(primary.accepted.load(ordering: .relaxed) == 1)
        pool.shutdown()
        await primary.stop()
    }

    /// The primary closes a kept-alive connection after answering (no `Connection: close`): the
    /// pool drops it and the next forward opens a new one; nothing is answered in doubt.
    @Test func aKeptAliveConnectionClosedByThePrimaryIsReplaced() async throws {
        let primary = try await FakePrimary.start(.answerThenClose)
        let pool = ForwardPool(settings: settings())
        for round in 1...3 {
            let answer = try await pool.post(to: primary.address).get()
            #expect(answer.head.status == .created)
            try await waitFor("the closed connection to leave the pool") { pool.counts.open == 0 }
            #expect(primary.accepted.load(ordering: .relaxed) == round)
        }
        pool.shutdown()
        await primary.stop()
    }

    /// The primary read the request and closed without answering: the write may have committed,
    /// so it is in doubt (504 AERO_COMMIT_IN_DOUBT), never retried; the slot is freed.
    @Test func aPrimaryClosingMidExchangeIsInDoubtAndNotRetried() async throws {
        let primary = try await FakePrimary.start(.closeWithoutAnswer)
        let pool = ForwardPool(settings: settings())
        let result = await pool.post(to: primary.address)
        guard case .failure(let failure) = result else { Issue.record("answered: \(result)"); return }
        #expect(failure.sent, "\(failure)")
        #expect(ClusterHTTP.classify(failure, primary: primary.address).code == .commitInDoubt)
        #expect(primary.requests.load(ordering: .relaxed) == 1, "sent once, never again")
        try await waitFor("the slot to be freed") { pool.counts.open == 0 }
        // The same pool works once the primary answers again.
        primary.behavior.withLock { $0 = .answer }
        #expect(try await pool.post(to: primary.address).get().head.status == .created)
        pool.shutdown()
        await primary.stop()
    }

    /// A primary that never answers: the forward ends at the answer timeout, in doubt, and the
    /// connection is closed (its slot freed).
    @Test func aPrimaryThatNeverAnswersHitsTheTimeout() async throws {
        let primary = try await FakePrimary.start(.neverAnswer)
        let pool = ForwardPool(settings: settings(answerMillis: 300))
        let result = await pool.post(to: primary.address)
        guard case .failure(let failure) = result else { Issue.record("answered: \(result)"); return }
        #expect(failure == .inDoubt("no answer from the primary within 300 ms"))
        try await waitFor("the timed-out connection to close") { pool.counts.open == 0 }
        pool.shutdown()
        await primary.stop()
    }

    /// At most `connectionsMax` connections; then at most `waitersMax` forwards wait, and one more
    /// is refused at once, not sent; the waiter gets a connection once one is free.
    @Test func thePoolAndItsQueueAreBounded() async throws {
        let primary = try await FakePrimary.start(.hold)
        let pool = ForwardPool(settings: settings(connectionsMax: 2, waitersMax: 1))
        let address = primary.address
        let inFlight = (0..<3).map { i in
            Task { () -> Result<ForwardAnswer, ForwardFailure> in
                return await pool.post(to: address, body: #"{"id":"\#(i)"}"#)
            }
        }
        try await waitFor("two requests held and one forward waiting") {
            primary.requests.load(ordering: .relaxed) == 2 && pool.counts.waiting == 1
        }
        #expect(pool.counts.open == 2)
        let refused = await pool.post(to: address)
        guard case .failure(let failure) = refused else { Issue.record("answered: \(refused)"); return }
        #expect(!failure.sent)
        #expect(ClusterHTTP.classify(failure, primary: address).code == .primaryUnavailable)
        // Answer the two held requests: the waiter's request goes out on a freed connection.
        primary.releaseHeld()
        try await waitFor("the waiter's request to arrive") { primary.requests.load(ordering: .relaxed) == 3 }
        primary.releaseHeld()
        for task in inFlight { #expect(try await task.value.get().head.status == .created) }
        #expect(primary.accepted.load(ordering: .relaxed) == 2, "never more than two connections")
        #expect(pool.counts.open == 2 && pool.counts.waiting == 0)
        pool.shutdown()
        await primary.stop()
    }

    /// A forward waiting for a busy pool gives up after `poolWait`: not sent (503), never queued forever.
    @Test func aForwardWaitingPastThePoolWaitIsNotSent() async throws {
        let primary = try await FakePrimary.start(.hold)
        let pool = ForwardPool(settings: settings(connectionsMax: 1, poolWaitMillis: 200))
        let address = primary.address
        let first = Task { () -> Result<ForwardAnswer, ForwardFailure> in
            return await pool.post(to: address)
        }
        try await waitFor("the first request held") { primary.requests.load(ordering: .relaxed) == 1 }
        let waited = await pool.post(to: address)
        guard case .failure(let failure) = waited else { Issue.record("answered: \(waited)"); return }
        #expect(!failure.sent, "\(failure)")
        #expect(pool.counts.waiting == 0)
        primary.releaseHeld()
        #expect(try await first.value.get().head.status == .created)
        #expect(primary.requests.load(ordering: .relaxed) == 1)
        pool.shutdown()
        await primary.stop()
    }

    /// Nothing listening: refused at connect, not sent (503 AERO_PRIMARY_UNAVAILABLE), slot freed.
    @Test func aPrimaryThatIsDownIsNotSent() async throws {
        let pool = ForwardPool(settings: settings())
        let result = await pool.post(to: "127.0.0.1:\(LiveCluster.freePort())")
        guard case .failure(let failure) = result else { Issue.record("answered: \(result)"); return }
        #expect(!failure.sent, "\(failure)")
        #expect(pool.counts.open == 0)
        pool.shutdown()
    }

    /// RFC 9110 §7.6.1: `Connection`, the fields it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
    /// `Transfer-Encoding`, `Upgrade` are not passed on, either way; the client's own address and
    /// host headers are replaced by this node's signed ones; `Cookie` goes as one line.
    @Test func hopByHopFieldsAreNotForwarded() throws {
        var fields = HTTPFields()
        for (name, value) in [("Connection", "keep-alive, X-Private"), ("X-Private", "secret"), ("Keep-Alive", "timeout=5"),
                              ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Upgrade", "h2c"),
                              ("X-AeroDB-Client-IP", "6.6.6.6"), ("X-AeroDB-Forwarded-Host", "evil"),
                              ("Cookie", "a=1"), ("Cookie", "b=2"), ("apikey", "k"), ("Content-Length", "2"),
                              ("Prefer", "return=representation"), ("X-Request-Id", "r1")] {
            fields.append(HTTPField(name: HTTPField.Name(name)!, value: value))
        }
        let request = Request(head: HTTPRequest(method: .post, scheme: "http", authority: "replica:1", path: "/rest/v1/items?select=*",
                                                headerFields: fields),
                              body: RequestBody(buffer: ByteBuffer(string: "{}")))
        let head = ClusterHTTP.outboundHead(request, body: .bytes(ByteBuffer(string: "{}")), primary: "127.0.0.1:9",
                                            nodeID: "n2", signedAddress: "signed-ip", signedHost: "signed-host")
        #expect(head.uri == "/rest/v1/items?select=*")
        #expect(head.method == .POST)
        for name in ["Connection", "X-Private", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade", "Transfer-Encoding"] {
            #expect(!head.headers.contains(name: name), "\(name) was forwarded")
        }
        #expect(head.headers["Host"] == ["127.0.0.1:9"])
        #expect(head.headers["Content-Length"] == ["2"])
        #expect(head.headers["Cookie"] == ["a=1; b=2"])
        #expect(head.headers["X-AeroDB-Client-IP"] == ["signed-ip"])
        #expect(head.headers["X-AeroDB-Forwarded-Host"] == ["signed-host"])
        #expect(head.headers["X-AeroDB-Forwarded-By"] == ["n2"])
        #expect(head.headers["apikey"] == ["k"] && head.headers["X-Request-Id"] == ["r1"] && head.headers["Prefer"] == ["return=representation"])

        let answer = HTTPHeaders([("Connection", "close, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                                  ("Transfer-Encoding", "chunked"), ("Content-Length", "9"), ("Set-Cookie", "a=1"),
                                  ("Set-Cookie", "b=2"), ("X-AeroDB-LSN", "42"), ("Content-Type", "application/json")])
        let returned = ClusterHTTP.answerFields(answer)
        #expect(returned.map(\.name.canonicalName) == ["set-cookie", "set-cookie", "x-aerodb-lsn", "content-type"])
        #expect(returned[values: .setCookie] == ["a=1", "b=2"])
    }

    /// Read-your-writes on the replica (`Database.waitApplied`, `Visibility.wait`): a wait for an
    /// LSN already applied answers at once; waits for LSNs to come are answered by the publication
    /// that reaches them (each at its own, not before); a wait that nothing reaches ends false at
    /// its deadline; a wait pending at close ends false.
    @Test func applyWaitersAnswerAtTheirLSNOrTheirDeadline() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-apply-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        let waiters = db
        let (_, first) = try await db.createCollection(parse(#"{"name":"items","fields":{"id":{"type":"text"}}}"#))
        #expect(await waiters.waitApplied(first, timeout: .seconds(5)))
        let laterAnswered = AnsweredFlag()
        let later = Task {
            let applied = await waiters.waitApplied(first + 2, timeout: .seconds(30))
            laterAnswered.value.store(true, ordering: .sequentiallyConsistent)
            return applied
        }
        let next = Task { await waiters.waitApplied(first + 1, timeout: .seconds(30)) }
        // A wait that nothing reaches ends false at its deadline.
        #expect(await waiters.waitApplied(first + 1, timeout: .milliseconds(100)) == false)
        let one = try await db.commit([.insert(collection: "items", document: ["id": .string("a")])]).lsn
        #expect(one == first + 1)
        #expect(await next.value)
        // first + 1 was published; the wait for first + 2 is still waiting (its deadline is 30 s away).
        #expect(laterAnswered.value.load(ordering: .sequentiallyConsistent) == false)
        _ = try await db.commit([.insert(collection: "items", document: ["id": .string("b")])])
        #expect(await later.value)
        // Pending at close (or arriving after it): false at once, not at its 30 s deadline.
        let atClose = Task { await waiters.waitApplied(UInt64.max, timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        await db.close()
        #expect(await atClose.value == false)
    }
}
