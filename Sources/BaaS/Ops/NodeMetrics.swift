// `/metrics`: the node's measurements in the Prometheus text format (0.0.4), through
// swift-prometheus. docs/OPERATIONS.md "Metrics" lists every series.
//
// - The kernel emits through swift-metrics (Kernel/Metrics/KernelMetrics.swift); `aerodb start`
//   bootstraps swift-metrics with `AeroMetricsFactory`, which registers those series in this
//   registry with their help text (promtool refuses series without one).
// - HTTP requests are counted here (FrontMiddleware); gauges that describe the node (replication
//   lag per follower, realtime connections, bytes on disk, process RSS and open files) are read
//   at each scrape, not maintained on the hot path.
// - No label value comes from a client: routes are registered patterns, methods a fixed set,
//   statuses 100...599, followers the configured members, disk kinds a fixed set.
// - `/metrics` needs the service_role key (`Authorization: Bearer <key>` or `apikey`), like the
//   admin API: it tells who the members are and how busy the node is.

import CoreMetrics
import Foundation
import Hummingbird
import Kernel
import Prometheus
import Synchronization

public final class NodeMetrics: Sendable {
    /// The process-wide registry: swift-metrics has one backend per process too.
    public static let shared = NodeMetrics()

    public let registry = PrometheusCollectorRegistry()

    /// Histogram buckets for request, commit and fsync latencies: 50 µs to 10 s.
    static let durationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10),
    ]
    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    /// How long the bytes-on-disk figures are reused between scrapes: listing the blob shards
    /// of a large store at every scrape would cost more than the scrape.
    static let diskBytesCacheMillis: Int64 = 10_000
    /// Files counted under one disk kind at most (a bound on one scrape's work).
    static let diskFilesPerKindMax = 200_000

    static let help: [String: String] = [
        "aerodb_wal_fsync_duration_seconds": "WAL group write and fdatasync duration.",
        "aerodb_wal_written_bytes_total": "Bytes written to WAL segments by group commits.",
        "aerodb_commit_duration_seconds": "Local commit duration, from placement to visible (durable and through the commit gate).",
        "aerodb_commits_total": "Write transactions committed on this node.",
        "aerodb_checkpoint_duration_seconds": "Checkpoint write duration.",
        "aerodb_http_requests_total": "HTTP requests answered, by method, route pattern and status.",
        "aerodb_http_request_duration_seconds": "HTTP request duration until the answer's head, by method and route pattern.",
        "aerodb_replication_follower_lag_lsn": "On the primary: LSNs the follower's durable log is behind the primary's.",
        "aerodb_replication_follower_lag_seconds": "On the primary: time since the follower last held everything the primary had flushed.",
        "aerodb_replication_follower_connected": "On the primary: 1 when the follower is connected.",
        "aerodb_replication_primary_lag_lsn": "On a replica: LSNs behind the primary's durable LSN at its last heartbeat.",
        "aerodb_durable_lsn": "Last durable LSN of this node's log.",
        "aerodb_applied_lsn": "LSN of the state this node serves.",
        "aerodb_is_primary": "1 on the primary, 0 on a replica.",
        "aerodb_documents": "Documents in all collections.",
        "aerodb_memory_used_bytes": "Bytes of documents and indexes held in memory.",
        "aerodb_realtime_connections": "Open realtime WebSocket connections.",
        "aerodb_storage_bytes": "Bytes on disk under the data directory, by kind (wal, checkpoints, blobs).",
        "process_resident_memory_bytes": "Resident memory of the node process.",
        "process_open_fds": "Open file descriptors of the node process.",
        "aerodb_archive_archived_lsn": "On the primary with a WAL archive: last LSN archived.",
        "aerodb_archive_lag_lsn": "On the primary with a WAL archive: LSNs durable here and not archived yet.",
        "aerodb_archive_gaps": "On the primary with a WAL archive: gaps found or made since start (records recycled before they were archived).",
        "aerodb_archive_failing": "On the primary with a WAL archive: 1 while the last archiving pass failed.",
        "aerodb_archive_failures_total": "WAL archiving passes that failed.",
        "aerodb_archive_last_success_timestamp_seconds": "Unix time of the last archiving pass that succeeded.",
        "aerodb_auth_events_total": "Auth events committed on this node (the primary: a replica forwards auth writes), by audit action; rate_limited for refused over a rate limit.",
        "aerodb_forwarded_requests_total": "On a replica: writes sent to the primary, by class of the primary's status (error: no answer).",
        "aerodb_log_lines_dropped_total": "Log lines dropped because the log writer's queue was full (the descriptor did not drain).",
        "aerodb_forward_duration_seconds": "On a replica: time from sending a write to the primary until its whole answer arrived (not the wait to apply it here).",
    ]

    /// Label values of `aerodb_auth_events_total`: the audit actions the auth code records
    /// (Auth/, OAuth/) and `rate_limited`; any other action counts as `other` (a fixed set:
    /// never a user, an address or a provider).
    static let authEvents: Set<String> = [
        "login", "login_failed", "logout", "user_signedup", "user_created", "user_deleted", "user_invited",
        "user_modified", "user_confirmation_requested", "user_reauthenticate_requested", "verify_failed",
        "token_refreshed", "token_revoked", "mfa_verified", "mfa_verification_failed", "challenge_created",
        "factor_enrolled", "factor_unenrolled", "factor_deleted", "identity_linked", "identity_unlinked",
        "link_generated", "oauth_callback_refused", "signing_key_rotated", "rate_limited",
    ]

    func countAuthEvent(_ action: String) {
        let event = Self.authEvents.contains(action) ? action : "other"
        registry.makeCounter(descriptor: Self.descriptor("aerodb_auth_events_total"), labels: [("event", event)]).increment()
    }

    /// One attempt to forward a write: the primary's status (nil: no answer) and the round trip.
    func recordForward(status: Int?, elapsed: Duration) {
        let statusClass = status.map { (100...599).contains($0) ? "\($0 / 100)xx" : "error" } ?? "error"
        registry.makeCounter(descriptor: Self.descriptor("aerodb_forwarded_requests_total"), labels: [("status_class", statusClass)]).increment()
        registry.makeDurationHistogram(descriptor: Self.descriptor("aerodb_forward_duration_seconds"), buckets: Self.durationBuckets).record(elapsed)
    }

    /// A log line the log writer's full queue dropped (LogLine.Writer).
    func countDroppedLogLine() {
        registry.makeCounter(descriptor: Self.descriptor("aerodb_log_lines_dropped_total")).increment()
    }

    private struct DiskCache { var atMillis: Int64?; var bytes: [String: Int64] = [:] }
    private let diskCache = Mutex(DiskCache())
    /// The WAL archiver's gauges (WALArchiver), read at each scrape.
    /// Boxed, never `Mutex<(() -> …)?>`: a closure stored as a generic value is reabstracted on
    /// every inout access, one more thunk per `withLock` (per scrape here; see CommitModeSetting).
    private final class FiguresBox: Sendable {
        let read: @Sendable () -> [(String, Double)]
        init(_ read: @escaping @Sendable () -> [(String, Double)]) { self.read = read }
    }
    private let archiveFigures = Mutex<FiguresBox?>(nil)

    func setArchiveFigures(_ figures: @escaping @Sendable () -> [(String, Double)]) {
        archiveFigures.withLock { $0 = FiguresBox(figures) }
    }

    func countArchiveFailure() {
        registry.makeCounter(descriptor: Self.descriptor("aerodb_archive_failures_total")).increment()
    }

    public init() {}

    /// Binds swift-metrics (the kernel's series) to this registry. Once per process.
    public func bootstrapSwiftMetrics() {
        MetricsSystem.bootstrap(AeroMetricsFactory(registry: registry))
    }

    func recordRequest(method: String, route: String?, status: Int, elapsed: Duration) {
        let method = Self.methods.contains(method) ? method : "other"
        let route = route.map { $0 == "NotFound" ? "unmatched" : ($0.hasPrefix("/") ? $0 : "/" + $0) } ?? "unmatched"
        let status = (100...599).contains(status) ? String(status) : "other"
        let key = RequestSeriesKey(method: method, route: route, status: status)
        let series = requestSeries.withLock { $0[key] } ?? {
            // The registry answers the series it already has; kept here so a request looks its
            // two series up once, not through the registry's name and label checks each time.
            let made = (registry.makeCounter(descriptor: Self.descriptor("aerodb_http_requests_total"),
                                             labels: [("method", method), ("route", route), ("status", status)]),
                        registry.makeDurationHistogram(descriptor: Self.descriptor("aerodb_http_request_duration_seconds"),
                                                       labels: [("method", method), ("route", route)], buckets: Self.durationBuckets))
            requestSeries.withLock { if $0.count < Self.requestSeriesCachedMax { $0[key] = made } }
            return made
        }()
        series.0.increment()
        series.1.record(elapsed)
    }

    private struct RequestSeriesKey: Hashable { let method: String, route: String, status: String }
    /// Request series whose collectors are kept at hand (issue 19: the registry lookups were 3% of
    /// a GET by key). The labels are bounded already (see the header); past this many the rest
    /// are looked up in the registry each time, series.
    static let requestSeriesCachedMax = 4_096
    private let requestSeries = Mutex<[RequestSeriesKey: (Prometheus.Counter, Prometheus.DurationHistogram)]>([:])

    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? "AeroDB series \(name).")
    }

    private func gauge(_ name: String, _ value: Double, labels: [(String, String)] = []) {
        registry.makeGauge(descriptor: Self.descriptor(name), labels: labels).set(value)
    }

    /// Reads the node's current figures into the gauges, then renders every series.
    func scrape(database: Database, cluster: any ClusterView, realtimeConnections: Int) async -> [UInt8] {
        let status = await database.status()
        gauge("aerodb_durable_lsn", Double(status.durableLSN))
        gauge("aerodb_applied_lsn", Double(status.appliedLSN))
        gauge("aerodb_documents", Double(status.documentCount))
        gauge("aerodb_memory_used_bytes", Double(status.memoryBytesUsed))
        gauge("aerodb_realtime_connections", Double(realtimeConnections))
        let fields = await cluster.statusFields()
        gauge("aerodb_is_primary", fields["role"]?.stringValue == "primary" ? 1 : 0)
        if case .object(let replication)? = fields["replication"] {
            if case .array(let replicas)? = replication["replicas"] {
                for case .object(let replica) in replicas {
                    guard let node = replica["node_id"]?.stringValue else { continue }
                    let connected = replica["connected"] == .bool(true)
                    gauge("aerodb_replication_follower_connected", connected ? 1 : 0, labels: [("follower", node)])
                    if connected {
                        gauge("aerodb_replication_follower_lag_lsn", replica["lag_lsn"]?.numberValue ?? 0, labels: [("follower", node)])
                        gauge("aerodb_replication_follower_lag_seconds", (replica["lag_ms"]?.numberValue ?? 0) / 1000, labels: [("follower", node)])
                    } else {
                        // No figure for a disconnected follower (a stale one would hide it).
                        for name in ["aerodb_replication_follower_lag_lsn", "aerodb_replication_follower_lag_seconds"] {
                            registry.unregisterGauge(registry.makeGauge(descriptor: Self.descriptor(name), labels: [("follower", node)]))
                        }
                    }
                }
            } else if let lag = replication["lag_lsn"]?.numberValue {
                gauge("aerodb_replication_primary_lag_lsn", lag)
            }
        }
        for (kind, bytes) in diskBytes(database.options.dataDirectory) {
            gauge("aerodb_storage_bytes", Double(bytes), labels: [("kind", kind)])
        }
        _ = registry.makeCounter(descriptor: Self.descriptor("aerodb_log_lines_dropped_total"))  // shown at 0 too
        for (name, value) in archiveFigures.withLock({ $0 })?.read() ?? [] { gauge(name, value) }
        let process = Self.processFigures()
        if let rss = process.rss { gauge("process_resident_memory_bytes", Double(rss)) }
        if let fds = process.openFiles { gauge("process_open_fds", Double(fds)) }
        return registry.emitToBuffer()
    }

    private func diskBytes(_ dataDirectory: String) -> [String: Int64] {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if let cached = diskCache.withLock({ cache in
            cache.atMillis.map { now &- $0 < Self.diskBytesCacheMillis } == true ? cache.bytes : nil
        }) { return cached }
        var bytes: [String: Int64] = [:]
        for kind in ["wal", "checkpoints", "blobs"] {
            bytes[kind] = Self.directoryBytes(dataDirectory + "/" + kind, filesMax: Self.diskFilesPerKindMax)
        }
        diskCache.withLock { $0 = DiskCache(atMillis: now, bytes: bytes) }
        return bytes
    }

    /// Allocated bytes of the regular files under `path` (preallocated WAL segments count whole).
    static func directoryBytes(_ path: String, filesMax: Int) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: Int64 = 0, files = 0
        while let name = walker.nextObject() as? String, files < filesMax {
            var info = stat()
            guard lstat(path + "/" + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            total &+= Int64(info.st_size)
            files += 1
        }
        return total
    }

    /// RSS from /proc/self/statm (pages), open descriptors from /proc/self/fd; nil where absent.
    static func processFigures() -> (rss: Int64?, openFiles: Int?) {
        var rss: Int64?
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let fields = statm.split(separator: " ")
            if fields.count > 1, let pages = Int64(fields[1]) { rss = pages &* Int64(sysconf(Int32(_SC_PAGESIZE))) }
        }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { max(0, $0.count - 1) }
        return (rss, fds)
    }
}

/// swift-metrics backend over the node's registry, with the help text of every AeroDB series.
struct AeroMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry


    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: NodeMetrics.descriptor(label), labels: dimensions)
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: NodeMetrics.descriptor(label), labels: dimensions)
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        registry.makeGauge(descriptor: NodeMetrics.descriptor(label), labels: dimensions)
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: NodeMetrics.descriptor(label), labels: dimensions)
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: NodeMetrics.descriptor(label), labels: dimensions, buckets: NodeMetrics.durationBuckets)
    }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

public enum OpsRoutes {
    /// `GET /metrics` (service_role key).
    public static func register(on router: Router<AeroRequestContext>, database: Database, keys: KeyChecker,
                                cluster: any ClusterView, metrics: NodeMetrics = .shared,
                                realtimeConnections: @escaping @Sendable () -> Int) {
        router.get("/metrics") { request, _ in
            do {
                try keys.requireServiceRole(request)
            } catch {
                return HTTPErrors.response(error)
            }
            let body = await metrics.scrape(database: database, cluster: cluster, realtimeConnections: realtimeConnections())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
    }
}
