// Periodic expiry of S3 multipart uploads (docs/STORAGE.md "S3", docs/LIMITS.md
// S3MultipartLimits.uploadSeconds).
//
// An upload older than uploadSeconds already answers NoSuchUpload (S3Multipart.upload); this
// drops its rows so its part blobs stop being referenced and BlobCollector takes them (ST3).
// How it runs: on the primary only (`isPrimary` is asked before every pass; replicas receive the
// deletions by replication), every `intervalSeconds`. Decide, then act: a pass reads on a
// snapshot at most `uploadsPerPassMax` expired uploads (through the `created_s` filter) and at
// most `rowsPerPassMax` of their part rows, and deletes them in one ordinary transaction by key
// (`in` on the primary key: a row Abort or Complete removed meanwhile is simply not there; the
// parts of an upload it removes whole are matched by `upload_id` when the transaction applies, so
// a part committed after the snapshot is not left behind: `dropUploads`). An
// upload row goes only in the pass that takes its last part rows, so an upload is never left
// without its row while parts remain. A run repeats passes until nothing is left or
// `passesPerRunMax`: the writer is never held for more than one bounded batch, a backlog drains
// over a few runs.

import Kernel
import Logging

public enum S3MultipartExpiry {
    /// How often the primary looks for expired uploads: a minute (expiry is 24 h; a minute late is nothing).
    static let intervalSeconds: Int64 = 60
    /// Expired uploads one pass examines.
    static let uploadsPerPassMax = 10
    /// Rows (parts and uploads) one pass deletes in one transaction: bounds the writer's batch.
    static let rowsPerPassMax = 500
    /// Passes per run; more backlog waits for the next run.
    static let passesPerRunMax = 20

    public struct Report: Sendable, Equatable {
        public var uploads = 0
        public var parts = 0
    }

    /// One pass: expired uploads as of `nowSeconds`, at most `rowsPerPassMax` rows deleted.
    static func pass(_ service: StorageService, nowSeconds: Int64) async throws -> Report {
        let snapshot = service.database.snapshot()
        guard snapshot.state.collections[S3MultipartCollections.uploads] != nil else { return Report() }
        let cutoff = nowSeconds - S3MultipartLimits.uploadSeconds
        let old = try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.uploads,
                                                   filter: .compare(field: "created_s", op: .lte, value: .int(cutoff)),
                                                   limit: uploadsPerPassMax))
        var uploads: [JSONValue] = []  // taken whole: their parts matched when the commit applies
        var parts: [JSONValue] = []  // of an upload too big for this pass: by key
        var rows = 0
        for row in old {
            guard let id = row["id"]?.stringValue else { continue }
            let room = rowsPerPassMax - rows
            guard room > 1 else { break }
            let mine = try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.parts,
                                                        filter: .compare(field: "upload_id", op: .eq, value: .string(id)),
                                                        order: [Sort(field: "part_number")], limit: room))
            if mine.count <= room - 1 {
                rows += mine.count + 1
                uploads.append(.string(id))
            } else {
                parts += mine.prefix(room - 1).compactMap { $0["id"] }
                break  // the rest of this upload's parts, and its row, in the next pass
            }
        }
        guard !uploads.isEmpty || !parts.isEmpty else { return Report() }
        var ops: [WriteOperation] = []
        if !parts.isEmpty { ops.append(.delete(collection: S3MultipartCollections.parts, target: .matching(.in(field: "id", values: parts)))) }
        ops += dropUploads(uploads)
        let result = try await service.database.commit(ops)
        var report = Report()
        for c in result.changes where c.after == nil {
            if c.collection == S3MultipartCollections.parts { report.parts += 1 }
            if c.collection == S3MultipartCollections.uploads { report.uploads += 1 }
        }
        return report
    }

    /// Deletes uploads and all their parts, the parts matched (by the `by_upload` index) when the
    /// transaction applies: a part an UploadPart committed after the caller's snapshot goes with
    /// its upload instead of staying as an orphan row whose blob is never collected.
    static func dropUploads(_ ids: [JSONValue]) -> [WriteOperation] {
        guard !ids.isEmpty else { return [] }
        return ids.map { .delete(collection: S3MultipartCollections.parts, target: .matching(.compare(field: "upload_id", op: .eq, value: $0))) }
            + [.delete(collection: S3MultipartCollections.uploads, target: .matching(.in(field: "id", values: ids)))]
    }

    /// One run: nothing on a replica (nil); on the primary, passes until nothing is left.
    public static func run(_ service: StorageService, isPrimary: @Sendable () -> Bool, logger: Logger) async -> Report? {
        guard isPrimary() else { return nil }
        var total = Report()
        for _ in 0..<passesPerRunMax {
            guard isPrimary(), !Task.isCancelled else { break }
            do {
                let r = try await pass(service, nowSeconds: service.nowSeconds)
                total.uploads += r.uploads
                total.parts += r.parts
                guard r.uploads + r.parts > 0 else { break }
            } catch {
                logger.error("s3 multipart expiry: pass failed; it runs again next time", metadata: ["error": "\(error)"])
                break
            }
            await Task.yield()
        }
        if total.uploads + total.parts > 0 {
            logger.info("s3 multipart expiry run", metadata: ["uploads": "\(total.uploads)", "parts": "\(total.parts)"])
        }
        return total
    }

    /// The periodic task (StartCommand); cancelled when the node stops.
    public static func start(_ service: StorageService, isPrimary: @escaping @Sendable () -> Bool, logger: Logger) -> Task<Void, Never> {
        Task.detached {
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(intervalSeconds)) } catch { return }
                _ = await run(service, isPrimary: isPrimary, logger: logger)
            }
        }
    }
}
