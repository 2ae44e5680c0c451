// The slow log: requests that took longer than `slow_query_ms` (aerodb.json), logged as a
// warning line (with the request id) and kept, newest first, in a bounded in-memory ring read at
// `GET /admin/v1/logs/slow` and by `aerodb logs`. Each entry: time, request id, method, route
// pattern, path (never the query string: it may hold tokens), status, milliseconds.
// In memory only: a restart empties it (the log lines remain).
//
// Plans: while a request runs, the REST query path notes each kernel query it runs with its
// snapshot (`SlowLog.noteQuery`, a task-local list of at most `plansPerEntryMax`: a struct copy,
// no planning on the fast path). Only when the request turns out slow are those queries planned
// again on the same snapshots (`Snapshot.explain`, the plan `POST /admin/v1/explain` shows) and
// put in the entry as `plans`.

import Foundation
import Hummingbird
import Kernel
import Logging
import Synchronization

public final class SlowLog: Sendable {
    public static let shared = SlowLog()

    /// Entries kept (oldest dropped first): the log is for recent trouble, not an archive.
    public static let entriesMax = 1_000
    /// Default threshold (milliseconds); 0 turns the slow log off.
    public static let thresholdMillisDefault: Int64 = 1_000
    /// Largest threshold accepted (one hour).
    public static let thresholdMillisMax: Int64 = 3_600_000
    /// Longest path kept in an entry (bytes); longer ones are cut with "...".
    static let pathBytesMax = 512

    /// Queries of one request whose plans a slow entry keeps (the first ones run).
    static let plansPerEntryMax = 8

    /// The queries one request ran, with their snapshots (bounded by `plansPerEntryMax`).
    final class QueryNotes: Sendable {
        let list = Mutex<[(query: Query, snapshot: Snapshot)]>([])
    }

    @TaskLocal static var notes: QueryNotes?

    /// Called by the REST query path for every kernel query (cheap: nothing when the slow log is
    /// off or no request is being observed).
    public static func noteQuery(_ query: Query, on snapshot: Snapshot) {
        guard let notes else { return }
        notes.list.withLock { list in
            if list.count < plansPerEntryMax { list.append((query, snapshot)) }
        }
    }

    private let threshold = Atomic<Int64>(SlowLog.thresholdMillisDefault)
    private let ring = Mutex<[JSONValue]>([])

    public init() {}

    public var thresholdMillis: Int64 { threshold.load(ordering: .relaxed) }

    public func setThreshold(millis: Int64) {
        threshold.store(min(max(0, millis), Self.thresholdMillisMax), ordering: .relaxed)
    }

    public static func parseThreshold(_ value: JSONValue) throws -> Int64 {
        guard let n = value.intValue, n >= 0, n <= thresholdMillisMax else {
            throw AeroError(.configInvalid, "slow_query_ms must be an integer from 0 (off) to \(thresholdMillisMax)")
        }
        return n
    }

    func observe(method: String, route: String?, path: String, status: Int, elapsed: Duration, requestID: String, logger: Logger,
                 notes: QueryNotes? = nil) {
        let limit = thresholdMillis
        guard limit > 0 else { return }
        let millis = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        guard millis >= Double(limit) else { return }
        let plans: [JSONValue] = (notes?.list.withLock { $0 } ?? []).map { noted in
            do {
                var plan = try noted.snapshot.explain(noted.query).json
                if case .object(var o) = plan { o["collection"] = .string(noted.query.collection); plan = .object(o) }
                return plan
            } catch {
                return .object(["collection": .string(noted.query.collection), "error": .string("\(error)")])
            }
        }
        let shownPath = path.utf8.count <= Self.pathBytesMax ? path : String(decoding: Array(path.utf8.prefix(Self.pathBytesMax)), as: UTF8.self) + "..."
        let entry: JSONValue = .object([
            "ts": .string(Timestamp.format(SystemClock().nowMicros())), "request_id": .string(requestID),
            "method": .string(method), "route": .string(route ?? "unmatched"), "path": .string(shownPath),
            "status": .int(Int64(status)), "ms": .float(millis), "plans": .array(plans),
        ])
        ring.withLock { entries in
            if entries.count >= Self.entriesMax { entries.removeFirst(entries.count - Self.entriesMax + 1) }
            entries.append(entry)
        }
        logger.warning("slow request", metadata: ["method": "\(method)", "path": "\(shownPath)", "status": "\(status)",
                                                  "ms": "\(millis)", "threshold_ms": "\(limit)"])
    }

    /// The newest `limit` entries, newest first.
    public func entries(limit: Int) -> [JSONValue] {
        ring.withLock { Array($0.suffix(max(0, limit)).reversed()) }
    }

    /// `GET /admin/v1/logs/slow?limit=N` (service_role key; N 1...entriesMax, default 100).
    public static func register(on router: Router<AeroRequestContext>, keys: KeyChecker, log: SlowLog = .shared) {
        router.get("/admin/v1/logs/slow") { request, _ in
            do {
                try keys.requireServiceRole(request)
                var limit = 100
                if let text = request.uri.queryParameters.get("limit") {
                    guard let n = Int(text), (1...entriesMax).contains(n) else {
                        throw AeroError(.requestInvalid, "limit must be 1...\(entriesMax)")
                    }
                    limit = n
                }
                return HTTPJSON.response(.object(["threshold_ms": .int(log.thresholdMillis), "entries": .array(log.entries(limit: limit))]))
            } catch {
                return HTTPErrors.response(error)
            }
        }
    }
}
