// S3 multipart uploads (docs/STORAGE.md "S3"; invariant ST7 in docs/INVARIANTS.md).
//
// `_storage_s3_uploads`: id (upload id, text key), bucket_id, name, mime_type, cache_control,
//   metadata, owner, created_s, bytes (sum of its parts' sizes after the last part commit).
// `_storage_s3_parts`: id "<upload id>/<part number, 5 digits>" (text key), upload_id,
//   part_number, sha256, size, etag. Index by_sha256 (BlobCollector keeps a part's blob).
// A part is a blob like any object's bytes: written and fsynced by BlobWriter.finish, pushed to
// the replicas (BlobReplicator), then its row committed; so a part, once acknowledged, is
// durable and replicated (ST1). Complete concatenates the parts into a new blob (fsynced),
// pushes it, commits the object row (commitUpload), then drops the upload's rows: an
// acknowledged CompleteMultipartUpload is an object like any upload (ST7).
// Bounds: part numbers 1...partsMax; an upload's total and each part at most the bucket's
// object limit; at most uploadsMax pending uploads per node and pendingBytesMax bytes in all
// (checked against the uploads' `bytes` sums, so concurrent parts of one upload can pass it by
// at most their own sizes); an upload older than uploadSeconds is gone (NoSuchUpload), its rows
// dropped by the primary's periodic S3MultipartExpiry (and a pass at each Create), its blobs
// then collected.

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

enum S3MultipartLimits {
    /// Part numbers 1...10,000 (as AWS).
    static let partsMax = 10_000
    /// Pending multipart uploads per node (a client-growable table).
    static let uploadsMax = 1_000
    /// Bytes of all pending uploads' parts per node: 64 GiB (as resumable uploads).
    static let pendingBytesMax: Int64 = 64 << 30
    /// A multipart upload lives 24 hours from its creation.
    static let uploadSeconds: Int64 = 86_400
    /// ListParts / ListMultipartUploads answer at most 1,000 entries per page (as AWS).
    static let listMax = 1_000
}

enum S3MultipartCollections {
    static let uploads = "_storage_s3_uploads"
    static let parts = "_storage_s3_parts"
    static let all: [JSONValue] = [
        AuthCollections.schema(uploads, key: "id", [
            "id": AuthCollections.field("text", nullable: false), "bucket_id": AuthCollections.field("text", nullable: false),
            "name": AuthCollections.field("text", nullable: false), "mime_type": AuthCollections.field("text", nullable: false),
            "cache_control": AuthCollections.field("text", nullable: false), "metadata": AuthCollections.field("json"),
            "owner": AuthCollections.field("text"), "created_s": AuthCollections.field("int", nullable: false),
            "bytes": AuthCollections.field("int", nullable: false),
        ], [AuthCollections.index("by_bucket", ["bucket_id", "name"])]),
        AuthCollections.schema(parts, key: "id", [
            "id": AuthCollections.field("text", nullable: false), "upload_id": AuthCollections.field("text", nullable: false),
            "part_number": AuthCollections.field("int", nullable: false), "sha256": AuthCollections.field("text", nullable: false),
            "size": AuthCollections.field("int", nullable: false), "etag": AuthCollections.field("text", nullable: false),
        ], [AuthCollections.index("by_upload", ["upload_id", "part_number"]), AuthCollections.index("by_sha256", ["sha256"])]),
    ]

    /// Whether a pending part names this blob (BlobCollector: ST3 for parts).
    static func referenced(_ sha: String, _ snapshot: Snapshot) throws -> Bool {
        !(try snapshot.rowsIfPresent(Query(collection: parts, filter: .compare(field: "sha256", op: .eq, value: .string(sha)), limit: 1))).isEmpty
    }
}

struct S3Multipart {
    let ops: S3Operations
    var service: StorageService { ops.service }
    var auth: S3Auth { ops.auth }

    func ensure() async throws { try await SystemCollections.ensure(S3MultipartCollections.all, in: service.database) }

    static func partID(_ upload: String, _ n: Int) -> String { upload + "/" + String(format: "%05d", n) }

    /// The upload named by `uploadId`, for this bucket and key, not expired, the caller's.
    func upload(_ snapshot: Snapshot) throws -> Document {
        guard let id = auth.q("uploadId"), id.utf8.count <= 64,
              let row = try snapshot.documentIfPresent(S3MultipartCollections.uploads, key: .string(id)),
              row["bucket_id"]?.stringValue == ops.bucket, row["name"]?.stringValue == ops.key,
              (row["created_s"]?.intValue ?? 0) + S3MultipartLimits.uploadSeconds > service.nowSeconds else { throw S3Error.noSuchUpload }
        if !ops.caller.isService, row["owner"]?.stringValue != ops.caller.userID { throw S3Error.noSuchUpload }
        return row
    }

    func parts(_ uploadID: String, _ snapshot: Snapshot) throws -> [Document] {
        try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.parts,
                                         filter: .compare(field: "upload_id", op: .eq, value: .string(uploadID)),
                                         order: [Sort(field: "part_number")], limit: S3MultipartLimits.partsMax))
    }

    func description(_ row: Document) -> StorageService.Upload {
        StorageService.Upload(bucket: ops.bucket, name: ops.key, mime: row["mime_type"]?.stringValue ?? "application/octet-stream",
                              cacheControl: row["cache_control"]?.stringValue ?? "3600", metadata: row["metadata"] ?? .null,
                              upsert: true, owner: row["owner"]?.stringValue)
    }

    // MARK: Create

    func create() async throws -> Response {
        try await ensure()
        let upload = try ops.uploadDescription()
        _ = try service.precheck(upload, caller: ops.caller, signedUpload: false)
        try await expireOld()
        let snapshot = service.database.snapshot()
        let pending = try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.uploads, limit: S3MultipartLimits.uploadsMax + 1))
        guard pending.count < S3MultipartLimits.uploadsMax else {
            throw S3Error(503, "SlowDown", "at most \(S3MultipartLimits.uploadsMax) pending multipart uploads per node; complete or abort some",
                          aero: "AERO_S3_TOO_MANY_UPLOADS")
        }
        let id = S3Keys.randomText(32, alphabet: "0123456789abcdef")
        let doc: Document = ["id": .string(id), "bucket_id": .string(ops.bucket), "name": .string(ops.key), "mime_type": .string(upload.mime),
                             "cache_control": .string(upload.cacheControl), "metadata": upload.metadata,
                             "owner": upload.owner.map(JSONValue.string) ?? .null, "created_s": .int(service.nowSeconds), "bytes": .int(0)]
        let lsn = try await service.database.commit([.insert(collection: S3MultipartCollections.uploads, document: doc)]).lsn
        return ops.xml("InitiateMultipartUploadResult", [.leaf("Bucket", ops.bucket), .leaf("Key", ops.key), .leaf("UploadId", id)],
                       headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    /// Drops uploads past their lifetime (their part blobs are then collected): one bounded
    /// pass of the periodic expiry (S3MultipartExpiry), also run here so a full table frees room.
    func expireOld() async throws {
        _ = try await S3MultipartExpiry.pass(service, nowSeconds: service.nowSeconds)
    }

    @discardableResult
    func drop(_ id: String, _ snapshot: Snapshot) async throws -> UInt64 {
        // The parts are matched when the transaction applies, not taken from `snapshot`: a part
        // committed since (an UploadPart racing this Abort/Complete) goes too, never left as a row
        // of an upload that no longer exists. A part committed after this fails (its upload
        // update finds no row: NoSuchUpload).
        _ = snapshot
        return try await service.database.commit(S3MultipartExpiry.dropUploads([.string(id)])).lsn
    }

    // MARK: Parts

    func partNumber() throws -> Int {
        guard let t = auth.q("partNumber"), let n = Int(t), n >= 1, n <= S3MultipartLimits.partsMax else {
            throw S3Error.invalidArgument("Part number must be an integer between 1 and \(S3MultipartLimits.partsMax), inclusive")
        }
        return n
    }

    func uploadPart() async throws -> Response {
        try await ensure()
        let number = try partNumber()
        let snapshot = service.database.snapshot()
        let up = try upload(snapshot)
        let uploadID = up["id"]?.stringValue ?? ""
        let bucketDoc = try service.requireBucket(ops.bucket, snapshot)
        let limit = service.limit(of: bucketDoc)
        let existing = try parts(uploadID, snapshot)
        let others = existing.filter { $0["part_number"]?.intValue != Int64(number) }.reduce(Int64(0)) { $0 + ($1["size"]?.intValue ?? 0) }
        let room = limit - others
        guard room > 0 else { throw S3Error.entityTooLarge(limit) }
        let pending = try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.uploads, limit: S3MultipartLimits.uploadsMax + 1))
            .reduce(Int64(0)) { $0.addingReportingOverflow($1["bytes"]?.intValue ?? 0).partialValue }
        guard pending < S3MultipartLimits.pendingBytesMax else {
            throw S3Error(503, "SlowDown", "the node's pending multipart bytes reached \(S3MultipartLimits.pendingBytesMax); complete or abort uploads",
                          aero: "AERO_S3_TOO_MANY_UPLOADS")
        }
        let sha: String, size: Int64
        var checksum: (String, String)?
        if let source = auth.headers["x-amz-copy-source"] {
            (sha, size) = try await copyPart(source, limit: room)
        } else {
            (sha, size, checksum) = try await S3Body.toBlob(ops.request, auth, service: service, limit: room)
        }
        try await service.replicator.push(sha)  // durable on the replicas per the commit mode, like any upload
        let etag = "\"\(sha.prefix(32))\""
        let part: Document = ["id": .string(Self.partID(uploadID, number)), "upload_id": .string(uploadID), "part_number": .int(Int64(number)),
                              "sha256": .string(sha), "size": .int(size), "etag": .string(etag)]
        let replaced = existing.contains { $0["part_number"]?.intValue == Int64(number) }
        let lsn: UInt64
        do {
            lsn = try await service.database.commit([
                replaced ? .update(collection: S3MultipartCollections.parts, target: .key(part["id"]!), set: part.filter { $0.key != "id" })
                    : .insert(collection: S3MultipartCollections.parts, document: part),
                .update(collection: S3MultipartCollections.uploads, target: .key(.string(uploadID)), set: ["bytes": .int(others + size)]),
            ]).lsn
        } catch let error as AeroError where error.code == .documentNotFound {
            // The upload was aborted, completed or expired while this part streamed: the part
            // row is not written (the transaction is all or nothing) and its blob is collected.
            throw S3Error.noSuchUpload
        }
        if auth.headers["x-amz-copy-source"] != nil {
            return ops.xml("CopyPartResult", [.leaf("LastModified", S3Operations.iso(service.now)), .leaf("ETag", etag)],
                           headers: [HTTPJSON.lsnHeader: String(lsn)])
        }
        var headers: HTTPFields = [.eTag: etag, HTTPJSON.lsnHeader: String(lsn)]
        if let (name, value) = checksum, let field = HTTPField.Name(name) { headers[field] = value }
        return Response(status: .ok, headers: headers)
    }

    /// UploadPartCopy: a byte range (x-amz-copy-source-range) of a visible object as a new part blob.
    func copyPart(_ header: String, limit: Int64) async throws -> (String, Int64) {
        let (fromBucket, fromKey) = try S3Operations.copySource(header)
        let row = try ops.visibleObject(fromBucket, try StorageNames.object(fromKey), service.database.snapshot())
        guard let sha = row["sha256"]?.stringValue, let reader = try service.blobs.reader(sha) else { throw S3Error.noSuchKey }
        let size = reader.size
        var start: Int64 = 0, end = size
        if let range = auth.headers["x-amz-copy-source-range"] {
            switch StorageAPI.parseRange(range, size: size) {
            case .part(let a, let b): start = a; end = b
            case .whole: throw S3Error.invalidArgument("x-amz-copy-source-range must be bytes=first-last")
            case .unsatisfiable: throw S3Error.invalidRange(size)
            }
        }
        guard end - start <= limit else { throw S3Error.entityTooLarge(limit) }
        let writer = try service.blobs.writer(limitBytes: limit)
        do {
            var offset = start
            while offset < end {
                let chunk = try reader.read(at: offset, count: Int(min(Int64(StorageLimits.chunkBytes), end - offset)))
                guard !chunk.isEmpty else { break }
                try writer.write(chunk)
                offset += Int64(chunk.count)
            }
        } catch {
            writer.abort()
            throw error
        }
        return try writer.finish()
    }

    // MARK: Complete, abort

    func complete() async throws -> Response {
        try await ensure()
        let body = try await S3Body.collect(ops.request, auth)
        let snapshot = service.database.snapshot()
        let up = try upload(snapshot)
        let uploadID = up["id"]?.stringValue ?? ""
        let root = try S3XML.parse(body)
        guard root.name == "CompleteMultipartUpload" else { throw S3Error.malformedXML("the body must be a <CompleteMultipartUpload> document") }
        let listed = root.all("Part")
        guard !listed.isEmpty, listed.count <= S3MultipartLimits.partsMax else {
            throw S3Error.malformedXML("name 1 to \(S3MultipartLimits.partsMax) parts")
        }
        let stored = Dictionary(try parts(uploadID, snapshot).map { (Int($0["part_number"]?.intValue ?? 0), $0) }, uniquingKeysWith: { a, _ in a })
        var chosen: [Document] = []
        var previous = 0
        for p in listed {
            guard let n = p.child("PartNumber").flatMap({ Int($0.text.trimmingCharacters(in: .whitespaces)) }) else {
                throw S3Error.malformedXML("a <Part> has no <PartNumber>")
            }
            guard n > previous else { throw S3Error.invalidPartOrder }
            previous = n
            guard let row = stored[n] else { throw S3Error.invalidPart("part \(n) was not uploaded") }
            if let etag = p.child("ETag")?.text {
                let a = etag.trimmingCharacters(in: CharacterSet(charactersIn: "\" ")), b = (row["etag"]?.stringValue ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                guard a == b else { throw S3Error.invalidPart("the ETag of part \(n) does not match") }
            }
            chosen.append(row)
        }
        let description = description(up)
        let bucketDoc = try service.precheck(description, caller: ops.caller, signedUpload: false)
        let limit = service.limit(of: bucketDoc)
        let total = chosen.reduce(Int64(0)) { $0 + ($1["size"]?.intValue ?? 0) }
        guard total <= limit else { throw S3Error.entityTooLarge(limit) }
        // The object's bytes: the parts in order, one new blob (ST1), then pushed (replicas).
        let writer = try service.blobs.writer(limitBytes: limit)
        do {
            for part in chosen {
                let sha = part["sha256"]?.stringValue ?? ""
                var reader = try service.blobs.reader(sha)
                if reader == nil, try await service.replicator.fetch(sha) { reader = try service.blobs.reader(sha) }
                guard let reader else { throw S3Error.invalidPart("the bytes of part \(part["part_number"]?.intValue ?? 0) are not on this node") }
                var offset: Int64 = 0
                while true {
                    let chunk = try reader.read(at: offset, count: StorageLimits.chunkBytes)
                    if chunk.isEmpty { break }
                    try writer.write(chunk)
                    offset += Int64(chunk.count)
                }
            }
        } catch {
            writer.abort()
            throw error
        }
        let (sha, size) = try writer.finish()
        try await service.replicator.push(sha)
        let (row, lsn) = try await service.commitUpload(description, sha256: sha, size: size)
        // ST7: the object row is committed; the upload's rows go (a crash here leaves an upload
        // that expires; the object is already whole).
        try await drop(uploadID, service.database.snapshot())
        return ops.xml("CompleteMultipartUploadResult", [
            .leaf("Location", "\(S3API.prefix)/\(ops.bucket)/\(ops.key)"), .leaf("Bucket", ops.bucket), .leaf("Key", ops.key),
            .leaf("ETag", row["etag"]?.stringValue ?? ""),
        ], headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    func abort() async throws -> Response {
        try await ensure()
        let snapshot = service.database.snapshot()
        let up = try upload(snapshot)
        let lsn = try await drop(up["id"]?.stringValue ?? "", snapshot)
        return Response(status: .noContent, headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    // MARK: Listing

    func listParts() throws -> Response {
        let snapshot = service.database.snapshot()
        let up = try upload(snapshot)
        let uploadID = up["id"]?.stringValue ?? ""
        var maxParts = S3MultipartLimits.listMax
        if let m = auth.q("max-parts") {
            guard let n = Int(m), n >= 0 else { throw S3Error.invalidArgument("max-parts must be a non-negative integer") }
            maxParts = min(n, S3MultipartLimits.listMax)
        }
        let marker = Int(auth.q("part-number-marker") ?? "0") ?? 0
        let all = try parts(uploadID, snapshot).filter { Int($0["part_number"]?.intValue ?? 0) > marker }
        let page = Array(all.prefix(maxParts))
        var children: [S3XMLNode] = [.leaf("Bucket", ops.bucket), .leaf("Key", ops.key), .leaf("UploadId", uploadID),
                                     .leaf("PartNumberMarker", String(marker)), .leaf("MaxParts", String(maxParts)),
                                     .leaf("IsTruncated", all.count > page.count ? "true" : "false"), .leaf("StorageClass", "STANDARD")]
        if all.count > page.count, let last = page.last?["part_number"]?.intValue { children.append(.leaf("NextPartNumberMarker", String(last))) }
        for p in page {
            children.append(.node("Part", [.leaf("PartNumber", String(p["part_number"]?.intValue ?? 0)), .leaf("ETag", p["etag"]?.stringValue ?? ""),
                                           .leaf("Size", String(p["size"]?.intValue ?? 0)), .leaf("LastModified", S3Operations.iso(service.now))]))
        }
        return ops.xml("ListPartsResult", children)
    }

    func listUploads() throws -> Response {
        let snapshot = service.database.snapshot()
        _ = try service.requireBucket(ops.bucket, snapshot)
        let prefix = auth.q("prefix") ?? ""
        let rows = try snapshot.rowsIfPresent(Query(collection: S3MultipartCollections.uploads,
                                                    filter: .compare(field: "bucket_id", op: .eq, value: .string(ops.bucket)),
                                                    order: [Sort(field: "name")], limit: S3MultipartLimits.listMax))
            .filter { ($0["name"]?.stringValue ?? "").hasPrefix(prefix) && (ops.caller.isService || $0["owner"]?.stringValue == ops.caller.userID)
                && ($0["created_s"]?.intValue ?? 0) + S3MultipartLimits.uploadSeconds > service.nowSeconds }
        var children: [S3XMLNode] = [.leaf("Bucket", ops.bucket), .leaf("Prefix", prefix), .leaf("MaxUploads", String(S3MultipartLimits.listMax)),
                                     .leaf("IsTruncated", "false")]
        for r in rows {
            children.append(.node("Upload", [.leaf("Key", r["name"]?.stringValue ?? ""), .leaf("UploadId", r["id"]?.stringValue ?? ""),
                                             .leaf("StorageClass", "STANDARD"),
                                             .leaf("Initiated", S3Operations.httpISO(seconds: r["created_s"]?.intValue ?? 0))]))
        }
        return ops.xml("ListMultipartUploadsResult", children)
    }
}

extension S3Operations {
    static func httpISO(seconds: Int64) -> String { S3Dates.iso8601(micros: seconds.multipliedReportingOverflow(by: 1_000_000).partialValue) }
}
