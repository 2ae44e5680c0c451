// Request bodies of S3 operations: the payload modes of SigV4 (x-amz-content-sha256):
// - 64 hex digits: the SHA-256 of the body, checked after the last byte and before anything
//   names the bytes (a mismatch is XAmzContentSHA256Mismatch, the staged blob is dropped);
// - UNSIGNED-PAYLOAD: not checked (the headers, URI and query still are);
// - STREAMING-*: aws-chunked (S3ChunkDecoder), each chunk's signature checked as it arrives.
// x-amz-checksum-* (header or aws-chunked trailer) and Content-MD5 are computed as the bytes
// stream and verified after the last one (S3Checksums; BadDigest, the staged blob dropped).
// Object bytes stream into a BlobStore writer (never a whole object in memory), whose own SHA-256
// (the blob's content address) is the one the 64-hex mode checks: the body is hashed once; XML
// bodies are collected up to S3Limits.xmlBodyBytesMax.

import Crypto
import Hummingbird
import NIOCore

enum S3Body {
    static func isHex64(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }
    }

    /// Streams the decoded payload into `sink`, checking it per the payload mode and the
    /// x-amz-checksum-* / Content-MD5 it carries (S3Checksums); the verified checksum header.
    /// `sinkSHA256`: the lowercase hex SHA-256 of every byte `sink` was given, when the sink
    /// hashes them itself (a BlobWriter); otherwise the 64-hex mode hashes them here.
    @discardableResult
    static func stream(_ request: Request, _ auth: S3Auth, sinkSHA256: (() -> String)? = nil,
                       _ sink: (UnsafeRawBufferPointer) throws -> Void) async throws -> (String, String)? {
        let signed = auth.signed
        var sums = try S3Checksums(headers: auth.headers)
        let check = sums.active
        if signed.isStreaming {
            guard [S3SignedRequest.streamingSigned, S3SignedRequest.streamingSignedTrailer, S3SignedRequest.streamingUnsignedTrailer]
                .contains(signed.payloadHash) else { throw S3Error.notImplemented("x-amz-content-sha256 \(signed.payloadHash)") }
            var decoder = S3ChunkDecoder(request: signed, signingKey: auth.signingKey)
            for try await chunk in request.body {
                try chunk.withUnsafeReadableBytes {
                    try decoder.feed($0) { bytes in
                        if check { sums.update(bytes) }
                        try sink(bytes)
                    }
                }
            }
            try decoder.finish()
            if let d = auth.headers["x-amz-decoded-content-length"], let n = Int64(d), n != decoder.decodedBytes {
                throw S3Error.incompleteBody("x-amz-decoded-content-length says \(n) bytes, the chunks held \(decoder.decodedBytes)")
            }
            return try sums.verify(trailers: decoder.trailers)
        }
        let expect: String? = isHex64(signed.payloadHash) ? signed.payloadHash.lowercased() : nil
        guard expect != nil || signed.payloadHash == S3SignedRequest.unsigned else {
            throw S3Error.invalidArgument("x-amz-content-sha256 must be 64 hex digits, UNSIGNED-PAYLOAD or a STREAMING- mode")
        }
        let hashHere = expect != nil && sinkSHA256 == nil
        var hasher = SHA256()
        for try await chunk in request.body {
            try chunk.withUnsafeReadableBytes {
                if hashHere { hasher.update(bufferPointer: $0) }
                if check { sums.update($0) }
                try sink($0)
            }
        }
        if let expect, (sinkSHA256?() ?? S3SigV4.hex(hasher.finalize())) != expect { throw S3Error.badDigest }
        return try sums.verify(trailers: [:])
    }

    /// The body, at most `S3Limits.xmlBodyBytesMax` bytes.
    static func collect(_ request: Request, _ auth: S3Auth) async throws -> [UInt8] {
        var out: [UInt8] = []
        try await stream(request, auth) { bytes in
            guard out.count + bytes.count <= S3Limits.xmlBodyBytesMax else {
                throw S3Error.malformedXML("the request body is larger than \(S3Limits.xmlBodyBytesMax) bytes")
            }
            out.append(contentsOf: bytes)
        }
        return out
    }

    /// The payload as a durable blob (ST1) of at most `limit` bytes.
    /// `checksum`: the verified x-amz-checksum-* (header name, value), S3 echoes it.
    static func toBlob(_ request: Request, _ auth: S3Auth, service: StorageService, limit: Int64) async throws
        -> (sha256: String, size: Int64, checksum: (String, String)?) {
        let declared = auth.signed.isStreaming ? auth.headers["x-amz-decoded-content-length"] : auth.headers["content-length"]
        if let d = declared, let n = Int64(d), n > limit { throw S3Error.entityTooLarge(limit) }
        let writer = try service.blobs.writer(limitBytes: limit)
        let checksum: (String, String)?
        do {
            checksum = try await stream(request, auth, sinkSHA256: { writer.sha256Hex }) { try writer.write($0) }
        } catch {
            writer.abort()
            if let st = error as? StorageError, st.code == "AERO_STORAGE_TOO_LARGE" { throw S3Error.entityTooLarge(limit) }
            throw error
        }
        let (sha, size) = try writer.finish()
        return (sha, size, checksum)
    }
}
