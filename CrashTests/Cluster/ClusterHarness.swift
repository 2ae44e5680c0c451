// `aerodb-crashtest cluster`: three real nodes in `sync` mode under concurrent write load, every
// replication link through a TCP proxy. Rounds alternate between two faults:
// - kill: SIGKILL the primary at a random moment, promote the most up-to-date replica, restart
//   the killed node (rejoining it when its log diverged);
// - partition: cut the primary off from its peers, promote a replica, show that the isolated
//   primary acknowledges no write sent after the cut, heal, let it learn the new epoch, rejoin.
// After every round every write acknowledged so far must be on every node with its exact
// content, and no write a rejoin discarded may have been acknowledged (D1, A1, A2, A4).
// With `uploaders` > 0, storage uploaders (UploadLoad, the kill mode's) run beside the writers,
// each through its own node (the replicas forward to the primary as a stream); after every
// round every acknowledged object must download with the SHA-256 of its bytes from all three
// nodes, and every object listed on any node must be one sent, whole (ST1, ST8).

import Foundation
import Kernel
import LiveCluster
import Synchronization

struct ClusterHarness {
    let rounds: Int
    let writers: Int
    let loadSeconds: Double
    var random: SeededRandom
    /// Storage uploaders beside the writers (UploadLoad; 0: none).
    var uploaders = 0

    struct Outcome {
        var rounds = 0
        var acknowledged = 0
        var violations: [String] = []
        var promotionMillis: [Double] = []
        var rejoins = 0
        var discarded = 0
        var uploadsAcknowledged = 0
        /// Downloads compared by SHA-256 after failovers (objects × nodes × rounds).
        var downloadsChecked = 0
    }

    static let collection = #"{"name":"items","fields":{"id":{"type":"text"},"qty":{"type":"int","nullable":true}}}"#
    /// How long a healed or restarted node may take to follow the new primary.
    static let settleSeconds = 20.0

    mutating func run() async throws -> Outcome {
        let stuckStops = StuckStops()  // a node that did not stop on SIGTERM is a violation (SD1)
        let cluster = try LiveCluster(binary: KilledNode.binary, commitMode: "sync", proxies: true,
                                      settings: ["replica_wait_ms": .int(1000)],
                                      onStopPastDeadline: { failure in stuckStops.list.withLock { $0.append(failure) } })
        try await cluster.startAll()
        guard try await cluster.admin(0, "POST", "collections", try JSON.parse(Self.collection)).status == 201 else {
            throw AeroError(.internalError, "could not create the test collection")
        }
        var outcome = Outcome()
        var logs: [WriteLog] = []
        var primary = 0
        let uploads = UploadLoad(port: cluster.httpPorts[0], serviceKey: cluster.serviceKey, uploaders: uploaders)
        if uploaders > 0 { try await uploads.prepare() }
        for round in 0..<rounds {
            let others = (0..<3).filter { $0 != primary }
            // Uploader u goes through the nodes in the writers' order: replicas first, then the primary.
            let uploadPorts = (0..<3).map { cluster.httpPorts[(primary + 1 + $0) % 3] }
            let uploadsStop = StopFlag()
            let n = uploaders
            let uploading = Task { if n > 0 { await uploads.round(round, ports: uploadPorts, until: { uploadsStop.isStopped }) } }
            defer { uploadsStop.stop() }
            let promoted: Int?
            if round % 2 == 0 {
                promoted = try await killRound(cluster, round: round, primary: primary, others: others, logs: &logs, &outcome)
            } else {
                promoted = try await partitionRound(cluster, round: round, primary: primary, others: others, logs: &logs, &outcome,
                                                    stopUploads: uploadsStop)
            }
            uploadsStop.stop()
            await uploading.value
            outcome.rounds += 1
            guard let promoted else { break }
            do {
                _ = try await cluster.waitConverged([0, 1, 2], to: promoted, seconds: Self.settleSeconds)
            } catch {
                outcome.violations.append("round \(round): the nodes did not converge: \(error)")
                break
            }
            for log in logs {
                for node in 0..<3 {
                    for attempt in try await cluster.missing(log, on: node) {
                        outcome.violations.append("round \(round): acknowledged write \(attempt.id) missing or changed on n\(node + 1)")
                    }
                }
            }
            if uploaders > 0 {
                // After the promotion (and the rejoin or restart of the old primary): all three nodes.
                outcome.violations += await uploads.verify(ports: cluster.httpPorts, resumePending: false).map { "round \(round): \($0)" }
                outcome.downloadsChecked += uploads.acknowledgedCount * 3
            }
            primary = promoted
            Progress.line("cluster round \(round + 1)/\(rounds) (\(round % 2 == 0 ? "kill" : "partition")): n\(promoted + 1) promoted, "
                          + "\(outcome.rejoins) rejoins, \(outcome.violations.count) violations")
        }
        for log in logs { outcome.acknowledged += await log.acknowledged.count }
        outcome.uploadsAcknowledged = uploads.acknowledgedCount
        outcome.violations += stuckStops.list.withLock { $0 }
        return outcome
    }

    /// Writers on every node; the primary is SIGKILLed at a random moment; the best replica is promoted.
    private mutating func killRound(_ cluster: LiveCluster, round: Int, primary: Int, others: [Int], logs: inout [WriteLog],
                                    _ outcome: inout Outcome) async throws -> Int? {
        let stop = StopFlag()
        let killAfter = loadSeconds * (0.3 + Double(random.next(below: 40)) / 100)
        let load = loadSeconds
        Task {
            try? await Task.sleep(for: .seconds(killAfter))
            cluster.kill(primary)
            try? await Task.sleep(for: .seconds(load - killAfter))
            stop.stop()
        }
        // (the uploaders of this round are stopped by `run` once the writers have stopped)
        let writersCount = writers
        let log = await WriteLog.run(cluster, writers: writersCount, prefix: "k\(round)", target: { w, _ in (primary + 1 + w) % 3 },
                                     until: { stop.isStopped })
        logs.append(log)
        let best = try await cluster.mostUpToDate(others)
        guard try promote(cluster, best, round: round, &outcome) else { return nil }
        try await cluster.start(primary)
        try await rejoinIfDiverged(cluster, primary, round: round, logs: logs, &outcome)
        return best
    }

    /// Load, then the primary is cut off; writes sent to it after the cut must all fail.
    private mutating func partitionRound(_ cluster: LiveCluster, round: Int, primary: Int, others: [Int],
                                         logs: inout [WriteLog], _ outcome: inout Outcome, stopUploads: StopFlag) async throws -> Int? {
        let before = StopFlag()
        let warmup = loadSeconds / 3
        Task { try? await Task.sleep(for: .seconds(warmup)); before.stop() }
        logs.append(await WriteLog.run(cluster, writers: writers, prefix: "p\(round)", target: { w, _ in w % 3 },
                                       until: { before.isStopped }))
        cluster.isolate(primary, true)
        let cutAt = DispatchTime.now().uptimeNanoseconds
        let during = StopFlag()
        let isolatedPrimary = primary
        async let isolatedWrites = WriteLog.run(cluster, writers: max(2, writers / 2), prefix: "x\(round)",
                                                target: { _, _ in isolatedPrimary }, until: { during.isStopped })
        try await Task.sleep(for: .milliseconds(300))
        let best = try await cluster.mostUpToDate(others)
        let promoted = try promote(cluster, best, round: round, &outcome)
        try await Task.sleep(for: .seconds(loadSeconds / 3))
        during.stop()
        stopUploads.stop()  // uploads ran through the cut and the promotion; none after the heal
        let isolated = await isolatedWrites
        for attempt in await isolated.acknowledged where attempt.sentNanos > cutAt {
            outcome.violations.append("round \(round): the isolated primary n\(primary + 1) acknowledged \(attempt.id), sent after the cut")
        }
        logs.append(isolated)
        cluster.isolate(primary, false)
        guard promoted else { return nil }
        try await rejoinIfDiverged(cluster, primary, round: round, logs: logs, &outcome)
        return best
    }

    private func promote(_ cluster: LiveCluster, _ node: Int, round: Int, _ outcome: inout Outcome) throws -> Bool {
        let started = DispatchTime.now().uptimeNanoseconds
        let (status, output) = try cluster.cli(["promote", "--url", cluster.url(node), "--json"])
        outcome.promotionMillis.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
        guard status == 0 else {
            outcome.violations.append("round \(round): promoting n\(node + 1) was refused: \(output)")
            return false
        }
        return true
    }

    /// Waits until node i follows the new primary; when it halted as diverged, stops it, runs
    /// `aerodb rejoin` and checks that nothing it discarded had been acknowledged.
    private func rejoinIfDiverged(_ cluster: LiveCluster, _ i: Int, round: Int, logs: [WriteLog],
                                  _ outcome: inout Outcome) async throws {
        let deadline = Date().addingTimeInterval(Self.settleSeconds)
        while Date() < deadline {
            let state = (try? await cluster.status(i))?["replication"]?["state"]?.stringValue ?? ""
            if state.hasPrefix("streaming") { return }
            if state.hasPrefix("diverged") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        cluster.stop(i)
        let (status, output) = try LiveCluster.run(cluster.binary, ["rejoin", "--dir", cluster.directory(i), "--no-start"])
        guard status == 0 else {
            outcome.violations.append("round \(round): rejoin of n\(i + 1) failed: \(output)")
            return
        }
        outcome.rejoins += 1
        let reports = try FileManager.default.contentsOfDirectory(atPath: cluster.directory(i)).filter { $0.hasPrefix("rejoin-") }.sorted()
        if let newest = reports.last, let data = FileManager.default.contents(atPath: cluster.directory(i) + "/" + newest) {
            let report = try JSON.parse(Array(data))
            let cut = Set((report["discarded"]?.arrayValue ?? []).flatMap { $0["changes"]?.arrayValue ?? [] }.compactMap { $0["key"]?.stringValue })
            outcome.discarded += cut.count
            for log in logs {
                for attempt in await log.acknowledged where cut.contains(attempt.id) {
                    outcome.violations.append("round \(round): rejoin of n\(i + 1) discarded the acknowledged write \(attempt.id)")
                }
            }
            try? FileManager.default.removeItem(atPath: cluster.directory(i) + "/" + newest)
        }
        try await cluster.start(i)
    }
}

/// What `LiveCluster.stop` reported past its deadline during a run.
private final class StuckStops: Sendable {
    let list = Mutex<[String]>([])
}
