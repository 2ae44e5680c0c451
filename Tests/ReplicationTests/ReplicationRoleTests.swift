// The replication role as a value (`ReplicationRole`, `AckLedger`, `PromotionOrder`): the
// decisions the node and the simulator share, tested without I/O.

import Kernel
@testable import Replication
import Testing

@Suite struct ReplicationRoleTests {
    static func facts(_ mine: HistoryFacts.Lookup, oldestRetained: UInt64 = 0, oldest: HistoryFacts.OldestRecord? = nil,
                      epochAt: UInt64? = nil) -> HistoryFacts {
        HistoryFacts(oldestRetained: oldestRetained, mine: mine, oldest: oldest, epochAtPosition: epochAt,
                     durable: LogPosition(lsn: 12, checksum: 0xC))
    }

    static func primary(faults: Set<RoleFault> = []) -> ReplicationRole {
        ReplicationRole(nodeID: "n2", epoch: 2, primary: "n2", faults: faults)
    }

    /// A1/SIM2: a deposed primary's HELLO with a diverged, longer log is refused before anything
    /// of it counts: a pending `sync` commit stays pending. The sabotage releases it.
    @Test func aDivergedLongerFollowerIsRefusedBeforeItCountsForSyncWaits() {
        for faults: Set<RoleFault> in [[], [.countHelloBeforeHistoryCheck]] {
            var role = Self.primary(faults: faults)
            #expect(role.handle(.commitDurable(wait: 7, lsn: 11, needed: 1)).isEmpty)
            let actions = role.handle(.followHello(node: "n1", epoch: 2, primary: "n2", position: LogPosition(lsn: 30, checksum: 0xBAD),
                                                   positionEpoch: 1, facts: Self.facts(.beyondEnd)))
            let released = actions.contains(.release(waits: [7]))
            #expect(actions.contains { if case .refuse(_, .diverged, _, _, _) = $0 { return true } else { return false } })
            #expect(released == !faults.isEmpty, "released \(released) with faults \(faults)")
            if faults.isEmpty { #expect(role.ledger.replicas["n1"] == nil) }
        }
    }

    /// An honest follower is admitted at its verified position and counts only up to what the
    /// session sent it.
    @Test func aFollowerCountsOnlyWhatItsSessionVerifiedOrSent() {
        var role = Self.primary()
        let at = LogPosition(lsn: 10, checksum: 0xA)
        let actions = role.handle(.followHello(node: "n3", epoch: 2, primary: "n2", position: at, positionEpoch: 2, facts: Self.facts(.at(at))))
        #expect(actions == [.stream(node: "n3", session: 0, from: 11)])
        #expect(role.handle(.commitDurable(wait: 1, lsn: 12, needed: 1)).isEmpty)
        #expect(role.handle(.ack(node: "n3", session: 0, durable: 12)).isEmpty, "claims more than it was sent")
        #expect(role.handle(.sent(node: "n3", session: 0, through: 12)).isEmpty)
        #expect(role.handle(.ack(node: "n3", session: 0, durable: 12)) == [.release(waits: [1])])
        // A closed session's ACKs are ignored.
        #expect(role.handle(.commitDurable(wait: 2, lsn: 13, needed: 1)).isEmpty)
        _ = role.handle(.disconnected(node: "n3", session: 0))
        _ = role.handle(.sent(node: "n3", session: 0, through: 13))
        #expect(role.handle(.ack(node: "n3", session: 0, durable: 13)).isEmpty)
        #expect(role.handle(.waitExpired(wait: 2)) == [.failInDoubt(waits: [2])])
    }

    /// A4: the bootstrap proof of a follower older than the retained WAL.
    @Test func aFollowerOlderThanTheRetainedWALIsBootstrappedOnlyWithAProof() {
        let oldest = HistoryFacts.OldestRecord(lsn: 50, previousChecksum: 0x49, epoch: 2, isEpochRecord: false)
        func check(_ lsn: UInt64, _ checksum: UInt64, epoch: UInt64, epochAt: UInt64?, faults: Set<RoleFault> = []) -> HistoryCheck {
            ReplicationRole.historyCheck(LogPosition(lsn: lsn, checksum: checksum), recordEpoch: epoch,
                                         facts: Self.facts(.unavailable, oldestRetained: 50, oldest: oldest, epochAt: epochAt), faults: faults)
        }
        #expect(check(0, 0, epoch: 0, epochAt: nil) == .bootstrap)  // empty
        #expect(check(49, 0x49, epoch: 2, epochAt: 2) == .stream(from: 50))  // just before, chained
        if case .diverged = check(49, 0x48, epoch: 2, epochAt: 2) {} else { Issue.record("a wrong checksum before the oldest record") }
        #expect(check(30, 0x30, epoch: 1, epochAt: 1) == .bootstrap)  // same epoch at its LSN: same writer
        // The deposed primary's tail: this history has epoch 2 at its LSN.
        if case .diverged = check(40, 0x40, epoch: 1, epochAt: 2) {} else { Issue.record("a deposed primary's tail was bootstrapped") }
        #expect(check(40, 0x40, epoch: 1, epochAt: 2, faults: [.bootstrapWithoutProof]) == .bootstrap)
        // History does not reach back: the oldest retained record is of its epoch and not its first.
        #expect(check(30, 0x30, epoch: 2, epochAt: nil) == .bootstrap)
        if case .diverged = check(30, 0x30, epoch: 0, epochAt: nil) {} else { Issue.record("an unknown epoch was bootstrapped") }
    }

    /// A2: learning a higher epoch stops writes, fails waits in doubt, persists, then follows.
    @Test func learningAHigherEpochFencesBeforeThePersistedMarker() {
        var role = Self.primary()
        _ = role.handle(.commitDurable(wait: 4, lsn: 20, needed: 1))
        #expect(role.handle(.learned(epoch: 2, primary: "n1")).isEmpty, "not higher")
        #expect(role.handle(.learned(epoch: 5, primary: "n2")).isEmpty, "a peer naming this node is ignored (A3)")
        #expect(role.handle(.learned(epoch: 3, primary: "n1"))
                == [.acceptWrites(false), .fence(waits: [4]), .persistMarker(epoch: 3, primary: "n1"), .follow(primary: "n1")])
        #expect(role.mode == .replica)
        // A fenced node releases nothing: a commit reaching it fails in doubt.
        #expect(role.handle(.commitDurable(wait: 5, lsn: 21, needed: 1)) == [.failInDoubt(waits: [5])])
        // A HELLO of a higher epoch naming this node: it is being promoted and does not stream.
        var other = Self.primary()
        let a = other.handle(.followHello(node: "n3", epoch: 3, primary: "n2", position: .origin, positionEpoch: 0, facts: Self.facts(.at(.origin))))
        #expect(a.count == 1 && other.mode == .primary)
    }

    /// Promotion's order: a deposed primary's longer tail of an older epoch is not ahead.
    @Test func promotionComparesTheEpochOfTheLastRecordBeforeTheLSN() {
        #expect(!PromotionOrder.isAhead((epoch: 1, lsn: 600), of: (epoch: 2, lsn: 400)))
        #expect(PromotionOrder.isAhead((epoch: 2, lsn: 401), of: (epoch: 2, lsn: 400)))
        #expect(PromotionOrder.isAhead((epoch: 1, lsn: 600), of: (epoch: 2, lsn: 400), faults: [.promoteByLSNOnly]))
        // What `aerodb promote` and the simulator's operator call: the best peer ahead, if any;
        // a peer that cannot tell its record's epoch (0) is compared by LSN alone.
        let peers: [(String, PromotionDecision.Key)] = [("n1", (1, 600)), ("n3", (2, 410)), ("n4", (2, 405))]
        #expect(PromotionDecision.betterCandidate(than: (2, 400), among: peers)?.0 == "n3")
        #expect(PromotionDecision.betterCandidate(than: (2, 420), among: peers) == nil)
        #expect(PromotionDecision.betterCandidate(than: (2, 420), among: peers, faults: [.promoteByLSNOnly])?.0 == "n1")
        #expect(PromotionDecision.betterCandidate(than: (0, 500), among: peers)?.0 == "n1")
        #expect(PromotionDecision.nextEpoch(mine: 2, peers: [3, 1]) == 4)
        #expect(PromotionDecision.oldPrimaryAnswers(isPrimary: true, epoch: 2, candidateEpoch: 2))
        #expect(!PromotionDecision.oldPrimaryAnswers(isPrimary: false, epoch: 3, candidateEpoch: 2))
    }

    /// A1: an epoch opens only with a majority of the members holding it naming the candidate
    /// (the candidate counts itself); a member that adopted the epoch naming another candidate
    /// keeps it (refuses the second ADOPT), so two candidates never both reach a majority for it.
    @Test func anEpochOpensOnlyWithAMajorityAndOneMemberHoldsOnePrimaryPerEpoch() {
        #expect(PromotionDecision.majority(members: 1) == 1)
        #expect(PromotionDecision.majority(members: 2) == 2)
        #expect(PromotionDecision.majority(members: 3) == 2)
        #expect(PromotionDecision.majority(members: 4) == 3)
        #expect(PromotionDecision.majority(members: 5) == 3)
        // Three members, n1 (the old primary) dead: n2 alone is one of three.
        let alone = PromotionDecision.epochQuorum(candidate: "n2", epoch: 3, members: 3, answers: [])
        #expect(!alone.reached && alone.holders == ["n2"] && alone.needed == 2)
        let withN3 = PromotionDecision.epochQuorum(candidate: "n2", epoch: 3, members: 3, answers: [("n3", 3, "n2")])
        #expect(withN3.reached && withN3.holders == ["n2", "n3"])
        // n3 answers epoch 3 naming n4 (it adopted another candidate's first) or a higher epoch: not counted.
        #expect(!PromotionDecision.epochQuorum(candidate: "n2", epoch: 3, members: 3, answers: [("n3", 3, "n4")]).reached)
        #expect(!PromotionDecision.epochQuorum(candidate: "n2", epoch: 3, members: 3, answers: [("n3", 4, "n2")]).reached)
        // Five members: a duplicate answer, or the candidate's own, counts once.
        let five = PromotionDecision.epochQuorum(candidate: "n2", epoch: 7, members: 5,
                                                 answers: [("n3", 7, "n2"), ("n3", 7, "n2"), ("n2", 7, "n2"), ("n5", 7, "n4")])
        #expect(!five.reached && five.holders == ["n2", "n3"] && five.needed == 3)

        // The role: an ADOPT of an epoch it holds naming another primary changes nothing (refused:
        // its state still names the first), naming the same primary is idempotent; a higher one is learned.
        var voter = ReplicationRole(nodeID: "n3", epoch: 2, primary: "n1")
        #expect(voter.handle(.learned(epoch: 3, primary: "n2")) == [.persistMarker(epoch: 3, primary: "n2"), .follow(primary: "n2")])
        #expect(voter.handle(.learned(epoch: 3, primary: "n4")).isEmpty)
        #expect(voter.epoch == 3 && voter.primary == "n2")
        #expect(voter.handle(.learned(epoch: 3, primary: "n2")).isEmpty)
        #expect(PromotionDecision.adopted((voter.epoch, voter.primary), epoch: 3, candidate: "n2"))
        #expect(!PromotionDecision.adopted((voter.epoch, voter.primary), epoch: 3, candidate: "n4"))
        // So with n1 dead and n2, n4 both promoting to epoch 3 in a 5-member cluster, each voter
        // answers one of them: n2 collects {n2, n3}, n4 collects {n4, n5}; neither reaches 3.
        var n5 = ReplicationRole(nodeID: "n5", epoch: 2, primary: "n1")
        _ = n5.handle(.learned(epoch: 3, primary: "n4"))
        _ = n5.handle(.learned(epoch: 3, primary: "n2"))
        let answers = [("n3", voter.epoch, voter.primary), ("n5", n5.epoch, n5.primary)]
        let q2 = PromotionDecision.epochQuorum(candidate: "n2", epoch: 3, members: 5, answers: answers)
        let q4 = PromotionDecision.epochQuorum(candidate: "n4", epoch: 3, members: 5, answers: answers)
        #expect(q2.holders == ["n2", "n3"] && q4.holders == ["n4", "n5"] && !q2.reached && !q4.reached)
    }

    /// A3: a promotion stops following first; refused, it follows again; passed, it forgets the
    /// old replicas, persists the marker before it opens the epoch, and only then accepts writes.
    @Test func aPromotionStopsFollowingThenOpensTheEpochOrFollowsAgain() {
        var role = ReplicationRole(nodeID: "n2", epoch: 2, primary: "n1")
        #expect(role.handle(.beginPromotion) == [.stopFollowing])
        #expect(role.mode == .promoting)
        #expect(role.handle(.beginPromotion).isEmpty, "one promotion at a time")
        #expect(role.handle(.promotionRefused) == [.follow(primary: "n1")])
        #expect(role.mode == .replica)
        _ = role.handle(.beginPromotion)
        #expect(role.handle(.promote(epoch: 2)).isEmpty, "not above its epoch")
        #expect(role.handle(.promote(epoch: 3))
                == [.stopFollowing, .forgetReplicas, .persistMarker(epoch: 3, primary: "n2"), .openEpoch(3), .acceptWrites(true)])
        #expect(role.isPrimary && role.epoch == 3)
    }

    /// Switchover, the primary's half: writes stop, it still streams to drain; drained, it
    /// fences, persists the new marker and follows the target; aborted, it accepts writes again.
    @Test func aSwitchoverStopsWritesDrainsThenHandsOverOrResumes() {
        var role = Self.primary()
        #expect(role.handle(.demote(epoch: 2, target: "n1")).isEmpty, "the epoch must be above its own")
        #expect(role.handle(.demote(epoch: 3, target: "n2")).isEmpty, "not to itself")
        #expect(role.handle(.demote(epoch: 3, target: "n1")) == [.acceptWrites(false)])
        #expect(role.mode == .demoting)
        let hello = role.handle(.followHello(node: "n1", epoch: 2, primary: "n2", position: LogPosition(lsn: 12, checksum: 0xC),
                                             positionEpoch: 2, facts: Self.facts(.at(LogPosition(lsn: 12, checksum: 0xC)))))
        #expect(hello == [.stream(node: "n1", session: 0, from: 13)], "a demoting primary streams to drain")
        #expect(role.handle(.demoteAborted) == [.acceptWrites(true)])
        #expect(role.isPrimary)
        _ = role.handle(.demote(epoch: 3, target: "n1"))
        _ = role.handle(.commitDurable(wait: 9, lsn: 13, needed: 1))
        #expect(role.handle(.drained) == [.fence(waits: []), .persistMarker(epoch: 3, primary: "n1"), .follow(primary: "n1")])
        #expect(role.mode == .replica && role.epoch == 3 && role.primary == "n1")
        #expect(role.handle(.drained).isEmpty, "once")
        #expect(PromotionDecision.drained(last: 13, target: 13, replicas: [13, 10], needed: 1))
        #expect(!PromotionDecision.drained(last: 13, target: 12, replicas: [13, 13], needed: 1), "the target itself must hold it")
        #expect(!PromotionDecision.drained(last: 13, target: 13, replicas: [13, 10], needed: 2))
    }

    /// The ledger releases waits incrementally: in LSN order per `needed`, once the needed-th
    /// highest replica position reaches them; expired waits leave no trace.
    @Test func theLedgerReleasesAPrefixOfWaitsPerNeeded() {
        var ledger = AckLedger()
        _ = ledger.admit("a", session: 1, verified: 0)
        _ = ledger.admit("b", session: 2, verified: 0)
        ledger.sent("a", session: 1, through: 100)
        ledger.sent("b", session: 2, through: 100)
        for (id, lsn) in [(1, 10), (2, 20), (4, 40), (3, 30)] {
            let now = ledger.wait(id, lsn: UInt64(lsn), needed: 1)
            #expect(!now)
        }
        let atOnce = ledger.wait(5, lsn: 15, needed: 2)
        #expect(!atOnce)
        let expired = ledger.expire(2), again = ledger.expire(2)
        #expect(expired && !again)
        let first = ledger.update("a", session: 1, durable: 30)
        #expect(first == [1, 3])
        let unmoved = ledger.update("a", session: 1, durable: 30)
        #expect(unmoved == [], "nothing moved")
        let second = ledger.update("b", session: 2, durable: 16)
        #expect(second == [5])
        let third = ledger.update("b", session: 2, durable: 99)
        #expect(third == [4])
        #expect(ledger.waits.isEmpty)
        // Many expired waits behind one that is never satisfied stay bounded and release in order.
        for id in 10..<400 { _ = ledger.wait(id, lsn: UInt64(1_000 + id), needed: 1) }
        var expiredAll = true
        for id in 11..<400 { expiredAll = ledger.expire(id) && expiredAll }
        #expect(expiredAll)
        let none = ledger.update("a", session: 1, durable: 100)
        #expect(none == [])
        ledger.sent("a", session: 1, through: 2_000)
        let last = ledger.update("a", session: 1, durable: 2_000)
        #expect(last == [10])
    }
}
