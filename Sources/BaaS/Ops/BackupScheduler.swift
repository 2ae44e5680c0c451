// Scheduled backups with retention (docs/OPERATIONS.md "Scheduled backups"), on the primary only.
//
// Configured per cluster like the WAL archive: the cluster setting `backup.schedule`
//   {"directory": "/abs/path", "every_seconds": N, "keep": N, "keep_days": D, "prune_archive": true}
// (`keep`, `keep_days` and `prune_archive` optional; with neither, `keepDefault` backups are kept). Every
// `pollMillis` the primary checks whether the newest complete backup in `directory` is older than
// `every_seconds`; if so it takes one in-process (`Database.backupOnline`: the same format and
// checks as `aerodb backup`) into `directory/backup-<UTC time>`, then applies retention: a
// complete backup is removed when it is not among the newest `keep`, or older than `keep_days`;
// the newest complete backup is never removed. A backup that fails removes its own partial
// directory. A partial directory a crash left (`.partial-backup-<UTC time>`) is removed by a later
// pass once its name's time is more than `abandonedPartialSeconds` old (younger ones may still be
// written by a node that believes it is primary). Every backup taken, failed or removed is a row
// of the operation log (`_audit_log`, actions `backup scheduled`, `backup failed`, `backup
// removed`, `backup partial removed`, actor role `system`).
//
// The WAL archive's retention (WA4, Kernel/Backup/Archive.swift): after retention, when the
// cluster archives its WAL (`archive.directory`) and `prune_archive` is not false, the archive
// files wholly before the end of the oldest backup still kept are removed (that backup holds
// those records; every later point stays reachable from some kept backup plus the archive):
// operation log `archive pruned`, or `archive prune failed` (nothing removed) with the reason.
//
// Decide then act: the directory listing gives the decision (due or not, what to remove), then
// the backup and the removals run; all of it on the scheduler's own queue (the backup's base
// is read on a task it waits for), never under the writer lock.

import Dispatch
import Foundation
import Hummingbird
import Kernel
import Logging
import Synchronization

public final class BackupScheduler: Sendable {
    public static let settingKey = "backup.schedule"
    /// Time between two checks (milliseconds).
    public static let pollMillis = 1_000
    /// Shortest interval between scheduled backups (seconds): 1 so tests run fast; production
    /// schedules are hours.
    static let everySecondsMin: Int64 = 1
    /// Longest interval (seconds): a year.
    static let everySecondsMax: Int64 = 366 * 86_400
    /// Backups kept at most by `keep` (a bound on the directory's size and on one listing).
    static let keepMax: Int64 = 10_000
    /// `keep_days` at most (100 years).
    static let keepDaysMax: Int64 = 36_500
    /// Backups kept when neither `keep` nor `keep_days` is set.
    static let keepDefault = 7
    /// A `.partial-backup-<time>` directory older than this (by its name's time) was abandoned by
    /// a crash and is removed by the next pass (a day: far longer than any backup runs).
    static let abandonedPartialSeconds: Int64 = 86_400
    static let partialPrefix = ".partial-" + prefix
    static let prefix = "backup-"

    public struct Schedule: Sendable, Equatable {
        public let directory: String
        public let everySeconds: Int64
        public let keep: Int?
        public let keepDays: Int64?
        /// Prune the WAL archive to what the oldest kept backup needs (default true).
        public let pruneArchive: Bool
    }

    static func parse(_ value: JSONValue) throws -> Schedule {
        func bad(_ what: String) -> AeroError {
            AeroError(.requestInvalid, "\(settingKey): \(what); the value is {\"directory\": \"/abs/path\", \"every_seconds\": \(everySecondsMin)...\(everySecondsMax), \"keep\": 1...\(keepMax), \"keep_days\": 1...\(keepDaysMax), \"prune_archive\": true|false} (keep, keep_days, prune_archive optional) or null")
        }
        guard case .object(let o) = value else { throw bad("not an object") }
        for key in o.keys where !["directory", "every_seconds", "keep", "keep_days", "prune_archive"].contains(key) { throw bad("unknown key \(key)") }
        guard case .string(let directory)? = o["directory"], directory.hasPrefix("/"), directory.utf8.count <= OpsClusterSettings.pathBytesMax,
              !directory.split(separator: "/").contains("..") else { throw bad("directory is not an absolute path") }
        guard let every = o["every_seconds"]?.intValue, (everySecondsMin...everySecondsMax).contains(every) else { throw bad("every_seconds is out of range") }
        var keep: Int?
        if let k = o["keep"], k != .null {
            guard let n = k.intValue, (1...keepMax).contains(n) else { throw bad("keep is out of range") }
            keep = Int(n)
        }
        var days: Int64?
        if let d = o["keep_days"], d != .null {
            guard let n = d.intValue, (1...keepDaysMax).contains(n) else { throw bad("keep_days is out of range") }
            days = n
        }
        var prune = true
        if let p = o["prune_archive"], p != .null {
            guard case .bool(let b) = p else { throw bad("prune_archive is not true or false") }
            prune = b
        }
        return Schedule(directory: directory, everySeconds: every, keep: keep ?? (days == nil ? keepDefault : nil), keepDays: days,
                        pruneArchive: prune)
    }

    struct State {
        var lastBackup: String?
        var lastBackupMicros: Int64?
        var lastError: String?
        var taken = 0
        var removed = 0
        var partialsRemoved = 0
        var archiveFilesPruned = 0
        var archivePruneError: String?
        /// A pass is under way (reading the schedule, taking a backup, retention, the archive's
        /// prune): `status` shows it, so a caller that turned the schedule off can wait until the
        /// last pass that could have read it ended.
        var passRunning = false
    }

    let database: Database
    let nodeID: String
    /// The configured schedule (nil: none); throws when the setting is unreadable or invalid
    /// (a pass then records it as the last error: never a silent stop of the backups).
    let schedule: @Sendable () throws -> Schedule?
    let isPrimary: @Sendable () -> Bool
    /// The cluster's WAL archive directory (nil: not archiving); throws when unreadable.
    let archiveDirectory: @Sendable () throws -> String?
    /// The archiver, told how many files a prune removed (its file count).
    let archiver: WALArchiver?
    let logger: Logger
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "aerodb.backup-scheduler")
    private let stopped = Atomic<Bool>(false)

    public init(database: Database, nodeID: String, settings: ClusterSettings, isPrimary: @escaping @Sendable () -> Bool,
                archiver: WALArchiver? = nil, logger: Logger) {
        self.database = database
        self.nodeID = nodeID
        self.schedule = {
            guard let value = try settings.stored()[BackupScheduler.settingKey], value != .null else { return nil }
            return try BackupScheduler.parse(value)
        }
        self.isPrimary = isPrimary
        self.archiveDirectory = { try WALArchiver.directory(from: settings) }
        self.archiver = archiver
        self.logger = logger
    }

    public func start() { next() }
    public func stop() { stopped.store(true, ordering: .relaxed) }

    private func next() {
        queue.asyncAfter(deadline: .now() + .milliseconds(Self.pollMillis)) { [weak self] in
            guard let self, !self.stopped.load(ordering: .relaxed) else { return }
            self.pass()
            self.next()
        }
    }

    /// Complete backups (with a manifest) in `directory`, newest first, with their times.
    static func complete(_ directory: String) -> [(name: String, micros: Int64)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix(prefix) && FileManager.default.fileExists(atPath: directory + "/" + $0 + "/manifest.json") }
            .compactMap { name in Timestamp.parse(String(name.dropFirst(prefix.count))).map { (name, $0) } }
            .sorted { $0.micros > $1.micros }
    }

    /// Partial directories a crash abandoned: named `.partial-backup-<time>` with a time more than
    /// `abandonedPartialSeconds` before `nowMicros`. A name whose time does not parse is left alone.
    static func abandoned(_ names: [String], nowMicros: Int64) -> [String] {
        names.filter { name in
            guard name.hasPrefix(partialPrefix), let micros = Timestamp.parse(String(name.dropFirst(partialPrefix.count))) else { return false }
            return micros < nowMicros - abandonedPartialSeconds * 1_000_000  // no arithmetic on the parsed time
        }.sorted()
    }

    /// What retention removes from `backups` (newest first): never the newest.
    static func expired(_ backups: [(name: String, micros: Int64)], _ schedule: Schedule, nowMicros: Int64) -> [String] {
        backups.enumerated().compactMap { index, backup in
            guard index > 0 else { return nil }
            if let keep = schedule.keep, index >= keep { return backup.name }
            if let days = schedule.keepDays, nowMicros - backup.micros > days * 86_400_000_000 { return backup.name }
            return nil
        }
    }

    private func pass() {
        // Set before the schedule is read: once `status` shows no schedule and no pass running,
        // no pass that read the old schedule is still to take a backup.
        state.withLock { $0.passRunning = true }
        defer { state.withLock { $0.passRunning = false } }
        let configured: Schedule?
        do { configured = try schedule() } catch {
            let message = (error as? AeroError).map { "\($0.code.rawValue): \($0.message)" } ?? "\(error)"
            let first = state.withLock { s -> Bool in
                defer { s.lastError = message }
                return s.lastError != message
            }
            if first { logger.error("backup schedule unreadable: no scheduled backups", metadata: ["error": "\(message)"]) }
            return
        }
        guard let schedule = configured, isPrimary() else { return }
        let now = SystemClock().nowMicros()
        let backups = Self.complete(schedule.directory)
        // Decide.
        let due = backups.first.map { now - $0.micros >= schedule.everySeconds * 1_000_000 } ?? true
        guard due else { return }
        // Act: the backup (its awaits on a task this queue waits for), then retention.
        let name = Self.prefix + Timestamp.format(now).replacingOccurrences(of: "+00:00", with: "Z")
        let path = schedule.directory + "/" + name
        // Only the base is awaited on a task; the records are copied and fsynced here, on this
        // queue, so a long backup holds no thread of the cooperative pool.
        let database = self.database
        let baseRead = Result<BackupBase, any Error> { try waitForTask { try await database.backupBase() } }
        // Written under a hidden name (not `prefix`: never listed as complete), with the blobs its
        // object rows name (B4, BackupBlobFiles), then renamed into place.
        let partial = schedule.directory + "/" + Self.partialPrefix + name.dropFirst(Self.prefix.count)
        let result = Result<BackupManifest, any Error> {
            let base = try baseRead.get()
            defer { database.releaseBackupHold(base.hold) }
            try FileManager.default.createDirectory(atPath: schedule.directory, withIntermediateDirectories: true)
            let pending = try database.writeBackup(base: base, into: partial, nodeID: nodeID, blobsPending: true)
            let dataDirectory = database.options.dataDirectory
            let manifest = try waitForTask {
                let blobs = try await BackupBlobFiles.referenced(backup: partial)
                try await BackupBlobFiles.copyOffline(blobs, dataDirectory: dataDirectory, into: partial)
                return try BackupBlobFiles.complete(pending, blobs: blobs, out: partial)
            }
            guard rename(partial, path) == 0 else { throw AeroError(.internalError, "cannot rename \(partial) to \(path): errno \(errno)") }
            try BackupBlobFiles.syncDirectory(schedule.directory)
            return manifest
        }
        switch result {
        case .success(let manifest):
            state.withLock { $0.lastBackup = name; $0.lastBackupMicros = now; $0.lastError = nil; $0.taken += 1 }
            logger.info("scheduled backup taken", metadata: ["backup": "\(path)", "end_lsn": "\(manifest.end.lsn)"])
            audit("backup scheduled", path, ["end_lsn": .int(Int64(manifest.end.lsn)), "base_lsn": .int(Int64(manifest.base.lsn)),
                                             "records": .int(Int64(manifest.records))])
        case .failure(let error):
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: partial)
            let message = (error as? AeroError).map { "\($0.code.rawValue): \($0.message)" } ?? "\(error)"
            state.withLock { $0.lastError = message }
            logger.error("scheduled backup failed", metadata: ["backup": "\(path)", "error": "\(message)"])
            audit("backup failed", path, ["error": .string(message)])
            return
        }
        for old in Self.expired(Self.complete(schedule.directory), schedule, nowMicros: now) {
            do {
                try FileManager.default.removeItem(atPath: schedule.directory + "/" + old)
                state.withLock { $0.removed += 1 }
                audit("backup removed", schedule.directory + "/" + old, ["keep": schedule.keep.map { .int(Int64($0)) } ?? .null,
                                                                        "keep_days": schedule.keepDays.map { .int($0) } ?? .null])
            } catch {
                logger.error("expired backup not removed", metadata: ["backup": "\(old)", "error": "\(error)"])
            }
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: schedule.directory)) ?? []
        for abandoned in Self.abandoned(names, nowMicros: now) {
            do {
                try FileManager.default.removeItem(atPath: schedule.directory + "/" + abandoned)
                state.withLock { $0.partialsRemoved += 1 }
                audit("backup partial removed", schedule.directory + "/" + abandoned, [:])
            } catch {
                logger.error("abandoned partial backup not removed", metadata: ["backup": "\(abandoned)", "error": "\(error)"])
            }
        }
        if schedule.pruneArchive { pruneArchive(schedule) }
    }

    /// WA4: the archive keeps the files from the end of the oldest kept backup on.
    private func pruneArchive(_ schedule: Schedule) {
        let archive: String?
        do { archive = try archiveDirectory() } catch {
            pruneFailed("cluster setting \(WALArchiver.settingKey) unreadable: \(error)", archive: "-")
            return
        }
        guard let archive, FileManager.default.fileExists(atPath: archive),
              let oldest = Self.complete(schedule.directory).last else { return }
        do {
            // The archive must hold the oldest kept backup's end record (the chain check of WA4):
            // the tail after the backup just taken is archived first.
            try archiver?.archiveTailNow()
            let manifest = try Database.backupManifest(schedule.directory + "/" + oldest.name)
            let removed = try ArchiveDirectory.prune(archive, keepingAfter: manifest.end)
            state.withLock { $0.archivePruneError = nil; $0.archiveFilesPruned += removed.count }
            guard let first = removed.first, let last = removed.last else { return }
            archiver?.noteRemoved(removed.count)
            logger.info("WAL archive pruned", metadata: ["archive": "\(archive)", "files": "\(removed.count)", "through_lsn": "\(last.lastLSN)"])
            audit("archive pruned", archive, ["files": .int(Int64(removed.count)), "first_lsn": .int(Int64(first.firstLSN)),
                                             "last_lsn": .int(Int64(last.lastLSN)), "oldest_backup": .string(oldest.name),
                                             "backup_end_lsn": .int(Int64(manifest.end.lsn))])
        } catch {
            pruneFailed((error as? AeroError).map { "\($0.code.rawValue): \($0.message)" } ?? "\(error)", archive: archive)
        }
    }

    private func pruneFailed(_ message: String, archive: String) {
        let first = state.withLock { s -> Bool in
            defer { s.archivePruneError = message }
            return s.archivePruneError != message
        }
        if first {
            logger.error("WAL archive not pruned", metadata: ["archive": "\(archive)", "error": "\(message)"])
            audit("archive prune failed", archive, ["error": .string(message)])
        }
    }

    /// One row of the operation log, written in the background (a failure is logged).
    private func audit(_ action: String, _ target: String, _ details: [String: JSONValue]) {
        let event = AuthEvent(action: action, actorRole: "system", target: target, ip: nil, details: details)
        let operation = event.operation(now: .string(Timestamp.format(SystemClock().nowMicros())))
        let (database, logger) = (self.database, self.logger)
        Task {
            do {
                try await SystemCollections.ensure(AuthCollections.all, in: database)
                _ = try await database.commit([operation])
            } catch {
                logger.error("audit row not written", metadata: ["action": "\(action)", "error": "\(error)"])
            }
        }
    }

    public func status() -> JSONValue {
        let schedule = try? schedule()  // unreadable: shown as no schedule, with the pass's last_error
        return state.withLock { s in
            .object(["schedule": schedule.map { .object(["directory": .string($0.directory), "every_seconds": .int($0.everySeconds),
                                                         "keep": $0.keep.map { .int(Int64($0)) } ?? .null,
                                                         "keep_days": $0.keepDays.map { .int($0) } ?? .null,
                                                         "prune_archive": .bool($0.pruneArchive)]) } ?? .null,
                     "active": .bool(schedule != nil && isPrimary()),
                     "last_backup": s.lastBackup.map(JSONValue.string) ?? .null,
                     "last_backup_at": s.lastBackupMicros.map { .string(Timestamp.format($0)) } ?? .null,
                     "last_error": s.lastError.map(JSONValue.string) ?? .null,
                     "taken": .int(Int64(s.taken)), "removed": .int(Int64(s.removed)), "partials_removed": .int(Int64(s.partialsRemoved)),
                     "archive_files_pruned": .int(Int64(s.archiveFilesPruned)),
                     "archive_prune_error": s.archivePruneError.map(JSONValue.string) ?? .null,
                     "pass_running": .bool(s.passRunning)])
        }
    }

    /// `GET /admin/v1/backup/schedule` (service key).
    public func register(on router: Router<AeroRequestContext>, keys: KeyChecker) {
        router.get("admin/v1/backup/schedule") { request, _ in
            try await AdminAPI.guarded(request, keys) { HTTPJSON.response(self.status()) }
        }
    }
}
