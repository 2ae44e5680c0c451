// B5: an online backup's WAL is held from its base until it has read it. Checkpoints that run
// between the base and the WAL reads (which recycled the segments and failed the bench's
// `backup` workload with AERO_WAL_LSN_UNAVAILABLE before holds existed) keep what the backup
// still needs; a released or idle hold keeps nothing; the number of holds is bounded.

import Foundation
import Testing
@testable import Kernel

@Suite struct BackupHoldTests {
    static let items = #"{"name":"items","fields":{"id":{"type":"text"},"pad":{"type":"text"}}}"#

    /// `count` documents of ~1 KiB each (~256 per 256 KiB segment), `perCommit` per transaction.
    func fill(_ db: Database, from start: Int, count: Int, perCommit: Int = 25) async throws {
        let pad = String(repeating: "x", count: 1_000)
        for first in stride(from: start, to: start + count, by: perCommit) {
            let ops: [WriteOperation] = (first..<min(first + perCommit, start + count)).map {
                .insert(collection: "items", document: ["id": .string("d\($0)"), "pad": .string(pad)])
            }
            _ = try await db.commit(ops)
        }
    }

    /// Enough commits and checkpoints that, without a hold, every segment holding `lsn` is recycled.
    func churn(_ db: Database, from start: Int) async throws {
        for round in 0..<(KernelLimits.checkpointsKept + 2) {
            try await fill(db, from: start + round * 600, count: 600)
            _ = try await db.checkpoint()
        }
    }

    @Test func checkpointsBetweenTheBaseAndTheWALReadsKeepWhatTheBackupNeeds() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.items))
        try await fill(db, from: 0, count: 600)
        _ = try await db.checkpoint()
        try await fill(db, from: 600, count: 100)

        let base = try await db.backupBase()
        #expect(base.position.lsn > 0 && base.end > base.position.lsn)
        #expect(db.backupHoldCount == 1)
        try await churn(db, from: 1_000)
        // Held: the WAL still starts at or before the first record after the base...
        #expect(db.oldestLSN <= base.position.lsn + 1)
        // ...so the backup reads all of it, ends where the base said, and releases its hold.
        let manifest = try db.writeBackup(base: base, into: dir.path + "/backup", nodeID: "n1")
        #expect(manifest.end.lsn == base.end)
        #expect(db.backupHoldCount == 0)

        // Without the hold the same churn recycles it: the read fails, and says why.
        let second = try await db.backupBase()
        db.releaseBackupHold(second.hold)
        try await churn(db, from: 10_000)
        #expect(db.oldestLSN > second.position.lsn + 1)
        do {
            _ = try db.backupRecords(after: second.position.lsn, hold: second.hold, through: second.end)
            Issue.record("a recycled LSN was read")
        } catch let error as AeroError {
            #expect(error.code == .lsnUnavailable)
            #expect(error.message.contains("hold had ended"))
        }
    }

    @Test func eachReadMovesTheFloorAndReachingTheEndReleasesIt() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.items))
        try await fill(db, from: 0, count: 300, perCommit: 1)
        let base = try await db.backupBase()
        #expect(base.position.lsn == 0)
        #expect(db.backupHolds.floor == 1)
        let page = try db.backupRecords(after: 0, hold: base.hold, through: 100, maxBytes: 1 << 30)
        #expect(page.map(\.lsn) == Array(1...100))
        #expect(db.backupHolds.floor == 101)
        _ = try db.backupRecords(after: 100, hold: base.hold, through: base.end, maxBytes: 1 << 30)
        #expect(db.backupHoldCount == 0)
        #expect(db.backupHolds.floor == nil)
    }

    @Test func holdsAreBoundedAndIdleOnesEnd() throws {
        let clock = ManualClock()
        let holds = BackupHolds(clock: clock)
        var ids: [UInt64] = []
        for i in 0..<BackupLimits.holdsMax { ids.append(try holds.take(floor: UInt64(100 + i))) }
        #expect(holds.floor == 100)
        #expect(throws: AeroError(.backupBusy, "\(BackupLimits.holdsMax) online backups are already running on this node; retry when one ends", invariant: "B5")) {
            _ = try holds.take(floor: 1)
        }
        // A floor only grows; one read keeps a hold alive past the others' idle time.
        #expect(holds.narrow(ids[0], floor: 50) && holds.floor == 100)
        clock.advance(micros: Int64(BackupLimits.holdIdleSeconds - 1) * 1_000_000)
        #expect(holds.narrow(ids[0], floor: 500))
        #expect(holds.floor == 101)
        clock.advance(micros: 2_000_000)
        #expect(holds.floor == 500 && holds.count == 1)
        #expect(!holds.narrow(ids[1], floor: 600))
        clock.advance(micros: Int64(BackupLimits.holdIdleSeconds) * 1_000_000)
        #expect(holds.floor == nil)
        #expect(try holds.take(floor: 7) > ids.last!)
    }
}
