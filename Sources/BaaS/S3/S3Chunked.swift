// The `aws-chunked` body (Content-Encoding: aws-chunked) that SigV4 streaming uploads send.
//
// Byte layout (x-amz-content-sha256 = STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]):
//   <hex size>;chunk-signature=<64 hex>\r\n <size bytes> \r\n  ... repeated ...
//   0;chunk-signature=<64 hex>\r\n  [trailer lines "name:value\r\n" ... "x-amz-trailer-signature:<hex>\r\n"]  \r\n
// STREAMING-UNSIGNED-PAYLOAD-TRAILER: the same without ";chunk-signature=..." and trailer signature.
// Chunk i's signature = HMAC(signing key, "AWS4-HMAC-SHA256-PAYLOAD\n" date \n scope \n
// signature(i-1) \n SHA-256("") \n SHA-256(chunk bytes)), signature(-1) = the request's seed
// signature. Invariants: a chunk header line is at most `chunkHeaderBytesMax` bytes and the
// trailer at most `trailerBytesMax`; a chunk whose signature does not match ends the request
// (its bytes were only staged in a blob temp file, never committed); the decoded length must
// equal x-amz-decoded-content-length when sent. Trailing checksums (x-amz-checksum-*) are read
// here and verified by S3Checksums (S3Body) against the decoded bytes. In the signed form the
// trailer ends with x-amz-trailer-signature = HMAC(signing key, "AWS4-HMAC-SHA256-TRAILER\n" date
// \n scope \n zero chunk's signature \n SHA-256(the trailer lines canonical: "name:value\n" each, names
// lowercased and sorted, values trimmed, as the AWS SDKs sign them)); a repeated trailer name, trailer
// lines after it, a wrong one, or trailer lines without one end the request like a bad chunk.

import Crypto

public struct S3ChunkDecoder {
    enum State { case header, data(remaining: Int), dataCRLF(Int), trailer, done }
    var state = State.header
    var line: [UInt8] = []
    var trailerBytes = 0
    var trailerSigned = false
    var chunkHash = SHA256()
    var chunkSignature = ""
    var previous: String
    let signingKey: [UInt8]?
    let request: S3SignedRequest
    public private(set) var decodedBytes: Int64 = 0
    public private(set) var trailers: [String: String] = [:]

    /// `signingKey` nil: unsigned chunks (STREAMING-UNSIGNED-PAYLOAD-TRAILER).
    public init(request: S3SignedRequest, signingKey: [UInt8]?) {
        self.request = request
        self.signingKey = request.isSignedStreaming ? signingKey : nil
        self.previous = request.signature.lowercased()
    }

    public var finished: Bool { if case .done = state { return true } else { return false } }

    /// Feeds raw body bytes, calls `emit` with decoded payload bytes.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) throws -> Void) throws {
        var i = 0
        let n = bytes.count
        while i < n {
            switch state {
            case .header, .trailer:
                let b = bytes[i]
                i += 1
                line.append(b)
                if case .trailer = state {
                    trailerBytes += 1
                    guard trailerBytes <= S3Limits.trailerBytesMax else { throw S3Error.incompleteBody("the trailer is too long") }
                } else {
                    guard line.count <= S3Limits.chunkHeaderBytesMax else { throw S3Error.incompleteBody("a chunk header is too long") }
                }
                if line.count >= 2, line[line.count - 2] == 13, line[line.count - 1] == 10 {
                    let text = String(decoding: line.dropLast(2), as: UTF8.self)
                    line.removeAll(keepingCapacity: true)
                    if case .trailer = state {
                        if text.isEmpty { try endTrailer(); state = .done } else { try trailerLine(text) }
                    } else {
                        try startChunk(text)
                    }
                }
            case .data(let remaining):
                let take = min(remaining, n - i)
                let slice = UnsafeRawBufferPointer(rebasing: bytes[i..<(i + take)])
                if signingKey != nil { chunkHash.update(bufferPointer: slice) }
                try emit(slice)
                decodedBytes += Int64(take)
                i += take
                state = remaining - take == 0 ? .dataCRLF(0) : .data(remaining: remaining - take)
            case .dataCRLF(let seen):
                let b = bytes[i]
                i += 1
                guard b == (seen == 0 ? 13 : 10) else { throw S3Error.incompleteBody("a chunk does not end with CRLF") }
                if seen == 1 {
                    try checkChunk()
                    state = .header
                } else {
                    state = .dataCRLF(1)
                }
            case .done:
                throw S3Error.incompleteBody("bytes after the last chunk")
            }
        }
    }

    mutating func startChunk(_ text: String) throws {
        let parts = text.split(separator: ";", maxSplits: 1)
        guard let sizeText = parts.first, sizeText.utf8.count <= 16, let size = Int(sizeText, radix: 16), size >= 0 else {
            throw S3Error.incompleteBody("a chunk header is not <hex size>[;chunk-signature=...]")
        }
        chunkSignature = ""
        if parts.count == 2 {
            let ext = parts[1]
            guard ext.hasPrefix("chunk-signature=") else { throw S3Error.incompleteBody("unknown chunk extension") }
            chunkSignature = String(ext.dropFirst("chunk-signature=".count))
        }
        if signingKey != nil, chunkSignature.isEmpty { throw S3Error.signatureDoesNotMatch }
        chunkHash = SHA256()
        if size == 0 {
            try checkChunk()
            state = .trailer
        } else {
            state = .data(remaining: size)
        }
    }

    mutating func checkChunk() throws {
        guard let key = signingKey else { return }
        let digest = S3SigV4.hex(chunkHash.finalize())
        let expected = S3SigV4.signature(key: key, stringToSign: S3SigV4.chunkStringToSign(request, previous: previous, chunkSHA256: digest))
        guard S3SigV4.constantTimeEqual(expected, chunkSignature.lowercased()) else { throw S3Error.signatureDoesNotMatch }
        previous = expected
    }

    mutating func trailerLine(_ text: String) throws {
        guard let colon = text.utf8.firstIndex(of: UInt8(ascii: ":")) else { throw S3Error.incompleteBody("a trailer line is not name:value") }
        let name = text[..<colon].lowercased()
        let value = String(text[text.utf8.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        guard !trailerSigned else { throw S3Error.incompleteBody("a trailer line after x-amz-trailer-signature") }
        if name == "x-amz-trailer-signature" {
            guard let key = signingKey else { throw S3Error.incompleteBody("x-amz-trailer-signature in an unsigned body") }
            let canonical = trailers.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)\n" }.joined()
            let digest = S3SigV4.hex(SHA256.hash(data: Array(canonical.utf8)))
            let expected = S3SigV4.signature(key: key, stringToSign: S3SigV4.trailerStringToSign(request, previous: previous, trailerSHA256: digest))
            guard S3SigV4.constantTimeEqual(expected, value.lowercased()) else { throw S3Error.signatureDoesNotMatch }
            trailerSigned = true
            return
        }
        guard trailers[name] == nil else { throw S3Error.incompleteBody("the trailer names \(name) twice") }
        trailers[name] = value
    }

    /// The blank line after the trailer: a signed body's trailer lines must have been signed.
    func endTrailer() throws {
        if signingKey != nil, !trailers.isEmpty, !trailerSigned { throw S3Error.signatureDoesNotMatch }
    }

    /// At the end of the body: every chunk came (the last one empty).
    public func finish() throws {
        // A body ending right after the zero chunk's trailer lines without the blank line is
        // accepted when no trailer was announced (some clients omit it).
        if case .done = state { return }
        if case .trailer = state, line.isEmpty { return try endTrailer() }
        throw S3Error.incompleteBody("the aws-chunked body ended before its last chunk")
    }
}
