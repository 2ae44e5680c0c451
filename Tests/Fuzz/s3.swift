// fuzz-modules: Kernel BaaS
// fuzz-options: -max_len=8192
//
// What a client or another member puts in front of the S3 endpoint and the signed headers of
// the cluster (Sources/BaaS/S3, Sources/BaaS/HTTP/ClientAddress.swift, OAuthState). Byte 0
// picks the parser, the rest is its input:
// - 0: S3XML.parse (bounded size and depth, no DTD): an element or an S3Error, never a trap;
// - 1: S3SigV4.queryPairs + parse of the header form (the text as Authorization) and of the
//      query form: a signed request or an S3Error;
// - 2: S3ChunkDecoder (aws-chunked) in the signed and the unsigned-trailer modes, fed in two
//      pieces: it emits at most the bytes it was given, or throws an S3Error;
// - 3: SignedHeaderValue/ForwardedHost/ClientAddress.verify and OAuthState.decode: a value,
//      nil or a refusal, never a trap.

import Crypto
@testable import BaaS
@testable import Kernel

private let secret = Array("a cluster secret of at least thirty-two bytes".utf8)
private let amzDate = "20130524T000000Z"
private let seedSignature = String(repeating: "a", count: 64)

private func signedRequest(_ payload: String) -> S3SignedRequest {
    do {
        return try S3SigV4.parse(headers: [
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=\(seedSignature)",
            "x-amz-date": amzDate, "x-amz-content-sha256": payload,
        ], query: [])
    } catch {
        fatalError("fixture: \(error)")
    }
}
private let streamingSigned = signedRequest(S3SignedRequest.streamingSigned)
private let streamingUnsigned = signedRequest(S3SignedRequest.streamingUnsignedTrailer)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ bytes: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 1 else { return }
    let body = Array(UnsafeBufferPointer(start: bytes + 1, count: size - 1))
    let text = String(decoding: body, as: UTF8.self)
    switch bytes[0] % 4 {
    case 0:
        s3Errors("S3XML.parse") { _ = try S3XML.parse(body) }
    case 1:
        let pairs = S3SigV4.queryPairs(text)
        s3Errors("S3SigV4.parse (header)") {
            _ = try S3SigV4.parse(headers: ["authorization": text, "x-amz-date": amzDate], query: pairs)
        }
        s3Errors("S3SigV4.parse (query)") { _ = try S3SigV4.parse(headers: [:], query: pairs) }
    case 2:
        let key = S3SigV4.signingKey(secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", streamingSigned.credential)
        for (request, signing) in [(streamingSigned, Optional(key)), (streamingUnsigned, nil)] {
            var decoder = S3ChunkDecoder(request: request, signingKey: signing)
            var emitted = 0
            let cut = body.isEmpty ? 0 : Int(body[0]) % (body.count + 1)
            s3Errors("S3ChunkDecoder.feed") {
                for piece in [body[..<cut], body[cut...]] {
                    try Array(piece).withUnsafeBytes { raw in try decoder.feed(raw) { emitted += $0.count } }
                }
            }
            precondition(emitted <= body.count, "the decoder emitted \(emitted) bytes from \(body.count)")
        }
    default:
        _ = SignedHeaderValue.verify(text, key: SecretDomain.forwardedHost.key(secret))
        _ = ForwardedHost.verify(text, secret: secret)
        _ = ClientAddress.verify(text, secret: secret)
        do { _ = try OAuthState.decode(text, secret: secret, nowSeconds: 1_800_000_000) } catch {}  // typed: a Refusal
    }
}

/// Runs `body`; any error but an S3Error is a finding.
private func s3Errors(_ what: String, _ body: () throws -> Void) {
    do { try body() } catch is S3Error {} catch { fatalError("\(what) threw \(error)") }
}
