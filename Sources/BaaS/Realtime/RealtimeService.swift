// `/realtime/v1`: the Phoenix-channel WebSocket the Supabase clients use (supabase-wire §5) and
// the REST broadcast endpoint. One service per node; it owns the node's connections, the
// topic table (who joined which topic, for broadcast and presence) and the join rate.
//
// Invariants:
// - Connections, channels per connection, topics and presences are bounded (RealtimeLimits);
//   every table here shrinks when its connection goes.
// - Fan-out (broadcast, presence) only queues frames into each member's bounded outbox; it
//   never waits for a slow member (RealtimeOutbox).
// - postgres_changes never goes through this table: each subscription pulls the kernel's
//   change stream itself (RealtimeConnection), so realtime never slows a commit.
// - Broadcast and presence reach the members on this node only (docs/REALTIME.md "Cluster").

import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Kernel
import Logging
import NIOCore
import Synchronization

public final class RealtimeService: Sendable {
    let database: Database
    let keys: KeyChecker
    let engine = PolicyEngine()
    let logger: Logger

    struct Member: Sendable {
        let outbox: RealtimeOutbox
        let joinRef: String?
        let broadcastSelf: Bool
        let presenceEnabled: Bool
    }

    struct Presence: Sendable {
        let key: String
        let meta: [String: JSONValue]  // includes phx_ref
    }

    private struct Registry {
        var connections = 0
        var nextConnection = 0
        var topics: [String: [Int: Member]] = [:]
        var presences: [String: [Int: Presence]] = [:]
        var nextPresenceRef: UInt64 = 0
        var joinTokens = Double(RealtimeLimits.joinsPerSecondMax)
        var joinRefill = ContinuousClock.now
    }

    private let registry = Mutex(Registry())

    public init(database: Database, keys: KeyChecker, logger: Logger) {
        self.database = database
        self.keys = keys
        self.logger = logger
    }

    // MARK: HTTP

    /// The WebSocket upgrade decision (wire with `.http1WebSocketUpgrade`). Requests that are not
    /// a valid realtime upgrade fall through to the router, which answers them (401, 400, 404).
    public func shouldUpgrade(_ request: HTTPRequest) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let (path, query) = Self.split(request.path), path == "/realtime/v1/websocket" else { return .dontUpgrade }
        guard let version = RealtimeVersion(query["vsn"]), let key = query["apikey"],
              (try? keys.caller(token: key)) != nil else { return .dontUpgrade }
        guard registry.withLock({ $0.connections < RealtimeLimits.connectionsPerNodeMax }) else { return .dontUpgrade }
        return .upgrade([:]) { [self] inbound, outbound, _ in
            guard let id = reserveConnection() else {
                try await outbound.close(.init(codeNumber: 1013), reason: "too many connections on this node")
                return
            }
            defer { releaseConnection() }
            let connection = RealtimeConnection(id: id, service: self, version: version, apikey: key)
            await connection.run(inbound: inbound, outbound: outbound)
        }
    }

    static func split(_ target: String?) -> (String, [String: String])? {
        guard let target else { return nil }
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                let value = kv.count == 2 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
                if query.count < 16 { query[name] = value }
            }
        }
        return (String(parts[0]), query)
    }

    /// GET /realtime/v1/websocket without a valid upgrade, and the REST broadcast endpoint.
    public func register(on router: Router<AeroRequestContext>) {
        router.get("realtime/v1/websocket") { [self] request, _ in
            do {
                guard let key = request.uri.queryParameters.get("apikey") else {
                    throw AeroError(.unauthorized, "the apikey query parameter is required")
                }
                _ = try keys.caller(token: key)
                guard RealtimeVersion(request.uri.queryParameters.get("vsn")) != nil else {
                    throw RealtimeFrame.invalid("vsn must be 1.0.0 or 2.0.0")
                }
                if registry.withLock({ $0.connections >= RealtimeLimits.connectionsPerNodeMax }) {
                    throw AeroError(.realtimeLimit, "at most \(RealtimeLimits.connectionsPerNodeMax) realtime connections per node")
                }
                throw RealtimeFrame.invalid("this endpoint needs a WebSocket upgrade")
            } catch {
                return HTTPErrors.response(error)
            }
        }
        router.post("realtime/v1/api/broadcast") { [self] request, _ in
            await restBroadcastBatch(request)
        }
        router.post("realtime/v1/api/broadcast/:topic/events/:event") { [self] request, context in
            do {
                let caller = try keys.caller(request)
                let topic = try context.parameters.require("topic")
                let event = try context.parameters.require("event")
                let isPrivate = request.uri.queryParameters.get("private") == "true"
                let body = try await HTTPJSON.body(request)
                guard case .object = body else { throw RealtimeFrame.invalid("the broadcast payload is a JSON object") }
                try authorizeBroadcast(caller, isPrivate: isPrivate)
                deliverBroadcast(topic: "realtime:" + topic, event: event, payload: body, from: nil)
                return Response(status: .accepted)
            } catch {
                return HTTPErrors.response(error)
            }
        }
    }

    /// Supabase's batch form: {"messages":[{"topic","event","payload","private"?}]}.
    private func restBroadcastBatch(_ request: Request) async -> Response {
        do {
            let caller = try keys.caller(request)
            guard let messages = try await HTTPJSON.body(request)["messages"]?.arrayValue, messages.count <= 100 else {
                throw RealtimeFrame.invalid("the body is {\"messages\":[{\"topic\",\"event\",\"payload\"}]} with at most 100 messages")
            }
            for message in messages {
                guard let topic = message["topic"]?.stringValue, let event = message["event"]?.stringValue,
                      case .object? = message["payload"] else { throw RealtimeFrame.invalid("each message has topic, event and an object payload") }
                try authorizeBroadcast(caller, isPrivate: message["private"]?.boolValue ?? false)
                deliverBroadcast(topic: "realtime:" + topic, event: event, payload: message["payload"]!, from: nil)
            }
            return Response(status: .accepted)
        } catch {
            return HTTPErrors.response(error)
        }
    }

    /// Private channels: a signed-in user or the service role (policies on channel messages are
    /// not built; docs/REALTIME.md).
    func authorizeBroadcast(_ caller: Caller, isPrivate: Bool) throws {
        if isPrivate && caller.role == "anon" {
            throw AeroError(.forbidden, "Unauthorized: private channels need a signed-in user or the service role")
        }
    }

    // MARK: Connections and topics

    /// Open realtime connections on this node (the `aerodb_realtime_connections` gauge).
    public var connectionCount: Int { registry.withLock { $0.connections } }

    private func reserveConnection() -> Int? {
        registry.withLock { r in
            guard r.connections < RealtimeLimits.connectionsPerNodeMax else { return nil }
            r.connections += 1
            r.nextConnection += 1
            return r.nextConnection
        }
    }

    private func releaseConnection() { registry.withLock { $0.connections -= 1 } }

    /// Takes one join from the node's budget (token bucket).
    func takeJoin() -> Bool {
        registry.withLock { r in
            let now = ContinuousClock.now
            let elapsed = Double((now - r.joinRefill).components.attoseconds) / 1e18 + Double((now - r.joinRefill).components.seconds)
            r.joinRefill = now
            r.joinTokens = min(Double(RealtimeLimits.joinsPerSecondMax), r.joinTokens + elapsed * Double(RealtimeLimits.joinsPerSecondMax))
            guard r.joinTokens >= 1 else { return false }
            r.joinTokens -= 1
            return true
        }
    }

    func join(topic: String, connection: Int, member: Member) {
        registry.withLock { $0.topics[topic, default: [:]][connection] = member }
    }

    /// Removes the connection from the topic; returns the presence diff to send, if any.
    func leave(topic: String, connection: Int) {
        let (left, members) = registry.withLock { r -> (Presence?, [Member]) in
            r.topics[topic]?[connection] = nil
            if r.topics[topic]?.isEmpty == true { r.topics[topic] = nil }
            let left = r.presences[topic]?.removeValue(forKey: connection)
            if r.presences[topic]?.isEmpty == true { r.presences[topic] = nil }
            return (left, Array(r.topics[topic]?.values ?? [:].values))
        }
        if let left { sendDiff(topic: topic, joins: [], leaves: [left], to: members) }
    }

    func deliverBroadcast(topic: String, event: String, payload: JSONValue, from connection: Int?) {
        let members = registry.withLock { r in
            (r.topics[topic] ?? [:]).filter { $0.key != connection || $0.value.broadcastSelf }.map(\.value)
        }
        for member in members {
            member.outbox.pushDroppable(RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "broadcast",
                                                      payload: .object(["type": .string("broadcast"), "event": .string(event),
                                                                        "payload": payload])))
        }
    }

    /// Tracks (or re-tracks) this connection's presence on the topic: leave of the old meta,
    /// join of the new, to every presence member (the sender too).
    func track(topic: String, connection: Int, key: String, state: [String: JSONValue]) throws {
        let (old, new, members) = try registry.withLock { r -> (Presence?, Presence, [Member]) in
            let current = r.presences[topic] ?? [:]
            guard current[connection] != nil || current.count < RealtimeLimits.presencesPerTopicMax else {
                throw AeroError(.realtimeLimit, "at most \(RealtimeLimits.presencesPerTopicMax) presences per topic on one node")
            }
            r.nextPresenceRef += 1
            var meta = state
            meta["phx_ref"] = .string(String(r.nextPresenceRef))
            let old = current[connection]
            if let old, case .string(let prev)? = old.meta["phx_ref"] { meta["phx_ref_prev"] = .string(prev) }
            let new = Presence(key: key, meta: meta)
            r.presences[topic, default: [:]][connection] = new
            return (old, new, Array((r.topics[topic] ?? [:]).values))
        }
        sendDiff(topic: topic, joins: [new], leaves: old.map { [$0] } ?? [], to: members)
    }

    func untrack(topic: String, connection: Int) {
        let (left, members) = registry.withLock { r -> (Presence?, [Member]) in
            let left = r.presences[topic]?.removeValue(forKey: connection)
            return (left, Array((r.topics[topic] ?? [:]).values))
        }
        if let left { sendDiff(topic: topic, joins: [], leaves: [left], to: members) }
    }

    /// `{key: {metas: [...]}}` of every presence on the topic.
    func presenceState(topic: String) -> JSONValue {
        let presences = registry.withLock { Array(($0.presences[topic] ?? [:]).values) }
        return Self.grouped(presences)
    }

    static func grouped(_ presences: [Presence]) -> JSONValue {
        var out: [String: [JSONValue]] = [:]
        for p in presences { out[p.key, default: []].append(.object(p.meta)) }
        return .object(out.mapValues { .object(["metas": .array($0)]) })
    }

    private func sendDiff(topic: String, joins: [Presence], leaves: [Presence], to members: [Member]) {
        var leavesMeta = leaves
        // A re-track's leave carries the old meta without phx_ref_prev.
        leavesMeta = leavesMeta.map { Presence(key: $0.key, meta: $0.meta.filter { $0.key != "phx_ref_prev" }) }
        let frame = RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "presence_diff",
                                  payload: .object(["joins": Self.grouped(joins), "leaves": Self.grouped(leavesMeta)]))
        for member in members where member.presenceEnabled { member.outbox.pushDroppable(frame) }
    }
}
