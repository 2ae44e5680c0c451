// Continuous WAL archiving (issue 18 part 1) with a real node, real files and the `aerodb` CLI:
// the cluster setting turns it on, completed segments reach the archive without any push, a base
// backup plus the archive restores to a time between two commits (A and not B) and to an exact
// LSN past the backup's end; damage and gaps are found (WA1, WA2); an archive that fails keeps the
// WAL it has not archived through checkpoints (WA3).

import Foundation
import Testing
import Kernel
import LiveCluster
import BaaS
import Logging

private let padded = parse(#"{"name":"items","fields":{"id":{"type":"text"},"pad":{"type":"text","nullable":true}},"indexes":[]}"#)

/// A node with 64 KiB WAL segments (a few padded inserts complete a segment).
private func smallSegmentNode() async throws -> TestNode {
    let node = try await TestNode()
    let path = node.directory + "/aerodb.json"
    guard case .object(var config) = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path)))) else {
        throw AeroError(.internalError, "aerodb.json is not an object")
    }
    config["wal_segment_bytes"] = .int(65_536)
    try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: path))
    try await node.start()
    return node
}

private func insert(_ node: TestNode, _ id: String, padBytes: Int = 0) async throws -> UInt64 {
    let pad = String(repeating: "x", count: padBytes)
    let answer = try await node.admin("POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(id)","pad":"\#(pad)"}}]}"#))
    guard answer.status == 200, let lsn = answer.lsn else { throw AeroError(.internalError, "insert \(id): \(answer.status) \(String(describing: answer.body))") }
    return lsn
}

/// Polls the node's archiver until `done` holds (generous deadline: a loaded CI machine).
private func waitArchive(_ node: TestNode, _ what: String, _ done: (JSONValue) -> Bool) async throws -> JSONValue {
    var last: JSONValue?
    for _ in 0..<300 {
        let answer = try await node.admin("GET", "archive")
        if let body = answer.body, done(body) { return body }
        last = answer.body
        try await Task.sleep(for: .milliseconds(100))
    }
    throw AeroError(.internalError, "the archiver never reached \(what): \(last.map(JSON.encodeString) ?? "nil")")
}

@Suite(.serialized) struct WALArchiveTests {
    /// WA1, WA2, B2 with an archive: writes A, time T, writes B, segments complete and are archived
    /// by the archiver on its own; restore of the base backup plus the archive to T has A and not
    /// B, to B's LSN exactly A and B; a flipped byte and a removed file are found.
    @Test func archivedSegmentsRestoreToATimeBetweenTwoCommits() async throws {
        let node = try await smallSegmentNode()
        defer { node.kill() }
        let archive = node.directory + "-archive", backup = node.directory + "-backup"
        defer { for dir in [archive, backup] { try? FileManager.default.removeItem(atPath: dir) } }
        #expect(try await node.admin("POST", "collections", padded).status == 201)
        #expect(try await node.admin("PUT", "settings/archive.directory", .object(["value": .string(archive)])).status == 200)
        let refused = try await node.admin("PUT", "settings/archive.directory", .object(["value": .string("relative/dir")]))
        #expect(refused.status == 400, "a relative archive path is refused")

        // The base backup ends before A.
        let taken = try await runProgram(Binaries.path("aerodb"), ["backup", "--url", node.baseURL, "--out", backup, "--dir", node.directory, "--json"])
        #expect(taken.status == 0, "\(taken.output)")
        let backupEnd = try #require(parse(taken.output)["end"]?["lsn"]?.intValue)

        let lsnA = try await insert(node, "A")
        try await Task.sleep(for: .milliseconds(30))
        let between = SystemClock().nowMicros()
        try await Task.sleep(for: .milliseconds(30))
        let lsnB = try await insert(node, "B")
        #expect(Int64(lsnA) > backupEnd && lsnB > lsnA)
        // Padded inserts fill and complete segments (64 KiB each) past B.
        var fillerLSN: UInt64 = 0
        for n in 0..<40 { fillerLSN = try await insert(node, "fill-\(n)", padBytes: 4_000) }

        // The archiver archives completed segments by itself (no push).
        let status = try await waitArchive(node, "B's LSN") { ($0["archived_lsn"]?.intValue ?? 0) >= Int64(lsnB) }
        #expect(status["gaps"] == .array([]) && status["last_error"] == .null, "\(status)")
        let archivedBeforePush = try #require(status["archived_lsn"]?.intValue)
        #expect(archivedBeforePush < Int64(fillerLSN), "only completed segments: the tail is not archived yet")
        // The tail on demand.
        let pushed = try await runProgram(Binaries.path("aerodb"), ["archive", "push", "--url", node.baseURL, "--dir", node.directory])
        #expect(pushed.status == 0, "\(pushed.output)")
        #expect(parse(pushed.output)["archived_lsn"]?.intValue == Int64(fillerLSN), "\(pushed.output)")
        let metrics = try await exchange("GET", node.baseURL + "/metrics", headers: ["apikey": node.serviceKey])
        let text = String(decoding: metrics.body, as: UTF8.self)
        #expect(text.contains("aerodb_archive_archived_lsn ") && text.contains("aerodb_archive_lag_lsn ") && text.contains("aerodb_archive_failing 0"), "\(text.split(separator: "\n").filter { $0.contains("archive") })")

        let verified = try await runProgram(Binaries.path("aerodb"), ["archive", "verify", "--archive", archive])
        #expect(verified.status == 0, "\(verified.output)")
        let listed = try await runProgram(Binaries.path("aerodb"), ["archive", "status", "--archive", archive, "--url", node.baseURL,
                                                                    "--dir", node.directory, "--json"])
        #expect(listed.status == 0, "\(listed.output)")
        let files = try #require(parse(listed.output)["files"]?.intValue)
        #expect(files >= 3, "one file per completed segment and the tail: \(listed.output)")
        #expect(node.terminate() == 0)

        let ids = ["A", "B"] + (0..<40).map { "fill-\($0)" }
        // To the time between A and B: A, not B.
        let atTime = node.directory + "-at-time"
        defer { try? FileManager.default.removeItem(atPath: atTime) }
        let toTime = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--archive", archive, "--dir", atTime,
                                                                    "--to-time", Timestamp.format(between)])
        #expect(toTime.status == 0, "\(toTime.output)")
        let timeIDs = try await restoredIDs(atTime, among: ids)
        #expect(timeIDs.ids == ["A"] && timeIDs.lsn == lsnA, "\(timeIDs)")
        // Without the archive, the backup alone cannot reach B's LSN: refused, not rounded.
        let alone = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--dir", atTime + "-alone", "--to-lsn", String(lsnB)])
        #expect(alone.status != 0 && alone.output.contains("AERO_BACKUP_TARGET_UNAVAILABLE"), "\(alone.output)")
        // To B's LSN: exactly A and B.
        let atLSN = node.directory + "-at-lsn"
        defer { try? FileManager.default.removeItem(atPath: atLSN) }
        let toLSN = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--archive", archive, "--dir", atLSN, "--to-lsn", String(lsnB)])
        #expect(toLSN.status == 0, "\(toLSN.output)")
        let lsnIDs = try await restoredIDs(atLSN, among: ids)
        #expect(lsnIDs.ids == ["A", "B"] && lsnIDs.lsn == lsnB && lsnIDs.count == 2, "\(lsnIDs)")
        let verifiedRestore = try await runProgram(Binaries.path("aerodb"), ["verify", "--dir", atLSN])
        #expect(verifiedRestore.status == 0, "\(verifiedRestore.output)")
        // A time after the last archived commit: refused (later commits may not be archived).
        let late = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--archive", archive, "--dir", atLSN + "-late",
                                                                  "--to-time", Timestamp.format(SystemClock().nowMicros() + 60_000_000)])
        #expect(late.status != 0 && late.output.contains("AERO_BACKUP_TARGET_UNAVAILABLE"), "\(late.output)")

        // WA1: a flipped byte in a file. WA2: a removed middle file is a gap, and a restore across it is refused.
        let names = try FileManager.default.contentsOfDirectory(atPath: archive).filter { $0.hasSuffix(".walarc") }.sorted()
        let damaged = archive + "-damaged", holed = archive + "-holed"
        defer { for dir in [damaged, holed] { try? FileManager.default.removeItem(atPath: dir) } }
        try FileManager.default.copyItem(atPath: archive, toPath: damaged)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: damaged + "/" + names[0]))
        bytes[bytes.count - 10] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: damaged + "/" + names[0]))
        let flipped = try await runProgram(Binaries.path("aerodb"), ["archive", "verify", "--archive", damaged])
        #expect(flipped.status == 1 && flipped.output.contains("AERO_BACKUP_CORRUPT"), "\(flipped.output)")
        try FileManager.default.copyItem(atPath: archive, toPath: holed)
        try FileManager.default.removeItem(atPath: holed + "/" + names[1])
        let gap = try await runProgram(Binaries.path("aerodb"), ["archive", "status", "--archive", holed])
        #expect(gap.status == 1 && gap.output.contains("GAP (missing)"), "\(gap.output)")
        let across = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--archive", holed, "--dir", atLSN + "-holed",
                                                                    "--to-lsn", String(fillerLSN)])
        #expect(across.status != 0 && across.output.contains("AERO_BACKUP_TARGET_UNAVAILABLE"), "\(across.output)")
    }

    /// WA3: while archiving fails, checkpoints do not recycle the segments not archived yet (the
    /// archive, once it works again, starts at LSN 1 without a gap), the failure is in /metrics
    /// and the status; once archived, checkpoints recycle them.
    @Test func unarchivedSegmentsSurviveCheckpointsWhileTheArchiveFails() async throws {
        let node = try await smallSegmentNode()
        defer { node.kill() }
        let blocker = node.directory + "-not-a-directory", archive = node.directory + "-archive"
        defer { for path in [blocker, archive] { try? FileManager.default.removeItem(atPath: path) } }
        #expect(FileManager.default.createFile(atPath: blocker, contents: Data("a file".utf8)))
        #expect(try await node.admin("POST", "collections", padded).status == 201)
        #expect(try await node.admin("PUT", "settings/archive.directory", .object(["value": .string(blocker + "/archive")])).status == 200)
        let walDir = node.directory + "/data/wal"
        let segmentsAtStart = try FileManager.default.contentsOfDirectory(atPath: walDir).filter { $0.hasSuffix(".wal") }.sorted()
        for round in 0..<3 {
            for n in 0..<20 { _ = try await insert(node, "r\(round)-\(n)", padBytes: 4_000) }
            #expect(try await node.admin("POST", "checkpoint").status == 200)
        }
        let failing = try await waitArchive(node, "a failure") { ($0["failures"]?.intValue ?? 0) > 0 }
        #expect(failing["last_error"]?.stringValue?.isEmpty == false && failing["archived_lsn"] == .null, "\(failing)")
        let metrics = String(decoding: try await exchange("GET", node.baseURL + "/metrics", headers: ["apikey": node.serviceKey]).body, as: UTF8.self)
        #expect(metrics.contains("aerodb_archive_failing 1") && metrics.contains("aerodb_archive_failures_total"), "\(metrics.split(separator: "\n").filter { $0.contains("archive") })")
        let segments = try FileManager.default.contentsOfDirectory(atPath: walDir).filter { $0.hasSuffix(".wal") }.sorted()
        #expect(segments.first == segmentsAtStart.first && segments.count >= 4, "the first segment is kept: \(segments)")

        // The archive works again: everything from LSN 1, no gap; then checkpoints recycle.
        #expect(try await node.admin("PUT", "settings/archive.directory", .object(["value": .string(archive)])).status == 200)
        let caughtUp = try await waitArchive(node, "the completed segments") { body in
            guard body["archived_lsn"]?.intValue != nil, let lag = body["lag_lsn"]?.intValue else { return false }
            return body["last_error"] == .null && lag < 20
        }
        #expect(caughtUp["gaps"] == .array([]), "\(caughtUp)")
        let listing = try ArchiveDirectory.verify(archive)
        #expect(listing.firstLSN == 1 && listing.gaps.isEmpty, "\(listing.json)")
        for round in 0..<2 {
            for n in 0..<20 { _ = try await insert(node, "s\(round)-\(n)", padBytes: 4_000) }
            _ = try await waitArchive(node, "the new segments") { ($0["lag_lsn"]?.intValue ?? 99) < 20 }
            #expect(try await node.admin("POST", "checkpoint").status == 200)
        }
        let after = try FileManager.default.contentsOfDirectory(atPath: walDir).filter { $0.hasSuffix(".wal") }.sorted()
        #expect(after.first != segmentsAtStart.first, "archived segments are recycled: \(after)")
    }
}

@Suite(.serialized) struct ScheduledBackupTests {
    /// Scheduled backups (issue 18 part 2) on a real primary: the cluster setting turns them on,
    /// retention keeps the newest `keep`, every backup taken and removed is in the operation log,
    /// and what is kept is a sound backup (`aerodb backup verify`) holding the data.
    @Test func scheduledBackupsKeepTheNewestAndAreAudited() async throws {
        let node = try await TestNode()
        try await node.start()
        defer { node.kill() }
        let directory = node.directory + "-scheduled"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try await node.admin("POST", "collections", padded).status == 201)
        _ = try await insert(node, "A")
        let bad = try await node.admin("PUT", "settings/backup.schedule", parse(#"{"value":{"directory":"\#(directory)","every_seconds":0}}"#))
        #expect(bad.status == 400, "an interval out of range is refused")
        #expect(try await node.admin("PUT", "settings/backup.schedule",
                                     parse(#"{"value":{"directory":"\#(directory)","every_seconds":1,"keep":2}}"#)).status == 200)
        var status: JSONValue?
        for _ in 0..<600 {
            status = try await node.admin("GET", "backup/schedule").body
            if (status?["taken"]?.intValue ?? 0) >= 4, (status?["removed"]?.intValue ?? 0) >= 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect((status?["taken"]?.intValue ?? 0) >= 4 && status?["last_error"] == .null, "\(String(describing: status))")
        // Stop taking more, then look at what is kept.
        #expect(try await node.admin("PUT", "settings/backup.schedule", parse(#"{"value":null}"#)).status == 200)
        try await Task.sleep(for: .milliseconds(1_500))
        let kept = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("backup-") }.sorted()
        #expect(kept.count == 2, "keep 2: \(kept)")
        let verified = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", directory + "/" + kept.last!])
        #expect(verified.status == 0 && verified.output.contains("sound"), "\(verified.output)")
        var scheduled = 0, removed = 0
        for _ in 0..<100 {
            let events = try await node.admin("GET", "audit?limit=200").body?["events"]?.arrayValue ?? []
            scheduled = events.filter { $0["action"] == .string("backup scheduled") && $0["actor_role"] == .string("system") }.count
            removed = events.filter { $0["action"] == .string("backup removed") }.count
            if scheduled >= 4 && removed >= 2 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(scheduled >= 4 && removed == scheduled - 2, "operation log: \(scheduled) scheduled, \(removed) removed")
    }
}

@Suite(.serialized) struct ArchivePruneTests {
    /// WA4 with a real primary: scheduled backups (keep 1) prune the archive files wholly before
    /// the kept backup's end, in the operation log; what stays restores from that backup to the
    /// newest pushed commit; `aerodb archive prune` against a backup of another history is refused
    /// and removes nothing.
    @Test func scheduledBackupsPruneTheArchiveToTheOldestKeptBackup() async throws {
        let node = try await smallSegmentNode()
        defer { node.kill() }
        let archive = node.directory + "-archive", backups = node.directory + "-scheduled"
        defer { for dir in [archive, backups] { try? FileManager.default.removeItem(atPath: dir) } }
        #expect(try await node.admin("POST", "collections", padded).status == 201)
        #expect(try await node.admin("PUT", "settings/archive.directory", .object(["value": .string(archive)])).status == 200)
        var ids: [String] = []
        for n in 0..<40 { ids.append("a-\(n)"); _ = try await insert(node, "a-\(n)", padBytes: 4_000) }
        let archivedEarly = try await waitArchive(node, "the first segments") { ($0["files"]?.intValue ?? 0) >= 2 }
        let firstFiles = try ArchiveDirectory.scan(archive).entries
        #expect(firstFiles.first?.firstLSN == 1, "\(archivedEarly)")

        #expect(try await node.admin("PUT", "settings/backup.schedule",
                                     parse(#"{"value":{"directory":"\#(backups)","every_seconds":1,"keep":1}}"#)).status == 200)
        var status: JSONValue?
        // Until a pass pruned, and the archive holds no file wholly before the newest kept
        // backup's end: the archiver copies a completed segment up to a second after it completes,
        // so on a loaded machine one can land after the pass that would have pruned it; the next
        // pass (every second, no writes meanwhile) prunes it.
        func prunedToTheNewestBackup() -> Bool {
            guard let newest = (try? FileManager.default.contentsOfDirectory(atPath: backups))?
                    .filter({ $0.hasPrefix("backup-") }).sorted().last,
                  let end = try? Database.backupManifest(backups + "/" + newest).end,
                  let entries = try? ArchiveDirectory.scan(archive).entries else { return false }
            return entries.dropLast().allSatisfy { $0.lastLSN > end.lsn }
        }
        for _ in 0..<600 {
            status = try await node.admin("GET", "backup/schedule").body
            if (status?["archive_files_pruned"]?.intValue ?? 0) > 0 && prunedToTheNewestBackup() { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect((status?["archive_files_pruned"]?.intValue ?? 0) > 0 && status?["archive_prune_error"] == .null, "\(String(describing: status))")
        #expect(try await node.admin("PUT", "settings/backup.schedule", parse(#"{"value":null}"#)).status == 200)
        for _ in 0..<600 {  // a pass under way finishes; no other starts
            status = try await node.admin("GET", "backup/schedule").body
            if status?["pass_running"] == .bool(false) && status?["schedule"] == .null { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(status?["pass_running"] == .bool(false), "\(String(describing: status))")
        // What the last pass left. A segment that was still the WAL's tail during the passes
        // (the one holding the backup's end) is archived only after it completes, below: no
        // scheduled pass saw it, so it is not theirs to prune.
        let afterPasses = try ArchiveDirectory.scan(archive).entries

        // Writes after the backups, pushed to the archive.
        for n in 0..<5 { ids.append("b-\(n)"); _ = try await insert(node, "b-\(n)") }
        let pushed = try await runProgram(Binaries.path("aerodb"), ["archive", "push", "--url", node.baseURL, "--dir", node.directory])
        #expect(pushed.status == 0, "\(pushed.output)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: backups).filter { $0.hasPrefix("backup-") }.sorted()
        #expect(kept.count == 1, "keep 1: \(kept)")
        let backup = backups + "/" + kept[0]
        let end = try Database.backupManifest(backup).end
        let listing = try ArchiveDirectory.verify(archive)
        #expect(listing.firstLSN.map { $0 > 1 } == true, "the oldest files are gone: \(listing.json)")
        #expect(afterPasses.dropLast().allSatisfy { $0.lastLSN > end.lsn }, "the passes removed every file wholly before the backup's end (\(end)): \(afterPasses)")
        #expect(afterPasses.allSatisfy { listing.entries.contains($0) }, "and nothing else: \(listing.json)")
        #expect(listing.gaps.allSatisfy { $0.kind == "start" }, "\(listing.json)")
        var pruned = 0
        for _ in 0..<100 {
            let events = try await node.admin("GET", "audit?limit=200").body?["events"]?.arrayValue ?? []
            pruned = events.filter { $0["action"] == .string("archive pruned") && $0["actor_role"] == .string("system") }.count
            if pruned > 0 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(pruned > 0, "an `archive pruned` row in the operation log")
        #expect(node.terminate() == 0)

        // The kept backup plus the pruned archive restores every commit.
        let restored = node.directory + "-restored"
        defer { try? FileManager.default.removeItem(atPath: restored) }
        let restore = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backup, "--archive", archive, "--dir", restored])
        #expect(restore.status == 0, "\(restore.output)")
        let all = try await restoredIDs(restored, among: ids)
        #expect(all.ids.count == ids.count, "missing: \(Set(ids).subtracting(all.ids).sorted().prefix(5))")

        // Another history (the end checksum differs): refused, nothing removed.
        let before = try ArchiveDirectory.scan(archive).entries
        #expect(throws: AeroError.self) { try ArchiveDirectory.prune(archive, keepingAfter: LogPosition(lsn: end.lsn + 30, checksum: 12345)) }
        #expect(try ArchiveDirectory.scan(archive).entries == before)
        // What a prune removes now: every file wholly before the backup's end but the newest.
        // Those are the files archived after the last pass, and the one that was the newest then
        // (a prune never removes the newest file, and a push has added files after it since).
        let late = before.dropLast().filter { $0.lastLSN <= end.lsn }
        let cli = try await runProgram(Binaries.path("aerodb"), ["archive", "prune", "--archive", archive, "--backup", backup, "--json"])
        #expect(cli.status == 0 && (try? JSON.parse(cli.output))?["removed"]?.intValue == Int64(late.count),
                "pruned to this backup but for the \(late.count) file(s) wholly before its end (\(late)): \(cli.output)")
        let left = try ArchiveDirectory.scan(archive).entries
        #expect(left == before.filter { !late.contains($0) }, "exactly those removed: \(left)")
    }
}

@Suite(.serialized) struct ReplicaArchiveFloorTests {
    /// WA3 on a replica: with the cluster's archive visible (the shared mount), a replica's
    /// checkpoints keep every segment after the archive's last LSN, so a promoted replica can
    /// archive what the old primary had not; without a visible archive of this cluster, no floor
    /// (checkpoints recycle as usual). In-process: a real database on real files, the archiver
    /// as a replica's.
    @Test func aReplicaKeepsTheWALAfterTheSharedArchive() async throws {
        let directory = NSTemporaryDirectory() + "aerodb-replica-floor-\(UUID().uuidString)"
        let archive = directory + "-archive"
        defer { for dir in [directory, archive] { try? FileManager.default.removeItem(atPath: dir) } }
        var options = KernelOptions(dataDirectory: directory)
        options.walSegmentBytes = 65_536
        options.checkpointEveryWALBytes = 0
        let db = try await Database.open(options)
        _ = try await db.createCollection(padded)
        let pad = String(repeating: "x", count: 4_000)
        var count = 0
        func fill() async throws {
            for _ in 0..<40 {
                count += 1
                _ = try await db.commit([.insert(collection: "items", document: ["id": .string("d\(count)"), "pad": .string(pad)])])
            }
        }
        try await fill()
        // The shared archive holds the first records only: the primary archived that far.
        let early = Array(try db.records(from: 1, maxBytes: 1 << 20).prefix(5))
        _ = try ArchiveDirectory.write(early, into: archive, clusterID: "cluster-1")
        let floor = try #require(early.last?.lsn)
        let replica = WALArchiver(database: db, clusterID: "cluster-1", directory: { archive }, isPrimary: { false }, logger: Logger(label: "test"))
        replica.start()
        for _ in 0..<100 where replica.lsn != floor { try await Task.sleep(for: .milliseconds(100)) }
        #expect(replica.lsn == floor)
        #expect(replica.status()["replica_floor_lsn"]?.intValue == Int64(floor) && replica.status()["archiving"] == .bool(false))
        for _ in 0..<2 {
            try await fill()
            _ = try await db.checkpoint()
        }
        #expect(db.oldestLSN <= floor + 1, "segments after the archive's last LSN are kept: oldest \(db.oldestLSN), floor \(floor)")
        replica.stop()

        // Another cluster's archive is not this cluster's floor: checkpoints recycle.
        let other = WALArchiver(database: db, clusterID: "cluster-2", directory: { archive }, isPrimary: { false }, logger: Logger(label: "test"))
        other.start()
        defer { other.stop() }
        try await Task.sleep(for: .milliseconds(1_500))
        #expect(other.lsn == nil)
        for _ in 0..<2 {
            try await fill()
            _ = try await db.checkpoint()
        }
        #expect(db.oldestLSN > floor + 1, "no floor: recycled, oldest \(db.oldestLSN)")
        await db.close()
    }
}
