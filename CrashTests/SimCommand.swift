// `aerodb-crashtest sim`: the seeded cluster simulator (CrashTests/Sim, docs/CRASH_TESTING.md).

import ArgumentParser
import ClusterSim
import Foundation
import Kernel
import Replication

struct SimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run three to five nodes' replication roles in one process under a seeded network, disk, clock and operator; check every step.",
        discussion: """
        Each seed runs a cluster of --nodes `ReplicationRole` values (the same value the node runs) \
        for --seconds simulated seconds: clients write in the seed's commit mode (async, sync or \
        all), each node's log is on a simulated disk (written vs flushed; acknowledgements and \
        ACKs count flushed records only), the network delays, loses, duplicates and reorders \
        messages, the operator isolates nodes and cuts links, cuts a node's power (it loses what \
        it had not flushed, may tear its last write, and restarts from its disk: a replica \
        follows again, a deposed primary is fenced and rejoined), promotes a replica when the \
        primary is cut off or down, switches over to a streaming replica at random, and rejoins \
        halted nodes; then every link heals and the replicas must converge. After every step the \
        guarantees SIM1-SIM8 of docs/INVARIANTS.md are checked. Same seed, same run.
        Sabotage variants (each reintroduces one bug; the run must report a violation):
        \(RoleFault.allCases.map(\.rawValue).joined(separator: ", ")).
        Ends with: seeds: N, operations: M, V violations
        """)

    @Option(help: "The first seed (each next seed is seed+1).") var seed: UInt64 = 1
    @Option(help: "Nodes in the simulated cluster, 3 to 5.") var nodes: Int = 3
    @Option(help: "Number of seeds.") var seeds = 100
    @Option(help: "Simulated seconds per seed.") var seconds = 6.0
    @Option(help: "Reintroduce a known bug: \(RoleFault.allCases.map(\.rawValue).joined(separator: ", ")). Stops at the first seed that catches it.")
    var sabotage: String?
    @Option(help: "Events of the shortest failing history to print.") var history = 60
    @Flag(help: "Print the summary as JSON as well.") var json = false

    func run() throws {
        guard (3...5).contains(nodes) else { throw ValidationError("--nodes must be 3, 4 or 5") }
        let faults: Set<RoleFault> = try sabotage.map { name in
            guard let f = RoleFault(rawValue: name) else {
                throw ValidationError("unknown sabotage \(name); one of \(RoleFault.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return [f]
        } ?? []
        let report = SimBatch.run(firstSeed: seed, seeds: seeds, options: SimOptions(seconds: seconds, faults: faults, trace: false, nodes: nodes),
                                  stopAtFirst: !faults.isEmpty, historyLines: history)
        for line in report.failureReport { print(line) }
        if json {
            let summary: JSONValue = .object([
                "mode": .string("sim"), "first_seed": .int(Int64(seed)), "seeds": .int(Int64(report.seeds)),
                "operations": .int(Int64(report.operations)), "violations": .int(Int64(report.violations.count)),
                "simulated_seconds": .float(report.simulatedSeconds), "seconds": .float(report.realSeconds),
                "simulated_seconds_per_second": .float(report.simulatedSeconds / max(report.realSeconds, 1e-9)),
                "sabotage": sabotage.map { .string($0) } ?? .null, "switchovers": .int(Int64(report.switchovers)),
                "min_lsn_reads": .int(Int64(report.reads)), "min_lsn_reads_behind": .int(Int64(report.readsBehind)),
                "min_lsn_reads_superseded": .int(Int64(report.supersededReads)),
                "crashes": .int(Int64(report.crashes)), "unflushed_records_lost": .int(Int64(report.lostUnflushed)),
                "torn_writes": .int(Int64(report.tornWrites)), "restarts_deposed": .int(Int64(report.restartsDeposed)),
            ])
            print(JSON.encodeString(summary))
        }
        print("switchovers: \(report.switchovers); min-LSN reads: \(report.reads) answered, \(report.readsBehind) behind (503), "
              + "\(report.supersededReads) refused as from a superseded history (X-AeroDB-Min-LSN-Epoch)")
        print("power cuts: \(report.crashes) (\(report.lostUnflushed) unflushed records lost, \(report.tornWrites) torn writes cut off by recovery; "
              + "\(report.restartsDeposed) crashed primaries came back deposed)")
        print(String(format: "simulated %.0f s in %.1f s (%.0f simulated s per s)", report.simulatedSeconds, report.realSeconds,
                     report.simulatedSeconds / max(report.realSeconds, 1e-9)))
        print("seeds: \(report.seeds), operations: \(report.operations), \(report.violations.count) violations")
        if !report.violations.isEmpty { throw ExitCode(1) }
    }
}
