// The frames waiting to be written to one WebSocket connection: a bounded queue, kept already
// framed (RFC 6455 text frames, RealtimeSocketWriter's layout) in one ByteBuffer, with one writer.
//
// Policy (docs/REALTIME.md "Backpressure"):
// - Events (postgres_changes, broadcast, presence) enter while fewer than
//   RealtimeLimits.outboundEventsMax frames wait. postgres_changes are not dropped: when one
//   transaction's frames do not fit, the subscription leaves the node's shared reader with its
//   cursor before that transaction, waits for room and catches up from the WAL (ChangeFanout).
//   Broadcasts and presence diffs are not in the WAL: they are dropped and counted per topic;
//   the next write carries a `system` message saying how many were lost.
// - Replies and system messages may use RealtimeLimits.outboundControlHeadroom more; past that
//   the client reads nothing at all and the connection is closed (1008).
//
// The writer: a RealtimeChannelHandler attached to the outbox (no task: it runs on the channel's
// event loop) or, without one (tests), `take()`. At most one write is in flight: `writing` is
// set when a push finds frames waiting and no write in flight (the pusher then schedules the
// writer, RealtimeSocketWriter.schedule), and cleared by the writer only when it finds nothing
// left (`takeForWrite`), both under the lock: no lost wake-up, no second writer.
//
// Invariants: the queue never holds more than outboundEventsMax + outboundControlHeadroom
// frames; no I/O under the lock; waiters are resumed and writers scheduled outside it.

import Kernel
import NIOCore
import Synchronization

/// What drains an outbox once attached (RealtimeChannelHandler; tests attach their own): it is
/// scheduled when frames wait and no write is in flight, then calls `takeForWrite` until
/// `.idle`, one write at a time, and `writerFinished` after `.finished`. `closing` is called
/// once, when the outbox closes (the writer bounds how long the socket may take to close).
protocol RealtimeOutboxWriter: AnyObject, Sendable {
    func schedule()
    func closing()
}

extension RealtimeOutboxWriter {
    func closing() {}
}

final class RealtimeOutbox: Sendable {
    enum Kind { case event, control }

    /// What the writer does next (takeForWrite).
    enum WriteStep {
        /// Write these framed bytes, then ask again.
        case write(ByteBuffer)
        /// Nothing waits: the writer stops until a push schedules it again.
        case idle
        /// Closed and everything queued was taken: send the close frame if there is a reason.
        case finished(close: (code: Int, reason: String)?)
    }

    private struct State {
        var buffer: ByteBuffer?
        var count = 0
        var closed = false
        var closeReason: (code: Int, reason: String)?
        /// A write is in flight or scheduled (attached writer only).
        var writing = false
        /// The attached writer was told to finish (takeForWrite returned .finished).
        var finishTaken = false
        /// The attached writer is done (writerFinished).
        var finished = false
        var finishWaiter: CheckedContinuation<Void, Never>?
        var writer: CheckedContinuation<Void, Never>?
        var roomWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        var droppedBroadcasts: [String: Int] = [:]
        var sink: (any RealtimeOutboxWriter)?
    }

    private let state = Mutex(State())
    let version: RealtimeVersion
    private static let allocator = ByteBufferAllocator()

    init(version: RealtimeVersion) { self.version = version }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Frames are written by `sink` from now on (the connection's socket).
    func attach(_ sink: any RealtimeOutboxWriter) {
        let schedule = state.withLock { s -> Bool in
            s.sink = sink
            guard !s.writing, s.count > 0 || s.closed else { return false }
            s.writing = true
            return true
        }
        if schedule { sink.schedule() }
    }

    /// Queues a frame; false when it did not fit (events) or the outbox closed.
    @discardableResult
    func push(_ frame: RealtimeFrame, _ kind: Kind) -> Bool {
        let text = frame.encoded(version)
        return push(text: text, kind)
    }

    /// Queues encoded event frames all together, or none of them when they do not all fit
    /// (ChangeFanout: one transaction's frames for a subscriber) or the outbox closed.
    func push(texts: [String]) -> Bool {
        guard !texts.isEmpty else { return true }
        let (accepted, wake) = state.withLock { s -> (Bool, Wake) in
            guard !s.closed, s.count + texts.count <= RealtimeLimits.outboundEventsMax else { return (false, .none) }
            var buffer = s.buffer ?? Self.allocator.buffer(capacity: texts.reduce(0) { $0 + $1.utf8.count + 4 })
            for text in texts { RealtimeSocketWriter.appendTextFrame(text, to: &buffer) }
            s.buffer = buffer
            s.count += texts.count
            return (true, Self.wake(&s))
        }
        wake.run()
        return accepted
    }

    /// Queues one transaction's change frames all together, or none of them (as `push(texts:)`).
    /// With `deferred`, a writer to start is appended there instead of being scheduled (the
    /// shared reader schedules them all at once, RealtimeSocketWriter.schedule(_:)).
    func push(changes: ArraySlice<ChangeFrame>, deferred: inout [any RealtimeOutboxWriter]) -> Bool {
        guard !changes.isEmpty else { return true }
        let (accepted, wake) = state.withLock { s -> (Bool, Wake) in
            guard !s.closed, s.count + changes.count <= RealtimeLimits.outboundEventsMax else { return (false, .none) }
            var buffer = s.buffer ?? Self.allocator.buffer(capacity: changes.reduce(0) { $0 + $1.size + 4 })
            for change in changes { change.append(to: &buffer) }
            s.buffer = buffer
            s.count += changes.count
            return (true, Self.wake(&s))
        }
        if case .schedule(let sink) = wake { deferred.append(sink) } else { wake.run() }
        return accepted
    }

    private func push(text: String, _ kind: Kind) -> Bool {
        var closing: (any RealtimeOutboxWriter)?
        let (accepted, wake) = state.withLock { s -> (Bool, Wake) in
            guard !s.closed else { return (false, .none) }
            let limit = RealtimeLimits.outboundEventsMax + (kind == .control ? RealtimeLimits.outboundControlHeadroom : 0)
            guard s.count < limit else {
                if kind == .control {
                    s.closed = true
                    s.closeReason = (1008, "client is not reading its messages")
                    closing = s.sink
                    return (false, Self.wake(&s))
                }
                return (false, .none)
            }
            var buffer = s.buffer ?? Self.allocator.buffer(capacity: text.utf8.count + 10)
            RealtimeSocketWriter.appendTextFrame(text, to: &buffer)
            s.buffer = buffer
            s.count += 1
            return (true, Self.wake(&s))
        }
        closing?.closing()
        wake.run()
        return accepted
    }

    /// Who must be woken after a change (decided under the lock, run outside it).
    private enum Wake {
        case none
        case resume(CheckedContinuation<Void, Never>)
        case schedule(any RealtimeOutboxWriter)

        func run() {
            switch self {
            case .none: break
            case .resume(let c): c.resume()
            case .schedule(let sink): sink.schedule()
            }
        }
    }

    private static func wake(_ s: inout State) -> Wake {
        if let sink = s.sink {
            guard !s.writing, !s.finishTaken, !s.finished else { return .none }
            s.writing = true
            return .schedule(sink)
        }
        guard let w = s.writer else { return .none }
        s.writer = nil
        return .resume(w)
    }

    /// A broadcast or presence frame: dropped and counted when the queue is full.
    func pushDroppable(_ frame: RealtimeFrame) {
        if !push(frame, .event) {
            state.withLock { s in
                guard !s.closed, s.droppedBroadcasts.count < RealtimeLimits.channelsPerConnectionMax * 2 else { return }
                s.droppedBroadcasts[frame.topic, default: 0] += 1
            }
        }
    }

    /// Whether an event would fit now.
    var hasRoom: Bool { state.withLock { $0.count < RealtimeLimits.outboundEventsMax } }

    /// Waits until the queue has drained to half (or closed). Cancellation ends the wait.
    func waitForRoom() async {
        let id = state.withLock { s -> Int in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.closed || Task.isCancelled || s.count < RealtimeLimits.outboundEventsMax / 2 { return true }
                    s.roomWaiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let w = state.withLock { $0.roomWaiters.removeValue(forKey: id) }
            w?.resume()
        }
    }

    /// Everything queued (with the dropped-broadcast notices), under the lock.
    private func takeAll(_ s: inout State) -> (ByteBuffer?, [CheckedContinuation<Void, Never>]) {
        guard s.count > 0, var buffer = s.buffer else { return (nil, []) }
        for (topic, dropped) in s.droppedBroadcasts {
            let notice = RealtimeFrame.system(topic: topic, extension: "broadcast", ok: true,
                                              "\(dropped) broadcast/presence message(s) dropped: this client read too slowly",
                                              extra: ["dropped": .int(Int64(dropped))])
            RealtimeSocketWriter.appendTextFrame(notice.encoded(version), to: &buffer)
        }
        s.droppedBroadcasts = [:]
        s.buffer = nil
        s.count = 0
        let room = Array(s.roomWaiters.values)
        s.roomWaiters = [:]
        return (buffer, room)
    }

    /// The attached writer's next step (RealtimeSocketWriter, on the event loop).
    func takeForWrite() -> WriteStep {
        let (step, room) = state.withLock { s -> (WriteStep, [CheckedContinuation<Void, Never>]) in
            let (buffer, room) = takeAll(&s)
            if let buffer { return (.write(buffer), room) }
            let closing = s.closed && !s.finishTaken
            if closing { s.finishTaken = true } else { s.writing = false }
            let finishedRoom = Array(s.roomWaiters.values)
            s.roomWaiters = [:]
            return (closing ? .finished(close: s.closeReason) : .idle, finishedRoom)
        }
        for w in room { w.resume() }
        return step
    }

    /// The attached writer is done: everything was written (or the socket failed) and the close
    /// frame, if any, was sent. Wakes `finished()`.
    func writerFinished() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            s.writing = true  // never schedule it again
            defer { s.finishWaiter = nil }
            return s.finishWaiter
        }
        waiter?.resume()
    }

    /// Waits until the attached writer finished (closed and everything written). Returns at
    /// once without an attached writer.
    func finished() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.sink == nil || s.finished { return true }
                s.finishWaiter = c
                return false
            }
            if now { c.resume() }
        }
    }

    /// The writer's next frames without an attached socket writer (tests); nil once closed and
    /// everything queued before was taken. Also returns the close code and reason to send, if
    /// the outbox closed for a reason.
    func take() async -> (frames: [String], close: (code: Int, reason: String)?)? {
        while true {
            let step = state.withLock { s -> (frames: ByteBuffer?, close: (code: Int, reason: String)?, room: [CheckedContinuation<Void, Never>], done: Bool)? in
                let (buffer, room) = takeAll(&s)
                if let buffer { return (buffer, nil, room, false) }
                if s.closed {
                    let room = Array(s.roomWaiters.values)
                    s.roomWaiters = [:]
                    return (nil, s.closeReason, room, true)
                }
                return nil
            }
            if let step {
                for w in step.room { w.resume() }
                if step.done { return step.close == nil ? nil : ([], step.close) }
                return (Self.texts(step.frames!), nil)
            }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.count > 0 || s.closed { return true }
                    s.writer = c
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    /// The frames queued now, without waiting (tests); room waiters are woken as by `take`.
    /// Dropped-broadcast notices are left for `take`.
    func takeAvailable() -> [String] {
        let (buffer, room) = state.withLock { s -> (ByteBuffer?, [CheckedContinuation<Void, Never>]) in
            guard s.count > 0, let buffer = s.buffer else { return (nil, []) }
            s.buffer = nil
            s.count = 0
            defer { s.roomWaiters = [:] }
            return (buffer, Array(s.roomWaiters.values))
        }
        for w in room { w.resume() }
        return buffer.map(Self.texts) ?? []
    }

    /// The texts of framed bytes (RealtimeSocketWriter's layout; tests and `take`).
    static func texts(_ buffer: ByteBuffer) -> [String] {
        var buffer = buffer
        var out: [String] = []
        while let _ = buffer.readInteger(as: UInt8.self), let second = buffer.readInteger(as: UInt8.self) {
            var size = Int(second & 0x7F)
            if size == 126 { size = Int(buffer.readInteger(as: UInt16.self) ?? 0) } else if size == 127 { size = Int(buffer.readInteger(as: UInt64.self) ?? 0) }
            guard let text = buffer.readString(length: size) else { break }
            out.append(text)
        }
        return out
    }

    /// Closes the outbox: frames already queued are still written, then the socket closes.
    func close(code: Int? = nil, reason: String = "") {
        let (wake, room, closing) = state.withLock { s -> (Wake, [CheckedContinuation<Void, Never>], (any RealtimeOutboxWriter)?) in
            if !s.closed, let code { s.closeReason = (code, reason) }
            let closing = s.closed ? nil : s.sink
            s.closed = true
            defer { s.roomWaiters = [:] }
            return (Self.wake(&s), Array(s.roomWaiters.values), closing)
        }
        closing?.closing()
        wake.run()
        for w in room { w.resume() }
    }

    /// The socket is gone (RealtimeChannelHandler, channel inactive): closed, what waits is
    /// dropped, and the writer is forgotten, so the outbox and its writer (which hold each
    /// other) and the closed channel are freed once the connection's tables let go.
    func detach() {
        let (room, waiter) = state.withLock { s -> ([CheckedContinuation<Void, Never>], CheckedContinuation<Void, Never>?) in
            s.closed = true
            s.sink = nil
            s.finished = true
            s.writing = true  // never schedule a writer again
            s.buffer = nil
            s.count = 0
            s.droppedBroadcasts = [:]
            defer {
                s.roomWaiters = [:]
                s.finishWaiter = nil
            }
            return (Array(s.roomWaiters.values), s.finishWaiter)
        }
        for w in room { w.resume() }
        waiter?.resume()
    }
}
