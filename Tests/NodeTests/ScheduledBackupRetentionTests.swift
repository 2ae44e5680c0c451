// Scheduled backups (issue 18 part 3) on a real three-node cluster: only the primary takes them
// (the replicas' schedule status says inactive and none taken; every backup in the shared
// directory names n1), and `keep_days` retention removes a backup older than that many days
// while keeping a younger one (BackupScheduler.expired, run after each scheduled backup); a
// partial directory a crash left more than a day ago is removed, a younger one (which a backup may
// still be writing) is left (BackupScheduler.abandoned).

import Foundation
import Testing
import Kernel
import LiveCluster

@Suite(.serialized) struct ScheduledBackupRetentionTests {
    @Test func onlyThePrimaryTakesScheduledBackupsAndKeepDaysRemovesOldOnes() async throws {
        let cluster = try makeCluster()
        try await cluster.startAll()
        defer { for i in 0..<3 { cluster.stop(i) } }
        let directory = cluster.root + "/scheduled"
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        #expect(try await cluster.admin(0, "PUT", "settings/backup.schedule",
                                        parse(#"{"value":{"directory":"\#(directory)","every_seconds":3600,"keep_days":1}}"#)).status == 200)
        func status(_ i: Int) async throws -> JSONValue? { try await cluster.admin(i, "GET", "backup/schedule").body }
        func backups() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("backup-") }.sorted()
        }
        // The first pass finds no backup: the primary takes one.
        var first: JSONValue?
        for _ in 0..<300 {
            first = try await status(0)
            if (first?["taken"]?.intValue ?? 0) >= 1 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(first?["taken"]?.intValue == 1 && first?["active"] == .bool(true), "\(String(describing: first))")
        let taken = try #require(backups().first)
        // Make it look 3 days old, and a copy of it 12 hours old: the newest is now 12 h old, so
        // the next pass takes a backup, then removes the 3-day-old one and keeps the 12-hour one.
        let now = SystemClock().nowMicros()
        func name(hoursAgo: Int64) -> String {
            "backup-" + Timestamp.format(now - hoursAgo * 3_600_000_000).replacingOccurrences(of: "+00:00", with: "Z")
        }
        let (old, young) = (name(hoursAgo: 72), name(hoursAgo: 12))
        try FileManager.default.moveItem(atPath: directory + "/" + taken, toPath: directory + "/" + old)
        try FileManager.default.copyItem(atPath: directory + "/" + old, toPath: directory + "/" + young)
        // Two partial directories as a crash mid-backup leaves them: one 2 days old, one 1 hour old.
        let (abandoned, fresh) = (".partial-" + name(hoursAgo: 48), ".partial-" + name(hoursAgo: 1))
        for partial in [abandoned, fresh] {
            try FileManager.default.copyItem(atPath: directory + "/" + old, toPath: directory + "/" + partial)
        }
        var after: JSONValue?
        for _ in 0..<300 {
            after = try await status(0)
            if (after?["removed"]?.intValue ?? 0) >= 1 && (after?["partials_removed"]?.intValue ?? 0) >= 1 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(after?["taken"]?.intValue == 2 && after?["removed"]?.intValue == 1 && after?["partials_removed"]?.intValue == 1,
                "\(String(describing: after))")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        #expect(!left.contains(abandoned) && left.contains(fresh), "left: \(left.sorted())")
        let kept = backups()
        #expect(kept.count == 2 && kept.contains(young) && !kept.contains(old), "kept: \(kept)")
        // Every backup there is the primary's; the replicas are inactive and took none.
        for backup in kept {
            #expect(try Database.backupManifest(directory + "/" + backup).nodeID == "n1", "\(backup)")
        }
        for i in 1..<3 {
            let replica = try await status(i)
            #expect(replica?["taken"]?.intValue == 0 && replica?["active"] == .bool(false), "n\(i + 1): \(String(describing: replica))")
        }
    }
}
