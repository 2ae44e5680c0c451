// One node's replication: its role (from the durable authority marker), the WAL sender sessions
// when primary, the follower when replica, probes of the peers, fencing, promotion.
//
// Invariants (SPEC §4, §7):
// - A1: the node accepts local writes only while its marker names it primary; the marker is
//   replaced (durably) before the role changes, and writes stop before a deposed node's marker
//   is rewritten.
// - A2: learning of a higher epoch (a HELLO, a probe answer, a WELCOME or REFUSE) stops writes at
//   once, fails every commit waiting for replicas as in doubt, and records the epoch durably.
// - P1: a replica appends only records that continue its own chain, checked by the primary at
//   the handshake and by the kernel on every record.
// - A4: a replica whose position is not on the primary's history halts as `diverged` until
//   `aerodb rejoin`.
// - Decide, then act: every decision of the role (admission, learning an epoch, promotion,
//   switchover, halting as diverged) is `machine.handle(event)` (`ReplicationRole`, the value
//   the simulator runs); this actor gathers the facts, feeds the event and executes the
//   actions in their order (`RoleShell.swift`). The marker is what is durable: `isPrimary`
//   reads it; the value's mode runs ahead of it only while its actions execute.

import Foundation
import Kernel
import Logging
import NIOCore
import Synchronization

public actor ReplicationNode {
    public nonisolated let config: ClusterConfig
    nonisolated let database: Database
    nonisolated let authority: AuthorityStore
    nonisolated let logger: Logger
    nonisolated let acks = AckTracker()
    nonisolated let lag = LagRecorder()
    /// The commit mode in effect (cluster setting `replication.commit_mode`, CommitModeSetting.swift).
    public nonisolated let commitModes: CommitModeSetting
    /// The role as non-isolated code (sender sessions, HTTP middleware) sees it.
    nonisolated let role: Mutex<RoleSnapshot>
    /// What the follower received, flushed and applied (replica side).
    nonisolated let progress = Mutex(FollowerProgress())
    /// The listener's places for connections whose HELLO is not verified yet.
    nonisolated let handshakePlaces = HandshakePlaces(max: ReplicationLimits.unauthenticatedConnectionsMax,
                                                      perAddressMax: ReplicationLimits.unauthenticatedConnectionsPerAddressMax)

    /// The durable marker as last written; every change is published to `role` at once, so
    /// sender sessions and the HTTP layer never act on an older role than the marker's.
    var marker: AuthorityMarker {
        didSet { publishRole() }
    }
    /// The role's decisions (`ReplicationRole`); fed only through `run` (RoleShell.swift).
    var machine: ReplicationRole
    var followerTask: Task<Void, Never>?
    /// The follower's current connection, closed by `stopFollower` so it stops at once even
    /// when the primary went silent without closing it.
    var followerChannel: (any Channel)?
    var watcherTask: Task<Void, Never>?
    var serverTask: Task<Void, Never>?
    /// The node's loops and sessions running now (listener, sessions, senders, follower,
    /// acknowledger, peer watch): 0 once `stop` returned (tests).
    nonisolated let activities = Atomic<Int>(0)
    var followerState = "idle"
    var replicas: [String: ReplicaProgress] = [:]

    public struct RoleSnapshot: Sendable {
        public var isPrimary: Bool
        public var epoch: UInt64
        public var primary: String
    }

    struct FollowerProgress: Sendable {
        var received: UInt64 = 0
        var primaryDurable: UInt64 = 0
        var lastHeartbeatMicros: Int64 = 0
        var connected = false
    }

    struct ReplicaProgress: Sendable {
        let session: Int
        var durable: UInt64 = 0
        var applied: UInt64 = 0
        var received: UInt64 = 0
        var connectedMicros: Int64
        var lastAckMicros: Int64
        /// The last time this replica had flushed everything the primary had flushed.
        var caughtUpMicros: Int64
    }

    public init(config: ClusterConfig, database: Database, authority: AuthorityStore, marker: AuthorityMarker,
                logger: Logger = Logger(label: "aerodb.replication")) {
        self.config = config
        self.commitModes = CommitModeSetting(fileMode: config.commitMode)
        self.database = database
        self.authority = authority
        self.marker = marker
        self.logger = logger
        self.machine = ReplicationRole(nodeID: config.nodeID, epoch: marker.epoch, primary: marker.primary)
        self.role = Mutex(RoleSnapshot(isPrimary: marker.isPrimary(config.nodeID), epoch: marker.epoch, primary: marker.primary))
    }

    public var isPrimary: Bool { marker.isPrimary(config.nodeID) }

    static func nowMicros() -> Int64 { SystemClock().nowMicros() }

    // MARK: Start and stop

    /// Listens for peers, then takes the role the marker gives. A node that boots as primary
    /// first asks its peers whether a newer epoch exists (it may have been deposed while down).
    public func start() async throws {
        let server = try await Transport.listen(config.me.replication, places: handshakePlaces, tls: config.tls,
                                                authenticate: { [config] in config.admits($0) })
        serverTask = Task { await self.counting(); defer { self.ended() }; await self.serve(server) }
        if isPrimary {
            if let newer = await highestEpochAmongPeers(), newer.epoch > marker.epoch {
                try await learn(epoch: newer.epoch, primary: newer.primary, from: "a peer at start")
                return
            }
            takePrimaryRole()
        } else {
            database.setAcceptsWrites(false, reason: notPrimaryError())
            startFollower()
        }
    }

    /// A node without peers: it is the primary of its marker's epoch (commit mode async), and
    /// listens nowhere.
    public func startAlone() {
        if isPrimary { takePrimaryRole() } else { database.setAcceptsWrites(false, reason: notPrimaryError()) }
    }

    /// Stops the follower, the peer watch and the listener with its sessions, and waits for them
    /// (at most `ReplicationTimeouts.stopMillis`): once this returns the port is closed and
    /// nothing of the node appends, ships or acknowledges any more.
    public func stop() async {
        let tasks = [followerTask, watcherTask, serverTask].compactMap { $0 }
        for task in tasks { task.cancel() }
        followerTask = nil
        watcherTask = nil
        serverTask = nil
        try? await followerChannel?.close()
        followerChannel = nil
        if !(await Self.awaitAll(tasks, millis: ReplicationTimeouts.stopMillis)) {
            logger.warning("replication tasks still running after stop", metadata: ["millis": "\(ReplicationTimeouts.stopMillis)",
                                                                                  "running": "\(activities.load(ordering: .relaxed))"])
        }
        acks.fence(AeroError(.commitInDoubt, "the node shut down while this commit waited for replica flushes; it is durable here and may survive", invariant: "D1"))
    }

    /// Waits for `tasks` to end, at most `millis`; false when they did not.
    static func awaitAll(_ tasks: [Task<Void, Never>], millis: Int64) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let once = Mutex<CheckedContinuation<Bool, Never>?>(continuation)
            let resume: @Sendable (Bool) -> Void = { ended in once.withLock { $0.take() }?.resume(returning: ended) }
            let timer = Task {
                try? await Task.sleep(for: .milliseconds(millis))
                resume(false)
            }
            Task {
                for task in tasks { await task.value }
                timer.cancel()
                resume(true)
            }
        }
    }

    /// An actor-isolated loop counts itself in `activities` (`counting` at its start, `ended` on its way out).
    func counting() { activities.add(1, ordering: .relaxed) }
    nonisolated func ended() { activities.subtract(1, ordering: .relaxed) }

    /// Runs `body` counted in `activities`.
    nonisolated func counted<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
        activities.add(1, ordering: .relaxed)
        defer { activities.subtract(1, ordering: .relaxed) }
        return try await body()
    }

    func notPrimaryError() -> AeroError {
        AeroError(.notPrimary, "node \(config.nodeID) is not the primary of epoch \(marker.epoch) (the primary is \(marker.primary))", invariant: "A1")
    }

    /// Accept writes as primary of the marker's epoch: commit gate, write acceptance, peer watch.
    func takePrimaryRole() {
        precondition(isPrimary, "only the node the marker names takes the primary role")
        acks.unfence()
        database.setCommitGate(commitGate())
        database.setRetentionFloor(ReplicaRetention(tracker: acks))
        database.setAcceptsWrites(true)
        watcherTask?.cancel()
        watcherTask = Task { await self.counting(); defer { self.ended() }; await self.watchPeers() }
        followerState = "primary"
    }

    /// What a commit waits for after its local flush: the replica flushes of the mode in effect
    /// for it (none in async); no gate without peers.
    private func commitGate() -> (any CommitGate)? {
        config.peers.isEmpty ? nil : ModalFlushGate(tracker: acks, modes: commitModes, config: config)
    }

    func publishRole() {
        let snapshot = RoleSnapshot(isPrimary: isPrimary, epoch: marker.epoch, primary: marker.primary)
        role.withLock { $0 = snapshot }
    }

    // MARK: Epochs and fencing

    /// Adopts a higher epoch and its primary (A2): the role's `.learned` (stop local writes at
    /// once, fail waiting commits as in doubt, replace the marker durably, follow the new
    /// primary). Unless the caller is the follower itself (which carries on with the new
    /// marker), the old follower is stopped and awaited first: once this returns, nothing of
    /// the old epoch is acknowledged by this node any more.
    func learn(epoch: UInt64, primary: String, from source: String, byFollower: Bool = false) async throws {
        try await run(.learned(epoch: epoch, primary: primary), learnShell(epoch: epoch, primary: primary, from: source, byFollower: byFollower))
    }

    /// How a higher epoch's actions are carried out: the errors writes and waits end with.
    func learnShell(epoch: UInt64, primary: String, from source: String, byFollower: Bool = false) -> RoleShell {
        RoleShell(source: source,
                  refusal: AeroError(.epochStale, "node \(config.nodeID) was deposed: epoch \(epoch) has primary \(primary)", invariant: "A2"),
                  inDoubt: AeroError(.commitInDoubt, "node \(config.nodeID) learned of epoch \(epoch) (primary \(primary)) while this commit waited for replicas; it may not survive", invariant: "A2"),
                  byFollower: byFollower)
    }

    /// `learn` from a background loop: a failure to record the epoch durably is logged (local
    /// writes already stopped before the marker write was tried; the loop tries again).
    func learnLogged(epoch: UInt64, primary: String, from source: String, byFollower: Bool = false) async {
        do {
            try await learn(epoch: epoch, primary: primary, from: source, byFollower: byFollower)
        } catch {
            logger.error("could not record a newer epoch durably", metadata: ["epoch": "\(epoch)", "primary": "\(primary)",
                                                                            "error": "\(error)"])
        }
    }

    /// Replaces the marker durably with a newer epoch and its primary.
    func adopt(epoch: UInt64, primary: String) throws {
        let next = AuthorityMarker(clusterID: marker.clusterID, epoch: epoch, primary: primary)
        try authority.replace(with: next)
        marker = next
    }

    /// Every few hundred milliseconds a primary asks its peers for their epoch: a primary cut
    /// off during a promotion learns of it as soon as it can reach any peer (A2).
    func watchPeers() async {
        while !Task.isCancelled && isPrimary {
            if let newer = await highestEpochAmongPeers(), newer.epoch > marker.epoch {
                await learnLogged(epoch: newer.epoch, primary: newer.primary, from: "peer watch")
                return
            }
            try? await Task.sleep(for: .milliseconds(Self.peerWatchMillis))
        }
    }

    /// How often a primary probes its peers for a newer epoch.
    static let peerWatchMillis: Int64 = 250

    /// Probes every peer; the highest epoch any of them knows, with its primary.
    func highestEpochAmongPeers() async -> (epoch: UInt64, primary: String)? {
        let states = await probePeers()
        return states.values.compactMap { $0 }.max { $0.epoch < $1.epoch }.map { ($0.epoch, $0.primary) }
    }

    /// Asks every peer for its state at once; nil for the unreachable ones.
    func probePeers() async -> [String: NodeState?] {
        let hello = helloMessage(.probe)
        return await withTaskGroup(of: (String, NodeState?).self) { group in
            for peer in config.peers {
                group.addTask {
                    guard case .state(let s)? = try? await Transport.ask(peer.replication, hello, idleMillis: ReplicationTimeouts.probeMillis, tls: self.config.tls) else {
                        return (peer.nodeID, nil)
                    }
                    return (peer.nodeID, s)
                }
            }
            var out: [String: NodeState?] = [:]
            for await (id, s) in group { out[id] = s }
            return out
        }
    }

    func helloMessage(_ purpose: HelloPurpose, epoch: UInt64? = nil, primary: String? = nil) -> ReplicationMessage {
        let (position, positionEpoch) = durablePositionWithEpoch()
        return .hello(.init(purpose: purpose, clusterID: config.clusterID, nodeID: config.nodeID, token: config.token,
                            epoch: epoch ?? marker.epoch, primary: primary ?? marker.primary, position: position,
                            positionEpoch: positionEpoch))
    }

    /// This node's last durable record and its epoch (what a follower presents): from the WAL
    /// (its recent records are in memory), or, right after a checkpoint install left the log
    /// empty, from the installed state, whose position it is. 0 when neither can tell: the
    /// primary then cannot prove such a position when it is older than its WAL, and refuses it.
    nonisolated func durablePositionWithEpoch() -> (LogPosition, UInt64) {
        let position = database.durablePosition
        guard position.lsn > 0 else { return (position, 0) }
        // An unreadable record only makes the epoch unknown (0), which the primary treats as unprovable.
        if let record = try? database.records(from: position.lsn, maxBytes: 1).first, record.position == position {
            return (position, record.epoch)
        }
        let state = database.snapshot().state
        return (position, state.position == position ? state.epoch : 0)
    }

    // MARK: State

    public func state() -> NodeState {
        let (durable, durableEpoch) = durablePositionWithEpoch()
        return NodeState(isPrimary: isPrimary, epoch: marker.epoch, primary: marker.primary, durable: durable,
                         applied: database.snapshot().lsn, detail: stateDetail, durableEpoch: durableEpoch)
    }

    /// This node's replication status for `/admin/v1/status`.
    public func status() -> JSONValue {
        let now = Self.nowMicros()
        let durable = database.durablePosition.lsn
        var o: [String: JSONValue] = [
            "role": .string(isPrimary ? "primary" : "replica"), "epoch": .int(Int64(marker.epoch)),
            "primary": .string(marker.primary), "commit_mode": .string(commitModes.current.rawValue),
            "state": .string(stateDetail),
        ]
        // The last durable record as promotion compares it (`PromotionOrder`: its epoch, then
        // its LSN; epoch 0: unknown), read together so an operator's pick matches the node's check.
        let (record, recordEpoch) = durablePositionWithEpoch()
        o["durable_record"] = .object(["lsn": .int(Int64(record.lsn)), "epoch": .int(Int64(recordEpoch))])
        if isPrimary {
            o["replicas"] = .array(config.peers.map { peer in
                guard let r = replicas[peer.nodeID] else {
                    return .object(["node_id": .string(peer.nodeID), "connected": .bool(false)])
                }
                let lagMillis = r.durable >= durable ? 0 : Double(now - r.caughtUpMicros) / 1000
                return .object(["node_id": .string(peer.nodeID), "connected": .bool(true),
                                "received": .int(Int64(r.received)), "durable": .int(Int64(r.durable)),
                                "applied": .int(Int64(r.applied)), "lag_lsn": .int(Int64(durable - min(durable, r.durable))),
                                "lag_ms": .float(lagMillis),
                                "visibility_lag_ms": lag.summary(peer.nodeID).map {
                                    .object(["p50": .float($0.p50), "p99": .float($0.p99), "max": .float($0.max), "samples": .int(Int64($0.samples))])
                                } ?? .null,
                                "last_ack_ms_ago": .float(Double(now - r.lastAckMicros) / 1000)])
            })
        } else {
            let p = progress.withLock { $0 }
            o["connected"] = .bool(p.connected)
            o["received"] = .int(Int64(p.received))
            o["primary_durable"] = .int(Int64(p.primaryDurable))
            o["lag_lsn"] = .int(Int64(p.primaryDurable - min(p.primaryDurable, durable)))
            o["last_heartbeat_ms_ago"] = p.lastHeartbeatMicros == 0 ? .null : .float(Double(now - p.lastHeartbeatMicros) / 1000)
        }
        return .object(o)
    }

    /// The primary's HTTP address when this node is a replica (writes are forwarded there);
    /// nil when this node is the primary.
    public nonisolated func primaryHTTP() -> String? {
        let snapshot = role.withLock { $0 }
        guard !snapshot.isPrimary else { return nil }
        return config.member(snapshot.primary)?.http
    }

    public nonisolated var currentRole: RoleSnapshot { role.withLock { $0 } }

    /// Set while this node's history is refused by the primary: its data may hold commits that
    /// were never acknowledged, so it serves no reads until `aerodb rejoin` (P2, A4).
    public nonisolated let divergedReason = Mutex<String?>(nil)

    /// Why the primary refused this node's history (A4), cleared only by a promotion or rejoin.
    nonisolated var divergence: String? { divergedReason.withLock { $0 } }

    /// The follower's state, or why the node halted.
    var stateDetail: String { divergence.map { "diverged: \($0)" } ?? followerState }
}

extension ReplicationNode {
    /// Every member as seen from here: this node's own state, and each peer's answer to a probe
    /// (role, epoch, positions) or `reachable: false`. Lag is measured against the primary's
    /// durable LSN when the primary answered.
    public func clusterStatus() async -> JSONValue {
        var states = await probePeers().mapValues { $0 }
        states[config.nodeID] = state()
        let primaryDurable = states.values.compactMap { $0 }.filter { $0.isPrimary }.max { $0.epoch < $1.epoch }?.durable.lsn
        let members: [JSONValue] = config.members.map { member in
            var o: [String: JSONValue] = ["node_id": .string(member.nodeID), "http": .string(member.http),
                                          "replication": .string(member.replication.description)]
            guard let s = states[member.nodeID] ?? nil else {
                o["reachable"] = .bool(false)
                return .object(o)
            }
            o["reachable"] = .bool(true)
            o["role"] = .string(s.isPrimary ? "primary" : "replica")
            o["epoch"] = .int(Int64(s.epoch))
            o["primary"] = .string(s.primary)
            o["durable_lsn"] = .int(Int64(s.durable.lsn))
            o["durable_checksum"] = .string(String(s.durable.checksum, radix: 16))
            o["applied_lsn"] = .int(Int64(s.applied))
            o["state"] = .string(s.detail)
            if let primaryDurable { o["lag_lsn"] = .int(Int64(primaryDurable - min(primaryDurable, s.durable.lsn))) }
            return .object(o)
        }
        var out: [String: JSONValue] = ["cluster_id": .string(config.clusterID), "members": .array(members),
                                        "commit_mode": .string(commitModes.current.rawValue), "answered_by": .string(config.nodeID)]
        if case .object(let mine) = status(), let replicas = mine["replicas"] { out["replicas"] = replicas }
        return .object(out)
    }
}
