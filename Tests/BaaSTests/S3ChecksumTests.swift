// S3Checksums (x-amz-checksum-*, Content-MD5): the CRCs on their catalogued check values
// ("123456789"), streaming in pieces equal to one pass, header/trailer forms and BadDigest.
// End to end with boto3 and raw SigV4 requests: Tests/Compat/test_s3.py
// test_checksums_are_verified_bad_digest_stores_nothing.

import Crypto
import Foundation
import Testing
@testable import BaaS

@Suite struct S3ChecksumTests {
    static func b64(_ v: UInt64, bytes: Int) -> String {
        Data(withUnsafeBytes(of: v.bigEndian) { Array($0.suffix(bytes)) }).base64EncodedString()
    }

    static func run(_ headers: [String: String], _ data: [UInt8], pieces: Int = 1, trailers: [String: String] = [:]) throws -> (String, String)? {
        var sums = try S3Checksums(headers: headers)
        let step = max(1, data.count / pieces)
        var i = 0
        while i < data.count {
            let end = min(data.count, i + step)
            data[i..<end].withUnsafeBytes { sums.update($0) }
            i = end
        }
        return try sums.verify(trailers: trailers)
    }

    @Test func crcsMatchTheirCheckValues() throws {
        let check = Array("123456789".utf8)
        let cases: [(S3ChecksumAlgorithm, UInt64)] = [(.crc32, 0xCBF4_3926), (.crc32c, 0xE306_9283), (.crc64nvme, 0xAE8B_1486_0A79_9888)]
        for (alg, value) in cases {
            let good = Self.b64(value, bytes: alg.digestBytes)
            #expect(try Self.run([alg.header: good], check)?.1 == good)
            #expect(try Self.run([alg.header: good], check, pieces: 4)?.1 == good)
            #expect(throws: S3Error.self) { try Self.run([alg.header: Self.b64(value ^ 1, bytes: alg.digestBytes)], check) }
        }
    }

    @Test func shaAndMD5AreVerifiedAndMismatchIsBadDigest() throws {
        let data = Array(repeating: UInt8(7), count: 10_000)
        let sha1 = Data(Insecure.SHA1.hash(data: data)).base64EncodedString()
        #expect(try Self.run(["x-amz-checksum-sha1": sha1], data, pieces: 7)?.1 == sha1)
        let md5 = Data(Insecure.MD5.hash(data: data)).base64EncodedString()
        #expect(try Self.run(["content-md5": md5], data) == nil)
        do {
            _ = try Self.run(["content-md5": Data(Insecure.MD5.hash(data: [1])).base64EncodedString()], data)
            Issue.record("a wrong Content-MD5 was accepted")
        } catch let e as S3Error { #expect(e.code == "BadDigest" && e.status == 400) }
        // A value of the wrong length or two algorithms at once: refused before any byte.
        #expect(throws: S3Error.self) { try S3Checksums(headers: ["x-amz-checksum-sha256": sha1]) }
        #expect(throws: S3Error.self) { try S3Checksums(headers: ["x-amz-checksum-sha1": sha1, "x-amz-checksum-crc32": "AAAAAA=="]) }
    }

    /// A CRC register a bit at a time, straight from the definition (reflected polynomial).
    static func bitwise(_ crc: UInt64, _ polynomial: UInt64, _ bytes: ArraySlice<UInt8>) -> UInt64 {
        var c = crc
        for b in bytes {
            c ^= UInt64(b)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ polynomial : c >> 1 }
        }
        return c
    }

    /// Eight bytes at a time equals a bit at a time for every length and alignment, and a body
    /// fed in uneven pieces equals one pass.
    @Test func slicedCRCsEqualTheBitwiseDefinition() {
        var random = SystemRandomNumberGenerator()
        let data = (0..<300).map { _ in UInt8.random(in: 0...255, using: &random) }
        for start in 0..<9 {
            for end in stride(from: start, through: data.count, by: 7) {
                let piece = data[start..<end]
                piece.withUnsafeBytes { bytes in
                    #expect(UInt64(S3CRC.crc32.update(0xFFFF_FFFF, bytes)) == Self.bitwise(0xFFFF_FFFF, 0xEDB8_8320, piece))
                    #expect(UInt64(S3CRC.crc32c.update(0xFFFF_FFFF, bytes)) == Self.bitwise(0xFFFF_FFFF, 0x82F6_3B78, piece))
                    #expect(S3CRC.crc64nvme.update(~0, bytes) == Self.bitwise(~0, 0x9A6C_9329_AC4B_C9B5, piece))
                }
            }
        }
        let whole = data.withUnsafeBytes { S3CRC.crc64nvme.update(~0, $0) }
        var running: UInt64 = ~0
        for range in [0..<3, 3..<20, 20..<21, 21..<300] {
            running = data[range].withUnsafeBytes { S3CRC.crc64nvme.update(running, $0) }
        }
        #expect(running == whole)
    }

    @Test func trailerFormIsReadAtTheEnd() throws {
        let data = Array("hello".utf8)
        let crc = data.withUnsafeBytes { S3CRC.crc32.update(0xFFFF_FFFF, $0) }
        let good = Self.b64(UInt64(~crc), bytes: 4)
        let headers = ["x-amz-trailer": "x-amz-checksum-crc32"]
        #expect(try Self.run(headers, data, trailers: ["x-amz-checksum-crc32": good])?.1 == good)
        #expect(throws: S3Error.self) { try Self.run(headers, data, trailers: ["x-amz-checksum-crc32": "AAAAAA=="]) }
        #expect(throws: S3Error.self) { try Self.run(headers, data, trailers: [:]) }
    }
}
