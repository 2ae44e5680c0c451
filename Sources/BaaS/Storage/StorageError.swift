// Storage errors in Supabase Storage's shape: `{"statusCode":"404","error":"not_found",
// "message":"Object not found","code":"AERO_STORAGE_..."}` with the HTTP status equal to
// statusCode (storage3 reads the body's statusCode and error; `exists()` needs 404 + not_found).
// Codes are listed in docs/ERRORS.md; kernel errors (AeroError) are mapped at the edge and never
// answer 500 for bad input.

import HTTPTypes
import Hummingbird
import Kernel

public struct StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    /// Supabase's `error` word.
    public let error: String
    public let message: String
    /// Our stable code.
    public let code: String

    public init(_ status: Int, _ error: String, _ message: String, code: String) {
        self.status = status
        self.error = error
        self.message = message
        self.code = code
    }

    public var description: String { "\(code): \(message)" }

    static let bucketNotFound = StorageError(404, "Bucket not found", "Bucket not found", code: "AERO_STORAGE_BUCKET_NOT_FOUND")
    static let objectNotFound = StorageError(404, "not_found", "Object not found", code: "AERO_STORAGE_OBJECT_NOT_FOUND")
    static let duplicate = StorageError(409, "Duplicate", "The resource already exists", code: "AERO_STORAGE_DUPLICATE")
    static let bucketNotEmpty = StorageError(409, "InvalidRequest", "The bucket you tried to delete is not empty",
                                             code: "AERO_STORAGE_BUCKET_NOT_EMPTY")
    static func invalidKey(_ why: String) -> StorageError { StorageError(400, "InvalidKey", "Invalid key: \(why)", code: "AERO_STORAGE_INVALID_KEY") }
    static func invalidBucketName(_ why: String) -> StorageError {
        StorageError(400, "InvalidBucketName", "Invalid bucket name: \(why)", code: "AERO_STORAGE_INVALID_BUCKET_NAME")
    }
    static func invalid(_ why: String) -> StorageError { StorageError(400, "InvalidRequest", why, code: "AERO_STORAGE_INVALID_REQUEST") }
    static func tooLarge(_ limit: Int64) -> StorageError {
        StorageError(413, "Payload too large", "The object exceeded the maximum allowed size (\(limit) bytes)", code: "AERO_STORAGE_TOO_LARGE")
    }
    static func mimeNotAllowed(_ mime: String) -> StorageError {
        StorageError(415, "invalid_mime_type", "mime type \(mime) is not supported", code: "AERO_STORAGE_MIME_NOT_ALLOWED")
    }
    static func invalidSignature(_ why: String) -> StorageError { StorageError(400, "InvalidJWT", why, code: "AERO_STORAGE_INVALID_SIGNATURE") }
    static let unauthorized = StorageError(403, "Unauthorized", "new row violates row-level security policy",
                                           code: "AERO_STORAGE_UNAUTHORIZED")
    static func missingKey(_ why: String) -> StorageError { StorageError(400, "Error", why, code: "AERO_AUTH_UNAUTHORIZED") }
    /// Image transformations are not built (docs/STORAGE.md "Image transformations"); as
    /// Supabase self-hosted without imgproxy, nothing is served untransformed instead.
    static let transformUnsupported = StorageError(501, "NotImplemented",
                                                   "image transformations are not supported by this server (no image library is built in)",
                                                   code: "AERO_STORAGE_TRANSFORM_UNSUPPORTED")
    static func replicaBlob(_ why: String) -> StorageError { StorageError(503, "ServiceUnavailable", why, code: "AERO_STORAGE_BLOB_UNAVAILABLE") }

    /// Any error as a storage error: kernel codes keep their status, bad input never becomes a 500.
    static func from(_ error: any Swift.Error) -> StorageError {
        if let storage = error as? StorageError { return storage }
        let aero = AeroError.wrap(error)
        let status = Int(HTTPErrors.status(of: aero.code).code)
        switch aero.code {
        case .unauthorized: return StorageError(400, "Error", aero.message, code: aero.code.rawValue)  // Supabase: 400 for a bad JWT
        case .forbidden, .policyViolation: return StorageError(403, "Unauthorized", aero.message, code: aero.code.rawValue)
        case .duplicateKey: return StorageError(409, "Duplicate", "The resource already exists", code: aero.code.rawValue)
        case .jsonInvalid, .requestInvalid, .schemaViolation, .typeMismatch, .unknownField, .queryInvalid:
            return StorageError(400, "InvalidRequest", aero.message, code: aero.code.rawValue)
        default:
            return StorageError(status, HTTPResponse.Status(code: status).reasonPhrase.isEmpty ? "Error" : HTTPResponse.Status(code: status).reasonPhrase,
                                aero.message, code: aero.code.rawValue)
        }
    }

    var response: Response {
        HTTPJSON.response(.object(["statusCode": .string(String(status)), "error": .string(error), "message": .string(message),
                                   "code": .string(code)]),
                          status: HTTPResponse.Status(code: status))
    }
}
