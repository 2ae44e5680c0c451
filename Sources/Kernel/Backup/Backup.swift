// Online backup and point-in-time restore (docs/OPERATIONS.md "Backup and restore").
//
// A backup is a directory, written by `aerodb backup` from a running node's admin API:
//
//   base.ckpt            the checkpoint the backup starts from, byte for byte as the node keeps it
//                        (docs/FORMATS.md: zlib, its own checksums); absent when the base is the
//                        origin (LSN 0: the node's WAL still reaches back to its first record)
//   wal-<6 digits>.records  every record after the base up to the end LSN, in order, in chunks
//                        of at most `BackupLimits.chunkBytesMax`, each record framed as
//                          0  4  length L (little endian, 64 <= L <= 64 + transactionBytesMax)
//                          4  L  the record exactly as in a WAL segment (64-byte header with its
//                                own XXH64, then the payload)
//   manifest.json        written last (temp file, fsync, rename, fsync of the directory):
//                        {"format":1,"node_id":..,"base":{"lsn":N,"checksum":"hex"},
//                         "end":{"lsn":N,"checksum":"hex","epoch":E,"timestamp_micros":T},
//                         "records":N,"chunks":[{"file":..,"bytes":N,"xxh64":"hex","records":N,
//                         "first_lsn":N,"last_lsn":N}],"base_file":{"bytes":N,"xxh64":"hex"}|null,
//                         "created_micros":T,
//                         "blobs":null|[{"sha256":"hex","bytes":N}], "blobs_pending":true (absent when false)}
//   blobs/<sha256>       (format 2) a storage blob the state at end.lsn references (an object row's
//                        sha256), byte for byte; listed in "blobs" with its size. "blobs": null means
//                        the backup does not carry blobs (format 1, or `writeBackup` without
//                        blobsPending); `aerodb backup` and the scheduled backups write the manifest
//                        with "blobs_pending": true after the WAL, copy the blobs
//                        (BaaS BackupBlobFiles), then replace it with the final list, so a backup
//                        whose blob copy did not finish is refused.
//
// Invariants:
// - B1 (a backup is one history): records run consecutively from base.lsn + 1 to end.lsn, each
//   one's previous checksum is the checksum of the one before (the first one's, the base's),
//   and end is the last one's position. The writer checks this as it receives records; restore
//   checks every file's size and XXH64 and the chain again before it applies anything.
// - B2 (restore is exact): restoring to LSN N gives exactly the state after the commits with
//   LSN <= N; to time T, the records in log order up to (excluding) the first whose commit
//   timestamp is after T. A target before the base or after the end is refused, never rounded.
// - A directory without manifest.json is an incomplete backup and is refused.
// - B4 (a backup restores its objects): when "blobs" is a list, every blob an object row names
//   at end.lsn is in it and in blobs/, each file's SHA-256 is its name (checked as it is written,
//   by `aerodb backup verify` and as `aerodb restore` installs it). Format 1 manifests still
//   restore (without blobs).

import Foundation

public enum BackupLimits {
    /// Largest WAL chunk file of a backup (bytes): each chunk is hashed in memory before it is
    /// written, so this bounds the backup tool's memory besides the base checkpoint.
    public static let chunkBytesMax = 64 << 20
    /// Payload bytes of records one `GET /admin/v1/backup/wal` answer carries at most.
    public static let walPageBytesMax = 8 << 20
    /// Online backups holding WAL on one node at once (B5): a base request beyond is refused
    /// with AERO_BACKUP_BUSY.
    public static let holdsMax = 16
    /// A backup's WAL hold ends after this long without a read (a backup tool that died):
    /// longer than the backup tool's request timeout (600 s), which bounds one base transfer.
    public static let holdIdleSeconds = 900
    /// Records applied to the restored log per batch (one flush per batch).
    static let restoreBatchRecordsMax = 1_000
    /// Format version of manifest.json written (2: the blob list); 1 is still read.
    public static let formatVersion = 2
    /// Largest manifest.json read (bytes): the chunk list grows 1 entry per 64 MiB of WAL, the
    /// blob list ~100 bytes per distinct stored object content (~2.6 million blobs).
    static let manifestBytesMax = 256 << 20
    /// Folder of a backup holding its blobs (format 2).
    public static let blobDirectory = "blobs"
}

/// Where a restore stops.
public enum RestoreTarget: Sendable, Equatable {
    case end
    case lsn(UInt64)
    case time(micros: Int64)
}

public struct BackupManifest: Sendable {
    public struct Chunk: Sendable {
        public let file: String
        public let bytes: Int
        public let xxh64: UInt64
        public let records: Int
        public let firstLSN: UInt64
        public let lastLSN: UInt64
    }
    public let nodeID: String
    public let base: LogPosition
    public let baseFile: (bytes: Int, xxh64: UInt64)?
    public let end: LogPosition
    public let endEpoch: UInt64
    public let endTimestampMicros: Int64
    public let records: Int
    public let chunks: [Chunk]
    public let createdMicros: Int64
    public struct Blob: Sendable, Equatable {
        public let sha256: String
        public let bytes: Int64
        public init(sha256: String, bytes: Int64) { self.sha256 = sha256; self.bytes = bytes }
    }
    /// nil: the backup does not carry blobs (format 1); else every blob the
    /// state at `end` references (B4).
    public var blobs: [Blob]? = nil
    /// The blob fetch of `aerodb backup` has not finished: the backup is incomplete (B4).
    public var blobsPending = false

    static let fileName = "manifest.json"

    /// 64 lower-case hex digits.
    public static func isBlobName(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// Replaces manifest.json of `directory` (temp file, fsync, rename, fsync) with this one.
    public func write(into directory: String, fileSystem: any FileSystem = POSIXFileSystem()) throws {
        var text = JSON.encode(json)
        text.append(0x0A)
        try fileSystem.writeAtomically(text, to: Path.join(directory, Self.fileName))
    }
    static let baseFileName = "base.ckpt"

    var json: JSONValue {
        func hex(_ v: UInt64) -> JSONValue { .string(String(v, radix: 16)) }
        return .object([
            "format": .int(Int64(BackupLimits.formatVersion)), "node_id": .string(nodeID),
            "base": .object(["lsn": .int(Int64(base.lsn)), "checksum": hex(base.checksum)]),
            "base_file": baseFile.map { .object(["bytes": .int(Int64($0.bytes)), "xxh64": hex($0.xxh64)]) } ?? .null,
            "end": .object(["lsn": .int(Int64(end.lsn)), "checksum": hex(end.checksum), "epoch": .int(Int64(endEpoch)),
                            "timestamp_micros": .int(endTimestampMicros)]),
            "records": .int(Int64(records)),
            "chunks": .array(chunks.map { c in
                .object(["file": .string(c.file), "bytes": .int(Int64(c.bytes)), "xxh64": hex(c.xxh64),
                         "records": .int(Int64(c.records)), "first_lsn": .int(Int64(c.firstLSN)), "last_lsn": .int(Int64(c.lastLSN))])
            }),
            "created_micros": .int(createdMicros),
            "blobs": blobs.map { list in .array(list.map { .object(["sha256": .string($0.sha256), "bytes": .int($0.bytes)]) }) } ?? .null,
        ].merging(blobsPending ? ["blobs_pending": .bool(true)] : [:]) { a, _ in a })
    }

    public var summary: JSONValue { json }

    static func parse(_ value: JSONValue) throws -> BackupManifest {
        func bad(_ what: String) -> AeroError { AeroError(.backupCorrupt, "manifest.json: \(what)", invariant: "B1") }
        func u64(_ v: JSONValue?, _ what: String) throws -> UInt64 {
            guard let n = v?.intValue, n >= 0, UInt64(n) <= KernelLimits.lsnMax else { throw bad("\(what) is not an LSN") }
            return UInt64(n)
        }
        func int(_ v: JSONValue?, _ what: String) throws -> Int {
            guard let n = v?.intValue, n >= 0, n <= Int64(Int32.max) * 1024 else { throw bad("\(what) is out of range") }
            return Int(n)
        }
        func hex(_ v: JSONValue?, _ what: String) throws -> UInt64 {
            guard let s = v?.stringValue, let n = UInt64(s, radix: 16) else { throw bad("\(what) is not a hex checksum") }
            return n
        }
        let format = value["format"]?.intValue
        guard format == 1 || format == Int64(BackupLimits.formatVersion) else {
            throw bad("format \(value["format"].map(JSON.encodeString) ?? "absent") is not 1 or \(BackupLimits.formatVersion)")
        }
        var blobs: [Blob]?
        if format == 2, case .array(let list)? = value["blobs"] {
            blobs = try list.map { b in
                guard let sha = b["sha256"]?.stringValue, isBlobName(sha) else { throw bad("a blob's sha256 is not 64 hex digits") }
                return Blob(sha256: sha, bytes: Int64(try int(b["bytes"], "blob bytes")))
            }
        }
        let base = LogPosition(lsn: try u64(value["base"]?["lsn"], "base.lsn"), checksum: try hex(value["base"]?["checksum"], "base.checksum"))
        var baseFile: (Int, UInt64)?
        if let file = value["base_file"], file != .null {
            baseFile = (try int(file["bytes"], "base_file.bytes"), try hex(file["xxh64"], "base_file.xxh64"))
        }
        guard case .array(let list)? = value["chunks"], list.count <= 1_000_000 else { throw bad("chunks is not a list") }
        let chunks = try list.map { c -> Chunk in
            guard let file = c["file"]?.stringValue, file.hasPrefix("wal-"), file.hasSuffix(".records"), !file.contains("/") else {
                throw bad("a chunk's file name is not wal-N.records")
            }
            return Chunk(file: file, bytes: try int(c["bytes"], "chunk bytes"), xxh64: try hex(c["xxh64"], "chunk xxh64"),
                         records: try int(c["records"], "chunk records"), firstLSN: try u64(c["first_lsn"], "first_lsn"),
                         lastLSN: try u64(c["last_lsn"], "last_lsn"))
        }
        guard let created = value["created_micros"]?.intValue, let endTime = value["end"]?["timestamp_micros"]?.intValue else {
            throw bad("created_micros or end.timestamp_micros is absent")
        }
        return BackupManifest(nodeID: value["node_id"]?.stringValue ?? "", base: base, baseFile: baseFile,
                              end: LogPosition(lsn: try u64(value["end"]?["lsn"], "end.lsn"), checksum: try hex(value["end"]?["checksum"], "end.checksum")),
                              endEpoch: try u64(value["end"]?["epoch"], "end.epoch"), endTimestampMicros: endTime,
                              records: try int(value["records"], "records"), chunks: chunks, createdMicros: created,
                              blobs: blobs, blobsPending: value["blobs_pending"] == .bool(true))
    }
}

/// Writes a backup directory: the base, then records in order (checked against B1), then the
/// manifest. Not thread-safe: one backup tool owns it.
public final class BackupWriter {
    private let directory: String
    private let nodeID: String
    private let fileSystem: any FileSystem
    private let base: LogPosition
    private let baseFile: (bytes: Int, xxh64: UInt64)?
    private var last: WALRecord?
    private var lastPosition: LogPosition
    private var pending: [UInt8] = []
    private var pendingRecords = 0
    private var pendingFirst: UInt64 = 0
    private var chunks: [BackupManifest.Chunk] = []
    private var records = 0

    /// Creates `directory` (it must not exist, or be empty) and writes the base checkpoint
    /// (`baseBytes` empty for the origin); the checkpoint must decode and sit at `base`.
    public init(directory: String, nodeID: String, base: LogPosition, baseBytes: [UInt8],
                fileSystem: any FileSystem = POSIXFileSystem()) throws {
        self.directory = directory
        self.nodeID = nodeID
        self.fileSystem = fileSystem
        self.base = base
        lastPosition = base
        if fileSystem.exists(directory) {
            guard try fileSystem.list(directory).isEmpty else {
                throw AeroError(.configInvalid, "\(directory) exists and is not empty; a backup goes into a new directory")
            }
        } else {
            try fileSystem.makeDirectory(directory)
            try fileSystem.syncDirectory(Path.parent(of: directory))
        }
        if base.lsn == 0 {
            guard baseBytes.isEmpty else { throw AeroError(.backupCorrupt, "a base at the origin has no checkpoint", invariant: "B1") }
            baseFile = nil
        } else {
            let state = try CheckpointFile.decode(baseBytes, name: "backup base")
            guard state.position == base else {
                throw AeroError(.backupCorrupt, "the base checkpoint holds \(state.position), not \(base)", invariant: "B1")
            }
            try fileSystem.writeAtomically(baseBytes, to: Path.join(directory, BackupManifest.baseFileName))
            baseFile = (baseBytes.count, XXH64.hash(baseBytes))
        }
    }

    public var position: LogPosition { lastPosition }

    /// Appends records that must continue the history (B1).
    public func append(_ batch: [WALRecord]) throws {
        for record in batch {
            guard record.lsn == lastPosition.lsn + 1, record.previousChecksum == lastPosition.checksum else {
                throw AeroError(.backupCorrupt, "record \(record.lsn) does not continue the backup's history at \(lastPosition)", invariant: "B1")
            }
            let bytes = record.encoded
            if pendingRecords > 0, pending.count + 4 + bytes.count > BackupLimits.chunkBytesMax { try flushChunk() }
            if pendingRecords == 0 { pendingFirst = record.lsn }
            var length = UInt32(bytes.count).littleEndian
            withUnsafeBytes(of: &length) { pending.append(contentsOf: $0) }
            pending.append(contentsOf: bytes)
            pendingRecords += 1
            records += 1
            lastPosition = record.position
            last = record
        }
    }

    private func flushChunk() throws {
        guard pendingRecords > 0 else { return }
        let name = "wal-" + String(chunks.count + 1).leftPadded(to: 6) + ".records"
        try fileSystem.writeAtomically(pending, to: Path.join(directory, name))
        chunks.append(.init(file: name, bytes: pending.count, xxh64: XXH64.hash(pending), records: pendingRecords,
                            firstLSN: pendingFirst, lastLSN: lastPosition.lsn))
        pending = []
        pendingRecords = 0
    }

    /// Writes the last chunk and the manifest; the backup is complete once this returns.
    /// `blobsPending`: the caller fetches the blobs next and then replaces the manifest (B4).
    public func finish(createdMicros: Int64, baseEpoch: UInt64, baseTimestampMicros: Int64,
                       blobsPending: Bool = false) throws -> BackupManifest {
        try flushChunk()
        let manifest = BackupManifest(nodeID: nodeID, base: base, baseFile: baseFile, end: lastPosition,
                                      endEpoch: last?.epoch ?? baseEpoch, endTimestampMicros: last?.timestampMicros ?? baseTimestampMicros,
                                      records: records, chunks: chunks, createdMicros: createdMicros,
                                      blobs: blobsPending ? [] : nil, blobsPending: blobsPending)
        try manifest.write(into: directory, fileSystem: fileSystem)
        return manifest
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// What a restore did.
public struct RestoreReport: Sendable {
    public let base: LogPosition
    public let restored: LogPosition
    public let recordsApplied: Int
    public let epoch: UInt64
    /// Commit time of the last record applied (nil when none was).
    public let lastTimestampMicros: Int64?
    public let documentCount: Int

    public var json: JSONValue {
        .object(["base_lsn": .int(Int64(base.lsn)), "restored_lsn": .int(Int64(restored.lsn)),
                 "restored_checksum": .string(String(restored.checksum, radix: 16)),
                 "records_applied": .int(Int64(recordsApplied)), "epoch": .int(Int64(epoch)),
                 "last_commit_time": lastTimestampMicros.map { .string(Timestamp.format($0)) } ?? .null,
                 "documents": .int(Int64(documentCount))])
    }
}

/// What an online backup starts from (`Database.backupBase`).
public struct BackupBase: Sendable {
    public let position: LogPosition
    public let epoch: UInt64
    /// The checkpoint file's bytes (empty for the origin).
    public let bytes: [UInt8]
    /// The durable LSN when the base was taken: where the backup ends.
    public let end: UInt64
    /// B5: the hold keeping the WAL after the base until the backup has read it
    /// (`backupRecords(after:hold:)`, `releaseBackupHold`).
    public let hold: UInt64
}

extension Database {
    /// The base an online backup starts from: the origin while the WAL still reaches back to
    /// LSN 1, else the oldest kept checkpoint the retained WAL continues (the widest window for
    /// point-in-time restore), else a new checkpoint. Holds the WAL after it (B5) until the
    /// backup reads it through `end`, ends, or idles out: release the hold when the backup fails.
    /// AERO_BACKUP_BUSY when `BackupLimits.holdsMax` backups are running.
    public func backupBase() async throws -> BackupBase {
        // The hold comes first, on all the WAL there is: a checkpoint between choosing the base
        // and holding its WAL would recycle what the backup reads next.
        let hold = try await holdWALForBackup()
        do {
            let (position, epoch, bytes) = try await chooseBackupBase()
            let end = durablePosition.lsn
            backupHolds.narrow(hold, floor: position.lsn + 1, end: end, through: position.lsn)
            return BackupBase(position: position, epoch: epoch, bytes: bytes, end: end, hold: hold)
        } catch {
            backupHolds.release(hold)
            throw error
        }
    }

    private func chooseBackupBase() async throws -> (LogPosition, UInt64, [UInt8]) {
        if oldestLSN <= 1 { return (.origin, 0, []) }
        let fs = options.fileSystem
        let kept = (try? fs.list(options.checkpointDirectory).compactMap(CheckpointFile.lsn(fromFileName:)).sorted()) ?? []
        for lsn in kept where lsn + 1 >= oldestLSN {
            let name = CheckpointFile.fileName(lsn: lsn)
            // A checkpoint pruned meanwhile is skipped: the next one (or a new one) serves.
            guard let bytes = try? fs.readFile(Path.join(options.checkpointDirectory, name)),
                  let state = try? CheckpointFile.decode(bytes, name: name), state.position.lsn == lsn else { continue }
            return (state.position, state.epoch, bytes)
        }
        let (_, bytes) = try await checkpointForShipping()
        let state = try CheckpointFile.decode(bytes, name: "new checkpoint")
        return (state.position, state.epoch, bytes)
    }

    /// Durable records after `after` (at most `maxBytes` of payload, none past `through`) for
    /// the online backup holding `hold`: its floor moves to `after + 1`, and the hold is released
    /// once the page reaches the backup's end. A hold this node does not know (idle past
    /// `BackupLimits.holdIdleSeconds`, or taken before a restart) does not stop the read; when
    /// the WAL is gone meanwhile the error says why.
    public func backupRecords(after: UInt64, hold: UInt64?, through: UInt64, maxBytes: Int = BackupLimits.walPageBytesMax) throws -> [WALRecord] {
        let known = hold.map { backupHolds.narrow($0, floor: after &+ 1) } ?? true
        guard after < through else { return [] }
        let page: [WALRecord]
        do {
            page = try records(from: after + 1, maxBytes: maxBytes).filter { $0.lsn <= through }
        } catch let error as AeroError where error.code == .lsnUnavailable && !known {
            throw AeroError(.lsnUnavailable, "\(error.message) (this backup's WAL hold had ended: more than \(BackupLimits.holdIdleSeconds) s without a read, or the node restarted; start the backup again)",
                            invariant: "B5")
        }
        if let hold, let last = page.last { backupHolds.narrow(hold, floor: last.lsn &+ 1, through: last.lsn) }
        return page
    }

    /// Ends a backup's hold before its end (the backup failed or was abandoned).
    public func releaseBackupHold(_ hold: UInt64) {
        backupHolds.release(hold)
    }

    /// Online backups holding WAL now (B5; tests and status).
    public var backupHoldCount: Int { backupHolds.count }

    /// The manifest of a complete backup (only manifest.json is read: no checksum of the other
    /// files); AERO_BACKUP_INCOMPLETE without one.
    public static func backupManifest(_ directory: String, fileSystem fs: any FileSystem = POSIXFileSystem()) throws -> BackupManifest {
        let path = Path.join(directory, BackupManifest.fileName)
        guard fs.exists(path) else {
            throw AeroError(.backupIncomplete, "\(directory) has no \(BackupManifest.fileName): not a complete backup", invariant: "B1")
        }
        let handle = try fs.open(path, create: false)
        let size = try handle.size()
        handle.close()
        guard size <= BackupLimits.manifestBytesMax else {
            throw AeroError(.backupCorrupt, "\(path) is \(size) bytes, more than \(BackupLimits.manifestBytesMax)", invariant: "B1")
        }
        do {
            return try BackupManifest.parse(try JSON.parse(try fs.readFile(path)))
        } catch let error as AeroError where error.code == .jsonInvalid {
            throw AeroError(.backupCorrupt, "\(path) does not parse: \(error.message)", invariant: "B1")
        }
    }

    /// Checks a backup directory without writing anything: the manifest, every file's size and
    /// XXH64, the base checkpoint, and the chain of every record (B1). Returns the manifest.
    public static func checkBackup(_ directory: String, fileSystem: any FileSystem = POSIXFileSystem()) async throws -> BackupManifest {
        let (manifest, _) = try openBackup(directory, fileSystem: fileSystem)
        var position = manifest.base
        try await forEachBackupRecord(directory, manifest, fileSystem: fileSystem) { record in
            guard record.lsn == position.lsn + 1, record.previousChecksum == position.checksum else {
                throw AeroError(.backupCorrupt, "record \(record.lsn) does not continue the history at \(position)", invariant: "B1")
            }
            position = record.position
            return true
        }
        guard position == manifest.end else {
            throw AeroError(.backupCorrupt, "the records end at \(position), the manifest says \(manifest.end)", invariant: "B1")
        }
        return manifest
    }

    private static func openBackup(_ directory: String, fileSystem fs: any FileSystem) throws -> (BackupManifest, DatabaseState?) {
        let manifestPath = Path.join(directory, BackupManifest.fileName)
        guard fs.exists(manifestPath) else {
            throw AeroError(.backupIncomplete, "\(directory) has no manifest.json: not a backup, or one that did not finish")
        }
        let handle = try fs.open(manifestPath, create: false)
        let size = try handle.size()
        handle.close()
        guard size <= BackupLimits.manifestBytesMax else {
            throw AeroError(.backupCorrupt, "manifest.json is \(size) bytes, more than \(BackupLimits.manifestBytesMax)", invariant: "B1")
        }
        let manifest: BackupManifest
        do {
            manifest = try BackupManifest.parse(try JSON.parse(try fs.readFile(manifestPath)))
        } catch let error as AeroError where error.code == .jsonInvalid {
            throw AeroError(.backupCorrupt, "manifest.json does not parse: \(error.message)", invariant: "B1")
        }
        var base: DatabaseState?
        if let file = manifest.baseFile {
            let bytes = try readChecked(Path.join(directory, BackupManifest.baseFileName), bytes: file.bytes, xxh64: file.xxh64, fs)
            let state = try CheckpointFile.decode(bytes, name: BackupManifest.baseFileName)
            guard state.position == manifest.base else {
                throw AeroError(.backupCorrupt, "base.ckpt holds \(state.position), the manifest says \(manifest.base)", invariant: "B1")
            }
            base = state
        } else if manifest.base.lsn != 0 {
            throw AeroError(.backupCorrupt, "the base at LSN \(manifest.base.lsn) has no base.ckpt", invariant: "B1")
        }
        return (manifest, base)
    }

    private static func readChecked(_ path: String, bytes: Int, xxh64: UInt64, _ fs: any FileSystem) throws -> [UInt8] {
        guard fs.exists(path) else { throw AeroError(.backupCorrupt, "\(path) is missing", invariant: "B1") }
        let data = try fs.readFile(path)
        guard data.count == bytes else {
            throw AeroError(.backupCorrupt, "\(path) is \(data.count) bytes, the manifest says \(bytes)", invariant: "B1")
        }
        let hash = XXH64.hash(data)
        guard hash == xxh64 else {
            throw AeroError(.backupCorrupt, "\(path): XXH64 \(String(hash, radix: 16)) is not the manifest's \(String(xxh64, radix: 16))", invariant: "B1")
        }
        return data
    }

    /// Calls `body` with every record of the backup in order until it returns false; every
    /// chunk is checked (size, XXH64, framing) before its records are handed out.
    private static func forEachBackupRecord(_ directory: String, _ manifest: BackupManifest, fileSystem fs: any FileSystem,
                                            _ body: (WALRecord) async throws -> Bool) async throws {
        for chunk in manifest.chunks {
            let data = try readChecked(Path.join(directory, chunk.file), bytes: chunk.bytes, xxh64: chunk.xxh64, fs)
            var count = 0, stopped = false
            // The bytes are whole (XXH64 above); records are handed out only after the chunk
            // decoded entirely, so a damaged frame is found before anything of it is applied.
            let records = try BackupFrames.decode(data, source: chunk.file)
            for record in records {
                count += 1
                guard try await body(record) else { stopped = true; break }
            }
            if stopped { return }
            guard count == chunk.records else {
                throw AeroError(.backupCorrupt, "\(chunk.file) holds \(count) records, the manifest says \(chunk.records)", invariant: "B1")
            }
        }
    }

    /// Builds a new data directory (`options.dataDirectory`, which must be absent or empty of
    /// WAL and checkpoints) from a backup, up to `target` (B2): checks the whole backup first,
    /// installs the base, then logs the records up to the target like a replica, durably.
    /// With `archive` (a WAL archive directory, Archive.swift), the records after the backup's
    /// end are taken from it as long as they continue the backup's history (WA2), so the target
    /// may lie past the backup's end; a time target past the last archived commit is refused
    /// (later commits may exist that the archive has not received yet).
    public static func restore(backup directory: String, into options: KernelOptions, target: RestoreTarget,
                               archive: String? = nil) async throws -> RestoreReport {
        var options = options
        options.role = .replica
        let fs = options.fileSystem
        let manifest = try await checkBackup(directory, fileSystem: fs)
        let (_, base) = try openBackup(directory, fileSystem: fs)
        switch target {
        case .end: break
        case .lsn(let lsn):
            var end = manifest.end.lsn
            if let archive, lsn > end, let reach = try ArchiveDirectory.scan(archive, fileSystem: fs).contiguousEnd(from: end + 1) {
                end = reach
            }
            guard lsn >= manifest.base.lsn, lsn <= end else {
                let what = archive == nil ? "this backup" : "this backup and the archive continuing it"
                throw AeroError(.backupTargetUnavailable, "LSN \(lsn) is outside \(what) (\(manifest.base.lsn) to \(end))", invariant: "B2")
            }
        case .time(let micros):
            guard micros >= 0 else { throw AeroError(.backupTargetUnavailable, "the target time is before 1970", invariant: "B2") }
        }
        for sub in [options.walDirectory, options.checkpointDirectory] where fs.exists(sub) {
            guard try fs.list(sub).isEmpty else {
                throw AeroError(.dataDirectoryInvalid, "\(options.dataDirectory) already holds a database; restore into a new node directory")
            }
        }
        let database = try await Database.open(options)
        var batch: [WALRecord] = []
        var applied = 0, lastTime: Int64?, first = true
        func apply() async throws {
            guard !batch.isEmpty else { return }
            let lsn = try database.applyReplicated(batch)
            try await database.waitDurable(lsn)
            applied += batch.count
            batch.removeAll(keepingCapacity: true)
        }
        do {
            if base != nil {
                try await database.install(checkpoint: try fs.readFile(Path.join(directory, BackupManifest.baseFileName)))
            }
            var reached = false
            let take: (WALRecord) async throws -> Bool = { record in
                switch target {
                case .end: break
                case .lsn(let lsn): if record.lsn > lsn { return false }
                case .time(let micros):
                    if record.timestampMicros > micros {
                        // A checkpoint base holds commits of unknown times: a target before the
                        // first record after it cannot be shown to follow all of them.
                        if first, manifest.base.lsn > 0 {
                            throw AeroError(.backupTargetUnavailable, "\(Timestamp.format(micros)) is before this backup's first commit after its base (LSN \(manifest.base.lsn)); its earliest point is that base", invariant: "B2")
                        }
                        reached = true
                        return false
                    }
                }
                first = false
                batch.append(record)
                lastTime = record.timestampMicros
                if batch.count >= BackupLimits.restoreBatchRecordsMax { try await apply() }
                if case .lsn(let lsn) = target, record.lsn == lsn { reached = true; return false }
                return true
            }
            if case .lsn(let lsn) = target, lsn == manifest.base.lsn { reached = true }
            try await forEachBackupRecord(directory, manifest, fileSystem: fs, take)
            if let archive, !reached {
                let through: UInt64? = if case .lsn(let lsn) = target { lsn } else { nil }
                _ = try await ArchiveDirectory.forEachRecord(archive, after: manifest.end, through: through, fileSystem: fs, take)
                if case .time(let micros) = target, !reached {
                    let last = lastTime.map(Timestamp.format) ?? "none"
                    throw AeroError(.backupTargetUnavailable, "\(Timestamp.format(micros)) is after the last archived commit (\(last)): later commits may not be archived yet; archive the tail first (`aerodb archive push`)", invariant: "WA2")
                }
            }
            try await apply()
        } catch {
            await database.close()
            throw error
        }
        let status = await database.status()
        let report = RestoreReport(base: manifest.base, restored: database.durablePosition, recordsApplied: applied,
                                   epoch: status.epoch, lastTimestampMicros: lastTime, documentCount: status.documentCount)
        await database.close()
        return report
    }
}

extension Database {
    /// A backup of a stopped node's data directory (the caller holds its lock): its oldest valid
    /// checkpoint (the origin when there is none) and every record after it, checked like an
    /// online backup (B1). A torn tail is left out (it was never acknowledged).
    public static func backupOffline(_ options: KernelOptions, into directory: String, nodeID: String,
                                     blobsPending: Bool = false) throws -> BackupManifest {
        let fs = options.fileSystem
        let kept = fs.exists(options.checkpointDirectory)
            ? try fs.list(options.checkpointDirectory).compactMap(CheckpointFile.lsn(fromFileName:)).sorted() : []
        var base: DatabaseState?
        var baseBytes: [UInt8] = []
        for lsn in kept {
            let name = CheckpointFile.fileName(lsn: lsn)
            guard let bytes = try? fs.readFile(Path.join(options.checkpointDirectory, name)),
                  let state = try? CheckpointFile.decode(bytes, name: name), state.position.lsn == lsn else { continue }
            base = state
            baseBytes = bytes
            break
        }
        let writer = try BackupWriter(directory: directory, nodeID: nodeID, base: base?.position ?? .origin,
                                      baseBytes: baseBytes, fileSystem: fs)
        var batch: [WALRecord] = []
        _ = try WALScan.run(fileSystem: fs, directory: options.walDirectory, segmentBytes: options.walSegmentBytes,
                            after: base?.position, repair: false) { record in
            batch.append(record)
            if batch.count >= BackupLimits.restoreBatchRecordsMax {
                try writer.append(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        try writer.append(batch)
        return try writer.finish(createdMicros: options.clock.nowMicros(), baseEpoch: base?.epoch ?? 0, baseTimestampMicros: 0,
                                 blobsPending: blobsPending)
    }
}

extension Database {
    /// An online backup taken in-process (the scheduled backups of the primary): the same base
    /// and records as `aerodb backup` reads over the admin API, checked by the same writer (B1).
    /// Ends at the durable LSN when the base was read; writes continue meanwhile. Releases the
    /// base's hold (B5). Blocking file I/O: call it from a thread or queue of its own, never from
    /// the cooperative pool; `base` is what `backupBase()` answered.
    public func writeBackup(base: BackupBase, into directory: String,
                            nodeID: String, blobsPending: Bool = false) throws -> BackupManifest {
        defer { releaseBackupHold(base.hold) }
        let end = base.end
        let writer = try BackupWriter(directory: directory, nodeID: nodeID, base: base.position, baseBytes: base.bytes,
                                      fileSystem: options.fileSystem)
        while writer.position.lsn < end {
            let page = try backupRecords(after: writer.position.lsn, hold: base.hold, through: end)
            guard !page.isEmpty else {
                throw AeroError(.internalError, "the WAL has no records after \(writer.position.lsn) (the backup ends at \(end))")
            }
            try writer.append(page)
        }
        return try writer.finish(createdMicros: options.clock.nowMicros(), baseEpoch: base.epoch, baseTimestampMicros: 0,
                                 blobsPending: blobsPending)
    }
}
