// Database calls of a guest (`db_request`, FunctionABI) run AS THE CALLER through the same code
// as /rest/v1 (RESTAPI.data): the caller's policies are injected before execution (RLS1), REST's
// request budget, ranges and error shapes apply, and only the service key bypasses policies.
// Writes commit on this node: a function that writes is invoked on the primary (POST, PUT,
// PATCH and DELETE to /functions/v1 and every POST rpc are forwarded there like any write); a
// write from a GET invocation on a replica answers 503 AERO_NOT_PRIMARY to the guest.
//
// The guest's thread blocks until the answer (it is a runtime thread, not the cooperative pool);
// the wait ends at the invocation's deadline.

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore
import Synchronization

struct RESTDataAccess: FunctionDataAccess {
    let access: RESTAPI.Access

    func run(_ request: FunctionDataRequest, deadline: ContinuousClock.Instant) -> [UInt8] {
        var headers = HTTPFields()
        if !request.prefer.isEmpty { headers[HTTPField.Name("Prefer")!] = request.prefer }
        let data = RESTAPI.DataRequest(collection: request.path, query: request.query.isEmpty ? nil : request.query,
                                       headers: headers, body: request.body)
        let access = self.access
        let method = request.method
        let box = Mutex<[UInt8]?>(nil)
        let done = DispatchSemaphore(value: 0)
        let task = Task {
            let response = await RESTAPI.data(method: method, data, access)
            let collector = BodyCollector()
            var bytes: [UInt8] = []
            do {
                try await response.body.write(collector)
                bytes = collector.bytes
            } catch {
                bytes = Array("\(error)".utf8)
            }
            let parsed: JSONValue = bytes.isEmpty ? .null : ((try? JSON.parse(bytes)) ?? .string(String(decoding: bytes, as: UTF8.self)))
            box.withLock { $0 = JSON.encode(.object(["status": .int(Int64(response.status.code)), "body": parsed])) }
            done.signal()
        }
        let remaining = deadline - ContinuousClock.now
        let millis = max(0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
        if done.wait(timeout: .now() + .milliseconds(Int(min(millis, 600_000)))) == .timedOut {
            task.cancel()
            return JSON.encode(.object(["status": .int(504), "body": .object([
                "code": .string(AeroError.Code.functionLimit.rawValue),
                "message": .string("the database call did not finish before the function's wall_ms deadline")])]))
        }
        return box.withLock { $0 } ?? []
    }
}

/// Collects a Response body (REST answers are single buffers, bounded by REST's own budget).
final class BodyCollector: ResponseBodyWriter, @unchecked Sendable {
    private(set) var bytes: [UInt8] = []
    func write(_ buffer: ByteBuffer) async throws { bytes.append(contentsOf: buffer.readableBytesView) }
    func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

extension FunctionService {
    func dataAccess(_ caller: Caller) -> any FunctionDataAccess {
        RESTDataAccess(access: RESTAPI.Access(database: database, caller: caller, engine: policies, keys: keys))
    }
}
