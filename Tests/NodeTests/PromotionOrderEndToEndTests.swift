// PromotionOrder on three real `aerodb` processes (SIM1, A3): a deposed primary that learned the
// new epoch without ever being refused by the new primary (it was down) keeps a longer tail of
// the old epoch. `aerodb promote` must not take it as the most up-to-date replica over a replica
// that holds records of the newer epoch: comparing LSNs alone (the node before protocol v3,
// `--sabotage promote-by-lsn-only` in the simulator) would promote it and lose the new epoch's
// writes.

import Foundation
import Testing
import Kernel
import LiveCluster

@Suite(.serialized) struct PromotionOrderEndToEndTests {
    @Test func aDeposedPrimaryWithALongerOldEpochTailIsNotAheadOfAReplicaOfTheNewEpoch() async throws {
        // async: the primary acknowledges writes alone, so its tail can outgrow the replicas'.
        let cluster = try makeCluster(commitMode: "async")
        try await cluster.startAll()
        defer { for i in 0..<3 { cluster.stop(i) } }
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)

        // n1 writes a tail of epoch 1 that no replica receives.
        cluster.stop(1)
        cluster.stop(2)
        for k in 0..<30 {
            let answer = try await cluster.admin(0, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"old-\#(k)","qty":\#(k)}}]}"#))
            #expect(answer.status == 200)
        }
        cluster.stop(0)

        // n2 is promoted to epoch 2 (async: the range at risk is reported) and writes; n3 follows it.
        try await cluster.start(1)
        try await cluster.start(2)
        let (first, firstReport) = try promote(cluster, 1)
        #expect(first == 0, "\(JSON.encodeString(firstReport))")
        #expect(firstReport["epoch"] == .int(2))
        var newWrite: (lsn: UInt64, epoch: UInt64)?
        for k in 0..<2 {
            let answer = try await cluster.admin(1, "POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"new-\#(k)","qty":\#(k)}}]}"#))
            #expect(answer.status == 200)
            if let lsn = answer.lsn, let epoch = answer.epoch { newWrite = (lsn, epoch) }
        }
        let written = try #require(newWrite, "a write's answer names its LSN and that record's epoch")
        #expect(written.epoch == 2)
        _ = try await cluster.waitConverged([1, 2], to: 1)

        // n2 goes down; n1 starts, learns epoch 2 from n3 (it never reaches n2, so nobody refuses
        // its history) and waits as a replica with the longer log.
        cluster.stop(1)
        try await cluster.start(0)
        var deposed = JSONValue.null
        for _ in 0..<100 {
            deposed = try await cluster.status(0)
            if deposed["epoch"] == .int(2) && deposed["role"] == .string("replica") { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(deposed["role"] == .string("replica"), "\(JSON.encodeString(deposed))")
        #expect(deposed["epoch"] == .int(2))
        let n1LSN = try #require(deposed["lsn"]?["durable"]?.intValue)
        let n3LSN = try #require(try await cluster.status(2)["lsn"]?["durable"]?.intValue)
        #expect(n1LSN > n3LSN, "the scenario needs n1's old-epoch log (\(n1LSN)) longer than n3's (\(n3LSN))")

        // P2 across histories: n1 holds LSN \(written.lsn) but of epoch 1, so a read that names the
        // write's epoch is refused there, and answered by n3, which holds the write.
        let minimum = ["X-AeroDB-Min-LSN": String(written.lsn), "X-AeroDB-Min-LSN-Epoch": String(written.epoch)]
        let query = parse(#"{"collection":"items","filter":{"id":"new-1"}}"#)
        let stale = try await cluster.request(0, "POST", "/admin/v1/query", query, headers: minimum)
        #expect(stale.status == 503, "\(String(describing: stale.body))")
        #expect(stale.body?["message"]?.stringValue?.contains("another history") == true, "\(String(describing: stale.body))")
        let fresh = try await cluster.request(2, "POST", "/admin/v1/query", query, headers: minimum)
        #expect(fresh.status == 200 && fresh.body?["rows"]?.arrayValue?.count == 1, "\(String(describing: fresh.body))")

        // The crash harness's pick (`LiveCluster.mostUpToDate`) follows the node's order: n3, not
        // the longer n1 that a pick by LSN alone would name.
        #expect(deposed["replication"]?["durable_record"]?["epoch"] == .int(1), "\(JSON.encodeString(deposed))")
        #expect(try await cluster.mostUpToDate([0, 2]) == 2)

        // Promoting n1 is refused: n3's last record is of epoch 2, ahead of n1's longer epoch-1 log.
        let (refusedStatus, refused) = try promote(cluster, 0)
        #expect(refusedStatus != 0)
        #expect(refused["promoted"] == .bool(false))
        #expect(refused["better_candidate"] == .string("n3"), "\(JSON.encodeString(refused))")
        let order = refused["checks"]?.arrayValue?.first { $0["name"] == .string("most up-to-date replica") }
        #expect(order?["outcome"] == .string("refuse"))
        #expect(try await cluster.status(0)["role"] == .string("replica"))
        #expect(try await cluster.status(0)["epoch"] == .int(2))

        // n3 is promoted: n1 is not ahead of it, whatever its length.
        let (promotedStatus, promoted) = try promote(cluster, 2)
        #expect(promotedStatus == 0, "\(JSON.encodeString(promoted))")
        #expect(promoted["epoch"] == .int(3))
        #expect(try await documents(cluster, 2, ["new-0", "new-1"]) == ["new-0": 0, "new-1": 1])
        // n1's tail is not on n3's history: n3 refuses it and it halts until `aerodb rejoin` (A4).
        var halted = JSONValue.null
        for _ in 0..<100 {
            halted = try await cluster.status(0)
            if halted["replication"]?["state"]?.stringValue?.hasPrefix("diverged") == true { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(halted["replication"]?["state"]?.stringValue?.hasPrefix("diverged") == true, "\(JSON.encodeString(halted))")
    }
}
