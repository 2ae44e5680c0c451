// `/storage/v1`: Supabase Storage's HTTP surface for the official clients (storage3,
// storage-js): buckets, objects (upload raw or multipart, download with Range/ETag, list,
// info, move, copy, remove), signed URLs, public URLs, storage policies; plus the internal blob
// routes between cluster members (BlobReplicator). Errors: StorageError's shape.
// Writes are forwarded to the primary by ClusterMiddleware (uploads as a stream).

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public enum StorageAPI {
    public static func register(on router: Router<AeroRequestContext>, service: StorageService, keys: KeyChecker) {
        let s = router.group("storage/v1")
        @Sendable func run(_ request: Request, _ body: () async throws -> Response) async -> Response {
            do { return try await body() } catch { return StorageError.from(error).response }
        }
        @Sendable func caller(_ request: Request) throws -> Caller {
            do { return try keys.caller(request) } catch let error as AeroError { throw StorageError(400, "Error", error.message, code: error.code.rawValue) }
        }
        @Sendable func json(_ value: JSONValue, lsn: UInt64? = nil) -> Response { HTTPJSON.response(value, lsn: lsn) }
        @Sendable func rest(_ context: AeroRequestContext) throws -> String {
            let parts = context.parameters.getCatchAll().map { String($0).removingPercentEncoding ?? String($0) }
            return try StorageNames.object(parts.joined(separator: "/"))
        }

        // Buckets
        s.get("bucket") { request, _ in
            await run(request) {
                let c = try caller(request)
                let rows = try service.database.snapshot().rowsIfPresent(Query(collection: StorageCollections.buckets,
                                                                                order: [Sort(field: "id")], limit: StorageLimits.bucketsMax))
                // Non-service callers see public buckets only (bucket rows are not theirs to browse).
                return json(.array(rows.filter { c.isService || $0["public"] == .bool(true) }.map(StorageService.bucketJSON)))
            }
        }
        s.get("bucket/:id") { request, context in
            await run(request) {
                let c = try caller(request)
                let b = try service.requireBucket(try context.parameters.require("id"), service.database.snapshot())
                guard c.isService || b["public"] == .bool(true) else { throw StorageError.bucketNotFound }
                return json(StorageService.bucketJSON(b))
            }
        }
        s.post("bucket") { request, _ in
            await run(request) {
                let c = try caller(request)
                let body = try await HTTPJSON.body(request)
                let lsn = try await service.createBucket(body, caller: c)
                return json(.object(["name": body["id"] ?? body["name"] ?? .null]), lsn: lsn)
            }
        }
        s.put("bucket/:id") { request, context in
            await run(request) {
                let lsn = try await service.updateBucket(try context.parameters.require("id"), try await HTTPJSON.body(request), caller: try caller(request))
                return json(.object(["message": .string("Successfully updated")]), lsn: lsn)
            }
        }
        s.post("bucket/:id/empty") { request, context in
            await run(request) {
                let lsn = try await service.emptyBucket(try context.parameters.require("id"), caller: try caller(request))
                return json(.object(["message": .string("Successfully emptied")]), lsn: lsn)
            }
        }
        s.delete("bucket/:id") { request, context in
            await run(request) {
                let lsn = try await service.deleteBucket(try context.parameters.require("id"), caller: try caller(request))
                return json(.object(["message": .string("Successfully deleted")]), lsn: lsn)
            }
        }

        // Object listing, info, batch operations
        s.post("object/list/:bucket") { request, context in
            await run(request) {
                let c = try caller(request)
                let body = try await HTTPJSON.optionalBody(request) ?? .object([:])
                return json(try service.list(bucket: try context.parameters.require("bucket"), body: body, caller: c))
            }
        }
        s.post("object/list-v2/:bucket") { request, context in
            await run(request) {
                let c = try caller(request)
                let body = try await HTTPJSON.optionalBody(request) ?? .object([:])
                return json(try service.listV2(bucket: try context.parameters.require("bucket"), body: body, caller: c))
            }
        }
        for prefix in ["object/info/:bucket/**", "object/info/authenticated/:bucket/**", "object/info/public/:bucket/**"] {
            s.get(RouterPath(prefix)) { request, context in
                await run(request) {
                    let bucketID = try context.parameters.require("bucket")
                    let name = try rest(context)
                    let snapshot = service.database.snapshot()
                    let b = try service.requireBucket(bucketID, snapshot)
                    let c: Caller? = prefix.contains("/public/") ? nil : try caller(request)
                    guard let row = try service.object(bucketID, name, snapshot) else { throw StorageError.objectNotFound }
                    if let c {
                        guard service.access.allows(c, .select, row: row, bucket: b, snapshot: snapshot) else { throw StorageError.objectNotFound }
                    } else if b["public"] != .bool(true) { throw StorageError.bucketNotFound }
                    return json(StorageService.infoJSON(row))
                }
            }
        }
        s.delete("object/:bucket") { request, context in
            await run(request) {
                let c = try caller(request)
                let body = try await HTTPJSON.body(request)
                guard case .array(let items)? = body["prefixes"] else { throw StorageError.invalid("prefixes must be a list of object names") }
                let paths = try items.map { (item: JSONValue) -> String in
                    guard case .string(let p) = item else { throw StorageError.invalid("prefixes must be strings") }
                    return p
                }
                let (rows, lsn) = try await service.remove(bucket: try context.parameters.require("bucket"), paths: paths, caller: c)
                return json(.array(rows.map(StorageService.infoJSON)), lsn: lsn)
            }
        }
        s.post("object/move") { request, _ in
            await run(request) {
                let (_, lsn) = try await service.moveOrCopy(try await HTTPJSON.body(request), copy: false, caller: try caller(request))
                return json(.object(["message": .string("Successfully moved")]), lsn: lsn)
            }
        }
        s.post("object/copy") { request, _ in
            await run(request) {
                let (key, lsn) = try await service.moveOrCopy(try await HTTPJSON.body(request), copy: true, caller: try caller(request))
                return json(.object(["Key": .string(key)]), lsn: lsn)
            }
        }

        // Image transformations: not built (public, authenticated and signed render URLs).
        s.get("render/image/**") { request, _ in
            await run(request) { throw StorageError.transformUnsupported }
        }

        // Signed URLs
        s.post("object/sign/:bucket/**") { request, context in
            await run(request) {
                let c = try caller(request)
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                let body = try await HTTPJSON.body(request)
                // A signed URL with `transform` would name a render URL that is not built.
                if let t = body["transform"], t != .null { throw StorageError.transformUnsupported }
                let expires = try expiresIn(body["expiresIn"])
                let url = try sign(service, caller: c, bucket: bucketID, name: name, expiresIn: expires)
                return json(.object(["signedURL": .string(url)]))
            }
        }
        s.post("object/sign/:bucket") { request, context in
            await run(request) {
                let c = try caller(request)
                let bucketID = try context.parameters.require("bucket")
                let body = try await HTTPJSON.body(request)
                let expires = try expiresIn(body["expiresIn"])
                guard case .array(let paths)? = body["paths"], paths.count <= StorageLimits.batchPathsMax else {
                    throw StorageError.invalid("paths must be a list of at most \(StorageLimits.batchPathsMax) object names")
                }
                _ = try service.requireBucket(bucketID, service.database.snapshot())
                return json(.array(paths.map { path in
                    let p = path.stringValue ?? ""
                    do {
                        let url = try sign(service, caller: c, bucket: bucketID, name: try StorageNames.object(p), expiresIn: expires)
                        return .object(["error": .null, "path": .string(p), "signedURL": .string(url)])
                    } catch {
                        return .object(["error": .string(StorageError.from(error).message), "path": .string(p), "signedURL": .null])
                    }
                }))
            }
        }
        s.post("object/upload/sign/:bucket/**") { request, context in
            await run(request) {
                let c = try caller(request)
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                let upsert = request.headers[HTTPField.Name("x-upsert")!]?.lowercased() == "true"
                let upload = StorageService.Upload(bucket: bucketID, name: name, mime: "application/octet-stream", cacheControl: "3600",
                                                   metadata: .null, upsert: upsert, owner: c.userID)
                // The issuer must be allowed to write there now (the token then stands in for it).
                _ = try service.precheckAccessOnly(upload, caller: c)
                let token = StorageSignedURL(kind: .upload, bucket: bucketID, name: name,
                                             expires: service.nowSeconds + StorageLimits.signedUploadSeconds, upsert: upsert,
                                             owner: c.userID).token(secret: service.secret)
                let path = "/object/upload/sign/\(encode(bucketID))/\(encode(name))?token=\(token)"
                return json(.object(["url": .string(path), "token": .string(token)]))
            }
        }
        s.put("object/upload/sign/:bucket/**") { request, context in
            await run(request) {
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                guard let token = request.uri.queryParameters.get("token") else { throw StorageError.invalidSignature("token required") }
                let signed = try StorageSignedURL.verify(token, kind: .upload, bucket: bucketID, name: name, secret: service.secret,
                                                         nowSeconds: service.nowSeconds)
                return try await upload(service, request, caller: nil, bucket: bucketID, name: name, upsert: signed.upsert, owner: signed.owner)
            }
        }

        // Uploads
        s.post("object/:bucket/**") { request, context in
            await run(request) {
                let c = try caller(request)
                let upsert = request.headers[HTTPField.Name("x-upsert")!]?.lowercased() == "true"
                return try await upload(service, request, caller: c, bucket: try context.parameters.require("bucket"), name: try rest(context),
                                        upsert: upsert, owner: c.userID)
            }
        }
        s.put("object/:bucket/**") { request, context in
            await run(request) {
                let c = try caller(request)
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                guard try service.object(bucketID, name, service.database.snapshot()) != nil else { throw StorageError.objectNotFound }
                return try await upload(service, request, caller: c, bucket: bucketID, name: name, upsert: true, owner: c.userID)
            }
        }

        // Downloads
        for prefix in ["object/:bucket/**", "object/authenticated/:bucket/**"] {
            s.get(RouterPath(prefix)) { request, context in
                await run(request) {
                    let c = try caller(request)
                    let bucketID = try context.parameters.require("bucket")
                    let name = try rest(context)
                    let snapshot = service.database.snapshot()
                    let b = try service.requireBucket(bucketID, snapshot)
                    guard let row = try service.object(bucketID, name, snapshot),
                          service.access.allows(c, .select, row: row, bucket: b, snapshot: snapshot) else { throw StorageError.objectNotFound }
                    return try await download(service, request, row)
                }
            }
        }
        s.get("object/public/:bucket/**") { request, context in
            await run(request) {
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                let snapshot = service.database.snapshot()
                guard let b = try service.bucket(try StorageNames.bucket(bucketID), snapshot), b["public"] == .bool(true) else {
                    throw StorageError(400, "Bucket not found", "Bucket not found", code: "AERO_STORAGE_BUCKET_NOT_FOUND")
                }
                guard let row = try service.object(bucketID, name, snapshot) else { throw StorageError.objectNotFound }
                return try await download(service, request, row)
            }
        }
        s.get("object/sign/:bucket/**") { request, context in
            await run(request) {
                let bucketID = try context.parameters.require("bucket")
                let name = try rest(context)
                guard let token = request.uri.queryParameters.get("token") else { throw StorageError.invalidSignature("token required") }
                _ = try StorageSignedURL.verify(token, kind: .download, bucket: bucketID, name: name, secret: service.secret,
                                                nowSeconds: service.nowSeconds)
                guard let row = try service.object(bucketID, name, service.database.snapshot()) else { throw StorageError.objectNotFound }
                return try await download(service, request, row)
            }
        }

        // TUS resumable uploads (ResumableAPI)
        ResumableAPI.register(on: s, service: service, keys: keys)

        // Storage policies (service role)
        s.get("policies") { request, _ in
            await run(request) {
                try service.access.requireService(try caller(request))
                let rows = try service.database.snapshot().rowsIfPresent(Query(collection: StorageCollections.policies, limit: StorageAccess.policiesMax))
                return json(.array(rows.map { .object($0) }))
            }
        }
        s.post("policies") { request, _ in
            await run(request) {
                try service.access.requireService(try caller(request))
                let (doc, lsn) = try await service.access.create(try await HTTPJSON.body(request), service: service)
                var response = json(.object(doc), lsn: lsn)
                response.status = .created
                return response
            }
        }
        s.delete("policies/:name") { request, context in
            await run(request) {
                try service.access.requireService(try caller(request))
                let name = try context.parameters.require("name")
                guard try service.database.snapshot().documentIfPresent(StorageCollections.policies, key: .string(name)) != nil else {
                    throw StorageError(404, "not_found", "no storage policy \(name)", code: "AERO_NOT_FOUND")
                }
                let lsn = try await service.database.commit([.delete(collection: StorageCollections.policies, target: .key(.string(name)))]).lsn
                return json(.object(["lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }

        // Between cluster members (BlobReplicator): service role only, never forwarded.
        s.put("internal/blob/:sha") { request, context in
            await run(request) {
                try service.access.requireService(try caller(request))
                let sha = try context.parameters.require("sha")
                guard BlobStore.isHash(sha) else { throw StorageError.invalid("not a blob name") }
                let writer = try service.blobs.writer(limitBytes: service.objectBytesMax)
                do {
                    for try await chunk in request.body { try chunk.withUnsafeReadableBytes { try writer.write($0) } }
                } catch {
                    writer.abort()
                    throw error
                }
                let (stored, size) = try writer.finish()
                guard stored == sha else { throw StorageError.invalid("the bytes hash to \(stored), not \(sha)") }
                return json(.object(["sha256": .string(stored), "size": .int(size)]))
            }
        }
        s.get("internal/blob/:sha") { request, context in
            await run(request) {
                try service.access.requireService(try caller(request))
                let sha = try context.parameters.require("sha")
                guard let reader = try service.blobs.reader(sha) else { throw StorageError.objectNotFound }
                let size = reader.size
                return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                                body: ResponseBody(asyncSequence: BlobChunks(reader: reader, start: 0, end: size)))
            }
        }
    }

    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// `expiresIn` arrives as a string ("60") or a number; 1 second to a year.
    static func expiresIn(_ value: JSONValue?) throws -> Int64 {
        let n: Int64?
        switch value {
        case .int(let i)?: n = i
        case .float(let d)? where d.isFinite && d >= 1 && d <= Double(StorageLimits.signedURLSecondsMax): n = Int64(d)
        case .string(let s)?: n = Int64(s.trimmingCharacters(in: .whitespaces))
        default: n = nil
        }
        guard let n, n >= 1, n <= StorageLimits.signedURLSecondsMax else {
            throw StorageError.invalid("expiresIn must be 1 to \(StorageLimits.signedURLSecondsMax) seconds")
        }
        return n
    }

    static func sign(_ service: StorageService, caller: Caller, bucket: String, name: String, expiresIn: Int64) throws -> String {
        let snapshot = service.database.snapshot()
        let b = try service.requireBucket(bucket, snapshot)
        guard let row = try service.object(bucket, name, snapshot),
              service.access.allows(caller, .select, row: row, bucket: b, snapshot: snapshot) else { throw StorageError.objectNotFound }
        let (expires, _) = service.nowSeconds.addingReportingOverflow(expiresIn)
        let token = StorageSignedURL(kind: .download, bucket: bucket, name: name, expires: expires).token(secret: service.secret)
        return "/object/sign/\(encode(bucket))/\(encode(name))?token=\(token)"
    }

    // MARK: Upload

    static func upload(_ service: StorageService, _ request: Request, caller: Caller?, bucket: String, name: String, upsert: Bool,
                       owner: String?) async throws -> Response {
        let contentType = request.headers[.contentType] ?? "application/octet-stream"
        let boundary = MultipartParser.boundary(of: contentType)
        // Raw bodies: the header's type, cache-control and base64 JSON `x-metadata`.
        var mime = boundary == nil ? try StorageNames.mime(contentType) : "text/plain;charset=UTF-8"
        var cacheControl = boundary == nil ? (request.headers[.cacheControl].map(Self.maxAge) ?? "3600") : "3600"
        var metadata: JSONValue = .null
        if boundary == nil, let header = request.headers[HTTPField.Name("x-metadata")!] {
            metadata = try parseMetadata(Data(base64Encoded: header).map { Array($0) } ?? [])
        }
        let probe = StorageService.Upload(bucket: bucket, name: name, mime: mime, cacheControl: cacheControl, metadata: metadata,
                                          upsert: upsert, owner: owner)
        let bucketDoc = try service.precheck(probe, caller: caller, signedUpload: caller == nil)
        let limit = service.limit(of: bucketDoc)
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }), boundary == nil, length > limit {
            throw StorageError.tooLarge(limit)
        }
        let writer = try service.blobs.writer(limitBytes: limit)
        do {
            if let boundary {
                var parser = MultipartParser(boundary: boundary)
                var current: String?
                var field: [UInt8] = []
                var sawFile = false
                func close(_ name: String?) throws {
                    guard let name else { return }
                    if name == "cacheControl" { cacheControl = maxAge(String(decoding: field, as: UTF8.self)) }
                    if name == "metadata" { metadata = try parseMetadata(field) }
                    field = []
                }
                for try await chunk in request.body {
                    for event in try parser.feed(chunk.readableBytesView) {
                        switch event {
                        case .part(let partName, let filename, let partType):
                            try close(current == "file" ? nil : current)
                            current = partName
                            if partName == "file" || filename != nil {
                                guard !sawFile else { throw StorageError.invalid("one file per upload") }
                                sawFile = true
                                current = "file"
                                if let partType { mime = try StorageNames.mime(partType) }
                                try service.checkMime(mime, bucketDoc)
                            }
                        case .data(let bytes):
                            if current == "file" {
                                try writer.write(bytes)
                            } else {
                                field.append(contentsOf: bytes)
                                guard field.count <= StorageLimits.multipartFieldBytesMax else { throw StorageError.invalid("a form field is too long") }
                            }
                        }
                    }
                }
                try parser.finish()
                try close(current == "file" ? nil : current)
                guard sawFile else { throw StorageError.invalid("the form has no file part") }
            } else {
                for try await chunk in request.body { try chunk.withUnsafeReadableBytes { try writer.write($0) } }
            }
        } catch {
            writer.abort()
            throw error
        }
        let (sha, size) = try writer.finish()  // ST1: durable before the row names it
        try await service.replicator.push(sha)   // sync/all: durable on the replicas too
        let final = StorageService.Upload(bucket: bucket, name: name, mime: mime, cacheControl: cacheControl, metadata: metadata,
                                          upsert: upsert, owner: owner)
        let (row, lsn) = try await service.commitUpload(final, sha256: sha, size: size)
        return HTTPJSON.response(.object(["Key": .string("\(bucket)/\(name)"), "Id": row["id"] ?? .null, "id": row["id"] ?? .null,
                                          "path": .string(name), "fullPath": .string("\(bucket)/\(name)")]), lsn: lsn)
    }

    /// `max-age=60` or `60` → "60".
    static func maxAge(_ text: String) -> String {
        let t = text.trimmingCharacters(in: .whitespaces)
        let digits = t.hasPrefix("max-age=") ? String(t.dropFirst(8)) : t
        guard let n = Int64(digits.prefix(while: { $0.isNumber })), n >= 0 else { return "3600" }
        return String(n)
    }

    static func parseMetadata(_ bytes: [UInt8]) throws -> JSONValue {
        guard !bytes.isEmpty else { return .null }
        guard bytes.count <= StorageLimits.metadataBytesMax else { throw StorageError.invalid("metadata is larger than \(StorageLimits.metadataBytesMax) bytes") }
        guard let value = try? JSON.parse(bytes), case .object = value else { throw StorageError.invalid("metadata must be a JSON object") }
        return value
    }

    // MARK: Download

    static func download(_ service: StorageService, _ request: Request, _ row: Document) async throws -> Response {
        guard let sha = row["sha256"]?.stringValue else { throw StorageError.objectNotFound }
        var reader = try service.blobs.reader(sha)
        if reader == nil {
            // A replica that missed the push fetches the bytes from the primary first.
            if try await service.replicator.fetch(sha) { reader = try service.blobs.reader(sha) }
        }
        guard let reader else { throw StorageError.replicaBlob("this node does not hold the object's bytes yet and could not fetch them; retry") }
        let size = reader.size
        let etag = row["etag"]?.stringValue ?? "\"\(sha.prefix(32))\""
        var headers: HTTPFields = [.contentType: row["mime_type"]?.stringValue ?? "application/octet-stream",
                                   .eTag: etag, .acceptRanges: "bytes",
                                   .cacheControl: "max-age=\(row["cache_control"]?.stringValue ?? "3600")"]
        if let modified = row["updated_at"]?.stringValue { headers[.lastModified] = modified }
        if let download = request.uri.queryParameters.get("download") {
            let filename = download.isEmpty ? String((row["name"]?.stringValue ?? "file").split(separator: "/").last ?? "file") : download
            let safe = filename.filter { $0 != "\"" && $0 != "\\" && !$0.isNewline }
            headers[.contentDisposition] = "attachment; filename=\"\(safe)\""
        }
        if let match = request.headers[.ifNoneMatch], match.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }).contains(where: { $0 == etag || $0 == "*" || $0 == "W/" + etag }) {
            return Response(status: .notModified, headers: headers)
        }
        guard let span = byteSpan(request.headers[.range], size: size) else {
            var r = StorageError(416, "InvalidRange", "the range is not satisfiable for \(size) bytes", code: "AERO_STORAGE_INVALID_RANGE").response
            r.headers[.contentRange] = "bytes */\(size)"
            return r
        }
        let (start, end) = (span.start, span.end)
        let status: HTTPResponse.Status = span.contentRange == nil ? .ok : .partialContent
        if let cr = span.contentRange { headers[.contentRange] = cr }
        headers[.contentLength] = String(end - start)
        let chunks = BlobChunks(reader: reader, start: start, end: end)
        return Response(status: status, headers: headers,
                        body: ResponseBody(contentLength: Int(end - start)) { writer in
                            for try await chunk in chunks { try await writer.write(chunk) }
                            try await writer.finish(nil)
                        })
    }

    enum RangeAnswer: Equatable { case whole, part(Int64, Int64), unsatisfiable }

    /// The bytes [start, end) a GET answers for an optional `Range` header (`/storage/v1` and the
    /// S3 endpoint): the whole object (contentRange nil: 200), one part (its Content-Range: 206),
    /// nil when unsatisfiable (416).
    static func byteSpan(_ header: String?, size: Int64) -> (start: Int64, end: Int64, contentRange: String?)? {
        guard let header else { return (0, size, nil) }
        switch parseRange(header, size: size) {
        case .whole: return (0, size, nil)
        case .part(let a, let b): return (a, b, "bytes \(a)-\(b - 1)/\(size)")
        case .unsatisfiable: return nil
        }
    }

    /// One `bytes=` range (RFC 9110 §14.1.2); several ranges or other units: the whole body.
    static func parseRange(_ header: String, size: Int64) -> RangeAnswer {
        let t = header.trimmingCharacters(in: .whitespaces)
        guard t.lowercased().hasPrefix("bytes="), !t.contains(",") else { return .whole }
        let spec = t.dropFirst(6)
        guard let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces), last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            guard let n = Int64(last), n > 0 else { return .unsatisfiable }
            return size == 0 ? .unsatisfiable : .part(max(0, size - n), size)
        }
        guard let a = Int64(first), a >= 0 else { return .whole }
        guard a < size else { return .unsatisfiable }
        if last.isEmpty { return .part(a, size) }
        guard let b = Int64(last), b >= a else { return .whole }
        return .part(a, min(b, size - 1) + 1)
    }
}

/// Which storage requests write (ClusterMiddleware forwards those to the primary, streamed).
public enum StorageRoutes {
    /// Paths of POST/PUT/DELETE requests that only read or sign (run on any node), and the
    /// internal blob routes between members (never forwarded).
    public static func writes(_ path: String, method: String) -> Bool {
        let rest = path.dropFirst("/storage/v1/".count)
        if rest.hasPrefix("object/list/") || rest.hasPrefix("object/list-v2/") || rest.hasPrefix("internal/") { return false }
        if rest.hasPrefix("object/sign/") { return false }
        if rest.hasPrefix("object/upload/sign/") { return method != "POST" }  // issuing a token writes nothing
        return true
    }
}
