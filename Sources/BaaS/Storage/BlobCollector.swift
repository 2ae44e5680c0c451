// Collection of unreferenced blobs and a replica's catch-up (docs/STORAGE.md "Collection").
//
// ST3: a referenced blob is never removed. A pass removes a blob file only when, under
// BlobStore.naming (the lock every upload takes to name its blob), (a) its mtime is older than
// `collectGraceSeconds` and (b) no row of `_storage_objects` in the node's latest snapshot names
// its hash (index by_sha256). An upload names its blob (new file: fresh mtime; known content:
// mtime refreshed) under the same lock before it commits the row, and commits within
// `peerTransferTimeoutSeconds` (< the grace), so between its naming and its commit no pass can
// find the file old. `.part` files older than the grace are uploads cut by a crash or an error.
// A replica may lag: a blob pushed more than the grace ago whose row it has not applied yet
// could be collected there; the catch-up below (and a download miss) fetches it again from the
// primary, and listing hides a row whose blob is absent, so the replica still never lists an
// object it cannot serve.

import Foundation
import Kernel
import Logging
#if canImport(Glibc)
import Glibc
#endif

struct BlobCollector: Sendable {
    let service: StorageService

    struct Report: Sendable, Equatable {
        var examined = 0
        var removed = 0
        var partsRemoved = 0
        var fetched = 0
        var uploadsExpired = 0
    }

    /// Blobs a replica fetches in one catch-up pass (bounded work per pass).
    static let fetchesPerPassMax = 100

    static func start(_ service: StorageService) -> Task<Void, Never> {
        Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(StorageLimits.collectIntervalSeconds))
                guard !Task.isCancelled else { return }
                do {
                    let report = try await BlobCollector(service: service).pass(nowSeconds: service.nowSeconds)
                    if report.removed + report.partsRemoved + report.fetched + report.uploadsExpired > 0 {
                        service.logger.info("storage blob pass", metadata: ["removed": "\(report.removed)", "parts_removed": "\(report.partsRemoved)",
                                                                             "fetched": "\(report.fetched)", "uploads_expired": "\(report.uploadsExpired)", "examined": "\(report.examined)"])
                    }
                } catch {
                    service.logger.error("storage blob pass failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    func referenced(_ sha: String) throws -> Bool {
        let snapshot = service.database.snapshot()
        let byObject = !(try snapshot.rowsIfPresent(Query(collection: StorageCollections.objects,
                                                          filter: .compare(field: "sha256", op: .eq, value: .string(sha)),
                                                          limit: 1))).isEmpty
        return try byObject || S3MultipartCollections.referenced(sha, snapshot)  // or a pending S3 multipart part
    }

    /// A removal that failed is logged, never swallowed (the next pass tries again).
    func logUnlinkFailure(_ path: String) {
        let code = errno
        guard code != ENOENT else { return }
        service.logger.error("storage blob pass: cannot remove", metadata: ["path": "\(path)", "errno": "\(code)"])
    }

    static func mtimeSeconds(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_mtim.tv_sec)
    }

    /// One pass: collect, then catch up (every node with peers).
    func pass(nowSeconds: Int64, graceSeconds: Int64 = StorageLimits.collectGraceSeconds) async throws -> Report {
        var report = Report()
        let blobs = service.blobs
        let fm = FileManager.default
        let cutoff = nowSeconds - graceSeconds
        report.uploadsExpired = service.resumable.expire(nowSeconds: nowSeconds)
        for part in (try? fm.contentsOfDirectory(atPath: blobs.tmp)) ?? [] {
            let path = blobs.tmp + "/" + part
            guard let m = Self.mtimeSeconds(path), m < cutoff else { continue }
            if unlink(path) == 0 { report.partsRemoved += 1 } else { logUnlinkFailure(path) }
        }
        for shard in ((try? fm.contentsOfDirectory(atPath: blobs.root)) ?? []).sorted() where shard.count == 2 {
            for name in ((try? fm.contentsOfDirectory(atPath: blobs.root + "/" + shard)) ?? []).sorted() where BlobStore.isHash(name) {
                report.examined += 1
                let path = blobs.path(of: name)
                guard let m = Self.mtimeSeconds(path), m < cutoff, !(try referenced(name)) else { continue }
                let removed: Bool = try blobs.naming.withLock { _ in
                    // Re-checked under the lock: an upload may have just named this content.
                    guard let m = Self.mtimeSeconds(path), m < cutoff, !(try referenced(name)) else { return false }
                    guard unlink(path) == 0 else { logUnlinkFailure(path); return false }
                    return true
                }
                if removed { report.removed += 1 }
            }
        }
        // Every member with peers, the primary too: a member promoted before its catch-up (ST8).
        if !service.replicator.peers.others().isEmpty { report.fetched = try await catchUp() }
        return report
    }

    /// A member fetches the blobs its rows name and it lacks (missed pushes, checkpoint bootstrap).
    func catchUp() async throws -> Int {
        var fetched = 0
        var after: String?
        var examined = 0
        while examined < StorageLimits.examinedRowsMax, fetched < Self.fetchesPerPassMax {
            let filter: Filter? = after.map { .compare(field: "id", op: .gt, value: .string($0)) }
            let page = try service.database.snapshot().rowsIfPresent(Query(collection: StorageCollections.objects, filter: filter,
                                                                           order: [Sort(field: "id")], limit: StorageLimits.pageRows))
            examined += page.count
            for row in page {
                guard let sha = row["sha256"]?.stringValue, !service.blobs.exists(sha) else { continue }
                if (try? await service.replicator.fetch(sha)) == true { fetched += 1 }
                if fetched >= Self.fetchesPerPassMax { break }
            }
            guard page.count == StorageLimits.pageRows, let last = page.last?["id"]?.stringValue else { break }
            after = last
        }
        return fetched
    }
}
