// Continuous WAL archiving (docs/OPERATIONS.md "WAL archive and point in time"; file format and
// invariants WA1-WA3: Kernel/Backup/Archive.swift).
//
// Configured per cluster: the cluster setting `archive.directory` (`aerodb config set
// archive.directory '"/srv/archive"'`, stored in `_settings` like the auth settings, so every
// member reads the same value and a promoted replica continues the same archive). Only the
// primary writes: a path is node-local, so the directory must be the same shared mount on every
// member that may become primary (or the archive simply continues where each primary has it).
//
// How it runs:
// - A serial queue of its own (never the writer, never a commit's path): every
//   `pollMillis` it reads the setting, and on the primary copies the records of every completed
//   WAL segment not archived yet into one archive file each (the tail on demand: `push`). It
//   reads the WAL through `Database.records` (segment files or the recent-records cache) and
//   writes outside every kernel lock; a commit never waits for it.
// - Decide then act: which range to archive is computed from the state (archived position,
//   segment boundaries, durable LSN), then read and written; the state is updated after.
// - WA3: it is the primary's archive floor: checkpoints keep every segment holding a record after
//   the archived LSN. An archive that fails (full or unwritable disk, another cluster's
//   directory) is retried every poll, counted in `aerodb_archive_failures_total`, shown in
//   `GET /admin/v1/archive` and its lag grows in `aerodb_archive_lag_lsn`: the WAL then grows
//   until the archive works again (like PostgreSQL's failing archive_command).
// - WA3 on a replica (the archive floor of a member that may be promoted): a replica never
//   archives, but when the archive directory is visible to it (the shared mount the runbook asks
//   for) and belongs to this cluster, each pass reads the archive's last LSN from the file names
//   and its checkpoints keep every segment after it, so a promoted replica can archive what the
//   old primary had not. A replica that cannot see the directory (no such path, or no archive
//   file of this cluster yet) keeps no floor (its WAL is not held hostage by an archive it cannot
//   see); a promotion then may leave a gap, reported by the new primary (WA2).
// - WA2: a gap is never bridged silently: when the next LSN to archive was already recycled (the
//   archive was configured late, or a new primary lacks records the old one had not archived),
//   archiving continues from the oldest record the WAL still has and the gap is reported.

import Dispatch
import Foundation
import Hummingbird
import Kernel
import Logging
import Synchronization

public final class WALArchiver: RetentionFloor, Sendable {
    /// Time between two archiving passes (milliseconds).
    public static let pollMillis = 1_000
    /// The cluster setting that names the archive directory.
    public static let settingKey = "archive.directory"

    struct State {
        /// The configured directory (nil: archiving is off).
        var directory: String?
        /// The directory `archived` was read from.
        var scanned: String?
        /// Position of the last archived record (nil: the archive is empty or not read yet).
        var archived: LogPosition?
        var files = 0
        var gaps: [ArchiveListing.Gap] = []
        var isPrimary = false
        var failures: Int64 = 0
        var lastError: String?
        var lastErrorMicros: Int64?
        var lastSuccessMicros: Int64?
        var lastFile: String?
        /// On a replica: the last LSN of the shared archive as last seen (nil: not visible).
        var replicaFloor: UInt64?
    }

    let database: Database
    let clusterID: String
    /// The configured directory; throws when the setting cannot be read (then the floor keeps
    /// every segment, WA3, and the pass is a recorded failure).
    let directory: @Sendable () throws -> String?
    let isPrimary: @Sendable () -> Bool
    let logger: Logger
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "aerodb.wal-archiver")
    private let stopped = Atomic<Bool>(false)

    public init(database: Database, clusterID: String, directory: @escaping @Sendable () throws -> String?,
                isPrimary: @escaping @Sendable () -> Bool, logger: Logger) {
        self.database = database
        self.clusterID = clusterID
        self.directory = directory
        self.isPrimary = isPrimary
        self.logger = logger
    }

    /// The archive directory from the cluster settings (`archive.directory`: an absolute path, or
    /// null/absent for off).
    public static func directory(from settings: ClusterSettings) throws -> String? {
        guard case .string(let path)? = try settings.stored()[settingKey], !path.isEmpty else { return nil }
        return path
    }

    /// WA3: the last archived LSN on a primary with an archive (0 while it is not read yet:
    /// nothing may be recycled); nil when this node does not archive.
    /// The setting is read here, not taken from the last pass: a checkpoint right after the
    /// archive was configured must already keep the WAL.
    public var lsn: UInt64? {
        guard isPrimary() else { return state.withLock { $0.replicaFloor } }
        let configured: String?
        do { configured = try directory() } catch { return 0 }  // unreadable setting: recycle nothing (WA3)
        guard let configured else { return nil }
        return state.withLock { s in s.scanned == configured ? (s.archived?.lsn ?? 0) : 0 }
    }

    /// Installs the archive floor, then archives every `pollMillis` until `stop()`.
    public func start() {
        // The configuration is read once before the floor can be consulted (WA3 from the first checkpoint).
        let configured = try? directory()  // unreadable: the floor still keeps everything; the pass reports it
        let primary = isPrimary()
        state.withLock { $0.directory = configured; $0.isPrimary = primary }
        database.setArchiveFloor(self)
        NodeMetrics.shared.setArchiveFigures { [weak self] in self?.figures() ?? [] }
        schedule()
    }

    /// Stops the passes (one under way finishes its file).
    public func stop() {
        stopped.store(true, ordering: .relaxed)
    }

    private func schedule() {
        queue.asyncAfter(deadline: .now() + .milliseconds(Self.pollMillis)) { [weak self] in
            guard let self, !self.stopped.load(ordering: .relaxed) else { return }
            _ = try? self.pass(tail: false)
            self.schedule()
        }
    }

    /// Archives the durable tail now (on the primary), waiting for the pass; returns the status.
    public func push() async throws -> JSONValue {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JSONValue, any Error>) in
            queue.async {
                continuation.resume(with: Result {
                    guard self.isPrimary() else { throw AeroError(.notPrimary, "only the primary archives the WAL: push on the primary") }
                    try self.pass(tail: true)
                    return self.status()
                })
            }
        }
    }

    /// One pass on the archiver's queue. Throws what failed (also recorded in the state).
    @discardableResult
    func pass(tail: Bool) throws -> Int {
        let configured: String?
        do { configured = try directory() } catch {
            recordFailure("cluster setting \(Self.settingKey) unreadable: \(error)", archive: nil)
            throw error
        }
        let primary = isPrimary()
        state.withLock { $0.directory = configured; $0.isPrimary = primary }
        guard let configured else {
            if tail { throw AeroError(.configInvalid, "WAL archiving is off: set the cluster setting \(Self.settingKey)") }
            return 0
        }
        guard primary else {
            followArchive(configured)
            return 0
        }
        state.withLock { $0.replicaFloor = nil }
        do {
            let written = try archive(into: configured, tail: tail)
            state.withLock { $0.lastError = nil; $0.lastSuccessMicros = SystemClock().nowMicros() }
            return written
        } catch {
            recordFailure((error as? AeroError).map { "\($0.code.rawValue): \($0.message)" } ?? "\(error)", archive: configured)
            throw error
        }
    }

    /// On a replica: the floor from the shared archive's file names (WA3 on a replica), nil when
    /// the directory is not visible here or holds no file of this cluster.
    private func followArchive(_ directory: String) {
        var floor: UInt64?
        if let listing = try? ArchiveDirectory.scan(directory), listing.clusterID == clusterID, let last = listing.lastLSN {
            floor = last
        }
        state.withLock { $0.replicaFloor = floor }
    }

    /// Archives the durable tail now, on the archiver's queue, waiting for it (the scheduler's
    /// queue, before it prunes: the archive then holds the backup's end record, WA4).
    func archiveTailNow() throws {
        try queue.sync { _ = try pass(tail: true) }
    }

    /// A prune (BackupScheduler, WA4) removed `count` files.
    public func noteRemoved(_ count: Int) {
        state.withLock { $0.files = max(0, $0.files - count) }
    }

    /// A failed pass: counted, kept as the last error, logged when it differs from the last one.
    private func recordFailure(_ message: String, archive: String?) {
        let first = state.withLock { s -> Bool in
            defer { s.failures += 1; s.lastError = message; s.lastErrorMicros = SystemClock().nowMicros() }
            return s.lastError != message
        }
        NodeMetrics.shared.countArchiveFailure()
        if first { logger.error("WAL archiving failed", metadata: ["archive": "\(archive ?? "-")", "error": "\(message)"]) }
    }

    /// Reads the archive's end when the directory changed, then writes one file per completed
    /// segment (and the tail when asked). Returns the files written.
    private func archive(into directory: String, tail: Bool) throws -> Int {
        if state.withLock({ $0.scanned != directory }) {
            let listing = try ArchiveDirectory.scan(directory)
            if let id = listing.clusterID, id != clusterID {
                throw AeroError(.configInvalid, "the archive \(directory) belongs to cluster \(id), not this one (\(clusterID))")
            }
            var archived: LogPosition?
            if let last = listing.entries.last {
                let (header, _) = try ArchiveFile.decode(try POSIXFileSystem().readFile(Path.join(directory, last.file)), name: last.file)
                archived = LogPosition(lsn: header.lastLSN, checksum: header.lastChecksum)
            }
            state.withLock { $0.scanned = directory; $0.archived = archived; $0.files = listing.entries.count; $0.gaps = listing.gaps }
        }
        var written = 0
        while !stopped.load(ordering: .relaxed) {
            // Decide: the next range [next, end] and the position it must continue.
            let archived = state.withLock { $0.archived }
            let durable = database.durablePosition.lsn
            let starts = database.walSegmentFirstLSNs
            var next = (archived?.lsn ?? 0) + 1
            let oldest = database.oldestLSN
            var gap: ArchiveListing.Gap?
            if next < oldest {
                // WA2: the records between were recycled before they were archived.
                gap = .init(after: next - 1, resumesAt: oldest, kind: next == 1 ? "start" : "missing")
                next = oldest
            }
            let completedEnd = starts.count >= 2 ? starts[starts.count - 1] - 1 : 0
            let limit = tail ? durable : min(completedEnd, durable)
            guard next <= limit else { return written }
            let segmentEnd = starts.first(where: { $0 > next }).map { $0 - 1 } ?? limit
            let end = min(segmentEnd, limit)
            // Act: read the records (outside every kernel lock) and write the file.
            var records: [WALRecord] = []
            var bytes = 0
            var at = next
            reading: while at <= end {
                let page = try database.records(from: at, maxBytes: BackupLimits.walPageBytesMax)
                guard !page.isEmpty else { break }
                for record in page {
                    guard record.lsn == at, record.lsn <= end else { break reading }
                    let size = record.payload.count + WALRecordSize.overhead
                    if !records.isEmpty, bytes + size > ArchiveLimits.fileBytesMax { break reading }  // the file is full
                    records.append(record)
                    bytes += size
                    at += 1
                }
            }
            guard let first = records.first, first.lsn == next else {
                throw AeroError(.lsnUnavailable, "the WAL no longer holds LSN \(next) to archive")
            }
            if gap == nil, let archived, first.previousChecksum != archived.checksum {
                throw AeroError(.backupCorrupt, "this node's record \(first.lsn) does not continue the archive at \(archived) (another history): give the archive a new directory after a base backup", invariant: "WA2")
            }
            let entry = try ArchiveDirectory.write(records, into: directory, clusterID: clusterID)
            written += 1
            state.withLock { s in
                s.archived = records.last!.position
                s.files += 1
                s.lastFile = entry.file
                if let gap { s.gaps.append(gap) }
            }
            if let gap {
                logger.warning("WAL archive gap: records were recycled before they were archived", metadata: [
                    "after": "\(gap.after)", "resumes_at": "\(gap.resumesAt)"])
            }
        }
        return written
    }

    /// The archiver as `GET /admin/v1/archive` shows it.
    public func status() -> JSONValue {
        let durable = database.durablePosition.lsn
        return state.withLock { s in
            .object([
                "directory": s.directory.map(JSONValue.string) ?? .null,
                "archiving": .bool(s.directory != nil && s.isPrimary),
                "role": .string(s.isPrimary ? "primary" : "replica"),
                "archived_lsn": s.archived.map { .int(Int64($0.lsn)) } ?? .null,
                "replica_floor_lsn": s.replicaFloor.map { .int(Int64($0)) } ?? .null,
                "durable_lsn": .int(Int64(durable)),
                "lag_lsn": .int(Int64(durable - min(durable, s.archived?.lsn ?? 0))),
                "files": .int(Int64(s.files)),
                "last_file": s.lastFile.map(JSONValue.string) ?? .null,
                "gaps": .array(s.gaps.map { .object(["after": .int(Int64($0.after)), "resumes_at": .int(Int64($0.resumesAt)), "kind": .string($0.kind)]) }),
                "failures": .int(s.failures),
                "last_error": s.lastError.map(JSONValue.string) ?? .null,
                "last_error_at": s.lastErrorMicros.map { .string(Timestamp.format($0)) } ?? .null,
                "last_success_at": s.lastSuccessMicros.map { .string(Timestamp.format($0)) } ?? .null,
            ])
        }
    }

    func figures() -> [(String, Double)] {
        let durable = database.durablePosition.lsn
        return state.withLock { s in
            guard s.directory != nil, s.isPrimary else { return [] }
            var out: [(String, Double)] = [
                ("aerodb_archive_archived_lsn", Double(s.archived?.lsn ?? 0)),
                ("aerodb_archive_lag_lsn", Double(durable - min(durable, s.archived?.lsn ?? 0))),
                ("aerodb_archive_gaps", Double(s.gaps.count)),
                ("aerodb_archive_failing", s.lastError == nil ? 0 : 1),
            ]
            if let at = s.lastSuccessMicros { out.append(("aerodb_archive_last_success_timestamp_seconds", Double(at) / 1e6)) }
            return out
        }
    }
}

/// Framing overhead of one record in an archive file: its 4-byte length and 64-byte header.
enum WALRecordSize {
    static let overhead = 4 + 64
}

/// `GET /admin/v1/archive` (the archiver's state) and `POST /admin/v1/archive/push` (archive the
/// durable tail now; an admin write: a replica forwards it to the primary). Service key.
public enum ArchiveRoutes {
    public static func register(on router: Router<AeroRequestContext>, archiver: WALArchiver, keys: KeyChecker) {
        let group = router.group("admin/v1/archive")
        group.get { request, _ in
            try await AdminAPI.guarded(request, keys) { HTTPJSON.response(archiver.status()) }
        }
        group.post("push") { request, _ in
            try await AdminAPI.guarded(request, keys) { HTTPJSON.response(try await archiver.push()) }
        }
    }
}
