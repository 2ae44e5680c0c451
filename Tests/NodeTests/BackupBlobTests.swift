// Backups carry the storage blobs (B4, Kernel/Backup/Backup.swift), with real processes: objects
// uploaded through /storage/v1, `aerodb backup` online and from a stopped node's directory,
// `aerodb backup verify` (a flipped byte, a missing blob), `aerodb restore`, and the restored
// node serving the objects byte-identical.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import Kernel

@Suite(.serialized) struct BackupBlobTests {
    /// The service key's headers, after making the private bucket `files` on `node`.
    static func filesBucket(_ node: TestNode) async throws -> [String: String] {
        let auth = ["apikey": node.serviceKey, "Authorization": "Bearer " + node.serviceKey]
        let bucket = try await exchange("POST", node.baseURL + "/storage/v1/bucket", headers: auth.merging(["Content-Type": "application/json"]) { a, _ in a },
                                        body: Data(#"{"id":"files","name":"files","public":false}"#.utf8))
        #expect(bucket.status == 200, "\(String(decoding: bucket.body, as: UTF8.self))")
        return auth
    }

    /// B4: a backup restores its objects.
    @Test func backupCarriesBlobsAndRestoredNodeServesObjects() async throws {
        let node = try await TestNode()
        try await node.start()
        defer { node.kill() }
        let auth = try await Self.filesBucket(node)
        var big = [UInt8](repeating: 0, count: 300_000)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 7) }
        let objects: [(String, Data)] = [("big.bin", Data(big)), ("a/note.txt", Data("hello blobs".utf8)), ("copy.bin", Data(big)),
                                         ("gone.txt", Data("deleted before the backup".utf8))]
        for (name, bytes) in objects {
            let up = try await exchange("POST", node.baseURL + "/storage/v1/object/files/" + name,
                                        headers: auth.merging(["Content-Type": "application/octet-stream"]) { a, _ in a }, body: bytes)
            #expect(up.status == 200, "\(name): \(String(decoding: up.body, as: UTF8.self))")
        }
        let removed = try await exchange("DELETE", node.baseURL + "/storage/v1/object/files",
                                         headers: auth.merging(["Content-Type": "application/json"]) { a, _ in a },
                                         body: Data(#"{"prefixes":["gone.txt"]}"#.utf8))
        #expect(removed.status == 200, "\(String(decoding: removed.body, as: UTF8.self))")

        let backupDir = node.directory + "-blob-backup"
        defer { try? FileManager.default.removeItem(atPath: backupDir) }
        let taken = try await runProgram(Binaries.path("aerodb"), ["backup", "--url", node.baseURL, "--out", backupDir,
                                                                   "--key", node.serviceKey, "--json"])
        #expect(taken.status == 0, "\(taken.output)")
        let manifest = try JSON.parse(taken.output.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(manifest["format"]?.intValue == 2 && manifest["blobs_pending"] == nil)
        guard case .array(let blobs)? = manifest["blobs"] else { Issue.record("no blob list: \(taken.output)"); return }
        // Two distinct contents are referenced (big.bin and copy.bin share one); gone.txt is not.
        #expect(blobs.count == 2, "\(blobs)")
        let shas = blobs.compactMap { $0["sha256"]?.stringValue }
        for sha in shas { #expect(FileManager.default.fileExists(atPath: backupDir + "/blobs/" + sha)) }
        #expect(blobs.contains { $0["bytes"]?.intValue == 300_000 })

        let verified = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", backupDir])
        #expect(verified.status == 0 && verified.output.contains("2 blob(s) sound"), "\(verified.output)")

        // A flipped byte in a blob file fails verify; so does a missing blob.
        let damaged = backupDir + "-damaged"
        defer { try? FileManager.default.removeItem(atPath: damaged) }
        try FileManager.default.copyItem(atPath: backupDir, toPath: damaged)
        let victim = damaged + "/blobs/" + shas[0]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: victim))
        let refused = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", damaged])
        #expect(refused.status == 1 && refused.output.contains("AERO_BACKUP_CORRUPT"), "\(refused.output)")
        try FileManager.default.removeItem(atPath: victim)
        let lacking = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", damaged])
        #expect(lacking.status == 1 && lacking.output.contains("AERO_BACKUP_INCOMPLETE"), "\(lacking.output)")

        // A scheduled backup (taken in-process by the primary) carries the same blobs.
        let scheduled = node.directory + "-blob-scheduled"
        defer { try? FileManager.default.removeItem(atPath: scheduled) }
        let set = try await exchange("PUT", node.baseURL + "/admin/v1/settings/backup.schedule",
                                     headers: auth.merging(["Content-Type": "application/json"]) { a, _ in a },
                                     body: Data(#"{"value":{"directory":"\#(scheduled)","every_seconds":3600}}"#.utf8))
        #expect(set.status == 200, "\(String(decoding: set.body, as: UTF8.self))")
        var scheduledManifest: JSONValue?
        for _ in 0..<300 where scheduledManifest == nil {   // up to 30 s
            let names = (try? FileManager.default.contentsOfDirectory(atPath: scheduled)) ?? []
            if let name = names.first(where: { $0.hasPrefix("backup-") }),
               let data = FileManager.default.contents(atPath: scheduled + "/" + name + "/manifest.json") {
                scheduledManifest = try JSON.parse(Array(data))
                #expect(!names.contains { $0.hasPrefix(".partial-") })
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard case .array(let scheduledBlobs)? = scheduledManifest?["blobs"] else {
            Issue.record("no scheduled backup with a blob list: \(String(describing: scheduledManifest))"); return
        }
        #expect(Set(scheduledBlobs.compactMap { $0["sha256"]?.stringValue }) == Set(shas) && scheduledManifest?["blobs_pending"] == nil)

        // A format-1 manifest (before blobs) still verifies and restores, without blobs.
        let legacy = backupDir + "-format1"
        defer { try? FileManager.default.removeItem(atPath: legacy) }
        try FileManager.default.copyItem(atPath: backupDir, toPath: legacy)
        try FileManager.default.removeItem(atPath: legacy + "/blobs")
        guard case .object(var fields) = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: legacy + "/manifest.json")))) else {
            Issue.record("manifest.json is not an object"); return
        }
        fields["format"] = .int(1)
        fields["blobs"] = nil
        try Data(JSON.encodeString(.object(fields)).utf8).write(to: URL(fileURLWithPath: legacy + "/manifest.json"))
        let oldVerified = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", legacy])
        #expect(oldVerified.status == 0 && oldVerified.output.contains("no blobs carried"), "\(oldVerified.output)")
        let oldRestored = legacy + "-restored"
        defer { try? FileManager.default.removeItem(atPath: oldRestored) }
        let oldRestore = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", legacy, "--dir", oldRestored])
        #expect(oldRestore.status == 0 && oldRestore.output.contains("carries no storage blobs"), "\(oldRestore.output)")

        // Restore, start the restored node, download every object byte-identical.
        let restoredDir = node.directory + "-blob-restored"
        defer { try? FileManager.default.removeItem(atPath: restoredDir) }
        let port = TestNode.freePort()
        let restored = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backupDir, "--dir", restoredDir,
                                                                      "--http", "127.0.0.1:\(port)", "--secrets-from", node.directory])
        #expect(restored.status == 0, "\(restored.output)")
        #expect(node.terminate() == 0)
        let process = try startNodeProcess(restoredDir)
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let restoredURL = "http://127.0.0.1:\(port)"
        try await awaitReady(process, restoredURL)
        for (name, original) in objects.prefix(3) {
            let got = try await exchange("GET", restoredURL + "/storage/v1/object/files/" + name, headers: auth)
            #expect(got.status == 200 && got.body == original, "\(name): \(got.status), \(got.body.count) bytes")
        }
        let gone = try await exchange("GET", restoredURL + "/storage/v1/object/files/gone.txt", headers: auth)
        #expect(gone.status == 400 || gone.status == 404)

        // A stopped node's directory gives the same blobs.
        let offline = node.directory + "-blob-offline"
        defer { try? FileManager.default.removeItem(atPath: offline) }
        let stopped = try await runProgram(Binaries.path("aerodb"), ["backup", "--dir", node.directory, "--out", offline, "--json"])
        #expect(stopped.status == 0, "\(stopped.output)")
        let offlineShas = try JSON.parse(stopped.output.trimmingCharacters(in: .whitespacesAndNewlines))["blobs"]
        guard case .array(let list)? = offlineShas else { Issue.record("no blob list: \(stopped.output)"); return }
        #expect(Set(list.compactMap { $0["sha256"]?.stringValue }) == Set(shas))
        #expect(try await runProgram(Binaries.path("aerodb"), ["backup", "verify", offline]).status == 0)
    }

    /// B3: `aerodb backup --out X.aerobackup` writes one compressed, checksummed file (no staging
    /// directory left), which `backup verify` and `restore` read; a flipped byte fails verify and
    /// restore; an existing file is never overwritten; the restored node serves the object.
    @Test func aOneFileBackupVerifiesRestoresAndRefusesDamage() async throws {
        let node = try await TestNode()
        try await node.start()
        defer { node.kill() }
        let auth = try await Self.filesBucket(node)
        let original = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) })
        let up = try await exchange("POST", node.baseURL + "/storage/v1/object/files/one.bin",
                                    headers: auth.merging(["Content-Type": "application/octet-stream"]) { a, _ in a }, body: original)
        #expect(up.status == 200, "\(String(decoding: up.body, as: UTF8.self))")

        let file = node.directory + "-backup.aerobackup"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let taken = try await runProgram(Binaries.path("aerodb"), ["backup", "--url", node.baseURL, "--out", file, "--key", node.serviceKey])
        #expect(taken.status == 0 && taken.output.contains("1 blob(s)"), "\(taken.output)")
        var isDir: ObjCBool = true
        #expect(FileManager.default.fileExists(atPath: file, isDirectory: &isDir) && !isDir.boolValue)
        #expect(!FileManager.default.fileExists(atPath: file + ".staging") && !FileManager.default.fileExists(atPath: file + ".partial"))
        let again = try await runProgram(Binaries.path("aerodb"), ["backup", "--url", node.baseURL, "--out", file, "--key", node.serviceKey])
        #expect(again.status == 1 && again.output.contains("never overwritten"), "\(again.output)")

        let verified = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", file])
        #expect(verified.status == 0 && verified.output.contains("1 blob(s) sound"), "\(verified.output)")
        let damaged = node.directory + "-damaged.aerobackup"
        defer { try? FileManager.default.removeItem(atPath: damaged) }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: damaged))
        let refused = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", damaged])
        #expect(refused.status == 1 && refused.output.contains("AERO_BACKUP_CORRUPT"), "\(refused.output)")
        let refusedDir = node.directory + "-from-damaged"
        let refusedRestore = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", damaged, "--dir", refusedDir])
        #expect(refusedRestore.status == 1 && refusedRestore.output.contains("AERO_BACKUP_CORRUPT"), "\(refusedRestore.output)")
        #expect(!FileManager.default.fileExists(atPath: refusedDir))

        let restoredDir = node.directory + "-file-restored"
        defer { try? FileManager.default.removeItem(atPath: restoredDir) }
        let port = TestNode.freePort()
        let restored = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", file, "--dir", restoredDir,
                                                                      "--http", "127.0.0.1:\(port)", "--secrets-from", node.directory])
        #expect(restored.status == 0 && restored.output.contains("restored \(file) into"), "\(restored.output)")
        #expect(node.terminate() == 0)
        let process = try startNodeProcess(restoredDir)
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let restoredURL = "http://127.0.0.1:\(port)"
        try await awaitReady(process, restoredURL)
        let got = try await exchange("GET", restoredURL + "/storage/v1/object/files/one.bin", headers: auth)
        #expect(got.status == 200 && got.body == original, "\(got.status), \(got.body.count) bytes")
    }
}
