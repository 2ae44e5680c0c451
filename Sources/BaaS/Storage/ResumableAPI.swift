// TUS 1.0.0 resumable uploads at `/storage/v1/upload/resumable`, as Supabase Storage serves
// them (tus-node-server behind storage-api; docs/STORAGE.md "Resumable uploads").
//
// Wire:
//   OPTIONS /upload/resumable[/<id>]   204  Tus-Resumable, Tus-Version: 1.0.0,
//                                           Tus-Extension: creation,creation-with-upload,termination,expiration,
//                                           creation-defer-length,checksum,
//                                           Tus-Checksum-Algorithm: sha1,md5,sha256, Tus-Max-Size
//   POST    /upload/resumable          Tus-Resumable: 1.0.0, Upload-Length: n, Upload-Metadata: key base64,...
//                                      (bucketName, objectName, contentType, cacheControl, metadata), x-upsert
//                                      → 201 Location: /storage/v1/upload/resumable/<id>, Upload-Expires
//                                      (a body of Content-Type application/offset+octet-stream is appended: creation-with-upload)
//   HEAD    /upload/resumable/<id>     → 200 Upload-Offset, Upload-Length, Upload-Metadata, Cache-Control: no-store
//   PATCH   /upload/resumable/<id>     Content-Type: application/offset+octet-stream, Upload-Offset: o
//                                      → 204 Upload-Offset (and Tus-Complete: 1 once the object is committed)
//                                      Upload-Checksum: <algorithm> <base64 digest> (POST with a body too): the
//                                      request's bytes count only if the whole body arrived and matches;
//                                      else 460 Checksum Mismatch (or the body's error) and the offset stays
//   DELETE  /upload/resumable/<id>     → 204 (an unfinished upload only)
//   creation-defer-length: a POST with `Upload-Defer-Length: 1` instead of Upload-Length reserves
//   its bucket's limit; HEAD answers `Upload-Defer-Length: 1` until a PATCH names Upload-Length
//   (once, at least the offset, at most that limit; recorded durably before the chunk).
//   The same under /upload/resumable/sign with `x-signature: <token of a signed upload URL>`.
// <id> is base64url("<bucket>/<object name>/<uuid>") like storage-api's (tenant left out).
// Errors: the status with the message as a text body (what tus-node-server answers), the stable
// code in `X-AeroDB-Error-Code`.
// Completion after a crash between its commit and the upload's removal: a retried completion
// (an empty PATCH at the end) finds the object holding exactly the upload's bytes and answers
// Tus-Complete instead of a duplicate (found by `aerodb-crashtest kill --uploaders`).
// Policies: creation and completion run the same checks as an upload (bucket, name, MIME type,
// size limit, duplicate without x-upsert, insert/update policy); every request of an upload must
// come from its creator's share (ResumableShare: the same signed-in user; any anonymous caller for
// an anonymous upload, for which the random id is the capability; a valid signature for the
// object under /sign) or the service role.
// A creation whose first chunk fails (creation-with-upload) removes the upload: the client never
// saw its Location, so it could only hold a slot until expiry. Writes are forwarded to the primary by
// ClusterMiddleware (PATCH bodies as a stream, HEAD too: the parts live on the primary).

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

enum ResumableAPI {
    static let version = "1.0.0"
    /// Only what is built is advertised (not: concatenation, which Supabase's server lacks too).
    static let extensions = "creation,creation-with-upload,termination,expiration,creation-defer-length,checksum"
    static let offsetStream = "application/offset+octet-stream"
    static let basePath = "/storage/v1/upload/resumable"

    static let tusResumable = HTTPField.Name("Tus-Resumable")!
    static let tusVersion = HTTPField.Name("Tus-Version")!
    static let tusExtension = HTTPField.Name("Tus-Extension")!
    static let tusMaxSize = HTTPField.Name("Tus-Max-Size")!
    static let tusComplete = HTTPField.Name("Tus-Complete")!
    static let uploadLength = HTTPField.Name("Upload-Length")!
    static let uploadOffset = HTTPField.Name("Upload-Offset")!
    static let uploadMetadata = HTTPField.Name("Upload-Metadata")!
    static let uploadExpires = HTTPField.Name("Upload-Expires")!
    static let uploadDeferLength = HTTPField.Name("Upload-Defer-Length")!
    static let uploadChecksum = HTTPField.Name("Upload-Checksum")!
    static let uploadConcat = HTTPField.Name("Upload-Concat")!
    static let tusChecksumAlgorithm = HTTPField.Name("Tus-Checksum-Algorithm")!
    static let signature = HTTPField.Name("x-signature")!
    static let errorCode = HTTPField.Name("X-AeroDB-Error-Code")!

    static func register(on s: RouterGroup<AeroRequestContext>, service: StorageService, keys: KeyChecker) {
        for prefix in ["upload/resumable", "upload/resumable/sign"] {
            let signed = prefix.hasSuffix("/sign")
            s.on(RouterPath(prefix), method: .options) { _, _ in options(service) }
            s.on(RouterPath(prefix + "/:id"), method: .options) { _, _ in options(service) }
            s.post(RouterPath(prefix)) { request, _ in
                await run { try await create(service, keys, request, signed: signed) }
            }
            s.head(RouterPath(prefix + "/:id")) { request, context in
                await run { try head(service, keys, request, id: try context.parameters.require("id"), signed: signed) }
            }
            s.patch(RouterPath(prefix + "/:id")) { request, context in
                await run { try await patch(service, keys, request, id: try context.parameters.require("id"), signed: signed) }
            }
            s.delete(RouterPath(prefix + "/:id")) { request, context in
                await run { try delete(service, keys, request, id: try context.parameters.require("id"), signed: signed) }
            }
        }
    }

    static func run(_ body: () async throws -> Response) async -> Response {
        do { return try await body() } catch { return errorResponse(StorageError.from(error)) }
    }

    static func errorResponse(_ e: StorageError) -> Response {
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8", tusResumable: version]
        headers[errorCode] = e.code
        return Response(status: HTTPResponse.Status(code: e.status), headers: headers,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: e.message)))
    }

    static func tusError(_ status: Int, _ message: String, _ code: String = "AERO_STORAGE_RESUMABLE_INVALID") -> StorageError {
        StorageError(status, HTTPResponse.Status(code: status).reasonPhrase, message, code: code)
    }

    static func options(_ service: StorageService) -> Response {
        Response(status: .noContent, headers: [tusResumable: version, tusVersion: version, tusExtension: extensions,
                                               tusChecksumAlgorithm: ResumableChecksum.advertised, tusMaxSize: String(service.objectBytesMax)])
    }

    /// Every request but OPTIONS names the protocol version (TUS §"Tus-Resumable").
    static func requireVersion(_ request: Request) throws {
        guard request.headers[tusResumable] == version else {
            throw tusError(412, "Tus-Resumable: \(version) is required", "AERO_STORAGE_RESUMABLE_VERSION")
        }
    }

    /// A header integer in 0...max (named range; no overflow).
    static func headerInt(_ request: Request, _ name: HTTPField.Name, max: Int64) throws -> Int64? {
        guard let text = request.headers[name] else { return nil }
        guard text.utf8.count <= 19, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int64(text), n >= 0, n <= max else {
            throw tusError(400, "\(name.rawName) must be an integer in 0...\(max)")
        }
        return n
    }

    /// `Upload-Metadata`: comma-separated `key base64value` pairs (value optional).
    static func parseMetadata(_ header: String) throws -> [String: String] {
        guard header.utf8.count <= StorageLimits.resumableMetadataBytesMax else {
            throw tusError(400, "Upload-Metadata is longer than \(StorageLimits.resumableMetadataBytesMax) bytes")
        }
        var out: [String: String] = [:]
        for pair in header.split(separator: ",") {
            let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: " ", omittingEmptySubsequences: true)
            guard let key = parts.first, parts.count <= 2, out[String(key)] == nil else { throw tusError(400, "Upload-Metadata is malformed") }
            if parts.count == 2 {
                guard let data = Data(base64Encoded: String(parts[1])), let value = String(data: data, encoding: .utf8) else {
                    throw tusError(400, "Upload-Metadata value of \(key) is not base64 UTF-8")
                }
                out[String(key)] = value
            } else {
                out[String(key)] = ""
            }
        }
        return out
    }

    static func encodeMetadata(_ info: ResumableInfo) -> String {
        var pairs = [("bucketName", info.bucket), ("objectName", info.name), ("contentType", info.mime),
                     ("cacheControl", info.cacheControl)]
        if info.metadata != .null { pairs.append(("metadata", JSON.encodeString(info.metadata))) }
        return pairs.map { "\($0.0) \(Data($0.1.utf8).base64EncodedString())" }.joined(separator: ",")
    }

    static func urlID(_ info: ResumableInfo, uuid: String) -> String {
        JWT.base64URL(Array("\(info.bucket)/\(info.name)/\(uuid)".utf8))
    }

    /// The URL id back to (bucket, name, uuid); the uuid names the upload on disk.
    static func parseID(_ id: String) throws -> (bucket: String, name: String, uuid: String) {
        guard id.utf8.count <= StorageLimits.resumableIDBytesMax, let bytes = JWT.decodeBase64URL(Substring(id)),
              let text = String(bytes: bytes, encoding: .utf8) else { throw tusError(404, "Upload not found", "AERO_STORAGE_UPLOAD_NOT_FOUND") }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 3, ResumableStore.isUUID(String(parts.last!)) else {
            throw tusError(404, "Upload not found", "AERO_STORAGE_UPLOAD_NOT_FOUND")
        }
        return (String(parts[0]), parts[1..<(parts.count - 1)].joined(separator: "/"), String(parts.last!))
    }

    /// Who acts: a key's caller, or for `/sign` the signed upload token in `x-signature`
    /// (then `caller` is nil and the token stands for its issuer, as for signed upload URLs).
    struct Actor {
        let caller: Caller?
        let owner: String?
        let upsert: Bool
        /// ResumableShare of the uploads this actor creates.
        let share: String
    }

    static func actor(_ service: StorageService, _ keys: KeyChecker, _ request: Request, signed: Bool, bucket: String, name: String) throws -> Actor {
        if signed {
            guard let token = request.headers[signature] else { throw StorageError.invalidSignature("Missing x-signature header") }
            let s = try StorageSignedURL.verify(token, kind: .upload, bucket: bucket, name: name, secret: service.secret,
                                                nowSeconds: service.nowSeconds)
            return Actor(caller: nil, owner: s.owner, upsert: s.upsert, share: ResumableShare.signed(s.owner))
        }
        let c: Caller
        do { c = try keys.caller(request) } catch let error as AeroError { throw StorageError(400, "Error", error.message, code: error.code.rawValue) }
        return Actor(caller: c, owner: c.userID, upsert: request.headers[HTTPField.Name("x-upsert")!]?.lowercased() == "true",
                     share: c.isService ? ResumableShare.service : ResumableShare.user(c.userID))
    }

    static func upload(_ info: ResumableInfo) -> StorageService.Upload {
        StorageService.Upload(bucket: info.bucket, name: info.name, mime: info.mime, cacheControl: info.cacheControl,
                              metadata: info.metadata, upsert: info.upsert, owner: info.owner)
    }

    static func expiresHeader(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &tm)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Create

    static func create(_ service: StorageService, _ keys: KeyChecker, _ request: Request, signed: Bool) async throws -> Response {
        try requireVersion(request)
        var deferred = false
        if let deferHeader = request.headers[uploadDeferLength] {
            guard deferHeader == "1", request.headers[uploadLength] == nil else {
                throw tusError(400, "Upload-Defer-Length must be 1 and comes without Upload-Length")
            }
            deferred = true
        }
        if request.headers[uploadConcat] != nil {
            throw tusError(400, "Upload-Concat is not supported (the concatenation extension is not built)", "AERO_STORAGE_RESUMABLE_UNSUPPORTED")
        }
        let checksum = try parseChecksum(request)
        // Deferred: the bound until the length is named (lowered to the bucket's limit below).
        guard let length = deferred ? service.objectBytesMax : try headerInt(request, uploadLength, max: service.objectBytesMax) else {
            throw tusError(400, "Upload-Length or Upload-Defer-Length: 1 is required (at most \(service.objectBytesMax) bytes)")
        }
        let meta = try parseMetadata(request.headers[uploadMetadata] ?? "")
        guard let bucket = meta["bucketName"], !bucket.isEmpty else { throw tusError(400, "Upload-Metadata needs bucketName") }
        guard let rawName = meta["objectName"], !rawName.isEmpty else { throw tusError(400, "Upload-Metadata needs objectName") }
        let name = try StorageNames.object(rawName)
        _ = try StorageNames.bucket(bucket)
        let mime = try StorageNames.mime(meta["contentType"].flatMap { $0.isEmpty ? nil : $0 } ?? "application/octet-stream")
        let cacheControl = StorageAPI.maxAge(meta["cacheControl"] ?? "3600")
        let metadata = try StorageAPI.parseMetadata(Array((meta["metadata"] ?? "").utf8))
        let who = try actor(service, keys, request, signed: signed, bucket: bucket, name: name)
        let now = service.nowSeconds
        var info = ResumableInfo(bucket: bucket, name: name, mime: mime, cacheControl: cacheControl, metadata: metadata,
                                 upsert: who.upsert, owner: who.owner, length: length, offset: 0, created: now,
                                 expires: now + StorageLimits.resumableRetentionSeconds, share: who.share, deferred: deferred)
        // Policy at creation: the same refusals as a plain upload, before any byte is stored.
        let bucketDoc = try service.precheck(upload(info), caller: who.caller, signedUpload: who.caller == nil)
        let limit = service.limit(of: bucketDoc)
        if deferred { info.length = min(limit, length) }
        guard info.length <= limit else { throw StorageError.tooLarge(limit) }
        let uuid = try service.resumable.create(info, nowSeconds: now)
        let id = urlID(info, uuid: uuid)
        var headers: HTTPFields = [tusResumable: version, .location: basePath + (signed ? "/sign/" : "/") + id,
                                   uploadExpires: expiresHeader(info.expires)]
        // creation-with-upload: a first chunk in the POST body.
        var lsn: UInt64?
        if request.headers[.contentType]?.lowercased().hasPrefix(offsetStream) == true || (length == 0 && !deferred) {
            guard case .proceed(let held) = service.resumable.acquire(uuid, nowSeconds: now) else {
                service.resumable.remove(uuid)
                throw tusError(409, "the upload is busy", "AERO_STORAGE_UPLOAD_BUSY")
            }
            do {
                (info, lsn) = try await appendAndMaybeComplete(service, uuid: uuid, held, body: request.body, who: who, checksum: checksum)
            } catch {
                // The client never saw the Location: nobody could resume it, so its slot is freed now.
                service.resumable.remove(uuid)
                throw error
            }
            headers[uploadOffset] = String(info.offset)
            if lsn != nil { headers[tusComplete] = "1" }
        }
        if let lsn { headers[HTTPJSON.lsnHeader] = String(lsn) }
        return Response(status: .created, headers: headers)
    }

    // MARK: Existing uploads

    /// Looks the upload up and checks the actor may touch it (its creator, the service role, or
    /// a valid signature for its object).
    static func resolve(_ service: StorageService, _ keys: KeyChecker, _ request: Request, id: String, signed: Bool,
                        take: Bool) throws -> (uuid: String, info: ResumableInfo, who: Actor) {
        try requireVersion(request)
        let (bucket, name, uuid) = try parseID(id)
        let who = try actor(service, keys, request, signed: signed, bucket: bucket, name: name)
        let now = service.nowSeconds
        let decision = take ? service.resumable.acquire(uuid, nowSeconds: now) : service.resumable.peek(uuid, nowSeconds: now)
        switch decision {
        case .notFound: throw tusError(404, "Upload not found", "AERO_STORAGE_UPLOAD_NOT_FOUND")
        case .expired: throw tusError(410, "The upload expired (uploads are kept \(StorageLimits.resumableRetentionSeconds) s)", "AERO_STORAGE_UPLOAD_EXPIRED")
        case .busy: throw tusError(409, "Another request is appending to this upload; retry after it ends", "AERO_STORAGE_UPLOAD_BUSY")
        case .proceed(let info):
            // Under /sign the verified signature for this object is the capability; otherwise the
            // caller's share must be the creator's (never an anonymous caller on a user's or a
            // signed upload, never one user on another's).
            let mine = info.bucket == bucket && info.name == name
                && (who.caller?.isService == true || (signed ? who.caller == nil : info.share == who.share))
            guard mine else {
                if take { service.resumable.release(uuid, info: nil) }
                throw tusError(404, "Upload not found", "AERO_STORAGE_UPLOAD_NOT_FOUND")
            }
            return (uuid, info, who)
        }
    }

    static func head(_ service: StorageService, _ keys: KeyChecker, _ request: Request, id: String, signed: Bool) throws -> Response {
        let (_, info, _) = try resolve(service, keys, request, id: id, signed: signed, take: false)
        var headers: HTTPFields = [tusResumable: version, uploadOffset: String(info.offset), uploadMetadata: encodeMetadata(info),
                                   .cacheControl: "no-store", uploadExpires: expiresHeader(info.expires)]
        if info.deferred { headers[uploadDeferLength] = "1" } else { headers[uploadLength] = String(info.length) }
        return Response(status: .ok, headers: headers)
    }

    static func patch(_ service: StorageService, _ keys: KeyChecker, _ request: Request, id: String, signed: Bool) async throws -> Response {
        try requireVersion(request)
        guard request.headers[.contentType]?.lowercased().hasPrefix(offsetStream) == true else {
            throw tusError(415, "Content-Type must be \(offsetStream)", "AERO_STORAGE_RESUMABLE_INVALID")
        }
        guard let offset = try headerInt(request, uploadOffset, max: service.objectBytesMax) else {
            throw tusError(400, "Upload-Offset is required")
        }
        let checksum = try parseChecksum(request)
        let length = try headerInt(request, uploadLength, max: service.objectBytesMax)
        var (uuid, info, who) = try resolve(service, keys, request, id: id, signed: signed, take: true)
        guard offset == info.offset else {
            service.resumable.release(uuid, info: nil)
            throw tusError(409, "Upload-Offset \(offset) does not match the upload's offset \(info.offset)", "AERO_STORAGE_UPLOAD_OFFSET")
        }
        if let length {
            // creation-defer-length: the length is named once; a known length must not change.
            do {
                if info.deferred {
                    info = try service.resumable.setLength(uuid, info, length: length)
                } else if length != info.length {
                    throw tusError(400, "Upload-Length \(length) differs from the upload's \(info.length)")
                }
            } catch {
                service.resumable.release(uuid, info: nil)
                throw error
            }
        }
        let (now, lsn) = try await appendAndMaybeComplete(service, uuid: uuid, info, body: request.body, who: who, checksum: checksum)
        var headers: HTTPFields = [tusResumable: version, uploadOffset: String(now.offset), uploadExpires: expiresHeader(now.expires)]
        if let lsn {
            headers[tusComplete] = "1"
            headers[HTTPJSON.lsnHeader] = String(lsn)
        }
        return Response(status: .noContent, headers: headers)
    }

    /// `Upload-Checksum` (checksum extension): an unknown algorithm or a malformed digest is a 400.
    static func parseChecksum(_ request: Request) throws -> ResumableChecksum? {
        guard let text = request.headers[uploadChecksum] else { return nil }
        guard let c = ResumableChecksum(header: text) else {
            throw tusError(400, "Upload-Checksum must be '<algorithm> <base64 digest>' with an algorithm of \(ResumableChecksum.advertised)",
                           "AERO_STORAGE_CHECKSUM_INVALID")
        }
        return c
    }

    static func delete(_ service: StorageService, _ keys: KeyChecker, _ request: Request, id: String, signed: Bool) throws -> Response {
        let (uuid, _, _) = try resolve(service, keys, request, id: id, signed: signed, take: true)
        service.resumable.remove(uuid)
        return Response(status: .noContent, headers: [tusResumable: version])
    }

    /// Appends the body (the caller holds the upload) and, once every byte is there, completes:
    /// policy again, blob named by hash, pushed to replicas, row committed, upload removed.
    /// Returns the durable state and the commit's LSN when the object was committed.
    static func appendAndMaybeComplete<S: AsyncSequence & Sendable>(_ service: StorageService, uuid: String, _ info: ResumableInfo, body: S,
                                                          who: Actor, checksum: ResumableChecksum? = nil) async throws -> (ResumableInfo, UInt64?)
    where S.Element: ByteBufferLike {
        var info = info
        if info.offset < info.length {
            let (next, failure) = await service.resumable.append(uuid, info, body: body, checksum: checksum)
            info = next
            if let failure {
                service.resumable.release(uuid, info: info)
                throw failure
            }
        }
        guard !info.deferred, info.offset == info.length else {
            service.resumable.release(uuid, info: info)
            return (info, nil)
        }
        // Completion (a PATCH at offset == length with an empty body retries it after a refusal).
        do {
            do {
                _ = try service.precheck(upload(info), caller: who.caller, signedUpload: who.caller == nil)
            } catch let refusal as StorageError where refusal.code == StorageError.duplicate.code {
                // A crash between the commit and the removal of the upload leaves it complete on
                // disk: when the object holds exactly its bytes, the completion already happened.
                let snapshot = service.database.snapshot()
                let (sha, size) = try service.blobs.adopt(service.resumable.dir(uuid) + "/data")
                guard let row = try service.object(info.bucket, info.name, snapshot), row["sha256"]?.stringValue == sha,
                      row["size"] == .int(size), size == info.length else { throw refusal }
                service.resumable.remove(uuid)
                return (info, snapshot.lsn)
            }
            let (sha, size) = try service.blobs.adopt(service.resumable.dir(uuid) + "/data")
            guard size == info.length else { throw tusError(500, "the upload's bytes changed on disk", "AERO_IO_ERROR") }
            try await service.replicator.push(sha)
            let (_, lsn) = try await service.commitUpload(upload(info), sha256: sha, size: size)
            service.resumable.remove(uuid)
            return (info, lsn)
        } catch {
            service.resumable.release(uuid, info: info)
            throw error
        }
    }
}
