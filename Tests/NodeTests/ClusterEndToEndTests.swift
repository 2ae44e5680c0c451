// Three real `aerodb` processes on loopback: replication, replica reads, failover, fencing,
// switchover and rejoin, exactly as an operator and an application would use them.

import Foundation
import Synchronization
import Testing
import Kernel
import LiveCluster

/// A cluster of the `aerodb` binary built next to these tests.
func makeCluster(commitMode: String = "sync", proxies: Bool = false, settings: [String: JSONValue] = [:]) throws -> LiveCluster {
    try LiveCluster(binary: Binaries.path("aerodb"), commitMode: commitMode, proxies: proxies, settings: settings,
                    onStopPastDeadline: { Issue.record(Comment(rawValue: $0)) })  // SD1: a stuck stop fails the test
}

let clusterItems = parse(#"{"name":"items","fields":{"id":{"type":"text"},"qty":{"type":"int","nullable":true}},"indexes":[{"fields":["qty"]}]}"#)

/// Documents with these ids on node i, as id -> qty.
func documents(_ cluster: LiveCluster, _ i: Int, _ ids: [String]) async throws -> [String: Int64] {
    try await cluster.documents(i, ids).compactMapValues { $0["qty"]?.intValue }
}

/// Every acknowledged write of `log` is on node i with its exact content.
func expectAcknowledged(_ log: WriteLog, on cluster: LiveCluster, _ i: Int) async throws {
    let missing = try await cluster.missing(log, on: i)
    let total = await log.acknowledged.count
    #expect(missing.isEmpty, "n\(i + 1) lacks \(missing.count) of \(total) acknowledged writes, e.g. \(missing.prefix(3).map(\.id))")
}

/// Inserts `count` documents in one transaction on node i; returns their ids.
func bulkInsert(_ cluster: LiveCluster, _ i: Int, prefix: String, count: Int) async throws -> [String] {
    let ids = (0..<count).map { "\(prefix)-\($0)" }
    let ops: [JSONValue] = ids.enumerated().map { n, id in
        .object(["op": .string("insert"), "collection": .string("items"), "doc": .object(["id": .string(id), "qty": .int(Int64(n))])])
    }
    let answer = try await cluster.admin(i, "POST", "transactions", .object(["ops": .array(ops)]))
    #expect(answer.status == 200, "bulk insert: \(answer.body.map(JSON.encodeString) ?? "")")
    return ids
}

/// Writes several segments' worth through node `i` and checkpoints twice, so that the primary
/// recycles the WAL before it (~6 KiB per transaction: 20 of them cross a 64 KiB segment
/// boundary before each checkpoint). Returns the ids written.
func recycleWAL(_ cluster: LiveCluster, _ i: Int, prefix: String) async throws -> [String] {
    var ids: [String] = []
    for round in 0..<2 {
        for t in 0..<20 { ids += try await bulkInsert(cluster, i, prefix: "\(prefix)\(round)-\(t)", count: 100) }
        #expect(try await cluster.admin(i, "POST", "checkpoint").status == 200)
    }
    return ids
}

func promote(_ cluster: LiveCluster, _ i: Int, force: Bool = false) throws -> (status: Int32, report: JSONValue) {
    let (status, output) = try cluster.cli(["promote", "--url", cluster.url(i), "--json"] + (force ? ["--force"] : []))
    return (status, try JSON.parse(output.trimmingCharacters(in: .whitespacesAndNewlines)))
}

@Suite(.serialized) struct ClusterEndToEndTests {
    @Test func replicasConvergeUnderConcurrentLoadAndCatchUp() async throws {
        // Small segments and checkpoints make the primary recycle the WAL a stopped replica needs.
        let cluster = try makeCluster(settings: ["wal_segment_bytes": .int(65_536)])
        try await cluster.startAll()
        #expect(try await cluster.admin(1, "POST", "collections", clusterItems).status == 201)  // forwarded by n2
        // At least 2 s and 150 writes (a slow, loaded machine writes longer, up to 60 s): enough
        // to recycle the WAL without a timed assertion.
        let started = Date(), writes = Mutex(0)
        let load = await WriteLog.run(cluster, writers: 8, prefix: "c", target: { w, _ in w % 3 }, until: {
            let n = writes.withLock { $0 += 1; return $0 }
            let elapsed = Date().timeIntervalSince(started)
            return (elapsed > 2 && n > 150 + 8) || elapsed > 60
        })
        #expect(await load.acknowledged.count > 150)
        #expect(await load.attempts.allSatisfy { $0.status == 200 })
        let converged = try await cluster.waitConverged([0, 1, 2], to: 0)
        for i in 0..<3 { try await expectAcknowledged(load, on: cluster, i) }

        // A replica killed under load catches up after a restart.
        cluster.kill(2)
        let more = StopFlag()
        Task { try? await Task.sleep(for: .seconds(1)); more.stop() }
        let second = await WriteLog.run(cluster, writers: 4, prefix: "d", target: { _, _ in 0 }, until: { more.isStopped })
        try await cluster.start(2)
        let caughtUp = try await cluster.waitConverged([0, 1, 2], to: 0)
        #expect(caughtUp.0 > converged.0)
        try await expectAcknowledged(second, on: cluster, 2)

        // One far behind the retained WAL is bootstrapped from a shipped checkpoint: while it is
        // down, the primary writes several segments' worth and checkpoints twice (recycling).
        cluster.stop(2)
        var behind: [String] = []
        behind += try await recycleWAL(cluster, 0, prefix: "e")
        try await cluster.start(2)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        let installedLog = await cluster.log(2, eventuallyContaining: "installed a checkpoint shipped by the primary")
        #expect(installedLog.contains("installed a checkpoint shipped by the primary"), "\(installedLog.suffix(2000))")
        #expect(try await documents(cluster, 2, behind).count == behind.count)
        try await expectAcknowledged(load, on: cluster, 2)
    }

    @Test func replicaReadsHonourMinLSN() async throws {
        let cluster = try makeCluster()
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        let write = try await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"r1","qty":7}}]}"#))
        let lsn = try #require(write.lsn)
        // Without the header a replica answers at once, at the LSN it has applied.
        let plain = try await cluster.request(2, "GET", "/rest/v1/items?select=*")
        #expect(plain.status == 200)
        #expect(plain.lsn != nil)
        // With it, the answer is at or after that LSN and holds the write.
        let fresh = try await cluster.request(2, "GET", "/rest/v1/items?select=*&id=eq.r1", headers: ["X-AeroDB-Min-LSN": String(lsn)])
        #expect(fresh.status == 200)
        #expect((fresh.lsn ?? 0) >= lsn)
        #expect(fresh.body?.arrayValue?.first?["qty"] == .int(7))
        // A write through a replica is forwarded and readable on that replica when it answers.
        let forwarded = try await cluster.request(1, "POST", "/rest/v1/items", parse(#"{"id":"r2","qty":8}"#),
                                                  headers: ["Prefer": "return=representation"])
        #expect(forwarded.status == 201)
        let own = try await cluster.request(1, "GET", "/rest/v1/items?id=eq.r2")
        #expect(own.body?.arrayValue?.first?["qty"] == .int(8))
        #expect((own.lsn ?? 0) >= (forwarded.lsn ?? UInt64.max))
        // An LSN the node cannot reach in time: 503 AERO_REPLICA_BEHIND with its current LSN.
        let started = Date()
        let future = try await cluster.request(2, "GET", "/rest/v1/items", headers: ["X-AeroDB-Min-LSN": String(lsn + 1_000_000)])
        #expect(future.status == 503)
        #expect(future.body?["code"] == .string("AERO_REPLICA_BEHIND"))
        #expect(future.lsn != nil && future.lsn! < lsn + 1_000_000)
        #expect(Date().timeIntervalSince(started) >= 1.5)
        let admin = try await cluster.request(2, "POST", "/admin/v1/query", parse(#"{"collection":"items"}"#), headers: ["X-AeroDB-Min-LSN": "x"])
        #expect(admin.status == 400)
        #expect(admin.body?["code"] == .string("AERO_REQUEST_INVALID"))
    }

    @Test func killedPrimaryUnderSyncLoadPromotionKeepsEveryAcknowledgedWrite() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        // SIGKILL the primary once 80 writes were sent (so at least 72 answered: each of the 8
        // writers has one in flight), a condition with a 60 s deadline rather than a fixed time
        // (a loaded machine acknowledges few writes in 1.5 s).
        let stop = StopFlag(), sent = Mutex(0)
        Task {
            let deadline = Date().addingTimeInterval(60)
            while sent.withLock({ $0 }) < 80 && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            cluster.kill(0)  // SIGKILL the primary under load
            try? await Task.sleep(for: .milliseconds(300))
            stop.stop()
        }
        let load = await WriteLog.run(cluster, writers: 8, prefix: "k", target: { _, _ in 0 },
                                      until: { sent.withLock { $0 += 1 }; return stop.isStopped })
        #expect(await load.acknowledged.count > 50)
        // Promote whichever replica is ahead; the other one is refused as behind if it is not.
        let s1 = try await cluster.status(1), s2 = try await cluster.status(2)
        let d1 = s1["lsn"]?["durable"]?.intValue ?? 0, d2 = s2["lsn"]?["durable"]?.intValue ?? 0
        let (best, other) = d1 >= d2 ? (1, 2) : (2, 1)
        let (status, report) = try promote(cluster, best)
        #expect(status == 0, "promotion failed: \(JSON.encodeString(report))")
        #expect(report["promoted"] == .bool(true))
        #expect(report["epoch"] == .int(2))
        #expect(report["fork_lsn"]?.intValue == max(d1, d2))
        // The report times the promotion; how fast it is, scripts/bench measures (not a test's clock).
        let elapsed = report["elapsed_ms"].flatMap { if case .float(let x) = $0 { x } else { nil } }
        #expect(elapsed.map { $0 >= 0 } == true, "the report names the promotion's time: \(JSON.encodeString(report))")
        for i in [best, other] { try await expectAcknowledged(load, on: cluster, i) }
        _ = try await cluster.waitConverged([best, other], to: best)
        try await expectAcknowledged(load, on: cluster, other)
        // Writes through any live node succeed afterwards, and are read back on that node.
        for (n, i) in [best, other].enumerated() {
            let write = try await cluster.admin(i, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"after-\#(n)","qty":1}}]}"#))
            #expect(write.status == 200, "write via n\(i + 1): \(write.body.map(JSON.encodeString) ?? "")")
            #expect(try await documents(cluster, i, ["after-\(n)"])["after-\(n)"] == 1)
        }
    }

    @Test func promotionIsRefusedWhenBehindOrUnproven() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        cluster.stop(1)  // n2 falls behind while n3 keeps acknowledging
        for k in 0..<20 {
            #expect(try await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"p\#(k)","qty":\#(k)}}]}"#)).status == 200)
        }
        cluster.kill(0)
        try await cluster.start(1)
        // Behind a reachable replica: refused, the better candidate named, nothing changed.
        let (refusedStatus, refused) = try promote(cluster, 1)
        #expect(refusedStatus != 0)
        #expect(refused["promoted"] == .bool(false))
        #expect(refused["better_candidate"] == .string("n3"))
        #expect(try await cluster.status(1)["role"] == .string("replica"))
        #expect(try await cluster.status(1)["epoch"] == .int(1))
        // With n3 gone too, n2 cannot prove it holds every acknowledged commit: refused...
        cluster.kill(2)
        let (unprovenStatus, unproven) = try promote(cluster, 1)
        #expect(unprovenStatus != 0)
        let proof = unproven["checks"]?.arrayValue?.first { $0["name"] == .string("acknowledged history on the target") }
        #expect(proof?["outcome"] == .string("refuse"))
        #expect(unproven["lsns_at_risk"] != nil && unproven["lsns_at_risk"] != .null)
        #expect(try await cluster.status(1)["epoch"] == .int(1))
        // ...unless forced, which reports the range at risk and promotes.
        let (forcedStatus, forced) = try promote(cluster, 1, force: true)
        #expect(forcedStatus == 0, "\(JSON.encodeString(forced))")
        #expect(forced["promoted"] == .bool(true))
        #expect(forced["lsns_at_risk"]?["from"] != nil)
        // Alone of three, the majority checks only warn (A1 given up, said so) under --force.
        let majority = forced["checks"]?.arrayValue?.filter { ["majority reachable", "epoch adopted by a majority"].contains($0["name"]?.stringValue ?? "") }
        #expect(majority?.count == 2 && majority?.allSatisfy { $0["outcome"] == .string("warn") && $0["detail"]?.stringValue?.contains("A1 not guaranteed") == true } == true,
                "\(JSON.encodeString(forced))")
        #expect(try await cluster.status(1)["role"] == .string("primary"))
    }

    @Test func fencedPrimaryCannotAcknowledgeAndRejoinReportsDiscarded() async throws {
        let cluster = try makeCluster(commitMode: "sync", proxies: true, settings: ["replica_wait_ms": .int(1000)])
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        let before = StopFlag()
        Task { try? await Task.sleep(for: .milliseconds(700)); before.stop() }
        let early = await WriteLog.run(cluster, writers: 4, prefix: "f", target: { _, _ in 0 }, until: { before.isStopped })
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)

        cluster.isolate(0, true)  // n1 can no longer reach its peers, nor they it
        let stop = StopFlag()
        async let cutOff = WriteLog.run(cluster, writers: 4, prefix: "x", target: { _, _ in 0 }, until: { stop.isStopped })
        try await Task.sleep(for: .milliseconds(500))
        let (status, report) = try promote(cluster, 1)
        #expect(status == 0, "\(JSON.encodeString(report))")
        #expect(report["epoch"] == .int(2))
        let afterPromotion = try await cluster.admin(1, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"new-1","qty":1}}]}"#))
        #expect(afterPromotion.status == 200, "n3 log: \(cluster.log(2).suffix(1500)) n2 log: \(cluster.log(1).suffix(2500))")
        try await Task.sleep(for: .milliseconds(1500))
        stop.stop()
        let isolated = await cutOff
        // The isolated primary acknowledged nothing: every answer was in doubt or a refusal.
        let isolatedAttempts = await isolated.attempts
        #expect(isolatedAttempts.count > 0)
        let isolatedAcks = isolatedAttempts.filter { $0.status == 200 }
        #expect(isolatedAcks.isEmpty, "the deposed primary acknowledged \(isolatedAcks.count) writes")
        #expect(isolatedAttempts.allSatisfy { [504, 503].contains($0.status) }, "\(isolatedAttempts.prefix(3))")

        // Healed, it learns epoch 2, stops, and halts as diverged (it logged unacknowledged writes).
        cluster.isolate(0, false)
        var learned = JSONValue.null
        for _ in 0..<50 {
            learned = try await cluster.status(0)
            if learned["epoch"] == .int(2), learned["replication"]?["state"]?.stringValue?.hasPrefix("diverged") == true { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(learned["role"] == .string("replica"))
        #expect(learned["epoch"] == .int(2))
        #expect(learned["replication"]?["state"]?.stringValue?.hasPrefix("diverged") == true, "\(JSON.encodeString(learned))")
        let refusedRead = try await cluster.request(0, "GET", "/rest/v1/items")
        #expect(refusedRead.body?["code"] == .string("AERO_REPL_DIVERGED"))
        cluster.stop(0)
        let (rejoinStatus, rejoinOutput) = try await Binaries.run("aerodb", ["rejoin", "--dir", cluster.directory(0), "--no-start"])
        #expect(rejoinStatus == 0, "\(rejoinOutput)")
        #expect(rejoinOutput.contains("fork at LSN"))
        let reportFile = try #require(try FileManager.default.contentsOfDirectory(atPath: cluster.directory(0)).first { $0.hasPrefix("rejoin-") })
        let rejoinReport = try JSON.parse(Array(FileManager.default.contents(atPath: cluster.directory(0) + "/" + reportFile)!))
        #expect(rejoinReport["fork"]?["lsn"] == report["fork_lsn"])
        let discardedIDs = (rejoinReport["discarded"]?.arrayValue ?? []).flatMap { $0["changes"]?.arrayValue ?? [] }.compactMap { $0["key"]?.stringValue }
        #expect(!discardedIDs.isEmpty)
        #expect(discardedIDs.allSatisfy { $0.hasPrefix("x-") })
        try await cluster.start(0)
        _ = try await cluster.waitConverged([0, 1, 2], to: 1)
        for i in 0..<3 {
            try await expectAcknowledged(early, on: cluster, i)
            #expect(try await documents(cluster, i, discardedIDs).isEmpty)
            #expect(try await documents(cluster, i, ["new-1"])["new-1"] == 1)
        }
    }

    @Test func switchoverLosesNothing() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        // The switchover once 80 writes were sent (at least 74 answered), the end once 40 more were
        // sent after it: conditions with 60 s deadlines, not fixed times (a loaded machine is slow).
        let stop = StopFlag(), sent = Mutex(0)
        func waitSent(_ count: Int) async {
            let deadline = Date().addingTimeInterval(60)
            while sent.withLock({ $0 }) < count && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        }
        Task {
            await waitSent(80)
            let (status, output) = (try? cluster.cli(["switchover", "--url", cluster.url(1)])) ?? (-1, "")
            #expect(status == 0, "switchover: \(output)")
            await waitSent(sent.withLock { $0 } + 40)
            stop.stop()
        }
        let load = await WriteLog.run(cluster, writers: 6, prefix: "s", target: { w, _ in w % 3 },
                                      until: { sent.withLock { $0 += 1 }; return stop.isStopped })
        let attempts = await load.attempts
        // Every write succeeded once, or failed cleanly (refused as not primary) and is absent.
        let unclear = attempts.filter { $0.status != 200 && $0.code != "AERO_NOT_PRIMARY" }
        #expect(unclear.isEmpty, "answers that are neither success nor a clean refusal: \(unclear.prefix(5))")
        #expect(try await cluster.status(1)["role"] == .string("primary"))
        _ = try await cluster.waitConverged([0, 1, 2], to: 1)
        let failed = attempts.filter { $0.status != 200 }.map(\.id)
        for i in 0..<3 {
            try await expectAcknowledged(load, on: cluster, i)
            #expect(try await documents(cluster, i, failed).isEmpty)
        }
        #expect(await load.acknowledged.count > 50)
    }

    /// A4 (issue 12 item 11): a deposed primary that was down while the new primary recycled every
    /// segment of the old epoch is not bootstrapped over its unreplicated tail: its position cannot
    /// be proven on the new history, so it halts as diverged until an explicit `aerodb rejoin`.
    @Test func aDeposedPrimaryOlderThanTheRetainedWALHaltsInsteadOfBeingBootstrapped() async throws {
        let cluster = try makeCluster(commitMode: "sync", proxies: true,
                                      settings: ["replica_wait_ms": .int(300), "wal_segment_bytes": .int(65_536)])
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        // Cut off, n1 logs writes no replica holds (each ends in doubt), then n2 is promoted.
        cluster.isolate(0, true)
        for k in 0..<3 {
            let write = try await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"tail-\#(k)","qty":1}}]}"#))
            #expect(write.status == 504)
        }
        let (status, report) = try promote(cluster, 1)
        #expect(status == 0, "\(JSON.encodeString(report))")
        cluster.stop(0)
        cluster.isolate(0, false)
        // While n1 is down, n2 writes several segments and checkpoints twice: epoch 1 is recycled.
        _ = try await recycleWAL(cluster, 1, prefix: "new")
        try await cluster.start(0)
        var state = ""
        for _ in 0..<100 {
            state = try await cluster.status(0)["replication"]?["state"]?.stringValue ?? ""
            if state.hasPrefix("diverged") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(state.hasPrefix("diverged"), "n1: \(state)")
        #expect(state.contains("cannot be proven"), "n1: \(state)")
        #expect(!cluster.log(0).contains("installed a checkpoint"), "n1 was bootstrapped over its unreplicated tail")
        #expect(try await cluster.request(0, "GET", "/rest/v1/items").body?["code"] == .string("AERO_REPL_DIVERGED"))
        // Only an explicit rejoin discards it: the fork is not within n2's retained WAL, so a full resync.
        cluster.stop(0)
        let (cutStatus, cutOutput) = try await Binaries.run("aerodb", ["rejoin", "--dir", cluster.directory(0), "--no-start"])
        #expect(cutStatus != 0, "\(cutOutput)")
        let (resyncStatus, resyncOutput) = try await Binaries.run("aerodb", ["rejoin", "--dir", cluster.directory(0), "--resync", "--no-start"])
        #expect(resyncStatus == 0, "\(resyncOutput)")
        try await cluster.start(0)
        _ = try await cluster.waitConverged([0, 1, 2], to: 1)
        for i in 0..<3 {
            #expect(try await documents(cluster, i, ["tail-0", "tail-1", "tail-2"]).isEmpty)
            #expect(try await documents(cluster, i, ["new1-19-99"])["new1-19-99"] == 99)
        }
    }

    /// A4/P1 (issue 12 item 11 follow-up): an honest replica stopped before a promotion, whose
    /// epoch the new primary recycled meanwhile, is bootstrapped without operator action by the
    /// epoch history proof (the new primary's record at its LSN is of its epoch) and converges;
    /// the deposed primary, whose unreplicated tail sits where the new primary has the next
    /// epoch, is still refused.
    @Test func anHonestReplicaDownAcrossAPromotionIsBootstrappedButTheDeposedPrimaryIsRefused() async throws {
        // async: the isolated primary acknowledges its tail, the new one writes with no replica up.
        let cluster = try makeCluster(commitMode: "async", proxies: true, settings: ["wal_segment_bytes": .int(65_536)])
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        _ = try await bulkInsert(cluster, 0, prefix: "old", count: 10)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        cluster.stop(2)  // n3: an honest replica, its last record of epoch 1
        cluster.isolate(0, true)
        for k in 0..<3 {  // n1's unreplicated tail in epoch 1
            let write = try await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"tail-\#(k)","qty":1}}]}"#))
            #expect(write.status == 200)
        }
        let (status, report) = try promote(cluster, 1, force: true)
        #expect(status == 0, "\(JSON.encodeString(report))")
        cluster.stop(0)
        cluster.isolate(0, false)
        // n2 writes several segments and checkpoints twice: epoch 1 is recycled on it.
        _ = try await recycleWAL(cluster, 1, prefix: "new")
        // n3 comes back: it learns epoch 2, is proven on n2's history and bootstrapped, no rejoin.
        try await cluster.start(2)
        _ = try await cluster.waitConverged([1, 2], to: 1)
        let honest = try await cluster.status(2)["replication"]?["state"]?.stringValue ?? ""
        #expect(honest.hasPrefix("streaming"), "n3: \(honest)")
        #expect(await cluster.log(2, eventuallyContaining: "installed a checkpoint").contains("installed a checkpoint"), "n3 was not bootstrapped from a checkpoint")
        #expect(try await documents(cluster, 2, ["old-9", "new1-19-99"]) == ["old-9": 9, "new1-19-99": 99])
        // n1 comes back with its tail in epoch 1 where n2 has epoch 2: refused, it halts.
        try await cluster.start(0)
        var state = ""
        for _ in 0..<100 {
            state = try await cluster.status(0)["replication"]?["state"]?.stringValue ?? ""
            if state.hasPrefix("diverged") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(state.hasPrefix("diverged") && state.contains("cannot be proven"), "n1: \(state)")
        #expect(!cluster.log(0).contains("installed a checkpoint"), "n1 was bootstrapped over its unreplicated tail")
        for i in 1...2 { #expect(try await documents(cluster, i, ["tail-0", "tail-1", "tail-2"]).isEmpty) }
    }

    /// A1 (issue 12 item 10): a deposed primary reconnecting with a diverged, longer log while a
    /// `sync` commit waits on the new primary (its only other replica down) releases nothing: its
    /// HELLO position is refused by the history check before it could count.
    @Test func aDivergedDeposedPrimaryReconnectingReleasesNoSyncCommit() async throws {
        let cluster = try makeCluster(commitMode: "sync", proxies: true, settings: ["replica_wait_ms": .int(3000)])
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        cluster.isolate(0, true)
        // n1 logs three writes no replica holds: its log is now longer than the fork.
        await withTaskGroup(of: Void.self) { group in
            for k in 0..<3 {
                group.addTask {
                    let write = try? await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"tail-\#(k)","qty":1}}]}"#))
                    #expect(write?.status == 504)
                }
            }
        }
        // The new primary is n2, or n3 when a record of n1 reached n3 only before the cut (the
        // promotion then refuses n2, naming n3 the better candidate, as it should).
        var (status, report) = try promote(cluster, 1)
        var target = 1
        if status != 0, report["better_candidate"]?.stringValue == "n3" {
            (status, report) = try promote(cluster, 2)
            target = 2
        }
        #expect(status == 0, "\(JSON.encodeString(report))")
        let newPrimary = target
        cluster.stop(3 - newPrimary)  // the new primary's only follower will be n1
        let waiting = Task {
            try await cluster.admin(newPrimary, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"waits","qty":1}}]}"#))
        }
        try await Task.sleep(for: .milliseconds(200))
        cluster.isolate(0, false)  // n1 learns epoch 2 and follows n2 with its longer log
        let answer = try await waiting.value
        #expect(answer.status == 504, "a sync commit was acknowledged with no replica holding it: \(answer.body.map(JSON.encodeString) ?? "")")
        var state = ""
        for _ in 0..<50 {
            state = try await cluster.status(0)["replication"]?["state"]?.stringValue ?? ""
            if state.hasPrefix("diverged") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(state.hasPrefix("diverged"), "n1: \(state)")
        #expect(cluster.log(target).contains("refused a diverged follower"), "n1 never reached n\(target + 1) while the commit waited")
    }

    /// Issue 12 item 13: a write sent to a replica while the primary is down is refused at once
    /// (it was never sent), not held until the forward deadline (30 s); once a new primary is
    /// promoted, the replica forwards there.
    @Test func forwardedWritesFailFastWhileThePrimaryIsDownAndFollowTheNewPrimary() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        let before = try await cluster.request(2, "POST", "/rest/v1/items", parse(#"{"id":"before","qty":1}"#))
        #expect(before.status == 201)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)  // n2 can be promoted (none ahead of it)
        cluster.kill(0)
        for (k, node) in [1, 2].enumerated() {
            let started = Date()
            let during = try await cluster.request(node, "POST", "/rest/v1/items", parse(#"{"id":"down-\#(k)","qty":1}"#), timeout: 40)
            let seconds = Date().timeIntervalSince(started)
            // A correctness bound (no request may be held anywhere near the 30 s forward deadline), not a benchmark.
            #expect(seconds < 10, "a forwarded write to a dead primary took \(seconds) s")
            #expect(during.status == 503, "\(during.body.map(JSON.encodeString) ?? "")")
            #expect(during.body?["code"] == .string("AERO_PRIMARY_UNAVAILABLE"))
        }
        let (status, report) = try promote(cluster, 1)
        #expect(status == 0, "\(JSON.encodeString(report))")
        // n3 was fenced by the promotion: its forwards go to n2 at once, and the write is readable on n3.
        let after = try await cluster.request(2, "POST", "/rest/v1/items", parse(#"{"id":"after","qty":2}"#),
                                              headers: ["Prefer": "return=representation"])
        #expect(after.status == 201, "\(after.body.map(JSON.encodeString) ?? "")")
        for i in [1, 2] {
            #expect(try await documents(cluster, i, ["before", "after", "down-0", "down-1"]) == ["before": 1, "after": 2])
        }
    }

    /// A1 (issue 20's finding): in `async` mode a promotion that reaches no other member (the
    /// primary dead, the target cut off) is refused without --force and changes nothing, so two
    /// promotions on the two sides of a partition cannot open one epoch; with one reachable
    /// replica (a majority of three) it succeeds as before.
    @Test func aPromotionWithoutAMajorityIsRefusedAndChangesNothing() async throws {
        let cluster = try makeCluster(commitMode: "async", proxies: true)
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        _ = try await bulkInsert(cluster, 0, prefix: "m", count: 5)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        cluster.kill(0)
        cluster.isolate(1, true)  // n2 reaches neither n1 nor n3
        let (status, report) = try promote(cluster, 1)
        #expect(status != 0, "\(JSON.encodeString(report))")
        #expect(report["promoted"] == .bool(false))
        let checks = report["checks"]?.arrayValue ?? []
        let majority = checks.first { $0["name"] == .string("majority reachable") }
        #expect(majority?["outcome"] == .string("refuse"), "\(JSON.encodeString(report))")
        #expect(majority?["detail"]?.stringValue?.contains("1 of 3 members (n2)") == true, "\(JSON.encodeString(report))")
        #expect(!checks.contains { ($0["name"]?.stringValue ?? "").hasPrefix("peer ") }, "refused before fencing anyone")
        for i in [1, 2] {  // nothing changed: n2 still a replica of epoch 1, n3 never asked to adopt
            let state = try await cluster.status(i)
            #expect(state["role"] == .string("replica") && state["epoch"] == .int(1), "n\(i + 1): \(JSON.encodeString(state))")
        }
        // n3 reachable again: two of three members adopt epoch 2 naming n2, and it opens it.
        cluster.isolate(1, false)
        let (healedStatus, healed) = try promote(cluster, 1)
        #expect(healedStatus == 0, "\(JSON.encodeString(healed))")
        #expect(healed["promoted"] == .bool(true) && healed["epoch"] == .int(2))
        let adopted = healed["checks"]?.arrayValue?.first { $0["name"] == .string("epoch adopted by a majority") }
        #expect(adopted?["outcome"] == .string("pass"), "\(JSON.encodeString(healed))")
        #expect(try await cluster.status(1)["role"] == .string("primary"))
        #expect(try await cluster.status(2)["epoch"] == .int(2))
        let write = try await cluster.request(1, "POST", "/rest/v1/items", parse(#"{"id":"after","qty":7}"#))
        #expect(write.status == 201, "\(write.body.map(JSON.encodeString) ?? "")")
    }

    /// `aerodb-crashtest cluster`, the user-facing fault harness: a kill round and a partition round,
    /// with storage uploaders through every node (ST8: every acknowledged object downloads with its
    /// SHA-256 from all three nodes after each failover).
    @Test func theCrashHarnessClusterModeFindsNoLostAcknowledgedWrite() async throws {
        let run = try await Binaries.run("aerodb-crashtest", ["cluster", "--rounds", "2", "--seconds", "1.5", "--writers", "4"])
        let lines = run.output.split(separator: "\n").map(String.init)
        #expect(run.status == 0, "\(run.output)")
        #expect(lines.last == "rounds: 2, 0 violations", "\(run.output)")
        let checked = lines.first { $0.hasPrefix("acknowledged writes checked: ") }
            .flatMap { Int($0.dropFirst("acknowledged writes checked: ".count).prefix { $0.isNumber }) } ?? 0
        #expect(checked > 0)
        let uploads = lines.first { $0.hasPrefix("acknowledged uploads checked: ") }
            .flatMap { Int($0.dropFirst("acknowledged uploads checked: ".count).prefix { $0.isNumber }) } ?? 0
        #expect(uploads > 0, "\(run.output)")
    }
}
