// The one middleware of the node's router (AdminAPI.router): in one pass, what five middlewares
// did in turn (issue 19: each layer was an async frame and a copy of the request context, and the
// middlewares' plumbing was as large as their work in the profile of a GET by key). In order,
// outermost first, with the behaviour each had:
// 1. Request id and metrics (formerly OpsMiddleware; RequestID.swift, NodeMetrics.swift): the
//    client's `X-Request-Id` kept when acceptable, else a fresh one, set on the request (write
//    forwarding carries it) and, unless the log handler names it itself (a RequestLineHandler:
//    the node's), the request logger's metadata; bound for the request's tasks
//    (one task-local: `SlowLog.notes`, which also holds the slow log's query notes), echoed on the
//    answer; the request counted by method, route pattern and status, its latency measured until
//    the answer's head; a slow or refused request goes to the slow log (SlowLog.swift).
//    The route label is the pattern of the route that answered (`/rest/v1/:table`), never the
//    path (a bounded label set); unmatched requests count as `unmatched`, other methods `other`.
// 2. The request log (RequestLog.swift): every error that no handler answered gets the JSON
//    error shape of its API (RouteErrors); one log line per request (method, path, redacted
//    query, status, ms), handed to the log writer's queue (LogLine.swift: written off the request
//    path), and the same record in the request ring (RequestRing.swift, OBS1).
// 3. The client's address (ClientAddress.swift): `context.clientIP`, the TCP peer or the
//    verified address a cluster member forwarded the request for, worked out when a handler
//    reads it (RequestContext.swift).
// 4. Cluster (ClusterMiddleware.swift): refusals of a diverged replica, `X-AeroDB-Min-LSN`
//    reads, write forwarding to the primary, `X-AeroDB-LSN-Epoch` on answers naming an LSN.
//    A request none of the first three can concern (no refusal, no min-LSN header, not a write
//    this node forwards) only gets the epoch stamp, without ClusterMiddleware's frame.
// 5. The admin audit (AdminAudit.swift): an admin action that changed something is recorded
//    after its answer, where it executed.

import HTTPTypes
import Hummingbird
import Kernel
import Logging

struct FrontMiddleware<Context: ClientAddressContext>: RouterMiddleware {
    let metrics: NodeMetrics
    let slowLog: SlowLog
    /// The router's routes (loaded once they are all registered), to tell 405 from 404.
    let routes: KnownRoutes?
    /// Where each request is also kept for `GET /admin/v1/requests`.
    let ring: RequestRing
    let address: ClientAddressVerifier
    let cluster: ClusterMiddleware<Context>
    let audit: AdminAudit<Context>
    /// The node's log handler writes the request line itself and names the request's id on every
    /// line (RequestLineHandler): no copy of each request logger's metadata to add `request_id`.
    let handlerNamesRequests: Bool

    init(cluster: any ClusterView, database: Database, secret: [UInt8], logger: Logger, routes: KnownRoutes?,
         metrics: NodeMetrics = .shared, slowLog: SlowLog = .shared, ring: RequestRing = .shared) {
        self.metrics = metrics
        self.slowLog = slowLog
        self.routes = routes
        self.ring = ring
        self.address = ClientAddressVerifier(secret: secret)
        self.cluster = ClusterMiddleware(cluster: cluster, database: database, secret: secret)
        self.audit = AdminAudit(database: database, logger: logger)
        self.handlerNamesRequests = logger.handler is any RequestLineHandler
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // 1. The request id.
        let sent = request.headers.value(RequestID.header)
        let id = RequestID.accept(sent) ?? RequestID.generate()
        var request = request
        if sent != id {  // carried on (write forwarding copies the request's headers)
            var head = request.head
            head.headerFields[RequestID.header] = id
            request = Request(head: head, body: request.body)
        }
        var context = context
        if !handlerNamesRequests { context.logger[metadataKey: "request_id"] = .string(id) }
        // 3. The client's address, when a handler asks for it.
        context.resolveClientIP(with: address, for: request)
        let started = ContinuousClock.now
        let notes = SlowLog.QueryNotes(requestID: id)  // the plans of a slow or refused request
        let ready = request, prepared = context
        // Everything after the handler stays in the binding too: the slow log's line is written
        // while `RequestID.current` names the request (the node's handler takes the id from it).
        return await SlowLog.$notes.withValue(notes) { () async -> Response in
            var response: Response
            do {
                response = try await route(ready, context: prepared, next: next)
            } catch {
                // 2. An error no handler answered, in its API's shape.
                response = RouteErrors.response(error, request: ready, allowed: routes?.methods(for: ready.uri.path) ?? [])
            }
            let elapsed = ContinuousClock.now - started
            let method = ready.method.rawValue, status = Int(response.status.code)
            logRequest(ready, logger: prepared.logger, id: id, status: status, elapsed: elapsed)
            if response.headers.contains(RequestID.header) {
                response.headers[RequestID.header] = id
            } else {
                response.headers.append(HTTPField(name: RequestID.header, value: id))  // the setter's generic path, without its search
            }
            metrics.recordRequest(method: method, route: prepared.endpointPath, status: status, elapsed: elapsed)
            slowLog.observe(method: method, route: prepared.endpointPath, path: ready.uri.path,
                            status: status, elapsed: elapsed, requestID: id, logger: prepared.logger, notes: notes)
            return response
        }
    }

    /// 4 and 5: cluster rules around the handler, the audit after it.
    private func route(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if cluster.concerns(request) {
            return try await cluster.handle(request, context: context) { request, context in
                let response = try await next(request, context)
                audit.record(request, context: context, response: response)
                return response
            }
        }
        let response = try await next(request, context)
        audit.record(request, context: context, response: response)
        return cluster.stamped(response)
    }

    /// 2. The request's log line (handed to the log writer) and its ring record, from one
    /// redacted query (OBS1).
    private func logRequest(_ request: Request, logger: Logger, id: String, status: Int, elapsed: Duration) {
        let path = request.uri.path
        let query = RequestRedaction.query(path: path, query: request.uri.query)
        let millis = Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1e3
        let method = request.method.rawValue
        if logger.logLevel <= .info {
            let line = RequestLine(method: method, path: path, query: query, status: status, millis: millis)
            if let handler = logger.handler as? any RequestLineHandler {
                handler.logRequestLine(line)  // the same line, without swift-log's metadata dictionary
            } else {
                logger.info("request", metadata: .init(uniqueKeysWithValues: line.fields.map { ($0.key, .string($0.value)) }), source: "BaaS")
            }
        }
        ring.record(micros: SystemClock().nowMicros(), requestID: id, method: method,
                    path: path, query: query, status: status, millis: millis)
    }
}
