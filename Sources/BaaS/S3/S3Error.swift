// S3 errors in S3's XML shape:
//   <?xml version="1.0" encoding="UTF-8"?>
//   <Error><Code>NoSuchKey</Code><Message>…</Message><Resource>/bucket/key</Resource>
//   <AeroCode>AERO_S3_…</AeroCode></Error>
// with the HTTP status AWS gives the code. Storage and kernel errors are mapped here; bad input
// is never a 500. HEAD answers carry no body (the status and x-amz-error-code say it).

import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public struct S3Error: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String
    public let aeroCode: String

    public init(_ status: Int, _ code: String, _ message: String, aero: String) {
        self.status = status
        self.code = code
        self.message = message
        self.aeroCode = aero
    }

    public var description: String { "\(code) (\(aeroCode)): \(message)" }

    static func accessDenied(_ why: String) -> S3Error { S3Error(403, "AccessDenied", why, aero: "AERO_S3_ACCESS_DENIED") }
    static func authorizationMalformed(_ why: String) -> S3Error { S3Error(400, "AuthorizationHeaderMalformed", why, aero: "AERO_S3_AUTH_MALFORMED") }
    static func authorizationQueryMalformed(_ why: String) -> S3Error {
        S3Error(400, "AuthorizationQueryParametersError", why, aero: "AERO_S3_AUTH_MALFORMED")
    }
    static let signatureDoesNotMatch = S3Error(403, "SignatureDoesNotMatch",
                                               "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
                                               aero: "AERO_S3_SIGNATURE_MISMATCH")
    static let invalidAccessKeyID = S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
                                            aero: "AERO_S3_INVALID_ACCESS_KEY")
    static let requestTimeTooSkewed = S3Error(403, "RequestTimeTooSkewed",
                                              "The difference between the request time and the server's time is too large (15 minutes at most).",
                                              aero: "AERO_S3_TIME_SKEWED")
    static let noSuchBucket = S3Error(404, "NoSuchBucket", "The specified bucket does not exist", aero: "AERO_STORAGE_BUCKET_NOT_FOUND")
    static let noSuchKey = S3Error(404, "NoSuchKey", "The specified key does not exist.", aero: "AERO_STORAGE_OBJECT_NOT_FOUND")
    static let bucketNotEmpty = S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty", aero: "AERO_STORAGE_BUCKET_NOT_EMPTY")
    static let bucketExists = S3Error(409, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.",
                                      aero: "AERO_STORAGE_DUPLICATE")
    static func entityTooLarge(_ limit: Int64) -> S3Error {
        S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size (\(limit) bytes)", aero: "AERO_STORAGE_TOO_LARGE")
    }
    static func invalidRange(_ size: Int64) -> S3Error {
        S3Error(416, "InvalidRange", "The requested range is not satisfiable for \(size) bytes", aero: "AERO_STORAGE_INVALID_RANGE")
    }
    static let noSuchUpload = S3Error(404, "NoSuchUpload", "The specified multipart upload does not exist.", aero: "AERO_S3_NO_SUCH_UPLOAD")
    static func invalidPart(_ why: String) -> S3Error { S3Error(400, "InvalidPart", why, aero: "AERO_S3_INVALID_PART") }
    static let invalidPartOrder = S3Error(400, "InvalidPartOrder", "The list of parts was not in ascending order.", aero: "AERO_S3_INVALID_PART")
    static func malformedXML(_ why: String) -> S3Error { S3Error(400, "MalformedXML", why, aero: "AERO_S3_MALFORMED_XML") }
    static func invalidArgument(_ why: String) -> S3Error { S3Error(400, "InvalidArgument", why, aero: "AERO_S3_INVALID_ARGUMENT") }
    static func notImplemented(_ what: String) -> S3Error {
        S3Error(501, "NotImplemented", "\(what) is not supported by this server (docs/STORAGE.md \"S3\")", aero: "AERO_S3_NOT_IMPLEMENTED")
    }
    static func incompleteBody(_ why: String) -> S3Error { S3Error(400, "IncompleteBody", why, aero: "AERO_S3_INCOMPLETE_BODY") }
    static let badDigest = S3Error(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.",
                                   aero: "AERO_S3_CONTENT_SHA256_MISMATCH")
    static let preconditionFailed = S3Error(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                                            aero: "AERO_S3_PRECONDITION_FAILED")
    static let methodNotAllowed = S3Error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.",
                                          aero: "AERO_S3_METHOD_NOT_ALLOWED")

    /// Any error as an S3 error.
    static func from(_ error: any Swift.Error) -> S3Error {
        if let s3 = error as? S3Error { return s3 }
        if let st = error as? StorageError {
            switch st.code {
            case "AERO_STORAGE_BUCKET_NOT_FOUND": return noSuchBucket
            case "AERO_STORAGE_OBJECT_NOT_FOUND": return noSuchKey
            case "AERO_STORAGE_BUCKET_NOT_EMPTY": return bucketNotEmpty
            case "AERO_STORAGE_DUPLICATE": return bucketExists
            case "AERO_STORAGE_TOO_LARGE": return S3Error(400, "EntityTooLarge", st.message, aero: st.code)
            case "AERO_STORAGE_INVALID_BUCKET_NAME": return S3Error(400, "InvalidBucketName", st.message, aero: st.code)
            case "AERO_STORAGE_INVALID_KEY": return S3Error(400, "InvalidArgument", st.message, aero: st.code)
            case "AERO_STORAGE_BLOB_UNAVAILABLE": return S3Error(503, "ServiceUnavailable", st.message, aero: st.code)
            default: break
            }
            if st.status == 403 || st.status == 401 { return S3Error(403, "AccessDenied", st.message, aero: st.code) }
            if st.status >= 500 { return S3Error(st.status, st.status == 503 ? "ServiceUnavailable" : "InternalError", st.message, aero: st.code) }
            return S3Error(st.status == 415 ? 400 : st.status, "InvalidRequest", st.message, aero: st.code)
        }
        let aero = AeroError.wrap(error)
        switch aero.code {
        case .unauthorized, .forbidden, .policyViolation: return S3Error(403, "AccessDenied", aero.message, aero: aero.code.rawValue)
        case .storageFull: return S3Error(507, "InsufficientStorage", aero.message, aero: aero.code.rawValue)
        case .primaryUnavailable: return S3Error(503, "ServiceUnavailable", aero.message, aero: aero.code.rawValue)
        default:
            return StorageError.from(aero).status >= 500
                ? S3Error(StorageError.from(aero).status, "InternalError", aero.message, aero: aero.code.rawValue)
                : from(StorageError.from(aero))
        }
    }

    func response(resource: String, head: Bool) -> Response {
        var headers: HTTPFields = [.contentType: "application/xml"]
        headers[HTTPField.Name("x-amz-error-code")!] = code
        headers[HTTPField.Name("x-aerodb-error-code")!] = aeroCode
        if head { return Response(status: HTTPResponse.Status(code: status), headers: headers) }
        let xml = S3XML.document("Error", [.leaf("Code", code), .leaf("Message", message), .leaf("Resource", resource), .leaf("AeroCode", aeroCode)], namespace: false)
        return Response(status: HTTPResponse.Status(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: xml)))
    }
}
