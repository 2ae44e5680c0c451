// The replication role of one node as a value: `handle(event) -> [Action]`, no I/O, no clock, no
// await inside. The shell (`ReplicationNode`: NIO sessions, the kernel, timers) gathers facts,
// feeds events and carries out the actions in their order; the simulator (`aerodb-crashtest
// sim`) runs three of these in one process under a seeded network and clock.
//
// Invariants (docs/INVARIANTS.md A1, A2, A4, SIM1-SIM6):
// - Admission decides in this order: (1) an epoch above this node's and naming this node: it is
//   being promoted and does not stream yet; (2) an epoch above this node's: learn it (A2) and
//   refuse; (3) not primary (nor a demoting primary, which still streams to drain): refuse; (4) the history check (P1/A4); only then (5) the follower
//   is registered in the ack ledger, at the position the check verified (0 when bootstrapped).
//   Nothing a follower says counts for `sync`/`all` before (4) passed: a deposed primary with a
//   diverged, longer log releases nothing (A1).
// - The history check bootstraps a follower older than the retained WAL only with a proof that
//   its log is a prefix of this history (`bootstrapProof`); anything else is diverged (A4).
// - Learning a higher epoch emits, in this order: refuse writes, fence (fail every waiting
//   commit in doubt), persist the marker, follow. A node not in `primary` mode releases no commit.
// - Promotion: `beginPromotion` (stop following: the position is final), the operator's checks
//   (`PromotionDecision`: the old primary does not answer as primary, no reachable replica is
//   ahead in `PromotionOrder`, the next epoch), the peers fenced, the checks again and a
//   majority of the members holding the epoch naming this node (`epochQuorum`), then
//   `.promote(epoch)`: forget replica progress, persist the marker, open the epoch, accept
//   writes; or `.promotionRefused`: follow again.
// - Switchover (the primary's half): `.demote` stops writes; `.drained` (the target and enough
//   replicas flushed everything, `PromotionDecision.drained`) fences, persists the new marker
//   and follows the target; `.demoteAborted` accepts writes again.
// - The node (`ReplicationNode`) and the simulator run this one value: the node executes the
//   actions (`ReplicationNode.execute`), the simulator applies them to its simulated nodes.
// - `faults` is empty outside the simulator; each fault reintroduces one known bug so that the
//   simulator shows its checks can fail (`aerodb-crashtest sim --sabotage NAME`).

import Kernel

/// What the shell reads from its log before asking the role to admit a follower at `position`.
package struct HistoryFacts: Sendable, Equatable {
    package enum Lookup: Sendable, Equatable {
        /// This log's record at the follower's LSN (or the position a record at oldest-1 names).
        case at(LogPosition)
        /// The LSN is past this log's end.
        case beyondEnd
        /// Recycled, or not looked up because it is older than the retained WAL.
        case unavailable
    }

    package struct OldestRecord: Sendable, Equatable {
        package var lsn: UInt64
        package var previousChecksum: UInt64
        package var epoch: UInt64
        package var isEpochRecord: Bool

        package init(lsn: UInt64, previousChecksum: UInt64, epoch: UInt64, isEpochRecord: Bool) {
            self.lsn = lsn
            self.previousChecksum = previousChecksum
            self.epoch = epoch
            self.isEpochRecord = isEpochRecord
        }
    }

    /// The oldest LSN the WAL retains (0: everything, or empty).
    package var oldestRetained: UInt64
    package var mine: Lookup
    package var oldest: OldestRecord?
    /// This node's epoch history's epoch for the follower's LSN (nil when it does not know).
    package var epochAtPosition: UInt64?
    package var durable: LogPosition

    package init(oldestRetained: UInt64, mine: Lookup, oldest: OldestRecord?, epochAtPosition: UInt64?, durable: LogPosition) {
        self.oldestRetained = oldestRetained
        self.mine = mine
        self.oldest = oldest
        self.epochAtPosition = epochAtPosition
        self.durable = durable
    }

    /// Whether the follower's LSN is within the retained WAL (so `mine` must be looked up).
    package static func withinRetained(_ lsn: UInt64, oldestRetained: UInt64) -> Bool {
        oldestRetained == 0 || lsn >= oldestRetained - 1
    }
}

/// Where a follower's position stands on this primary's history.
package enum HistoryCheck: Sendable, Equatable {
    /// On the history within the retained WAL: stream from the next LSN.
    case stream(from: UInt64)
    /// Older than the retained WAL and proven to hold nothing this history lacks.
    case bootstrap
    case diverged(String)
}

/// Bugs the simulator reintroduces on purpose (never set outside it).
package enum RoleFault: String, Sendable, CaseIterable {
    /// The follower's HELLO position counts for `sync`/`all` before the history check.
    case countHelloBeforeHistoryCheck = "hello-before-history-check"
    /// A follower older than the retained WAL is bootstrapped without the fork proof.
    case bootstrapWithoutProof = "bootstrap-without-proof"
    /// A `sync` commit is released with one replica flush fewer than needed.
    case releaseWithOneAckShort = "release-one-ack-short"
    /// Promotion compares durable LSNs only, not (epoch of the last record, LSN): how the node
    /// compared before protocol v3 (found by the simulator, see docs/REPLICATION.md).
    case promoteByLSNOnly = "promote-by-lsn-only"
    /// A min-LSN read is answered at once, without waiting for the LSN (`ClusterMiddleware`'s
    /// wait skipped): only the simulator's read model looks at it (SIM7).
    case readWithoutMinLSNWait = "read-without-min-lsn-wait"
    /// A min-LSN read ignores `X-AeroDB-Min-LSN-Epoch` (`ClusterMiddleware.otherHistory`
    /// skipped): a node holding another epoch's record at the LSN answers from that history.
    case readWithoutEpochCheck = "read-without-epoch-check"
    /// A node acknowledges what it has written before its flush: a primary releases a commit,
    /// a replica reports its received LSN as durable (only the simulator's disk model looks at
    /// it: a power cut then loses an acknowledged write, SIM8).
    case ackBeforeFlush = "ack-before-flush"
}

/// The promotion's "most up-to-date" order (Raft's log comparison, epochs as terms): a log whose
/// last record is of a higher epoch is ahead whatever its length, since a record of epoch E was
/// written by E's only writer after everything of lower epochs it holds was settled; within one
/// epoch the longer log is ahead. A deposed primary's longer tail in an old epoch is never ahead
/// of a replica that holds records of the newer epoch.
package enum PromotionOrder {
    package static func isAhead(_ a: (epoch: UInt64, lsn: UInt64), of b: (epoch: UInt64, lsn: UInt64),
                                faults: Set<RoleFault> = []) -> Bool {
        if faults.contains(.promoteByLSNOnly) { return a.lsn > b.lsn }
        return a.epoch != b.epoch ? a.epoch > b.epoch : a.lsn > b.lsn
    }
}

/// The operator's promotion and switchover decisions over facts the shell gathered (probes,
/// positions): pure, shared by `ReplicationNode` (promote, switchover, demote) and the simulator.
package enum PromotionDecision {
    /// A node's last durable record: its epoch (0: the peer could not tell) and LSN.
    package typealias Key = (epoch: UInt64, lsn: UInt64)

    /// The old primary answered as primary of an epoch not below the candidate's: a failover is
    /// refused (a planned handover is a switchover).
    package static func oldPrimaryAnswers(isPrimary: Bool, epoch: UInt64, candidateEpoch: UInt64) -> Bool {
        isPrimary && epoch >= candidateEpoch
    }

    /// `PromotionOrder`, except that a key of unknown epoch (0) is compared by LSN alone.
    package static func isAhead(_ a: Key, of b: Key, faults: Set<RoleFault> = []) -> Bool {
        a.epoch == 0 || b.epoch == 0 ? a.lsn > b.lsn : PromotionOrder.isAhead(a, of: b, faults: faults)
    }

    /// The best of `peers` ahead of the candidate `me`, or nil when none is ahead.
    package static func betterCandidate(than me: Key, among peers: [(String, Key)],
                                        faults: Set<RoleFault> = []) -> (String, Key)? {
        peers.filter { isAhead($0.1, of: me, faults: faults) }.max { isAhead($1.1, of: $0.1, faults: faults) }
    }

    /// The promotion's epoch: above every epoch the candidate and the answering peers know.
    package static func nextEpoch(mine: UInt64, peers: [UInt64]) -> UInt64 {
        (peers + [mine]).max()! &+ 1
    }

    /// Members (the candidate included) that must hold an epoch naming the candidate before it
    /// opens it: a majority of the cluster's `members`. Two majorities share a member, and a
    /// member holds one primary per epoch (`ReplicationRole.learn` ignores an epoch equal to its
    /// own, whoever it names), so two candidates never both reach it for one epoch (A1).
    package static func majority(members: Int) -> Int { max(members, 1) / 2 + 1 }

    /// Whether a peer's answer to ADOPT (its state after the adoption) is its durable adoption of
    /// `epoch` naming `candidate`: the same epoch naming another primary (it adopted another
    /// candidate's first) or a higher epoch does not count.
    package static func adopted(_ answer: (epoch: UInt64, primary: String), epoch: UInt64, candidate: String) -> Bool {
        answer.epoch == epoch && answer.primary == candidate
    }

    /// The majority check of a promotion to `epoch`: the candidate plus the peers whose ADOPT
    /// answer counts (`adopted`), against `majority(members:)`. `force` proceeds without it.
    package struct EpochQuorum: Sendable, Equatable {
        /// The members holding the epoch naming the candidate, the candidate first.
        package var holders: [String]
        package var needed: Int
        package var members: Int
        package var reached: Bool { holders.count >= needed }
    }

    package static func epochQuorum(candidate: String, epoch: UInt64, members: Int,
                                    answers: [(node: String, epoch: UInt64, primary: String)]) -> EpochQuorum {
        let peers = answers.filter { $0.node != candidate && adopted(($0.epoch, $0.primary), epoch: epoch, candidate: candidate) }
        return EpochQuorum(holders: [candidate] + Set(peers.map(\.node)).sorted(), needed: majority(members: members), members: members)
    }

    /// The primary's half of a switchover may hand over: the target and `needed` replicas
    /// flushed everything through `last`.
    package static func drained(last: UInt64, target: UInt64?, replicas: [UInt64], needed: Int) -> Bool {
        (target ?? 0) >= last && replicas.filter { $0 >= last }.count >= needed
    }
}

/// The ack accounting of `sync`/`all` commits as a value (what `AckTracker` locks and the
/// simulator owns): replica positions per session and the waits they release.
///
/// Incremental: a wait of `needed` flushes is satisfied once the `needed`-th highest replica
/// position reaches its LSN, so the waits of each `needed` are kept in LSN order and a flush
/// report releases a prefix of them (no scan of every wait per ACK). Waits that expired stay in
/// that order as tombstones until the prefix passes them; the order is rebuilt when tombstones
/// outnumber the live waits (`tombstonesMax`), so it never grows past twice the waits pending.
package struct AckLedger: Sendable, Equatable {
    package struct Replica: Sendable, Equatable {
        package let session: Int
        /// What counts for waits: min(what it reported durable, `sentThrough`), only growing.
        package var durable: UInt64
        /// The highest LSN this session verified or sent to the replica.
        package var sentThrough: UInt64
    }

    package struct Wait: Sendable, Equatable {
        package let lsn: UInt64
        package let needed: Int
    }

    struct Pending: Sendable, Equatable {
        let lsn: UInt64
        let id: Int
    }

    package private(set) var replicas: [String: Replica] = [:]
    package private(set) var waits: [Int: Wait] = [:]
    /// The waits of each `needed`, in (LSN, id) order, from `head` on (expired ones included).
    private var order: [Int: (head: Int, items: [Pending])] = [:]
    /// Subtracted from `needed` (the `release-one-ack-short` sabotage only).
    package var slack = 0
    /// Entries of `order` that are not pending any more, beyond which it is rebuilt.
    static let tombstonesMax = 64

    package init() {}

    package static func == (a: AckLedger, b: AckLedger) -> Bool {
        a.replicas == b.replicas && a.waits == b.waits && a.slack == b.slack
    }

    package var durable: [String: UInt64] { replicas.mapValues(\.durable) }

    /// The lowest position any replica holds (the retention floor), nil without replicas.
    package var minDurable: UInt64? {
        var low: UInt64?
        for r in replicas.values { low = min(low ?? r.durable, r.durable) }
        return low
    }

    package func count(_ lsn: UInt64) -> Int {
        var n = 0
        for r in replicas.values where r.durable >= lsn { n += 1 }
        return n
    }

    package func satisfied(_ lsn: UInt64, needed: Int) -> Bool { count(lsn) >= needed - slack }

    /// The highest LSN a wait of `needed` flushes is satisfied at: the (needed - slack)-th
    /// highest replica position; nil when too few replicas are connected.
    private func threshold(_ needed: Int) -> UInt64? {
        let n = needed - slack
        if n <= 0 { return UInt64.max }
        guard replicas.count >= n else { return nil }
        var top: [UInt64] = []
        top.reserveCapacity(replicas.count)
        for r in replicas.values { top.append(r.durable) }
        top.sort(by: >)
        return top[n - 1]
    }

    /// A follower's session passed the history check: it holds this history through
    /// `verified`. Replaces any earlier session of the node. Returns the waits released.
    package mutating func admit(_ node: String, session: Int, verified: UInt64) -> [Int] {
        replicas[node] = Replica(session: session, durable: verified, sentThrough: verified)
        return released()
    }

    package mutating func sent(_ node: String, session: Int, through lsn: UInt64) {
        guard var r = replicas[node], r.session == session else { return }
        r.sentThrough = max(r.sentThrough, lsn)
        replicas[node] = r
    }

    /// A flush report, counted up to what the session sent. Returns the waits released.
    package mutating func update(_ node: String, session: Int, durable: UInt64) -> [Int] {
        guard var r = replicas[node], r.session == session else { return [] }
        let before = r.durable
        r.durable = max(r.durable, min(durable, r.sentThrough))
        replicas[node] = r
        return r.durable == before ? [] : released()  // nothing moved: nothing more is satisfied
    }

    package mutating func forget(_ node: String, session: Int) {
        if replicas[node]?.session == session { replicas[node] = nil }
    }

    /// Registers a wait; true when it is already satisfied (then it is not kept).
    package mutating func wait(_ id: Int, lsn: UInt64, needed: Int) -> Bool {
        if satisfied(lsn, needed: needed) { return true }
        waits[id] = Wait(lsn: lsn, needed: needed)
        var q = order[needed] ?? (0, [])
        let entry = Pending(lsn: lsn, id: id)
        if let last = q.items.last, (last.lsn, last.id) > (lsn, id) {
            var lo = q.head, hi = q.items.count  // first entry after this one
            while lo < hi {
                let mid = (lo + hi) / 2
                if (q.items[mid].lsn, q.items[mid].id) < (lsn, id) { lo = mid + 1 } else { hi = mid }
            }
            q.items.insert(entry, at: lo)
        } else {
            q.items.append(entry)
        }
        order[needed] = q
        return false
    }

    /// Removes a wait (timed out); true when it was pending.
    package mutating func expire(_ id: Int) -> Bool {
        guard let w = waits.removeValue(forKey: id) else { return false }
        if let q = order[w.needed], q.items.count - q.head > 2 * waits.count + Self.tombstonesMax {
            order[w.needed] = (0, q.items[q.head...].filter { waits[$0.id] != nil })
        }
        return true
    }

    /// Removes every wait (fence); returns their ids, sorted.
    package mutating func drain() -> [Int] {
        defer {
            waits = [:]
            order = [:]
        }
        return waits.keys.sorted()
    }

    package mutating func reset() { replicas = [:] }

    /// The waits satisfied now, removed; their ids sorted.
    private mutating func released() -> [Int] {
        guard !waits.isEmpty else { return [] }
        var out: [Int] = []
        for (needed, queue) in order {
            guard let limit = threshold(needed) else { continue }
            var q = queue
            while q.head < q.items.count, q.items[q.head].lsn <= limit {
                let id = q.items[q.head].id
                if waits.removeValue(forKey: id) != nil { out.append(id) }
                q.head += 1
            }
            if q.head == q.items.count { q = (0, []) } else if q.head > Self.tombstonesMax && q.head * 2 > q.items.count {
                q = (0, Array(q.items[q.head...]))
            }
            order[needed] = q
        }
        return out.sorted()
    }
}

package struct ReplicationRole: Sendable {
    package enum Mode: String, Sendable, Equatable {
        /// Accepts writes in `epoch`.
        case primary
        /// Follows `primary`.
        case replica
        /// Learned it was deposed: refuses writes, releases nothing, until it follows.
        case fenced
        /// An operator is promoting this node: it follows nobody and does not stream yet.
        case promoting
        /// Switchover: writes stopped, draining to the target.
        case demoting
        /// Refused as diverged: halts until rejoin (A4).
        case diverged
    }

    package enum RefuseReason: Sendable, Equatable { case notPrimary, staleEpoch, diverged }

    package enum Event: Sendable, Equatable {
        /// A follower's HELLO (purpose follow) with the facts the shell read at its position.
        case followHello(node: String, epoch: UInt64, primary: String, position: LogPosition, positionEpoch: UInt64,
                         facts: HistoryFacts)
        /// The shell is about to send records (or a checkpoint) through `lsn` in the session.
        case sent(node: String, session: Int, through: UInt64)
        case ack(node: String, session: Int, durable: UInt64)
        case disconnected(node: String, session: Int)
        /// A local commit is durable and waits for `needed` replica flushes.
        case commitDurable(wait: Int, lsn: UInt64, needed: Int)
        case waitExpired(wait: Int)
        /// A message (HELLO, probe answer, WELCOME, REFUSE, adopt) named a higher epoch.
        case learned(epoch: UInt64, primary: String)
        /// The operator starts a promotion of this node: it stops following (its position is final).
        case beginPromotion
        /// The operator's promotion passed its checks: open `epoch` with this node primary.
        case promote(epoch: UInt64)
        /// The operator's promotion was refused after `promoting`: follow again.
        case promotionRefused
        /// The primary's half of a switchover to `target` starts / has drained.
        case demote(epoch: UInt64, target: String)
        case demoteAborted
        /// The target and enough replicas flushed everything: hand over (`PromotionDecision.drained`).
        case drained
        /// The primary refused this node as diverged (A4).
        case refusedDiverged
        /// `aerodb rejoin` cut the log after the fork: follow again.
        case rejoined
    }

    package enum Action: Sendable, Equatable {
        case refuse(node: String, RefuseReason, epoch: UInt64, primary: String, message: String)
        case stream(node: String, session: Int, from: UInt64)
        case bootstrap(node: String, session: Int)
        case release(waits: [Int])
        /// These waits end in doubt (a wait expired, or a commit durable on a node not primary).
        case failInDoubt(waits: [Int])
        /// Leave the primary role: fail every waiting commit in doubt (the node: every wait of its
        /// `AckTracker`; `waits` are the ones this value's ledger held), release nothing more.
        case fence(waits: [Int])
        /// Forget every replica's progress (a new epoch of this node's: sessions start anew).
        case forgetReplicas
        case acceptWrites(Bool)
        /// Replace the authority marker durably.
        case persistMarker(epoch: UInt64, primary: String)
        /// Append the epoch record opening `epoch` (after the marker is durable).
        case openEpoch(UInt64)
        case follow(primary: String)
        case stopFollowing
    }

    package let nodeID: String
    package private(set) var epoch: UInt64
    package private(set) var primary: String
    package private(set) var mode: Mode
    package private(set) var ledger = AckLedger()
    package private(set) var nextSession = 0
    /// The switchover in progress (mode `demoting`): its epoch and target.
    package private(set) var demotion: (epoch: UInt64, target: String)?
    package let faults: Set<RoleFault>

    package init(nodeID: String, epoch: UInt64, primary: String, faults: Set<RoleFault> = []) {
        self.nodeID = nodeID
        self.epoch = epoch
        self.primary = primary
        self.mode = primary == nodeID ? .primary : .replica
        self.faults = faults
        ledger.slack = faults.contains(.releaseWithOneAckShort) ? 1 : 0
    }

    package var isPrimary: Bool { mode == .primary }

    /// Whether a follow HELLO of `epoch` reaches the history check (the shell reads the facts
    /// from its log only then).
    package func needsHistoryFacts(epoch e: UInt64) -> Bool {
        e <= epoch && (mode == .primary || mode == .demoting)
    }

    package mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .followHello(let node, let e, let p, let position, let positionEpoch, let facts):
            return admit(node: node, epoch: e, primary: p, position: position, positionEpoch: positionEpoch, facts: facts)
        case .sent(let node, let session, let lsn):
            ledger.sent(node, session: session, through: lsn)
            return []
        case .ack(let node, let session, let durable):
            let ready = ledger.update(node, session: session, durable: durable)
            return releasing(ready)
        case .disconnected(let node, let session):
            ledger.forget(node, session: session)
            return []
        case .commitDurable(let id, let lsn, let needed):
            guard mode == .primary else { return [.failInDoubt(waits: [id])] }
            if needed <= 0 || ledger.wait(id, lsn: lsn, needed: needed) { return [.release(waits: [id])] }
            return []
        case .waitExpired(let id):
            return ledger.expire(id) ? [.failInDoubt(waits: [id])] : []
        case .learned(let e, let p):
            return learn(epoch: e, primary: p)
        case .beginPromotion:
            guard mode == .replica else { return [] }
            mode = .promoting
            return [.stopFollowing]
        case .promote(let e):
            guard e > epoch else { return [] }
            ledger.reset()
            epoch = e
            primary = nodeID
            mode = .primary
            return [.stopFollowing, .forgetReplicas, .persistMarker(epoch: e, primary: nodeID), .openEpoch(e), .acceptWrites(true)]
        case .promotionRefused:
            guard mode == .promoting else { return [] }
            mode = .replica
            return [.follow(primary: primary)]
        case .demote(let e, let target):
            guard mode == .primary, e > epoch, target != nodeID else { return [] }
            mode = .demoting
            demotion = (e, target)
            return [.acceptWrites(false)]
        case .demoteAborted:
            guard mode == .demoting else { return [] }
            mode = .primary
            demotion = nil
            return [.acceptWrites(true)]
        case .drained:
            // The demoting primary drained to its target: adopt the new epoch and follow it.
            guard mode == .demoting, let (e, target) = demotion else { return [] }
            let failed = ledger.drain()
            ledger.reset()
            demotion = nil
            epoch = e
            primary = target
            mode = .replica
            return [.fence(waits: failed), .persistMarker(epoch: e, primary: target), .follow(primary: target)]
        case .refusedDiverged:
            guard mode == .replica || mode == .fenced else { return [] }
            mode = .diverged
            return [.stopFollowing]
        case .rejoined:
            guard mode == .diverged else { return [] }
            mode = .replica
            return [.follow(primary: primary)]
        }
    }

    private func releasing(_ ids: [Int]) -> [Action] {
        guard !ids.isEmpty else { return [] }
        return [.release(waits: ids)]
    }

    private mutating func learn(epoch e: UInt64, primary p: String) -> [Action] {
        // Only an explicit promotion makes this node primary (A3): a peer naming it is ignored.
        // An epoch equal to this node's is ignored whoever it names: an ADOPT of it for the
        // primary already held is idempotent, one naming another candidate is refused (its
        // answer names the first: `PromotionDecision.adopted`), so one epoch has one majority.
        guard e > epoch, p != nodeID else { return [] }
        var out: [Action] = []
        if mode == .primary || mode == .demoting {
            out.append(.acceptWrites(false))
            out.append(.fence(waits: ledger.drain()))
            ledger.reset()
            demotion = nil
        }
        epoch = e
        primary = p
        out.append(.persistMarker(epoch: e, primary: p))
        if mode == .diverged { return out }  // it stays halted until rejoin
        mode = .replica
        out.append(.follow(primary: p))
        return out
    }

    private mutating func admit(node: String, epoch e: UInt64, primary p: String, position: LogPosition,
                                positionEpoch: UInt64, facts: HistoryFacts) -> [Action] {
        if e > epoch && p == nodeID {
            return [.refuse(node: node, .notPrimary, epoch: epoch, primary: primary,
                            message: "\(nodeID) is being promoted to epoch \(e) and does not stream yet")]
        }
        if e > epoch {
            var out = learn(epoch: e, primary: p)
            out.append(.refuse(node: node, .staleEpoch, epoch: epoch, primary: primary,
                               message: "this node learned of epoch \(e) from you and stopped being primary"))
            return out
        }
        // A demoting primary still streams: its target and replicas drain what it wrote.
        guard mode == .primary || mode == .demoting else {
            return [.refuse(node: node, .notPrimary, epoch: epoch, primary: primary,
                            message: "\(nodeID) is not the primary; \(primary) is, in epoch \(epoch)")]
        }
        var early: [Int] = []
        let session = nextSession
        if faults.contains(.countHelloBeforeHistoryCheck) {
            // The bug this order prevents: the claimed position counts before it is checked.
            nextSession += 1
            early = ledger.admit(node, session: session, verified: position.lsn)
        }
        let check = Self.historyCheck(position, recordEpoch: positionEpoch, facts: facts, faults: faults)
        if case .diverged(let why) = check {
            return releasing(early) + [.refuse(node: node, .diverged, epoch: epoch, primary: primary,
                                               message: "position \(position.lsn) is not proven to be on the history of \(nodeID): \(why); run `aerodb rejoin`")]
        }
        if !faults.contains(.countHelloBeforeHistoryCheck) { nextSession += 1 }
        // A streamed follower verifiably holds this history through its position; a bootstrapped
        // one holds nothing that counts until it reports the shipped checkpoint installed.
        let verified: UInt64 = check == .bootstrap ? 0 : position.lsn
        let ready = ledger.admit(node, session: session, verified: verified)
        switch check {
        case .stream(let from): return releasing(early + ready) + [.stream(node: node, session: session, from: from)]
        case .bootstrap, .diverged: return releasing(early + ready) + [.bootstrap(node: node, session: session)]
        }
    }

    /// P1/A4: the follower's last durable record `position`, of epoch `recordEpoch`, against
    /// this node's log. Within the retained WAL the record at its LSN must have its checksum.
    /// Older than that, `bootstrapProof` decides.
    package static func historyCheck(_ position: LogPosition, recordEpoch: UInt64, facts: HistoryFacts,
                                     faults: Set<RoleFault> = []) -> HistoryCheck {
        if HistoryFacts.withinRetained(position.lsn, oldestRetained: facts.oldestRetained) {
            switch facts.mine {
            case .beyondEnd:
                return .diverged("it is ahead of this primary's log (durable \(facts.durable))")
            case .at(let mine):
                guard mine == position else {
                    return .diverged("its record \(position.lsn) differs from this primary's (\(mine))")
                }
                return .stream(from: position.lsn + 1)
            case .unavailable:
                break  // recycled meanwhile: the proof decides
            }
        }
        return bootstrapProof(position, recordEpoch: recordEpoch, facts: facts, faults: faults)
    }

    /// A follower whose last record (LSN L, of epoch E) is older than every record this node
    /// retains is bootstrapped only when its log is provably a prefix of this history: L = 0; or
    /// L is just before the oldest retained record and that record's previous checksum names it;
    /// or this node's epoch history says its own record at L is of epoch E (one writer per
    /// epoch (A1), durable records never rewritten: both are that writer's record at L, and by
    /// the hash chain so is everything before); or, when the history does not reach back to L,
    /// the oldest retained record is of epoch E and not its first. Anything else is diverged.
    package static func bootstrapProof(_ position: LogPosition, recordEpoch: UInt64, facts: HistoryFacts,
                                       faults: Set<RoleFault> = []) -> HistoryCheck {
        if position.lsn == 0 { return .bootstrap }
        guard let oldest = facts.oldest else {
            return .diverged("this primary retains no record to prove LSN \(position.lsn) against")
        }
        guard position.lsn < oldest.lsn else {
            return .diverged("record \(position.lsn) is no longer readable on this primary")
        }
        if position.lsn + 1 == oldest.lsn {
            return position.checksum == oldest.previousChecksum ? .stream(from: oldest.lsn)
                : .diverged("its record \(position.lsn) differs from the one this primary's record \(oldest.lsn) follows")
        }
        if faults.contains(.bootstrapWithoutProof) { return .bootstrap }
        let mine = facts.epochAtPosition
        if recordEpoch != 0, mine == recordEpoch { return .bootstrap }
        if mine == nil, recordEpoch != 0, recordEpoch == oldest.epoch, !oldest.isEpochRecord { return .bootstrap }
        let here = mine.map { "epoch \($0)" } ?? "an epoch this primary's history no longer knows"
        return .diverged("its last record (LSN \(position.lsn), epoch \(recordEpoch)) is older than this primary's retained WAL "
                         + "(from LSN \(oldest.lsn)) and this primary's record there is of \(here): that it is on this history cannot be proven")
    }
}
