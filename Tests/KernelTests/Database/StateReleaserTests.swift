// V1: the states a publication supersedes are released on the releaser's thread, not on the
// publisher's (the WAL flusher), and at most `StateReleaser.queuedStatesMax` of them wait there.

import Foundation
import Testing
@testable import Kernel

@Suite struct StateReleaserTests {
    static func state(_ lsn: UInt64) -> DatabaseState {
        DatabaseState(position: LogPosition(lsn: lsn, checksum: lsn), epoch: 1, collections: [:])
    }

    @Test func V1_publishHandsEverySupersededStateToTheReleaser() {
        let releaser = StateReleaser(runsThread: false)
        let visibility = Visibility(initial: Self.state(0), releaser: releaser)
        for lsn in UInt64(1)...5 { visibility.enqueue(Self.state(lsn)) }
        visibility.publish(through: 3)
        // The initial state and states 1 and 2 were superseded by 3; 4 and 5 still wait.
        #expect(visibility.current.lsn == 3)
        #expect(releaser.queuedStates == 3)
        visibility.publish(through: 3)  // nothing new: nothing handed over
        #expect(releaser.queuedStates == 3)
        visibility.publish(through: 5)
        #expect(visibility.current.lsn == 5)
        #expect(releaser.queuedStates == 5)
        #expect(releaser.handovers.taken == 2)
        releaser.drain()
        #expect(releaser.queuedStates == 0)
    }

    /// A publication of one record (a lone writer's commit) releases its superseded state in
    /// place: handing it over would wake the releaser's thread for less work than the wake-up.
    @Test func V1_aOneRecordPublicationReleasesInPlace() {
        let releaser = StateReleaser(runsThread: false)
        let visibility = Visibility(initial: Self.state(0), releaser: releaser)
        for lsn in UInt64(1)...4 { visibility.enqueue(Self.state(lsn)) }
        visibility.publish(through: 1)
        visibility.publish(through: 2)
        #expect(visibility.current.lsn == 2)
        #expect(releaser.queuedStates == 0)
        #expect(releaser.handovers.inPlace == 2 && releaser.handovers.taken == 0)
        visibility.publish(through: 4)  // two records: handed over
        #expect(releaser.queuedStates == 2)
        #expect(releaser.handovers.taken == 1)
        releaser.drain()
    }

    @Test func V1_theReleaserHoldsAtMostQueuedStatesMaxAndRefusesTheRest() {
        let releaser = StateReleaser(runsThread: false)  // nothing drains: the bound must hold
        let batch = (1...100).map { Self.state(UInt64($0)) }
        var taken = 0
        for _ in 0..<(StateReleaser.queuedStatesMax / batch.count + 5) {
            if releaser.takeOver(batch) { taken += 1 }
            #expect(releaser.queuedStates <= StateReleaser.queuedStatesMax)
        }
        #expect(taken == StateReleaser.queuedStatesMax / batch.count)
        #expect(releaser.handovers.refused == 5)
        releaser.drain()
        #expect(releaser.queuedStates == 0)
        #expect(releaser.takeOver(batch))  // room again once drained
    }

    @Test func V1_theSharedReleasersThreadDrainsWhatAPublicationHandsIt() async throws {
        let visibility = Visibility(initial: Self.state(0))
        for lsn in UInt64(1)...50 { visibility.enqueue(Self.state(lsn)) }
        let before = StateReleaser.shared.handovers.taken
        visibility.publish(through: 50)
        #expect(StateReleaser.shared.handovers.taken > before)
        // Other tests publish meanwhile: wait (with a deadline) for a moment when it is empty.
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while StateReleaser.shared.queuedStates > 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(StateReleaser.shared.queuedStates == 0)
    }
}
