// What keeps the WAL an online backup still has to read (B5).
//
// An online backup (`aerodb backup --url`, a scheduled backup) takes a base, then reads the WAL
// after it in later steps while the node keeps committing and checkpointing. A checkpoint in
// between would recycle the segments the backup has not read yet. A hold is the backup's
// retention floor: the first LSN it still needs. Checkpoints never recycle a segment holding
// a record at or after the lowest floor, within the bound the replicas' floors have too
// (`KernelLimits.walSegmentsRetainedForReplicasMax`).
//
// Lifecycle of one hold:
//   taken    with the base, at the oldest LSN the WAL held then (everything), in the checkpoint
//            runner's turn, so no checkpoint that did not see it can recycle afterwards;
//   narrowed to base + 1 once the base is chosen, then to `after + 1` on every WAL read;
//   released when a read reaches the backup's end LSN, when the backup ends, or after
//            `BackupLimits.holdIdleSeconds` without a read (a backup tool that died).
//
// Invariants: at most `BackupLimits.holdsMax` holds (a base request beyond is refused with
// AERO_BACKUP_BUSY, nothing held); a hold's floor only grows; expiry is by the kernel's
// monotonic clock, checked whenever the floors are read.

import Synchronization

final class BackupHolds: Sendable {
    private struct Hold {
        var floor: UInt64
        var end: UInt64
        var lastUsedNanos: UInt64
    }

    private struct Table {
        var holds: [UInt64: Hold] = [:]
        var nextID: UInt64 = 1

        mutating func dropIdle(now: UInt64) {
            let idle = UInt64(BackupLimits.holdIdleSeconds) * 1_000_000_000
            holds = holds.filter { now &- $0.value.lastUsedNanos < idle }
        }
    }

    private let table = Mutex(Table())
    private let clock: any KernelClock

    init(clock: any KernelClock) {
        self.clock = clock
    }

    /// A new hold at `floor` (its end unknown yet: `UInt64.max`); AERO_BACKUP_BUSY when
    /// `BackupLimits.holdsMax` backups are already running.
    func take(floor: UInt64) throws -> UInt64 {
        let now = clock.monotonicNanos()
        return try table.withLock { t in
            t.dropIdle(now: now)
            guard t.holds.count < BackupLimits.holdsMax else {
                throw AeroError(.backupBusy, "\(BackupLimits.holdsMax) online backups are already running on this node; retry when one ends",
                                invariant: "B5")
            }
            let id = t.nextID
            t.nextID &+= 1
            t.holds[id] = Hold(floor: floor, end: .max, lastUsedNanos: now)
            return id
        }
    }

    /// The backup read through `through` and still needs `floor` onwards; ends at `end` when
    /// given. Releases the hold once `through` reaches its end. False when the hold is not
    /// here (expired, released, or taken before a restart).
    @discardableResult
    func narrow(_ id: UInt64, floor: UInt64, end: UInt64? = nil, through: UInt64 = 0) -> Bool {
        let now = clock.monotonicNanos()
        return table.withLock { t in
            t.dropIdle(now: now)
            guard var hold = t.holds[id] else { return false }
            hold.floor = max(hold.floor, floor)
            if let end { hold.end = end }
            hold.lastUsedNanos = now
            t.holds[id] = through >= hold.end ? nil : hold
            return true
        }
    }

    func release(_ id: UInt64) {
        _ = table.withLock { $0.holds.removeValue(forKey: id) }
    }

    /// The lowest floor of the live holds (nil: none).
    var floor: UInt64? {
        let now = clock.monotonicNanos()
        return table.withLock { t in
            t.dropIdle(now: now)
            return t.holds.values.map(\.floor).min()
        }
    }

    /// Live holds (idle ones dropped first, as `floor` does).
    var count: Int {
        let now = clock.monotonicNanos()
        return table.withLock { t in
            t.dropIdle(now: now)
            return t.holds.count
        }
    }
}
