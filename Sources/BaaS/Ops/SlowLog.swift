// The query operation log: requests slower than `slow_query_ms` (aerodb.json) and requests whose
// query was refused (AERO_QUERY_UNBOUNDED, AERO_QUERY_BUDGET), each logged as a line (with the
// request id) and kept, newest first, in bounded in-memory rings read at `GET
// /admin/v1/logs/queries` (also `/admin/v1/logs/slow`) and by `aerodb logs`. Each entry: kind
// (`slow` or `refused`), time, request id, method, route pattern, path (never the query string: it
// may hold tokens), status, milliseconds, plans; a refused entry also the error's code and message.
// In memory only: a restart empties it (the log lines remain).
//
// Plans: while a request runs, the REST query path notes each kernel query it runs with its
// snapshot (`SlowLog.noteQuery`, a task-local list of at most `plansPerEntryMax`: a struct copy,
// no planning on the fast path). Only when the request turns out slow or refused are those
// queries planned again on the same snapshots (`Snapshot.explain`, the plan `POST
// /admin/v1/explain` shows) and put in the entry as `plans`. The query the bound refused is
// planned without the scan bound (planning only, nothing runs), so its plan shows the access path
// and the rows it could have examined (`rows_examined_bound`), with `"refused": true`.
//
// Refusals are noted where an error becomes an answer (`HTTPErrors.response`,
// `RESTErrors.response`: `SlowLog.noteRefusal`), so a refusal caught and handled inside a request
// (e.g. the max-affected pre-count) is not an entry. Slow and refused entries have rings of their
// own (`entriesMax` each): a client sending refused queries cannot push slow entries out.

import Foundation
import Hummingbird
import Kernel
import Logging
import Synchronization

public final class SlowLog: Sendable {
    public static let shared = SlowLog()

    /// Entries kept of each kind (oldest dropped first): the log is for recent trouble, not an archive.
    public static let entriesMax = 1_000
    /// Default threshold (milliseconds); 0 turns the slow entries off (refused ones stay on).
    public static let thresholdMillisDefault: Int64 = 1_000
    /// Largest threshold accepted (one hour).
    public static let thresholdMillisMax: Int64 = 3_600_000
    /// Longest path kept in an entry (bytes); longer ones are cut with "...".
    static let pathBytesMax = 512
    /// Longest error message kept in a refused entry (bytes): messages quote the caller's filter.
    static let messageBytesMax = 1_024

    /// Queries of one request whose plans an entry keeps (the first ones run).
    static let plansPerEntryMax = 8

    /// The error codes that make a request a refused-query entry.
    static let refusalCodes: Set<AeroError.Code> = [.queryUnbounded, .queryBudget]

    /// What one request noted while it ran: its queries with their snapshots (bounded by
    /// `plansPerEntryMax`), the query a bound refused (planned without the bound) and the refusal
    /// that became its answer.
    /// It also carries the request's id: the one task-local a request binds (RequestID.current).
    final class QueryNotes: Sendable {
        let requestID: String
        init(requestID: String) { self.requestID = requestID }
        struct Refused { let query: Query; let snapshot: Snapshot; let options: QueryOptions; let index: Int? }
        let list = Mutex<[(query: Query, snapshot: Snapshot)]>([])
        let refusedQuery = Mutex<Refused?>(nil)
        let refusal = Mutex<AeroError?>(nil)
    }

    @TaskLocal static var notes: QueryNotes?

    /// Called by the REST query path for every kernel query (cheap: a struct copy into a list of
    /// at most `plansPerEntryMax`; nothing when no request is being observed).
    public static func noteQuery(_ query: Query, on snapshot: Snapshot) {
        guard let notes else { return }
        notes.list.withLock { list in
            if list.count < plansPerEntryMax { list.append((query, snapshot)) }
        }
    }

    /// Called by the REST query path when the planner's bound or the request budget refused
    /// `query`; `options` are the node's (the entry plans it again without the scan bound).
    public static func noteRefusedQuery(_ query: Query, on snapshot: Snapshot, options: QueryOptions) {
        guard let notes else { return }
        // It was noted before it ran (when the list had room): its plan is shown once, as refused.
        let index = notes.list.withLock { list in list.last?.query == query ? list.count - 1 : nil }
        notes.refusedQuery.withLock { if $0 == nil { $0 = .init(query: query, snapshot: snapshot, options: options, index: index) } }
    }

    /// Called where an error becomes the request's answer: a query refusal makes the request a
    /// refused entry.
    static func noteRefusal(_ error: AeroError) {
        guard refusalCodes.contains(error.code), let notes else { return }
        notes.refusal.withLock { if $0 == nil { $0 = error } }
    }

    private struct Rings {
        var slow: [(seq: UInt64, entry: JSONValue)] = []
        var refused: [(seq: UInt64, entry: JSONValue)] = []
        var seq: UInt64 = 0
    }

    private let threshold = Atomic<Int64>(SlowLog.thresholdMillisDefault)
    private let rings = Mutex(Rings())

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

    static func cut(_ text: String, _ most: Int) -> String {
        text.utf8.count <= most ? text : String(decoding: Array(text.utf8.prefix(most)), as: UTF8.self) + "..."
    }

    func observe(method: String, route: String?, path: String, status: Int, elapsed: Duration, requestID: String, logger: Logger,
                 notes: QueryNotes? = nil) {
        let limit = thresholdMillis
        let millis = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
        let refusal = notes?.refusal.withLock { $0 }
        let slow = limit > 0 && millis >= Double(limit)
        guard refusal != nil || slow else { return }
        var plans: [JSONValue] = (notes?.list.withLock { $0 } ?? []).map { noted in
            do {
                var plan = try noted.snapshot.explain(noted.query).json
                if case .object(var o) = plan { o["collection"] = .string(noted.query.collection); plan = .object(o) }
                return plan
            } catch {
                return .object(["collection": .string(noted.query.collection), "error": .string(Self.cut("\(error)", Self.messageBytesMax))])
            }
        }
        if refusal != nil, let refused = notes?.refusedQuery.withLock({ $0 }) {
            // Planning only, without the scan bound: the path the refused query would have taken.
            var unbounded = refused.options
            unbounded.scanRowsMax = .max
            var entry: [String: JSONValue] = ["collection": .string(refused.query.collection), "refused": .bool(true),
                                              "scan_rows_max": .int(Int64(refused.options.scanRowsMax))]
            do {
                if case .object(let o) = try QueryEngine.explain(refused.query, on: try refused.snapshot.state.collection(refused.query.collection),
                                                                 options: unbounded).json {
                    entry.merge(o) { mine, _ in mine }
                }
            } catch {
                entry["error"] = .string(Self.cut("\(error)", Self.messageBytesMax))
            }
            if let at = refused.index, at < plans.count {
                plans[at] = .object(entry)
            } else if plans.count < Self.plansPerEntryMax {
                plans.append(.object(entry))
            } else {
                plans[plans.count - 1] = .object(entry)
            }
        }
        let shownPath = Self.cut(path, Self.pathBytesMax)
        var fields: [String: JSONValue] = [
            "kind": .string(refusal != nil ? "refused" : "slow"),
            "ts": .string(Timestamp.format(SystemClock().nowMicros())), "request_id": .string(requestID),
            "method": .string(method), "route": .string(route ?? "unmatched"), "path": .string(shownPath),
            "status": .int(Int64(status)), "ms": .float(millis), "plans": .array(plans),
        ]
        if let refusal {
            fields["code"] = .string(refusal.code.rawValue)
            fields["message"] = .string(Self.cut(refusal.message, Self.messageBytesMax))
        }
        let entry = JSONValue.object(fields)
        rings.withLock { r in
            r.seq += 1
            if refusal != nil {
                if r.refused.count >= Self.entriesMax { r.refused.removeFirst(r.refused.count - Self.entriesMax + 1) }
                r.refused.append((r.seq, entry))
            } else {
                if r.slow.count >= Self.entriesMax { r.slow.removeFirst(r.slow.count - Self.entriesMax + 1) }
                r.slow.append((r.seq, entry))
            }
        }
        if let refusal {
            logger.info("refused query", metadata: ["method": "\(method)", "path": "\(shownPath)", "status": "\(status)",
                                                    "code": "\(refusal.code.rawValue)", "ms": "\(millis)"])
        } else {
            logger.warning("slow request", metadata: ["method": "\(method)", "path": "\(shownPath)", "status": "\(status)",
                                                      "ms": "\(millis)", "threshold_ms": "\(limit)"])
        }
    }

    /// The newest `limit` entries, newest first: of one kind (`slow`, `refused`) or both.
    public func entries(limit: Int, kind: String? = nil) -> [JSONValue] {
        rings.withLock { r in
            let slow = kind == nil || kind == "slow" ? r.slow.suffix(max(0, limit)) : []
            let refused = kind == nil || kind == "refused" ? r.refused.suffix(max(0, limit)) : []
            return (slow + refused).sorted { $0.seq > $1.seq }.prefix(max(0, limit)).map(\.entry)
        }
    }

    /// `GET /admin/v1/logs/queries?limit=N&kind=slow|refused` and the same at `/admin/v1/logs/slow`
    /// (service_role key; N 1...entriesMax, default 100; without `kind`, both kinds).
    public static func register(on router: Router<AeroRequestContext>, keys: KeyChecker, log: SlowLog = .shared) {
        for path in ["/admin/v1/logs/queries", "/admin/v1/logs/slow"] {
            router.get(RouterPath(path)) { request, _ in
                do {
                    try keys.requireServiceRole(request)
                    var limit = 100
                    if let text = request.uri.queryParameters.get("limit") {
                        guard let n = Int(text), (1...entriesMax).contains(n) else {
                            throw AeroError(.requestInvalid, "limit must be 1...\(entriesMax)")
                        }
                        limit = n
                    }
                    let kind = request.uri.queryParameters.get("kind")
                    guard kind == nil || kind == "slow" || kind == "refused" else {
                        throw AeroError(.requestInvalid, "kind must be slow or refused")
                    }
                    return HTTPJSON.response(.object(["threshold_ms": .int(log.thresholdMillis),
                                                      "entries": .array(log.entries(limit: limit, kind: kind))]))
                } catch {
                    return HTTPErrors.response(error)
                }
            }
        }
    }
}
