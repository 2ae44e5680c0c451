// Every node of a cluster answers every request (SPEC §4):
// - Replica reads: `X-AeroDB-Min-LSN: N` makes a read wait until this node has applied N, up to
//   `HTTPLimits.minLSNWaitMillis`; past it the answer is 503 AERO_REPLICA_BEHIND with the node's
//   current LSN in `X-AeroDB-LSN` (retry, or read from the primary). P2: reads never lie.
//   Every answer naming an LSN also names that record's epoch (`X-AeroDB-LSN-Epoch`); a read
//   that sends it back (`X-AeroDB-Min-LSN-Epoch`) is refused by a node whose record at that LSN
//   is of another epoch: a deposed or not-yet-refused member holds another history there.
// - A diverged replica (A4) answers every data request with 503 AERO_REPL_DIVERGED: its state
//   may hold commits that were never acknowledged.
// - Write forwarding: on a replica, a write (REST and admin writes, every auth POST/PUT/DELETE
//   and GET /auth/v1/verify, which consumes a code) is sent to the primary unchanged (end-to-end
//   headers and body, plus the signed client address; hop-by-hop fields per RFC 9110 §7.6.1 are
//   not passed on), over ForwardPool's kept-alive HTTP/1.1 connections (plain, or TLS with the
//   cluster CA: MemberHTTPS); the primary's answer (any status: a
//   refusal may have committed too, e.g. a revoked session) is returned once this node has
//   applied the LSN it names in `X-AeroDB-LSN`, so the client reads its own write on the node it talks to. A forwarded
//   request carries `X-AeroDB-Forwarded-By` and is never forwarded again.
// - The primary is resolved per attempt. A connection that could not be made (refused, connect
//   timeout) means the write was never sent: it is retried once, at once, when this node
//   meanwhile learned of another primary (or became it: then it runs here), and otherwise
//   answered 503 AERO_PRIMARY_UNAVAILABLE at once (never held until a deadline). A write that
//   was sent is never sent again: no answer is 504 AERO_COMMIT_IN_DOUBT.

import Crypto
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore
import NIOHTTP1
import NIOPosix

public enum ClusterHTTP {
    public static let minLSNHeader = HTTPField.Name("X-AeroDB-Min-LSN")!
    /// The epoch of the record at the LSN a read names in `X-AeroDB-Min-LSN` (the
    /// `X-AeroDB-LSN-Epoch` of the write's answer): the node answers only from that history.
    public static let minLSNEpochHeader = HTTPField.Name("X-AeroDB-Min-LSN-Epoch")!
    /// On an answer carrying `X-AeroDB-LSN`: the epoch of the record at that LSN on the node
    /// that answered (absent when its history no longer says).
    public static let lsnEpochHeader = HTTPField.Name("X-AeroDB-LSN-Epoch")!
    public static let forwardedHeader = HTTPField.Name("X-AeroDB-Forwarded-By")!
    /// Set to `false` on a forwarded write's answer when this node had not applied it in time.
    public static let appliedHeader = HTTPField.Name("X-AeroDB-Applied")!
}

extension HTTPLimits {
    /// Longest a read with `X-AeroDB-Min-LSN` waits for this node to apply that LSN.
    public static let minLSNWaitMillis: Int64 = 2_000
    /// Longest a forwarded write waits for the primary's answer.
    public static let forwardTimeoutMillis: Int64 = 30_000
    /// Longest a replica waits to apply a forwarded write before answering (read-your-writes).
    public static let forwardApplyWaitMillis: Int64 = 5_000
    /// Longest a forward waits for the connection to the primary (members are on one network;
    /// a primary cut off answers 503 after this, not after `forwardTimeoutMillis`).
    public static let forwardConnectMillis: Int64 = 1_000
    /// Attempts of one forwarded write: the second only when the first was never sent and the
    /// primary changed meanwhile.
    public static let forwardAttemptsMax = 2
    /// Connections a replica keeps to the primary for forwarded writes (connecting or open, each
    /// carrying one write at a time; ForwardPool). 8 (AsyncHTTPClient's default) capped 64 clients
    /// writing through a replica at 8 forwards in flight and the primary's group commit at batches
    /// of 8 (issue 19). A hard bound: further forwards wait for a free connection.
    public static let forwardConnectionsMax = 128
    /// Forwards that may wait for a free connection at once; one more is refused at once with
    /// 503 AERO_PRIMARY_UNAVAILABLE (not sent).
    public static let forwardWaitersMax = 4_096
    /// Longest a forward waits for a free connection, then 503 AERO_PRIMARY_UNAVAILABLE (not sent).
    public static let forwardPoolWaitMillis: Int64 = 10_000
    /// A connection to the primary unused this long is closed.
    public static let forwardIdleMillis: Int64 = 60_000
}

extension ClusterHTTP {
    /// The client of forwarded writes (ForwardPool.swift): keep-alive HTTP/1.1 channels to the
    /// primary, plain or with the cluster's TLS (MemberHTTPS, read at first use). A connection
    /// that cannot be made fails the request at once; redirects are never followed (an answer is
    /// returned as it is).
    static let forwardPool = ForwardPool(settings: .forwarding)

    /// Hop-by-hop fields (RFC 9110 §7.6.1): never forwarded, in either direction, nor the fields
    /// a `Connection` header names. (`Expect` is passed on: S3 clients may sign it; the primary's
    /// 100 Continue is dropped by the forwarding client, which sends the body at once.)
    static let hopByHop: Set<String> = ["connection", "proxy-connection", "keep-alive", "te", "transfer-encoding", "upgrade"]

    /// What a forward never copies from the client's request: the hop-by-hop fields, its framing
    /// and `Host` (this node sets them), the headers only a member may set (signed by this node).
    static let notForwarded: Set<String> = hopByHop.union([
        "content-length", "host", ClientAddress.header.canonicalName, ForwardedHost.header.canonicalName,
        forwardedHeader.canonicalName,
    ])

    /// The member headers' names as written (made once, not per forward).
    static let memberNames = (clientAddress: ClientAddress.header.rawName, forwardedHost: ForwardedHost.header.rawName,
                              forwardedBy: forwardedHeader.rawName)

    /// The names a `Connection` field lists (lowercased), empty without one.
    static func nominated(_ values: some Sequence<Substring>) -> Set<String> {
        var names = Set<String>()
        for value in values {
            for token in value.split(separator: ",") {
                let name = token.trimmingCharacters(in: .whitespaces).lowercased()
                if !name.isEmpty { names.insert(name) }
            }
        }
        return names
    }

    /// The head sent to the primary: the client's method, target and end-to-end fields, the body's
    /// framing, `Host` (the primary), the signed client address and host, `X-AeroDB-Forwarded-By`.
    static func outboundHead(_ request: Request, body: ForwardBody, primary: String, nodeID: String,
                             signedAddress: String?, signedHost: String?) -> HTTPRequestHead {
        let fields = request.headers
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count + 5)
        headers.add(name: "Host", value: primary)
        let connection = fields[values: .connection]
        let named = connection.isEmpty ? [] : nominated(connection.map { Substring($0) })
        var cookieSent = false
        for field in fields {
            let name = field.name.canonicalName
            if notForwarded.contains(name) { continue }
            if !named.isEmpty, named.contains(name) { continue }
            if name == "cookie" {
                // The server split `Cookie` into one field per pair; HTTP/1.1 sends one line.
                if !cookieSent, let joined = fields[.cookie] { headers.add(name: "Cookie", value: joined) }
                cookieSent = true
                continue
            }
            headers.add(name: field.name.rawName, value: field.value)
        }
        let bodyExpected = request.method == .post || request.method == .put || request.method == .patch
        switch body {
        case .bytes(let bytes):
            if bytes.readableBytes > 0 || bodyExpected {
                headers.add(name: "Content-Length", value: String(bytes.readableBytes))
            }
        case .stream(_, let length):
            if let length {
                headers.add(name: "Content-Length", value: String(length))
            } else if fields[.transferEncoding] != nil {
                headers.add(name: "Transfer-Encoding", value: "chunked")
            } else if bodyExpected {
                headers.add(name: "Content-Length", value: "0")
            }
        }
        if let signedAddress { headers.add(name: memberNames.clientAddress, value: signedAddress) }
        headers.add(name: memberNames.forwardedBy, value: nodeID)
        // The host the client addressed, signed (S3 SigV4 signs it; S3API reads it on a forwarded request).
        if let signedHost { headers.add(name: memberNames.forwardedHost, value: signedHost) }
        return HTTPRequestHead(version: .http1_1, method: NIOHTTP1.HTTPMethod(rawValue: request.method.rawValue),
                               uri: request.head.path ?? "/", headers: headers)
    }

    /// A write that never reached the primary is refused as unavailable; one that may have
    /// reached it but got no answer is in doubt (never reported as failed or as done).
    static func classify(_ failure: ForwardFailure, primary: String) -> AeroError {
        if !failure.sent {
            return AeroError(.primaryUnavailable, "the primary \(primary) cannot be reached to forward this write (it was not sent): \(failure)")
        }
        return AeroError(.commitInDoubt, "the write was forwarded to the primary \(primary) but no answer came back (\(failure)); it may or may not have been committed")
    }

    /// The primary's answer fields as returned to the client: without hop-by-hop fields and the
    /// framing of the primary's connection (this node frames its own answer).
    static func answerFields(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = HTTPFields()
        fields.reserveCapacity(headers.count)
        let connection = headers[canonicalForm: "connection"]
        let named = connection.isEmpty ? [] : nominated(connection)
        for (name, value) in headers {
            guard let field = HTTPField.Name(name) else { continue }
            let canonical = field.canonicalName
            if hopByHop.contains(canonical) || canonical == "content-length" { continue }
            if !named.isEmpty, named.contains(canonical) { continue }
            fields.append(HTTPField(name: field, value: value))
        }
        return fields
    }
}

struct ClusterMiddleware<Context: ClientAddressContext>: RouterMiddleware {
    let cluster: any ClusterView
    let database: Database
    /// Signs the client's address on forwarded requests (ClientAddress.swift): the key of its
    /// SecretDomain, derived once (an HMAC per forward otherwise, issue 19's replica profile).
    let addressKey: SymmetricKey
    /// Signs the host the client addressed (ForwardedHost), derived once too.
    let hostKey: SymmetricKey
    /// The same two signatures remembered per value (SignedValueMemo.swift): a forward for a
    /// client seen before computes no HMAC.
    let addressSignatures: SignedValueMemo
    let hostSignatures: SignedValueMemo

    init(cluster: any ClusterView, database: Database, secret: [UInt8]) {
        self.cluster = cluster
        self.database = database
        self.addressKey = SecretDomain.clientAddress.key(secret)
        self.hostKey = SecretDomain.forwardedHost.key(secret)
        self.addressSignatures = SignedValueMemo(key: addressKey)
        self.hostSignatures = SignedValueMemo(key: hostKey)
    }

    /// Admin routes that are POSTs but read or act on this node only: never forwarded.
    static var localAdminPaths: Set<String> {
        ["/admin/v1/query", "/admin/v1/explain", "/admin/v1/checkpoint"]
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if let refusal = cluster.dataRefusal(), path.hasPrefix("/rest/v1") || path.hasPrefix("/auth/v1") || path.hasPrefix("/functions/v1") || path.hasPrefix("/storage/v1")
            || (path.hasPrefix("/admin/v1/") && !path.hasPrefix("/admin/v1/cluster") && path != "/admin/v1/status") {
            return errorResponse(request, refusal)
        }
        if let minimum = request.headers[ClusterHTTP.minLSNHeader] {
            guard let lsn = UInt64(minimum.trimmingCharacters(in: .whitespaces)) else {
                return errorResponse(request, AeroError(.requestInvalid, "X-AeroDB-Min-LSN must be a non-negative integer"))
            }
            guard await database.waitApplied(lsn, timeout: .milliseconds(HTTPLimits.minLSNWaitMillis)) else {
                let current = database.snapshot().lsn
                var response = errorResponse(request, AeroError(.replicaBehind, "node \(cluster.nodeID) has applied LSN \(current), not yet \(lsn), after waiting \(HTTPLimits.minLSNWaitMillis) ms; retry or read from the primary", invariant: "P2"))
                response.headers[HTTPJSON.lsnHeader] = String(current)
                response.headers[.retryAfter] = "1"
                return response
            }
            if let refusal = otherHistory(request, lsn: lsn) { return errorResponse(request, refusal) }
        }
        if isWrite(request), request.headers[ClusterHTTP.forwardedHeader] == nil, let primary = cluster.primaryHTTP() {
            return try await forward(request, to: primary, context: context, next: next)  // the primary's answer names its epoch
        }
        return stamped(try await next(request, context))
    }

    /// Whether `handle` does more for this request than `stamped` on its answer: a diverged
    /// node's refusal, a min-LSN read, a write this node forwards (FrontMiddleware runs the
    /// handler directly otherwise).
    func concerns(_ request: Request) -> Bool {
        if cluster.dataRefusal() != nil || request.headers[ClusterHTTP.minLSNHeader] != nil { return true }
        return isWrite(request) && request.headers[ClusterHTTP.forwardedHeader] == nil && cluster.primaryHTTP() != nil
    }

    /// An answer naming an LSN also names that record's epoch (when this node's history says).
    func stamped(_ response: Response) -> Response {
        guard !response.headers.contains(ClusterHTTP.lsnEpochHeader), let text = response.headers.value(HTTPJSON.lsnHeader),
              let lsn = UInt64(text) else { return response }
        var response = response
        let snapshot = database.snapshot()
        if let epoch = snapshot.state.epochHistory.epoch(at: lsn, last: snapshot.lsn) { response.headers[ClusterHTTP.lsnEpochHeader] = String(epoch) }
        return response
    }

    /// P2 across histories: with `X-AeroDB-Min-LSN-Epoch: E`, a node whose record at the LSN is
    /// of another epoch holds another history (a deposed primary's tail, or a member that has
    /// not yet been refused as diverged): its state at that LSN is not the client's write, so it
    /// refuses instead of answering. A node whose history no longer names that LSN's epoch
    /// (older than what it keeps) answers as without the header.
    private func otherHistory(_ request: Request, lsn: UInt64) -> AeroError? {
        guard let text = request.headers[ClusterHTTP.minLSNEpochHeader] else { return nil }
        guard let wanted = UInt64(text.trimmingCharacters(in: .whitespaces)) else {
            return AeroError(.requestInvalid, "X-AeroDB-Min-LSN-Epoch must be a non-negative integer")
        }
        let snapshot = database.snapshot()
        guard let held = snapshot.state.epochHistory.epoch(at: lsn, last: snapshot.lsn), held != wanted else { return nil }
        return AeroError(.replicaBehind, "node \(cluster.nodeID) holds another history at LSN \(lsn) (a record of epoch \(held), not \(wanted)): it is a deposed or diverged member; read from the primary", invariant: "P2")
    }

    private func isWrite(_ request: Request) -> Bool {
        let path = request.uri.path
        if path == "/auth/v1/verify" || path == "/auth/v1/reauthenticate" || path == "/auth/v1/callback" { return true }  // GETs that consume or issue codes
        // HEAD of a TUS upload reads its offset, which only the primary holds (storage ResumableAPI).
        if request.method == .head { return path.hasPrefix("/storage/v1/upload/resumable/") }
        guard [.post, .patch, .put, .delete].contains(request.method) else { return false }
        if path.hasPrefix("/rest/v1/") || path.hasPrefix("/auth/v1/") { return true }
        if path.hasPrefix("/storage/v1/") { return StorageRoutes.writes(path, method: request.method.rawValue) }
        if path.hasPrefix("/functions/v1/") { return true }  // an invocation that may write runs on the primary
        return path.hasPrefix("/admin/v1/") && !Self.localAdminPaths.contains(path) && !path.hasPrefix("/admin/v1/cluster")
    }

    private func errorResponse(_ request: Request, _ error: AeroError) -> Response {
        let path = request.uri.path
        if path.hasPrefix("/rest/v1") { return RESTError.response(error) }
        if path.hasPrefix("/auth/v1") { return AuthErrorResponse.response(error, request: request) }
        return HTTPErrors.response(error)
    }

    private func forward(_ request: Request, to first: String, context: Context,
                         next: (Request, Context) async throws -> Response) async throws -> Response {
        var request = request
        if request.uri.path.hasPrefix("/storage/v1/") {
            // Uploads are forwarded as a stream (never collected in memory); a body cannot be
            // replayed, so a primary that cannot be reached is answered 503 without a retry.
            let length = request.headers[.contentLength].flatMap { Int64($0) }
            switch await send(request, body: .stream(request.body, length: length), to: first, clientIP: context.clientIP) {
            case .answered(let response): return response
            case .failed(let error): return errorResponse(request, error)
            }
        }
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: HTTPLimits.requestBodyBytesMax)
        } catch {
            return errorResponse(request, AeroError(.requestInvalid, "request body larger than \(HTTPLimits.requestBodyBytesMax) bytes or unreadable"))
        }
        var primary = first
        for attempt in 1...HTTPLimits.forwardAttemptsMax {
            let outcome = await send(request, body: .bytes(body), to: primary, clientIP: context.clientIP)
            switch outcome {
            case .answered(let response):
                return response
            case .failed(let error) where error.code == .primaryUnavailable && attempt < HTTPLimits.forwardAttemptsMax:
                // Never sent: follow the primary this node knows now, if it changed.
                guard let current = cluster.primaryHTTP() else {
                    request.body = .init(buffer: body)
                    return try await next(request, context)  // this node was promoted meanwhile
                }
                guard current != primary else { return errorResponse(request, error) }
                primary = current
            case .failed(let error):
                return errorResponse(request, error)
            }
        }
        preconditionFailure("the last attempt returns")
    }

    private enum Forwarded {
        case answered(Response)
        case failed(AeroError)
    }

    /// One attempt: the primary's answer (returned once this node applied its LSN), or why there is none.
    private func send(_ request: Request, body: ForwardBody, to primary: String, clientIP: String?) async -> Forwarded {
        let head = ClusterHTTP.outboundHead(request, body: body, primary: primary, nodeID: cluster.nodeID,
                                            signedAddress: clientIP.map { addressSignatures.sign($0) },
                                            signedHost: request.head.authority.map { hostSignatures.sign($0) })
        let started = ContinuousClock.now  // aerodb_forward_duration_seconds (ForwardMetrics)
        let answer: ForwardAnswer
        switch await ClusterHTTP.forwardPool.exchange(primary, head: head, body: body) {
        case .success(let whole):
            answer = whole
        case .failure(let failure):
            ForwardMetrics.shared.record(status: nil, elapsed: ContinuousClock.now - started)
            return .failed(ClusterHTTP.classify(failure, primary: primary))
        }
        let status = Int(answer.head.status.code)
        ForwardMetrics.shared.record(status: status, elapsed: ContinuousClock.now - started)
        var headers = ClusterHTTP.answerFields(answer.head.headers)
        if let lsn = headers[HTTPJSON.lsnHeader].flatMap({ UInt64($0) }) {
            // Resumed by the publication that reaches it (`Visibility.wait`: one list of waiters).
            let applied = await database.waitApplied(lsn, timeout: .milliseconds(HTTPLimits.forwardApplyWaitMillis))
            if !applied { headers[ClusterHTTP.appliedHeader] = "false" }
        }
        return .answered(Response(status: HTTPResponse.Status(code: status), headers: headers, body: .init(byteBuffer: answer.body)))
    }
}
