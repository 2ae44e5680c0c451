// `/realtime/v1`: the Phoenix-channel WebSocket the Supabase clients use (supabase-wire §5) and
// the REST broadcast endpoint. One service per node; it owns the node's connections, the
// topic table (who joined which topic, for broadcast and presence) and the join rate.
//
// Invariants:
// - Connections, channels per connection, topics and presences are bounded (RealtimeLimits);
//   every table here shrinks when its connection goes.
// - Fan-out (broadcast, presence) only queues frames into each member's bounded outbox; it
//   never waits for a slow member (RealtimeOutbox).
// - postgres_changes never goes through this table: one shared reader per node (ChangeFanout)
//   pulls the kernel's change stream and queues frames for the subscriptions it may match;
//   it never waits for a subscriber, so realtime never slows a commit.
// - Broadcast and presence reach the members of the topic on every node: what happens here is
//   queued once per other member (RealtimeRelay, bounded); what another member relays is
//   delivered here like a local message, never relayed again. The presences of another member
//   are kept per origin and dropped when it is not heard from for peerPresenceTimeoutSeconds.
// - Private and public channels of one name are separate topics (TopicKey); private ones are
//   authorized per member by the policies of `realtime_messages` (RealtimeAccess).

import Foundation
import HTTPTypes
import Hummingbird
import NIOWebSocket
import Kernel
import Logging
import NIOCore
import Synchronization

/// A topic as the registry keys it: a private channel and a public one of the same name are
/// separate topics.
struct TopicKey: Hashable, Sendable {
    let topic: String  // "realtime:<name>", as on the wire
    let isPrivate: Bool

    var json: [String: JSONValue] { ["topic": .string(topic), "private": .bool(isPrivate)] }

    init(topic: String, isPrivate: Bool) {
        self.topic = topic
        self.isPrivate = isPrivate
    }

    init?(_ message: JSONValue) {
        guard let topic = message["topic"]?.stringValue, topic.hasPrefix("realtime:"),
              topic.utf8.count - 9 <= RealtimeLimits.topicBytesMax else { return nil }
        self.init(topic: topic, isPrivate: message["private"]?.boolValue ?? false)
    }
}

public final class RealtimeService: Sendable {
    let database: Database
    let keys: KeyChecker
    let engine = PolicyEngine()
    let logger: Logger
    let peers: RealtimePeers
    /// postgres_changes: the node's shared change reader and its subscription index.
    let fanout: ChangeFanout
    /// `<random>@<start micros>`, new per process start: a receiver that sees a new one asks
    /// for a presence snapshot, and refuses batches of an earlier one (replayed or delayed).
    let incarnation: String
    private let links: [RelayLink]
    private let generation = Atomic<UInt64>(0)

    /// Bumped when a released transaction touches policies or schemas (RealtimeAccess caches).
    var policyGeneration: UInt64 { generation.load(ordering: .acquiring) }

    struct Member: Sendable {
        let outbox: RealtimeOutbox
        let joinRef: String?
        let broadcastSelf: Bool
        let presenceEnabled: Bool
        /// Private channels only.
        let access: ChannelAccess?

        var receivesBroadcast: Bool { access?.allows(.read, .broadcast) ?? true }
        var receivesPresence: Bool { presenceEnabled && (access?.allows(.read, .presence) ?? true) }
    }

    struct Presence: Sendable {
        let key: String
        let meta: [String: JSONValue]  // includes phx_ref
        /// A local presence: its size in a relay snapshot (counted against presenceBytesPerNodeMax).
        var bytes = 0
    }

    /// The newest incarnation heard from a member and its last batch, kept while the member's
    /// presences are swept (a replay after a sweep is still recognised).
    private struct Known {
        var incarnation: String
        var started: Int64
        var seq: Int64
    }

    /// What another member relayed: its presences, kept while it is heard from.
    private struct Origin {
        var incarnation: String
        var seq: Int64
        /// false until a snapshot arrived for this incarnation (or after a gap).
        var synced: Bool
        var lastHeard: ContinuousClock.Instant
        var presences: [TopicKey: [Int: Presence]] = [:]
    }

    private struct Registry {
        var connections = 0
        var nextConnection = 0
        /// The open connections (bounded by connectionsPerNodeMax), for the one ticker.
        var open: [Int: RealtimeConnection] = [:]
        var topics: [TopicKey: [Int: Member]] = [:]
        var presences: [TopicKey: [Int: Presence]] = [:]
        var origins: [String: Origin] = [:]
        var known: [String: Known] = [:]
        /// This node's presences, all topics: bounded so a relay snapshot of them always fits.
        var localPresences = 0
        var localPresenceBytes = 0

        mutating func removeLocal(_ key: TopicKey, _ connection: Int) -> Presence? {
            guard let left = presences[key]?.removeValue(forKey: connection) else { return nil }
            if presences[key]?.isEmpty == true { presences[key] = nil }
            localPresences -= 1
            localPresenceBytes -= left.bytes
            return left
        }
        var nextPresenceRef: UInt64 = 0
        var joinTokens = Double(RealtimeLimits.joinsPerSecondMax)
        var joinRefill = ContinuousClock.now
    }

    private let registry = Mutex(Registry())

    public init(database: Database, keys: KeyChecker, logger: Logger, peers: RealtimePeers = .alone) {
        self.database = database
        self.keys = keys
        self.logger = logger
        self.peers = peers
        fanout = ChangeFanout(database: database, logger: logger)
        incarnation = UUID().uuidString.lowercased() + "@" + String(keys.clock.nowMicros())
        links = peers.others.map(RelayLink.init(address:))
    }

    /// The node's background work: the shared postgres_changes reader, the connections' ticker,
    /// one relay sender per other member, the sweep of members not heard from, and the policy
    /// watcher. Cancel the task to stop them.
    public func start() -> Task<Void, Never> {
        Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                for link in links { group.addTask { await RealtimeRelay.runSender(link, service: self) } }
                group.addTask { await self.sweepOrigins() }
                group.addTask { await self.watchPolicies() }
                group.addTask { await self.fanout.run() }
                group.addTask { await self.tickConnections() }
            }
        }
    }

    // MARK: HTTP

    /// An accepted upgrade: the connection's protocol version and key.
    struct Upgrade: Sendable {
        let version: RealtimeVersion
        let apikey: String
    }

    /// The WebSocket upgrade decision (RealtimeHTTPChannel, on the event loop, synchronous).
    /// Requests that are not a valid realtime upgrade are refused (400); a plain GET of the same
    /// URL falls through to the router, which says why (401, 400, 429).
    func upgrade(target: String) -> Upgrade? {
        guard let (path, query) = Self.split(target), path == "/realtime/v1/websocket" else { return nil }
        guard let version = RealtimeVersion(query["vsn"]), let key = query["apikey"],
              (try? keys.caller(token: key)) != nil else { return nil }
        guard registry.withLock({ $0.connections < RealtimeLimits.connectionsPerNodeMax }) else { return nil }
        return Upgrade(version: version, apikey: key)
    }

    /// After the 101 response, on the channel's event loop: the connection and its handler
    /// (RealtimeChannelHandler) take over the channel; no task is left for it. A node that
    /// reached connectionsPerNodeMax since the decision closes it with 1013.
    func serve(_ channel: any Channel, _ upgrade: Upgrade) throws {
        Self.trimReadBuffers(channel, logger: logger)
        guard let id = reserveConnection() else {
            var close = channel.allocator.buffer(capacity: 40)
            let reason = "too many connections on this node"
            RealtimeChannelHandler.appendHeader(opcode: 0x88, size: 2 + reason.utf8.count, to: &close)
            close.writeInteger(UInt16(1013))
            close.writeString(reason)
            let encoder = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
            encoder.writeAndFlush(NIOAny(close)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        let connection = RealtimeConnection(id: id, service: self, version: upgrade.version, apikey: upgrade.apikey)
        let handler = RealtimeChannelHandler(peer: connection, outbox: connection.outbox, eventLoop: channel.eventLoop)
        do {
            try channel.pipeline.syncOperations.addHandler(handler)
        } catch {
            releaseConnection(id)
            throw error
        }
        registry.withLock { $0.open[id] = connection }
        connection.outbox.attach(handler)
    }

    /// Most of a node's realtime connections are idle subscribers that send little (a join, a
    /// heartbeat every 25 s), yet NIO keeps up to `maxMessagesPerRead` (4) pooled read buffers of
    /// 2,048 bytes or more per channel: a realtime channel keeps one, and a new one starts at
    /// RealtimeLimits.readBufferInitialBytes (it still grows for a big frame). Set on the event
    /// loop, at the upgrade. Memory only: a failure is logged and the connection goes on with
    /// NIO's defaults.
    static func trimReadBuffers(_ channel: any Channel, logger: Logger) {
        do {
            guard let options = channel.syncOptions else { return }
            try options.setOption(ChannelOptions.maxMessagesPerRead, value: 1)
            try options.setOption(ChannelOptions.recvAllocator,
                                  value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: RealtimeLimits.readBufferInitialBytes,
                                                                         maximum: 65_536))
        } catch {
            logger.debug("realtime: read buffer options not set", metadata: ["error": "\(error)"])
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

    /// GET /realtime/v1/websocket without a valid upgrade, the REST broadcast endpoint and the
    /// members' relay.
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
                let key = try Self.restTopic(topic, isPrivate: isPrivate)
                try authorizeSend(caller, key)
                deliverBroadcast(key, event: event, payload: body, from: nil)
                return Response(status: .accepted)
            } catch {
                return HTTPErrors.response(error)
            }
        }
        router.post("realtime/v1/internal/relay") { [self] request, _ in
            await RealtimeRelay.receive(request, service: self)
        }
    }

    static func restTopic(_ name: String, isPrivate: Bool) throws -> TopicKey {
        guard !name.isEmpty, name.utf8.count <= RealtimeLimits.topicBytesMax else {
            throw RealtimeFrame.invalid("a topic is 1 to \(RealtimeLimits.topicBytesMax) bytes")
        }
        return TopicKey(topic: "realtime:" + name, isPrivate: isPrivate)
    }

    /// Supabase's batch form: {"messages":[{"topic","event","payload","private"?}]}.
    private func restBroadcastBatch(_ request: Request) async -> Response {
        do {
            let caller = try keys.caller(request)
            guard let messages = try await HTTPJSON.body(request)["messages"]?.arrayValue, messages.count <= 100 else {
                throw RealtimeFrame.invalid("the body is {\"messages\":[{\"topic\",\"event\",\"payload\"}]} with at most 100 messages")
            }
            var checked: [(TopicKey, String, JSONValue)] = []
            for message in messages {
                guard let topic = message["topic"]?.stringValue, let event = message["event"]?.stringValue,
                      case .object? = message["payload"] else { throw RealtimeFrame.invalid("each message has topic, event and an object payload") }
                let key = try Self.restTopic(topic, isPrivate: message["private"]?.boolValue ?? false)
                try authorizeSend(caller, key)
                checked.append((key, event, message["payload"]!))
            }
            for (key, event, payload) in checked { deliverBroadcast(key, event: event, payload: payload, from: nil) }
            return Response(status: .accepted)
        } catch {
            return HTTPErrors.response(error)
        }
    }

    /// A broadcast sent through REST: on a private topic, the caller's insert policy on
    /// `realtime_messages` must admit it.
    func authorizeSend(_ caller: Caller, _ key: TopicKey) throws {
        guard key.isPrivate else { return }
        let name = String(key.topic.dropFirst(9))
        guard try ChannelAccess.decide(caller: caller, topic: name, .write, .broadcast, database: database, engine: engine) else {
            throw ChannelAccess.denied(.write, topic: name)
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

    func releaseConnection(_ id: Int) {
        registry.withLock { r in
            r.connections -= 1
            r.open[id] = nil
        }
    }

    /// Every second: each open connection checks its idle time and its channels' tokens.
    private func tickConnections() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let open = registry.withLock { Array($0.open.values) }
            for connection in open { connection.tick() }
        }
    }

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

    func join(_ key: TopicKey, connection: Int, member: Member) {
        registry.withLock { $0.topics[key, default: [:]][connection] = member }
    }

    /// Removes the connection from the topic, with a presence leave if it had tracked one.
    func leave(_ key: TopicKey, connection: Int) {
        let (left, members) = registry.withLock { r -> (Presence?, [Member]) in
            r.topics[key]?[connection] = nil
            if r.topics[key]?.isEmpty == true { r.topics[key] = nil }
            let left = r.removeLocal(key, connection)
            return (left, Array(r.topics[key]?.values ?? [:].values))
        }
        if let left {
            sendDiff(key, joins: [], leaves: [left], to: members)
            relay(.object(key.json.merging(["kind": .string("untrack"), "conn": .int(Int64(connection))]) { a, _ in a }))
        }
    }

    /// A broadcast from a local client (`from`), REST (`from` nil) or another member
    /// (`relayed`: delivered here only).
    func deliverBroadcast(_ key: TopicKey, event: String, payload: JSONValue, from connection: Int?, relayed: Bool = false) {
        let members = registry.withLock { r in
            (r.topics[key] ?? [:]).filter { $0.key != connection || $0.value.broadcastSelf }.map(\.value)
        }
        let frame = RealtimeFrame(joinRef: nil, ref: nil, topic: key.topic, event: "broadcast",
                                  payload: .object(["type": .string("broadcast"), "event": .string(event), "payload": payload]))
        for member in members where member.receivesBroadcast { member.outbox.pushDroppable(frame) }
        if !relayed {
            relay(.object(key.json.merging(["kind": .string("broadcast"), "event": .string(event), "payload": payload]) { a, _ in a }))
        }
    }

    private func relay(_ message: JSONValue) {
        for link in links { link.enqueue(message) }
    }

    /// Tracks (or re-tracks) this connection's presence on the topic: leave of the old meta,
    /// join of the new, to every presence member (the sender too), on every node.
    func track(_ key: TopicKey, connection: Int, presenceKey: String, state: [String: JSONValue]) throws {
        let (old, new, members) = try registry.withLock { r -> (Presence?, Presence, [Member]) in
            let current = r.presences[key] ?? [:]
            guard current[connection] != nil || current.count < RealtimeLimits.presencesPerTopicMax else {
                throw AeroError(.realtimeLimit, "at most \(RealtimeLimits.presencesPerTopicMax) presences per topic on one node")
            }
            r.nextPresenceRef += 1
            var meta = state
            meta["phx_ref"] = .string("\(incarnation.prefix(8))-\(r.nextPresenceRef)")
            let old = current[connection]
            if let old, case .string(let prev)? = old.meta["phx_ref"] { meta["phx_ref_prev"] = .string(prev) }
            // Its exact size in a relay snapshot: the node's presences always fit one batch.
            let bytes = JSON.encode(Self.snapshotItem(key, connection, presenceKey, meta)).count
            let presences = r.localPresences + (old == nil ? 1 : 0)
            let total = r.localPresenceBytes - (old?.bytes ?? 0) + bytes
            guard presences <= RealtimeLimits.presencesPerNodeMax, total <= RealtimeLimits.presenceBytesPerNodeMax else {
                throw AeroError(.realtimeLimit, "at most \(RealtimeLimits.presencesPerNodeMax) presences and \(RealtimeLimits.presenceBytesPerNodeMax >> 20) MiB of presence state on one node")
            }
            r.localPresences = presences
            r.localPresenceBytes = total
            let new = Presence(key: presenceKey, meta: meta, bytes: bytes)
            r.presences[key, default: [:]][connection] = new
            return (old, new, Array((r.topics[key] ?? [:]).values))
        }
        sendDiff(key, joins: [new], leaves: old.map { [$0] } ?? [], to: members)
        relay(.object(key.json.merging(["kind": .string("track"), "conn": .int(Int64(connection)), "key": .string(presenceKey),
                                        "meta": .object(new.meta)]) { a, _ in a }))
    }

    func untrack(_ key: TopicKey, connection: Int) {
        let (left, members) = registry.withLock { r -> (Presence?, [Member]) in
            let left = r.removeLocal(key, connection)
            return (left, Array((r.topics[key] ?? [:]).values))
        }
        if let left {
            sendDiff(key, joins: [], leaves: [left], to: members)
            relay(.object(key.json.merging(["kind": .string("untrack"), "conn": .int(Int64(connection))]) { a, _ in a }))
        }
    }

    /// `{key: {metas: [...]}}` of every presence on the topic, on every node heard from.
    func presenceState(_ key: TopicKey) -> JSONValue {
        let presences = registry.withLock { r in
            Array((r.presences[key] ?? [:]).values) + r.origins.values.flatMap { Array(($0.presences[key] ?? [:]).values) }
        }
        return Self.grouped(presences)
    }

    static func grouped(_ presences: [Presence]) -> JSONValue {
        var out: [String: [JSONValue]] = [:]
        for p in presences { out[p.key, default: []].append(.object(p.meta)) }
        return .object(out.mapValues { .object(["metas": .array($0)]) })
    }

    private func sendDiff(_ key: TopicKey, joins: [Presence], leaves: [Presence], to members: [Member]) {
        guard !joins.isEmpty || !leaves.isEmpty else { return }
        // A re-track's leave carries the old meta without phx_ref_prev.
        let leavesMeta = leaves.map { Presence(key: $0.key, meta: $0.meta.filter { $0.key != "phx_ref_prev" }) }
        let frame = RealtimeFrame(joinRef: nil, ref: nil, topic: key.topic, event: "presence_diff",
                                  payload: .object(["joins": Self.grouped(joins), "leaves": Self.grouped(leavesMeta)]))
        for member in members where member.receivesPresence { member.outbox.pushDroppable(frame) }
    }

    // MARK: Cluster relay

    /// This node's own presences, for a relay snapshot.
    func localPresenceSnapshot() -> JSONValue {
        let all = registry.withLock { $0.presences }
        var out: [JSONValue] = []
        for (key, byConnection) in all {
            for (connection, presence) in byConnection {
                out.append(Self.snapshotItem(key, connection, presence.key, presence.meta))
            }
        }
        return .array(out)
    }

    static func snapshotItem(_ key: TopicKey, _ connection: Int, _ presenceKey: String, _ meta: [String: JSONValue]) -> JSONValue {
        .object(key.json.merging(["conn": .int(Int64(connection)), "key": .string(presenceKey), "meta": .object(meta)]) { a, _ in a })
    }

    /// The start time in an incarnation `<random>@<start micros>`.
    static func incarnationStart(_ incarnation: String) -> Int64? {
        guard let at = incarnation.lastIndex(of: "@"), incarnation.utf8.count <= 128 else { return nil }
        return Int64(incarnation[incarnation.index(after: at)...])
    }

    private struct Diff {
        var joins: [Presence] = []
        var leaves: [Presence] = []
    }

    /// Applies one batch from another member; returns whether it must send a snapshot.
    func applyRelay(origin: String, incarnation: String, seq: Int64, snapshot: [JSONValue]?,
                    messages: [JSONValue]) throws -> Bool {
        guard messages.count <= RealtimeLimits.relayBatchMessagesMax else {
            throw AeroError(.realtimeLimit, "a relay batch has at most \(RealtimeLimits.relayBatchMessagesMax) messages")
        }
        // A member never has more presences than this (presencesPerNodeMax): a bigger snapshot is
        // refused whole rather than applied in part.
        guard (snapshot?.count ?? 0) <= RealtimeLimits.presencesPerNodeMax else {
            throw AeroError(.realtimeLimit, "a relay snapshot has at most \(RealtimeLimits.presencesPerNodeMax) presences")
        }
        guard let started = Self.incarnationStart(incarnation) else {
            throw RealtimeFrame.invalid("a relay incarnation is <random>@<start micros>")
        }
        var broadcasts: [(TopicKey, String, JSONValue)] = []
        let (diffs, needed, members) = try registry.withLock { r -> ([TopicKey: Diff], Bool, [TopicKey: [Member]]) in
            guard r.known[origin] != nil || r.known.count < RealtimeLimits.relayOriginsMax else {
                throw AeroError(.realtimeLimit, "relay batches from more than \(RealtimeLimits.relayOriginsMax) members")
            }
            if let known = r.known[origin] {
                // An earlier process of that member: a replayed or long-delayed batch.
                guard started > known.started || (started == known.started && incarnation == known.incarnation) else {
                    throw AeroError(.unauthorized, "a relay batch of an earlier incarnation of member \(origin.prefix(64))")
                }
                if incarnation == known.incarnation && seq <= known.seq {
                    return ([:], !(r.origins[origin]?.synced ?? false), [:])  // a duplicate or replayed batch
                }
            }
            r.known[origin] = Known(incarnation: incarnation, started: started, seq: seq)
            var o = r.origins[origin] ?? Origin(incarnation: incarnation, seq: seq &- 1, synced: false, lastHeard: .now)
            if o.incarnation == incarnation && seq <= o.seq {
                return ([:], !o.synced, [:])  // a duplicate or replayed batch: already applied
            }
            var diffs: [TopicKey: Diff] = [:]
            func remove(_ key: TopicKey, _ connection: Int) {
                if let left = o.presences[key]?.removeValue(forKey: connection) { diffs[key, default: Diff()].leaves.append(left) }
                if o.presences[key]?.isEmpty == true { o.presences[key] = nil }
            }
            func put(_ key: TopicKey, _ connection: Int, _ presence: Presence) {
                let current = o.presences[key] ?? [:]
                guard current[connection] != nil || current.count < RealtimeLimits.presencesPerTopicMax else { return }
                if let old = current[connection] { diffs[key, default: Diff()].leaves.append(old) }
                o.presences[key, default: [:]][connection] = presence
                diffs[key, default: Diff()].joins.append(presence)
            }
            func parsePresence(_ m: JSONValue) -> (TopicKey, Int, Presence)? {
                guard let key = TopicKey(m), case .int(let c)? = m["conn"], let k = m["key"]?.stringValue,
                      case .object(let meta)? = m["meta"] else { return nil }
                return (key, Int(truncatingIfNeeded: c), Presence(key: k, meta: meta))
            }
            if let snapshot {
                // Replace this origin's presences: leaves for what is gone, joins for what is new.
                var next: [TopicKey: [Int: Presence]] = [:]
                for item in snapshot {
                    if let (key, c, p) = parsePresence(item) { next[key, default: [:]][c] = p }
                }
                for (key, byConnection) in o.presences {
                    for (c, p) in byConnection where next[key]?[c]?.meta["phx_ref"] != p.meta["phx_ref"] {
                        diffs[key, default: Diff()].leaves.append(p)
                    }
                }
                for (key, byConnection) in next {
                    for (c, p) in byConnection where o.presences[key]?[c]?.meta["phx_ref"] != p.meta["phx_ref"] {
                        diffs[key, default: Diff()].joins.append(p)
                    }
                }
                o.presences = next
                o.synced = true
            } else if o.incarnation != incarnation || seq != o.seq &+ 1 {
                o.synced = false  // a gap or a restart: presences wait for a snapshot
            }
            o.incarnation = incarnation
            o.seq = seq
            o.lastHeard = .now
            for m in messages {
                switch m["kind"]?.stringValue {
                case "broadcast":
                    if let key = TopicKey(m), let event = m["event"]?.stringValue, case .object? = m["payload"] {
                        broadcasts.append((key, event, m["payload"]!))
                    }
                case "track" where o.synced:
                    if let (key, c, p) = parsePresence(m) { put(key, c, p) }
                case "untrack" where o.synced:
                    if let key = TopicKey(m), case .int(let c)? = m["conn"] { remove(key, Int(truncatingIfNeeded: c)) }
                default:
                    break
                }
            }
            r.origins[origin] = o
            var members: [TopicKey: [Member]] = [:]
            for key in diffs.keys { members[key] = Array((r.topics[key] ?? [:]).values) }
            return (diffs, !o.synced, members)
        }
        for (key, diff) in diffs { sendDiff(key, joins: diff.joins, leaves: diff.leaves, to: members[key] ?? []) }
        for (key, event, payload) in broadcasts { deliverBroadcast(key, event: event, payload: payload, from: nil, relayed: true) }
        return needed
    }

    /// Drops the presences of members not heard from for `peerPresenceTimeoutSeconds`.
    private func sweepOrigins() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(RealtimeLimits.relayHeartbeatMillis))
            let gone = registry.withLock { r -> [(TopicKey, [Presence], [Member])] in
                let deadline = ContinuousClock.now - .seconds(RealtimeLimits.peerPresenceTimeoutSeconds)
                var out: [(TopicKey, [Presence], [Member])] = []
                for (id, origin) in r.origins where origin.lastHeard < deadline {
                    for (key, byConnection) in origin.presences {
                        out.append((key, Array(byConnection.values), Array((r.topics[key] ?? [:]).values)))
                    }
                    r.origins[id] = nil
                }
                return out
            }
            for (key, leaves, members) in gone { sendDiff(key, joins: [], leaves: leaves, to: members) }
            if !gone.isEmpty { logger.warning("realtime presences of a silent member dropped", metadata: ["topics": "\(gone.count)"]) }
        }
    }

    /// Bumps `policyGeneration` when the visible state's policies, row-level security flags or
    /// any schema changed, so private channels re-check (RT5). It compares stamps
    /// (`CollectionData.version`, `DatabaseState.schemaVersion`) at each publication instead of
    /// reading the change stream: reading back and decoding every released transaction on every
    /// node to find the rare policy edit (with the shared reader doing the same for no
    /// subscriber) cost a replica 8% of its CPU at 10k commits/s (docs/BENCHMARKS.md "s32").
    /// `ChannelAccess.decide` reads the visible state too, so the re-check sees the edit.
    private func watchPolicies() async {
        var seen = PolicyStamp(database.snapshot().state)
        for await _ in database.appliedSignals() {
            let now = PolicyStamp(database.snapshot().state)
            if now != seen {
                generation.add(1, ordering: .releasing)
                seen = now
            }
        }
    }

    /// The collections whose rows decide policies; with the schemas, what RT5 watches.
    static let policyCollections = [PolicyStore.policies, PolicyStore.enabled]

    /// What private channels' decisions depend on, as stamps: equal stamps, same policies.
    struct PolicyStamp: Equatable {
        let collections: [UInt64?]  // parallel to `policyCollections`
        let schemas: UInt64

        init(_ state: DatabaseState) {
            collections = RealtimeService.policyCollections.map { state.collections[$0]?.version }
            schemas = state.schemaVersion
        }
    }

    static func touchesPolicies(_ transaction: CommittedTransaction) -> Bool {
        transaction.schemaChange != nil || transaction.changes.contains { policyCollections.contains($0.collection) }
    }
}
