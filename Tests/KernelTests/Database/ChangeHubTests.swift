import Synchronization
import Testing
@testable import Kernel

/// ChangeHub's wake-ups (RT1: a subscriber receives every released change, then live).
@Suite struct ChangeHubTests {
    /// A puller decides to wait in one lock turn and waits in a later one. A release between the
    /// two used to wake nobody, so the subscriber slept until some later commit (the
    /// RealtimeFanoutTests stall seen under load). The hook runs the release exactly there.
    @Test func aReleaseBetweenDecidingToWaitAndWaitingIsNotLost() async throws {
        let holder = Mutex<ChangeHub?>(nil)
        let released = Mutex(false)
        let hub = ChangeHub(visible: 0, beforeWait: {
            let first = released.withLock { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { holder.withLock { $0 }?.visibleAdvanced(to: 1) }
        })
        holder.withLock { $0 = hub }
        let record = WALRecord(lsn: 1, epoch: 1, type: .epoch, timestampMicros: 0, batchStart: 1,
                               previousChecksum: 0, checksum: 0, payload: [])
        let reader: ChangeHub.Reader = { from, _ in from <= 1 ? [record] : [] }
        let batch = try await withThrowingTaskGroup(of: ChangeBatch?.self) { group in
            group.addTask { try await hub.next(after: 0, maxCount: 8, read: reader) }
            group.addTask {
                // Deadline only: with the wake-up lost, nothing else would ever release LSN 1.
                try await Task.sleep(for: .seconds(30))
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
        #expect(released.withLock { $0 }, "the hook never ran: the puller did not decide to wait")
        let answer = try #require(batch, "the release made while the puller decided to wait was lost: still asleep after 30 s")
        #expect(answer.through == 1)
        #expect(answer.transactions.map(\.lsn) == [1])
    }

    /// RT1 for a cursor anywhere: a pull after any LSN returns the records right after it, in
    /// order, whether the cursor is inside the window (found by binary search), at its edges, or
    /// behind it (read from the log). The log here has more records than the window keeps.
    @Test func aPullAfterAnyCursorStartsRightAfterIt() async throws {
        let count = UInt64(ChangeHub.windowRecordsMax + 900)
        let hub = ChangeHub(visible: 0)
        let reader: ChangeHub.Reader = { from, _ in
            guard from <= count else { return [] }
            return (from...min(count, from + 999)).map { lsn in
                WALRecord(lsn: lsn, epoch: 1, type: .epoch, timestampMicros: 0, batchStart: lsn,
                          previousChecksum: 0, checksum: 0, payload: [])
            }
        }
        hub.visibleAdvanced(to: count)
        // Fill the window to its bound, as a subscriber that follows from the start does.
        var cursor: UInt64 = 0
        while cursor < count { cursor = try await hub.next(after: cursor, maxCount: 1000, read: reader).through }
        for after in stride(from: UInt64(0), to: count, by: 7) + [count - 1, count - 2, count - UInt64(ChangeHub.windowRecordsMax)] {
            let batch = try await hub.next(after: after, maxCount: 3, read: reader)
            let expected = Array((after + 1)...min(count, after + 3))
            #expect(batch.transactions.map(\.lsn) == expected, "after \(after)")
            #expect(batch.through == expected.last!, "after \(after)")
        }
    }
}
