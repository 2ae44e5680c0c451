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

extension HTTPFields {
    /// What `self[name]` answers, without its lazy join when at most one field has the name (a
    /// request's header is sent once): swift-http-types joins the values through an unspecialized
    /// generic `joined(separator:)` with runtime metadata lookups on every hit, 2% of a GET by key
    /// (issue 19, perf). Two or more fields: `self[name]` itself (joined with ", ", "; " for Cookie).
    @inlinable
    public func value(_ name: HTTPField.Name) -> String? {
        var found: String?
        let canonical = name.canonicalName
        for field in self where field.name.canonicalName == canonical {
            if found != nil { return self[name] }
            found = field.value
        }
        return found
    }
}

public enum HTTPErrors {
    /// The HTTP status of every error code. docs/ERRORS.md is generated from the same table.
    public static func status(of code: AeroError.Code) -> HTTPResponse.Status {
        switch code {
        case .jsonInvalid, .requestInvalid, .schemaInvalid, .schemaViolation, .queryInvalid, .queryUnbounded,
             .queryBudget, .typeMismatch, .unknownField:
            return .badRequest
        case .unauthorized: return .unauthorized
        case .forbidden, .policyViolation: return .forbidden
        case .collectionNotFound, .indexNotFound, .documentNotFound, .notFound: return .notFound
        case .methodNotAllowed: return .methodNotAllowed
        case .collectionExists, .indexExists, .duplicateKey, .referenceViolation: return .conflict
        case .transactionTooLarge, .documentTooLarge: return .contentTooLarge
        case .memoryLimit, .storageFull: return HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
        case .lsnUnavailable: return .gone
        case .walFlushFailed, .walClosed, .notPrimary, .replicaBehind, .primaryUnavailable, .epochStale,
             .replicationDiverged, .clusterTLS:
            return .serviceUnavailable
        case .commitInDoubt: return .gatewayTimeout
        case .functionNotFound: return .notFound
        case .functionInvalid: return .badRequest
        case .functionFailed: return .internalServerError
        // Supabase's edge runtime answers 546 when a worker exceeds a resource limit.
        case .functionLimit: return HTTPResponse.Status(code: 546, reasonPhrase: "Resource Limit")
        case .replicationRefused, .promotionRefused: return .conflict
        case .realtimeInvalid: return .badRequest
        case .realtimeLimit, .backupBusy: return .tooManyRequests
        case .backupTargetUnavailable: return .badRequest
        case .backupCorrupt, .backupIncomplete: return .internalServerError
        case .walCorrupt, .ioError, .checkpointCorrupt, .authorityCorrupt, .dataDirectoryInvalid, .configInvalid, .portInUse,
             .internalError:
            return .internalServerError
        }
    }

    public static func response(_ error: any Error) -> Response {
        let aero = AeroError.wrap(error)
        SlowLog.noteRefusal(aero)  // a refused query is an entry of the query log (Ops/SlowLog.swift)
        var body: [String: JSONValue] = ["code": .string(aero.code.rawValue), "message": .string(aero.message)]
        if let invariant = aero.invariant { body["invariant"] = .string(invariant) }
        if let id = RequestID.current { body["request_id"] = .string(id) }
        return HTTPJSON.response(.object(body), status: status(of: aero.code))
    }
}

public enum HTTPJSON {
    public static let lsnHeader = HTTPField.Name("X-AeroDB-LSN")!

    /// The LSN header of an answer read from `snapshot`, and beside it the epoch of the record at
    /// that LSN (`X-AeroDB-LSN-Epoch`, when the snapshot's history names it): what
    /// ClusterMiddleware.stamped would add, said by the answer's own snapshot, so the middleware
    /// neither reads the LSN text back nor takes a snapshot of its own (issue 19: a GET by key).
    public static func lsnFields(_ snapshot: Snapshot) -> HTTPFields {
        var headers = HTTPFields()  // appended: neither name is there yet (no search, no generic setter)
        headers.append(HTTPField(name: lsnHeader, value: String(snapshot.lsn)))
        if let epoch = snapshot.state.epochHistory.epoch(at: snapshot.lsn, last: snapshot.lsn) {
            headers.append(HTTPField(name: ClusterHTTP.lsnEpochHeader, value: String(epoch)))
        }
        return headers
    }

    public static func response(_ value: JSONValue, status: HTTPResponse.Status = .ok, lsn: UInt64? = nil) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let lsn { headers[lsnHeader] = String(lsn) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSON.encode(value))))
    }

    /// Reads and parses the request body; 413 past the limit, AERO_JSON_INVALID when malformed
    /// or empty.
    public static func body(_ request: Request) async throws -> JSONValue {
        guard let value = try await optionalBody(request) else { throw AeroError(.jsonInvalid, "the request needs a JSON body") }
        return value
    }

    /// The same, nil for an empty body (GoTrue's clients send a JSON content type on body-less requests).
    public static func optionalBody(_ request: Request) async throws -> JSONValue? {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: HTTPLimits.requestBodyBytesMax)
        } catch {
            throw AeroError(.requestInvalid, "request body larger than \(HTTPLimits.requestBodyBytesMax) bytes or unreadable")
        }
        guard buffer.readableBytes > 0 else { return nil }
        return try buffer.readableBytesView.withContiguousStorageIfAvailable { try JSON.parse($0) }
            ?? JSON.parse(Array(buffer.readableBytesView))
    }
}

/// Who is calling: the verified claims of the API key or user access token.
public struct Caller: Sendable {
    public let role: String
    public let claims: JSONValue

    public var userID: String? { claims["sub"]?.stringValue }
    public var sessionID: String? { claims["session_id"]?.stringValue }
    public var isService: Bool { role == "service_role" }
    public var email: String? { claims["email"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }

    public init(role: String, claims: JSONValue) {
        self.role = role
        self.claims = claims
    }
}

/// Checks API keys and user access tokens: `Authorization: Bearer <token>`, `apikey: <key>`, or
/// (as Supabase's gateway accepts it, for links and EventSource-style clients that cannot set a
/// header) `?apikey=<key>` in the URL; the request logs redact it (RequestRedaction).
/// A user token (role `authenticated`) must name its user and session, and the session must
/// still exist on this node: signing out, refresh-token reuse and deleting the user revoke it.
public struct KeyChecker: Sendable {
    let secret: [UInt8]
    let clock: any KernelClock
    let database: Database?
    /// HS256 tokens this checker verified (bounded; expiry, role and session still checked on each use).
    let verified = VerifiedTokens()

    public init(secret: [UInt8], clock: any KernelClock, database: Database? = nil) {
        self.secret = secret
        self.clock = clock
        self.database = database
    }

    static let apikeyHeader = HTTPField.Name("apikey")!

    public static func bearer(_ request: Request) throws -> String? {
        if let auth = request.headers.value(.authorization) {
            guard auth.hasPrefix("Bearer ") || auth.hasPrefix("bearer ") else {
                throw AeroError(.unauthorized, "Authorization must be Bearer <key>")
            }
            return String(auth.dropFirst(7))
        }
        if let key = request.headers.value(apikeyHeader) { return key }
        return request.uri.queryParameters.get("apikey")
    }

    /// The caller, or 401 when no valid key or token was sent.
    public func caller(_ request: Request) throws -> Caller {
        guard let token = try Self.bearer(request), !token.isEmpty else {
            throw AeroError(.unauthorized, "an API key is required (Authorization: Bearer <key> or apikey: <key>)")
        }
        return try caller(token: token)
    }

    public func caller(token: String) throws -> Caller {
        let nowSeconds = clock.nowMicros() / 1_000_000
        let claims: JSONValue
        if let known = verified.claims(token) {
            try JWT.checkExpiry(known, nowSeconds: nowSeconds)
            claims = known
        } else {
            let snapshot = database?.snapshot()
            let result = try JWT.verified(token, secret: secret, nowSeconds: nowSeconds, publicKey: snapshot.map { snapshot in
                { kid in AuthSigningKeys.publicKey(kid, snapshot, nowSeconds: nowSeconds) }
            })
            if result.hs256 { verified.remember(token, result.claims) }
            claims = result.claims
        }
        guard case .string(let role)? = claims["role"], Self.isKnownRole(role) else {
            throw AeroError(.unauthorized, "token has no known role")
        }
        guard claims["exp"]?.numberValue != nil else { throw AeroError(.unauthorized, "token has no expiry (exp)") }
        if role == "authenticated" {
            guard case .string(let sessionID)? = claims["session_id"], claims["sub"]?.stringValue != nil else {
                throw AeroError(.unauthorized, "a user token needs sub and session_id claims")
            }
            if let database, !Self.sessionExists(sessionID, database) {
                throw AeroError(.unauthorized, "the session of this token was revoked (signed out)")
            }
        }
        return Caller(role: role, claims: claims)
    }

    /// `anon`, `service_role` or `authenticated` (a switch: no array per request).
    static func isKnownRole(_ role: String) -> Bool {
        switch role {
        case "anon", "service_role", "authenticated": return true
        default: return false
        }
    }

    static func sessionExists(_ id: String, _ database: Database) -> Bool {
        guard let key = UUIDText.normalize(id) else { return false }
        // A read that fails counts as revoked (fail closed).
        return (try? database.snapshot().documentIfPresent(AuthCollections.sessions, key: .string(key))) != nil
    }

    /// The caller's role, or 401 when no valid key was sent.
    public func role(_ request: Request) throws -> String { try caller(request).role }

    /// 401 without a valid key, 403 with a valid key that is not the service role.
    public func requireServiceRole(_ request: Request) throws {
        guard try role(request) == "service_role" else {
            throw AeroError(.forbidden, "the admin API needs the service_role key")
        }
    }
}
