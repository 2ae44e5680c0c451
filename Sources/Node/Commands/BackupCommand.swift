// `aerodb backup` (online, from a running node's admin API), `aerodb backup verify` and
// `aerodb restore` (a new node directory, optionally to an LSN or a time). The backup format
// and its invariants (B1, B2): Sources/Kernel/Backup/Backup.swift; runbook: docs/OPERATIONS.md.

import ArgumentParser
import AsyncHTTPClient
import BaaS
import Foundation
import Kernel
import NIOCore
import Replication

enum BackupCLILimits {
    /// Largest base checkpoint the backup tool accepts in one answer (bytes): the node's memory
    /// limit is 4 GiB by default and a checkpoint is compressed, so 8 GiB leaves room.
    static let baseBytesMax = 8 << 30
    /// One WAL page answer at most (bytes): a page's payload bound plus framing and headers.
    static let walPageAnswerBytesMax = 2 * BackupLimits.walPageBytesMax + (1 << 20)
    /// How long one request of a backup may take.
    static let requestTimeoutSeconds: Int64 = 600
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up a running node (primary or replica) into a new directory while writes continue; or verify a backup.",
        subcommands: [BackupTakeCommand.self, BackupVerifyCommand.self],
        defaultSubcommand: BackupTakeCommand.self)
}

struct BackupTakeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "take",
        abstract: "Copy a node's base checkpoint, its WAL up to the durable LSN at the start and the blobs its objects name into --out: `aerodb backup --url URL --out FILE.aerobackup` (a running node; one compressed, checksummed file) or `--out DIR` (a directory), or `aerodb backup --dir NODE_DIR --out ...` (a stopped one).")

    @Option(help: "Base URL of a running node, e.g. http://127.0.0.1:54322.") var url: String?
    @Option(help: "The service_role key (default: $AERODB_SERVICE_KEY, or the keys of --dir).") var key: String?
    @Option(help: "A node directory: the stopped node to back up without --url; with --url, where to read the key.") var dir: String?
    @Option(help: "The backup to create: a file whose name ends in .aerobackup (one compressed, checksummed file), or a directory (must not exist, or be empty).") var out: String
    @Flag(help: "Print the manifest as JSON.") var json = false

    /// Where the backup's files are written: `out` itself, or for a one-file backup (B3) a
    /// staging directory beside it, packed into `out` and removed at the end.
    var directory: String { BackupBundle.isBundlePath(out) ? out + ".staging" : out }

    func validate() throws {
        if url == nil && dir == nil { throw ValidationError("give --url URL (a running node) or --dir NODE_DIR (a stopped node)") }
    }

    private func serviceKey() throws -> String {
        if let key { return key }
        if let env = ProcessInfo.processInfo.environment["AERODB_SERVICE_KEY"], !env.isEmpty { return env }
        if let dir { return try NodeSecrets.load(directory: dir).serviceRoleKey }
        throw ValidationError("the admin API needs the service_role key: pass --key, set AERODB_SERVICE_KEY, or pass --dir NODE_DIR")
    }

    /// A stopped node: its directory's lock refuses while it runs (one process per data directory).
    private func takeOffline(_ dir: String) async throws -> BackupManifest {
        let config = try NodeConfig.load(directory: dir)
        let options = config.kernelOptions(directory: dir)
        let lock = try DataDirectoryLock.acquire(dataDirectory: options.dataDirectory)
        defer { lock.release() }
        let manifest = try Database.backupOffline(options, into: directory, nodeID: config.nodeID, blobsPending: true)
        let blobs = try await BackupBlobFiles.referenced(backup: directory)
        try await BackupBlobFiles.copyOffline(blobs, dataDirectory: options.dataDirectory, into: directory)
        return try BackupBlobFiles.complete(manifest, blobs: blobs, out: directory)
    }

    func run() async throws {
        do {
            let manifest: BackupManifest
            if BackupBundle.isBundlePath(out), FileManager.default.fileExists(atPath: out) {
                throw AeroError(.configInvalid, "\(out) exists; a backup file is never overwritten")
            }
            if url == nil, let dir {
                manifest = try await takeOffline(dir)
            } else {
                manifest = try await take()
            }
            if BackupBundle.isBundlePath(out) {
                try BackupBundle.pack(directory: directory, into: out)
                try FileManager.default.removeItem(atPath: directory)
            }
            if json {
                print(JSON.encodeString(manifest.summary))
            } else {
                print("backup of \(manifest.nodeID) in \(out): base LSN \(manifest.base.lsn), end LSN \(manifest.end.lsn) (\(manifest.records) records, \(manifest.chunks.count) WAL chunk(s), \(manifest.blobs?.count ?? 0) blob(s))")
            }
        } catch let error as AeroError {
            print("\(error.code.rawValue): \(error.message)")
            if BackupBundle.isBundlePath(out) {
                if error.code != .configInvalid { try? FileManager.default.removeItem(atPath: directory) }
            } else if FileManager.default.fileExists(atPath: out + "/manifest.json") == false {
                print("the backup in \(out) is incomplete (no manifest.json): remove it")
            } else if (try? Database.backupManifest(out))?.blobsPending == true {
                print("the backup in \(out) is incomplete (its blobs are pending): remove it")
            }
            throw ExitCode(1)
        }
    }

    private func get(_ path: String, limit: Int) async throws -> (HTTPClientResponse, ByteBuffer) {
        let url = self.url ?? ""
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        var request = HTTPClientRequest(url: base + path)
        request.headers.add(name: "apikey", value: try serviceKey())
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(BackupCLILimits.requestTimeoutSeconds))
            body = try await response.body.collect(upTo: limit)
        } catch {
            throw AeroError(.primaryUnavailable, "cannot read \(base + path): \(error)")
        }
        guard response.status == .ok else {
            let answer = (try? JSON.parse(Array(body.readableBytesView)))
            if let code = answer?["code"]?.stringValue, let known = AeroError.Code(rawValue: code) {
                throw AeroError(known, answer?["message"]?.stringValue ?? "")
            }
            throw AeroError(.internalError, "\(path) answered \(response.status.code): \(String(buffer: body))")
        }
        return (response, body)
    }

    func take() async throws -> BackupManifest {
        let (head, baseBody) = try await get("/admin/v1/backup/base", limit: BackupCLILimits.baseBytesMax)
        func header(_ name: String) throws -> String {
            guard let value = head.headers.first(name: name) else { throw AeroError(.internalError, "the base answer has no \(name)") }
            return value
        }
        guard let baseLSN = UInt64(try header("X-AeroDB-Backup-Base-LSN")),
              let baseChecksum = UInt64(try header("X-AeroDB-Backup-Base-Checksum"), radix: 16),
              let baseEpoch = UInt64(try header("X-AeroDB-Backup-Base-Epoch")),
              let end = UInt64(try header("X-AeroDB-Durable-LSN")) else {
            throw AeroError(.internalError, "the base answer's headers are not LSNs")
        }
        let nodeID = head.headers.first(name: "X-AeroDB-Node") ?? ""
        // B5: the node keeps the WAL after the base for this backup while it reads (an older
        // node sends no hold: the reads go unheld).
        let hold = head.headers.first(name: "X-AeroDB-Backup-Hold").flatMap { UInt64($0) }.map { "&hold=\($0)" } ?? ""
        let writer = try BackupWriter(directory: directory, nodeID: nodeID, base: LogPosition(lsn: baseLSN, checksum: baseChecksum),
                                      baseBytes: Array(baseBody.readableBytesView))
        // The WAL from the base to the durable LSN when the base was taken: writes continue and
        // are not waited for (a later backup takes them).
        while writer.position.lsn < end {
            let (_, page) = try await get("/admin/v1/backup/wal?after=\(writer.position.lsn)\(hold)", limit: BackupCLILimits.walPageAnswerBytesMax)
            let records = try Self.frames(Array(page.readableBytesView))
            guard !records.isEmpty else {
                throw AeroError(.internalError, "the node sent no records after \(writer.position.lsn) (its durable LSN was \(end))")
            }
            try writer.append(records.filter { $0.lsn <= end })
        }
        let manifest = try writer.finish(createdMicros: SystemClock().nowMicros(), baseEpoch: baseEpoch, baseTimestampMicros: 0,
                                         blobsPending: true)
        // The blobs the state at the end LSN references (B4), fetched from the same node.
        let blobs = try await BackupBlobFiles.referenced(backup: directory)
        try await BackupBlobFiles.copyOnline(blobs, url: self.url ?? "", key: try serviceKey(), into: directory)
        return try BackupBlobFiles.complete(manifest, blobs: blobs, out: directory)
    }

    /// A WAL page of `/admin/v1/backup/wal`: the one frame parser (Kernel BackupFrames), which
    /// checks every frame's length against a record header and the page.
    static func frames(_ bytes: [UInt8]) throws -> [WALRecord] {
        try BackupFrames.decode(bytes, source: "the WAL page")
    }
}

struct BackupVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a backup: every file's size and XXH64, the record chain, then restore it into a scratch directory and verify that. Exit 0 when sound, 1 otherwise.")

    @Argument(help: "The backup: a .aerobackup file or a backup directory.") var backup: String

    func run() async throws {
        let scratch = NSTemporaryDirectory() + "aerodb-backup-verify-\(UUID().uuidString)"
        let unpacked = NSTemporaryDirectory() + "aerodb-backup-unpacked-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: scratch)
            try? FileManager.default.removeItem(atPath: unpacked)
        }
        try await CLIErrors.exitOnAeroError {
            let backup = try BackupBundle.directory(of: self.backup, unpackingInto: unpacked)
            let manifest = try Database.backupManifest(backup)
            if manifest.blobsPending {
                throw AeroError(.backupIncomplete, "\(backup): the backup's blob copy did not finish", invariant: "B4")
            }
            let report = try await Database.restore(backup: backup, into: KernelOptions(dataDirectory: scratch), target: .end)
            // Every blob's size and SHA-256, and every blob an object row names present (B4).
            let blobs = try await BackupBlobFiles.install(backup: backup, manifest: manifest, dataDirectory: scratch)
            if manifest.blobs != nil, blobs.missing > 0 {
                throw AeroError(.backupCorrupt, "\(blobs.missing) blob(s) that object rows name are not in the backup", invariant: "B4")
            }
            let verified = try Database.verify(dataDirectory: scratch)
            let blobText = manifest.blobs == nil ? "no blobs carried (format 1 or a scheduled backup)" : "\(blobs.installed) blob(s) sound"
            print("sound: restored to LSN \(report.restored.lsn) (\(report.recordsApplied) records after the base at LSN \(report.base.lsn)), \(report.documentCount) documents, \(blobText); \(verified.summary)")
        }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Make a new node directory (a new single-node cluster) from a backup, to its end, an LSN or a time.")

    @Option(help: "The backup (from `aerodb backup`): a .aerobackup file or a backup directory.") var from: String
    @Option(help: "The node directory to create (must not exist, or be empty).") var dir: String
    @Option(help: "Restore exactly the commits up to this LSN.") var toLsn: UInt64?
    @Option(help: "Restore the commits up to this time (RFC 3339, e.g. 2026-12-04T07:30:00.123456Z).") var toTime: String?
    @Option(help: "A WAL archive directory (cluster setting archive.directory) continuing the backup: the target may then lie past the backup's end.") var archive: String?
    @Option(help: "HTTP address HOST:PORT of the new node.") var http: String = NodeConfig.defaultHTTP
    @Option(help: "The new node's id.") var nodeId: String = "n1"
    @Option(help: "Copy secrets.json from this node directory (keep the JWT secret and API keys; default: new ones).") var secretsFrom: String?
    @Flag(help: "Print the report as JSON.") var json = false

    func validate() throws {
        if toLsn != nil && toTime != nil { throw ValidationError("give --to-lsn or --to-time, not both") }
        if let toTime, Timestamp.parse(toTime) == nil { throw ValidationError("--to-time is not an RFC 3339 time: \(toTime)") }
        _ = try HostPort.parse(http)
    }

    func run() async throws {
        let target: RestoreTarget = toLsn.map { .lsn($0) } ?? toTime.flatMap(Timestamp.parse).map { .time(micros: $0) } ?? .end
        var config = NodeConfig()
        config.http = http
        config.nodeID = nodeId
        let createdHere = !FileManager.default.fileExists(atPath: dir)
        let unpacked = NSTemporaryDirectory() + "aerodb-restore-unpacked-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: unpacked) }
        do {
            let from = try BackupBundle.directory(of: self.from, unpackingInto: unpacked)
            let secrets = try secretsFrom.map { try NodeSecrets.load(directory: $0) }
                ?? NodeSecrets.generate(nowSeconds: SystemClock().nowMicros() / 1_000_000)
            let clusterID = FieldValidator.randomUUID()
            try NodeDirectory.create(dir, config: config, secrets: secrets, marker: AuthorityMarker(clusterID: clusterID, epoch: 1, primary: nodeId))
            let options = config.kernelOptions(directory: dir)
            let manifest = try Database.backupManifest(from)
            if manifest.blobsPending {
                throw AeroError(.backupIncomplete, "\(from): the backup's blob copy did not finish", invariant: "B4")
            }
            let report = try await Database.restore(backup: from, into: options, target: target, archive: archive)
            // The objects' bytes (B4); below the backup's end an object deleted later may lack its blob.
            let blobs = try await BackupBlobFiles.install(backup: from, manifest: manifest, dataDirectory: options.dataDirectory)
            if manifest.blobs != nil, blobs.missing > 0 {
                if target == .end {
                    throw AeroError(.backupCorrupt, "\(blobs.missing) blob(s) that object rows name are not in the backup", invariant: "B4")
                }
                FileHandle.standardError.write(Data("warning: \(blobs.missing) object(s) at the restored point name blobs this backup does not carry (deleted before its end): their downloads answer 404\n".utf8))
            }
            if manifest.blobs == nil {
                FileHandle.standardError.write(Data("warning: this backup carries no storage blobs (format 1 or a scheduled backup): stored objects' bytes are not restored\n".utf8))
            }
            // The restored log ends in some epoch; the new node opens the next one (a new history
            // of a new cluster: its records are never confused with the original cluster's).
            try AuthorityStore(dataDirectory: options.dataDirectory)
                .replace(with: AuthorityMarker(clusterID: clusterID, epoch: report.epoch + 1, primary: nodeId))
            if json {
                print(JSON.encodeString(report.json))
            } else {
                print("restored \(self.from) into \(dir): LSN \(report.restored.lsn) (base \(report.base.lsn), \(report.recordsApplied) records applied), \(report.documentCount) documents; start it with `aerodb start --dir \(dir)`")
            }
        } catch let error as AeroError {
            if createdHere { try? FileManager.default.removeItem(atPath: dir) }
            print("\(error.code.rawValue): \(error.message)")
            throw ExitCode(1)
        }
    }
}
