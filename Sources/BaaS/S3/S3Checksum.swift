// S3 additional checksums (x-amz-checksum-*) and Content-MD5, verified against the bytes received.
//
// Wire forms (docs/STORAGE.md "S3"):
//   header:  x-amz-checksum-<alg>: <base64 of the big-endian digest>   (at most one such header)
//   trailer: x-amz-trailer: x-amz-checksum-<alg>, then the same line after the aws-chunked zero
//            chunk (S3ChunkDecoder.trailers)
//   Content-MD5: <base64 of the 16-byte MD5>
// Algorithms: crc32 (reflected 0x04C11DB7), crc32c (reflected 0x1EDC6F41), crc64nvme (reflected
// 0xAD93D23594C93659), sha1, sha256; the CRCs start at all ones and end xored with all ones.
// Invariants: the digests are computed while the body streams (never the object in memory);
// the verdict comes after the last byte and before anything names the bytes (the caller drops
// the staged blob on a mismatch: BadDigest 400, nothing stored); a value that is not the
// base64 of a digest of the right length is InvalidRequest/InvalidDigest (400), never accepted.

import Crypto
import Foundation

enum S3ChecksumAlgorithm: String, CaseIterable, Sendable {
    case crc32, crc32c, crc64nvme, sha1, sha256

    var header: String { "x-amz-checksum-" + rawValue }
    var digestBytes: Int {
        switch self {
        case .crc32, .crc32c: 4
        case .crc64nvme: 8
        case .sha1: 20
        case .sha256: 32
        }
    }
}

/// Table-driven reflected CRCs (eight table lookups per eight bytes).
enum S3CRC {
    /// A reflected CRC of at most 64 bits computed eight bytes at a time (slicing-by-8):
    /// `tables[k * 256 + b]` is the CRC register after byte `b` followed by `k` zero bytes, so one
    /// step folds eight bytes with eight lookups; the tail goes a byte at a time through table 0.
    /// A byte at a time, the CRC was a fifth of the node's CPU in an S3 upload with the AWS CLI's
    /// default CRC32 checksum (docs/BENCHMARKS.md "s37").
    struct Sliced<W: FixedWidthInteger & UnsignedInteger & Sendable>: Sendable {
        let tables: [W]

        /// `polynomial`: reflected (bit-reversed) form.
        init(polynomial: W) {
            var t = [W](repeating: 0, count: 8 * 256)
            for i in 0..<256 {
                var c = W(i)
                for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ polynomial : c >> 1 }
                t[i] = c
            }
            for k in 1..<8 {
                for i in 0..<256 {
                    let previous = t[(k - 1) * 256 + i]
                    t[k * 256 + i] = (previous >> 8) ^ t[Int(truncatingIfNeeded: previous & 0xFF)]
                }
            }
            tables = t
        }

        /// Running register `crc` (start at all ones; the digest is `~crc`) after `bytes`.
        func update(_ crc: W, _ bytes: UnsafeRawBufferPointer) -> W {
            var c = UInt64(truncatingIfNeeded: crc)
            let n = bytes.count
            var i = 0
            tables.withUnsafeBufferPointer { t in
                func at(_ k: Int, _ x: UInt64) -> UInt64 { UInt64(truncatingIfNeeded: t[k &* 256 &+ Int(truncatingIfNeeded: x & 0xFF)]) }
                while n &- i >= 8 {
                    let x = c ^ UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    c = at(7, x) ^ at(6, x >> 8) ^ at(5, x >> 16) ^ at(4, x >> 24)
                        ^ at(3, x >> 32) ^ at(2, x >> 40) ^ at(1, x >> 48) ^ at(0, x >> 56)
                    i &+= 8
                }
                while i < n {
                    c = at(0, c ^ UInt64(bytes[i])) ^ (c >> 8)
                    i &+= 1
                }
            }
            return W(truncatingIfNeeded: c)
        }
    }

    static let crc32 = Sliced<UInt32>(polynomial: 0xEDB8_8320)
    static let crc32c = Sliced<UInt32>(polynomial: 0x82F6_3B78)
    /// 0xAD93D23594C93659 bit-reversed.
    static let crc64nvme = Sliced<UInt64>(polynomial: 0x9A6C_9329_AC4B_C9B5)
}

/// The checksums one request asks to verify, computed as its body streams.
struct S3Checksums {
    let algorithm: S3ChecksumAlgorithm?
    /// The expected value from the header; nil with the trailer form (read at the end).
    let expected: String?
    let fromTrailer: Bool
    let md5Expected: [UInt8]?
    var crc32: UInt32 = 0xFFFF_FFFF
    var crc64: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
    var sha1 = Insecure.SHA1()
    var sha256 = SHA256()
    var md5 = Insecure.MD5()

    static func invalidDigest(_ why: String) -> S3Error { S3Error(400, "InvalidDigest", why, aero: "AERO_S3_INVALID_DIGEST") }

    init(headers: [String: String]) throws {
        let present = S3ChecksumAlgorithm.allCases.filter { headers[$0.header] != nil }
        guard present.count <= 1 else {
            throw S3Error(400, "InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                          aero: "AERO_S3_INVALID_DIGEST")
        }
        var algorithm = present.first
        var fromTrailer = false
        if let trailer = headers["x-amz-trailer"]?.trimmingCharacters(in: .whitespaces).lowercased(), !trailer.isEmpty {
            guard algorithm == nil, let a = S3ChecksumAlgorithm.allCases.first(where: { $0.header == trailer }) else {
                throw S3Error(400, "InvalidRequest", "x-amz-trailer must name one x-amz-checksum-* (crc32, crc32c, crc64nvme, sha1, sha256) and no header may carry one too",
                              aero: "AERO_S3_INVALID_DIGEST")
            }
            algorithm = a
            fromTrailer = true
        }
        if algorithm == nil, let sdk = headers["x-amz-sdk-checksum-algorithm"], S3ChecksumAlgorithm(rawValue: sdk.lowercased()) == nil {
            throw S3Error(400, "InvalidRequest", "x-amz-sdk-checksum-algorithm \(sdk) is not one of CRC32, CRC32C, CRC64NVME, SHA1, SHA256",
                          aero: "AERO_S3_INVALID_DIGEST")
        }
        self.algorithm = algorithm
        self.fromTrailer = fromTrailer
        self.expected = fromTrailer ? nil : algorithm.flatMap { headers[$0.header] }
        if let md5 = headers["content-md5"] {
            guard let bytes = Data(base64Encoded: md5.trimmingCharacters(in: .whitespaces)), bytes.count == 16 else {
                throw Self.invalidDigest("The Content-MD5 you specified was invalid.")
            }
            md5Expected = Array(bytes)
        } else {
            md5Expected = nil
        }
        if let algorithm, let expected { try Self.checkShape(algorithm, expected) }
    }

    static func checkShape(_ algorithm: S3ChecksumAlgorithm, _ value: String) throws {
        guard let bytes = Data(base64Encoded: value), bytes.count == algorithm.digestBytes else {
            throw S3Error(400, "InvalidRequest", "Value for \(algorithm.header) header is invalid.", aero: "AERO_S3_INVALID_DIGEST")
        }
    }

    var active: Bool { algorithm != nil || md5Expected != nil }

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if md5Expected != nil { md5.update(bufferPointer: bytes) }
        switch algorithm {
        case .crc32: crc32 = S3CRC.crc32.update(crc32, bytes)
        case .crc32c: crc32 = S3CRC.crc32c.update(crc32, bytes)
        case .crc64nvme: crc64 = S3CRC.crc64nvme.update(crc64, bytes)
        case .sha1: sha1.update(bufferPointer: bytes)
        case .sha256: sha256.update(bufferPointer: bytes)
        case nil: break
        }
    }

    /// The computed value of the algorithm (base64, as the header carries it).
    func value() -> String? {
        guard let algorithm else { return nil }
        let bytes: [UInt8]
        switch algorithm {
        case .crc32, .crc32c: bytes = withUnsafeBytes(of: (~crc32).bigEndian) { Array($0) }
        case .crc64nvme: bytes = withUnsafeBytes(of: (~crc64).bigEndian) { Array($0) }
        case .sha1: bytes = Array(sha1.finalize())
        case .sha256: bytes = Array(sha256.finalize())
        }
        return Data(bytes).base64EncodedString()
    }

    /// After the last byte: throws BadDigest on a mismatch; the verified (header name, value).
    func verify(trailers: [String: String]) throws -> (String, String)? {
        if let md5Expected, Array(md5.finalize()) != md5Expected {
            throw S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.", aero: "AERO_S3_BAD_DIGEST")
        }
        guard let algorithm, let computed = value() else { return nil }
        let expect: String
        if fromTrailer {
            guard let t = trailers[algorithm.header] else {
                throw S3Error.incompleteBody("x-amz-trailer announced \(algorithm.header) and the body's trailer did not carry it")
            }
            try Self.checkShape(algorithm, t)
            expect = t
        } else {
            expect = expected ?? ""
        }
        guard let a = Data(base64Encoded: expect), a == Data(base64Encoded: computed) else {
            throw S3Error(400, "BadDigest", "The \(algorithm.rawValue.uppercased()) you specified did not match the calculated checksum.",
                          aero: "AERO_S3_BAD_DIGEST")
        }
        return (algorithm.header, computed)
    }
}
