// The frames waiting to be written to one WebSocket connection: a bounded queue with one writer.
//
// Policy (docs/REALTIME.md "Backpressure"):
// - Events (postgres_changes, broadcast, presence) enter while fewer than
//   RealtimeLimits.outboundEventsMax frames wait. postgres_changes are not dropped: when one
//   transaction's frames do not fit, the subscription leaves the node's shared reader with its
//   cursor before that transaction, waits for room and catches up from the WAL (ChangeFanout). Broadcasts and presence diffs are not in the WAL: they are dropped and counted
//   per topic; once the queue has drained to half, a `system` message says how many were lost.
// - Replies and system messages may use RealtimeLimits.outboundControlHeadroom more; past that
//   the client reads nothing at all and the connection is closed (1008).
// Invariants: the queue never holds more than outboundEventsMax + outboundControlHeadroom
// frames; no I/O under the lock; waiters are resumed outside it.

import Synchronization

final class RealtimeOutbox: Sendable {
    enum Kind { case event, control }

    private struct State {
        var frames: [String] = []
        var head = 0
        var closed = false
        var closeReason: (code: Int, reason: String)?
        var writer: CheckedContinuation<Void, Never>?
        var roomWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        var droppedBroadcasts: [String: Int] = [:]

        var count: Int { frames.count - head }
    }

    private let state = Mutex(State())
    let version: RealtimeVersion

    init(version: RealtimeVersion) { self.version = version }

    var isClosed: Bool { state.withLock { $0.closed } }

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
        let (accepted, wake) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !s.closed, s.count + texts.count <= RealtimeLimits.outboundEventsMax else { return (false, nil) }
            s.frames.append(contentsOf: texts)
            let w = s.writer
            s.writer = nil
            return (true, w)
        }
        wake?.resume()
        return accepted
    }

    private func push(text: String, _ kind: Kind) -> Bool {
        let (accepted, wake) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !s.closed else { return (false, nil) }
            let limit = RealtimeLimits.outboundEventsMax + (kind == .control ? RealtimeLimits.outboundControlHeadroom : 0)
            guard s.count < limit else {
                if kind == .control {
                    s.closed = true
                    s.closeReason = (1008, "client is not reading its messages")
                    let w = s.writer
                    s.writer = nil
                    return (false, w)
                }
                return (false, nil)
            }
            s.frames.append(text)
            let w = s.writer
            s.writer = nil
            return (true, w)
        }
        wake?.resume()
        return accepted
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

    /// The writer's next frames; nil once closed and everything queued before was taken.
    /// Also returns the close code and reason to send, if the outbox closed for a reason.
    func take() async -> (frames: [String], close: (code: Int, reason: String)?)? {
        while true {
            let step = state.withLock { s -> (frames: [String], close: (code: Int, reason: String)?, room: [CheckedContinuation<Void, Never>], done: Bool)? in
                if s.count > 0 {
                    let out = Array(s.frames[s.head...])
                    s.frames = []
                    s.head = 0
                    var notices: [String] = []
                    for (topic, dropped) in s.droppedBroadcasts {
                        let notice = RealtimeFrame.system(topic: topic, extension: "broadcast", ok: true,
                                                          "\(dropped) broadcast/presence message(s) dropped: this client read too slowly",
                                                          extra: ["dropped": .int(Int64(dropped))])
                        notices.append(notice.encoded(version))
                    }
                    s.droppedBroadcasts = [:]
                    let room = Array(s.roomWaiters.values)
                    s.roomWaiters = [:]
                    return (out + notices, nil, room, false)
                }
                if s.closed {
                    let room = Array(s.roomWaiters.values)
                    s.roomWaiters = [:]
                    return ([], s.closeReason, room, true)
                }
                return nil
            }
            if let step {
                for w in step.room { w.resume() }
                if step.done { return step.close == nil ? nil : ([], step.close) }
                return (step.frames, nil)
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
        let (out, room) = state.withLock { s -> ([String], [CheckedContinuation<Void, Never>]) in
            guard s.count > 0 else { return ([], []) }
            let out = Array(s.frames[s.head...])
            s.frames = []
            s.head = 0
            defer { s.roomWaiters = [:] }
            return (out, Array(s.roomWaiters.values))
        }
        for w in room { w.resume() }
        return out
    }

    /// Closes the outbox: frames already queued are still written, then the socket closes.
    func close(code: Int? = nil, reason: String = "") {
        let (writer, room) = state.withLock { s -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            if !s.closed, let code { s.closeReason = (code, reason) }
            s.closed = true
            defer { s.writer = nil; s.roomWaiters = [:] }
            return (s.writer, Array(s.roomWaiters.values))
        }
        writer?.resume()
        for w in room { w.resume() }
    }
}
