// `/storage/v1/s3`: the S3 protocol over the same buckets and objects as `/storage/v1`
// (docs/STORAGE.md "S3"). Path-style addressing only: /storage/v1/s3/<bucket>/<key>.
// Every request is SigV4-signed (S3SigV4) with an access key (service role) or in the session
// form (any key id, the anon key as secret, a user's JWT as X-Amz-Security-Token: storage
// policies apply). Bytes go through StorageService's paths: BlobStore writer (ST1: durable
// before the row), BlobReplicator push, commitUpload; reads through BlobReader. Writes
// (PUT/POST/DELETE) are forwarded to the primary by ClusterMiddleware (StorageRoutes.writes).

import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public struct S3Config: Sendable {
    public var region: String
    /// The anon key: the secret of the session form. nil: the session form is refused.
    public var anonKey: String?
    public init(region: String = "local", anonKey: String?) {
        self.region = region
        self.anonKey = anonKey
    }
}

struct S3Auth {
    let caller: Caller
    let signed: S3SignedRequest
    let signingKey: [UInt8]
    let headers: [String: String]
    let query: [(String, String)]
    func q(_ name: String) -> String? { query.first { $0.0 == name }?.1 }
    func has(_ name: String) -> Bool { query.contains { $0.0 == name } }
}

public enum S3API {
    public static let prefix = "/storage/v1/s3"

    public static func register(on router: Router<AeroRequestContext>, service: StorageService, keys: KeyChecker, config: S3Config) {
        let g = router.group("storage/v1")
        for method in [HTTPRequest.Method.get, .put, .post, .delete, .head] {
            for path in ["s3", "s3/:bucket", "s3/:bucket/**"] {
                g.on(RouterPath(path), method: method) { request, _ in
                    await handle(request, service: service, keys: keys, config: config)
                }
            }
        }
        registerAdmin(on: router, service: service, keys: keys)
    }

    static func handle(_ request: Request, service: StorageService, keys: KeyChecker, config: S3Config) async -> Response {
        let head = request.method == .head
        let rest = request.uri.path.dropFirst(prefix.count).drop { $0 == "/" }
        let slash = rest.firstIndex(of: "/")
        let bucket = S3SigV4.decode(slash.map { rest[..<$0] } ?? rest)
        let key = slash.map { S3SigV4.decode(rest[rest.index(after: $0)...]) } ?? ""
        let resource = "/" + bucket + (key.isEmpty ? "" : "/" + key)
        do {
            let auth = try authenticate(request, service: service, keys: keys, config: config)
            try await service.ensureCollections()
            let ops = S3Operations(service: service, request: request, auth: auth, bucket: bucket, key: key)
            return try await ops.run()
        } catch {
            return S3Error.from(error).response(resource: resource, head: head)
        }
    }

    static func authenticate(_ request: Request, service: StorageService, keys: KeyChecker, config: S3Config) throws -> S3Auth {
        var headers: [String: String] = [:]
        for field in request.headers {
            let name = field.name.canonicalName
            headers[name] = headers[name].map { $0 + "," + field.value } ?? field.value
        }
        // The host the client signed: on a request a replica forwarded, the one it was sent to
        // (only as the forwarding member signed it: a client's own header is ignored).
        let forwardedHost = headers.removeValue(forKey: "x-aerodb-forwarded-host").flatMap { ForwardedHost.verify($0, secret: keys.secret) }
        headers["host"] = forwardedHost ?? request.head.authority ?? ""
        let query = S3SigV4.queryPairs(request.uri.query ?? "")
        let signed = try S3SigV4.parse(headers: headers, query: query)
        try S3SigV4.checkTime(signed, region: config.region, nowSeconds: service.nowSeconds)
        let secret: String
        let caller: Caller
        if let token = signed.securityToken {
            guard let anon = config.anonKey else { throw S3Error.invalidAccessKeyID }
            secret = anon
            do { caller = try keys.caller(token: token) } catch { throw S3Error.accessDenied("the session token is not valid: \(AeroError.wrap(error).message)") }
        } else {
            guard let s = try S3Keys.secret(signed.credential.accessKeyID, service) else { throw S3Error.invalidAccessKeyID }
            secret = s
            caller = Caller(role: "service_role", claims: .object(["role": .string("service_role")]))
        }
        let key = try S3SigV4.verify(signed, secret: secret, method: request.method.rawValue, rawPath: request.uri.path, query: query, headers: headers)
        return S3Auth(caller: caller, signed: signed, signingKey: key, headers: headers, query: query)
    }

    // MARK: Admin: /admin/v1/storage/s3-keys

    static func registerAdmin(on router: Router<AeroRequestContext>, service: StorageService, keys: KeyChecker) {
        let a = router.group("admin/v1/storage/s3-keys")
        @Sendable func run(_ body: () async throws -> Response) async -> Response {
            do { return try await body() } catch { return HTTPErrors.response(AeroError.wrap(error)) }
        }
        a.get { request, _ in
            await run {
                try keys.requireServiceRole(request)
                return HTTPJSON.response(try S3Keys.list(service))
            }
        }
        a.post { request, _ in
            await run {
                try keys.requireServiceRole(request)
                let body = try await HTTPJSON.optionalBody(request) ?? .object([:])
                let description = body["description"]?.stringValue
                let (answer, lsn) = try await S3Keys.create(description: description, storage: service)
                var response = HTTPJSON.response(answer, lsn: lsn)
                response.status = .created
                return response
            }
        }
        a.delete(":id") { request, context in
            await run {
                try keys.requireServiceRole(request)
                let lsn = try await S3Keys.revoke(try context.parameters.require("id"), service)
                return HTTPJSON.response(.object(["revoked": .bool(true)]), lsn: lsn)
            }
        }
    }
}

/// One S3 request, authenticated.
struct S3Operations {
    let service: StorageService
    let request: Request
    let auth: S3Auth
    let bucket: String
    let key: String
    var caller: Caller { auth.caller }
    var method: HTTPRequest.Method { request.method }

    func run() async throws -> Response {
        if bucket.isEmpty {
            guard method == .get else { throw S3Error.methodNotAllowed }
            return try listBuckets()
        }
        if key.isEmpty {
            switch method {
            case .get:
                if auth.has("uploads") { return try S3Multipart(ops: self).listUploads() }
                if auth.has("location") { return xml("LocationConstraint", []) }
                if auth.has("versioning") { return xml("VersioningConfiguration", []) }
                if auth.has("acl") || auth.has("policy") || auth.has("cors") || auth.has("lifecycle") || auth.has("tagging") {
                    throw S3Error.notImplemented("bucket sub-resource \(auth.query.first?.0 ?? "")")
                }
                if auth.q("list-type") == "2" { return try listObjects(v2: true) }
                return try listObjects(v2: false)
            case .head: return try headBucket()
            case .put: return try await createBucket()
            case .delete: return try await deleteBucket()
            case .post:
                if auth.has("delete") { return try await deleteObjects() }
                throw S3Error.notImplemented("this POST on a bucket")
            default: throw S3Error.methodNotAllowed
            }
        }
        _ = try StorageNames.object(key)
        let multipart = S3Multipart(ops: self)
        switch method {
        case .get:
            if auth.has("uploadId") { return try multipart.listParts() }
            if auth.has("acl") || auth.has("tagging") || auth.has("attributes") { throw S3Error.notImplemented("object sub-resource \(auth.query.first?.0 ?? "")") }
            return try await getObject(head: false)
        case .head: return try await getObject(head: true)
        case .put:
            if auth.has("uploadId") || auth.has("partNumber") {
                return try await multipart.uploadPart()
            }
            if auth.has("tagging") || auth.has("acl") { throw S3Error.notImplemented("object sub-resource \(auth.query.first?.0 ?? "")") }
            if auth.headers["x-amz-copy-source"] != nil { return try await copyObject() }
            return try await putObject()
        case .post:
            if auth.has("uploads") { return try await multipart.create() }
            if auth.has("uploadId") { return try await multipart.complete() }
            throw S3Error.notImplemented("this POST on an object")
        case .delete:
            if auth.has("uploadId") { return try await multipart.abort() }
            return try await deleteObject()
        default: throw S3Error.methodNotAllowed
        }
    }

    // MARK: Answers

    func xml(_ root: String, _ children: [S3XMLNode], status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "application/xml"]
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: S3XML.document(root, children))))
    }

    static func iso(_ value: JSONValue?) -> String {
        guard let text = value?.stringValue, let micros = Timestamp.parse(text) else { return "1970-01-01T00:00:00.000Z" }
        return S3Dates.iso8601(micros: micros)
    }

    static func httpDate(_ value: JSONValue?) -> String {
        let micros = value?.stringValue.flatMap(Timestamp.parse) ?? 0
        return httpDate(seconds: micros / 1_000_000)
    }

    static func httpDate(seconds: Int64) -> String { S3Dates.rfc1123(seconds: seconds) }

    static func parseHTTPDate(_ text: String) -> Int64? { S3Dates.parseHTTPDate(text) }

    // MARK: Buckets

    func listBuckets() throws -> Response {
        let rows = try service.database.snapshot().rowsIfPresent(Query(collection: StorageCollections.buckets, order: [Sort(field: "id")],
                                                                       limit: StorageLimits.bucketsMax))
        let visible = rows.filter { caller.isService || $0["public"] == .bool(true) }
        return xml("ListAllMyBucketsResult", [
            .node("Owner", [.leaf("ID", caller.userID ?? "service_role"), .leaf("DisplayName", caller.userID ?? "service_role")]),
            .node("Buckets", visible.map { .node("Bucket", [.leaf("Name", $0["id"]?.stringValue ?? ""), .leaf("CreationDate", Self.iso($0["created_at"]))]) }),
        ])
    }

    func requireBucketVisible() throws -> Document {
        let b = try service.requireBucket(bucket, service.database.snapshot())
        guard caller.isService || b["public"] == .bool(true) else { throw S3Error.noSuchBucket }
        return b
    }

    func headBucket() throws -> Response {
        _ = try requireBucketVisible()
        return Response(status: .ok, headers: [HTTPField.Name("x-amz-bucket-region")!: auth.signed.credential.region])
    }

    func createBucket() async throws -> Response {
        // A CreateBucketConfiguration body (LocationConstraint) may come; it is read and ignored
        // (one region per node).
        _ = try await S3Body.collect(request, auth)
        if try service.bucket(try StorageNames.bucket(bucket), service.database.snapshot()) != nil {
            throw S3Error.bucketExists
        }
        let lsn = try await service.createBucket(.object(["id": .string(bucket), "name": .string(bucket), "public": .bool(false)]), caller: caller)
        return Response(status: .ok, headers: [.location: "/" + bucket, HTTPJSON.lsnHeader: String(lsn)])
    }

    func deleteBucket() async throws -> Response {
        let lsn = try await service.deleteBucket(bucket, caller: caller)
        return Response(status: .noContent, headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    // MARK: Listing

    func listObjects(v2: Bool) throws -> Response {
        let snapshot = service.database.snapshot()
        let b = try service.requireBucket(bucket, snapshot)
        let prefix = auth.q("prefix") ?? ""
        guard prefix.utf8.count <= StorageLimits.objectNameBytesMax else { throw S3Error.invalidArgument("prefix is too long") }
        let delimiter = auth.q("delimiter") ?? ""
        guard delimiter.isEmpty || delimiter == "/" else { throw S3Error.notImplemented("a delimiter other than /") }
        var maxKeys = S3Limits.listKeysMax
        if let m = auth.q("max-keys") {
            guard let n = Int(m), n >= 0 else { throw S3Error.invalidArgument("max-keys must be a non-negative integer") }
            maxKeys = min(n, S3Limits.listKeysMax)
        }
        // The position: v2 continuation-token (base64url of the last name or folder) or
        // start-after; v1 marker.
        var after: String?
        let token = auth.q("continuation-token")
        if v2, let token {
            guard token.utf8.count <= StorageLimits.tokenBytesMax, let bytes = JWT.decodeBase64URL(Substring(token)) else {
                throw S3Error.invalidArgument("The continuation token provided is incorrect")
            }
            after = String(decoding: bytes, as: UTF8.self)
        } else if v2 {
            after = auth.q("start-after")
        } else {
            after = auth.q("marker")
        }
        if after?.isEmpty == true { after = nil }
        // encoding-type=url (boto3 asks for it and decodes): names percent-encoded, `/` kept.
        let urlEncoded = auth.q("encoding-type") == "url"
        func out(_ name: String) -> String { urlEncoded ? S3SigV4.encode(name, keepSlash: true) : name }
        var contents: [S3XMLNode] = []
        var prefixes: [S3XMLNode] = []
        var count = 0
        var truncated = false
        var last: String?
        if maxKeys > 0 {
            let page = try service.listV2ByName(bucket: bucket, b, prefix: prefix, limit: maxKeys, delimiter: delimiter == "/", descending: false,
                                                after: after, caller: caller, examineMax: StorageLimits.examinedRowsMax, snapshot)
            truncated = page["hasNext"]?.boolValue ?? false
            for folder in page["folders"]?.arrayValue ?? [] {
                prefixes.append(.node("CommonPrefixes", [.leaf("Prefix", out(folder["name"]?.stringValue ?? ""))]))
            }
            for o in page["objects"]?.arrayValue ?? [] {
                let name = o["name"]?.stringValue ?? ""
                guard let row = try service.object(bucket, name, snapshot) else { continue }
                contents.append(.node("Contents", [
                    .leaf("Key", out(name)), .leaf("LastModified", Self.iso(row["updated_at"])),
                    .leaf("ETag", row["etag"]?.stringValue ?? ""), .leaf("Size", String(row["size"]?.intValue ?? 0)),
                    .leaf("StorageClass", "STANDARD"),
                ]))
            }
            count = contents.count + prefixes.count
            last = page["nextCursorKey"]?.stringValue
        } else {
            truncated = false
        }
        var children: [S3XMLNode] = [.leaf("Name", bucket), .leaf("Prefix", out(prefix))]
        if !delimiter.isEmpty { children.append(.leaf("Delimiter", out(delimiter))) }
        if urlEncoded { children.append(.leaf("EncodingType", "url")) }
        children.append(.leaf("MaxKeys", String(maxKeys)))
        children.append(.leaf("IsTruncated", truncated ? "true" : "false"))
        if v2 {
            children.append(.leaf("KeyCount", String(count)))
            if let token { children.append(.leaf("ContinuationToken", token)) }
            if let sa = auth.q("start-after") { children.append(.leaf("StartAfter", out(sa))) }
            if truncated, let last { children.append(.leaf("NextContinuationToken", JWT.base64URL(Array(last.utf8)))) }
        } else {
            children.append(.leaf("Marker", auth.q("marker") ?? ""))
            if truncated, let last { children.append(.leaf("NextMarker", out(last))) }
        }
        return xml("ListBucketResult", children + contents + prefixes)
    }

    // MARK: Objects

    static func metadata(_ headers: [String: String]) throws -> JSONValue {
        var meta: [String: JSONValue] = [:]
        var bytes = 0
        for (name, value) in headers where name.hasPrefix("x-amz-meta-") {
            let k = String(name.dropFirst("x-amz-meta-".count))
            bytes += k.utf8.count + value.utf8.count
            meta[k] = .string(value)
        }
        guard bytes <= StorageLimits.metadataBytesMax else { throw S3Error(400, "MetadataTooLarge", "user metadata is larger than \(StorageLimits.metadataBytesMax) bytes", aero: "AERO_S3_METADATA_TOO_LARGE") }
        return meta.isEmpty ? .null : .object(meta)
    }

    func uploadDescription(upsert: Bool = true) throws -> StorageService.Upload {
        let mime: String
        do { mime = try StorageNames.mime(auth.headers["content-type"] ?? "application/octet-stream") } catch {
            throw S3Error.invalidArgument("Content-Type is not a valid MIME type")
        }
        return StorageService.Upload(bucket: bucket, name: key, mime: mime,
                                     cacheControl: auth.headers["cache-control"].map(StorageAPI.maxAge) ?? "3600",
                                     metadata: try Self.metadata(auth.headers), upsert: upsert, owner: caller.userID)
    }

    func putObject() async throws -> Response {
        let upload = try uploadDescription()
        let bucketDoc = try service.precheck(upload, caller: caller, signedUpload: false)
        let limit = service.limit(of: bucketDoc)
        let (sha, size, checksum) = try await S3Body.toBlob(request, auth, service: service, limit: limit)
        try await service.replicator.push(sha)
        let (row, lsn) = try await service.commitUpload(upload, sha256: sha, size: size)
        var headers: HTTPFields = [.eTag: row["etag"]?.stringValue ?? "", HTTPJSON.lsnHeader: String(lsn)]
        // S3 echoes the verified additional checksum (x-amz-checksum-<alg>) of a PutObject.
        if let (name, value) = checksum, let field = HTTPField.Name(name) { headers[field] = value }
        return Response(status: .ok, headers: headers)
    }

    func visibleObject(_ bucketName: String, _ name: String, _ snapshot: Snapshot) throws -> Document {
        let b = try service.requireBucket(bucketName, snapshot)
        guard let row = try service.object(bucketName, name, snapshot),
              service.access.allows(caller, .select, row: row, bucket: b, snapshot: snapshot) else { throw S3Error.noSuchKey }
        return row
    }

    func getObject(head: Bool) async throws -> Response {
        let row = try visibleObject(bucket, key, service.database.snapshot())
        guard let sha = row["sha256"]?.stringValue else { throw S3Error.noSuchKey }
        let etag = row["etag"]?.stringValue ?? ""
        let modified = (row["updated_at"]?.stringValue.flatMap(Timestamp.parse) ?? 0) / 1_000_000
        var headers: HTTPFields = [.contentType: row["mime_type"]?.stringValue ?? "application/octet-stream", .eTag: etag,
                                   .acceptRanges: "bytes", .lastModified: Self.httpDate(seconds: modified),
                                   .cacheControl: "max-age=\(row["cache_control"]?.stringValue ?? "3600")"]
        if case .object(let meta)? = row["metadata"] {
            for (k, v) in meta.sorted(by: { $0.key < $1.key }) {
                if let name = HTTPField.Name("x-amz-meta-" + k), let s = v.stringValue { headers[name] = s }
            }
        }
        // Conditional requests (RFC 9110 §13.2.2 order).
        func matches(_ list: String) -> Bool {
            list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.contains { $0 == "*" || $0 == etag || "\"\($0)\"" == etag }
        }
        if let m = auth.headers["if-match"], !matches(m) { throw S3Error.preconditionFailed }
        if auth.headers["if-match"] == nil, let s = auth.headers["if-unmodified-since"], let t = Self.parseHTTPDate(s), modified > t {
            throw S3Error.preconditionFailed
        }
        if let m = auth.headers["if-none-match"], matches(m) { return Response(status: .notModified, headers: headers) }
        if auth.headers["if-none-match"] == nil, let s = auth.headers["if-modified-since"], let t = Self.parseHTTPDate(s), modified <= t {
            return Response(status: .notModified, headers: headers)
        }
        var reader = try service.blobs.reader(sha)
        if reader == nil, try await service.replicator.fetch(sha) { reader = try service.blobs.reader(sha) }
        guard let reader else { throw S3Error(503, "ServiceUnavailable", "this node does not hold the object's bytes yet; retry", aero: "AERO_STORAGE_BLOB_UNAVAILABLE") }
        let size = reader.size
        guard let span = StorageAPI.byteSpan(auth.headers["range"], size: size) else { throw S3Error.invalidRange(size) }
        let (start, end) = (span.start, span.end)
        let status: HTTPResponse.Status = span.contentRange == nil ? .ok : .partialContent
        if let cr = span.contentRange { headers[.contentRange] = cr }
        headers[.contentLength] = String(end - start)
        if head { return Response(status: status, headers: headers) }
        let chunks = BlobChunks(reader: reader, start: start, end: end)
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(end - start)) { writer in
            for try await chunk in chunks { try await writer.write(chunk) }
            try await writer.finish(nil)
        })
    }

    func deleteObject() async throws -> Response {
        // S3 answers 204 whether or not the key existed.
        let (_, lsn) = try await service.remove(bucket: bucket, paths: [key], caller: caller)
        return Response(status: .noContent, headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    func deleteObjects() async throws -> Response {
        let root = try S3XML.parse(try await S3Body.collect(request, auth))
        guard root.name == "Delete" else { throw S3Error.malformedXML("the body must be a <Delete> document") }
        let objects = root.all("Object")
        guard objects.count <= S3Limits.deleteKeysMax else { throw S3Error.malformedXML("at most \(S3Limits.deleteKeysMax) keys per request") }
        let quiet = root.child("Quiet")?.text.lowercased() == "true"
        var names: [String] = []
        var errors: [S3XMLNode] = []
        for o in objects {
            guard let k = o.child("Key")?.text else { throw S3Error.malformedXML("an <Object> has no <Key>") }
            if (try? StorageNames.object(k)) == nil {
                errors.append(.node("Error", [.leaf("Key", k), .leaf("Code", "InvalidArgument"), .leaf("Message", "not a valid key")]))
            } else {
                names.append(k)
            }
        }
        // S3 reports a key deleted whether or not it existed (or was visible).
        let (_, lsn) = try await service.remove(bucket: bucket, paths: names, caller: caller)
        let deleted: [S3XMLNode] = quiet ? [] : names.map { .node("Deleted", [.leaf("Key", $0)]) }
        return xml("DeleteResult", deleted + errors, headers: [HTTPJSON.lsnHeader: String(lsn)])
    }

    /// `x-amz-copy-source: /bucket/key` (or without the leading slash, URL-encoded).
    static func copySource(_ header: String) throws -> (String, String) {
        var s = S3SigV4.decode(Substring(header))
        if let q = s.firstIndex(of: "?") {
            guard !s[q...].contains("versionId") || s.hasSuffix("versionId=null") else { throw S3Error.notImplemented("versioned copy sources") }
            s = String(s[..<q])
        }
        let t = s.drop { $0 == "/" }
        guard let slash = t.firstIndex(of: "/") else { throw S3Error.invalidArgument("x-amz-copy-source must be <bucket>/<key>") }
        return (String(t[..<slash]), String(t[t.index(after: slash)...]))
    }

    func copyObject() async throws -> Response {
        let (fromBucket, fromKey) = try Self.copySource(auth.headers["x-amz-copy-source"] ?? "")
        let snapshot = service.database.snapshot()
        let source = try visibleObject(fromBucket, try StorageNames.object(fromKey), snapshot)
        let replace = auth.headers["x-amz-metadata-directive"]?.uppercased() == "REPLACE"
        let upload = StorageService.Upload(bucket: bucket, name: key,
                                           mime: replace ? try uploadDescription().mime : source["mime_type"]?.stringValue ?? "application/octet-stream",
                                           cacheControl: source["cache_control"]?.stringValue ?? "3600",
                                           metadata: replace ? try Self.metadata(auth.headers) : source["metadata"] ?? .null,
                                           upsert: true, owner: caller.userID)
        let target = try service.precheck(upload, caller: caller, signedUpload: false)
        let size = source["size"]?.intValue ?? 0
        guard size <= service.limit(of: target) else { throw S3Error.entityTooLarge(service.limit(of: target)) }
        guard let sha = source["sha256"]?.stringValue else { throw S3Error.noSuchKey }
        // No byte is copied: the new row names the same blob (ST2: blobs never change). The
        // blob's mtime is refreshed under the naming lock so the collector cannot take it
        // between this check and the commit (ST3).
        try service.blobs.touch(sha)
        let (row, lsn) = try await service.commitUpload(upload, sha256: sha, size: size)
        return xml("CopyObjectResult", [.leaf("LastModified", Self.iso(row["updated_at"])), .leaf("ETag", row["etag"]?.stringValue ?? "")],
                   headers: [HTTPJSON.lsnHeader: String(lsn)])
    }
}
