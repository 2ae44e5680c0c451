// CM1 (docs/INVARIANTS.md): a commit waits as the commit mode stored before it says; a change
// takes effect from the next commit after its record; where the record's place relative to a
// commit is unknown, the stricter mode applies (never a sync-mode write acknowledged as async).

import Synchronization
import Testing
@testable import Replication

@Suite struct CommitModeSettingTests {
    /// A stored value that the test moves: (snapshot LSN, mode).
    final class Store: Sendable {
        let value = Mutex<(UInt64, CommitMode?)>((0, nil))
        func set(_ lsn: UInt64, _ mode: CommitMode?) { value.withLock { $0 = (lsn, mode) } }
    }

    @Test func CM1_aTighterModeAppliesToEveryCommitAfterItsRecord() {
        let store = Store(), modes = CommitModeSetting(fileMode: .async)
        store.set(10, nil)
        modes.setReader { store.value.withLock { $0 } }
        #expect(modes.mode(for: 11) == .async)
        store.set(21, .sync)  // record at 20, first seen on the snapshot at 21
        #expect(modes.mode(for: 21) == .sync)
        #expect(modes.mode(for: 22) == .sync)
        store.set(40, .all)
        #expect(modes.mode(for: 30) == .all)  // may be after the record at <= 40: the stricter
    }

    @Test func CM1_aWeakerModeNeverReleasesACommitThatMayPredateItsRecord() {
        let store = Store(), modes = CommitModeSetting(fileMode: .sync)
        store.set(10, nil)
        modes.setReader { store.value.withLock { $0 } }
        store.set(30, .async)  // record somewhere in 11...30
        #expect(modes.mode(for: 25) == .sync)  // written before the change was seen: still sync
        #expect(modes.mode(for: 30) == .sync)
        store.set(31, .async)
        #expect(modes.mode(for: 31) == .async)  // after the first snapshot showing it
        #expect(modes.current == .async && modes.strictestRecent == .sync)
        store.set(50, nil)  // unset: aerodb.json's mode again
        #expect(modes.mode(for: 51) == .sync)
    }

    @Test func CM1_aStaleReadingNeverHidesAChange() {
        let store = Store(), modes = CommitModeSetting(fileMode: .async)
        store.set(10, nil)
        modes.setReader { store.value.withLock { $0 } }
        store.set(40, .async)
        #expect(modes.mode(for: 40) == .async)
        store.set(35, .sync)  // a reader that raced: the snapshot at 35 showed sync (set at <= 35, undone by 40)
        #expect(modes.mode(for: 36) == .sync)  // 36 may lie between the two changes
        #expect(modes.mode(for: 41) == .async)
    }

    /// Bounded cost per commit: the reader runs at the same stack depth after thousands of
    /// commits asked for their mode. A closure kept in a `Mutex` as a generic value gained one
    /// reabstraction thunk per `withLock` (48-240 bytes of stack and one more call per commit),
    /// so a primary's CPU per commit grew with its commit count (0.9 to 1.9 ms per REST insert
    /// over four 5 s phases of a debug cluster).
    @Test func CM1_theReaderIsReachedThroughTheSameFramesAfterManyCommits() {
        let modes = CommitModeSetting(fileMode: .async)
        let depth = Mutex<UInt>(0)
        let base = Self.stackAddress()
        modes.setReader {
            let here = Self.stackAddress()
            depth.withLock { $0 = base &- here }
            return (1, nil)
        }
        _ = modes.mode(for: 2)
        let first = depth.withLock { $0 }
        for lsn in 3...2_002 { _ = modes.mode(for: UInt64(lsn)) }
        _ = modes.mode(for: 2_003)
        let last = depth.withLock { $0 }
        #expect(first > 0 && last <= first + 1_024, "reader depth \(first) bytes at the first commit, \(last) after 2,000 (one thunk more per commit)")
    }

    @inline(never) static func stackAddress() -> UInt {
        var marker = 0
        return withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
    }
}
