// Data safety (issue 12): AR1 "acknowledged implies replayable" (the deepest and largest documents
// the write path accepts are logged, replayed, checkpointed and verified; one level deeper is
// refused before anything is logged), `aerodb verify` decodes every payload, checkpoint failures
// leak no temp file, crafted checkpoint integers are corruption (D2), reference checks on delete
// are bounded under the writer lock (Q1), and DIR1 one process per data directory.

import Foundation
import Testing
@testable import Kernel

/// A value of exactly `depth` nesting levels (a scalar is one).
func nested(_ depth: Int) -> JSONValue {
    var value: JSONValue = .int(1)
    for _ in 1..<depth { value = .array([value]) }
    return value
}

@Suite struct DataSafetyTests {
    static let blobs = #"{"name":"blobs","fields":{"id":{"type":"text"},"data":{"type":"json","nullable":true}}}"#

    /// Segments that hold the largest transaction record, as every node's do.
    func nodeOptions(_ dir: TemporaryDirectory) -> KernelOptions {
        var options = smallOptions(dir)
        options.walSegmentBytes = KernelLimits.walSegmentBytesNodeMin
        return options
    }

    func insert(_ id: String, _ data: JSONValue) -> [WriteOperation] {
        [.insert(collection: "blobs", document: ["id": .string(id), "data": data])]
    }

    /// The largest document the write path accepts: exactly `documentBytesMax` bytes encoded.
    func largest(_ id: String, fill: String) -> JSONValue {
        let base = JSON.encode(.object(["id": .string(id), "data": .string("")])).count
        return .string(String(repeating: fill, count: KernelLimits.documentBytesMax - base))
    }

    @Test func theDeepestAndLargestAcceptedDocumentsReplayAndOneMoreIsRefusedBeforeLogging() async throws {
        let dir = TemporaryDirectory()
        var db = try await Database.open(nodeOptions(dir))
        _ = try await db.createCollection(json(Self.blobs))
        // Deepest: the document is one level, its json field the other documentDepthMax - 1.
        let deep = nested(KernelLimits.documentDepthMax - 1)
        _ = try await db.commit(insert("deep", deep))
        // Largest: one insert, then an update whose record carries two maximal images.
        _ = try await db.commit(insert("big", largest("big", fill: "a")))
        _ = try await db.commit([.update(collection: "blobs", target: .key(.string("big")), set: ["data": largest("big", fill: "b")])])
        let expected = try db.query(json(#"{"collection":"blobs","order":[{"field":"id","dir":"asc"}]}"#)).rows
        #expect(expected.count == 2)

        // One level deeper and one byte larger: refused before anything is logged (no LSN used).
        let position = db.lastPosition
        await #expect(throws: AeroError(.documentTooLarge, "blobs: a document may nest at most \(KernelLimits.documentDepthMax) levels deep (the document itself is one level); this one nests deeper")) {
            try await db.commit(insert("deeper", nested(KernelLimits.documentDepthMax)))
        }
        var oneByteMore = largest("big2", fill: "c")
        oneByteMore = .string(oneByteMore.stringValue! + "c")
        do {
            _ = try await db.commit(insert("big2", oneByteMore))
            Issue.record("a document over documentBytesMax was accepted")
        } catch let error as AeroError {
            #expect(error.code == .documentTooLarge)
        }
        // Deeper still than the parser allows (built in memory, as a front end could): refused too, no crash.
        await #expect(throws: AeroError.self) { try await db.commit(insert("deepest", nested(2_000))) }
        // A computed NaN or infinity (JSON has none; the encoder would write null): refused too.
        for value in [Double.nan, Double.infinity, -Double.infinity] {
            do {
                _ = try await db.commit(insert("float", .array([.float(value)])))
                Issue.record("a non-finite float was acknowledged; replay would load null")
            } catch let error as AeroError {
                #expect(error.code == .schemaViolation)
            }
        }
        #expect(db.lastPosition == position)
        await db.close()

        // Replay from the WAL alone, then from a checkpoint, then offline verification.
        db = try await Database.open(nodeOptions(dir))
        #expect(try db.query(json(#"{"collection":"blobs","order":[{"field":"id","dir":"asc"}]}"#)).rows == expected)
        _ = try await db.checkpoint()
        await db.close()
        db = try await Database.open(nodeOptions(dir))
        #expect(db.openReport.checkpointFile != nil && db.openReport.recordsReplayed == 0)
        #expect(try db.snapshot().document("blobs", key: .string("deep"))?["data"] == deep)
        #expect(try db.query(json(#"{"collection":"blobs","order":[{"field":"id","dir":"asc"}]}"#)).rows == expected)
        await db.close()
        #expect(try Database.verify(dataDirectory: dir.path + "/data").summary.hasPrefix("sound:"))
    }

    /// The segment bounds the record too: with segments too small for it, the largest document
    /// is refused before logging (what is acknowledged always fits where recovery reads it).
    @Test func aRecordLargerThanASegmentIsRefusedBeforeLogging() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))  // 256 KiB segments
        _ = try await db.createCollection(json(Self.blobs))
        let position = db.lastPosition
        do {
            _ = try await db.commit(insert("big", largest("big", fill: "a")))
            Issue.record("a record larger than a segment was accepted")
        } catch let error as AeroError {
            #expect(error.code == .transactionTooLarge)
        }
        #expect(db.lastPosition == position)
        _ = try await db.commit(insert("small", .string("ok")))
        await db.close()
    }

    /// The encoder's framing and the decoder's limit agree: a document of exactly
    /// `jsonDepthMax - framing.document` levels decodes inside a transaction record and one level
    /// more does not; defaults likewise in schema records; both framings fit `recordFramingDepth`.
    @Test func recordFramingAndTheDecoderLimitAgree() throws {
        #expect(TransactionRecord.framing.document <= KernelLimits.recordFramingDepth)
        #expect(TransactionRecord.framing.fieldDefault == KernelLimits.recordFramingDepth)
        #expect(KernelLimits.documentDepthMax == KernelLimits.jsonDepthMax - KernelLimits.recordFramingDepth)
        func record(_ depth: Int) -> [UInt8] {
            var doc: Document = ["id": .string("x")]
            if depth > 1 { doc["data"] = nested(depth - 1) }
            return TransactionRecord.encode([DocumentChange(collection: "blobs", key: .string("x"), before: nil, after: doc)])
        }
        let fits = KernelLimits.jsonDepthMax - TransactionRecord.framing.document
        #expect(try TransactionRecord.decodeChanges(record(fits), lsn: 1).count == 1)
        #expect(throws: AeroError.self) { try TransactionRecord.decodeChanges(record(fits + 1), lsn: 1) }
        #expect(try TransactionRecord.decodeChanges(record(KernelLimits.documentDepthMax), lsn: 1).count == 1)

        func schema(defaultDepth: Int) -> JSONValue {
            .object(["name": .string("blobs"), "fields": .object([
                "id": .object(["type": .string("text")]),
                "data": .object(["type": .string("json"), "nullable": .bool(true), "default": nested(defaultDepth)])])])
        }
        let accepted = try CollectionSchema.parse(schema(defaultDepth: KernelLimits.documentDepthMax))
        let payload = TransactionRecord.encode(.create(accepted))
        #expect(try TransactionRecord.decodeSchemaChange(payload, lsn: 1) == .create(accepted))
        // The checkpoint's schema line frames the default the same way.
        let line = JSON.encode(.object(["schema": accepted.json, "count": .int(0)]))
        #expect(throws: Never.self) { try JSON.parse(line) }
        do {
            _ = try CollectionSchema.parse(schema(defaultDepth: KernelLimits.documentDepthMax + 1))
            Issue.record("a default deeper than documentDepthMax was accepted")
        } catch let error as AeroError {
            #expect(error.code == .schemaInvalid)
        }
        // The incremental payload is byte for byte the JSON encoding of the documented layout.
        let changes = [DocumentChange(collection: "blobs", key: .string("x"), before: nil, after: ["id": .string("x"), "data": nested(3)]),
                       DocumentChange(collection: "blobs", key: .string("x"), before: ["id": .string("x")], after: ["id": .string("x"), "n": .int(1)]),
                       DocumentChange(collection: "blo\"bs", key: .int(7), before: ["id": .int(7)], after: nil)]
        let items: [JSONValue] = changes.map { c in
            var o: [String: JSONValue] = ["c": .string(c.collection), "k": c.key]
            if let b = c.before { o["b"] = .object(b) }
            if let a = c.after { o["a"] = .object(a) }
            return .object(o)
        }
        #expect(TransactionRecord.encode(changes) == JSON.encode(.object(["changes": .array(items)])))
        #expect(try TransactionRecord.decodeChanges(TransactionRecord.encode(changes), lsn: 1) == changes)
        #expect(TransactionRecord.encode([]) == JSON.encode(.object(["changes": .array([])])))
        #expect(nested(7).nestingDepth(cappedAt: 100) == 7)
        #expect(nested(2_000).nestingDepth(cappedAt: 65) == 65)
        #expect(JSONValue.object([:]).nestingDepth(cappedAt: 10) == 1)
    }

    /// `verify` decodes every payload, also records before the newest checkpoint (which `open`
    /// never replays), and names the segment, offset and LSN of one that does not decode.
    @Test func verifyDecodesEveryPayloadAndNamesTheRecord() async throws {
        let dir = TemporaryDirectory()
        let options = smallOptions(dir)
        let db = try await Database.open(options)
        _ = try await db.createCollection(json(Self.blobs))
        _ = try await db.commit(insert("a", .int(1)))
        let state = db.snapshot().state
        await db.close()
        // A record whose checksum is right but whose payload is not a transaction.
        let walOptions = WALOptions(directory: dir.path + "/data/wal", segmentBytes: options.walSegmentBytes,
                                    engine: .pwrite, preallocateInBackground: false)
        let (wal, _, _) = try WriteAheadLog.open(fileSystem: POSIXFileSystem(), options: walOptions, after: nil)
        let bad = try wal.append(type: .transaction, epoch: 1, timestampMicros: 0, payload: Array(#"{"changes":["#.utf8))
        try await wal.waitDurable(bad.lsn)
        wal.close()
        #expect(bad.lsn == 4)

        func expectCorruptAtLSN4(_ error: AeroError) {
            #expect(error.code == .walCorrupt)
            #expect(error.message.contains("segment-0000000000000000.wal") && error.message.contains("offset ")
                    && error.message.contains("LSN 4") && error.message.contains("does not decode"), "\(error.message)")
        }
        do {
            _ = try await Database.open(options)
            Issue.record("recovery replayed an undecodable record")
        } catch let error as AeroError { expectCorruptAtLSN4(error) }
        do {
            _ = try Database.verify(dataDirectory: options.dataDirectory)
            Issue.record("verify called a log with an undecodable record sound")
        } catch let error as AeroError { expectCorruptAtLSN4(error) }

        // A checkpoint past the bad record: `open` no longer reads it, `verify` still decodes it.
        var past = state
        past.position = bad
        let store = CheckpointStore(fileSystem: POSIXFileSystem(), directory: dir.path + "/data/checkpoints")
        try store.prepare()
        _ = try store.write(past)
        let reopened = try await Database.open(options)
        #expect(reopened.snapshot().lsn == 4)
        await reopened.close()
        do {
            _ = try Database.verify(dataDirectory: options.dataDirectory)
            Issue.record("verify skipped the payloads before the newest checkpoint")
        } catch let error as AeroError { expectCorruptAtLSN4(error) }
    }

    @Test func aFailedCheckpointLeavesNoTempFileAndStaleOnesAreRemovedAtStart() async throws {
        let dir = TemporaryDirectory()
        let fs = FaultyFileSystem()
        var options = smallOptions(dir)
        options.fileSystem = fs
        var db = try await Database.open(options)
        _ = try await db.createCollection(json(Self.blobs))
        for i in 0..<20 { _ = try await db.commit(insert("k\(i)", .string(String(repeating: "x", count: 1000)))) }
        let checkpoints = dir.path + "/data/checkpoints"
        fs.faults.withLock { $0.failWritesToPathsEndingWith = ".ckpt.tmp" }
        do {
            _ = try await db.checkpoint()
            Issue.record("a checkpoint on a full disk succeeded")
        } catch let error as AeroError {
            #expect(error.code == .storageFull)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: checkpoints).isEmpty, "the failed checkpoint's temp file leaked")
        #expect(await db.status().lastCheckpointError?.code == .storageFull)
        fs.faults.withLock { $0.failWritesToPathsEndingWith = nil }
        let lsn = try await db.checkpoint()
        #expect(try FileManager.default.contentsOfDirectory(atPath: checkpoints) == [CheckpointFile.fileName(lsn: lsn)])
        await db.close()

        // A temp file left by a crash (the process died mid-write) is removed at the next start.
        let stale = checkpoints + "/" + CheckpointFile.fileName(lsn: lsn + 1) + ".tmp"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data(repeating: 7, count: 4096)))
        db = try await Database.open(smallOptions(dir))
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(db.openReport.checkpointFile == CheckpointFile.fileName(lsn: lsn))
        await db.close()
    }

    /// Writes a checkpoint file with valid checksums (they are not a MAC) and chosen integers.
    /// A format 2 checkpoint whose checksums are right whatever it declares: a one-entry epoch
    /// history (epoch 1 from LSN 1), then `payload` (the JSON lines).
    func craft(_ path: String, lsn: UInt64, epoch: UInt64 = 1, plainLength: UInt64? = nil, payload lines: [UInt8]) throws {
        var history = ByteWriter()
        history.append(UInt32(1))
        history.append(UInt64(1))
        history.append(UInt64(1))
        let payload = history.bytes + lines
        let compressed = try Compression.compress(payload)
        var header = ByteWriter()
        header.append(CheckpointFile.magic)
        header.append(CheckpointFile.version)
        header.append(UInt32(0))
        header.append(lsn)
        header.append(UInt64(0))
        header.append(epoch)
        header.append(plainLength ?? UInt64(payload.count))
        header.append(UInt64(compressed.count))
        header.append(XXH64.hash(compressed))
        header.append(XXH64.hash(header.bytes))
        try Data(header.bytes + compressed).write(to: URL(fileURLWithPath: path))
    }

    @Test func aCheckpointWithOutOfRangeIntegersIsReportedCorruptAndSkipped() async throws {
        let dir = TemporaryDirectory()
        var db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.blobs))
        for i in 0..<10 { _ = try await db.commit(insert("k\(i)", .int(Int64(i)))) }
        let real = try await db.checkpoint()
        _ = try await db.commit(insert("after", .int(1)))
        let expected = try db.query(json(#"{"collection":"blobs"}"#)).rows
        let schema = try #require(db.collections().first).json
        await db.close()

        let checkpoints = dir.path + "/data/checkpoints/"
        let line = JSON.encode(.object(["schema": schema, "count": .int(1)])) + [0x0A]
            + JSON.encode(.object(["id": .string("x"), "data": .null])) + [0x0A]
        let newer = real + 1
        let crafted: [(String, UInt64, () throws -> Void)] = [
            ("declared length 2^63", newer, { try craft(checkpoints + CheckpointFile.fileName(lsn: newer), lsn: newer, plainLength: 1 << 63, payload: line) }),
            ("declared length a little too large", newer, { try craft(checkpoints + CheckpointFile.fileName(lsn: newer), lsn: newer, plainLength: UInt64(line.count + 1), payload: line) }),
            ("LSN 2^64-1", UInt64.max, { try craft(checkpoints + CheckpointFile.fileName(lsn: UInt64.max), lsn: UInt64.max, payload: line) }),
            ("epoch 2^64-1", newer, { try craft(checkpoints + CheckpointFile.fileName(lsn: newer), lsn: newer, epoch: UInt64.max, payload: line) }),
            ("count 9e18", newer, {
                let huge = JSON.encode(.object(["schema": schema, "count": .int(9_000_000_000_000_000_000)])) + [0x0A]
                try craft(checkpoints + CheckpointFile.fileName(lsn: newer), lsn: newer, payload: huge)
            }),
        ]
        // The control: crafted the same way with sound integers, the file decodes (so each
        // refusal below is for the integer it names, not for the way it was crafted).
        let control = dir.path + "/control.ckpt"
        try craft(control, lsn: newer, payload: line)
        let state = try CheckpointFile.decode(Array(try Data(contentsOf: URL(fileURLWithPath: control))), name: "control.ckpt")
        #expect(state.lsn == newer)
        for (label, lsn, write) in crafted {
            try write()
            db = try await Database.open(smallOptions(dir))
            #expect(db.openReport.skippedCheckpoints.map(\.code) == [.checkpointCorrupt], "\(label)")
            #expect(db.openReport.checkpointFile == CheckpointFile.fileName(lsn: real), "\(label)")
            #expect(try db.query(json(#"{"collection":"blobs"}"#)).rows == expected, "\(label)")
            await db.close()
            do {
                _ = try Database.verify(dataDirectory: dir.path + "/data")
                Issue.record("verify called a crafted checkpoint (\(label)) sound")
            } catch let error as AeroError {
                #expect(error.code == .checkpointCorrupt, "\(label): \(error)")
            }
            try FileManager.default.removeItem(atPath: checkpoints + CheckpointFile.fileName(lsn: lsn))
        }
        #expect(try Database.verify(dataDirectory: dir.path + "/data").summary.hasPrefix("sound:"))
    }

    /// D2 with a checkpoint parsed in pieces on several threads (a collection of at least
    /// `CheckpointFile.parallelParseDocumentsMin` documents): the documents come back in file
    /// order with their keys and sizes, and of several damaged lines the first one is named, as a
    /// parse in order names it, whichever piece finishes first; a document without its key, a key
    /// twice and a count larger than the lines left are corruption too.
    @Test func D2_aLargeCheckpointParsedInPiecesLoadsInOrderAndNamesItsFirstBadLine() throws {
        let dir = TemporaryDirectory()
        let schema = json(Self.blobs)
        let count = CheckpointFile.parallelParseDocumentsMin * 3 + 17
        let documents = (0..<count).map { i in JSON.encode(.object(["id": .string(String(format: "k%06d", i)), "data": .int(Int64(i))])) }
        func file(_ lines: [[UInt8]], declared: Int? = nil) throws -> [UInt8] {
            let path = dir.path + "/crafted.ckpt"
            let header = JSON.encode(.object(["schema": schema, "count": .int(Int64(declared ?? lines.count))]))
            try craft(path, lsn: 9, payload: ([header] + lines).flatMap { $0 + [0x0A] })
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        }
        // In file order straight from the pieces (the collection's bulk build would sort them).
        let shuffled = documents.reversed().map { $0 }
        var lines = LineIterator(shuffled.flatMap { $0 + [0x0A] })
        let skipped = lines.skip(count)
        let ends = try #require(skipped)
        let parsed = try CheckpointFile.parseDocuments(lines.bytes, lineEnds: ends, schema: CollectionSchema.parse(schema)) {
            AeroError(.checkpointCorrupt, $0)
        }
        #expect(parsed.entries.count == count)
        #expect(parsed.entries.enumerated().allSatisfy { i, entry in
            entry.value["data"] == .int(Int64(count - 1 - i)) && entry.key == OrderedValue(.string(String(format: "k%06d", count - 1 - i)))
        })
        #expect(parsed.bytes == documents.reduce(0) { $0 + CollectionData.bytes(of: try! JSON.parse($1).objectValue!) })
        let state = try CheckpointFile.decode(try file(documents), name: "crafted.ckpt")
        #expect(state.collections["blobs"]?.count == count)

        var damaged = documents
        damaged[count - 5] = Array("{\"id\":".utf8)   // late in the last piece
        damaged[count / 2] = Array("[1]".utf8)         // a JSON value, not an object
        damaged[count / 2 + 1] = Array("nope".utf8)
        var keyless = documents
        keyless[count - 2] = Array(#"{"data":1}"#.utf8)
        var twice = documents
        twice[count / 3] = documents[count / 3 - 1]
        for (lines, declared, named) in [(damaged, nil, "document \(count / 2 + 1) of \(count) is not a JSON object"),
                                         (keyless, nil, "document \(count - 1) of \(count) does not decode: blobs: a document has no id"),
                                         (twice, nil, "two documents with id = \"k\(String(format: "%06d", count / 3 - 1))\""),
                                         (documents, count + 1, "fewer documents than its count")] {
            do {
                _ = try CheckpointFile.decode(try file(lines, declared: declared), name: "crafted.ckpt")
                Issue.record("a damaged checkpoint decoded")
            } catch let error as AeroError {
                #expect(error.code == .checkpointCorrupt && error.message.contains(named), "\(error.message)")
            }
        }
    }

    /// D2 for the zlib wrapper the payload is inflated from without its adler32 (every caller
    /// checks an XXH64 of its own): a header that is not deflate (another method, a window over
    /// 32 KiB, a preset dictionary, a wrong FCHECK), a stream cut short, a byte between the
    /// stream's end and the trailer and a wrong declared length are all refused; only the adler32
    /// trailer's value is not read.
    @Test func D2_aCheckpointPayloadInflatesOnlyFromAWholeZlibStream() throws {
        let plain = Array((0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7 / 3) })
        let good = try Compression.compress(plain)
        #expect(try Compression.decompress(good, expectedLength: plain.count) == plain)
        var otherTrailer = good
        otherTrailer[otherTrailer.count - 1] ^= 0xFF
        #expect(try Compression.decompress(otherTrailer, expectedLength: plain.count) == plain, "the trailer is not read")
        // A header with its FCHECK set right, so that the flag named is what is refused.
        func header(_ cmf: UInt8, _ flags: UInt8) -> [UInt8] {
            let top = flags & 0xE0
            return [cmf, top + UInt8((31 - (Int(cmf) * 256 + Int(top)) % 31) % 31)]
        }
        #expect(header(good[0], good[1]) == Array(good[0..<2]), "the header helper rebuilds the real header")
        let dictionary = header(good[0], good[1] | 0x20) + good[2...]
        let notDeflate = header((good[0] & 0xF0) | 7, good[1]) + good[2...]
        let hugeWindow = header((good[0] & 0x0F) | 0x80, good[1]) + good[2...]
        var badCheck = good
        badCheck[1] ^= 0x01
        let extra = Array(good[..<(good.count - 4)]) + [0] + Array(good[(good.count - 4)...])
        for (label, bytes, length) in [("preset dictionary", dictionary, plain.count), ("CM 7", notDeflate, plain.count),
                                       ("a 64 KiB window", hugeWindow, plain.count), ("FCHECK", badCheck, plain.count),
                                       ("cut short", Array(good.prefix(good.count / 2)), plain.count),
                                       ("a byte after the stream", extra, plain.count), ("no trailer", Array(good.dropLast(4)), plain.count),
                                       ("declared one byte more", good, plain.count + 1), ("declared one byte less", good, plain.count - 1)] {
            #expect(throws: AeroError.self, "\(label)") { _ = try Compression.decompress(bytes, expectedLength: length) }
        }
    }

    /// D2: a payload inflates straight into one array of its declared length (issue 19), which
    /// is reserved, not filled: a declared length beyond this machine's memory is refused before
    /// anything is reserved, and a payload large enough to be advised for huge pages inflates to
    /// exactly its bytes (the advice changes the page size, never the content).
    @Test func D2_aPayloadInflatesIntoItsDeclaredLengthWithinThisMachinesMemory() throws {
        let plain = Array((0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7 / 3) })
        let good = try Compression.compress(plain)
        let beyond = Int(Compression.physicalMemoryBytes) + 1
        do {
            _ = try Compression.decompress(good, expectedLength: beyond)
            Issue.record("a declared length beyond the machine's memory was reserved")
        } catch let error as AeroError {
            #expect(error.code == .checkpointCorrupt && error.message.contains("more than this machine's memory"), "\(error.message)")
        }
        var rng = SeededRandom(seed: 7)
        let large = (0..<(3 * Compression.hugePageAdviceBytesMin + 12_345)).map { _ in UInt8(truncatingIfNeeded: rng.next() % 16) }
        #expect(try Compression.decompress(try Compression.compress(large), expectedLength: large.count) == large)
        #expect(try Compression.decompress(try Compression.compress([]), expectedLength: 0) == [])
        #expect(throws: AeroError.self, "an empty stream declared one byte") {
            _ = try Compression.decompress(try Compression.compress([]), expectedLength: 1)
        }
    }

    /// Q1 under the writer lock: on delete, references are found through an index on the
    /// referencing field; without one a scan is allowed only up to `referenceScanRowsMax` rows,
    /// and past it the delete is refused naming the index to declare.
    @Test func referenceChecksOnDeleteUseTheIndexOrAreBounded() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(nodeOptions(dir))  // a 10,000-insert record needs a node's segment
        _ = try await db.createCollection(json(#"{"name":"users","fields":{"id":{"type":"text"}}}"#))
        _ = try await db.createCollection(json(#"{"name":"posts","fields":{"id":{"type":"text"},"author":{"type":"text","references":{"collection":"users","on_delete":"cascade"}}}}"#))
        _ = try await db.commit([.insert(collection: "users", document: ["id": .string("u1")]),
                                 .insert(collection: "users", document: ["id": .string("u2")])])
        let many = TransactionBuilder.referenceScanRowsMax + 1
        var ops: [WriteOperation] = []
        for i in 0..<many {
            ops.append(.insert(collection: "posts", document: ["id": .string("p\(i)"), "author": .string("u2")]))
            if ops.count == KernelLimits.transactionOpsMax { _ = try await db.commit(ops); ops = [] }
        }
        for i in 0..<3 { ops.append(.insert(collection: "posts", document: ["id": .string("q\(i)"), "author": .string("u1")])) }
        _ = try await db.commit(ops)

        let position = db.lastPosition
        do {
            _ = try await db.commit([.delete(collection: "users", target: .key(.string("u1")))])
            Issue.record("a delete scanned more than referenceScanRowsMax rows under the writer lock")
        } catch let error as AeroError {
            #expect(error.code == .queryUnbounded)
            #expect(error.message.contains(#"declare one ({"fields":["author"]} on posts)"#), "\(error.message)")
        }
        #expect(db.lastPosition == position)

        _ = try await db.addIndex(collection: "posts", json(#"{"fields":["author"]}"#))
        let cascade = try await db.commit([.delete(collection: "users", target: .key(.string("u1")))])
        #expect(cascade.changes.count == 4)
        do {
            _ = try await db.commit([.delete(collection: "users", target: .key(.string("u2")))])
            Issue.record("a cascade over more than transactionOpsMax documents was accepted")
        } catch let error as AeroError {
            #expect(error.code == .transactionTooLarge)
        }
        #expect(try db.query(json(#"{"collection":"posts","filter":{"author":"u2"},"limit":1}"#)).rows.count == 1)
        await db.close()
    }

    /// LSNs that come from a peer or a client are any u64: reading past the end answers
    /// nothing, never an overflow trap.
    @Test func lsnsFromPeersOrClientsNeverTrap() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.blobs))
        for lsn: UInt64 in [UInt64.max, UInt64.max - 1, UInt64(Int64.max) + 2, db.lastPosition.lsn + 1] {
            #expect(try db.records(from: lsn, maxBytes: 1).isEmpty)
            #expect(try db.position(at: lsn) == nil)
        }
        #expect(try db.records(from: 1, maxBytes: 1).first?.lsn == 1)
        await db.close()
    }

    @Test func oneProcessPerDataDirectory() throws {
        let dir = TemporaryDirectory()
        let lock = try DataDirectoryLock.acquire(dataDirectory: dir.path)
        #expect(try String(contentsOfFile: lock.path, encoding: .utf8) == "\(getpid())\n")
        do {
            _ = try DataDirectoryLock.acquire(dataDirectory: dir.path)
            Issue.record("a second lock of one data directory was granted")
        } catch let error as AeroError {
            #expect(error.code == .dataDirectoryInvalid)
            #expect(error.message.contains("pid \(getpid())"), "\(error.message)")
        }
        lock.release()
        lock.release()  // idempotent
        try DataDirectoryLock.acquire(dataDirectory: dir.path).release()
    }
}
