// The seeded cluster simulator (`aerodb-crashtest sim`, CrashTests/Sim): a short run of the
// guarantees SIM1-SIM8, determinism, and every sabotage caught.

import ClusterSim
import LiveCluster
import Replication
import Testing

// A simulation keeps a CPU busy for seconds: each runs on a thread of its own
// (`LiveCluster.onOwnThread`), not on the cooperative pool (two threads here), where every other
// test of the run, with its timeouts, would wait behind it.

@Suite struct ClusterSimulationTests {
    /// SIM1-SIM8: 200 seeds of three nodes under loss, duplication, reordering, partitions,
    /// power cuts, promotions, switchovers and rejoins, zero violations.
    @Test func twoHundredSeedsFindNoViolation() async throws {
        let batch = try await LiveCluster.onOwnThread { SimBatch.run(firstSeed: 1, seeds: 200, options: SimOptions(seconds: 4, trace: false), stopAtFirst: false) }
        #expect(batch.seeds == 200)
        #expect(batch.operations > 100_000, "the clients wrote: \(batch.operations)")
        #expect(batch.violations.isEmpty, "\(batch.failureReport.joined(separator: "\n"))")
        #expect(batch.switchovers > 20, "the operator switched over: \(batch.switchovers)")
        // SIM7: clients read with X-AeroDB-Min-LSN and -Epoch; some wait, and a node on a
        // superseded history refuses (counted apart); every answered read is checked.
        #expect(batch.reads > 10_000, "min-LSN reads answered: \(batch.reads)")
        #expect(batch.readsBehind > 0)
        // SIM8: nodes lose power (unflushed records lost, torn writes cut off) and restart from
        // their disks; some crashed primaries come back deposed and take the rejoin path.
        #expect(batch.crashes > 100, "power cuts: \(batch.crashes)")
        #expect(batch.lostUnflushed > 0 && batch.tornWrites > 0, "lost \(batch.lostUnflushed), torn \(batch.tornWrites)")
        #expect(batch.restartsDeposed > 0)
    }

    /// Four and five nodes (`--nodes`): the same checks, zero violations; the size changes the run.
    @Test(arguments: [4, 5]) func largerClustersFindNoViolation(nodes: Int) async throws {
        let batch = try await LiveCluster.onOwnThread { SimBatch.run(firstSeed: 1, seeds: 60, options: SimOptions(seconds: 4, trace: false, nodes: nodes), stopAtFirst: false) }
        #expect(batch.operations > 20_000, "the clients wrote: \(batch.operations)")
        #expect(batch.violations.isEmpty, "\(batch.failureReport.joined(separator: "\n"))")
        #expect(batch.switchovers > 0)
        let (three, more) = try await LiveCluster.onOwnThread {
            (ClusterSimulation.run(seed: 7, options: SimOptions(seconds: 2)), ClusterSimulation.run(seed: 7, options: SimOptions(seconds: 2, nodes: nodes)))
        }
        #expect(more.trace != three.trace)
    }

    /// Same seed, same run, same trace.
    @Test func theSameSeedReplaysTheSameRun() async throws {
        let (a, b, c) = try await LiveCluster.onOwnThread {
            (ClusterSimulation.run(seed: 42, options: SimOptions(seconds: 3)), ClusterSimulation.run(seed: 42, options: SimOptions(seconds: 3)),
             ClusterSimulation.run(seed: 43, options: SimOptions(seconds: 3)))
        }
        #expect(a.trace.count > 100)
        #expect(a.trace == b.trace)
        #expect(a.trace != c.trace)
    }

    /// Same seed, same run with power cuts: seeds whose runs cut power replay byte for byte
    /// (the crash image, the torn write and the restart are drawn from the seed).
    @Test func crashingSeedsReplayByteForByte() async throws {
        var crashing = 0
        for seed: UInt64 in 1...40 {
            let (a, b) = try await LiveCluster.onOwnThread { () -> (SimOutcome, SimOutcome?) in
                let a = ClusterSimulation.run(seed: seed, options: SimOptions(seconds: 4))
                return (a, a.crashes > 0 ? ClusterSimulation.run(seed: seed, options: SimOptions(seconds: 4)) : nil)
            }
            guard let b else { continue }
            crashing += 1
            #expect(a.trace.joined(separator: "\n") == b.trace.joined(separator: "\n"), "seed \(seed)")
            #expect(a.trace.contains { $0.contains("power cut on") } && a.trace.contains { $0.contains("restarts from its disk") })
            #expect((a.operations, a.lostUnflushed, a.tornWrites, a.simulatedMicros) == (b.operations, b.lostUnflushed, b.tornWrites, b.simulatedMicros))
        }
        #expect(crashing > 10, "seeds with power cuts: \(crashing)")
    }

    /// Each sabotage reintroduces a known bug; the simulator catches it within 400 seeds and
    /// names the guarantee it breaks (ack-before-flush: a power cut loses what a replica had
    /// acknowledged, SIM8).
    @Test(arguments: [(RoleFault.countHelloBeforeHistoryCheck, "SIM2"), (.bootstrapWithoutProof, "SIM5"),
                      (.releaseWithOneAckShort, "SIM2"), (.promoteByLSNOnly, "SIM1"), (.readWithoutMinLSNWait, "SIM7"),
                      (.readWithoutEpochCheck, "SIM7"), (.ackBeforeFlush, "SIM8")])
    func everySabotageIsCaught(fault: RoleFault, guarantee: String) async throws {
        let batch = try await LiveCluster.onOwnThread {
            SimBatch.run(firstSeed: 1, seeds: 400, options: SimOptions(seconds: 6, faults: [fault], trace: false), stopAtFirst: true)
        }
        #expect(batch.violations.first?.violation.id == guarantee, "\(fault): \(batch.violations.map { "\($0.seed): \($0.violation)" })")
        #expect(batch.failureReport.contains { $0.contains("shortest history") })
    }
}
