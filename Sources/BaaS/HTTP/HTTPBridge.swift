// The node's HTTP/1 request loop (RealtimeHTTPChannel, every connection that is not a WebSocket):
// a NIO channel handler that hands each request to the node's router as a task of its own and
// writes the router's answer back, in place of Hummingbird's per-connection loop over an
// NIOAsyncChannel (issue 19). Hummingbird's loop made each request cross two async-sequence state
// machines (the inbound parts and the outbound writer) and hop between the connection's event
// loop and Swift's cooperative pool on its way in and out: on this machine a bare Hummingbird
// route cost 37-52 us of CPU per GET where a NIO handler answering the same bytes cost 12-14, and
// a node's GET by key 91-103 us where this loop costs 64-81 (docs/BENCHMARKS.md "s40").
//
// Per connection (`HTTPBridgeHandler`, on the connection's event loop):
// - One request at a time, in order. A request's task starts at its head when it has a body, at
//   its end when it has none (a GET's head and end come in one read). Parts that arrive while a
//   request is answered and its body has ended (a pipelining client) wait in `queued`, and the
//   handler asks the socket for no more bytes until they are served: at most one read's parts
//   wait.
// - The body streams to the handler (RequestBody over an NIOThrowingAsyncSequenceProducer): when
//   the handler's consumer lags by `bodyBufferedMax` parts, reads stop until it catches up, so an
//   upload of any size holds a bounded amount of memory. A request with neither Content-Length
//   (other than 0) nor Transfer-Encoding has an empty body. Body bytes the handler did not read
//   are discarded once it answered (as Hummingbird's loop did), then the next request is served.
// - The answer: a body of one buffer leaves with its head in one flush (most answers); a longer
//   body is written buffer by buffer, each awaited, so a slow client holds a download to its own
//   pace. The last parts are written on the loop's next turn, after the task's job, with the
//   handler's next step (measured: writing them inside the job woke the client mid-turn and cost
//   the node about a fifth of its CPU per GET, "s40"). Every answer carries `Date` (HTTPDate). An
//   error thrown while the body is written closes the connection (a partial answer cannot be
//   taken back); a connection that closes after an answer closes once its last part is written.
// - Where the task runs: GET and HEAD on the connection's event loop (`LoopTaskExecutor`: no
//   thread hop in or out for a read); every other method on Swift's cooperative pool, so an
//   upload's file writes and fsyncs never hold an event loop. Work that takes long (password
//   hashing, function guests, embedded reads) already runs on thread pools of its own.
// - Each request's context is made by the node's responder (StartCommand.routerResponder) with the
//   node's logger as is: no `hb.request.id` on it (Hummingbird's `context.id` would trap; the
//   request's id is `RequestID.current`, set by FrontMiddleware) and no Hummingbird task-local.
// - The connection closes after an answer when the request or the answer says
//   `Connection: close`, after a 400 for a request the HTTP decoder refused, and when an answer
//   fails to be written. HTTPConnectionStateHandler (before this handler) still closes idle
//   connections when the node stops (SD1), and the node's drain limit closes the rest
//   (RealtimeHTTPChannel.handle).

import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Answers one request (the node's router, its errors already answered by FrontMiddleware).
public typealias HTTPBridgeResponder = @Sendable (Request, any Channel) async -> Response

/// Runs a task's jobs on one event loop (the executor preference of a GET's or HEAD's task).
final class LoopTaskExecutor: TaskExecutor, Sendable {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

final class HTTPBridgeHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Body parts buffered for a handler that has not read them yet, at most (then reads stop).
    static let bodyBufferedMax = 16

    typealias BodyProducer = NIOThrowingAsyncSequenceProducer<
        ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, BodyDemand>
    typealias BodySource = BodyProducer.Source

    /// The current request's body as it arrives.
    private enum Body {
        /// Parts go to the handler.
        case streaming(BodySource)
        /// Parts are dropped (no body expected, the handler answered, or stopped reading).
        case discarding
        /// Its end arrived.
        case ended
    }

    private let responder: HTTPBridgeResponder
    private let executor: LoopTaskExecutor
    private var context: ChannelHandlerContext?
    /// A request's task has not finished its answer.
    private var answering = false
    private var body = Body.ended
    /// Numbers the requests of the connection: a body's demand callbacks name theirs.
    private var generation = 0
    /// The handler's body consumer lags (`bodyBufferedMax`).
    private var bodyFull = false
    /// Parts of requests after the one being answered (a pipelining client).
    private var queued = CircularBuffer<HTTPRequestPart>()
    /// A read was asked for while reads were held.
    private var readPending = false
    private var closeAfterAnswer = false

    init(responder: @escaping HTTPBridgeResponder, channel: any Channel) {
        self.responder = responder
        self.executor = LoopTaskExecutor(channel.eventLoop)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !queued.isEmpty || (answering && isEnded) {
            queued.append(part)  // the next request waits for this answer
            return
        }
        dispatch(part, context: context)
    }

    private var isEnded: Bool {
        if case .ended = body { return true }
        return false
    }

    private func dispatch(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            start(head, context: context)
        case .body(let buffer):
            if case .streaming(let source) = body {
                switch source.yield(buffer) {
                case .produceMore: break
                case .stopProducing: bodyFull = true
                case .dropped: body = .discarding  // the handler stopped reading
                }
            }
        case .end:
            if case .streaming(let source) = body { source.finish() }
            body = .ended
            bodyFull = false
            if let waiting = waitingForEnd {  // a request without a body starts once its head is whole
                waitingForEnd = nil
                run(waiting, context: context)
            } else if !answering {
                serveQueued(context: context)
            }
        }
    }

    private func start(_ head: HTTPRequest, context: ChannelHandlerContext) {
        answering = true
        generation &+= 1
        closeAfterAnswer = Self.saysClose(head.headerFields)
        let requestBody: RequestBody
        if Self.hasBody(head.headerFields) {
            let demand = BodyDemand(handler: NIOLoopBound(self, eventLoop: context.eventLoop), generation: generation)
            let made = BodyProducer.makeSequence(
                backPressureStrategy: .init(lowWatermark: Self.bodyBufferedMax / 4, highWatermark: Self.bodyBufferedMax),
                finishOnDeinit: false, delegate: demand)
            body = .streaming(made.source)
            requestBody = RequestBody(asyncSequence: made.sequence)
        } else {
            body = .discarding
            requestBody = RequestBody(buffer: ByteBuffer())
        }
        let request = Request(head: head, body: requestBody)
        if case .discarding = body {
            waitingForEnd = request
            return
        }
        run(request, context: context)
    }

    /// A request without a body, between its head and its end.
    private var waitingForEnd: Request?

    private func run(_ request: Request, context: ChannelHandlerContext) {
        let head = request.head
        let answer = Answer(channel: context.channel, handler: NIOLoopBound(self, eventLoop: context.eventLoop), generation: generation)
        let responder = self.responder, channel = context.channel
        let work: @Sendable () async -> Void = {
            let response = await responder(request, channel)
            await answer.write(response)
        }
        if head.method == .get || head.method == .head {
            Task(executorPreference: executor, operation: work)
        } else {
            Task(operation: work)
        }
    }

    /// On the loop: the answer's last part; the connection closes once it is written when it must.
    fileprivate func answer(_ last: HTTPResponsePart, generation: Int, closes: Bool) {
        guard let context else { return }
        if closes || closeAfterAnswer {
            let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.channel.writeAndFlush(last).whenComplete { _ in  // on the loop
                handler.value.answered(generation: generation, failed: false, closes: true)
            }
        } else {
            context.channel.writeAndFlush(last, promise: nil)
            answered(generation: generation, failed: false, closes: false)
        }
    }

    /// On the loop, once the answer of request `generation` was handed to the channel.
    fileprivate func answered(generation: Int, failed: Bool, closes: Bool) {
        guard let context, generation == self.generation, answering else { return }
        answering = false
        if failed || closes || closeAfterAnswer {
            if case .streaming(let source) = body { source.finish(ChannelError.ioOnClosedChannel) }
            body = .discarding
            context.close(promise: nil)
            return
        }
        switch body {
        case .streaming(let source):  // the rest of the body is not read: dropped until its end
            source.finish()
            body = .discarding
            bodyFull = false
            updateReads(context: context)
        case .discarding:
            updateReads(context: context)
        case .ended:
            serveQueued(context: context)
        }
    }

    /// The handler's body consumer wants more (or is gone) for request `generation`.
    fileprivate func bodyDemand(generation: Int, terminated: Bool) {
        guard let context, generation == self.generation else { return }
        if terminated, case .streaming = body { body = .discarding }
        bodyFull = false
        updateReads(context: context)
    }

    /// Serves the parts that waited while the last request was answered, as far as they go.
    private func serveQueued(context: ChannelHandlerContext) {
        while !queued.isEmpty && !(answering && isEnded) {
            dispatch(queued.removeFirst(), context: context)
        }
        updateReads(context: context)
    }

    private func updateReads(context: ChannelHandlerContext) {
        guard readPending, queued.isEmpty, !bodyFull else { return }
        readPending = false
        context.read()
    }

    func read(context: ChannelHandlerContext) {
        if !queued.isEmpty || bodyFull {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        waitingForEnd = nil
        if case .streaming(let source) = body { source.finish(ChannelError.eof) }
        body = .discarding
        queued.removeAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        waitingForEnd = nil
        if case .streaming(let source) = body { source.finish(error) }
        body = .discarding
        queued.removeAll()
        guard error is HTTPParserError, !answering else {
            context.close(promise: nil)
            return
        }
        // A request the decoder refused: 400 and close (what Hummingbird's loop answered).
        answering = true
        let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0", .date: HTTPDate.now()])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    static func hasBody(_ fields: HTTPFields) -> Bool {
        if fields[.transferEncoding] != nil { return true }
        guard let length = fields[.contentLength] else { return false }
        return length != "0"
    }

    static func saysClose(_ fields: HTTPFields) -> Bool {
        fields[values: .connection].contains { $0.lowercased().split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "close" } }
    }
}

/// The body's demand, reported on the connection's loop.
struct BodyDemand: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<HTTPBridgeHandler>
    let generation: Int

    func produceMore() {
        let handler = self.handler, generation = self.generation
        handler.eventLoop.execute { handler.value.bodyDemand(generation: generation, terminated: false) }
    }

    func didTerminate() {
        let handler = self.handler, generation = self.generation
        handler.eventLoop.execute { handler.value.bodyDemand(generation: generation, terminated: true) }
    }
}

/// Writes one answer to the channel (see the header); its last parts go out on the loop's next
/// turn together with the handler's next step (`HTTPBridgeHandler.answer`: the next request, or
/// the close once they are written).
struct Answer: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<HTTPBridgeHandler>
    let generation: Int

    func write(_ response: Response) async {
        var head = response.head
        head.headerFields[.date] = HTTPDate.now()
        let closes = HTTPBridgeHandler.saysClose(head.headerFields)
        let state = AnswerState(head: head)
        do {
            try await response.body.write(BridgeBodyWriter(answer: self, state: state))
        } catch {
            finished(failed: true, closes: closes)
            return
        }
        let parts = state.finalParts ?? state.takeFinal(trailers: nil)  // a body that never said finish: ended here
        let channel = self.channel, handler = self.handler, generation = self.generation
        // The next loop turn, after the task's job: the last parts, then the handler's next step.
        channel.eventLoop.execute {
            for part in parts.dropLast() { channel.write(part, promise: nil) }
            handler.value.answer(parts.last!, generation: generation, closes: closes)
        }
    }

    /// On the loop: the parts, the last one flushed; `completion` when it is written.
    func send(_ parts: [HTTPResponsePart], completion: EventLoopPromise<Void>) {
        let channel = self.channel
        let run: @Sendable () -> Void = {
            for part in parts.dropLast() { channel.write(part, promise: nil) }
            if let last = parts.last { channel.writeAndFlush(last, promise: completion) }
        }
        if channel.eventLoop.inEventLoop { run() } else { channel.eventLoop.execute(run) }
    }

    func finished(failed: Bool, closes: Bool) {
        let handler = self.handler, generation = self.generation
        if handler.eventLoop.inEventLoop {
            handler.value.answered(generation: generation, failed: failed, closes: closes)
        } else {
            handler.eventLoop.execute { handler.value.answered(generation: generation, failed: failed, closes: closes) }
        }
    }
}

/// What an answer's writer has sent: used by one task at a time (the answer's), in order.
final class AnswerState: @unchecked Sendable {
    /// Not sent yet: the first buffer waits to leave with it.
    var head: HTTPResponse?
    var held: ByteBuffer?
    /// The parts still to send once the body said finish (the end last).
    var finalParts: [HTTPResponsePart]?

    init(head: HTTPResponse) { self.head = head }

    func takeFinal(trailers: HTTPFields?) -> [HTTPResponsePart] {
        var parts: [HTTPResponsePart] = []
        if let head { parts.append(.head(head)) }
        if let held { parts.append(.body(held)) }
        parts.append(.end(trailers))
        head = nil
        held = nil
        return parts
    }
}

/// The answer's body: the first buffer waits to leave with the head; the following ones are
/// written one by one, each awaited.
struct BridgeBodyWriter: ResponseBodyWriter {
    let answer: Answer
    let state: AnswerState

    mutating func write(_ buffer: ByteBuffer) async throws {
        var parts: [HTTPResponsePart] = []
        if let head = state.head {
            guard let first = state.held else {
                state.held = buffer
                return
            }
            parts = [.head(head), .body(first)]
            state.head = nil
            state.held = nil
        }
        parts.append(.body(buffer))
        let written = answer.channel.eventLoop.makePromise(of: Void.self)
        answer.send(parts, completion: written)
        try await written.futureResult.get()
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        guard state.finalParts == nil else { return }
        state.finalParts = state.takeFinal(trailers: trailingHeaders)
    }
}

/// The `Date` header's value (RFC 9110 IMF-fixdate), made once per second.
enum HTTPDate {
    private struct Made: Sendable {
        var second: Int
        var text: String
    }

    private static let cache = Mutex(Made(second: -1, text: ""))

    static func now() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let second = Int(now.tv_sec)
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        let text = format(second)
        cache.withLock { $0 = Made(second: second, text: text) }
        return text
    }

    static func format(_ second: Int) -> String {
        var time = time_t(second), parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
