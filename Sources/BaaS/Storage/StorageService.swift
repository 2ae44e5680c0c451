// Storage metadata over the kernel (StorageCollections) and bytes in the BlobStore.
// Every object change is one kernel transaction committed after its blob is durable (ST1);
// access is decided by StorageAccess before any byte is read or written.

import Crypto
import Foundation
import Kernel
import Logging
import Synchronization

public final class StorageService: Sendable {
    let database: Database
    let blobs: BlobStore
    let secret: [UInt8]
    let clock: any KernelClock
    let objectBytesMax: Int64
    let access: StorageAccess
    let replicator: BlobReplicator
    /// Pending TUS uploads (ResumableAPI).
    let resumable: ResumableStore
    let logger: Logger
    private let ensured = Mutex(false)

    public init(database: Database, secret: [UInt8], clock: any KernelClock, objectBytesMax: Int64 = StorageLimits.objectBytesMaxDefault,
                peers: StoragePeers, logger: Logger) throws {
        self.database = database
        self.blobs = try BlobStore(dataDirectory: database.options.dataDirectory)
        self.resumable = try ResumableStore(blobRoot: blobs.root, logger: logger)
        self.secret = secret
        self.clock = clock
        self.objectBytesMax = objectBytesMax
        self.access = StorageAccess(database: database)
        self.replicator = BlobReplicator(blobs: blobs, peers: peers, secret: secret, clock: clock, logger: logger)
        self.logger = logger
    }

    /// Starts the periodic blob pass (BlobCollector); the caller cancels it at shutdown.
    public func startCollector() -> Task<Void, Never> { BlobCollector.start(self) }

    var nowMicros: Int64 { clock.nowMicros() }
    var nowSeconds: Int64 { nowMicros / 1_000_000 }
    var now: JSONValue { .string(Timestamp.format(nowMicros)) }

    func ensureCollections() async throws {
        if ensured.withLock({ $0 }) { return }
        try await SystemCollections.ensure(StorageCollections.all, in: database)
        ensured.withLock { $0 = true }
    }

    // MARK: Reads

    func bucket(_ id: String, _ snapshot: Snapshot) throws -> Document? {
        try snapshot.documentIfPresent(StorageCollections.buckets, key: .string(id))
    }

    func requireBucket(_ id: String, _ snapshot: Snapshot) throws -> Document {
        guard let b = try bucket(try StorageNames.bucket(id), snapshot) else { throw StorageError.bucketNotFound }
        return b
    }

    func object(_ bucket: String, _ name: String, _ snapshot: Snapshot) throws -> Document? {
        try snapshot.rowsIfPresent(Query(collection: StorageCollections.objects,
                                         filter: .and([.compare(field: "bucket_id", op: .eq, value: .string(bucket)),
                                                       .compare(field: "name", op: .eq, value: .string(name))]),
                                         limit: 1)).first
    }

    /// Objects of a bucket whose names start with `prefix`, in name order, in pages, at most
    /// `examinedRowsMax` rows (past it the request is refused: it would be unbounded).
    func objects(_ bucket: String, prefix: String, _ snapshot: Snapshot, max: Int = StorageLimits.examinedRowsMax) throws -> [Document] {
        var out: [Document] = []
        var after: String?
        while true {
            var parts: [Filter] = [.compare(field: "bucket_id", op: .eq, value: .string(bucket))]
            if let after { parts.append(.compare(field: "name", op: .gt, value: .string(after))) }
            if !prefix.isEmpty {
                parts.append(.compare(field: "name", op: .gte, value: .string(prefix)))
                parts.append(.compare(field: "name", op: .lt, value: .string(prefix + "\u{10FFFF}")))
            }
            let page = try snapshot.rowsIfPresent(Query(collection: StorageCollections.objects, filter: .and(parts),
                                                        order: [Sort(field: "name")], limit: StorageLimits.pageRows))
            out.append(contentsOf: page.filter { ($0["name"]?.stringValue ?? "").hasPrefix(prefix) })
            guard out.count <= max else {
                throw StorageError.invalid("more than \(max) objects under this prefix; list a narrower prefix")
            }
            guard page.count == StorageLimits.pageRows, let last = page.last?["name"]?.stringValue else { return out }
            after = last
        }
    }

    // MARK: Buckets

    static func bucketJSON(_ d: Document) -> JSONValue {
        .object(["id": d["id"] ?? .null, "name": d["name"] ?? .null, "owner": .string(d["owner"]?.stringValue ?? ""),
                 "owner_id": d["owner"] ?? .null, "public": d["public"] ?? .bool(false),
                 "file_size_limit": d["file_size_limit"] ?? .null, "allowed_mime_types": d["allowed_mime_types"] ?? .null,
                 "type": .string("STANDARD"), "created_at": d["created_at"] ?? .null, "updated_at": d["updated_at"] ?? .null])
    }

    /// `file_size_limit`: an integer, a numeric string or a size like `"1mb"`, `"500KB"`; null clears it.
    static func sizeLimit(_ value: JSONValue) throws -> JSONValue {
        switch value {
        case .null: return .null
        case .int(let n):
            guard n >= 0 else { throw StorageError.invalid("file_size_limit must not be negative") }
            return .int(n)
        case .float(let d) where d >= 0 && d <= 9e15 && d.rounded() == d: return .int(Int64(d))
        case .string(let s):
            let t = s.trimmingCharacters(in: .whitespaces).lowercased()
            let units: [(String, Int64)] = [("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)]
            for (suffix, factor) in units where t.hasSuffix(suffix) {
                guard let n = Int64(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { break }
                let (v, o) = n.multipliedReportingOverflow(by: factor)
                guard !o else { break }
                return .int(v)
            }
            if let n = Int64(t), n >= 0 { return .int(n) }
            throw StorageError.invalid("file_size_limit \(s) is not a size")
        default: throw StorageError.invalid("file_size_limit must be an integer or a size string")
        }
    }

    static func mimeList(_ value: JSONValue) throws -> JSONValue {
        switch value {
        case .null: return .null
        case .array(let items):
            guard items.count <= StorageLimits.mimeTypesMax else { throw StorageError.invalid("at most \(StorageLimits.mimeTypesMax) allowed_mime_types") }
            return .array(try items.map {
                guard case .string(let s) = $0 else { throw StorageError.invalid("allowed_mime_types holds strings") }
                return .string(try StorageNames.mime(s))
            })
        default: throw StorageError.invalid("allowed_mime_types must be a list of strings or null")
        }
    }

    func createBucket(_ body: JSONValue, caller: Caller) async throws -> UInt64 {
        try access.requireService(caller)
        guard case .object(let o) = body, case .string(let rawID)? = o["id"] ?? o["name"] else {
            throw StorageError.invalid("a bucket needs an id")
        }
        let id = try StorageNames.bucket(rawID)
        let name = try StorageNames.bucket(o["name"]?.stringValue ?? id)
        try await ensureCollections()
        let count = try database.snapshot().rowsIfPresent(Query(collection: StorageCollections.buckets, limit: StorageLimits.bucketsMax + 1)).count
        guard count < StorageLimits.bucketsMax else { throw StorageError.invalid("a node holds at most \(StorageLimits.bucketsMax) buckets") }
        let doc: Document = ["id": .string(id), "name": .string(name), "owner": caller.userID.map(JSONValue.string) ?? .null,
                             "public": .bool(o["public"]?.boolValue ?? false),
                             "file_size_limit": try Self.sizeLimit(o["file_size_limit"] ?? .null),
                             "allowed_mime_types": try Self.mimeList(o["allowed_mime_types"] ?? .null),
                             "created_at": now, "updated_at": now]
        return try await database.commit([.insert(collection: StorageCollections.buckets, document: doc)]).lsn
    }

    func updateBucket(_ id: String, _ body: JSONValue, caller: Caller) async throws -> UInt64 {
        try access.requireService(caller)
        _ = try requireBucket(id, database.snapshot())
        guard case .object(let o) = body else { throw StorageError.invalid("the body must be a JSON object") }
        var set: Document = ["updated_at": now]
        if let p = o["public"] {
            guard case .bool(let b) = p else { throw StorageError.invalid("public must be true or false") }
            set["public"] = .bool(b)
        }
        if let limit = o["file_size_limit"] { set["file_size_limit"] = try Self.sizeLimit(limit) }
        if let mimes = o["allowed_mime_types"] { set["allowed_mime_types"] = try Self.mimeList(mimes) }
        return try await database.commit([.update(collection: StorageCollections.buckets, target: .key(.string(id)), set: set)]).lsn
    }

    /// Deletes every object row of the bucket (pages of `pageRows`, each one transaction).
    func emptyBucket(_ id: String, caller: Caller) async throws -> UInt64 {
        try access.requireService(caller)
        _ = try requireBucket(id, database.snapshot())
        var lsn = database.snapshot().lsn
        var examined = 0
        while examined < StorageLimits.examinedRowsMax {
            let page = try database.snapshot().rowsIfPresent(Query(collection: StorageCollections.objects,
                                                                   filter: .compare(field: "bucket_id", op: .eq, value: .string(id)),
                                                                   limit: StorageLimits.pageRows))
            guard !page.isEmpty else { return lsn }
            examined += page.count
            lsn = try await database.commit(page.map { .delete(collection: StorageCollections.objects, target: .key($0["id"] ?? .null)) }).lsn
        }
        throw StorageError.invalid("emptied \(examined) objects; call empty again for the rest")
    }

    func deleteBucket(_ id: String, caller: Caller) async throws -> UInt64 {
        try access.requireService(caller)
        let snapshot = database.snapshot()
        _ = try requireBucket(id, snapshot)
        let any = try snapshot.rowsIfPresent(Query(collection: StorageCollections.objects,
                                                   filter: .compare(field: "bucket_id", op: .eq, value: .string(id)), limit: 1))
        guard any.isEmpty else { throw StorageError.bucketNotEmpty }
        do {
            return try await database.commit([.delete(collection: StorageCollections.buckets, target: .key(.string(id)))]).lsn
        } catch let error as AeroError where error.code == .referenceViolation {
            throw StorageError.bucketNotEmpty  // an upload landed meanwhile
        }
    }

    // MARK: Objects

    struct Upload {
        let bucket: String
        let name: String
        let mime: String
        let cacheControl: String
        let metadata: JSONValue
        let upsert: Bool
        let owner: String?
    }

    /// The byte limit of an upload into `bucket` (the node's, lowered by the bucket's).
    func limit(of bucket: Document) -> Int64 {
        if case .int(let n)? = bucket["file_size_limit"], n > 0 { return min(n, objectBytesMax) }
        return objectBytesMax
    }

    /// Refusals known before any byte is read: bucket, name, MIME type (unless `mime` is false),
    /// duplicate, policy (skipped for a signed upload: its issuer was checked when signing).
    func precheck(_ u: Upload, caller: Caller?, signedUpload: Bool, mime: Bool = true) throws -> Document {
        let snapshot = database.snapshot()
        let bucket = try requireBucket(u.bucket, snapshot)
        _ = try StorageNames.object(u.name)
        if mime { try checkMime(u.mime, bucket) }
        let existing = try object(u.bucket, u.name, snapshot)
        if existing != nil, !u.upsert { throw StorageError.duplicate }
        if !signedUpload, let caller {
            let row = prospectiveRow(u, existing: existing)
            if let existing {
                try access.authorize(caller, .update, row: existing, newRow: row, bucket: bucket, snapshot: snapshot)
            } else {
                try access.authorize(caller, .insert, row: row, bucket: bucket, snapshot: snapshot)
            }
        }
        return bucket
    }

    /// For a signed upload URL: the bucket exists, the name is valid, the issuer may write there
    /// (the MIME type is checked when the bytes come).
    func precheckAccessOnly(_ u: Upload, caller: Caller) throws -> Document {
        try precheck(u, caller: caller, signedUpload: false, mime: false)
    }

    func checkMime(_ mime: String, _ bucket: Document) throws {
        guard case .array(let allowed)? = bucket["allowed_mime_types"] else { return }
        let list = allowed.compactMap(\.stringValue)
        guard StorageNames.mimeAllowed(mime, list) else { throw StorageError.mimeNotAllowed(mime) }
    }

    func prospectiveRow(_ u: Upload, existing: Document?) -> Document {
        ["id": existing?["id"] ?? .string(UUIDText.random()), "bucket_id": .string(u.bucket), "name": .string(u.name),
         "top_folder": StorageNames.folders(u.name).first.map(JSONValue.string) ?? .null,
         "owner": u.owner.map(JSONValue.string) ?? existing?["owner"] ?? .null, "mime_type": .string(u.mime),
         "metadata": u.metadata]
    }

    /// Commits the object row for a durable blob (ST1: the blob is durable, and on replicas per
    /// the commit mode, before this runs). Returns the row and the LSN.
    func commitUpload(_ u: Upload, sha256: String, size: Int64) async throws -> (Document, UInt64) {
        try await ensureCollections()
        let snapshot = database.snapshot()
        let existing = try object(u.bucket, u.name, snapshot)
        if existing != nil, !u.upsert { throw StorageError.duplicate }
        var row = prospectiveRow(u, existing: existing)
        row["sha256"] = .string(sha256)
        row["size"] = .int(size)
        row["cache_control"] = .string(u.cacheControl)
        row["etag"] = .string("\"\(sha256.prefix(32))\"")
        row["updated_at"] = now
        row["last_accessed_at"] = now
        row["created_at"] = existing?["created_at"] ?? now
        let op: WriteOperation = existing != nil
            ? .update(collection: StorageCollections.objects, target: .key(row["id"]!), set: row.filter { $0.key != "id" })
            : .insert(collection: StorageCollections.objects, document: row)
        do {
            let result = try await database.commit([op])
            return (row, result.lsn)
        } catch let error as AeroError where error.code == .duplicateKey {
            throw StorageError.duplicate
        } catch let error as AeroError where error.code == .referenceViolation {
            throw StorageError.bucketNotFound
        }
    }

    static func infoJSON(_ d: Document) -> JSONValue {
        .object(["id": d["id"] ?? .null, "name": d["name"] ?? .null, "bucket_id": d["bucket_id"] ?? .null,
                 "version": d["sha256"] ?? .null, "size": d["size"] ?? .null, "content_type": d["mime_type"] ?? .null,
                 "cache_control": d["cache_control"] ?? .null, "etag": d["etag"] ?? .null,
                 "metadata": d["metadata"] ?? .null, "last_modified": d["updated_at"] ?? .null,
                 "created_at": d["created_at"] ?? .null, "updated_at": d["updated_at"] ?? .null])
    }

    static func listMetadata(_ d: Document) -> JSONValue {
        .object(["eTag": d["etag"] ?? .null, "size": d["size"] ?? .null, "mimetype": d["mime_type"] ?? .null,
                 "cacheControl": .string("max-age=\(d["cache_control"]?.stringValue ?? "3600")"),
                 "lastModified": d["updated_at"] ?? .null, "contentLength": d["size"] ?? .null, "httpStatusCode": .int(200)])
    }

    /// Supabase's folder listing: the entries directly under `prefix/` (files and sub-folders),
    /// filtered by a case-insensitive name prefix `search`, sorted, then offset/limit.
    func list(bucket: String, body: JSONValue, caller: Caller) throws -> JSONValue {
        let snapshot = database.snapshot()
        let b = try requireBucket(bucket, snapshot)
        var folder = body["prefix"]?.stringValue ?? ""
        while folder.hasSuffix("/") { folder.removeLast() }
        let prefix = folder.isEmpty ? "" : folder + "/"
        let limit = try Self.range(body["limit"], "limit", default: 100, 1...StorageLimits.listLimitMax)
        let offset = try Self.range(body["offset"], "offset", default: 0, 0...StorageLimits.examinedRowsMax)
        let search = (body["search"]?.stringValue ?? "").lowercased()
        let column = body["sortBy"]?["column"]?.stringValue ?? "name"
        let descending = body["sortBy"]?["order"]?.stringValue?.lowercased() == "desc"
        guard ["name", "created_at", "updated_at", "last_accessed_at"].contains(column) else {
            throw StorageError.invalid("sortBy.column must be name, created_at, updated_at or last_accessed_at")
        }
        var folders: [String: Bool] = [:]
        var files: [Document] = []
        for row in try objects(bucket, prefix: prefix, snapshot) {
            guard access.allows(caller, .select, row: row, bucket: b, snapshot: snapshot), blobs.exists(row["sha256"]?.stringValue ?? "") else { continue }
            let rest = String((row["name"]?.stringValue ?? "").dropFirst(prefix.count))
            guard search.isEmpty || rest.lowercased().hasPrefix(search) else { continue }
            if let slash = rest.firstIndex(of: "/") { folders[String(rest[..<slash])] = true } else { files.append(row) }
        }
        var entries: [(key: String, sortKey: JSONValue, value: JSONValue)] = folders.keys.map {
            ($0, column == "name" ? .string($0) : .null,
             .object(["name": .string($0), "id": .null, "updated_at": .null, "created_at": .null, "last_accessed_at": .null, "metadata": .null]))
        }
        for f in files {
            let short = String((f["name"]?.stringValue ?? "").dropFirst(prefix.count))
            entries.append((short, column == "name" ? .string(short) : (f[column] ?? .null),
                            .object(["name": .string(short), "id": f["id"] ?? .null, "updated_at": f["updated_at"] ?? .null,
                                     "created_at": f["created_at"] ?? .null, "last_accessed_at": f["last_accessed_at"] ?? .null,
                                     "metadata": Self.listMetadata(f)])))
        }
        entries.sort { a, b in
            var c = JSONValue.compare(a.sortKey, b.sortKey)
            if c == 0 { c = JSONValue.compareUTF8(a.key, b.key) }
            return descending ? c > 0 : c < 0
        }
        return .array(entries.dropFirst(offset).prefix(limit).map(\.value))
    }

    /// storage-api's `list-v2` (`POST /object/list-v2/<bucket>`): objects whose names start
    /// with `prefix` (a plain string prefix, as S3's), in pages of `limit` with an opaque
    /// `cursor`; `with_delimiter` groups names at the next `/` into folders (`name` ends with
    /// `/`). `name` is the full path, `key` the last segment (storage-api's search_v2 columns).
    /// Sort: `sortBy.column` name (default, either order): a keyset walk of the by_path index
    /// from the cursor, a folder skipped in one seek, at most `examineMax` rows per request (a
    /// page cut there is short, with `hasNext` and a cursor where it stopped), so a prefix of
    /// any size is listed page by page (ST6). created_at or updated_at: the prefix is read
    /// whole and sorted (at most `examinedRowsMax` objects; no index orders them).
    func listV2(bucket: String, body: JSONValue, caller: Caller, examineMax: Int = StorageLimits.examinedRowsMax) throws -> JSONValue {
        let snapshot = database.snapshot()
        let b = try requireBucket(bucket, snapshot)
        let prefix = body["prefix"]?.stringValue ?? ""
        guard prefix.utf8.count <= StorageLimits.objectNameBytesMax else { throw StorageError.invalid("prefix is too long") }
        let limit = try Self.range(body["limit"], "limit", default: 100, 1...StorageLimits.listLimitMax)
        let delimiter = body["with_delimiter"]?.boolValue ?? false
        let column = body["sortBy"]?["column"]?.stringValue ?? "name"
        let descending = body["sortBy"]?["order"]?.stringValue?.lowercased() == "desc"
        guard ["name", "created_at", "updated_at"].contains(column) else {
            throw StorageError.invalid("sortBy.column must be name, created_at or updated_at")
        }
        // The cursor: {"n": last name, "v": its sort value} of the previous page, sealed (AES-GCM
        // under SecretDomain.storageListCursor: it may name a row the caller cannot see).
        var after: (value: JSONValue, name: String)?
        if let cursor = body["cursor"]?.stringValue, !cursor.isEmpty {
            guard cursor.utf8.count <= StorageLimits.tokenBytesMax, let c = openCursor(cursor),
                  case .string(let n)? = c["n"] else { throw StorageError.invalid("cursor is not valid") }
            after = (c["v"] ?? .null, n)
        }
        if column == "name" {
            return try listV2ByName(bucket: bucket, b, prefix: prefix, limit: limit, delimiter: delimiter, descending: descending,
                                    after: after?.name, caller: caller, examineMax: examineMax, snapshot)
        }
        var folders: [String: Bool] = [:]
        var entries: [(name: String, sortValue: JSONValue, value: JSONValue)] = []
        for row in try objects(bucket, prefix: prefix, snapshot) {
            guard access.allows(caller, .select, row: row, bucket: b, snapshot: snapshot), blobs.exists(row["sha256"]?.stringValue ?? "") else { continue }
            let name = row["name"]?.stringValue ?? ""
            let rest = name.dropFirst(prefix.count)
            if delimiter, let slash = rest.firstIndex(of: "/") {
                let folder = prefix + rest[..<slash] + "/"
                if folders.updateValue(true, forKey: folder) == nil {
                    entries.append((folder, .null, Self.folderV2(folder)))
                }
                continue
            }
            entries.append((name, row[column] ?? .null, Self.objectV2(row)))
        }
        func order(_ av: JSONValue, _ an: String, _ bv: JSONValue, _ bn: String) -> Bool {
            var c = JSONValue.compare(av, bv)
            if c == 0 { c = JSONValue.compareUTF8(an, bn) }
            return descending ? c > 0 : c < 0
        }
        entries.sort { order($0.sortValue, $0.name, $1.sortValue, $1.name) }
        if let after { entries.removeAll { !order(after.value, after.name, $0.sortValue, $0.name) } }
        let page = Array(entries.prefix(limit))
        return try pageV2(page.map { ($0.name, $0.sortValue, $0.value) }, hasNext: entries.count > limit, cursorName: page.last?.name)
    }

    static func folderV2(_ folder: String) -> JSONValue {
        .object(["key": .string(String(folder.dropLast().split(separator: "/").last ?? "")), "name": .string(folder)])
    }

    static func objectV2(_ row: Document) -> JSONValue {
        let name = row["name"]?.stringValue ?? ""
        return .object(["id": row["id"] ?? .null, "key": .string(String(name.split(separator: "/").last ?? "")),
                        "name": .string(name), "updated_at": row["updated_at"] ?? .null,
                        "created_at": row["created_at"] ?? .null, "last_accessed_at": row["last_accessed_at"] ?? .null,
                        "metadata": Self.listMetadata(row)])
    }

    /// The list-v2 answer: folders and objects of the page, and a cursor after `cursorName`.
    func sealCursor(_ value: JSONValue) throws -> String {
        let box = try AES.GCM.seal(JSON.encode(value), using: SecretDomain.storageListCursor.key(secret))
        guard let combined = box.combined else { throw StorageError.invalid("cursor could not be sealed") }
        return JWT.base64URL(Array(combined))
    }

    func openCursor(_ text: String) -> JSONValue? {
        guard let bytes = JWT.decodeBase64URL(Substring(text)), let box = try? AES.GCM.SealedBox(combined: bytes),
              let plain = try? AES.GCM.open(box, using: SecretDomain.storageListCursor.key(secret)) else { return nil }
        return try? JSON.parse(Array(plain))
    }

    /// `nextCursorKey` names the last entry returned (never a row the walk passed unseen).
    func pageV2(_ page: [(name: String, sortValue: JSONValue, value: JSONValue)], hasNext: Bool, cursorName: String?) throws -> JSONValue {
        var out: [String: JSONValue] = [
            "hasNext": .bool(hasNext),
            "folders": .array(page.filter { $0.value["id"] == nil }.map(\.value)),
            "objects": .array(page.filter { $0.value["id"] != nil }.map(\.value)),
        ]
        if hasNext, let last = cursorName {
            let value = page.last(where: { $0.name == last })?.sortValue ?? .string(last)
            out["nextCursor"] = .string(try sealCursor(.object(["n": .string(last), "v": value])))
            if let shown = page.last?.name { out["nextCursorKey"] = .string(shown) }
        }
        return .object(out)
    }

    /// A bound of a keyset walk over object names.
    struct NameBound: Equatable {
        var name: String
        var inclusive: Bool
    }

    /// The rows of `bucket` strictly between the bounds, in name order (reversed: descending),
    /// through the by_path index (bucket_id equality, one name range, order satisfied).
    func objectPage(_ bucket: String, lower: NameBound?, upper: NameBound?, descending: Bool, limit: Int, _ snapshot: Snapshot) throws -> [Document] {
        var parts: [Filter] = [.compare(field: "bucket_id", op: .eq, value: .string(bucket))]
        if let lower { parts.append(.compare(field: "name", op: lower.inclusive ? .gte : .gt, value: .string(lower.name))) }
        if let upper { parts.append(.compare(field: "name", op: upper.inclusive ? .lte : .lt, value: .string(upper.name))) }
        return try snapshot.rowsIfPresent(Self.pageQuery(parts, descending: descending, limit: limit))
    }

    static func pageQuery(_ parts: [Filter], descending: Bool, limit: Int) -> Query {
        Query(collection: StorageCollections.objects, filter: .and(parts),
              order: [Sort(field: "name", direction: descending ? .desc : .asc)], limit: limit)
    }

    /// The tighter of two lower (or, with `upper`, upper) bounds.
    static func tighter(_ a: NameBound?, _ b: NameBound?, upper: Bool) -> NameBound? {
        guard let a else { return b }
        guard let b else { return a }
        let c = JSONValue.compare(.string(a.name), .string(b.name))
        if c == 0 { return a.inclusive ? b : a }
        return (c > 0) != upper ? a : b
    }

    /// The name just after every name under `folder` (which ends with "/"): "/" is 0x2F, "0"
    /// 0x30, so `a/b0` sorts after every `a/b/...` and before any other name past them.
    static func afterFolder(_ folder: String) -> String { String(folder.dropLast()) + "0" }

    func listV2ByName(bucket: String, _ b: Document, prefix: String, limit: Int, delimiter: Bool, descending: Bool, after: String?,
                      caller: Caller, examineMax: Int, _ snapshot: Snapshot) throws -> JSONValue {
        // The walk's window: the prefix's range, narrowed past the cursor. A cursor naming a
        // folder ("…/") continues past everything under it.
        var lower: NameBound? = prefix.isEmpty ? nil : NameBound(name: prefix, inclusive: true)
        var upper: NameBound? = prefix.isEmpty ? nil : NameBound(name: prefix + "\u{10FFFF}", inclusive: false)
        if let after {
            if descending {
                upper = Self.tighter(upper, NameBound(name: after, inclusive: false), upper: true)
            } else {
                let from = after.hasSuffix("/") ? NameBound(name: Self.afterFolder(after), inclusive: true) : NameBound(name: after, inclusive: false)
                lower = Self.tighter(lower, from, upper: false)
            }
        }
        var entries: [(name: String, sortValue: JSONValue, value: JSONValue)] = []
        var examined = 0
        var lastExamined: String?
        var exhausted = false
        walk: while entries.count <= limit {
            if examined >= examineMax { break }
            let want = min(StorageLimits.pageRows, examineMax - examined)
            let page = try objectPage(bucket, lower: lower, upper: upper, descending: descending, limit: want, snapshot)
            if page.isEmpty { exhausted = true; break }
            for row in page {
                examined += 1
                let name = row["name"]?.stringValue ?? ""
                lastExamined = name
                // Seek past this row for the next query.
                if descending { upper = NameBound(name: name, inclusive: false) } else { lower = NameBound(name: name, inclusive: false) }
                guard name.hasPrefix(prefix) else { continue }
                let visible = access.allows(caller, .select, row: row, bucket: b, snapshot: snapshot)
                    && blobs.exists(row["sha256"]?.stringValue ?? "")
                let rest = name.dropFirst(prefix.count)
                if delimiter, let slash = rest.firstIndex(of: "/") {
                    // A folder is shown once a row under it is visible to the caller (rows it may
                    // not see are walked one by one); then the walk skips the rest of it in one seek.
                    guard visible else { continue }
                    let folder = prefix + rest[..<slash] + "/"
                    entries.append((folder, .string(folder), Self.folderV2(folder)))
                    lastExamined = folder
                    if descending { upper = NameBound(name: folder, inclusive: false) } else { lower = NameBound(name: Self.afterFolder(folder), inclusive: true) }
                    continue walk
                }
                guard visible else { continue }
                entries.append((name, .string(name), Self.objectV2(row)))
                if entries.count > limit { break walk }
            }
            if page.count < want { exhausted = true; break }
        }
        if entries.count > limit {
            let page = Array(entries.prefix(limit))
            return try pageV2(page, hasNext: true, cursorName: page.last?.name)
        }
        // A page cut by `examineMax` is short: it continues from the last row (or folder) examined.
        return try pageV2(entries, hasNext: !exhausted, cursorName: exhausted ? nil : lastExamined)
    }

    static func range(_ value: JSONValue?, _ name: String, default d: Int, _ r: ClosedRange<Int>) throws -> Int {
        guard let value, value != .null else { return d }
        let n: Int64
        switch value {
        case .int(let i): n = i
        case .string(let s): guard let i = Int64(s) else { throw StorageError.invalid("\(name) must be an integer") }; n = i
        default: throw StorageError.invalid("\(name) must be an integer")
        }
        guard n >= Int64(r.lowerBound), n <= Int64(r.upperBound) else {
            throw StorageError.invalid("\(name) must be in \(r.lowerBound)...\(r.upperBound)")
        }
        return Int(n)
    }

    /// Removes the named objects the caller may delete; answers the removed rows (Supabase).
    func remove(bucket: String, paths: [String], caller: Caller) async throws -> ([Document], UInt64) {
        let snapshot = database.snapshot()
        let b = try requireBucket(bucket, snapshot)
        guard paths.count <= StorageLimits.batchPathsMax else { throw StorageError.invalid("at most \(StorageLimits.batchPathsMax) paths") }
        var rows: [Document] = []
        for path in Set(paths) {
            guard let name = try? StorageNames.object(path), let row = try object(bucket, name, snapshot),
                  access.allows(caller, .delete, row: row, bucket: b, snapshot: snapshot) else { continue }
            rows.append(row)
        }
        guard !rows.isEmpty else { return ([], snapshot.lsn) }
        let lsn = try await database.commit(rows.map { .delete(collection: StorageCollections.objects, target: .key($0["id"] ?? .null)) }).lsn
        return (rows.sorted { ($0["name"]?.stringValue ?? "") < ($1["name"]?.stringValue ?? "") }, lsn)
    }

    /// Move or copy within or across buckets (`destinationBucket`); no byte is copied (the row
    /// points at the same blob). A move is one transaction (delete + insert).
    func moveOrCopy(_ body: JSONValue, copy: Bool, caller: Caller) async throws -> (String, UInt64) {
        guard case .string(let bucketID)? = body["bucketId"], case .string(let from)? = body["sourceKey"],
              case .string(let to)? = body["destinationKey"] else {
            throw StorageError.invalid("bucketId, sourceKey and destinationKey are required")
        }
        let targetBucket = body["destinationBucket"]?.stringValue ?? bucketID
        let snapshot = database.snapshot()
        let source = try requireBucket(bucketID, snapshot)
        let target = try requireBucket(targetBucket, snapshot)
        let toName = try StorageNames.object(to)
        guard let row = try object(bucketID, try StorageNames.object(from), snapshot) else { throw StorageError.objectNotFound }
        guard try object(targetBucket, toName, snapshot) == nil else { throw StorageError.duplicate }
        try checkMime(row["mime_type"]?.stringValue ?? "", target)
        if case .int(let size)? = row["size"], size > limit(of: target) { throw StorageError.tooLarge(limit(of: target)) }
        var new = row
        new["id"] = .string(UUIDText.random())
        new["bucket_id"] = .string(targetBucket)
        new["name"] = .string(toName)
        new["top_folder"] = StorageNames.folders(toName).first.map(JSONValue.string) ?? .null
        new["updated_at"] = now
        if copy {
            new["created_at"] = now
            if let uid = caller.userID { new["owner"] = .string(uid) }
        }
        try access.authorize(caller, copy ? .select : .update, row: row, bucket: source, snapshot: snapshot)
        try access.authorize(caller, .insert, row: new, bucket: target, snapshot: snapshot)
        var ops: [WriteOperation] = [.insert(collection: StorageCollections.objects, document: new)]
        if !copy {
            try access.authorize(caller, .delete, row: row, bucket: source, snapshot: snapshot)
            ops.insert(.delete(collection: StorageCollections.objects, target: .key(row["id"]!)), at: 0)
        }
        do {
            return ("\(targetBucket)/\(toName)", try await database.commit(ops).lsn)
        } catch let error as AeroError where error.code == .duplicateKey {
            throw StorageError.duplicate
        }
    }
}
