// SigV4, aws-chunked and the S3 XML reader against AWS's published examples (S3 API reference,
// "Signature Calculations for the Authorization Header", "Query String Authentication",
// "Transferring Payload in Multiple Chunks"); boto3/awscli end to end: Tests/Compat/test_s3.py.

import Crypto
import Testing
@testable import BaaS

@Suite struct S3SigV4Tests {
    static let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    static let day = S3SigV4.seconds(amzDate: "20130524T000000Z")!

    @Test func headerFormGetObjectMatchesAWSExample() throws {
        let headers = [
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            "host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
            "x-amz-content-sha256": S3SigV4.emptySHA256, "x-amz-date": "20130524T000000Z",
        ]
        let r = try S3SigV4.parse(headers: headers, query: [])
        try S3SigV4.checkTime(r, region: "us-east-1", nowSeconds: Self.day + 60)
        _ = try S3SigV4.verify(r, secret: Self.secret, method: "GET", rawPath: "/test.txt", query: [], headers: headers)
        #expect(throws: S3Error.signatureDoesNotMatch) {
            try S3SigV4.verify(r, secret: "wrong", method: "GET", rawPath: "/test.txt", query: [], headers: headers)
        }
        var tampered = headers
        tampered["range"] = "bytes=0-10"
        #expect(throws: S3Error.signatureDoesNotMatch) {
            try S3SigV4.verify(r, secret: Self.secret, method: "GET", rawPath: "/test.txt", query: [], headers: tampered)
        }
        // Clock skew: 15 minutes either way, not more; the wrong region is refused.
        try S3SigV4.checkTime(r, region: "us-east-1", nowSeconds: Self.day - S3Limits.clockSkewSeconds)
        #expect(throws: S3Error.requestTimeTooSkewed) { try S3SigV4.checkTime(r, region: "us-east-1", nowSeconds: Self.day + S3Limits.clockSkewSeconds + 1) }
        #expect(throws: S3Error.self) { try S3SigV4.checkTime(r, region: "local", nowSeconds: Self.day) }
    }

    @Test func presignedQueryFormMatchesAWSExampleAndExpires() throws {
        let raw = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        let query = S3SigV4.queryPairs(raw)
        let headers = ["host": "examplebucket.s3.amazonaws.com"]
        let r = try S3SigV4.parse(headers: headers, query: query)
        #expect(r.presigned && r.expires == 86_400)
        try S3SigV4.checkTime(r, region: "us-east-1", nowSeconds: Self.day + 86_400)
        #expect(throws: S3Error.accessDenied("Request has expired")) { try S3SigV4.checkTime(r, region: "us-east-1", nowSeconds: Self.day + 86_401) }
        _ = try S3SigV4.verify(r, secret: Self.secret, method: "GET", rawPath: "/test.txt", query: query, headers: headers)
        // More than 7 days is refused when parsed.
        let long = raw.replacingOccurrences(of: "X-Amz-Expires=86400", with: "X-Amz-Expires=604801")
        #expect(throws: S3Error.self) { try S3SigV4.parse(headers: headers, query: S3SigV4.queryPairs(long)) }
    }

    /// AWS's 66,560-byte example: 64 KiB + 1 KiB chunks then the empty one, each signature chained.
    @Test func awsChunkedSignaturesMatchAWSExample() throws {
        let headers = [
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            "content-encoding": "aws-chunked", "content-length": "66824", "host": "s3.amazonaws.com",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": "20130524T000000Z",
            "x-amz-decoded-content-length": "66560", "x-amz-storage-class": "REDUCED_REDUNDANCY",
        ]
        let r = try S3SigV4.parse(headers: headers, query: [])
        let key = try S3SigV4.verify(r, secret: Self.secret, method: "PUT", rawPath: "/examplebucket/chunkObject.txt", query: [], headers: headers)
        func body(_ sigs: [String]) -> [UInt8] {
            var b: [UInt8] = []
            b += Array("10000;chunk-signature=\(sigs[0])\r\n".utf8) + [UInt8](repeating: 97, count: 65_536) + [13, 10]
            b += Array("400;chunk-signature=\(sigs[1])\r\n".utf8) + [UInt8](repeating: 97, count: 1_024) + [13, 10]
            b += Array("0;chunk-signature=\(sigs[2])\r\n\r\n".utf8)
            return b
        }
        let good = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
        #expect(body(good).count == 66_824)
        // Fed in awkward pieces: the decoder keeps its state across them.
        var decoder = S3ChunkDecoder(request: r, signingKey: key)
        var out: [UInt8] = []
        let bytes = body(good)
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + 7_777)
            try bytes[i..<j].withUnsafeBytes { try decoder.feed($0) { out += $0 } }
            i = j
        }
        try decoder.finish()
        #expect(out == [UInt8](repeating: 97, count: 66_560) && decoder.decodedBytes == 66_560)
        // A chunk whose signature is wrong ends the request.
        var bad = S3ChunkDecoder(request: r, signingKey: key)
        var wrong = good
        wrong[1] = String(repeating: "0", count: 64)
        #expect(throws: S3Error.signatureDoesNotMatch) { try body(wrong).withUnsafeBytes { try bad.feed($0) { _ in } } }
        // A body cut before its last chunk is incomplete.
        var cut = S3ChunkDecoder(request: r, signingKey: key)
        try Array(body(good).prefix(70_000 - 3_500)).withUnsafeBytes { try cut.feed($0) { _ in } }
        #expect(throws: S3Error.self) { try cut.finish() }
    }

    /// The signed trailer (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER) is verified: the trailer
    /// signature is computed here from the AWS text ("AWS4-HMAC-SHA256-TRAILER", the zero chunk's
    /// signature, SHA-256 of "name:value\n"), with Crypto's HMAC directly.
    @Test func signedTrailerSignaturesAreVerified() throws {
        let headers = ["authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=" + String(repeating: "5", count: 64),
                       "host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"]
        let r = try S3SigV4.parse(headers: headers, query: [])
        let key = S3SigV4.signingKey(secret: Self.secret, r.credential)
        let c1 = S3SigV4.signature(key: key, stringToSign: S3SigV4.chunkStringToSign(r, previous: r.signature, chunkSHA256: S3SigV4.hex(SHA256.hash(data: Array("hello".utf8)))))
        let c0 = S3SigV4.signature(key: key, stringToSign: S3SigV4.chunkStringToSign(r, previous: c1, chunkSHA256: S3SigV4.emptySHA256))
        let trailer = "x-amz-checksum-crc32:NhCmhg==\n"
        let toSign = "AWS4-HMAC-SHA256-TRAILER\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\(c0)\n" + S3SigV4.hex(SHA256.hash(data: Array(trailer.utf8)))
        let good = S3SigV4.hex(HMAC<SHA256>.authenticationCode(for: Array(toSign.utf8), using: SymmetricKey(data: key)))
        func feed(_ tail: String) throws -> S3ChunkDecoder {
            var d = S3ChunkDecoder(request: r, signingKey: key)
            try Array("5;chunk-signature=\(c1)\r\nhello\r\n0;chunk-signature=\(c0)\r\n\(tail)".utf8).withUnsafeBytes { try d.feed($0) { _ in } }
            try d.finish()
            return d
        }
        #expect(try feed("x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:\(good)\r\n\r\n").trailers == ["x-amz-checksum-crc32": "NhCmhg=="])
        // A changed checksum, a wrong or missing signature, a line after it, a repeated name: refused.
        #expect(throws: S3Error.signatureDoesNotMatch) { try feed("x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:\(good)\r\n\r\n") }
        #expect(throws: S3Error.signatureDoesNotMatch) { try feed("x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:\(String(repeating: "0", count: 64))\r\n\r\n") }
        #expect(throws: S3Error.signatureDoesNotMatch) { try feed("x-amz-checksum-crc32:NhCmhg==\r\n\r\n") }
        #expect(throws: S3Error.signatureDoesNotMatch) { try feed("x-amz-checksum-crc32:NhCmhg==\r\n") }
        #expect(throws: S3Error.self) { try feed("x-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:\(good)\r\nx-amz-meta-a:b\r\n\r\n") }
        #expect(throws: S3Error.self) { try feed("x-amz-checksum-crc32:NhCmhg==\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n") }
        #expect(try feed("\r\n").trailers.isEmpty)
    }

    @Test func unsignedTrailerChunksReadTheirChecksum() throws {
        let headers = ["authorization": "AWS4-HMAC-SHA256 Credential=AK/20130524/local/s3/aws4_request,SignedHeaders=host,Signature=00",
                       "host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"]
        let r = try S3SigV4.parse(headers: headers, query: [])
        var decoder = S3ChunkDecoder(request: r, signingKey: nil)
        var out: [UInt8] = []
        try Array("5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n".utf8).withUnsafeBytes { try decoder.feed($0) { out += $0 } }
        try decoder.finish()
        #expect(out == Array("hello".utf8) && decoder.trailers["x-amz-checksum-crc32"] == "NhCmhg==")
        var long = S3ChunkDecoder(request: r, signingKey: nil)
        #expect(throws: S3Error.self) { try Array(String(repeating: "f", count: 300).utf8).withUnsafeBytes { try long.feed($0) { _ in } } }
    }

    @Test func xmlReaderIsBounded() throws {
        let doc = try S3XML.parse(Array("<?xml version=\"1.0\"?><Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>a&amp;b</Key></Object><Quiet>true</Quiet></Delete>".utf8))
        #expect(doc.name == "Delete" && doc.all("Object").first?.child("Key")?.text == "a&b")
        for bad in ["<a>", "<a></b>", String(repeating: "<a>", count: 9) + String(repeating: "</a>", count: 9),
                    "<!DOCTYPE a [<!ENTITY x 'y'>]><a/>", "<a>&bogus;</a>", "<a/><b/>"] {
            #expect(throws: S3Error.self) { try S3XML.parse(Array(bad.utf8)) }
        }
        #expect(throws: S3Error.self) { try S3XML.parse([UInt8](repeating: 32, count: S3Limits.xmlBodyBytesMax + 1)) }
    }

    /// Entities are decoded by Unicode scalar: `;` or `&` followed by a combining mark is one Swift
    /// Character that is neither. A Character-based decoder refused `a&amp;\u{301}b` (it found no
    /// `;`) and passed `&\u{301}x` through undecoded.
    @Test func entitiesBesideCombiningMarksAreDecodedByScalar() throws {
        let doc = try S3XML.parse(Array("<Delete><Object><Key>a&amp;\u{301}b</Key></Object></Delete>".utf8))
        #expect(doc.all("Object").first?.child("Key")?.text == "a&\u{301}b")
        #expect(throws: S3Error.self) { try S3XML.parse(Array("<Key>x&\u{301}amp;</Key>".utf8)) }
    }

    @Test func accessKeySecretsAreSealedUnderTheirOwnDomain() throws {
        let jwt = [UInt8](repeating: 7, count: 32)
        let sealed = try S3Keys.seal("my secret", jwt)
        #expect(!sealed.contains("my secret"))
        #expect(try S3Keys.open(sealed, jwt) == "my secret")
        #expect(throws: (any Error).self) { try S3Keys.open(sealed, [UInt8](repeating: 8, count: 32)) }
    }
}
