// The seeded cluster simulator (`aerodb-crashtest sim`): three to five nodes' `ReplicationRole`
// values in one process, a simulated network (delay, loss, reorder, duplicate, partition, heal),
// a simulated clock, a log per node on a simulated disk, clients writing in the seed's commit
// mode and an operator that partitions, cuts power, promotes, switches over and rejoins. One seed
// decides everything: same seed, same run, same trace byte for byte (no dictionary is iterated,
// no wall clock is read).
//
// What it models: the role's decisions (admission with the history check and bootstrap proof,
// ack accounting, learning epochs, promotion) exactly as the node runs them, since it runs the
// same value. The disk has `CrashDisk`'s semantics at record granularity: records are written
// (seen by the node's state) and flushed by one fsync in flight per node; acknowledgements, ACKs,
// HELLO positions and shipped records count flushed records only; a power cut keeps the flushed
// prefix and a random prefix of the rest, may tear the next write, and recovery keeps the longest
// chain of whole records; the node restarts from its disk and its marker (`crash`, `restart`).
// What it does not: the kernel's real WAL files (the log is an array with a retention horizon
// standing for recycled segments and checkpoints), TCP (messages of one connection may be lost,
// duplicated or reordered: a follower drops a connection on any gap, which TCP would give as a
// reset), the follower loop of `Follower.swift` and the operator's RPCs (promotion probes and
// adopts are atomic steps reaching the nodes whose link is up; a switchover's DEMOTE reaches the
// primary atomically, its drain runs over the simulated network, its hand-over and the target's
// new epoch are one step). Min-LSN reads are modelled as `ClusterMiddleware` answers them (SIM7;
// with `X-AeroDB-Min-LSN-Epoch`, a node holding another epoch's record at the LSN refuses,
// counted apart, docs/CRASH_TESTING.md).
//
// Checks after every step (docs/INVARIANTS.md SIM1-SIM8): see `Violation`.

import Kernel
import Replication

/// splitmix64: small, fast, and the same on every platform.
package struct SimRNG: Sendable {
    private var state: UInt64
    package init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 ^ 0xD1B5_4A32_D192_ED03 }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<n (n > 0).
    package mutating func below(_ n: UInt64) -> UInt64 { next() % n }
    package mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    package mutating func between(_ a: Int64, _ b: Int64) -> Int64 { a + Int64(below(UInt64(b - a + 1))) }
}

struct SimRecord: Equatable {
    let lsn: UInt64
    let epoch: UInt64
    let previousChecksum: UInt64
    let checksum: UInt64
    let isEpoch: Bool
    /// The client write it carries (0 for an epoch record).
    let write: Int

    var position: LogPosition { LogPosition(lsn: lsn, checksum: checksum) }

    static func make(after previous: SimRecord?, epoch: UInt64, isEpoch: Bool, write: Int) -> SimRecord {
        let lsn = (previous?.lsn ?? 0) + 1
        let prev = previous?.checksum ?? 0
        return SimRecord(lsn: lsn, epoch: epoch, previousChecksum: prev, checksum: checksum(lsn: lsn, previous: prev, epoch: epoch, write: write),
                         isEpoch: isEpoch, write: write)
    }

    static func checksum(lsn: UInt64, previous: UInt64, epoch: UInt64, write: Int) -> UInt64 {
        var h = SimRNG(seed: previous ^ (lsn &* 31) ^ (epoch << 40) ^ UInt64(write) &* 0x100_0000_01B3)
        return h.next()
    }

    /// Whether the record's bytes are whole: its checksum covers its fields (a torn write fails it).
    var isWhole: Bool { checksum == Self.checksum(lsn: lsn, previous: previousChecksum, epoch: epoch, write: write) }

    /// The record as a torn write leaves it: some sectors new, some old (its checksum fails).
    func torn() -> SimRecord {
        SimRecord(lsn: lsn, epoch: epoch, previousChecksum: previousChecksum, checksum: checksum ^ 0x5EC7_0000_0000_0001, isEpoch: isEpoch, write: write)
    }
}

enum SimMessage {
    case hello(conn: Int, epoch: UInt64, primary: String, position: LogPosition, positionEpoch: UInt64)
    case welcome(conn: Int, epoch: UInt64, from: UInt64)
    case checkpoint(conn: Int, epoch: UInt64, records: [SimRecord])
    case records(conn: Int, epoch: UInt64, [SimRecord])
    case ack(conn: Int, durable: UInt64)
    case refuse(conn: Int, ReplicationRole.RefuseReason, epoch: UInt64, primary: String)
    case heartbeat(conn: Int, epoch: UInt64, primary: String)
    case probe
    case probeAnswer(epoch: UInt64, primary: String)
    case reset(conn: Int)
    /// The node's own fsync finished (`generation`: the disk state it was started on).
    case flushed(generation: Int, through: Int)
}

/// A broken guarantee, named by its id in docs/INVARIANTS.md.
package struct Violation: Sendable, CustomStringConvertible {
    package let id: String
    package let detail: String
    package var description: String { "\(id): \(detail)" }
}

package struct SimOutcome: Sendable {
    package var seed: UInt64
    package var steps = 0
    package var operations = 0
    package var simulatedMicros: Int64 = 0
    package var violation: Violation?
    /// The trace of the run (through the violation, when there is one).
    package var trace: [String] = []
    package var promotions = 0
    package var switchovers = 0
    /// Min-LSN reads answered (SIM7 checked) and refused after the wait (503 REPLICA_BEHIND).
    package var reads = 0
    package var readsBehind = 0
    /// Min-LSN reads refused because the node holds another epoch's record at the LSN sent (a
    /// superseded history: `X-AeroDB-Min-LSN-Epoch` names the write's epoch; 503, not SIM7).
    package var supersededReads = 0
    package var rejoins = 0
    package var bootstraps = 0
    package var acknowledged = 0
    package var inDoubt = 0
    package var commitMode = ""
    /// Power cuts (node crashes), the records written but not flushed that they lost, and the
    /// torn last writes recovery cut off.
    package var crashes = 0
    package var lostUnflushed = 0
    package var tornWrites = 0
    /// Crashed primaries that came back deposed (a newer epoch found at boot: fenced, following).
    package var restartsDeposed = 0
}

package struct SimOptions: Sendable {
    package var seconds: Double = 6
    package var faults: Set<RoleFault> = []
    /// Keep the trace (off for the deep run: it is only needed to print a failing seed).
    package var trace = true
    /// Nodes in the cluster: 3 to 5 (clamped).
    package var nodes = 3
    package init(seconds: Double = 6, faults: Set<RoleFault> = [], trace: Bool = true, nodes: Int = 3) {
        self.nodes = nodes
        self.seconds = seconds
        self.faults = faults
        self.trace = trace
    }
}

final class TraceBox {
    var lines: [String] = []
}

final class SimNode {
    let id: String
    var role: ReplicationRole
    /// The WAL as written (what the node's state and its reads see). Only the first `flushed`
    /// records are on its disk: `CrashDisk`'s model, written vs flushed; a power cut keeps the
    /// flushed prefix, a prefix of the rest, and may tear the write after it (`crash`).
    var log: [SimRecord] = []
    var flushed = 0
    /// An fsync in flight (one at a time: group commit; what is written meanwhile waits for the next).
    var flushing = false
    /// Bumped when the disk's contents are replaced or cut (crash, rejoin, checkpoint install): a
    /// flush started before it completes nothing.
    var diskGeneration = 0
    /// The authority marker on disk (written atomically and synced by `persistMarker`).
    var marker: (epoch: UInt64, primary: String)
    /// Powered off until `restartAt` (a crash); a node that is down receives and sends nothing.
    var down = false
    var downSince: Int64 = 0
    var restartAt: Int64 = 0
    /// The newest record this node reported durable: a client acknowledgement it released, an
    /// ACK or a HELLO position it sent. SIM8: a power cut never loses it.
    var promised: SimRecord?
    /// Commits written but not flushed yet (primary side), in LSN order: each becomes a wait
    /// (`commitDurable`) once its record is flushed.
    var unflushedCommits: [(id: Int, lsn: UInt64, write: Int, epoch: UInt64, expires: Int64)] = []
    /// Records below this LSN are recycled (only in the state / checkpoints), as `oldestLSN`.
    var oldest: UInt64 = 1
    var acceptsWrites: Bool
    // Follower side.
    var conn: Int?
    var welcomed = false
    var lastHeard: Int64 = 0
    var nextConnectAt: Int64 = 0
    // Primary side: outbound sessions, by connection.
    struct Outbound { let conn: Int; let node: Int; let session: Int; let epoch: UInt64; var next: UInt64; var lastAck: Int64 }
    var outbound: [Outbound] = []
    var broken: [Int] = []
    /// Waits of `sync`/`all` commits, in id order (ids and expiry times only grow).
    var waits: [(id: Int, lsn: UInt64, write: Int, epoch: UInt64, expires: Int64)] = []

    /// The index of wait `id` (binary search: `waits` is in id order).
    func waitIndex(_ id: Int) -> Int? {
        var lo = 0, hi = waits.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if waits[mid].id < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < waits.count && waits[lo].id == id ? lo : nil
    }

    init(id: String, role: ReplicationRole) {
        self.id = id
        self.role = role
        marker = (role.epoch, role.primary)
        acceptsWrites = role.isPrimary
    }

    var last: SimRecord? { log.last }
    /// The newest flushed record: what the node reports (HELLO, ACK, STATE) and ships.
    var durableRecord: SimRecord? { flushed > 0 ? log[flushed - 1] : nil }
    var durable: LogPosition { durableRecord?.position ?? .origin }

    func promise(_ r: SimRecord?) {
        guard let r, r.lsn > (promised?.lsn ?? 0) else { return }
        promised = r
    }
    /// A primary, or a demoting primary draining to its switchover target: it keeps its
    /// sessions, streams and counts acks (the role admits followers in both modes).
    var streams: Bool { role.mode == .primary || role.mode == .demoting }

    func facts(at position: LogPosition) -> HistoryFacts {
        var mine = HistoryFacts.Lookup.unavailable
        if HistoryFacts.withinRetained(position.lsn, oldestRetained: oldest) {
            if position.lsn == 0 { mine = .at(.origin) }
            else if position.lsn > UInt64(log.count) { mine = .beyondEnd }
            else { mine = .at(log[Int(position.lsn) - 1].position) }
        }
        if mine != .unavailable {
            return HistoryFacts(oldestRetained: oldest, mine: mine, oldest: nil, epochAtPosition: nil, durable: durable)
        }
        let o = oldest <= UInt64(log.count) ? log[Int(oldest) - 1] : nil
        let epochAt = position.lsn >= 1 && position.lsn <= UInt64(log.count) ? log[Int(position.lsn) - 1].epoch : nil
        return HistoryFacts(oldestRetained: oldest, mine: mine,
                            oldest: o.map { .init(lsn: $0.lsn, previousChecksum: $0.previousChecksum, epoch: $0.epoch, isEpochRecord: $0.isEpoch) },
                            epochAtPosition: epochAt, durable: durable)
    }

    func holds(_ r: SimRecord) -> Bool { r.lsn >= 1 && r.lsn <= UInt64(log.count) && log[Int(r.lsn) - 1] == r }
}

package struct ClusterSimulation {
    let seed: UInt64
    let options: SimOptions
    var rng: SimRNG
    var now: Int64 = 0
    var nodes: [SimNode] = []
    /// The cluster's size (`SimOptions.nodes`, 3...5) and its members' ids.
    let n: Int
    let names: [String]
    let needed: Int
    // Network.
    struct Envelope { let at: Int64; let seq: Int; let from: Int; let to: Int; let message: SimMessage }
    var queue: [Envelope] = []  // a binary heap on (at, seq)
    var seq = 0
    var cut: [[Bool]]
    var streamTail: [[Int64]]
    var healAt: Int64?
    let delayMin: Int64, delayJitter: Int64, loss: Double, duplicate: Double
    /// fsync latency: base and jitter (µs), per seed.
    let fsyncMin: Int64, fsyncJitter: Int64
    // Clients and checks.
    var clientView = [0, 0, 0]
    var nextWrite = 1
    var nextConn = 1
    var nextWait = 1
    var acked: [SimRecord] = []
    var writers: [UInt64: Int] = [:]  // epoch -> node index that accepted a write (looked up only)
    var outcome: SimOutcome
    var lastIsolated: (node: Int, since: Int64)?
    /// The switchover in progress: the demoting primary, its target, the new epoch, the
    /// primary's last LSN when it stopped writing, and when it gives up (`switchoverWaitMillis`).
    var switchover: (primary: Int, target: Int, epoch: UInt64, last: UInt64, deadline: Int64)?
    /// Clients' min-LSN reads (`X-AeroDB-Min-LSN`): their own random stream, so that adding
    /// reads changes no write, fault or operator decision of a seed; reads change no state.
    var readRNG: SimRNG
    /// Reads waiting for their node to apply their LSN: node, the acknowledged record whose LSN
    /// the client sends, and when the node gives up (`HTTPLimits.minLSNWaitMillis`).
    var pendingReads: [(node: Int, token: SimRecord, deadline: Int64)] = []
    /// A role or write acceptance may have changed since SIM3 was last checked (set by `apply`,
    /// the only place roles change).
    var rolesChanged = true
    let traceBox = TraceBox()

    package init(seed: UInt64, options: SimOptions = SimOptions()) {
        self.seed = seed
        self.options = options
        n = min(max(options.nodes, 3), 5)
        names = (1...n).map { "n\($0)" }
        cut = Array(repeating: Array(repeating: false, count: n), count: n)
        streamTail = Array(repeating: Array(repeating: 0, count: n), count: n)
        rng = SimRNG(seed: seed)
        readRNG = SimRNG(seed: seed ^ 0x5EAD_5EAD_5EAD_5EAD)
        outcome = SimOutcome(seed: seed)
        let mode: Int = options.faults.isEmpty ? Int(rng.below(3)) : 1  // sabotage runs use sync
        needed = [0, 1, n - 1][mode]  // `ClusterConfig.replicaAcksNeeded`: all = every peer
        outcome.commitMode = ["async", "sync", "all"][mode]
        delayMin = rng.between(1, 4) * 1000
        delayJitter = rng.between(0, 20) * 1000
        loss = Double(rng.below(30)) / 1000
        duplicate = Double(rng.below(30)) / 1000
        fsyncMin = rng.between(2, 30) * 100
        fsyncJitter = rng.between(0, 30) * 100
        for name in names {
            nodes.append(SimNode(id: name, role: ReplicationRole(nodeID: name, epoch: 1, primary: "n1", faults: options.faults)))
        }
        // The primary opens epoch 1 (durable before it accepts writes, as `advanceEpoch`).
        nodes[0].log.append(.make(after: nil, epoch: 1, isEpoch: true, write: 0))
        nodes[0].flushed = 1
        note("start: mode \(outcome.commitMode), delay \(delayMin / 1000)+\(delayJitter / 1000) ms, loss \(loss), duplicate \(duplicate), fsync \(fsyncMin)+\(fsyncJitter) µs")
    }

    // MARK: Run

    package static func run(seed: UInt64, options: SimOptions = SimOptions()) -> SimOutcome {
        var sim = ClusterSimulation(seed: seed, options: options)
        sim.runToEnd()
        sim.outcome.trace = sim.traceBox.lines
        return sim.outcome
    }

    mutating func runToEnd() {
        let end = Int64(options.seconds * 1_000_000)
        let tick: Int64 = 5_000
        var nextTick: Int64 = 0
        var nextClient: Int64 = 0
        var nextOperator: Int64 = 50_000
        while now < end && outcome.violation == nil {
            // The earliest of: a delivery, a node tick, a client write, an operator step.
            let delivery = queue.first?.at ?? Int64.max
            let t = min(delivery, nextTick, nextClient, nextOperator)
            now = t
            if t == delivery {
                let e = popEnvelope()
                deliver(e)
            } else if t == nextTick {
                for i in 0..<n { nodeTick(i) }
                clientReads()
                nextTick += tick
            } else if t == nextClient {
                clientWrite()
                nextClient += rng.between(500, 6_000)
            } else {
                operatorStep(final: false)
                nextOperator += 50_000
            }
            outcome.steps += 1
            checkStep()
        }
        // Heal everything, rejoin halted nodes, and let the cluster settle: replicas converge.
        if outcome.violation == nil {
            for i in 0..<n where nodes[i].down { restart(i) }
            healAll()
            settle(until: now + 3_000_000)
            for i in 0..<n where nodes[i].role.mode == .diverged { rejoin(i) }
            settle(until: now + 5_000_000)
            if outcome.violation == nil { checkConverged() }
        }
        outcome.simulatedMicros = now
    }

    mutating func settle(until end: Int64) {
        var nextTick = now
        while now < end && outcome.violation == nil {
            let delivery = queue.first?.at ?? Int64.max
            let t = min(delivery, nextTick)
            now = t
            if t == delivery { deliver(popEnvelope()) } else {
                for i in 0..<n { nodeTick(i) }
                if switchover != nil && now % 50_000 == 0 { stepSwitchover() }
                nextTick += 5_000
            }
            outcome.steps += 1
            checkStep()
        }
    }

    func note(_ line: @autoclosure () -> String) {
        if options.trace { traceBox.lines.append("\(now / 1000)ms \(line())") }
    }

    mutating func violate(_ id: String, _ detail: String) {
        guard outcome.violation == nil else { return }
        outcome.violation = Violation(id: id, detail: detail)
        note("VIOLATION \(id): \(detail)")
    }

    // MARK: Network

    mutating func send(_ from: Int, _ to: Int, _ message: SimMessage) {
        if cut[from][to] {
            // A partitioned connection is dead to its sender (the receiver times it out).
            switch message {
            case .welcome(let c, _, _), .checkpoint(let c, _, _), .records(let c, _, _), .heartbeat(let c, _, _):
                nodes[from].broken.append(c)
            default: break
            }
            return
        }
        if rng.chance(loss) {
            // A frame lost on a connection is a reset of that connection (TCP never skips one
            // silently): both ends drop it; the follower reconnects.
            switch message {
            case .welcome(let c, _, _), .checkpoint(let c, _, _), .records(let c, _, _), .heartbeat(let c, _, _):
                pushEnvelope(Envelope(at: now + delayMin, seq: seq, from: from, to: to, message: .reset(conn: c)))
                seq += 1
                nodes[from].broken.append(c)  // reaped by `reap` (not while the sessions are walked)
            default: break
            }
            return
        }
        // Duplicates only where a resend or a retried frame can repeat one; a connection's opening
        // HELLO, WELCOME and checkpoint are never repeated on it (TCP).
        var repeatable = true
        switch message {
        case .hello, .welcome, .checkpoint, .refuse: repeatable = false
        default: break
        }
        var ordered = false  // a connection's stream frames arrive in order (TCP)
        switch message {
        case .welcome, .checkpoint, .records, .heartbeat: ordered = true
        default: break
        }
        let copies = repeatable && rng.chance(duplicate) ? 2 : 1
        for _ in 0..<copies {
            var at = now + delayMin + rng.between(0, delayJitter)
            if ordered {
                at = max(at, streamTail[from][to])
                streamTail[from][to] = at
            }
            pushEnvelope(Envelope(at: at, seq: seq, from: from, to: to, message: message))
            seq += 1
        }
    }

    mutating func pushEnvelope(_ e: Envelope) {
        queue.append(e)
        var i = queue.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.before(queue[i], queue[p]) else { break }
            queue.swapAt(i, p)
            i = p
        }
    }

    mutating func popEnvelope() -> Envelope {
        let top = queue[0]
        let lastE = queue.removeLast()
        if !queue.isEmpty {
            queue[0] = lastE
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < queue.count && Self.before(queue[l], queue[m]) { m = l }
                if r < queue.count && Self.before(queue[r], queue[m]) { m = r }
                if m == i { break }
                queue.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    static func before(_ a: Envelope, _ b: Envelope) -> Bool { a.at != b.at ? a.at < b.at : a.seq < b.seq }

    // MARK: Nodes

    mutating func apply(_ i: Int, _ actions: [ReplicationRole.Action]) {
        let node = nodes[i]
        for action in actions {
            switch action {
            case .acceptWrites, .persistMarker, .openEpoch, .follow, .stopFollowing, .fence, .forgetReplicas:
                rolesChanged = true  // SIM3 is checked again after this step
            default:
                break
            }
            switch action {
            case .refuse(let peer, let reason, let epoch, let primary, _):
                if let j = names.firstIndex(of: peer), let c = pendingConn(of: j) {
                    send(i, j, .refuse(conn: c, reason, epoch: epoch, primary: primary))
                }
            case .stream(let peer, let session, let from):
                let j = names.firstIndex(of: peer)!
                let c = pendingConn(of: j) ?? 0
                node.outbound.removeAll { $0.node == j }
                node.outbound.append(.init(conn: c, node: j, session: session, epoch: node.role.epoch, next: from, lastAck: now))
                send(i, j, .welcome(conn: c, epoch: node.role.epoch, from: from))
                note("\(node.id) streams to \(peer) from \(from) (session \(session))")
            case .bootstrap(let peer, let session):
                let j = names.firstIndex(of: peer)!
                let c = pendingConn(of: j) ?? 0
                let through = UInt64(node.flushed)  // a checkpoint of durable state
                node.outbound.removeAll { $0.node == j }
                node.outbound.append(.init(conn: c, node: j, session: session, epoch: node.role.epoch, next: through + 1, lastAck: now))
                _ = node.role.handle(.sent(node: peer, session: session, through: through))
                send(i, j, .checkpoint(conn: c, epoch: node.role.epoch, records: Array(node.log[..<node.flushed])))
                outcome.bootstraps += 1
                note("\(node.id) bootstraps \(peer) with a checkpoint through \(through)")
            case .release(let ids):
                for id in ids { releaseWait(i, id) }
            case .failInDoubt(let ids), .fence(let ids):
                if case .fence = action {  // its commits not flushed yet end in doubt too
                    outcome.inDoubt += node.unflushedCommits.count
                    node.unflushedCommits = []
                }
                if ids.count > 8 {
                    let gone = Set(ids)
                    node.waits.removeAll { gone.contains($0.id) }
                } else {
                    for id in ids { if let k = node.waitIndex(id) { node.waits.remove(at: k) } }
                }
                outcome.inDoubt += ids.count
            case .forgetReplicas:
                break  // the role's ledger already forgot them; sessions are dropped below
            case .acceptWrites(let on):
                node.acceptsWrites = on
            case .persistMarker(let epoch, let primary):
                node.marker = (epoch, primary)  // replaced atomically and synced: never torn
                note("\(node.id) persists marker epoch \(epoch) primary \(primary)")
            case .openEpoch(let epoch):
                // `advanceEpoch` waits for the epoch record's flush before writes are accepted.
                node.log.append(.make(after: node.last, epoch: epoch, isEpoch: true, write: 0))
                node.flushed = node.log.count
            case .follow:
                node.conn = nil
                node.welcomed = false
                node.nextConnectAt = now
            case .stopFollowing:
                node.conn = nil
                node.welcomed = false
            }
        }
        if !node.streams { node.outbound = [] }
    }

    /// The connection a HELLO from node j is being answered on (the last one it opened).
    var pendingHello: [Int: Int] = [:]
    func pendingConn(of j: Int) -> Int? { pendingHello[j] }

    mutating func releaseWait(_ i: Int, _ id: Int) {
        let node = nodes[i]
        guard let k = node.waitIndex(id) else { return }
        let w = node.waits.remove(at: k)
        let record = node.log[Int(w.lsn) - 1]
        // SIM4: a node that is not the primary of the write's epoch acknowledges nothing. A
        // primary demoting for a switchover is still that primary until it hands over (`.drained`
        // fences what is left): it releases the waits its drain satisfies.
        if !(node.streams && node.role.epoch == w.epoch) {
            violate("SIM4", "\(node.id) acknowledged write \(w.write) (LSN \(w.lsn), epoch \(w.epoch)) as \(node.role.mode) of epoch \(node.role.epoch)")
        }
        // SIM2: a sync/all acknowledgement only once the record is on 1 + needed logs.
        var holders = 0
        for n in nodes where n.holds(record) { holders += 1 }
        if holders < 1 + needed {
            violate("SIM2", "\(node.id) acknowledged write \(w.write) (LSN \(w.lsn)) in \(outcome.commitMode) mode while it is on \(holders) log(s)")
        }
        acked.append(record)
        outcome.acknowledged += 1
        node.promise(record)
        note("\(node.id) acknowledges write \(w.write) at LSN \(w.lsn)")
    }

    /// Drops the primary's sessions whose connection was reset.
    mutating func reap(_ i: Int) {
        let node = nodes[i]
        guard !node.broken.isEmpty else { return }
        for c in node.broken {
            if let k = node.outbound.firstIndex(where: { $0.conn == c }) {
                _ = node.role.handle(.disconnected(node: names[node.outbound[k].node], session: node.outbound[k].session))
                node.outbound.remove(at: k)
            }
        }
        node.broken = []
    }

    mutating func nodeTick(_ i: Int) {
        guard !nodes[i].down else { return }
        reap(i)
        defer { reap(i) }
        let node = nodes[i]
        // Retention: recycle all but the last records, never past a connected replica (the
        // retention floor); a checkpoint keeps the state (the array stays). Only flushed records
        // are shipped, checkpointed or recycled (the sender sends durable records).
        let keep: UInt64 = 24
        let count = UInt64(node.flushed)
        if count > keep {
            var horizon = count - keep
            if node.streams, let floor = node.role.ledger.minDurable { horizon = min(horizon, floor + 1) }
            node.oldest = max(node.oldest, horizon)
        }
        if node.streams {
            for k in node.outbound.indices {
                var o = node.outbound[k]
                if now - o.lastAck > 600_000 {  // the session went silent
                    _ = node.role.handle(.disconnected(node: names[o.node], session: o.session))
                    o.next = UInt64.max
                    node.outbound[k] = o
                    continue
                }
                if o.next <= count {
                    let through = min(count, o.next + 15)
                    let batch = Array(node.log[Int(o.next) - 1..<Int(through)])
                    _ = node.role.handle(.sent(node: names[o.node], session: o.session, through: through))
                    send(i, o.node, .records(conn: o.conn, epoch: o.epoch, batch))
                    o.next = through + 1
                } else if now % 50_000 == 0 {
                    send(i, o.node, .heartbeat(conn: o.conn, epoch: node.role.epoch, primary: node.id))
                }
                node.outbound[k] = o
            }
            node.outbound.removeAll { $0.next == UInt64.max }
            if now % 250_000 == 0 { for j in 0..<n where j != i { send(i, j, .probe) } }  // peer watch (A2)
            // Commit waits that timed out: in doubt (a prefix: expiry times grow with ids).
            var expired: [Int] = []
            for w in node.waits {
                guard w.expires <= now else { break }
                expired.append(w.id)
            }
            for id in expired { apply(i, node.role.handle(.waitExpired(wait: id))) }
        } else if node.role.mode == .replica || node.role.mode == .fenced {
            if node.conn != nil && now - node.lastHeard > 500_000 { node.conn = nil; node.welcomed = false }
            if node.conn == nil && now >= node.nextConnectAt {
                guard let p = names.firstIndex(of: node.role.primary) else { return }
                let c = nextConn
                nextConn += 1
                node.conn = c
                node.welcomed = false
                node.lastHeard = now
                node.nextConnectAt = now + 100_000
                node.promise(node.durableRecord)
                send(i, p, .hello(conn: c, epoch: node.role.epoch, primary: node.role.primary, position: node.durable,
                                  positionEpoch: node.durableRecord?.epoch ?? 0))
                // Cannot find its primary for a while: ask every peer (the follower's probe).
                for j in 0..<n where j != i && j != p { send(i, j, .probe) }
            }
        }
    }

    mutating func learnFrom(_ i: Int, epoch: UInt64, primary: String) {
        let node = nodes[i]
        guard epoch > node.role.epoch, primary != node.id else { return }
        note("\(node.id) learns epoch \(epoch) (primary \(primary))")
        apply(i, node.role.handle(.learned(epoch: epoch, primary: primary)))
    }

    mutating func deliver(_ e: Envelope) {
        guard !nodes[e.to].down else { return }  // powered off: the frame is lost
        reap(e.to)
        defer { reap(e.to); reap(e.from) }
        let i = e.to, node = nodes[i], from = names[e.from]
        switch e.message {
        case .reset(let c):
            if c == node.conn { node.conn = nil; node.welcomed = false }
        case .probe:
            send(i, e.from, .probeAnswer(epoch: node.role.epoch, primary: node.role.primary))
        case .probeAnswer(let epoch, let primary):
            learnFrom(i, epoch: epoch, primary: primary)
        case .hello(let c, let epoch, let primary, let position, let positionEpoch):
            pendingHello[e.from] = c
            let actions = node.role.handle(.followHello(node: from, epoch: epoch, primary: primary, position: position,
                                                        positionEpoch: positionEpoch, facts: node.facts(at: position)))
            if actions.contains(where: { if case .refuse = $0 { return true } else { return false } }) {
                note("\(node.id) refuses \(from) at \(position.lsn) (epoch \(positionEpoch))")
            }
            apply(i, actions)
        case .ack(let c, let durable):
            guard node.streams, let k = node.outbound.firstIndex(where: { $0.conn == c }) else { return }
            node.outbound[k].lastAck = now
            apply(i, node.role.handle(.ack(node: from, session: node.outbound[k].session, durable: durable)))
        case .welcome(let c, let epoch, _):
            learnFrom(i, epoch: epoch, primary: from)
            guard c == node.conn, epoch == node.role.epoch else { return }
            node.welcomed = true
            node.lastHeard = now
        case .heartbeat(let c, let epoch, let primary):
            learnFrom(i, epoch: epoch, primary: primary)
            guard c == node.conn else { return }
            guard node.welcomed else { node.conn = nil; return }  // ahead of its WELCOME: reset
            node.lastHeard = now
            let durable = ackable(i)
            node.promise(durable > 0 ? node.log[durable - 1] : nil)
            send(i, e.from, .ack(conn: c, durable: UInt64(durable)))
        case .refuse(let c, let reason, let epoch, let primary):
            learnFrom(i, epoch: epoch, primary: primary)
            guard c == node.conn else { return }
            node.conn = nil
            if reason == .diverged {
                note("\(node.id) halts as diverged")
                apply(i, node.role.handle(.refusedDiverged))
            }
        case .checkpoint(let c, let epoch, let records):
            guard c == node.conn, epoch == node.role.epoch else { return }
            // SIM5: installing a checkpoint discards nothing silently: this log must be a prefix of it.
            for r in node.log where r.lsn > UInt64(records.count) || records[Int(r.lsn) - 1] != r {
                violate("SIM5", "\(node.id) was bootstrapped over its record \(r.lsn) (epoch \(r.epoch), write \(r.write)) that \(from)'s history lacks, with no rejoin report")
                break
            }
            // The install is synced before it is acknowledged (a new disk state: flushes in flight
            // complete nothing).
            node.log = records
            node.flushed = records.count
            node.diskGeneration += 1
            node.flushing = false
            node.oldest = UInt64(records.count) + 1
            node.welcomed = true
            node.lastHeard = now
            node.promise(node.durableRecord)
            send(i, e.from, .ack(conn: c, durable: node.durable.lsn))
        case .records(let c, let epoch, let batch):
            guard c == node.conn, epoch == node.role.epoch, node.role.mode == .replica else { return }
            // Ahead of its WELCOME (reordered): TCP would not, so the connection resets.
            guard node.welcomed else { node.conn = nil; return }
            node.lastHeard = now
            defer { startFlush(i) }  // what arrived is acknowledged once flushed
            for r in batch {
                if r.lsn <= UInt64(node.log.count) {
                    if node.log[Int(r.lsn) - 1] == r { continue }  // a duplicate
                    node.conn = nil  // P1 refuses it: the connection drops
                    return
                }
                // P1: only the next record continuing the chain, of an epoch not below the log's.
                guard r.lsn == UInt64(node.log.count) + 1, r.previousChecksum == (node.last?.checksum ?? 0),
                      r.epoch >= (node.last?.epoch ?? 0), r.epoch <= epoch else {
                    node.conn = nil  // a gap (lost or reordered frame): reconnect
                    return
                }
                node.log.append(r)
            }
            if options.faults.contains(.ackBeforeFlush) {  // sabotage: received counts as durable
                node.promise(node.last)
                send(i, e.from, .ack(conn: c, durable: UInt64(node.log.count)))
            }
        case .flushed(let generation, let through):
            guard generation == node.diskGeneration else { return }
            node.flushing = false
            flushDone(i, through: through)
        }
    }

    // MARK: Disk

    /// The LSN a node reports durable: its flushed one (with `ack-before-flush`: what it wrote).
    func ackable(_ i: Int) -> Int {
        options.faults.contains(.ackBeforeFlush) ? nodes[i].log.count : nodes[i].flushed
    }

    /// Starts an fsync of everything written so far, unless one is in flight (group commit).
    mutating func startFlush(_ i: Int) {
        let node = nodes[i]
        guard !node.flushing, !node.down, node.flushed < node.log.count else { return }
        node.flushing = true
        let at = now + fsyncMin + rng.between(0, fsyncJitter)
        pushEnvelope(Envelope(at: at, seq: seq, from: i, to: i, message: .flushed(generation: node.diskGeneration, through: node.log.count)))
        seq += 1
    }

    /// An fsync completed: commits whose record is on disk go to their wait (released at once
    /// in `async`), a follower acknowledges what it flushed, and the next fsync starts.
    mutating func flushDone(_ i: Int, through: Int) {
        let node = nodes[i]
        node.flushed = max(node.flushed, min(through, node.log.count))
        var k = 0
        while k < node.unflushedCommits.count && node.unflushedCommits[k].lsn <= UInt64(node.flushed) { k += 1 }
        if k > 0 {
            let ready = node.unflushedCommits[..<k]
            node.unflushedCommits.removeFirst(k)
            for c in ready {
                node.waits.append(c)
                apply(i, node.role.handle(.commitDurable(wait: c.id, lsn: c.lsn, needed: needed)))
            }
        }
        if node.role.mode == .replica, let c = node.conn, node.welcomed, let p = names.firstIndex(of: node.role.primary) {
            node.promise(node.durableRecord)
            send(i, p, .ack(conn: c, durable: UInt64(node.flushed)))
        }
        startFlush(i)
    }

    /// A power cut (`CrashDisk.crash`, then the crash image): the node keeps its flushed records,
    /// a prefix of those written after them (the WAL is appended in order), and maybe the next
    /// write torn; recovery keeps the longest prefix of whole records continuing the chain. Its
    /// in-memory state, sessions and waiting commits (in doubt for their clients) are gone.
    mutating func crash(_ i: Int) {
        let node = nodes[i]
        let written = node.log.count
        let unflushed = written - node.flushed
        let kept = node.flushed + Int(rng.below(UInt64(unflushed + 1)))
        var image = Array(node.log[..<kept])
        if kept < written && rng.chance(0.5) { image.append(node.log[kept].torn()) }
        var valid = 0
        var previous: SimRecord?
        for r in image {
            guard r.isWhole, r.lsn == (previous?.lsn ?? 0) + 1, r.previousChecksum == (previous?.checksum ?? 0) else { break }
            valid += 1
            previous = r
        }
        let torn = image.count - valid
        image.removeLast(torn)
        note("power cut on \(node.id) (\(node.role.mode), epoch \(node.role.epoch)): written through LSN \(written), flushed through \(node.flushed); recovers through \(image.count) (\(written - image.count) unflushed lost\(torn > 0 ? ", a torn write cut off" : ""))")
        // SIM8: a power cut never loses what the node reported durable.
        if let p = node.promised, !(p.lsn <= UInt64(image.count) && image[Int(p.lsn) - 1] == p) {
            violate("SIM8", "the power cut on \(node.id) lost LSN \(p.lsn) (\(p.write == 0 ? "an epoch record" : "write \(p.write)"), epoch \(p.epoch)) that it had reported durable; flushed through \(node.flushed) of \(written) written")
        }
        outcome.crashes += 1
        outcome.lostUnflushed += written - image.count
        outcome.tornWrites += torn
        outcome.inDoubt += node.waits.count + node.unflushedCommits.count
        node.log = image
        node.flushed = image.count
        node.diskGeneration += 1
        node.flushing = false
        node.oldest = min(node.oldest, UInt64(image.count) + 1)
        node.waits = []
        node.unflushedCommits = []
        node.down = true
        node.downSince = now
        node.restartAt = now + rng.between(100_000, 1_500_000)
        node.acceptsWrites = false
        node.conn = nil
        node.welcomed = false
        node.outbound = []
        node.broken = []
        rolesChanged = true
        pendingReads.removeAll { $0.node == i }
    }

    /// Power is back: the node boots from its disk as `ReplicationNode.start` does: the role its
    /// marker gives; one that boots as primary first asks the peers it reaches for a newer epoch
    /// (deposed while down: it learns it, is fenced, and follows; its old tail makes it diverged,
    /// for the operator's rejoin), else takes the primary role of its marker's epoch.
    mutating func restart(_ i: Int) {
        let node = nodes[i]
        node.down = false
        node.role = ReplicationRole(nodeID: node.id, epoch: node.marker.epoch, primary: node.marker.primary, faults: options.faults)
        node.acceptsWrites = false
        node.lastHeard = now
        node.nextConnectAt = now
        rolesChanged = true
        note("\(node.id) restarts from its disk through LSN \(node.flushed) (marker: epoch \(node.marker.epoch), primary \(node.marker.primary))")
        guard node.role.isPrimary else {
            apply(i, [.follow(primary: node.role.primary)])
            return
        }
        var newer: Int?
        for j in 0..<n where j != i && reachable(i, j) && nodes[j].role.epoch > node.role.epoch
            && (newer == nil || nodes[j].role.epoch > nodes[newer!].role.epoch) { newer = j }
        if let j = newer {
            outcome.restartsDeposed += 1
            learnFrom(i, epoch: nodes[j].role.epoch, primary: nodes[j].role.primary)
        } else {
            node.acceptsWrites = true
            note("\(node.id) takes the primary role of epoch \(node.role.epoch)")
        }
    }

    // MARK: Clients

    mutating func clientWrite() {
        let client = Int(rng.below(3))  // three clients whatever the cluster's size
        let i = clientView[client]
        let node = nodes[i]
        guard node.acceptsWrites, node.role.isPrimary else {
            // Refused: the client asks around for the primary of the highest epoch it can see.
            var best: Int?
            for k in 0..<n where nodes[k].role.isPrimary && !nodes[k].down && (best == nil || nodes[k].role.epoch > nodes[best!].role.epoch) { best = k }
            clientView[client] = best ?? Int(rng.below(UInt64(n)))
            return
        }
        let write = nextWrite
        nextWrite += 1
        let epoch = node.role.epoch
        // SIM3: one writer per epoch.
        if let other = writers[epoch], other != i {
            violate("SIM3", "\(node.id) accepted write \(write) in epoch \(epoch), in which \(names[other]) accepted writes")
        }
        writers[epoch] = i
        let record = SimRecord.make(after: node.last, epoch: epoch, isEpoch: false, write: write)
        node.log.append(record)
        outcome.operations += 1
        note("\(node.id) appends write \(write) at LSN \(record.lsn) (epoch \(epoch))")
        // The commit waits for its local flush (`flushDone`), then for `needed` replica flushes
        // (none in async: acknowledged after the local flush; may be lost on failover).
        let id = nextWait
        nextWait += 1
        let commit = (id: id, lsn: record.lsn, write: write, epoch: epoch, expires: now + 1_000_000)
        if options.faults.contains(.ackBeforeFlush) {  // sabotage: durable as soon as written
            node.waits.append(commit)
            apply(i, node.role.handle(.commitDurable(wait: id, lsn: record.lsn, needed: needed)))
        } else {
            node.unflushedCommits.append(commit)
        }
        startFlush(i)
        if rng.chance(0.1) { clientView[client] = Int(rng.below(UInt64(n))) }  // some clients wander
    }

    /// Every tick: a client may send a read with `X-AeroDB-Min-LSN` set to the LSN of a recent
    /// acknowledged write to any node, as `ClusterMiddleware` answers it: once the node's applied
    /// LSN reaches it (within the wait) from the node's state, else 503. A diverged node answers
    /// no data (`dataRefusal`). SIM7: the state answered holds the write whose LSN the client
    /// sent, i.e. it is not older than that write. Only `sync`/`all`: an `async` acknowledgement
    /// may be lost by a failover (documented), so its LSN names no guarantee.
    mutating func clientReads() {
        var k = 0
        while k < pendingReads.count {
            let r = pendingReads[k]
            if answerRead(r.node, r.token) { pendingReads.remove(at: k); continue }
            if now >= r.deadline {
                outcome.readsBehind += 1
                pendingReads.remove(at: k)
                continue
            }
            k += 1
        }
        guard needed > 0, !acked.isEmpty, readRNG.chance(0.5) else { return }
        let token = acked[acked.count - 1 - Int(readRNG.below(UInt64(min(acked.count, 16))))]
        let i = Int(readRNG.below(UInt64(n)))
        if !answerRead(i, token) && pendingReads.count < 64 {
            pendingReads.append((i, token, now + 2_000_000))
        }
    }

    /// Answers a min-LSN read on node i if its applied LSN reached the token's; checks SIM7.
    mutating func answerRead(_ i: Int, _ token: SimRecord) -> Bool {
        let node = nodes[i]
        guard node.role.mode != .diverged, !node.down else { return true }  // refused: it serves no data
        guard UInt64(node.log.count) >= token.lsn || options.faults.contains(.readWithoutMinLSNWait) else { return false }
        // The client sends the write's epoch too (`X-AeroDB-Min-LSN-Epoch`): a node whose record
        // at that LSN is of another epoch holds another history (a cut-off deposed primary, or one
        // that learned the new epoch but was not refused as diverged yet) and refuses (503).
        if token.lsn <= UInt64(node.log.count), node.log[Int(token.lsn) - 1].epoch != token.epoch,
           !options.faults.contains(.readWithoutEpochCheck) {
            outcome.supersededReads += 1
            return true
        }
        outcome.reads += 1
        guard !node.holds(token) else { return true }
        let there = token.lsn <= UInt64(node.log.count) ? node.log[Int(token.lsn) - 1] : nil
        let held = there.map { "its LSN \(token.lsn) holds \($0.write == 0 ? "an epoch record" : "write \($0.write)") of epoch \($0.epoch)" } ?? "it has not applied LSN \(token.lsn)"
        violate("SIM7", "a read with min LSN \(token.lsn) on \(node.id) (\(node.role.mode), epoch \(node.role.epoch), applied \(node.log.count)) answered a state without acknowledged write \(token.write) (epoch \(token.epoch)): \(held)")
        return true
    }

    // MARK: Operator

    /// The operator fails over only to a node that reaches every running member but the primary
    /// it replaces, and with them makes a majority: it does not promote inside a minority (with a
    /// crash and a partition at once, two promotions in disjoint groups would pick the same epoch,
    /// as `aerodb promote` run on both sides would; docs/CRASH_TESTING.md).
    func seesCluster(_ c: Int, replacing k: Int) -> Bool {
        guard !nodes[c].down else { return false }
        var reached = 1
        for j in 0..<n where j != c && j != k && !nodes[j].down {
            guard reachable(c, j) else { return false }
            reached += 1
        }
        return reached > n / 2
    }

    func reachable(_ a: Int, _ b: Int) -> Bool { !cut[a][b] && !cut[b][a] && !nodes[a].down && !nodes[b].down }

    mutating func healAll() {
        cut = Array(repeating: Array(repeating: false, count: n), count: n)
        healAt = nil
        lastIsolated = nil
        note("operator heals every link")
    }

    mutating func operatorStep(final: Bool) {
        if let h = healAt, now >= h { healAll() }
        // Power returns to a crashed node; a power cut on one node now and then (one down at a time).
        for i in 0..<n where nodes[i].down && now >= nodes[i].restartAt { restart(i) }
        if !nodes.contains(where: { $0.down }) && rng.chance(0.012) { crash(Int(rng.below(UInt64(n)))) }
        if healAt == nil && rng.chance(0.04) {
            let v = Int(rng.below(UInt64(n)))
            if rng.chance(0.7) {
                for j in 0..<n where j != v { cut[v][j] = true; cut[j][v] = true }
                lastIsolated = (v, now)
                note("operator isolates \(names[v])")
            } else {
                let m = (v + 1 + Int(rng.below(UInt64(n - 1)))) % n
                cut[v][m] = true
                note("operator cuts \(names[v]) -> \(names[m])")
            }
            healAt = now + rng.between(200_000, 3_000_000)
        }
        // Failover: the primary has been cut off for a while.
        if let iso = lastIsolated, nodes[iso.node].role.isPrimary, now - iso.since > 300_000, rng.chance(0.3) {
            let candidates = (0..<n).filter { $0 != iso.node && nodes[$0].role.mode == .replica && seesCluster($0, replacing: iso.node) }
            if let c = candidates.max(by: { ahead($1, of: $0) }) { promote(c) }
        }
        // Failover: the primary lost power a while ago (and nobody has replaced it).
        for k in 0..<n where nodes[k].down && nodes[k].role.isPrimary && now - nodes[k].downSince > 300_000
            && !nodes.contains(where: { !$0.down && $0.marker.primary == $0.id && $0.marker.epoch > nodes[k].role.epoch }) && rng.chance(0.3) {
            let candidates = (0..<n).filter { $0 != k && nodes[$0].role.mode == .replica && seesCluster($0, replacing: k) }
            if let c = candidates.max(by: { ahead($1, of: $0) }) { promote(c) }
        }
        // Switchover: a planned handover to a streaming replica, now and then; one at a time.
        if switchover != nil { stepSwitchover() } else if rng.chance(0.02) { startSwitchover() }
        // Rejoin a halted node once it can reach the primary.
        for i in 0..<n where nodes[i].role.mode == .diverged && !nodes[i].down && rng.chance(0.2) { rejoin(i) }
    }

    /// `aerodb switchover` on a target streaming from the primary (`ReplicationNode.switchoverSteps`):
    /// its DEMOTE reaches the primary, which stops writes (`.demote`) and drains; `stepSwitchover`
    /// finishes or aborts it.
    mutating func startSwitchover() {
        var primary: Int?
        for k in 0..<n where nodes[k].role.isPrimary && nodes[k].acceptsWrites
            && (primary == nil || nodes[k].role.epoch > nodes[primary!].role.epoch) { primary = k }
        guard let p = primary else { return }
        // "primary reachable": the target is streaming from p.
        let targets = (0..<n).filter {
            $0 != p && nodes[$0].role.mode == .replica && nodes[$0].role.primary == names[p]
                && nodes[$0].role.epoch == nodes[p].role.epoch && nodes[$0].conn != nil && nodes[$0].welcomed && reachable($0, p)
        }
        guard !targets.isEmpty else { return }
        let t = targets[Int(rng.below(UInt64(targets.count)))]
        let epoch = nodes[t].role.epoch + 1
        let actions = nodes[p].role.handle(.demote(epoch: epoch, target: names[t]))
        guard !actions.isEmpty else {
            note("switchover to \(names[t]) refused by \(names[p])")
            return
        }
        apply(p, actions)
        switchover = (p, t, epoch, UInt64(nodes[p].log.count), now + 1_500_000)
        note("operator switches over \(names[p]) -> \(names[t]) (epoch \(epoch)): \(names[p]) stops writing at LSN \(nodes[p].log.count)")
    }

    /// The demoting primary's wait (`ReplicationNode.demote`): drained (`PromotionDecision.drained`)
    /// hands over and the target opens the new epoch and tells the peers; past the deadline the
    /// primary resumes (`.demoteAborted`) and the switchover is refused.
    mutating func stepSwitchover() {
        guard let s = switchover else { return }
        let p = nodes[s.primary], t = nodes[s.target]
        guard !p.down else {
            switchover = nil  // its demotion was in memory: it boots as its marker says
            note("switchover to \(t.id) ends: \(p.id) lost power")
            return
        }
        guard p.role.mode == .demoting else {
            switchover = nil  // it learned a newer epoch meanwhile (fenced by a failover)
            note("switchover to \(t.id) ends: \(p.id) is \(p.role.mode) of epoch \(p.role.epoch)")
            return
        }
        let durable = p.role.ledger.durable
        // The DEMOTE answer travels back to the target on its session: a cut link hands over
        // nothing (the target would not promote; the primary aborts at the deadline).
        guard reachable(s.primary, s.target), PromotionDecision.drained(last: s.last, target: durable[t.id], replicas: Array(durable.values), needed: needed) else {
            if now >= s.deadline {
                switchover = nil
                apply(s.primary, p.role.handle(.demoteAborted))
                note("switchover to \(t.id) refused: not drained through LSN \(s.last) in time; \(p.id) stays primary")
            }
            return
        }
        switchover = nil
        apply(s.primary, p.role.handle(.drained))
        note("\(p.id) drained through LSN \(s.last) and follows \(t.id) in epoch \(s.epoch)")
        // The target's half: it holds the final position ("final position applied here"), then
        // `becomePrimary` and the adoption by the peers it reaches.
        guard s.last <= UInt64(t.log.count), t.log[Int(s.last) - 1].position == p.log[Int(s.last) - 1].position else {
            note("switchover to \(t.id) refused: it does not hold \(p.id)'s final LSN \(s.last); the operator promotes")
            promote(s.target)
            return
        }
        let epoch = max(s.epoch, t.role.epoch + 1)
        let actions = t.role.handle(.promote(epoch: epoch))
        guard !actions.isEmpty else {
            note("switchover to \(t.id) refused: it learned a newer epoch than \(epoch)")
            return
        }
        apply(s.target, actions)
        outcome.switchovers += 1
        note("operator completes the switchover: \(t.id) primary of epoch \(epoch) at LSN \(t.durable.lsn)")
        for j in 0..<n where j != s.target && reachable(s.target, j) { learnFrom(j, epoch: epoch, primary: t.id) }
        // SIM1: every acknowledged sync/all write is on the new primary.
        if needed > 0, let lost = acked.first(where: { !t.holds($0) }) {
            violate("SIM1", "acknowledged write \(lost.write) (LSN \(lost.lsn)) is not on \(t.id), primary of epoch \(epoch) by switchover")
        }
    }

    func key(_ i: Int) -> PromotionDecision.Key { (nodes[i].durableRecord?.epoch ?? 0, nodes[i].durable.lsn) }

    func ahead(_ a: Int, of b: Int) -> Bool { PromotionDecision.isAhead(key(a), of: key(b), faults: options.faults) }

    func betterThan(_ c: Int, among peers: [Int]) -> String? {
        PromotionDecision.betterCandidate(than: key(c), among: peers.map { (names[$0], key($0)) }, faults: options.faults)?.0
    }

    /// `aerodb promote` on node c: the checks of `ReplicationNode.promoteSteps`, as one step.
    mutating func promote(_ c: Int) {
        let cand = nodes[c]
        let oldPrimary = names.firstIndex(of: cand.role.primary)
        if let o = oldPrimary, reachable(c, o),
           // STATE's `is_primary` is the marker's (a primary demoting for a switchover answers as primary).
           PromotionDecision.oldPrimaryAnswers(isPrimary: nodes[o].marker.primary == nodes[o].id, epoch: nodes[o].role.epoch, candidateEpoch: cand.role.epoch) {
            note("promotion of \(cand.id) refused: the old primary answers")
            return
        }
        let others = (0..<n).filter { $0 != c && $0 != oldPrimary }
        let answering = others.filter { reachable(c, $0) }
        if betterThan(c, among: answering) != nil {
            note("promotion of \(cand.id) refused: a replica is ahead")
            return
        }
        if needed == 1 && answering.count < others.count {
            note("promotion of \(cand.id) refused: a replica did not answer (sync, no --force)")
            return
        }
        // Every peer that answered the probes, the old primary too (`promoteSteps`).
        let epoch = PromotionDecision.nextEpoch(mine: cand.role.epoch, peers: (0..<n).filter { $0 != c && reachable(c, $0) }.map { nodes[$0].role.epoch })
        apply(c, cand.role.handle(.beginPromotion))
        // The old primary, when it answered (not as primary), is asked to adopt too: a vote.
        let voters = answering + (oldPrimary.map { reachable(c, $0) ? [$0] : [] } ?? [])
        for j in voters { learnFrom(j, epoch: epoch, primary: cand.id) }  // fence first
        if betterThan(c, among: answering) != nil {
            apply(c, cand.role.handle(.promotionRefused))
            return
        }
        // A1: a majority holds the epoch naming the candidate (`promoteSteps`, no --force here).
        let quorum = PromotionDecision.epochQuorum(candidate: cand.id, epoch: epoch, members: n,
                                                   answers: voters.map { (names[$0], nodes[$0].role.epoch, nodes[$0].role.primary) })
        guard quorum.reached else {
            note("promotion of \(cand.id) refused: \(quorum.holders.count) of \(n) members hold epoch \(epoch), a majority is \(quorum.needed)")
            apply(c, cand.role.handle(.promotionRefused))
            return
        }
        apply(c, cand.role.handle(.promote(epoch: epoch)))
        outcome.promotions += 1
        note("operator promotes \(cand.id) to epoch \(epoch) at LSN \(cand.durable.lsn)")
        // SIM1: every acknowledged sync/all write is on the new primary.
        if needed > 0, let lost = acked.first(where: { !cand.holds($0) }) {
            violate("SIM1", "acknowledged write \(lost.write) (LSN \(lost.lsn)) is not on \(cand.id), promoted to epoch \(epoch)")
        }
    }

    /// `aerodb rejoin`: cut the log after the newest position on the primary's retained history
    /// (or everything: --resync), reporting what is discarded.
    mutating func rejoin(_ i: Int) {
        let node = nodes[i]
        // `Rejoin.findFork`: the reachable peer acting as primary of the highest epoch.
        guard let p = (0..<n).filter({ $0 != i && reachable(i, $0) && nodes[$0].role.isPrimary })
            .max(by: { nodes[$0].role.epoch < nodes[$1].role.epoch }) else { return }
        let primary = nodes[p]
        learnFrom(i, epoch: primary.role.epoch, primary: primary.id)
        var fork: UInt64 = 0
        var l = UInt64(node.log.count)
        while l > 0 {
            let f = primary.facts(at: node.log[Int(l) - 1].position)
            if case .at(let pos) = f.mine, pos == node.log[Int(l) - 1].position { fork = l; break }
            if f.mine == .unavailable { break }
            l -= 1
        }
        let discarded = node.log.count - Int(fork)
        // SIM5: a rejoin discards nothing acknowledged (sync/all), and reports what it discards.
        if needed > 0 {
            for r in node.log[Int(fork)...] where !primary.holds(r) && acked.contains(r) {
                violate("SIM5", "rejoin of \(node.id) discarded acknowledged write \(r.write) at LSN \(r.lsn)")
            }
        }
        node.log.removeLast(discarded)
        node.flushed = node.log.count  // `aerodb rejoin` syncs the cut log before the node starts
        node.diskGeneration += 1
        node.flushing = false
        if let p = node.promised, !node.holds(p) { node.promised = node.durableRecord }  // reported (SIM5)
        node.oldest = min(node.oldest, fork + 1)
        if fork == 0 { node.oldest = 1 }
        outcome.rejoins += 1
        note("operator rejoins \(node.id): fork at \(fork), \(discarded) record(s) discarded and reported")
        apply(i, node.role.handle(.rejoined))
    }

    // MARK: Checks

    /// After every step; constant work (no allocation, no scan of a log): SIM3 over the three
    /// roles, P1 on each log's newest link (a replica appends a shipped batch record by record
    /// only after the chain check of `deliver`, so the newest link is the one a step can break).
    mutating func checkStep() {
        // SIM3: no two primaries accept writes in one epoch (incremental: only roles changed by
        // `apply` since the last step can break it).
        for a in 0..<n where rolesChanged && nodes[a].acceptsWrites && nodes[a].role.isPrimary {
            for b in (a + 1)..<n where nodes[b].acceptsWrites && nodes[b].role.isPrimary && nodes[a].role.epoch == nodes[b].role.epoch {
                violate("SIM3", "\(names[a]) and \(names[b]) both accept writes in epoch \(nodes[a].role.epoch)")
            }
        }
        rolesChanged = false
        // P1 on every replica: its log continues its own chain.
        for k in 0..<n {
            let n = nodes[k]
            let c = n.log.count
            guard c >= 2 else { continue }
            let a = n.log[c - 2], b = n.log[c - 1]
            if b.previousChecksum != a.checksum || b.lsn != a.lsn + 1 {
                violate("SIM6", "\(n.id)'s log breaks its chain at LSN \(b.lsn)")
            }
        }
    }

    mutating func checkConverged() {
        let primaries = (0..<n).filter { nodes[$0].role.isPrimary }
        guard primaries.count == 1, let p = primaries.first else {
            violate("SIM6", "after healing, \(primaries.count) node(s) act as primary")
            return
        }
        for n in nodes where n.log != nodes[p].log {
            violate("SIM6", "after healing, \(n.id) (\(n.role.mode), durable \(n.durable)) differs from the primary \(names[p]) (durable \(nodes[p].durable))")
        }
        // SIM1 once more on the final primary.
        if needed > 0, let lost = acked.first(where: { !nodes[p].holds($0) }) {
            violate("SIM1", "acknowledged write \(lost.write) (LSN \(lost.lsn)) is not on the final primary \(names[p])")
        }
    }
}

/// Many seeds, and for the failing ones the seed and the shortest history found.
package struct SimBatch: Sendable {
    package var seeds = 0
    package var operations = 0
    /// Switchovers that completed (the new primary opened its epoch).
    package var switchovers = 0
    /// Min-LSN reads: answered, refused after the wait, refused as from a superseded history.
    package var reads = 0, readsBehind = 0, supersededReads = 0
    /// Power cuts, the unflushed records they lost, the torn writes recovery cut off.
    package var crashes = 0, lostUnflushed = 0, tornWrites = 0, restartsDeposed = 0
    package var simulatedSeconds = 0.0
    package var realSeconds = 0.0
    package var violations: [(seed: UInt64, violation: Violation)] = []
    /// The failing seed with the fewest steps to its violation, replayed with its trace.
    package var failureReport: [String] = []

    package static func run(firstSeed: UInt64, seeds: Int, options: SimOptions, stopAtFirst: Bool, historyLines: Int = 60) -> SimBatch {
        var batch = SimBatch()
        let clock = SystemClock()
        let started = clock.monotonicNanos()
        var shortest: (seed: UInt64, steps: Int)?
        for k in 0..<seeds {
            let seed = firstSeed &+ UInt64(k)
            let o = ClusterSimulation.run(seed: seed, options: options)
            batch.seeds += 1
            batch.operations += o.operations
            batch.switchovers += o.switchovers
            batch.reads += o.reads
            batch.readsBehind += o.readsBehind
            batch.supersededReads += o.supersededReads
            batch.crashes += o.crashes
            batch.lostUnflushed += o.lostUnflushed
            batch.tornWrites += o.tornWrites
            batch.restartsDeposed += o.restartsDeposed
            batch.simulatedSeconds += Double(o.simulatedMicros) / 1e6
            if let v = o.violation {
                batch.violations.append((seed, v))
                if shortest == nil || o.steps < shortest!.steps { shortest = (seed, o.steps) }
                if stopAtFirst { break }
            }
        }
        batch.realSeconds = Double(clock.monotonicNanos() - started) / 1e9
        if let s = shortest {
            var traced = options
            traced.trace = true
            let replay = ClusterSimulation.run(seed: s.seed, options: traced)
            batch.failureReport.append("VIOLATION seed \(s.seed) (\(replay.commitMode)) after \(replay.steps) steps: \(replay.violation.map { "\($0)" } ?? "not reproduced")")
            batch.failureReport.append("shortest history (seed \(s.seed), last \(min(historyLines, replay.trace.count)) of \(replay.trace.count) events; replay: aerodb-crashtest sim --seed \(s.seed) --seeds 1\(options.nodes == 3 ? "" : " --nodes \(options.nodes)")\(options.faults.first.map { " --sabotage \($0.rawValue)" } ?? "")):")
            batch.failureReport += replay.trace.suffix(historyLines).map { "  " + $0 }
        }
        return batch
    }
}
