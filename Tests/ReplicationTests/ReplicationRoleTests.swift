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
    }
}
