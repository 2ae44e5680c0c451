// Shared HTTP plumbing: JSON bodies with the kernel's own codec (ints stay ints), the error
// shape `{"code":"AERO_...","message":"..."}` with one status per code, API-key checks.

import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public enum HTTPLimits {
    /// Largest request body read; bigger bodies get 413 before they are parsed.
    public static let requestBodyBytesMax = 32 << 20
}

public enum HTTPErrors {
    /// The HTTP status of every error code. docs/ERRORS.md is generated from the same table.
    public static func status(of code: AeroError.Code) -> HTTPResponse.Status {
        switch code {
        case .jsonInvalid, .requestInvalid, .schemaInvalid, .schemaViolation, .queryInvalid, .queryUnbounded,
             .typeMismatch, .unknownField:
            return .badRequest
        case .unauthorized: return .unauthorized
        case .forbidden: return .forbidden
        case .collectionNotFound, .indexNotFound, .documentNotFound, .notFound: return .notFound
        case .collectionExists, .indexExists, .duplicateKey, .referenceViolation: return .conflict
        case .transactionTooLarge, .documentTooLarge: return .contentTooLarge
        case .memoryLimit, .storageFull: return HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
        case .lsnUnavailable: return .gone
        case .walFlushFailed, .walClosed, .notPrimary, .replicaBehind, .primaryUnavailable, .epochStale,
             .replicationDiverged:
            return .serviceUnavailable
        case .commitInDoubt: return .gatewayTimeout
        case .replicationRefused, .promotionRefused: return .conflict
        case .walCorrupt, .ioError, .checkpointCorrupt, .authorityCorrupt, .dataDirectoryInvalid, .configInvalid,
             .internalError:
            return .internalServerError
        }
    }

    public static func response(_ error: any Error) -> Response {
        let aero = AeroError.wrap(error)
        var body: [String: JSONValue] = ["code": .string(aero.code.rawValue), "message": .string(aero.message)]
        if let invariant = aero.invariant { body["invariant"] = .string(invariant) }
        return HTTPJSON.response(.object(body), status: status(of: aero.code))
    }
}

public enum HTTPJSON {
    public static let lsnHeader = HTTPField.Name("X-AeroDB-LSN")!

    public static func response(_ value: JSONValue, status: HTTPResponse.Status = .ok, lsn: UInt64? = nil) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let lsn { headers[lsnHeader] = String(lsn) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSON.encode(value))))
    }

    /// Reads and parses the request body; 413 past the limit, AERO_JSON_INVALID when malformed.
    public static func body(_ request: Request) async throws -> JSONValue {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: HTTPLimits.requestBodyBytesMax)
        } catch {
            throw AeroError(.requestInvalid, "request body larger than \(HTTPLimits.requestBodyBytesMax) bytes or unreadable")
        }
        guard buffer.readableBytes > 0 else { throw AeroError(.jsonInvalid, "the request needs a JSON body") }
        return try buffer.readableBytesView.withContiguousStorageIfAvailable { try JSON.parse($0) }
            ?? JSON.parse(Array(buffer.readableBytesView))
    }
}

/// Checks API keys: `Authorization: Bearer <key>` or `apikey: <key>`.
public struct KeyChecker: Sendable {
    let secret: [UInt8]
    let clock: any KernelClock

    public init(secret: [UInt8], clock: any KernelClock) {
        self.secret = secret
        self.clock = clock
    }

    /// The caller's role, or 401 when no valid key was sent.
    public func role(_ request: Request) throws -> String {
        var token: String?
        if let auth = request.headers[.authorization] {
            guard auth.hasPrefix("Bearer ") else { throw AeroError(.unauthorized, "Authorization must be Bearer <key>") }
            token = String(auth.dropFirst(7))
        } else if let key = request.headers[HTTPField.Name("apikey")!] {
            token = key
        }
        guard let token, !token.isEmpty else {
            throw AeroError(.unauthorized, "an API key is required (Authorization: Bearer <key> or apikey: <key>)")
        }
        return try APIKeys.role(of: token, secret: secret, nowSeconds: clock.nowMicros() / 1_000_000)
    }

    /// 401 without a valid key, 403 with a valid key that is not the service role.
    public func requireServiceRole(_ request: Request) throws {
        guard try role(request) == "service_role" else {
            throw AeroError(.forbidden, "the admin API needs the service_role key")
        }
    }
}
