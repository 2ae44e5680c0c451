// The outermost middleware of every router: gives the request its id (RequestID.swift) and
// counts it in the HTTP metrics (NodeMetrics.swift) by method, route pattern and status.
//
// The route label is the pattern of the route that answered (`/rest/v1/:table`), never the
// path: patterns are the routes the node registered, so the label set is bounded. Unmatched
// requests count as `unmatched`. Methods outside the standard ones count as `other`.
// Latency is measured until the answer's head is ready (a streamed body may continue).

import Hummingbird
import Logging

public struct OpsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: NodeMetrics
    let slowLog: SlowLog

    public init(metrics: NodeMetrics = .shared, slowLog: SlowLog = .shared) {
        self.metrics = metrics
        self.slowLog = slowLog
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let sent = request.headers[RequestID.header]
        let id = RequestID.accept(sent) ?? RequestID.generate()
        var request = request
        if sent != id {  // carried on (write forwarding copies the request's headers)
            var head = request.head
            head.headerFields[RequestID.header] = id
            request = Request(head: head, body: request.body)
        }
        var context = context
        context.logger[metadataKey: "request_id"] = .string(id)
        let started = ContinuousClock.now
        do {
            let notes = SlowLog.QueryNotes()  // the plans of a slow or refused request
            var response = try await RequestID.$current.withValue(id) {
                try await SlowLog.$notes.withValue(notes) { try await next(request, context) }
            }
            response.headers[RequestID.header] = id
            let elapsed = ContinuousClock.now - started
            metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath,
                                  status: Int(response.status.code), elapsed: elapsed)
            slowLog.observe(method: request.method.rawValue, route: context.endpointPath, path: request.uri.path,
                            status: Int(response.status.code), elapsed: elapsed, requestID: id, logger: context.logger, notes: notes)
            return response
        } catch {
            // RequestLogMiddleware answers every error; one that still gets here is a 500.
            metrics.recordRequest(method: request.method.rawValue, route: context.endpointPath, status: 500,
                                  elapsed: ContinuousClock.now - started)
            throw error
        }
    }
}
