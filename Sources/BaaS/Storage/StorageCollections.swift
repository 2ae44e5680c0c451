// The storage system collections (SPEC §3.2: system data lives in the kernel, durable,
// replicated and backed up with everything else). Object rows reference blobs by SHA-256
// (BlobStore); a row is committed only after its blob is durable (ST1).
//
// `_storage_buckets`: id (text key), name, owner, public, file_size_limit, allowed_mime_types.
// `_storage_objects`: id (uuid key), bucket_id -> bucket (restrict: a bucket with objects cannot
// be dropped), name (unique per bucket), owner, sha256, size, mime_type, cache_control, etag,
// metadata (user metadata), timestamps.

import Kernel

enum StorageCollections {
    static let buckets = "_storage_buckets"
    static let policies = "_storage_policies"
    static let objects = "_storage_objects"

    static func field(_ type: String, nullable: Bool = true, default value: String? = nil) -> JSONValue {
        AuthCollections.field(type, nullable: nullable, default: value)
    }

    static let all: [JSONValue] = [
        AuthCollections.schema(buckets, key: "id", [
            "id": field("text", nullable: false), "name": field("text", nullable: false), "owner": field("text"),
            "public": field("bool", nullable: false), "file_size_limit": field("int"), "allowed_mime_types": field("json"),
            "created_at": AuthCollections.created, "updated_at": AuthCollections.created,
        ], [AuthCollections.index("by_name", ["name"], unique: true)]),
        .object([
            "name": .string(objects), "primary_key": .string("id"),
            "fields": .object([
                "id": field("uuid", nullable: false),
                "bucket_id": .object(["type": .string("text"), "nullable": .bool(false), "required": .bool(true),
                                      "references": .object(["collection": .string(buckets), "on_delete": .string("restrict")])]),
                "name": field("text", nullable: false), "owner": field("text"), "sha256": field("text", nullable: false),
                // The first folder of the name (`storage.foldername(name)[1]` in policies), null at the top.
                "top_folder": field("text"),
                "size": field("int", nullable: false), "mime_type": field("text", nullable: false),
                "cache_control": field("text", nullable: false), "etag": field("text", nullable: false),
                "metadata": field("json"), "created_at": AuthCollections.created, "updated_at": AuthCollections.created,
                "last_accessed_at": AuthCollections.created,
            ]),
            "indexes": .array([AuthCollections.index("by_path", ["bucket_id", "name"], unique: true),
                               AuthCollections.index("by_sha256", ["sha256"])]),
        ]),
        AuthCollections.schema(policies, key: "name", [
            "name": field("text", nullable: false), "operation": field("text", nullable: false),
            "roles": field("json", nullable: false), "using": field("text"), "check": field("text"),
            "created_at": AuthCollections.created,
        ], []),
    ]
}

/// Object and bucket names (docs/STORAGE.md "Names"). Refused: empty, over-long, NUL and other
/// control characters, a leading `/` (absolute), empty, `.` or `..` segments, a backslash.
enum StorageNames {
    static func object(_ name: String) throws -> String {
        guard !name.isEmpty else { throw StorageError.invalidKey("the object name is empty") }
        guard name.utf8.count <= StorageLimits.objectNameBytesMax else {
            throw StorageError.invalidKey("the object name is longer than \(StorageLimits.objectNameBytesMax) bytes")
        }
        guard !name.hasPrefix("/") else { throw StorageError.invalidKey("\(name) is absolute") }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0 == "\\" }) else {
            throw StorageError.invalidKey("the object name holds a control character or a backslash")
        }
        let segments = name.split(separator: "/", omittingEmptySubsequences: false)
        guard segments.count <= StorageLimits.objectNameSegmentsMax else {
            throw StorageError.invalidKey("more than \(StorageLimits.objectNameSegmentsMax) path segments")
        }
        for segment in segments where segment.isEmpty || segment == "." || segment == ".." {
            throw StorageError.invalidKey("\(name) has an empty, . or .. segment")
        }
        return name
    }

    static func bucket(_ id: String) throws -> String {
        guard !id.isEmpty, id.utf8.count <= StorageLimits.bucketNameBytesMax else {
            throw StorageError.invalidBucketName("1 to \(StorageLimits.bucketNameBytesMax) bytes")
        }
        guard id.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f && $0 != "/" && $0 != "\\" }),
              id != ".", id != ".." else {
            throw StorageError.invalidBucketName("printable ASCII without spaces or slashes")
        }
        return id
    }

    /// `storage.foldername(name)`: the folders of an object name (all segments but the last).
    static func folders(_ name: String) -> [String] {
        Array(name.split(separator: "/").dropLast().map(String.init))
    }

    /// MIME types: `type/subtype` with token characters (a parameter part after `;` is kept).
    static func mime(_ text: String) throws -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.utf8.count <= StorageLimits.mimeTypeBytesMax,
              trimmed.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7f }) else {
            throw StorageError.invalid("invalid content type")
        }
        return trimmed
    }

    /// `image/*` matches `image/png`; parameters are ignored when comparing.
    static func mimeAllowed(_ mime: String, _ allowed: [String]) -> Bool {
        let base = mime.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        for pattern in allowed.map({ $0.lowercased() }) {
            if pattern == base || pattern == "*/*" { return true }
            if pattern.hasSuffix("/*"), base.hasPrefix(pattern.dropLast()) { return true }
        }
        return false
    }
}

import Foundation
