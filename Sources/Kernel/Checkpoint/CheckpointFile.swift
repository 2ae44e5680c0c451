// Checkpoint file format: the full database state at one LSN.
//
// File: <data>/checkpoints/checkpoint-<LSN, 20 decimal digits>.ckpt, written as temp file,
// fsync, rename, fsync of the directory (never visible half-written under its final name).
//
//   offset size  field
//   0      8     magic "AEROCKPT"
//   8      4     format version (2; 1 is still read), little-endian like every integer here
//   12     4     reserved (0)
//   16     8     LSN: the last transaction included
//   24     8     checksum of the WAL record at LSN (continues the hash chain on replay)
//   32     8     epoch at LSN
//   40     8     payload length uncompressed
//   48     8     payload length compressed (zlib)
//   56     8     XXH64 of the compressed payload
//   64     8     XXH64 of bytes 0..<64
//   72     ...   compressed payload
//
// Payload (before compression):
//   format 2: the epoch history of the log through LSN (`EpochHistory`, P1/A4): u32 count
//             (<= EpochHistory.entriesMax), then count x (u64 epoch, u64 start LSN), oldest first,
//             epochs and starts strictly increasing, every start in 1...LSN, the last epoch <=
//             the header's epoch; then, as in format 1:
//   newline-separated JSON: for each collection in name order a line
//   {"schema":<schema>,"count":N} followed by its N documents in primary-key order.
// A format 1 file has no history: it is read as "history unknown before its LSN" (one entry:
// the header's epoch from LSN on), which leaves older positions unprovable, never wrongly proven.
// Files are always written in format 2 (a node of an older version refuses them as unsupported).
//
// Invariants (D2): a checkpoint is loaded only if both checksums, both lengths and the
// decoded counts match; otherwise it is reported corrupt and never used.
// Every integer read from the file goes through a checked range before use (the checksums are
// not a MAC: a crafted file passes them): LSN and epoch <= KernelLimits.lsnMax; the compressed
// length = the file's bytes after the header; the plain length <= compressed length x
// `Compression.expansionMax` (what deflate can reach) and <= this machine's memory; decompression
// reserves the declared length and touches only what the stream really produces; a collection's
// count <= the lines left. Out of range = AERO_CHECKPOINT_CORRUPT (recovery skips the file and
// falls back to an older checkpoint), never a trap or memory the stream does not fill.
// Loading parses a collection of `parallelParseDocumentsMin` documents or more in pieces on
// `RecoveryThreads.decoding` threads beside the caller, straight from the payload (no copy per
// line); the pieces are joined in file order, and of several bad lines the first in file order is
// the one reported, as a parse in order would: the state and the error do not depend on threads.
// Acknowledged implies replayable: a document line frames its document in 0 levels, a schema
// line a field default in 4 (`{"schema":{"fields":{"f":{"default":V}}}}`), within
// KernelLimits.recordFramingDepth, so whatever the writer accepted loads back.

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

enum CheckpointFile {
    static let magic: [UInt8] = Array("AEROCKPT".utf8)
    static let version: UInt32 = 2
    /// The format without the epoch history, still read.
    static let versionWithoutHistory: UInt32 = 1
    /// Bytes of one epoch history entry (epoch, start LSN).
    static let historyEntryBytes = 16
    static let headerBytes = 72
    static let fileExtension = ".ckpt"

    static func fileName(lsn: UInt64) -> String {
        "checkpoint-" + String(lsn).leftPadded(to: 20) + fileExtension
    }

    static func lsn(fromFileName name: String) -> UInt64? {
        guard name.hasPrefix("checkpoint-"), name.hasSuffix(fileExtension) else { return nil }
        return UInt64(name.dropFirst(11).dropLast(fileExtension.count))
    }

    static func encode(_ state: DatabaseState) throws -> [UInt8] {
        var history = ByteWriter()
        history.append(UInt32(state.epochHistory.entries.count))
        for entry in state.epochHistory.entries {
            history.append(entry.epoch)
            history.append(entry.startLSN)
        }
        var payload = history.bytes
        for name in state.collections.keys.sorted() {
            let data = state.collections[name]!
            JSON.encode(.object(["schema": data.schema.json, "count": .int(Int64(data.count))]), into: &payload)
            payload.append(0x0A)
            for doc in data.allDocuments() {
                JSON.encode(.object(doc), into: &payload)
                payload.append(0x0A)
            }
        }
        let compressed = try Compression.compress(payload)
        var header = ByteWriter()
        header.append(magic)
        header.append(version)
        header.append(UInt32(0))
        header.append(state.position.lsn)
        header.append(state.position.checksum)
        header.append(state.epoch)
        header.append(UInt64(payload.count))
        header.append(UInt64(compressed.count))
        header.append(XXH64.hash(compressed))
        header.append(XXH64.hash(header.bytes))
        precondition(header.bytes.count == headerBytes, "checkpoint header layout")
        return header.bytes + compressed
    }

    static func decode(_ bytes: [UInt8], name: String) throws -> DatabaseState {
        func corrupt(_ why: String) -> AeroError {
            AeroError(.checkpointCorrupt, "checkpoint \(name): \(why)", invariant: "D2")
        }
        guard bytes.count >= headerBytes, Array(bytes[0..<8]) == magic else { throw corrupt("bad magic or short file") }
        var reader = ByteReader(bytes)
        reader.skip(8)
        let fileVersion: UInt32 = reader.read()
        _ = reader.read() as UInt32
        let lsn: UInt64 = reader.read(), checksum: UInt64 = reader.read(), epoch: UInt64 = reader.read()
        let plainLength: UInt64 = reader.read(), compressedLength: UInt64 = reader.read()
        let payloadHash: UInt64 = reader.read(), headerHash: UInt64 = reader.read()
        guard XXH64.hash(Array(bytes[0..<64])) == headerHash else { throw corrupt("header checksum mismatch") }
        guard fileVersion == version || fileVersion == versionWithoutHistory else {
            throw corrupt("unsupported format version \(fileVersion)")
        }
        guard lsn <= KernelLimits.lsnMax, epoch <= KernelLimits.lsnMax else {
            throw corrupt("LSN \(lsn) or epoch \(epoch) out of range (at most \(KernelLimits.lsnMax))")
        }
        guard UInt64(bytes.count - headerBytes) == compressedLength else { throw corrupt("payload length mismatch") }
        let (plainBound, overflow) = compressedLength.multipliedReportingOverflow(by: Compression.expansionMax)
        guard !overflow, plainLength <= plainBound, plainLength <= UInt64(Int.max) else {
            throw corrupt("declared payload length \(plainLength) is impossible for \(compressedLength) compressed bytes")
        }
        let compressed = Array(bytes[headerBytes...])
        guard XXH64.hash(compressed) == payloadHash else { throw corrupt("payload checksum mismatch") }
        let payload: [UInt8]
        do {
            payload = try Compression.decompress(compressed, expectedLength: Int(plainLength))
        } catch let error as AeroError {
            throw corrupt(error.message)
        }
        let history: EpochHistory
        var collectionsStart = 0
        if fileVersion == versionWithoutHistory {
            history = .unknown(before: lsn, epoch: epoch)
        } else {
            (history, collectionsStart) = try decodeHistory(payload, lsn: lsn, epoch: epoch, corrupt: corrupt)
        }
        var state = DatabaseState(position: LogPosition(lsn: lsn, checksum: checksum), epoch: epoch, collections: [:],
                                  epochHistory: history)
        do {
            state.collections = try decodeCollections(payload, from: collectionsStart, corrupt: corrupt)
        } catch let error as AeroError where error.code == .checkpointCorrupt {
            throw error
        } catch {
            throw corrupt("payload does not decode: \(error)")
        }
        return state
    }

    /// The epoch history at the start of a format 2 payload, every integer through its range;
    /// returns it and the offset where the collections begin.
    private static func decodeHistory(_ payload: [UInt8], lsn: UInt64, epoch: UInt64,
                                      corrupt: (String) -> AeroError) throws -> (EpochHistory, Int) {
        guard payload.count >= 4 else { throw corrupt("payload too short for its epoch history") }
        var reader = ByteReader(payload)
        let count = Int(reader.read() as UInt32)
        guard count <= EpochHistory.entriesMax, count <= (payload.count - 4) / historyEntryBytes else {
            throw corrupt("epoch history declares \(count) entries (at most \(EpochHistory.entriesMax), in \(payload.count - 4) bytes)")
        }
        var entries: [EpochHistory.Entry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            let entryEpoch: UInt64 = reader.read(), start: UInt64 = reader.read()
            entries.append(EpochHistory.Entry(epoch: entryEpoch, startLSN: start))
        }
        guard let history = EpochHistory(entries: entries),
              entries.last.map({ $0.startLSN <= lsn && $0.epoch <= epoch }) ?? true else {
            throw corrupt("epoch history is not increasing or reaches past LSN \(lsn) or epoch \(epoch)")
        }
        return (history, reader.position)
    }

    private static func decodeCollections(_ payload: [UInt8], from start: Int,
                                          corrupt: (String) -> AeroError) throws -> [String: CollectionData] {
        var collections: [String: CollectionData] = [:]
        var lines = LineIterator(payload)
        lines.position = start
        while let header = lines.next() {
            let meta = try JSON.parse(header)
            guard let schemaJSON = meta["schema"], case .int(let count)? = meta["count"], count >= 0 else {
                throw corrupt("bad collection header")
            }
            let schema = try CollectionSchema.parse(schemaJSON)
            guard collections[schema.name] == nil else { throw corrupt("collection \(schema.name) appears twice") }
            // Each document is at least 3 bytes ("{}" and a newline): a larger count is a lie.
            guard count <= Int64(lines.remainingBytes / 3) else {
                throw corrupt("collection \(schema.name) declares \(count) documents in \(lines.remainingBytes) bytes")
            }
            guard let ends = lines.skip(Int(count)) else {
                throw corrupt("collection \(schema.name) has fewer documents than its count")
            }
            let parsed = try parseDocuments(payload, lineEnds: ends, schema: schema, corrupt: corrupt)
            collections[schema.name] = try CollectionData(schema: schema, keyedEntries: parsed.entries, documentBytes: parsed.bytes)
        }
        return collections
    }
}

extension CheckpointFile {
    /// Below this many documents a collection is parsed on the calling thread alone.
    static let parallelParseDocumentsMin = 4_096
    /// Pieces per decoding thread: pieces are taken in turn, so a thread that drew short lines
    /// takes another piece instead of waiting for the others.
    static let parsePiecesPerThread = 8

    /// Documents paired with their primary key, in file order, and the sum of their
    /// `CollectionData.bytes(of:)`: what the collection's bulk build needs.
    struct ParsedDocuments: Sendable {
        var entries: [(key: OrderedValue, value: Document)] = []
        var bytes = 0
    }

    /// The documents of the lines `lineEnds` marks in `payload`, in order, with their keys: on
    /// up to `RecoveryThreads.decoding` threads beside the caller for a large collection, since
    /// parsing is most of a checkpoint's load (issue 19: a restart from a checkpoint took longer
    /// than replaying the same documents from the WAL, whose decoding runs on every core). The
    /// result and the error are those of a parse in order: the first line that is not a JSON
    /// object with a primary key, counting from the start, is the one reported.
    static func parseDocuments(_ payload: [UInt8], lineEnds: LineIterator.Ends, schema: CollectionSchema,
                               corrupt: (String) -> AeroError) throws -> ParsedDocuments {
        let (start, ends) = (lineEnds.start, lineEnds.offsets)
        let pieces = ends.count < parallelParseDocumentsMin ? 1 : (RecoveryThreads.decoding + 1) * parsePiecesPerThread
        let results = payload.withUnsafeBufferPointer { bytes -> [Result<ParsedDocuments, LineFailure>] in
            if pieces == 1 { return [parsePiece(0..<ends.count, ends: ends, start: start, bytes: bytes, schema: schema)] }
            let shared = ReadOnlyBytes(buffer: bytes)
            let slots = Mutex([Result<ParsedDocuments, LineFailure>?](repeating: nil, count: pieces))
            DispatchQueue.concurrentPerform(iterations: pieces) { piece in
                let lines = (ends.count * piece / pieces)..<(ends.count * (piece + 1) / pieces)
                let result = parsePiece(lines, ends: ends, start: start, bytes: shared.buffer, schema: schema)
                slots.withLock { $0[piece] = result }
            }
            return slots.withLock { $0.map { $0! } }
        }
        var parsed = ParsedDocuments()
        parsed.entries.reserveCapacity(ends.count)
        for result in results {
            switch result {
            case .success(let piece):
                parsed.entries += piece.entries
                parsed.bytes += piece.bytes
            case .failure(let failure):
                throw corrupt("collection \(schema.name): document \(failure.line + 1) of \(ends.count) \(failure.reason)")
            }
        }
        return parsed
    }

    /// Lines `lines` (indexes into `ends`; line 0 starts at `start`, each later one after the
    /// previous one's newline), up to the first that is not a JSON object with a primary key.
    private static func parsePiece(_ lines: Range<Int>, ends: [Int], start: Int, bytes: UnsafeBufferPointer<UInt8>,
                                   schema: CollectionSchema) -> Result<ParsedDocuments, LineFailure> {
        var out = ParsedDocuments()
        out.entries.reserveCapacity(lines.count)
        var lineStart = lines.lowerBound == 0 ? start : ends[lines.lowerBound - 1] + 1
        for i in lines {
            let line = UnsafeBufferPointer(rebasing: bytes[lineStart..<ends[i]])
            do {
                guard case .object(let doc) = try JSON.parse(line) else { return .failure(LineFailure(line: i, reason: "is not a JSON object")) }
                out.entries.append((try CollectionData.primaryKey(of: doc, schema), doc))
                out.bytes += CollectionData.bytes(of: doc)
            } catch let error as AeroError {
                return .failure(LineFailure(line: i, reason: "does not decode: \(error.message)"))
            } catch {
                return .failure(LineFailure(line: i, reason: "does not decode: \(error)"))
            }
            lineStart = ends[i] + 1
        }
        return .success(out)
    }

    /// The payload's bytes, shared by the pieces: nothing writes them while the pieces run, and
    /// `withUnsafeBufferPointer` keeps them alive until every piece has returned.
    private struct ReadOnlyBytes: @unchecked Sendable {
        let buffer: UnsafeBufferPointer<UInt8>
    }

    struct LineFailure: Error {
        let line: Int
        let reason: String
    }
}

/// Splits a byte array at newlines without copying more than each line.
struct LineIterator {
    /// Where `count` lines end (`skip`): the offset of each one's newline (or the end of the bytes).
    struct Ends {
        let start: Int
        var offsets: [Int]
    }

    /// Moves past `count` lines without copying them; nil when fewer are left.
    mutating func skip(_ count: Int) -> Ends? {
        var ends = Ends(start: position, offsets: [])
        ends.offsets.reserveCapacity(count)
        let found = bytes.withUnsafeBufferPointer { buffer -> Bool in
            for _ in 0..<count {
                guard position < buffer.count else { return false }
                let end = Self.endOfLine(buffer, from: position)
                ends.offsets.append(end)
                position = min(end + 1, buffer.count)
            }
            return true
        }
        return found ? ends : nil
    }

    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remainingBytes: Int { max(0, bytes.count - position) }

    /// The offset of the newline ending the line that starts at `start`, or the end of the bytes.
    /// memchr: a checkpoint line can be a MiB long.
    private static func endOfLine(_ buffer: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        guard let found = memchr(buffer.baseAddress! + start, 0x0A, buffer.count - start) else { return buffer.count }
        return UnsafeRawPointer(found) - UnsafeRawPointer(buffer.baseAddress!)
    }

    mutating func next() -> [UInt8]? {
        guard position < bytes.count else { return nil }
        let start = position
        position = bytes.withUnsafeBufferPointer { Self.endOfLine($0, from: start) }
        let line = Array(bytes[start..<position])
        position += 1
        return line
    }
}

/// Little-endian integer writer for headers.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func append(_ raw: [UInt8]) { bytes.append(contentsOf: raw) }

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Little-endian integer reader; callers check lengths before reading.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func skip(_ count: Int) { position += count }

    mutating func read<T: FixedWidthInteger>() -> T {
        precondition(position + MemoryLayout<T>.size <= bytes.count, "read past the end of a checked buffer")
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[position + i]) << (8 * i) }
        position += MemoryLayout<T>.size
        return value
    }
}
