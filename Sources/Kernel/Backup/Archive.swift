// Continuous WAL archive (docs/OPERATIONS.md "WAL archive and point in time"): the primary copies
// the records of every completed WAL segment (and, on demand, the durable tail) into an archive
// directory, so a restore can replay a base backup plus the archived WAL to any LSN or time after
// it, beyond the backup's own window.
//
// Directory layout:
//
//   archive.json                         {"format":1,"cluster_id":"<uuid>"}: written once, at the
//                                        first archived file; a node of another cluster refuses it
//   <first LSN, 20 digits>-<last LSN, 20 digits>.walarc   one archived range, byte layout:
//      0   8  magic "AEROARC1"
//      8   4  format version (1), little endian
//     12   4  reserved (0)
//     16   8  first LSN
//     24   8  last LSN
//     32   8  previous checksum: the chain value of the record before the first one
//     40   8  last checksum: the checksum of the last record
//     48   8  records in the file
//     56   8  XXH64 of the body (bytes 72...)
//     64   8  XXH64 of bytes 0..<64
//     72   .  the records, framed as in a backup chunk (BackupFrames: 4-byte little-endian length,
//             the record's WAL bytes with its own header checksum)
//   *.tmp                                a file being written (ignored; removed by the next write)
//
// Invariants:
// - WA1 (an archive file is whole or absent): each file is written to a temp file, fsynced,
//   renamed and its directory fsynced; a reader checks both hashes, the framing, the count and
//   that the records run consecutively from first to last, chained from `previous checksum`.
// - WA2 (gaps are found, never bridged): consecutive files must continue each other (first =
//   previous last + 1 and previous checksum = previous last checksum); `ArchiveDirectory.scan`
//   reports every break as a gap, and a restore that needs records across a gap is refused.
// - WA3 (unarchived WAL is kept): on a primary with an archive, a checkpoint never recycles a
//   segment holding a record after the last archived LSN (`Database.setArchiveFloor`).
// - WA4 (pruning keeps what the oldest kept backup needs): `ArchiveDirectory.prune` removes only
//   files whose every record is at or before a backup's end LSN, and only after checking that
//   the archive continues that backup's history (the record at or right after its end chains
//   from its end checksum); oldest first, so an interrupted prune leaves an archive that starts
//   later but has no gap; the newest file is never removed (the archiver continues from it).

import Foundation

public enum ArchiveLimits {
    /// Bytes of one archive file at most (the records of one WAL segment, or of the tail):
    /// the archiver holds one file in memory while it hashes and writes it.
    public static let fileBytesMax = 256 << 20
    /// Files an archive directory may hold before `scan` refuses to list it (a bound on one
    /// status or restore's work: at 64 MiB per segment, 6 TB of WAL; prune older files with
    /// the backups they follow).
    public static let filesMax = 100_000
    /// Largest archive.json read (bytes).
    static let markerBytesMax = 64 << 10
    public static let formatVersion: UInt32 = 1
    static let headerBytes = 72
    static let magic: [UInt8] = Array("AEROARC1".utf8)
}

/// The framing of records in backup chunks, WAL pages of `/admin/v1/backup/wal` and archive files:
/// repeated (4-byte little-endian length L, L bytes of one WAL record). The one parser of it.
public enum BackupFrames {
    public static func append(_ record: WALRecord, to out: inout [UInt8]) {
        let bytes = record.encoded
        var length = UInt32(bytes.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(contentsOf: bytes)
    }

    /// Decodes every frame of `bytes`; `source` names the file or answer in errors. A frame's
    /// length must hold at least a record header and stay inside `bytes`; every record's own
    /// checksum is checked by `WALRecord.decode`.
    public static func decode(_ bytes: [UInt8], source: String, _ body: (WALRecord) throws -> Bool) throws {
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 4 else {
                throw AeroError(.backupCorrupt, "\(source): truncated frame at \(offset)", invariant: "B1")
            }
            let length = Int(UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24)
            guard length >= WALFormat.recordHeaderBytes, length <= bytes.count - offset - 4 else {
                throw AeroError(.backupCorrupt, "\(source): frame length \(length) at \(offset) is out of range", invariant: "B1")
            }
            let record: WALRecord
            do {
                record = try WALRecord.decode(Array(bytes[(offset + 4)..<(offset + 4 + length)]))
            } catch {
                throw AeroError(.backupCorrupt, "\(source): the record at \(offset) does not decode: \(error)", invariant: "B1")
            }
            offset += 4 + length
            guard try body(record) else { return }
        }
    }

    public static func decode(_ bytes: [UInt8], source: String) throws -> [WALRecord] {
        var out: [WALRecord] = []
        try decode(bytes, source: source) { out.append($0); return true }
        return out
    }
}

/// One archived range of records.
public struct ArchiveEntry: Sendable, Equatable {
    public let file: String
    public let firstLSN: UInt64
    public let lastLSN: UInt64

    static let suffix = ".walarc"

    static func name(first: UInt64, last: UInt64) -> String {
        func pad(_ n: UInt64) -> String { let s = String(n); return String(repeating: "0", count: max(0, 20 - s.count)) + s }
        return pad(first) + "-" + pad(last) + suffix
    }

    /// Parses a file name; nil for anything that is not an archive file.
    static func parse(_ name: String) -> ArchiveEntry? {
        guard name.hasSuffix(suffix), name.count == 41 + suffix.count else { return nil }
        let parts = name.dropLast(suffix.count).split(separator: "-")
        guard parts.count == 2, let first = UInt64(parts[0]), let last = UInt64(parts[1]), first >= 1, first <= last else { return nil }
        return ArchiveEntry(file: name, firstLSN: first, lastLSN: last)
    }
}

public enum ArchiveFile {
    /// The bytes of an archive file holding `records` (consecutive, chained), and its name.
    public static func encode(_ records: [WALRecord]) -> (name: String, bytes: [UInt8]) {
        precondition(!records.isEmpty, "an archive file holds at least one record")
        var body: [UInt8] = []
        for record in records { BackupFrames.append(record, to: &body) }
        var header = [UInt8](); header.reserveCapacity(ArchiveLimits.headerBytes)
        func put64(_ v: UInt64) { var le = v.littleEndian; withUnsafeBytes(of: &le) { header.append(contentsOf: $0) } }
        func put32(_ v: UInt32) { var le = v.littleEndian; withUnsafeBytes(of: &le) { header.append(contentsOf: $0) } }
        header.append(contentsOf: ArchiveLimits.magic)
        put32(ArchiveLimits.formatVersion); put32(0)
        put64(records.first!.lsn); put64(records.last!.lsn)
        put64(records.first!.previousChecksum); put64(records.last!.checksum)
        put64(UInt64(records.count)); put64(XXH64.hash(body))
        put64(XXH64.hash(header))
        return (ArchiveEntry.name(first: records.first!.lsn, last: records.last!.lsn), header + body)
    }

    public struct Header: Sendable, Equatable {
        public let firstLSN: UInt64
        public let lastLSN: UInt64
        public let previousChecksum: UInt64
        public let lastChecksum: UInt64
        public let records: UInt64
    }

    /// Checks a whole file (WA1) and returns its header and records.
    public static func decode(_ bytes: [UInt8], name: String) throws -> (Header, [WALRecord]) {
        func bad(_ what: String) -> AeroError { AeroError(.backupCorrupt, "archive file \(name): \(what)", invariant: "WA1") }
        guard bytes.count >= ArchiveLimits.headerBytes else { throw bad("\(bytes.count) bytes, shorter than its header") }
        func get64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        guard Array(bytes[0..<8]) == ArchiveLimits.magic else { throw bad("not an archive file (magic)") }
        guard XXH64.hash(Array(bytes[0..<64])) == get64(64) else { throw bad("header checksum mismatch") }
        let version = UInt32(truncatingIfNeeded: get64(8))
        guard version == ArchiveLimits.formatVersion else { throw bad("format \(version) is not \(ArchiveLimits.formatVersion)") }
        let header = Header(firstLSN: get64(16), lastLSN: get64(24), previousChecksum: get64(32), lastChecksum: get64(40), records: get64(48))
        let body = Array(bytes[ArchiveLimits.headerBytes...])
        guard XXH64.hash(body) == get64(56) else { throw bad("body checksum mismatch") }
        let records = try BackupFrames.decode(body, source: "archive file \(name)")
        var position = LogPosition(lsn: header.firstLSN &- 1, checksum: header.previousChecksum)
        for record in records {
            guard record.lsn == position.lsn &+ 1, record.previousChecksum == position.checksum else {
                throw bad("record \(record.lsn) does not continue the history at \(position)")
            }
            position = record.position
        }
        guard UInt64(records.count) == header.records, position.lsn == header.lastLSN, position.checksum == header.lastChecksum,
              header.lastLSN - header.firstLSN + 1 == header.records else {
            throw bad("holds \(records.count) records ending at \(position), its header says \(header.records) ending at LSN \(header.lastLSN)")
        }
        if let entry = ArchiveEntry.parse(name), entry.firstLSN != header.firstLSN || entry.lastLSN != header.lastLSN {
            throw bad("its name does not match its header (\(header.firstLSN)-\(header.lastLSN))")
        }
        return (header, records)
    }
}

/// What an archive directory holds, from its file names (cheap) or every file read (`verify`).
public struct ArchiveListing: Sendable {
    public struct Gap: Sendable, Equatable {
        /// The last LSN before the gap (0: the archive does not start at the first LSN wanted).
        public let after: UInt64
        /// The first LSN after it.
        public let resumesAt: UInt64
        /// Why: "missing" (LSNs not archived), "fork" (the next file does not continue the
        /// chain: another history), "overlap" (two files claim the same LSNs).
        public let kind: String

        public init(after: UInt64, resumesAt: UInt64, kind: String) {
            self.after = after
            self.resumesAt = resumesAt
            self.kind = kind
        }
    }
    public let clusterID: String?
    public let entries: [ArchiveEntry]
    public let gaps: [Gap]

    public var firstLSN: UInt64? { entries.first?.firstLSN }
    public var lastLSN: UInt64? { entries.last?.lastLSN }

    /// The last LSN reachable from `lsn` without crossing a gap (nil when `lsn` is not archived).
    public func contiguousEnd(from lsn: UInt64) -> UInt64? {
        guard let start = entries.firstIndex(where: { $0.firstLSN <= lsn && lsn <= $0.lastLSN }) else { return nil }
        var end = entries[start].lastLSN
        for entry in entries[(start + 1)...] {
            guard entry.firstLSN == end + 1, !gaps.contains(where: { $0.after == end }) else { break }
            end = entry.lastLSN
        }
        return end
    }

    public var json: JSONValue {
        .object(["cluster_id": clusterID.map(JSONValue.string) ?? .null, "files": .int(Int64(entries.count)),
                 "first_lsn": firstLSN.map { .int(Int64($0)) } ?? .null, "last_lsn": lastLSN.map { .int(Int64($0)) } ?? .null,
                 "gaps": .array(gaps.map { .object(["after": .int(Int64($0.after)), "resumes_at": .int(Int64($0.resumesAt)),
                                                     "kind": .string($0.kind)]) })])
    }
}

public enum ArchiveDirectory {
    static let markerName = "archive.json"

    /// Lists the archive from its file names: ranges must follow each other (WA2).
    public static func scan(_ directory: String, fileSystem fs: any FileSystem = POSIXFileSystem()) throws -> ArchiveListing {
        guard fs.exists(directory) else { return ArchiveListing(clusterID: nil, entries: [], gaps: []) }
        let names = try fs.list(directory)
        guard names.count <= ArchiveLimits.filesMax else {
            throw AeroError(.backupCorrupt, "\(directory) holds \(names.count) files, more than \(ArchiveLimits.filesMax)", invariant: "WA2")
        }
        let entries = names.compactMap(ArchiveEntry.parse).sorted { ($0.firstLSN, $0.lastLSN) < ($1.firstLSN, $1.lastLSN) }
        var gaps: [ArchiveListing.Gap] = []
        for (previous, next) in zip(entries, entries.dropFirst()) {
            if next.firstLSN > previous.lastLSN + 1 {
                gaps.append(.init(after: previous.lastLSN, resumesAt: next.firstLSN, kind: "missing"))
            } else if next.firstLSN <= previous.lastLSN {
                gaps.append(.init(after: previous.lastLSN, resumesAt: next.firstLSN, kind: "overlap"))
            }
        }
        return ArchiveListing(clusterID: try clusterID(directory, fs), entries: entries, gaps: gaps)
    }

    /// Reads and checks every file (WA1) and the chain between files (WA2). Returns the listing
    /// with every break found; throws only when a file is damaged.
    public static func verify(_ directory: String, fileSystem fs: any FileSystem = POSIXFileSystem()) throws -> ArchiveListing {
        let listing = try scan(directory, fileSystem: fs)
        var gaps = listing.gaps
        var previous: ArchiveFile.Header?
        for entry in listing.entries {
            let (header, _) = try ArchiveFile.decode(try fs.readFile(Path.join(directory, entry.file)), name: entry.file)
            if let previous, header.firstLSN == previous.lastLSN + 1, header.previousChecksum != previous.lastChecksum {
                gaps.append(.init(after: previous.lastLSN, resumesAt: header.firstLSN, kind: "fork"))
            }
            previous = header
        }
        return ArchiveListing(clusterID: listing.clusterID, entries: listing.entries, gaps: gaps.sorted { $0.after < $1.after })
    }

    static func clusterID(_ directory: String, _ fs: any FileSystem) throws -> String? {
        let path = Path.join(directory, markerName)
        guard fs.exists(path) else { return nil }
        let bytes = try fs.readFile(path)
        guard bytes.count <= ArchiveLimits.markerBytesMax, let value = try? JSON.parse(bytes),
              let id = value["cluster_id"]?.stringValue else {
            throw AeroError(.backupCorrupt, "\(path) is not {\"format\":1,\"cluster_id\":...}", invariant: "WA2")
        }
        return id
    }

    /// Writes one archive file (WA1), creating the directory and its archive.json (bound to
    /// `clusterID`) at the first use; refuses a directory of another cluster.
    public static func write(_ records: [WALRecord], into directory: String, clusterID: String,
                             fileSystem fs: any FileSystem = POSIXFileSystem()) throws -> ArchiveEntry {
        if !fs.exists(directory) {
            try fs.makeDirectory(directory)
            try fs.syncDirectory(Path.parent(of: directory))
        }
        switch try Self.clusterID(directory, fs) {
        case nil:
            try fs.writeAtomically(Array(JSON.encodeString(.object(["format": .int(1), "cluster_id": .string(clusterID)])).utf8) + [0x0A],
                                   to: Path.join(directory, markerName))
        case let id? where id != clusterID:
            throw AeroError(.configInvalid, "the archive \(directory) belongs to cluster \(id), not this one (\(clusterID)): give each cluster its own archive directory")
        default: break
        }
        let (name, bytes) = ArchiveFile.encode(records)
        try fs.writeAtomically(bytes, to: Path.join(directory, name))
        return ArchiveEntry.parse(name)!
    }

    /// WA4: removes the archive files every record of which is at or before `backupEnd` (the end
    /// of the oldest backup still kept: the backup itself holds those records), oldest first,
    /// never the newest file. Refused (AERO_BACKUP_TARGET_UNAVAILABLE, nothing removed) when the
    /// archive does not hold the record at or right after `backupEnd` or it does not chain from
    /// the backup's end checksum (another history): pruning must never cut what a restore of that
    /// backup needs. Returns the files removed.
    public static func prune(_ directory: String, keepingAfter backupEnd: LogPosition,
                             fileSystem fs: any FileSystem = POSIXFileSystem()) throws -> [ArchiveEntry] {
        let listing = try scan(directory, fileSystem: fs)
        let removable = listing.entries.dropLast().filter { $0.lastLSN <= backupEnd.lsn }
        guard !removable.isEmpty else { return [] }
        // The file holding the backup's end record, or else the one right after it.
        guard let holder = listing.entries.first(where: { $0.firstLSN <= backupEnd.lsn && backupEnd.lsn <= $0.lastLSN })
                ?? listing.entries.first(where: { $0.firstLSN == backupEnd.lsn + 1 }) else {
            throw AeroError(.backupTargetUnavailable, "the archive \(directory) holds neither LSN \(backupEnd.lsn) nor \(backupEnd.lsn + 1): it does not continue the backup ending there, nothing pruned", invariant: "WA4")
        }
        let (header, records) = try ArchiveFile.decode(try fs.readFile(Path.join(directory, holder.file)), name: holder.file)
        let continues: Bool
        if header.firstLSN == backupEnd.lsn + 1 {
            continues = header.previousChecksum == backupEnd.checksum
        } else {
            continues = records.first(where: { $0.lsn == backupEnd.lsn })?.checksum == backupEnd.checksum
        }
        guard continues else {
            throw AeroError(.backupTargetUnavailable, "the archive \(directory) does not continue the history of the backup ending at \(backupEnd) (another history): nothing pruned", invariant: "WA4")
        }
        var removed: [ArchiveEntry] = []
        for entry in removable {  // oldest first: an interruption leaves a later start, never a gap
            try fs.remove(Path.join(directory, entry.file))
            removed.append(entry)
        }
        try fs.syncDirectory(directory)
        return removed
    }

    /// Calls `body` with the archived records from `lsn` on, in order, as long as they continue
    /// `position` (the record before `lsn`) and `body` returns true. Returns the last position
    /// handed out. Throws AERO_BACKUP_TARGET_UNAVAILABLE at a gap or a fork before `through`.
    public static func forEachRecord(_ directory: String, after position: LogPosition, through: UInt64?,
                                     fileSystem fs: any FileSystem = POSIXFileSystem(),
                                     _ body: (WALRecord) async throws -> Bool) async throws -> LogPosition {
        let listing = try scan(directory, fileSystem: fs)
        var at = position
        for entry in listing.entries where entry.lastLSN > at.lsn {
            if let through, at.lsn >= through { break }
            guard entry.firstLSN <= at.lsn + 1 else {
                throw AeroError(.backupTargetUnavailable, "the archive \(directory) has no records \(at.lsn + 1)...\(entry.firstLSN - 1) (a gap)", invariant: "WA2")
            }
            let (_, records) = try ArchiveFile.decode(try fs.readFile(Path.join(directory, entry.file)), name: entry.file)
            for record in records where record.lsn > at.lsn {
                guard record.lsn == at.lsn + 1, record.previousChecksum == at.checksum else {
                    throw AeroError(.backupTargetUnavailable, "the archived record \(record.lsn) does not continue the history at \(at) (another history: a fork)", invariant: "WA2")
                }
                guard try await body(record) else { return at }
                at = record.position
            }
        }
        return at
    }
}
