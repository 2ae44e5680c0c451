// `aerodb-crashtest`: proves, in figures, that no acknowledged write is lost (SPEC §6).

import ArgumentParser
import Foundation
import Kernel

@main
struct CrashTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aerodb-crashtest",
        abstract: "Crash-test the AeroDB kernel: simulated power cuts, torn writes and fsync failures.",
        subcommands: [DiskCommand.self, KillCommand.self, ClusterCommand.self, SimCommand.self])
}

struct DiskCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Run seeded workloads on a simulated disk, cut the power at random points and check every recovery.",
        discussion: """
        For each workload: a reference run without crash, then runs cut after a random number of
        disk operations; from each cut several crash images are derived (flushed data kept, a
        prefix and a random subset of unflushed writes kept, writes torn at 512-byte sectors,
        unsynced creates and renames possibly lost). Each image is recovered by the real kernel
        and compared with the reference. Then the maximal-document workloads (deepest and largest
        documents the write path accepts, 16 MiB segments): every acknowledged one must replay.
        Then the blob workloads: storage uploads through the BlobStore on the same simulated disk
        (temp file, fsync, rename, directory fsync, then the row's commit); after each crash every
        object row recovered must name a blob of its size whose bytes hash to its name.
        Then the replica workloads: a mixed workload's records shipped to a replica's log on the
        simulated disk in frames of one to four primary batches, each flushed as one merged write;
        every LSN the replica reported durable must survive, a torn merged write is a torn tail.
        Ends with: crash states: <N> explored, <V> violations
        """)

    @Option(help: "Seed of the first workload (each next workload uses seed+1).") var seed: UInt64 = 1
    @Option(help: "Number of workloads.") var workloads = 4
    @Option(help: "Stop starting new workloads after this many seconds (0 = no limit).") var seconds = 0.0
    @Option(help: "Operations per workload.") var operations = 120
    @Option(help: "Power cuts per workload.") var cuts = 24
    @Option(help: "Crash images derived from each cut.") var images = 4
    @Option(help: "Workloads of maximal documents (deepest, largest, largest transaction), after the others.")
    var maximalWorkloads = 1
    @Option(help: "Power cuts per maximal-document workload (each image replays tens of MiB).") var maximalCuts = 6
    @Option(help: "Workloads of storage uploads (blob write path, ST1), after the others.") var blobWorkloads = 1
    @Option(help: "Operations per blob workload.") var blobOperations = 40
    @Option(help: "Power cuts per blob workload.") var blobCuts = 16
    @Option(help: "Replica workloads (a mixed workload's records replicated in merged writes, R2), after the others.")
    var replicaWorkloads = 1
    @Option(help: "Run against a deliberately broken disk to show the harness catches it: \(CrashDisk.Sabotage.allCases.map(\.rawValue).joined(separator: ", ")).")
    var sabotage: String?
    @Flag(help: "Print the summary as JSON as well.") var json = false

    func run() async throws {
        let broken = try sabotage.map { name in
            guard let s = CrashDisk.Sabotage(rawValue: name) else { throw ValidationError("unknown sabotage \(name)") }
            return s
        }
        let clock = SystemClock()
        let started = clock.monotonicNanos()
        var explored = 0
        var violations: [String] = []
        var ran = 0
        var maximalExplored = 0, maximalRan = 0
        var blobExplored = 0, blobRan = 0, blobObjects = 0
        var replicaExplored = 0, replicaRan = 0
        enum Kind { case mixed, maximal, blobs, replica }
        let counts: [(Kind, Int)] = [(.mixed, workloads), (.maximal, maximalWorkloads), (.blobs, blobWorkloads), (.replica, replicaWorkloads)]
        let plan: [(UInt64, Kind)] = counts.flatMap { kind, count in (0..<count).map { (seed + UInt64($0), kind) } }
        for (workloadSeed, kind) in plan {
            if seconds > 0 && Double(clock.monotonicNanos() - started) / 1e9 > seconds { break }
            var harness = DiskHarness(seed: workloadSeed, operationsPerWorkload: kind == .blobs ? blobOperations : operations,
                                      imagesPerCrash: images, sabotage: broken)
            harness.maximal = kind == .maximal
            harness.blobs = kind == .blobs
            harness.replica = kind == .replica
            let outcome = try await harness.run(cutPoints: kind == .maximal ? maximalCuts : kind == .blobs ? blobCuts : cuts)
            explored += outcome.crashStates
            violations += outcome.violations
            ran += 1
            if kind == .maximal { maximalExplored += outcome.crashStates; maximalRan += 1 }
            if kind == .blobs { blobExplored += outcome.crashStates; blobRan += 1; blobObjects += harness.blobObjectsChecked.count }
            if kind == .replica { replicaExplored += outcome.crashStates; replicaRan += 1 }
            Progress.line("disk workload \(ran)/\(plan.count) (seed \(workloadSeed), \(kind)): \(outcome.crashStates) crash states, "
                          + "\(explored) in all, \(violations.count) violations, "
                          + String(format: "%.0f s", Double(clock.monotonicNanos() - started) / 1e9))
            for v in outcome.violations.prefix(5) { print("VIOLATION \(v)") }
            if let history = outcome.minimalHistory { print(history) }
        }
        print("maximal documents: \(maximalRan) workload(s), \(maximalExplored) crash states (documents of \(KernelLimits.documentDepthMax) levels and \(KernelLimits.documentBytesMax) bytes, records up to \(KernelLimits.transactionBytesMax) bytes)")
        print("blob writes: \(blobRan) workload(s), \(blobExplored) crash states, \(blobObjects) recovered objects read and hashed")
        print("replica logs: \(replicaRan) workload(s), \(replicaExplored) crash states (frames of 1-4 primary batches, each one merged write)")
        let elapsed = Double(clock.monotonicNanos() - started) / 1e9
        if json {
            let summary: JSONValue = .object(["mode": .string("disk"), "workloads": .int(Int64(ran)),
                                              "maximal_workloads": .int(Int64(maximalRan)),
                                              "maximal_crash_states": .int(Int64(maximalExplored)),
                                              "blob_workloads": .int(Int64(blobRan)), "blob_crash_states": .int(Int64(blobExplored)),
                                              "blob_objects_checked": .int(Int64(blobObjects)),
                                              "replica_workloads": .int(Int64(replicaRan)),
                                              "replica_crash_states": .int(Int64(replicaExplored)),
                                              "crash_states": .int(Int64(explored)),
                                              "violations": .int(Int64(violations.count)),
                                              "first_seed": .int(Int64(seed)), "seconds": .float(elapsed)])
            print(JSON.encodeString(summary))
        }
        print("crash states: \(explored) explored, \(violations.count) violations")
        if !violations.isEmpty { throw ExitCode(1) }
    }
}

struct KillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill",
        abstract: "SIGKILL a real node under concurrent write load at random moments, restart it, check every acknowledged write.",
        discussion: """
        Starts the `aerodb` binary found next to this one on a free 127.0.0.1 port in a temporary
        directory. Each round runs the writers, kills the node with SIGKILL at a random moment,
        restarts it and checks that every write acknowledged so far (all rounds) is present with
        its exact content. Ends with: kills: <N>, <V> violations
        """)

    @Option(help: "Number of SIGKILLs (rounds).") var kills = 5
    @Option(help: "Total seconds of load, spread over the rounds.") var seconds = 10.0
    @Option(help: "Concurrent writers.") var writers = 8
    @Option(help: "Seed for the kill moments.") var seed: UInt64 = 1
    @Option(help: "Concurrent storage uploaders (plain and TUS uploads; 0: none).") var uploaders = 2

    func run() async throws {
        guard kills > 0, seconds > 0, writers > 0 else { throw ValidationError("kills, seconds and writers must be positive") }
        guard (0...64).contains(uploaders) else { throw ValidationError("uploaders must be in 0...64") }
        var harness = KillHarness(kills: kills, seconds: seconds, writers: writers, random: SeededRandom(seed: seed), uploaders: uploaders)
        let outcome = try await harness.run()
        for v in outcome.violations.prefix(20) { print("VIOLATION \(v)") }
        print("acknowledged writes checked: \(outcome.acknowledged)")
        if uploaders > 0 { print("acknowledged uploads checked: \(outcome.uploadsAcknowledged)") }
        print("kills: \(outcome.kills), \(outcome.violations.count) violations")
        if !outcome.violations.isEmpty { throw ExitCode(1) }
    }
}

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Three real nodes in sync mode: kill or cut off the primary, promote, verify every acknowledged write; heal and rejoin.",
        discussion: """
        Starts three `aerodb` processes (the binary next to this one) on free 127.0.0.1 ports,
        every replication link through a TCP proxy. Rounds alternate: SIGKILL the primary under
        load and promote the most up-to-date replica; or cut the primary off, promote a replica,
        check the isolated primary acknowledges no write sent after the cut, heal, rejoin it.
        After each round every acknowledged write must be on all three nodes, and no discarded
        write may have been acknowledged. Storage uploaders (plain and TUS, through the replicas
        and the primary) run through the faults: after each round every acknowledged object must
        download with the SHA-256 of its bytes from all three nodes, and every listed object must
        be whole. Ends with: rounds: <N>, <V> violations
        """)

    @Option(help: "Number of fault rounds (alternating kill and partition).") var rounds = 4
    @Option(help: "Concurrent writers.") var writers = 6
    @Option(help: "Seconds of load per round.") var seconds = 3.0
    @Option(help: "Seed for the kill moments.") var seed: UInt64 = 1
    @Option(help: "Concurrent storage uploaders (plain and TUS uploads through every node; 0: none).") var uploaders = 3

    func run() async throws {
        guard rounds > 0, writers > 0, seconds > 0 else { throw ValidationError("rounds, writers and seconds must be positive") }
        guard (0...64).contains(uploaders) else { throw ValidationError("uploaders must be in 0...64") }
        var harness = ClusterHarness(rounds: rounds, writers: writers, loadSeconds: seconds, random: SeededRandom(seed: seed))
        harness.uploaders = uploaders
        let outcome = try await harness.run()
        for v in outcome.violations.prefix(20) { print("VIOLATION \(v)") }
        let sorted = outcome.promotionMillis.sorted()
        if let max = sorted.last {
            print(String(format: "promotions: %d, command time p50 %.1f ms, max %.1f ms (CLI process included)", sorted.count, sorted[sorted.count / 2], max))
        }
        print("acknowledged writes checked: \(outcome.acknowledged); rejoins: \(outcome.rejoins), transactions discarded by them: \(outcome.discarded)")
        if uploaders > 0 {
            print("acknowledged uploads checked: \(outcome.uploadsAcknowledged) (downloads compared by SHA-256 on every node: \(outcome.downloadsChecked))")
        }
        print("rounds: \(outcome.rounds), \(outcome.violations.count) violations")
        if !outcome.violations.isEmpty { throw ExitCode(1) }
    }
}
