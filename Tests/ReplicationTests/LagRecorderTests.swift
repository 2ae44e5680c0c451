// LagRecorder: one sample per shipped batch an ACK of the same session covers; another
// session's ACKs and batches sent before a reset are not counted.

import Testing
@testable import Replication

@Suite struct LagRecorderTests {
    @Test func samplesComeFromTheSessionsOwnBatches() throws {
        let lag = LagRecorder()
        lag.reset("n2", session: 1)
        lag.sent("n2", through: 10, atMicros: 1_000)
        lag.sent("n2", through: 20, atMicros: 2_000)
        lag.applied("n2", session: 0, through: 20, atMicros: 9_000)  // an older session: ignored
        #expect(lag.summary("n2") == nil)
        lag.applied("n2", session: 1, through: 15, atMicros: 4_000)  // covers the first batch only
        let first = try #require(lag.summary("n2"))
        #expect(first.samples == 1 && first.max == 3.0)
        lag.applied("n2", session: 1, through: 20, atMicros: 5_000)
        let both = try #require(lag.summary("n2"))
        #expect(both.samples == 2 && both.p50 == 3.0 && both.max == 3.0)
        lag.sent("n2", through: 30, atMicros: 6_000)
        lag.reset("n2", session: 2)  // what was in flight is not waited for
        lag.applied("n2", session: 2, through: 30, atMicros: 7_000)
        #expect(lag.summary("n2")?.samples == 2)
    }
}
