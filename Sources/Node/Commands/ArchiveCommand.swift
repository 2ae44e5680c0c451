// `aerodb archive status|verify|push`: the continuous WAL archive (format and invariants WA1-WA3:
// Sources/Kernel/Backup/Archive.swift; the archiver: Sources/BaaS/Ops/WALArchiver.swift; runbook:
// docs/OPERATIONS.md "WAL archive and point in time").

import ArgumentParser
import AsyncHTTPClient
import BaaS
import Foundation
import Kernel
import NIOCore
import NIOHTTP1

struct ArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Inspect, check or feed the continuous WAL archive (cluster setting archive.directory).",
        discussion: "Examples:\n  aerodb archive status --archive /mnt/archive/prod\n  aerodb archive verify --archive /mnt/archive/prod",
        subcommands: [ArchiveStatusCommand.self, ArchiveVerifyCommand.self, ArchivePushCommand.self, ArchivePruneCommand.self])
}

/// Prints a listing; exit 1 when it has gaps.
private func report(_ listing: ArchiveListing, _ directory: String, json: Bool, node: JSONValue?) throws {
    if json {
        var out = listing.json
        if case .object(var o) = out, let node { o["node"] = node; out = .object(o) }
        print(JSON.encodeString(out))
    } else {
        let range = listing.firstLSN.map { "LSN \($0) to \(listing.lastLSN!)" } ?? "empty"
        print("archive \(directory): \(listing.entries.count) file(s), \(range), cluster \(listing.clusterID ?? "none")")
        for gap in listing.gaps {
            switch gap.kind {
            case "start": print("starts at LSN \(gap.resumesAt): restore needs a base backup that ends at LSN \(gap.resumesAt - 1) or later")
            default: print("GAP (\(gap.kind)): nothing archived continues LSN \(gap.after) until LSN \(gap.resumesAt)")
            }
        }
        if let node {
            print("node: archived LSN \(node["archived_lsn"].map(JSON.encodeString) ?? "null"), lag \(node["lag_lsn"].map(JSON.encodeString) ?? "?") LSNs, failures \(node["failures"].map(JSON.encodeString) ?? "0"), last error \(node["last_error"].map(JSON.encodeString) ?? "null")")
        }
    }
    if listing.gaps.contains(where: { $0.kind != "start" }) { throw ExitCode(1) }
}

/// GET or POST an admin route of a running node (service_role key).
private func admin(_ method: HTTPMethod, _ url: String, _ path: String, key: String?, dir: String?) async throws -> JSONValue {
    let base = url.hasSuffix("/") ? String(url.dropLast()) : url
    var request = HTTPClientRequest(url: base + path)
    request.method = method
    let serviceKey: String
    if let key { serviceKey = key }
    else if let env = ProcessInfo.processInfo.environment["AERODB_SERVICE_KEY"], !env.isEmpty { serviceKey = env }
    else if let dir { serviceKey = try NodeSecrets.load(directory: dir).serviceRoleKey }
    else { throw ValidationError("the admin API needs the service_role key: pass --key, set AERODB_SERVICE_KEY, or pass --dir NODE_DIR") }
    request.headers.add(name: "apikey", value: serviceKey)
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
    let body = try await response.body.collect(upTo: 1 << 20)
    let value = try JSON.parse(Array(body.readableBytesView))
    guard response.status == .ok else {
        throw AeroError(AeroError.Code(rawValue: value["code"]?.stringValue ?? "") ?? .internalError,
                        value["message"]?.stringValue ?? "\(path) answered \(response.status.code)")
    }
    return value
}

/// An archive the operator names must exist: a mistyped path is not an empty, sound archive.
private func requireArchive(_ directory: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw AeroError(.notFound, "no archive directory at \(directory)")
    }
}

struct ArchiveStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "What the archive holds (from its file names) and its gaps; with --url, the node's archiver too (archived LSN, lag, failures). Exit 1 on a gap.",
        discussion: "Examples:\n  aerodb archive status --archive /mnt/archive/prod\n  aerodb archive status --archive /mnt/archive/prod --json \\\n      --url http://127.0.0.1:54321 --dir ./node1")

    @Option(help: "The archive directory.") var archive: String
    @Option(help: "A running node's base URL (its archiver's state).") var url: String?
    @Option(help: "The service_role key (default: $AERODB_SERVICE_KEY, or the keys of --dir).") var key: String?
    @Option(help: "A node directory to read the key from.") var dir: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIErrors.exitOnAeroError {
            var node: JSONValue?
            if let url { node = try await admin(.GET, url, "/admin/v1/archive", key: key, dir: dir) }
            try requireArchive(archive)
            try report(try ArchiveDirectory.scan(archive), archive, json: json, node: node)
        }
    }
}

struct ArchiveVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Read every archive file: both checksums, the framing, the record chain inside and between files (WA1, WA2). Exit 0 sound, 1 on damage or a gap.",
        discussion: "Examples:\n  aerodb archive verify --archive /mnt/archive/prod --json")

    @Option(help: "The archive directory.") var archive: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIErrors.exitOnAeroError {
            try requireArchive(archive)
            try report(try ArchiveDirectory.verify(archive), archive, json: json, node: nil)
        }
    }
}

struct ArchivePushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Archive the primary's durable WAL tail now (not only completed segments), e.g. before a restore to the latest commit or before shutting a primary down.",
        discussion: "Examples:\n  aerodb archive push --url http://127.0.0.1:54321 --dir ./node1")

    @Option(help: "A running node's base URL (a replica forwards to the primary).") var url: String
    @Option(help: "The service_role key (default: $AERODB_SERVICE_KEY, or the keys of --dir).") var key: String?
    @Option(help: "A node directory to read the key from.") var dir: String?

    func run() async throws {
        try await CLIErrors.exitOnAeroError {
            let status = try await admin(.POST, url, "/admin/v1/archive/push", key: key, dir: dir)
            print(JSON.encodeString(status))
        }
    }
}

struct ArchivePruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove the archive files wholly before the end of BACKUP, the oldest backup you keep (WA4): refused when the archive does not continue that backup's history. Scheduled backups do this themselves (backup.schedule prune_archive).",
        discussion: "Examples:\n  aerodb archive prune --archive /mnt/archive --backup /backups/2026-12-01")

    @Option(help: "The archive directory.") var archive: String
    @Option(help: "The oldest backup you keep (a directory with manifest.json).") var backup: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        try await CLIErrors.exitOnAeroError {
            try requireArchive(archive)
            let manifest = try Database.backupManifest(backup)
            let removed = try ArchiveDirectory.prune(archive, keepingAfter: manifest.end)
            if json {
                print(JSON.encodeString(.object(["removed": .int(Int64(removed.count)), "backup_end_lsn": .int(Int64(manifest.end.lsn)),
                                                 "first_lsn": removed.first.map { .int(Int64($0.firstLSN)) } ?? .null,
                                                 "last_lsn": removed.last.map { .int(Int64($0.lastLSN)) } ?? .null])))
            } else if let first = removed.first, let last = removed.last {
                print("removed \(removed.count) file(s), LSN \(first.firstLSN) to \(last.lastLSN): the backup ends at LSN \(manifest.end.lsn)")
            } else {
                print("nothing to remove: no archive file ends at or before LSN \(manifest.end.lsn) (the newest file is always kept)")
            }
        }
    }
}
