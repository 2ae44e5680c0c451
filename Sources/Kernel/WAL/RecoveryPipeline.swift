// Recovery in three stages on their own threads (issue 19: replay was one thread): the scan
// (reading segments, checksums, the hash chain: WALScan) on a scan thread, the decoding of
// record payloads on decoding threads, and the application of the decoded records to the state
// on the thread that called `WriteAheadLog.open`.
//
// Invariants:
// - Records are applied exactly in the order the scan accepted them (LSN order), one at a time,
//   all on the calling thread: only `prepare` (a pure function of one record) runs on the
//   decoding threads, so the state recovery builds is the one a sequential replay builds (R1).
// - The first failure in log order wins, as in a sequential replay: a record whose `prepare` or
//   `apply` fails is reported as AERO_WAL_CORRUPT naming its own segment, offset and LSN (D2)
//   after every record before it was applied and before any after it is; an error of the scan
//   itself is thrown once every record it delivered before failing was applied (and only if
//   none of them failed).
// - The scan drains the pipeline (every delivered record applied) before it classifies or
//   repairs the end of the log (WALScan.run's `drain`): a record that does not replay stops
//   recovery before anything on disk changes, as before.
// - At most `KernelLimits.recoveryDecodeAheadRecords` records are in the pipeline (delivered,
//   not yet applied): memory stays bounded by that many records, whatever the log's length.
// - Every thread of the pipeline has exited when `run` returns or throws.

import Foundation

final class RecoveryPipeline<Prepared: Sendable>: @unchecked Sendable {
    // @unchecked: every stored `var` is read and written only under `condition`.
    private struct Entry {
        let record: WALRecord
        let place: WALScan.RecordPlace
        var result: Result<Prepared, any Error>?
    }

    /// Thrown into the scan when applying failed: the scan stops, the apply error is reported.
    private struct Stopped: Error {}

    private let condition = NSCondition()
    private var entries: [Int: Entry] = [:]
    private var waiting: [Int] = []  // sequences not yet taken by a decoding thread, oldest first
    private var waitingHead = 0
    private var submitted = 0
    private var applied = 0
    private var stopped = false
    private var scanOutcome: Result<WALScan, any Error>?
    private var threadsRunning = 0

    private let prepare: @Sendable (WALRecord) throws -> Prepared
    private let window: Int

    private init(window: Int, prepare: @escaping @Sendable (WALRecord) throws -> Prepared) {
        self.window = window
        self.prepare = prepare
    }

    /// Runs `scan` (which must deliver through the given closures) on a scan thread and applies
    /// the decoded records here, in order; returns the scan's result once every record was applied.
    static func run(workers: Int = RecoveryThreads.decoding, window: Int = KernelLimits.recoveryDecodeAheadRecords,
                    prepare: @escaping @Sendable (WALRecord) throws -> Prepared,
                    scan: @escaping @Sendable (_ deliver: @escaping @Sendable (WALRecord, WALScan.RecordPlace) throws -> Void,
                                               _ drain: @escaping @Sendable () throws -> Void) throws -> WALScan,
                    apply: (WALRecord, Prepared) throws -> Void) throws -> WALScan {
        precondition(workers >= 1 && window >= 1, "a pipeline has a decoding thread and room for a record")
        let pipeline = RecoveryPipeline(window: window, prepare: prepare)
        pipeline.start(workers: workers, scan: scan)
        defer { pipeline.stopAndJoin() }
        return try pipeline.applyAll(apply)
    }

    private func start(workers: Int, scan: @escaping @Sendable (_ deliver: @escaping @Sendable (WALRecord, WALScan.RecordPlace) throws -> Void,
                                                                _ drain: @escaping @Sendable () throws -> Void) throws -> WALScan) {
        condition.lock()
        threadsRunning = workers + 1
        condition.unlock()
        for i in 0..<workers {
            NamedThread.start("aero-rec-dec\(i)") { [self] in decodeLoop() }
        }
        NamedThread.start("aero-rec-scan") { [self] in
            let outcome = Result {
                try scan({ record, place in try self.deliver(record, place) }, { try self.drain() })
            }
            condition.lock()
            scanOutcome = outcome
            threadsRunning -= 1
            condition.broadcast()
            condition.unlock()
        }
    }

    // MARK: Scan thread

    private func deliver(_ record: WALRecord, _ place: WALScan.RecordPlace) throws {
        condition.lock()
        defer { condition.unlock() }
        while submitted - applied >= window && !stopped { condition.wait() }
        if stopped { throw Stopped() }
        entries[submitted] = Entry(record: record, place: place, result: nil)
        waiting.append(submitted)
        submitted += 1
        condition.broadcast()
    }

    private func drain() throws {
        condition.lock()
        defer { condition.unlock() }
        while applied < submitted && !stopped { condition.wait() }
        if stopped { throw Stopped() }
    }

    // MARK: Decoding threads

    private func decodeLoop() {
        condition.lock()
        while true {
            while waitingHead == waiting.count && !stopped && scanOutcome == nil { condition.wait() }
            if stopped || waitingHead == waiting.count { break }  // failed, or the scan is over and nothing is left
            let sequence = waiting[waitingHead]
            waitingHead += 1
            if waitingHead == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                waitingHead = 0
            } else if waitingHead >= window {
                // Decoders that stay behind the scan never empty the list: drop the taken head so
                // it holds at most about 2 x window sequences, not one per record of the log.
                waiting.removeFirst(waitingHead)
                waitingHead = 0
            }
            let record = entries[sequence]!.record
            condition.unlock()
            let result = Result { try prepare(record) }
            condition.lock()
            entries[sequence]?.result = result
            condition.broadcast()
        }
        threadsRunning -= 1
        condition.broadcast()
        condition.unlock()
    }

    // MARK: Applying (the calling thread)

    private func applyAll(_ apply: (WALRecord, Prepared) throws -> Void) throws -> WALScan {
        while true {
            condition.lock()
            while entries[applied]?.result == nil && !(scanOutcome != nil && applied == submitted) {
                condition.wait()
            }
            guard let entry = entries.removeValue(forKey: applied) else {
                let outcome = scanOutcome!
                condition.unlock()
                return try outcome.get()
            }
            condition.unlock()
            do {
                try apply(entry.record, try entry.result!.get())
            } catch {
                throw WALScan.doesNotReplay(entry.place, entry.record.lsn, error)  // `run`'s defer stops the scan
            }
            condition.lock()
            applied += 1
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Stops every thread (a no-op for those already done) and waits until all have exited.
    private func stopAndJoin() {
        condition.lock()
        stopped = true
        condition.broadcast()
        while threadsRunning > 0 { condition.wait() }
        entries = [:]
        condition.unlock()
    }
}

enum RecoveryThreads {
    /// Decoding threads for this machine: one per core (up to the limit). Decoding is recovery's
    /// critical path: in a profile of the restart bench on 2 cores (issue 19) the one decoding
    /// thread was busy all the time while the scan and the applying thread used a quarter of a
    /// core each, so decoders share the cores with them rather than leave one to the other two.
    static var decoding: Int {
        max(1, min(ProcessInfo.processInfo.activeProcessorCount, KernelLimits.recoveryDecodeThreadsMax))
    }
}
