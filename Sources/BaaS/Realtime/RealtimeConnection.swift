// One WebSocket connection of `/realtime/v1`: its channels, frames in, frames out.
//
// No task per connection: RealtimeChannelHandler reads the client's frames on the channel's
// event loop and calls `received` with each whole message (in order, synchronously: a join's
// checks and policy compilation run there, bounded by joinsPerSecondMax per node), and it writes
// the bounded RealtimeOutbox to the socket (everything queued in one write and one flush); the
// service's one ticker calls `tick` (idle timeout, token expiry).
// postgres_changes are queued by the node's shared reader (ChangeFanout); a channel has a task
// of its own only while it catches up (a resume, or after its outbox was full). State lives
// in one Mutex; no I/O under it.
//
// Invariants:
// - Every client frame is answered or dropped in order: a malformed, unknown or oversized frame
//   gets an error reply or a close code, never a crash, and never blocks another connection.
// - postgres_changes are delivered in LSN order with no gap and no repeat (RT1, ChangeFanout):
//   a full outbox moves the channel to its own pump, which catches up from the WAL; the WAL no
//   longer holding its cursor is reported with a `system` message naming the missed LSN range.
// - A channel's token is checked as REST checks it (KeyChecker) at join and on `access_token`;
//   when it expires, the channel gets a `system` error and is closed.
// - `inputEnded` (once per connection) leaves every channel and releases the connection's slot.

import Foundation
import NIOCore
import Kernel
import Synchronization

final class RealtimeConnection: RealtimeSocketPeer {
    let id: Int
    let service: RealtimeService
    let version: RealtimeVersion
    let apikey: String
    let outbox: RealtimeOutbox

    private struct Channel {
        let topic: String
        let key: TopicKey
        /// Private channels: the member's authorization (RealtimeAccess).
        let access: ChannelAccess?
        let joinRef: String?
        var caller: Caller
        var token: String
        let presenceKey: String
        let presenceEnabled: Bool
        let broadcastAck: Bool
        let subscription: ChangeSubscription?
    }

    private struct State {
        var channels: [String: Channel] = [:]
        var lastSeen = ContinuousClock.now
        var frameTokens = Double(RealtimeLimits.framesPerSecondPerConnectionMax)
        var frameRefill = ContinuousClock.now
        var overRate = 0
    }

    private let state = Mutex(State())

    init(id: Int, service: RealtimeService, version: RealtimeVersion, apikey: String) {
        self.id = id
        self.service = service
        self.version = version
        self.apikey = apikey
        self.outbox = RealtimeOutbox(version: version)
    }

    // MARK: Socket (RealtimeSocketPeer)

    /// One whole client message, on the channel's event loop (RealtimeChannelHandler), in order.
    func received(_ message: RealtimeSocketMessage) {
        guard !outbox.isClosed, takeFrameToken() else { return }
        let frame: RealtimeFrame
        do {
            switch message {
            case .text(let text): frame = try RealtimeFrame.parse(text: text, version)
            case .binary(let bytes): frame = try RealtimeFrame.parse(binary: bytes, version)
            }
        } catch {
            // No topic or ref to answer to: a phx_error on the socket topic.
            outbox.push(RealtimeFrame(joinRef: nil, ref: nil, topic: "phoenix", event: "phx_error",
                                      payload: .object(["reason": .string(AeroError.wrap(error).message)])), .control)
            return
        }
        do {
            try handle(frame)
        } catch {
            outbox.push(RealtimeFrame.errorReply(frame, AeroError.wrap(error)), .control)
        }
    }

    /// The client's input ended (close frame, EOF, error, channel closed): the channels leave,
    /// the outbox closes (what is queued is still written) and the connection's slot is freed.
    func inputEnded() {
        closeAllChannels()
        outbox.close()
        service.releaseConnection(id)
    }

    /// The connection's frame budget (token bucket); far over it, the socket closes (1008).
    private func takeFrameToken() -> Bool {
        let (ok, close) = state.withLock { s -> (Bool, Bool) in
            let now = ContinuousClock.now
            let elapsed = now - s.frameRefill
            s.frameRefill = now
            s.lastSeen = now
            let rate = Double(RealtimeLimits.framesPerSecondPerConnectionMax)
            s.frameTokens = min(rate, s.frameTokens + (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * rate)
            guard s.frameTokens >= 1 else {
                s.overRate += 1
                return (false, s.overRate > RealtimeLimits.framesPerSecondPerConnectionMax)
            }
            s.frameTokens -= 1
            s.overRate = 0
            return (true, false)
        }
        if close { outbox.close(code: 1008, reason: "more than \(RealtimeLimits.framesPerSecondPerConnectionMax) frames per second") }
        return ok
    }

    // MARK: Frames

    private func handle(_ frame: RealtimeFrame) throws {
        if frame.topic == "phoenix" {
            guard frame.event == "heartbeat" else { throw RealtimeFrame.invalid("unknown event \(frame.event) on topic phoenix") }
            outbox.push(RealtimeFrame.reply(frame, ok: true), .control)
            return
        }
        if frame.event == "phx_join" { return try join(frame) }
        guard let channel = state.withLock({ $0.channels[frame.topic] }) else {
            outbox.push(RealtimeFrame.reply(frame, ok: false, .object(["reason": .string("unmatched topic")])), .control)
            return
        }
        switch frame.event {
        case "phx_leave":
            outbox.push(RealtimeFrame.reply(frame, ok: true), .control)
            close(frame.topic)
            outbox.push(RealtimeFrame(joinRef: channel.joinRef, ref: frame.ref, topic: frame.topic, event: "phx_close",
                                      payload: .object([:])), .control)
        case "broadcast":
            guard case .object(let body) = frame.payload, case .string(let event)? = body["event"] else {
                throw RealtimeFrame.invalid("a broadcast is {\"type\":\"broadcast\",\"event\":str,\"payload\":object}")
            }
            let payload = body["payload"] ?? .object([:])
            guard case .object = payload else { throw RealtimeFrame.invalid("a broadcast payload is a JSON object") }
            if let access = channel.access, !(try access.check(.write, .broadcast)) {
                throw ChannelAccess.denied(.write, topic: access.topic)
            }
            service.deliverBroadcast(channel.key, event: event, payload: payload, from: id)
            if channel.broadcastAck { outbox.push(RealtimeFrame.reply(frame, ok: true), .control) }
        case "presence":
            guard case .string(let event)? = frame.payload["event"] else { throw RealtimeFrame.invalid("presence needs event track or untrack") }
            switch event {
            case "track":
                let payload = frame.payload["payload"] ?? .object([:])
                guard case .object(let meta) = payload else { throw RealtimeFrame.invalid("a presence state is a JSON object") }
                guard JSON.encode(payload).count <= RealtimeLimits.presencePayloadBytesMax else {
                    throw AeroError(.realtimeLimit, "a presence state is at most \(RealtimeLimits.presencePayloadBytesMax) bytes")
                }
                if let access = channel.access, !(try access.check(.write, .presence)) {
                    throw ChannelAccess.denied(.write, topic: access.topic)
                }
                try service.track(channel.key, connection: id, presenceKey: channel.presenceKey, state: meta)
            case "untrack":
                service.untrack(channel.key, connection: id)
            default:
                throw RealtimeFrame.invalid("presence event must be track or untrack")
            }
            outbox.push(RealtimeFrame.reply(frame, ok: true), .control)
        case "access_token":
            guard case .string(let token)? = frame.payload["access_token"] else {
                throw RealtimeFrame.invalid("access_token needs {\"access_token\": str}")
            }
            try refreshToken(topic: frame.topic, token: token, frame: frame)
        default:
            throw RealtimeFrame.invalid("unknown event \(frame.event.prefix(64))")
        }
    }

    private func join(_ frame: RealtimeFrame) throws {
        let topic = frame.topic
        guard topic.hasPrefix("realtime:"), topic.utf8.count - 9 <= RealtimeLimits.topicBytesMax, topic.utf8.count > 9 else {
            throw RealtimeFrame.invalid("a topic is realtime:<name> with a name of 1 to \(RealtimeLimits.topicBytesMax) bytes")
        }
        guard service.takeJoin() else {
            throw AeroError(.realtimeLimit, "ClientJoinRateLimitReached: more than \(RealtimeLimits.joinsPerSecondMax) joins per second on this node")
        }
        let count = state.withLock { s in s.channels[topic] == nil ? s.channels.count : 0 }
        guard count < RealtimeLimits.channelsPerConnectionMax else {
            throw AeroError(.realtimeLimit, "ChannelRateLimitReached: at most \(RealtimeLimits.channelsPerConnectionMax) channels per connection")
        }
        let token = frame.payload["access_token"]?.stringValue ?? apikey
        let caller: Caller
        do { caller = try service.keys.caller(token: token) } catch {
            throw AeroError(.unauthorized, "Unauthorized: \(AeroError.wrap(error).message)")
        }
        let config = frame.payload["config"] ?? .object([:])
        let broadcast = config["broadcast"] ?? .object([:])
        let presence = config["presence"] ?? .object([:])
        let isPrivate = config["private"]?.boolValue ?? false
        let key = TopicKey(topic: topic, isPrivate: isPrivate)
        var access: ChannelAccess?
        if isPrivate {
            // Joining needs the select policy to admit broadcast or presence messages of the topic.
            let checked = ChannelAccess(topic: String(topic.dropFirst(9)), caller: caller, service: service)
            guard try checked.check(.read, .broadcast) || checked.check(.read, .presence) else {
                throw ChannelAccess.denied(.read, topic: checked.topic)
            }
            access = checked
        }
        let rawBindings = config["postgres_changes"]?.arrayValue ?? []
        guard rawBindings.count <= RealtimeLimits.bindingsPerChannelMax else {
            throw AeroError(.realtimeLimit, "at most \(RealtimeLimits.bindingsPerChannelMax) postgres_changes bindings per channel")
        }
        let bindings = try rawBindings.map { try ChangeBinding.parse($0, database: service.database) }
        let resume = try Self.resumeLSN(config["resume_after_lsn"])
        var presenceKey = presence["key"]?.stringValue ?? ""
        if presenceKey.isEmpty { presenceKey = UUID().uuidString.lowercased() }
        guard presenceKey.utf8.count <= 256 else { throw RealtimeFrame.invalid("presence key is at most 256 bytes") }
        let presenceEnabled = presence["enabled"]?.boolValue ?? false

        close(topic)  // a join on a joined topic replaces the channel (as Phoenix does)
        let fanout = service.fanout
        let subscription = bindings.isEmpty ? nil
            : ChangeSubscription(id: fanout.nextID(), topic: topic, bindings: bindings, caller: caller, outbox: outbox,
                                 database: service.database, engine: service.engine, filters: fanout.filters)
        // The reply is queued before the subscription starts: no event can precede it.
        outbox.push(RealtimeFrame.reply(frame, ok: true, .object(["postgres_changes": .array(bindings.map(\.reply))])), .control)
        var subscribed = false
        if subscription != nil {
            let database = service.database
            let oldest = database.oldestLSN
            if let resume, resume < oldest &- 1, oldest > 0 {
                outbox.push(RealtimeFrame.system(topic: topic, extension: "postgres_changes", ok: false,
                                                 "resume_after_lsn \(resume) is older than the oldest retained LSN \(oldest): resume after \(oldest - 1) or later (the changes in between are gone)",
                                                 extra: ["oldest_lsn": .string(String(oldest)), "code": .string(AeroError.Code.lsnUnavailable.rawValue)]),
                            .control)
            } else {
                outbox.push(RealtimeFrame.system(topic: topic, extension: "postgres_changes", ok: true, "Subscribed to PostgreSQL"), .control)
                subscribed = true
            }
        }
        let channel = Channel(topic: topic, key: key, access: access, joinRef: frame.joinRef, caller: caller, token: token, presenceKey: presenceKey,
                              presenceEnabled: presenceEnabled, broadcastAck: broadcast["ack"]?.boolValue ?? false,
                              subscription: subscribed ? subscription : nil)
        state.withLock { $0.channels[topic] = channel }
        if subscribed, let subscription {
            // Live at once, or (a resume) through its own pump until it has caught up (ChangeFanout).
            fanout.subscribe(subscription, after: resume ?? service.database.releasedLSN)
        }
        let member = RealtimeService.Member(outbox: outbox, joinRef: frame.joinRef, broadcastSelf: broadcast["self"]?.boolValue ?? false,
                                            presenceEnabled: presenceEnabled, access: access)
        service.join(key, connection: id, member: member)
        if member.receivesPresence {
            outbox.push(RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "presence_state",
                                      payload: service.presenceState(key)), .control)
        }
    }

    /// `config.resume_after_lsn`: a decimal string or an integer, at most KernelLimits.lsnMax.
    static func resumeLSN(_ value: JSONValue?) throws -> UInt64? {
        switch value {
        case nil, .null?: return nil
        case .int(let i)? where i >= 0: return min(UInt64(i), KernelLimits.lsnMax)
        case .string(let s)?:
            guard let n = UInt64(s) else { throw RealtimeFrame.invalid("resume_after_lsn is a decimal LSN") }
            return min(n, KernelLimits.lsnMax)
        default: throw RealtimeFrame.invalid("resume_after_lsn is a decimal LSN")
        }
    }

    private func refreshToken(topic: String, token: String, frame: RealtimeFrame) throws {
        guard let channel = state.withLock({ $0.channels[topic] }) else { return }
        if channel.token == token {
            outbox.push(RealtimeFrame.reply(frame, ok: true), .control)
            return
        }
        let caller: Caller
        do { caller = try service.keys.caller(token: token) } catch {
            expire(topic, reason: "Invalid token: \(AeroError.wrap(error).message)")
            throw AeroError(.unauthorized, "Unauthorized: \(AeroError.wrap(error).message)")
        }
        state.withLock { s in
            s.channels[topic]?.caller = caller
            s.channels[topic]?.token = token
        }
        channel.subscription?.setCaller(caller)
        channel.access?.setCaller(caller)
        outbox.push(RealtimeFrame.reply(frame, ok: true), .control)
    }

    // MARK: Lifecycle

    /// Idle timeout and token expiry, called every second by the service's one ticker (no task
    /// per connection).
    func tick() {
        let now = ContinuousClock.now
        let nowSeconds = Double(service.keys.clock.nowMicros()) / 1e6
        let (idle, expired) = state.withLock { s -> (Bool, [String]) in
            let idle = now - s.lastSeen > .seconds(RealtimeLimits.idleTimeoutSeconds)
            let expired = s.channels.values.filter { ($0.caller.claims["exp"]?.numberValue ?? .infinity) <= nowSeconds }.map(\.topic)
            return (idle, expired)
        }
        for topic in expired { expire(topic, reason: "Token has expired") }
        if idle { outbox.close(code: 1000, reason: "no heartbeat for \(RealtimeLimits.idleTimeoutSeconds) s") }
    }

    /// A `system` error and phx_close for the channel, which is closed.
    private func expire(_ topic: String, reason: String) {
        guard let channel = state.withLock({ $0.channels[topic] }) else { return }
        outbox.push(RealtimeFrame.system(topic: topic, extension: "system", ok: false, reason), .control)
        close(topic)
        outbox.push(RealtimeFrame(joinRef: channel.joinRef, ref: nil, topic: topic, event: "phx_close", payload: .object([:])), .control)
    }

    private func close(_ topic: String) {
        guard let channel = state.withLock({ $0.channels.removeValue(forKey: topic) }) else { return }
        if let subscription = channel.subscription { service.fanout.remove(subscription) }
        service.leave(channel.key, connection: id)
    }

    private func closeAllChannels() {
        let topics = state.withLock { Array($0.channels.keys) }
        for topic in topics { close(topic) }
    }
}
