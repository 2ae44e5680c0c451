// Every limit of the storage front end (docs/LIMITS.md lists them).

public enum StorageLimits {
    /// Longest object name in UTF-8 bytes (Supabase Storage's key limit).
    public static let objectNameBytesMax = 1_024
    /// Path segments of an object name (folders nest at most this deep).
    public static let objectNameSegmentsMax = 64
    /// Longest bucket id/name (Supabase: 100 characters).
    public static let bucketNameBytesMax = 100
    /// Largest object a node accepts, whatever the bucket says (bucket limits may only lower it).
    public static let objectBytesMaxDefault: Int64 = 5 << 30
    /// Buckets per node: the bucket list is answered in one response.
    public static let bucketsMax = 1_000
    /// Entries of `allowed_mime_types` per bucket, and length of one.
    public static let mimeTypesMax = 100
    public static let mimeTypeBytesMax = 255
    /// Rows one `list`, `remove` or `create_signed_urls` call may name or return.
    public static let listLimitMax = 1_000
    public static let batchPathsMax = 1_000
    /// Object rows a list/empty/delete may examine in one request (pages of `pageRows`): past
    /// it the request is refused with a message; keeps every request bounded (Q1's spirit).
    public static let examinedRowsMax = 100_000
    static let pageRows = 1_000
    /// Bytes read from disk per chunk of a download and per write of a replica push.
    public static let chunkBytes = 256 << 10
    /// Non-file multipart fields (cacheControl, metadata) are held in memory up to this size.
    public static let multipartFieldBytesMax = 64 << 10
    /// Multipart part headers, all together.
    public static let multipartHeaderBytesMax = 16 << 10
    /// User metadata JSON of one object.
    public static let metadataBytesMax = 16 << 10
    /// Signed URL lifetimes: at least a second, at most a year.
    public static let signedURLSecondsMax: Int64 = 365 * 86_400
    /// Signed upload URLs live two hours (Supabase's value).
    public static let signedUploadSeconds: Int64 = 2 * 3_600
    /// Signed tokens are at most this long (a longer one is refused before any parsing).
    public static let tokenBytesMax = 4_096
    /// A blob no row references is removed only once it is this old (an upload between its
    /// blob's rename and its metadata commit is never collected).
    public static let collectGraceSeconds: Int64 = 3_600
    /// How often each node collects unreferenced blobs.
    public static let collectIntervalSeconds: Int64 = 600
    /// Longest a replica push or a blob fetch between nodes may take.
    public static let peerTransferTimeoutSeconds: Int64 = 600
    /// Pending TUS uploads per node (each holds a directory and a reservation).
    public static let resumableUploadsMax = 1_000
    /// Declared lengths of all pending TUS uploads of a node together (disk reserved for them).
    public static let resumableBytesMax: Int64 = 64 << 30
    /// One share's part of those (ResumableShare: a signed-in user, all anonymous callers
    /// together, the signed upload URLs of one issuer; the service role has only the node's):
    /// one caller cannot take every slot for 24 h. The bytes fit one object of the node's
    /// default limit (5 GiB) with room to spare.
    public static let resumableUploadsPerShareMax = 100
    public static let resumableBytesPerShareMax: Int64 = 8 << 30
    /// A TUS upload is removed this long after its creation, finished or not (Supabase: 24 h).
    public static let resumableRetentionSeconds: Int64 = 86_400
    /// `Upload-Metadata` header, and one upload's info.json on disk.
    public static let resumableMetadataBytesMax = 16 << 10
    public static let resumableInfoBytesMax = 64 << 10
    /// A TUS PATCH whose body sends no byte for this long is ended (408; the bytes so far count):
    /// the upload is free again for the client's resumed request.
    public static let resumableStallMillis = 30_000
    /// Longest upload id in a TUS URL (base64url of bucket/name/uuid).
    public static let resumableIDBytesMax = 2_048
}
