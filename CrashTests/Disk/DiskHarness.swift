// The disk-level crash harness (SPEC §6): run a seeded workload on a CrashDisk, cut the power
// after a random number of disk operations, derive crash images, recover each with the real
// kernel and check it against a reference run of the same workload without a crash.
//
// Checks for every crash image:
//   1. recovery succeeds (or refuses with a documented corruption error when a fault that
//      destroys acknowledged data, such as a bit flip, was injected on purpose);
//   2. every acknowledged commit is present: recovered LSN >= last acknowledged LSN (D1);
//   3. the recovered state equals the reference state at exactly that LSN: a prefix of the
//      committed transactions, in order, with exact content, no partial transaction (R1, C1);
//   4. recovery never crashes or hangs (it runs in-process; a crash would end the run);
//   5. (blob workloads) every object row of the recovered state names a blob present on the
//      crashed disk, of the row's size, whose bytes hash to its name (ST1): an object is never
//      visible with missing or torn bytes.
//
// Replica workloads run the same mixed workload on a primary (the reference), then feed its
// records to a replica's log on the crashing disk in frames of one to four primary batches,
// each frame flushed as one merged write (R2, WALFormat.swift); acknowledged = what the replica
// reported durable (what it would ACK). Checks 1-4 apply to the replica's recovery.

import BaaS
import Crypto
import Kernel
import Synchronization

struct DiskHarness {
    let seed: UInt64
    let operationsPerWorkload: Int
    let imagesPerCrash: Int
    var sabotage: CrashDisk.Sabotage?
    /// Mixed workloads (`Workload(seed:operations:)`), or maximal documents (`Workload.maximal`).
    var maximal = false
    /// Storage uploads through the BlobStore on the same disk (`Workload.blobs`), checked by `checkBlobs`.
    var blobs = false
    /// The mixed workload's records replicated into a replica's log on the crashing disk.
    var replica = false
    /// Object rows whose blob `checkBlobs` read and hashed (shared by the copies of this harness).
    let blobObjectsChecked = Counter()

    final class Counter: Sendable {
        private let value = Mutex(0)
        func add(_ n: Int) { value.withLock { $0 += n } }
        var count: Int { value.withLock { $0 } }
    }

    var workload: Workload {
        if maximal { return Workload.maximal(seed: seed) }
        if blobs { return Workload.blobs(seed: seed, operations: operationsPerWorkload) }
        return Workload(seed: seed, operations: operationsPerWorkload)
    }

    struct Outcome {
        var crashStates = 0
        var violations: [String] = []
        /// The first violation's shortest reproducing workload, printed with the summary.
        var minimalHistory: String?
    }

    /// What goes wrong in one crash run.
    enum Fault: String, CaseIterable {
        /// The power goes out; nothing else.
        case powerCut = "power cut"
        /// One fdatasync fails (F1), then the power goes out: nothing acknowledged after it may be lost.
        case flushError = "flush error"
        /// The power goes out and one bit of one file flips: recovery refuses or loads a
        /// committed state, never damaged data (D2).
        case bitFlip = "bit flip"
    }

    /// One workload: reference run, then crash runs at random cut points, cycling through faults.
    /// The first violation is shrunk to the shortest workload prefix that still shows it.
    func run(cutPoints: Int) async throws -> Outcome {
        let workload = self.workload
        let reference = try await referenceRun(workload)
        var outcome = Outcome()
        outcome.violations += reference.stepViolations.map { "seed \(seed) reference run: \($0)" }
        var random = SeededRandom(seed: seed ^ 0xC0FFEE)
        for cutNumber in 0..<cutPoints {
            let fault = sabotage == nil ? Fault.allCases[cutNumber % Fault.allCases.count] : .powerCut
            let cut = 1 + random.next(below: max(1, reference.diskOperations))
            let failSync = fault == .flushError ? 1 + random.next(below: max(1, reference.syncs)) : nil
            let crash = Crash(fault: fault, cut: cut, failSync: failSync)
            let results = await crash.images(imagesPerCrash, of: workload, reference: reference, harness: self)
            for (image, label, violation) in results {
                outcome.crashStates += 1
                guard let violation else { continue }
                outcome.violations.append("seed \(seed) \(label): \(violation)")
                if outcome.minimalHistory == nil {
                    outcome.minimalHistory = await shrink(workload, crash, image: image)
                }
            }
        }
        return outcome
    }

    /// A crash run's parameters: with the workload's seed they reproduce it exactly.
    struct Crash {
        let fault: Fault
        let cut: Int
        let failSync: Int?

        /// Runs the workload on a disk that fails this way; checks `count` crash images.
        func images(_ count: Int, of workload: Workload, reference: Reference, harness: DiskHarness,
                    only: Int? = nil) async -> [(Int, String, String?)] {
            let disk = CrashDisk()
            let acked = await harness.crashRun(workload, disk: disk, cutAfter: cut, failSyncAt: failSync, reference: reference)
            let segmentBytes = workload.segmentBytes
            var out: [(Int, String, String?)] = []
            for image in 0..<count where only == nil || only == image {
                var imageRandom = SeededRandom(seed: harness.seed &+ UInt64(cut) &* 31 &+ UInt64(image))
                let crashed = disk.crashImage(random: &imageRandom, keepAllPending: image == 0)
                var flipped: String?
                if fault == .bitFlip { flipped = crashed.flipRandomBit(random: &imageRandom) }
                let label = "\(fault.rawValue) after disk operation \(cut)"
                    + (failSync.map { " (sync \($0) fails)" } ?? "") + (flipped.map { " (flipped \($0))" } ?? "")
                    + " image \(image)"
                let violation = fault == .bitFlip
                    ? await harness.checkNeverLoadsDamage(crashed, segmentBytes: segmentBytes, reference: reference)
                    : await harness.check(crashed, segmentBytes: segmentBytes, acked: acked, reference: reference)
                out.append((image, label, violation))
            }
            return out
        }
    }

    /// The shortest prefix of the workload whose crash run (same fault, cut and image) still
    /// violates: what to replay to reproduce it, step by step.
    private func shrink(_ workload: Workload, _ crash: Crash, image: Int) async -> String {
        var shortest = workload.steps.count
        var low = 1, high = workload.steps.count - 1
        while low <= high {
            let n = (low + high) / 2
            let prefix = workload.prefix(n)
            let violates: Bool
            if let reference = try? await referenceRun(prefix) {
                violates = await crash.images(image + 1, of: prefix, reference: reference, harness: self, only: image)
                    .contains { $0.2 != nil }
            } else {
                violates = false
            }
            if violates { shortest = n; high = n - 1 } else { low = n + 1 }
        }
        let steps = workload.steps.prefix(shortest).enumerated().map { "  \($0.offset + 1). \($0.element.summary)" }
        return "minimal history (seed \(seed), \(crash.fault.rawValue) after disk operation \(crash.cut)"
            + (crash.failSync.map { ", sync \($0) fails" } ?? "") + ", image \(image)): \(shortest) of \(workload.steps.count) steps\n"
            + steps.joined(separator: "\n")
    }

    struct Reference {
        var states: [UInt64: DatabaseState] = [:]
        var diskOperations = 0
        var syncs = 0
        /// Steps accepted or refused against the workload's expectation (maximal workloads).
        var stepViolations: [String] = []
        /// Steps the reference run refused.
        var refused: Set<Int> = []
        /// Replica workloads: the primary's records, and the frames (record ranges, whole
        /// primary batches) they are shipped in.
        var records: [WALRecord] = []
        var frames: [Range<Int>] = []
    }

    func options(_ disk: CrashDisk, segmentBytes: Int) -> KernelOptions {
        var options = KernelOptions(dataDirectory: "/data")
        options.fileSystem = disk
        options.clock = ManualClock()
        options.walSegmentBytes = segmentBytes
        options.walEngine = .pwrite
        options.walPreallocateInBackground = false  // one order of disk operations per seed
        options.checkpointEveryWALBytes = 0
        if replica { options.role = .replica }
        return options
    }

    func referenceRun(_ workload: Workload) async throws -> Reference {
        let disk = CrashDisk()
        var primaryOptions = options(disk, segmentBytes: workload.segmentBytes)
        primaryOptions.role = .primary
        let db = try await Database.open(primaryOptions)
        var reference = Reference()
        reference.states[db.snapshot().lsn] = db.snapshot().state
        for (i, step) in workload.steps.enumerated() {
            // Refused steps (by design some are invalid) change nothing.
            let before = db.snapshot().lsn
            do {
                _ = try await step.run(on: db)
                if workload.mustRefuse.contains(i) { reference.stepViolations.append("step \(i + 1) was accepted but must be refused: \(step.summary)") }
            } catch {
                reference.refused.insert(i)
                let refusedAsExpected = workload.mustRefuse.contains(i) && (error as? AeroError)?.code == .documentTooLarge
                if workload.checksOutcomes && !refusedAsExpected {
                    reference.stepViolations.append("step \(i + 1) was refused (\(error)) but must be \(workload.mustRefuse.contains(i) ? "refused with AERO_DOCUMENT_TOO_LARGE" : "accepted"): \(step.summary)")
                }
                if db.snapshot().lsn != before { reference.stepViolations.append("refused step \(i + 1) changed the state (C1)") }
            }
            reference.states[db.snapshot().lsn] = db.snapshot().state
            // Read as the steps go: a checkpoint step may recycle the segments behind it.
            if replica, db.durablePosition.lsn > UInt64(reference.records.count) {
                reference.records += try db.records(from: UInt64(reference.records.count) + 1, maxBytes: 1 << 40)
            }
        }
        await db.close()
        reference.diskOperations = disk.operationCount
        reference.syncs = disk.syncCount
        if replica {
            reference.frames = Self.frames(reference.records, seed: seed)
            // A replica starts empty (LSN 0), a state the primary never had.
            let empty = try await Database.open(options(CrashDisk(), segmentBytes: workload.segmentBytes))
            reference.states[empty.snapshot().lsn] = empty.snapshot().state
            await empty.close()
            // Cut points range over the replica's own disk operations.
            let replicaDisk = CrashDisk()
            let acked = await replicaRun(reference, disk: replicaDisk)
            guard acked == UInt64(reference.records.count) else {
                throw AeroError(.internalError, "the replica reference run stopped at LSN \(acked) of \(reference.records.count)")
            }
            reference.diskOperations = replicaDisk.operationCount
            reference.syncs = replicaDisk.syncCount
        }
        return reference
    }

    /// Frames of one to four whole primary batches, as a sender that fell behind ships them.
    static func frames(_ records: [WALRecord], seed: UInt64) -> [Range<Int>] {
        var batches: [Range<Int>] = []
        for (i, record) in records.enumerated() {
            if let last = batches.last, records[last.lowerBound].batchStart == record.batchStart {
                batches[batches.count - 1] = last.lowerBound..<i + 1
            } else {
                batches.append(i..<i + 1)
            }
        }
        var random = SeededRandom(seed: seed ^ 0x5EB1_CA)
        var frames: [Range<Int>] = []
        var next = 0
        while next < batches.count {
            let end = min(batches.count, next + 1 + random.next(below: 4))
            frames.append(batches[next].lowerBound..<batches[end - 1].upperBound)
            next = end
        }
        return frames
    }

    /// Feeds the reference's frames to a replica on `disk`; returns the last LSN it reported
    /// durable (what it would acknowledge to the primary).
    func replicaRun(_ reference: Reference, disk: CrashDisk) async -> UInt64 {
        guard let db = try? await Database.open(options(disk, segmentBytes: workload.segmentBytes)) else { return 0 }
        var acked: UInt64 = 0
        for frame in reference.frames where !disk.hasCrashed {
            let records = Array(reference.records[frame])
            guard (try? db.applyReplicated(records)) != nil, (try? await db.waitDurable(records.last!.lsn)) != nil else { break }
            acked = records.last!.lsn
        }
        disk.crash()
        await db.close()
        return acked
    }

    /// Runs the workload on a disk that loses power after `cutAfter` operations (in the middle
    /// of whatever the kernel is doing then). Returns the last acknowledged LSN.
    ///
    /// Blob workloads stop at the first step refused here but accepted by the reference run: a
    /// failed blob fsync refuses an upload without stopping the kernel, so the next commit (whose
    /// own fsync fails, unacknowledged, possibly surviving in the image) would be another
    /// transaction than the reference's at that LSN, and the comparison would be meaningless.
    func crashRun(_ workload: Workload, disk: CrashDisk, cutAfter: Int, failSyncAt: Int?, reference: Reference? = nil) async -> UInt64 {
        disk.setFaults(CrashDisk.Faults(failSyncAt: failSyncAt, crashAfterOperations: cutAfter, sabotage: sabotage))
        if replica, let reference { return await replicaRun(reference, disk: disk) }
        guard let db = try? await Database.open(options(disk, segmentBytes: workload.segmentBytes)) else { return 0 }
        var acked = db.snapshot().lsn
        for (i, step) in workload.steps.enumerated() where !disk.hasCrashed {
            // A step refused by the kernel or cut by the power loss was not acknowledged.
            if let lsn = try? await step.run(on: db) {
                acked = max(acked, lsn)
            } else if blobs, let reference, !reference.refused.contains(i) {
                break
            }
        }
        disk.crash()
        await db.close()
        return acked
    }

    /// Bit flips: a refusal naming the damage, or exactly some committed state. A flip in the
    /// last acknowledged record looks like a torn write (as in every WAL) and may cost that
    /// record; what must never happen is loading damaged data.
    func checkNeverLoadsDamage(_ disk: CrashDisk, segmentBytes: Int, reference: Reference) async -> String? {
        let db: Database
        do {
            db = try await Database.open(options(disk, segmentBytes: segmentBytes))
        } catch let error as AeroError where [.walCorrupt, .checkpointCorrupt, .lsnUnavailable].contains(error.code) {
            return nil
        } catch {
            return "recovery failed with an undocumented error: \(error)"
        }
        let recovered = db.snapshot().state
        await db.close()
        guard let expected = reference.states[recovered.lsn] else {
            return "recovered LSN \(recovered.lsn) is not a committed state"
        }
        return StateComparison.difference(recovered, expected).map { "damaged data loaded: \($0)" }
    }

    func check(_ disk: CrashDisk, segmentBytes: Int, acked: UInt64, reference: Reference) async -> String? {
        let db: Database
        do {
            db = try await Database.open(options(disk, segmentBytes: segmentBytes))
        } catch {
            return "recovery refused: \(error)"
        }
        let recovered = db.snapshot().state
        await db.close()
        guard recovered.lsn >= acked else {
            return "acknowledged LSN \(acked) lost: recovered only up to \(recovered.lsn) (D1)"
        }
        guard let expected = reference.states[recovered.lsn] else {
            return "recovered LSN \(recovered.lsn) is not a committed state of the reference run (C1)"
        }
        if let difference = StateComparison.difference(recovered, expected) { return difference }
        return blobs ? checkBlobs(disk, recovered) : nil
    }

    /// Check 5: every recovered object row's blob is whole on the crashed disk, read through the
    /// BlobStore as a download reads it.
    func checkBlobs(_ disk: CrashDisk, _ recovered: DatabaseState) -> String? {
        guard let objects = recovered.collections[Workload.objects] else { return nil }
        let store: BlobStore
        do { store = try BlobStore(dataDirectory: "/data", fileSystem: disk) } catch {
            return "the blob store does not open after the crash: \(error)"
        }
        for row in objects.allDocuments() {
            let name = row["id"]?.stringValue ?? "?"
            guard let sha = row["sha256"]?.stringValue, let size = row["size"]?.intValue else { return "object \(name): malformed row" }
            blobObjectsChecked.add(1)
            do {
                guard let reader = try store.reader(sha) else { return "object \(name) is visible but its blob \(sha.prefix(12)) is missing (ST1)" }
                guard reader.size == size else { return "object \(name) is visible but its blob holds \(reader.size) of \(size) bytes (ST1)" }
                var hasher = SHA256()
                var offset: Int64 = 0
                while offset < size {
                    let chunk = try reader.read(at: offset, count: Workload.uploadChunkBytes)
                    if chunk.isEmpty { break }
                    hasher.update(data: chunk)
                    offset += Int64(chunk.count)
                }
                let got = hasher.finalize().map { String(format: "%02x", $0) }.joined()
                guard got == sha else { return "object \(name) is visible but its blob's bytes are torn: they hash to \(got.prefix(12)), not \(sha.prefix(12)) (ST1)" }
            } catch {
                return "object \(name): reading its blob failed: \(error)"
            }
        }
        return nil
    }
}

enum StateComparison {
    /// nil when equal; otherwise what differs.
    static func difference(_ a: DatabaseState, _ b: DatabaseState) -> String? {
        guard a.collections.keys.sorted() == b.collections.keys.sorted() else {
            return "collections differ: \(a.collections.keys.sorted()) vs \(b.collections.keys.sorted())"
        }
        for name in a.collections.keys.sorted() {
            let x = a.collections[name]!, y = b.collections[name]!
            guard x.schema == y.schema else { return "schema of \(name) differs" }
            let dx = Array(x.allDocuments()), dy = Array(y.allDocuments())
            guard dx == dy else {
                let kx = Set(dx.map { JSON.encodeString($0[x.schema.primaryKey] ?? .null) })
                let ky = Set(dy.map { JSON.encodeString($0[y.schema.primaryKey] ?? .null) })
                let changed = zip(dx, dy).first { $0 != $1 }.map { "first differing document: \(JSON.encodeString(.object($0.0))) vs \(JSON.encodeString(.object($0.1)))" } ?? ""
                return "documents of \(name) differ at LSN \(a.lsn) (\(dx.count) vs \(dy.count) documents; only recovered: \(kx.subtracting(ky).sorted().prefix(3)), only expected: \(ky.subtracting(kx).sorted().prefix(3))) \(kx == ky ? changed : "")"
            }
        }
        return nil
    }
}
