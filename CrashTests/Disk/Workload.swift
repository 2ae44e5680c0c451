// Seeded workloads for the disk harness: inserts, updates, deletes, multi-operation
// transactions, schema changes (add/drop index, create collection), checkpoints and enough
// volume to roll WAL segments over. The same seed gives the same steps, and (with a manual
// clock and explicit keys) the same resolved effects, so a reference run predicts every state.

import BaaS
import Kernel

struct Workload {
    enum Step {
        case schema(JSONValue)
        case addIndex(String, JSONValue)
        case dropIndex(String, String)
        case commit(JSONValue)
        case checkpoint
        /// A storage upload (blob workloads): `size` bytes generated from `content` stream through
        /// the BlobStore's writer on the same disk (temp file, fsync, rename to the SHA-256,
        /// directory fsync: ST1), then the row naming the blob commits, as `StorageAPI.upload` does.
        case upload(name: String, size: Int, content: UInt64)

        /// One line for a printed history.
        var summary: String {
            switch self {
            case .schema(let s): return "create collection \(JSON.encodeString(s).prefix(160))"
            case .addIndex(let c, let index): return "add index on \(c): \(JSON.encodeString(index))"
            case .dropIndex(let c, let name): return "drop index \(name) on \(c)"
            case .commit(let tx): return "commit \(JSON.encodeString(tx).prefix(200))"
            case .checkpoint: return "checkpoint"
            case .upload(let name, let size, let content): return "upload \(name): \(size) bytes of content \(content)"
            }
        }

        /// Runs the step; returns the LSN it made durable.
        func run(on db: Database) async throws -> UInt64 {
            switch self {
            case .schema(let s): return try await db.createCollection(s).lsn
            case .addIndex(let c, let index): return try await db.addIndex(collection: c, index).lsn
            case .dropIndex(let c, let name): return try await db.dropIndex(collection: c, name: name)
            case .commit(let tx): return try await db.commit(tx).lsn
            case .checkpoint: return try await db.checkpoint()
            case .upload(let name, let size, let content):
                let store = try BlobStore(dataDirectory: db.options.dataDirectory, fileSystem: db.options.fileSystem)
                let writer = try store.writer(limitBytes: Int64(size))
                var random = SeededRandom(seed: content)
                var written = 0
                while written < size {
                    // Chunks of uneven sizes, so writes straddle 512-byte sectors when torn.
                    let count = min(size - written, Workload.uploadChunkBytes - random.next(below: 700))
                    try writer.write((0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) })
                    written += count
                }
                let (sha, stored) = try writer.finish()
                let row: JSONValue = .object(["id": .string(name), "sha256": .string(sha), "size": .int(stored)])
                return try await db.commit(.object(["ops": .array([.object(["op": .string("upsert"), "collection": .string(Workload.objects),
                                                                            "doc": row])])])).lsn
            }
        }
    }

    /// The blob workload's object rows (a stand-in for `_storage_objects`: name, blob, size).
    static let objects = "objects"
    static let uploadChunkBytes = 64 << 10

    let steps: [Step]
    /// Indexes of steps the kernel must refuse (with AERO_DOCUMENT_TOO_LARGE): the reference run
    /// reports a violation when one is accepted, or when any other step is refused, so a workload
    /// of maximal documents never silently tests less than the limits.
    let mustRefuse: Set<Int>
    /// True when every step but `mustRefuse` must be accepted (maximal workloads); mixed
    /// workloads contain steps that are refused by design (duplicate index, missing key).
    let checksOutcomes: Bool
    /// WAL segment size: mixed workloads use the smallest (many rollovers); maximal ones the size
    /// that holds the largest transaction record, as every node's does.
    let segmentBytes: Int

    init(steps: [Step], mustRefuse: Set<Int> = [], checksOutcomes: Bool = false,
         segmentBytes: Int = KernelLimits.walSegmentBytesMin) {
        self.steps = steps
        self.mustRefuse = mustRefuse
        self.checksOutcomes = checksOutcomes
        self.segmentBytes = segmentBytes
    }

    /// The same workload cut to its first `count` steps (the shrinker replays prefixes).
    func prefix(_ count: Int) -> Workload {
        Workload(steps: Array(steps.prefix(count)), mustRefuse: mustRefuse.filter { $0 < count },
                 checksOutcomes: checksOutcomes, segmentBytes: segmentBytes)
    }

    init(seed: UInt64, operations: Int) {
        var random = SeededRandom(seed: seed)
        var steps: [Step] = [
            .schema(Self.parse(#"{"name":"owners","fields":{"id":{"type":"text"},"name":{"type":"text"}}}"#)),
            .schema(Self.parse(#"{"name":"items","fields":{"id":{"type":"text"},"qty":{"type":"int","nullable":true},"body":{"type":"text"},"owner":{"type":"text","nullable":true,"references":{"collection":"owners","on_delete":"set_null"}}},"indexes":[{"fields":["qty"]},{"name":"items_body_unique","fields":["body"],"unique":true}]}"#)),
            .commit(Self.parse(#"{"ops":[{"op":"insert","collection":"owners","doc":{"id":"o1","name":"first"}},{"op":"insert","collection":"owners","doc":{"id":"o2","name":"second"}}]}"#)),
        ]
        for i in 0..<operations {
            steps.append(Self.step(i, random: &random))
        }
        self.init(steps: steps)
    }

    // MARK: Blob writes

    /// Storage uploads on the simulated disk (docs/CRASH_TESTING.md "Blob workload", ST1): uploads
    /// of sizes around sector and chunk boundaries, re-uploads of the same content (the blob
    /// exists: the temp file is dropped), overwrites and deletes of rows, checkpoints. After any
    /// crash, every object row the recovery shows must name a blob whose bytes hash to its name
    /// and match its size (DiskHarness.checkBlobs).
    static func blobs(seed: UInt64, operations: Int) -> Workload {
        var random = SeededRandom(seed: seed)
        let sizes = [0, 1, 511, 512, 513, 4_096, 70_000, 200_001]
        var steps: [Step] = [.schema(parse(#"{"name":"objects","fields":{"id":{"type":"text"},"sha256":{"type":"text"},"size":{"type":"int"}}}"#))]
        for i in 0..<operations {
            let name = "o\(random.next(below: 12))"
            switch random.next(below: 10) {
            case 0: steps.append(.checkpoint)
            case 1: steps.append(.commit(parse(#"{"ops":[{"op":"delete","collection":"objects","key":"\#(name)"}]}"#)))
            default:
                // A small pool of contents: some uploads store bytes already stored (dedup path).
                let content = UInt64(random.next(below: 6))
                steps.append(.upload(name: name, size: sizes[(Int(content) + i % 2) % sizes.count], content: seed &* 1_000 &+ content &* 2 &+ UInt64(i % 2)))
            }
        }
        return Workload(steps: steps)
    }

    // MARK: Maximal documents

    /// Documents at the limits of the write path ("acknowledged implies replayable"): the
    /// deepest (`documentDepthMax` levels), the largest (`documentBytesMax` bytes encoded), both
    /// at once, updates whose records carry two maximal images, a transaction of as many maximal
    /// documents as `transactionBytesMax` holds, checkpoints between them; and one level deeper
    /// and one byte larger, which must be refused. Every acknowledged one must replay exactly.
    static func maximal(seed: UInt64) -> Workload {
        var random = SeededRandom(seed: seed)
        func fill() -> String { String(UnicodeScalar(UInt8(97 + random.next(below: 26)))) }
        var steps: [Step] = [
            .schema(parse(#"{"name":"blobs","fields":{"id":{"type":"text"},"n":{"type":"int","nullable":true},"data":{"type":"json","nullable":true}},"indexes":[{"fields":["n"]}]}"#)),
        ]
        var refuse: Set<Int> = []
        func insert(_ docs: [Document]) -> Step {
            .commit(.object(["ops": .array(docs.map { .object(["op": .string("insert"), "collection": .string("blobs"), "doc": .object($0)]) })]))
        }
        func update(_ id: String, _ data: JSONValue) -> Step {
            .commit(.object(["ops": .array([.object(["op": .string("update"), "collection": .string("blobs"),
                                                     "key": .string(id), "set": .object(["data": data])])])]))
        }
        let deepestDoc = { (id: String) in Self.deep(id, levels: KernelLimits.documentDepthMax, fill: fill()) }
        let largestDoc = { (id: String, deep: Bool) in Self.largest(id, deep: deep, fill: fill()) }
        steps.append(insert([deepestDoc("deep-1")]))
        steps.append(insert([largestDoc("big-1", false)]))
        refuse.insert(steps.count)
        steps.append(insert([Self.deep("deeper", levels: KernelLimits.documentDepthMax + 1, fill: "x")]))
        refuse.insert(steps.count)
        var tooLarge = largestDoc("larger", false)
        tooLarge["data"] = .string(tooLarge["data"]!.stringValue! + "x")
        steps.append(insert([tooLarge]))
        steps.append(update("big-1", largestDoc("big-1", false)["data"]!))
        steps.append(insert([largestDoc("deep-big-1", true)]))
        steps.append(.checkpoint)
        // As many maximal documents as one transaction record holds (each ~documentBytesMax).
        let perTransaction = KernelLimits.transactionBytesMax / (KernelLimits.documentBytesMax + 256)
        for round in 0..<2 {
            steps.append(insert((0..<perTransaction).map { largestDoc("batch-\(round)-\($0)", $0 % 2 == 0) }))
            steps.append(update("deep-1", deepestDoc("deep-1")["data"]!))
            if random.next(below: 2) == 0 { steps.append(.checkpoint) }
            steps.append(.commit(.object(["ops": .array([.object(["op": .string("delete"), "collection": .string("blobs"),
                                                                  "key": .string("batch-\(round)-\(random.next(below: perTransaction))")])])])))
        }
        steps.append(update("deep-big-1", largestDoc("deep-big-1", true)["data"]!))
        steps.append(.checkpoint)
        return Workload(steps: steps, mustRefuse: refuse, checksOutcomes: true, segmentBytes: KernelLimits.walSegmentBytesNodeMin)
    }

    /// A document of exactly `levels` nesting levels (the document itself is one), with every
    /// field of `blobs` given, so the stored document is exactly this one.
    static func deep(_ id: String, levels: Int, fill: String) -> Document {
        var value: JSONValue = .string(fill)
        for _ in 0..<max(0, levels - 2) { value = .array([value]) }
        return ["id": .string(id), "n": .null, "data": value]
    }

    /// A document of exactly `documentBytesMax` bytes encoded; with `deep`, also `documentDepthMax` levels.
    static func largest(_ id: String, deep: Bool, fill: String) -> Document {
        func make(_ text: String) -> Document {
            deep ? Self.deep(id, levels: KernelLimits.documentDepthMax, fill: text) : ["id": .string(id), "n": .null, "data": .string(text)]
        }
        let base = JSON.encode(.object(make(""))).count
        let byte = fill.utf8.first ?? UInt8(ascii: "x")
        return make(String(decoding: [UInt8](repeating: byte, count: KernelLimits.documentBytesMax - base), as: UTF8.self))
    }

    private static func step(_ i: Int, random: inout SeededRandom) -> Step {
        let key = "k\(random.next(below: 64))"
        let padding = String(repeating: "p", count: random.next(below: 600))
        switch random.next(below: 20) {
        case 0: return .checkpoint
        case 1: return .addIndex("items", parse(#"{"name":"items_owner","fields":["owner"]}"#))
        case 2: return .dropIndex("items", "items_owner")
        case 3...4:
            return .commit(parse(#"{"ops":[{"op":"delete","collection":"items","key":"\#(key)"}]}"#))
        case 5...7:
            return .commit(parse(#"{"ops":[{"op":"update","collection":"items","key":"\#(key)","set":{"qty":\#(i),"owner":"o\#(1 + random.next(below: 2))"}}]}"#))
        case 8...10:
            let other = "k\(random.next(below: 64))"
            return .commit(parse(#"{"ops":[{"op":"upsert","collection":"items","doc":{"id":"\#(key)","qty":\#(i),"body":"b\#(i)\#(padding)"}},{"op":"upsert","collection":"items","doc":{"id":"\#(other)","qty":null,"body":"c\#(i)"}},{"op":"delete","collection":"items","filter":{"qty":{"$lt":\#(i / 2)}}}]}"#))
        default:
            return .commit(parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(key)-\#(i)","qty":\#(random.next(below: 1000)),"body":"d\#(i)\#(padding)","owner":"o1"}}]}"#))
        }
    }

    static func parse(_ text: String) -> JSONValue {
        do { return try JSON.parse(text) } catch { preconditionFailure("workload JSON is malformed: \(text)") }
    }
}
