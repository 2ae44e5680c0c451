// AWS Signature Version 4 for `/storage/v1/s3` (docs/STORAGE.md "S3").
//
// Header form:  Authorization: AWS4-HMAC-SHA256 Credential=<id>/<yyyymmdd>/<region>/s3/aws4_request,
//               SignedHeaders=<a;b;c>, Signature=<64 hex>   with X-Amz-Date and X-Amz-Content-Sha256.
// Query form:   X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires (1 s ... 7 days),
//               X-Amz-SignedHeaders, X-Amz-Signature (payload: UNSIGNED-PAYLOAD).
// Canonical request = method \n URI \n query \n headers \n signed-header-list \n payload-hash;
// URI and query are percent-decoded then encoded again with S3's rules (unreserved bytes and
// `/` kept), so the canonical form does not depend on how the client escaped them.
// String to sign = "AWS4-HMAC-SHA256" \n date \n scope \n hex(SHA-256(canonical request)).
// Key = HMAC chain "AWS4"+secret -> yyyymmdd -> region -> "s3" -> "aws4_request".
// Invariants: the request time is within `clockSkewSeconds` of ours (header form) or the
// presigned URL has not expired; the scope's date equals the request date's day and its region
// the configured one; signatures are compared in constant time.

import Crypto
import Foundation

public enum S3Limits {
    /// SigV4 allows 15 minutes between a signed request's time and the server's (as AWS).
    public static let clockSkewSeconds: Int64 = 15 * 60
    /// A presigned URL lives at most 7 days (as AWS).
    public static let presignedSecondsMax: Int64 = 7 * 24 * 3600
    /// An XML request body (DeleteObjects, CompleteMultipartUpload) is at most 1 MiB (AWS: 1,000 keys fit).
    public static let xmlBodyBytesMax = 1 << 20
    /// XML nesting deeper than this is refused (the documents we read have depth 3).
    public static let xmlDepthMax = 8
    /// DeleteObjects takes at most 1,000 keys (as AWS).
    public static let deleteKeysMax = 1000
    /// ListObjectsV2 answers at most 1,000 keys per page (as AWS).
    public static let listKeysMax = 1000
    /// One aws-chunked chunk header line ("<hex>;chunk-signature=<64 hex>") is at most 256 bytes.
    public static let chunkHeaderBytesMax = 256
    /// Trailer lines after the last chunk: at most 4 KiB in all.
    public static let trailerBytesMax = 4096
    /// Access keys per node (a client-growable table: bounded).
    public static let accessKeysMax = 1000
    /// A key's description is at most 200 bytes.
    public static let keyDescriptionBytesMax = 200
}

public struct S3Credential: Sendable, Equatable {
    public var accessKeyID: String
    public var date: String  // yyyymmdd
    public var region: String
    public var service: String
    var scope: String { "\(date)/\(region)/\(service)/aws4_request" }
}

/// What the request says about its signature, parsed before any key is looked up.
public struct S3SignedRequest: Sendable {
    public var credential: S3Credential
    public var amzDate: String
    public var signedHeaders: [String]
    public var signature: String
    public var payloadHash: String
    public var presigned: Bool
    public var expires: Int64?
    public var securityToken: String?

    public static let unsigned = "UNSIGNED-PAYLOAD"
    public static let streamingSigned = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    public static let streamingSignedTrailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    public static let streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    public var isStreaming: Bool { payloadHash.hasPrefix("STREAMING-") }
    public var isSignedStreaming: Bool { payloadHash == Self.streamingSigned || payloadHash == Self.streamingSignedTrailer }
}

public enum S3SigV4 {
    /// Parses the header or query form. `headers` are lowercased names -> values; `query` the
    /// decoded (name, value) pairs.
    public static func parse(headers: [String: String], query: [(String, String)]) throws -> S3SignedRequest {
        func q(_ name: String) -> String? { query.first { $0.0 == name }?.1 }
        if let auth = headers["authorization"] {
            guard auth.hasPrefix("AWS4-HMAC-SHA256 ") else {
                throw S3Error.accessDenied("only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported")
            }
            var fields: [String: String] = [:]
            for part in auth.dropFirst("AWS4-HMAC-SHA256 ".count).split(separator: ",") {
                let t = part.trimmingCharacters(in: .whitespaces)
                guard let eq = t.firstIndex(of: "=") else { continue }
                fields[String(t[..<eq])] = String(t[t.index(after: eq)...])
            }
            guard let cred = fields["Credential"], let sh = fields["SignedHeaders"], let sig = fields["Signature"] else {
                throw S3Error.authorizationMalformed("the Authorization header needs Credential, SignedHeaders and Signature")
            }
            guard let date = headers["x-amz-date"] ?? headers["date"].flatMap(httpDateToAmz) else {
                throw S3Error.accessDenied("X-Amz-Date is required")
            }
            return S3SignedRequest(credential: try credential(cred), amzDate: date, signedHeaders: sh.split(separator: ";").map(String.init),
                                   signature: sig, payloadHash: headers["x-amz-content-sha256"] ?? S3SignedRequest.unsigned,
                                   presigned: false, expires: nil, securityToken: headers["x-amz-security-token"])
        }
        guard let alg = q("X-Amz-Algorithm") else { throw S3Error.accessDenied("the request is not signed (no Authorization header, no X-Amz-Signature)") }
        guard alg == "AWS4-HMAC-SHA256" else { throw S3Error.accessDenied("only AWS4-HMAC-SHA256 is supported") }
        guard let cred = q("X-Amz-Credential"), let date = q("X-Amz-Date"), let sh = q("X-Amz-SignedHeaders"),
              let sig = q("X-Amz-Signature"), let exp = q("X-Amz-Expires") else {
            throw S3Error.authorizationQueryMalformed("a presigned URL needs X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature")
        }
        guard let seconds = Int64(exp), seconds >= 1, seconds <= S3Limits.presignedSecondsMax else {
            throw S3Error.authorizationQueryMalformed("X-Amz-Expires must be 1 to \(S3Limits.presignedSecondsMax) seconds")
        }
        return S3SignedRequest(credential: try credential(cred), amzDate: date, signedHeaders: sh.split(separator: ";").map(String.init),
                               signature: sig, payloadHash: S3SignedRequest.unsigned, presigned: true, expires: seconds,
                               securityToken: q("X-Amz-Security-Token"))
    }

    static func credential(_ text: String) throws -> S3Credential {
        let p = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard p.count == 5, p[4] == "aws4_request", p[2].utf8.count <= 64, p[0].utf8.count <= 128, !p[0].isEmpty else {
            throw S3Error.authorizationMalformed("Credential must be <access key id>/<yyyymmdd>/<region>/s3/aws4_request")
        }
        guard p[3] == "s3" else { throw S3Error.authorizationMalformed("the credential's service must be s3, not \(p[3])") }
        return S3Credential(accessKeyID: p[0], date: p[1], region: p[2], service: p[3])
    }

    /// `20130524T000000Z` -> seconds since 1970, nil when malformed.
    public static func seconds(amzDate: String) -> Int64? {
        let u = Array(amzDate.utf8)
        guard u.count == 16, u[8] == UInt8(ascii: "T"), u[15] == UInt8(ascii: "Z") else { return nil }
        func n(_ r: Range<Int>) -> Int? {
            var v = 0
            for i in r { guard u[i] >= 48, u[i] <= 57 else { return nil }; v = v * 10 + Int(u[i] - 48) }
            return v
        }
        guard let y = n(0..<4), let mo = n(4..<6), let d = n(6..<8), let h = n(9..<11), let mi = n(11..<13), let s = n(13..<15),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61 else { return nil }
        // Days from civil (Howard Hinnant), proleptic Gregorian.
        let yy = mo <= 2 ? y - 1 : y
        let era = yy / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return Int64(days) * 86400 + Int64(h * 3600 + mi * 60 + s)
    }

    static func httpDateToAmz(_ text: String) -> String? { S3Dates.parseHTTPDate(text).map { S3Dates.amz(seconds: $0) } }

    /// Checks time and scope (no secret needed yet).
    public static func checkTime(_ r: S3SignedRequest, region: String, nowSeconds: Int64) throws {
        guard let t = seconds(amzDate: r.amzDate) else { throw S3Error.accessDenied("X-Amz-Date \(r.amzDate) is not yyyymmddThhmmssZ") }
        guard r.amzDate.hasPrefix(r.credential.date) else {
            throw S3Error.authorizationMalformed("the credential date \(r.credential.date) is not the day of X-Amz-Date")
        }
        guard r.credential.region == region else {
            throw S3Error.authorizationMalformed("the region '\(r.credential.region)' is wrong; expecting '\(region)'")
        }
        if let expires = r.expires {
            guard t - S3Limits.clockSkewSeconds <= nowSeconds else { throw S3Error.accessDenied("the presigned URL is not valid yet") }
            guard nowSeconds <= t.addingReportingOverflow(expires).partialValue else { throw S3Error.accessDenied("Request has expired") }
        } else {
            let skew = t > nowSeconds ? t - nowSeconds : nowSeconds - t
            guard skew <= S3Limits.clockSkewSeconds else {
                throw S3Error.requestTimeTooSkewed
            }
        }
    }

    // MARK: Canonical form

    static func isUnreserved(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E
    }

    public static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in text.utf8 {
            if isUnreserved(b) || (keepSlash && b == 0x2F) {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 15)]))
            }
        }
        return out
    }

    /// Percent-decoding that keeps malformed escapes as they are (never fails).
    public static func decode(_ text: Substring, plusIsSpace: Bool = false) -> String {
        var bytes: [UInt8] = []
        let u = Array(text.utf8)
        var i = 0
        func hexValue(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 65...70: return c - 55
            case 97...102: return c - 87
            default: return nil
            }
        }
        while i < u.count {
            if u[i] == 0x25, i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) {
                bytes.append(h << 4 | l)
                i += 3
            } else {
                bytes.append(plusIsSpace && u[i] == 0x2B ? 0x20 : u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The decoded (name, value) pairs of a raw query string.
    public static func queryPairs(_ raw: String) -> [(String, String)] {
        raw.split(separator: "&", omittingEmptySubsequences: true).map { item in
            if let eq = item.firstIndex(of: "=") {
                return (decode(item[..<eq]), decode(item[item.index(after: eq)...]))
            }
            return (decode(item), "")
        }
    }

    public static func canonicalRequest(method: String, rawPath: String, query: [(String, String)], headers: [String: String],
                                        signed: S3SignedRequest) -> String {
        let uri = encode(decode(Substring(rawPath)), keepSlash: true)
        var pairs: [(String, String)] = []
        for (name, value) in query where !(signed.presigned && name == "X-Amz-Signature") {
            pairs.append((encode(name, keepSlash: false), encode(value, keepSlash: false)))
        }
        pairs.sort { (a: (String, String), b: (String, String)) -> Bool in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        let q = pairs.map { (p: (String, String)) -> String in p.0 + "=" + p.1 }.joined(separator: "&")
        var lines = ""
        for name in signed.signedHeaders {
            let value = headers[name] ?? ""
            let trimmed = value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
            lines += "\(name):\(trimmed)\n"
        }
        return [method, uri, q, lines, signed.signedHeaders.joined(separator: ";"), signed.payloadHash].joined(separator: "\n")
    }

    static func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: key)))
    }

    public static func signingKey(secret: String, _ c: S3Credential) -> [UInt8] {
        hmac(hmac(hmac(hmac(Array(("AWS4" + secret).utf8), c.date), c.region), c.service), "aws4_request")
    }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        Hex.lowercase(bytes)
    }

    public static func sha256Hex(_ bytes: [UInt8]) -> String { hex(SHA256.hash(data: bytes)) }

    public static func signature(key: [UInt8], stringToSign: String) -> String { hex(hmac(key, stringToSign)) }

    public static func stringToSign(_ r: S3SignedRequest, canonical: String) -> String {
        "AWS4-HMAC-SHA256\n\(r.amzDate)\n\(r.credential.scope)\n\(sha256Hex(Array(canonical.utf8)))"
    }

    /// Verifies the request's signature with `secret`; answers the signing key (for chunk signatures).
    public static func verify(_ r: S3SignedRequest, secret: String, method: String, rawPath: String, query: [(String, String)],
                              headers: [String: String]) throws -> [UInt8] {
        guard r.signedHeaders.contains("host") else { throw S3Error.accessDenied("the host header must be signed") }
        let canonical = canonicalRequest(method: method, rawPath: rawPath, query: query, headers: headers, signed: r)
        let key = signingKey(secret: secret, r.credential)
        let expected = signature(key: key, stringToSign: stringToSign(r, canonical: canonical))
        guard constantTimeEqual(expected, r.signature.lowercased()) else { throw S3Error.signatureDoesNotMatch }
        return key
    }

    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var d: UInt8 = 0
        for i in 0..<x.count { d |= x[i] ^ y[i] }
        return d == 0
    }

    /// The string a chunk signature signs (STREAMING-AWS4-HMAC-SHA256-PAYLOAD).
    public static func chunkStringToSign(_ r: S3SignedRequest, previous: String, chunkSHA256: String) -> String {
        "AWS4-HMAC-SHA256-PAYLOAD\n\(r.amzDate)\n\(r.credential.scope)\n\(previous)\n\(emptySHA256)\n\(chunkSHA256)"
    }

    /// The signed trailer's string to sign (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER): `previous`
    /// is the zero chunk's signature, `trailerSHA256` the SHA-256 of the trailer lines as
    /// "name:value\n" each, in the order sent, without the signature line.
    public static func trailerStringToSign(_ r: S3SignedRequest, previous: String, trailerSHA256: String) -> String {
        "AWS4-HMAC-SHA256-TRAILER\n\(r.amzDate)\n\(r.credential.scope)\n\(previous)\n\(trailerSHA256)"
    }

    public static let emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
}
