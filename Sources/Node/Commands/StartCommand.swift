import ArgumentParser
import BaaS
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Kernel
import Logging
import Replication
import ServiceLifecycle
import Synchronization

struct StartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Run a node in the foreground (primary or replica, as its authority marker says). Stops cleanly on SIGINT or SIGTERM.",
        discussion: "Logs one JSON object per line on standard error. Refuses to start when its port is in use (AERO_PORT_IN_USE) or another process holds its data directory.\n\nExamples:\n  aerodb start --dir ./node1\n  aerodb start --dir ./node1 --http 0.0.0.0:54321\n  aerodb start --dir ./node1 2>node1.log &")

    @Option(help: "The node directory (from `aerodb init` or `aerodb cluster init`).") var dir: String
    @Option(help: "Override the HTTP address HOST:PORT.") var http: String?

    /// How often the node checks that its WAL is healthy (F1: a flush error stops the node).
    static let walWatchIntervalMillis = 50

    func run() async throws {
        try await Self.run(directory: dir, httpOverride: http, lock: nil)
    }

    /// Runs the node. `lock` is the data directory's lock when the caller (`aerodb rejoin`)
    /// already holds it; otherwise it is taken here, before anything in the directory is read.
    static func run(directory dir: String, httpOverride http: String?, lock held: DataDirectoryLock?) async throws {
        NodeLogging.bootstrap()
        NodeMetrics.shared.bootstrapSwiftMetrics()  // before the database opens: the kernel's series bind to it
        let logger = Logger(label: "aerodb")
        let config = try NodeConfig.load(directory: dir)
        let secrets = try NodeSecrets.load(directory: dir)
        let address = try HostPort.parse(http ?? config.http)
        try CLIErrors.requireNodePortsFree(config, http: address)  // "port N is in use", before anything is opened
        var options = config.kernelOptions(directory: dir)
        // DIR1, one process per data directory: held until this process exits (the OS releases it).
        let lock: DataDirectoryLock
        do {
            lock = try held ?? DataDirectoryLock.acquire(dataDirectory: options.dataDirectory)
        } catch {
            logger.critical("the node did not start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        defer { lock.release() }
        warnIfSegmentsAreSmall(options.walSegmentBytes, logger)
        let database: Database
        let marker: AuthorityMarker
        let authority = AuthorityStore(dataDirectory: options.dataDirectory)
        do {
            guard let read = try authority.read() else {
                throw AeroError(.configInvalid, "no authority marker in \(options.dataDirectory); create the node with `aerodb init`")
            }
            marker = read
            options.role = marker.isPrimary(config.nodeID) ? .primary : .replica
            logger.info("opening the database: newest checkpoint, then WAL replay", metadata: ["data_dir": "\(options.dataDirectory)"])
            database = try await Database.open(options)
            // The primary opens its epoch in the log (SPEC §4: every epoch starts with an epoch record).
            if marker.isPrimary(config.nodeID) { try await database.advanceEpoch(to: marker.epoch) }
        } catch {
            logger.critical("the database did not open", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        logOpen(database, logger)
        let clock = SystemClock()
        let replication: ReplicationNode
        do {
            var cluster = try config.clusterConfig(clusterID: marker.clusterID, secret: secrets.jwtSecret)
            cluster.tls = try config.startClusterTLS(directory: dir, logger: logger)  // TLS1: mutual TLS, HTTPS between members
            replication = ReplicationNode(config: cluster, database: database, authority: authority, marker: marker, logger: logger)
            // replication.commit_mode (cluster setting, CM1): read per commit by the primary's gate.
            replication.commitModes.setReader {
                let snapshot = database.snapshot()
                return (snapshot.lsn, ClusterSettings.commitMode(in: snapshot).flatMap(CommitMode.init(rawValue:)))
            }
            if cluster.peers.isEmpty {
                await replication.startAlone()
            } else {
                try await replication.start()
            }
        } catch {
            logger.critical("replication did not start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        let keys = KeyChecker(secret: secrets.jwtSecret, clock: clock, database: database)
        let view = NodeClusterView(replication: replication, startedMicros: clock.nowMicros())
        let router: Router<AeroRequestContext>
        let knownRoutes = KnownRoutes()  // every route, once all are registered: 405 vs 404 (RouteErrors)
        // Cluster-wide settings (docs/OPERATIONS.md "Cluster settings"): aerodb.json's auth with the replicated values over it.
        var fileAuth = config.auth
        if fileAuth.externalURL == nil { fileAuth.externalURL = "\(config.tls == nil ? "http" : "https")://\(address.host):\(address.port)" }
        let clusterSettings = ClusterSettings(database: database, fileAuth: config.authJSON, fileSettings: fileAuth, logger: logger,
                                              fileNode: config.nodeFileSettings(directory: dir), secret: secrets.jwtSecret)
        // query.* (cluster settings) pushed into the kernel on every applied LSN.
        let settingsApplier = clusterSettings.startApplying()
        do {
            var auth = config.auth
            if auth.externalURL == nil { auth.externalURL = "\(config.tls == nil ? "http" : "https")://\(address.host):\(address.port)" }
            router = try AdminAPI.router(database: database, keys: keys, cluster: view, auth: auth, logger: logger, routes: knownRoutes,
                                         clusterSettings: clusterSettings)
        } catch {
            logger.critical("the HTTP front ends did not start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        ClusterRoutes.add(to: router, replication: replication, keys: keys, logger: logger)
        let storageCollector: Task<Void, Never>
        let s3MultipartExpiry: Task<Void, Never>
        do {
            // Storage (docs/STORAGE.md): blobs under the data directory, pushed to the other members.
            let cluster = replication.config
            let peers = StoragePeers(others: { cluster.peers.map(\.http) }, primary: { view.primaryHTTP() },
                                     copiesRequired: { cluster.acksNeeded(replication.commitModes.current) })
            let storage = try StorageService(database: database, secret: secrets.jwtSecret, clock: clock, peers: peers, logger: logger)
            StorageAPI.register(on: router, service: storage, keys: keys)
            S3API.register(on: router, service: storage, keys: keys, config: S3Config(region: config.s3Region, anonKey: secrets.anonKey))  // /storage/v1/s3
            storageCollector = storage.startCollector()
            s3MultipartExpiry = S3MultipartExpiry.start(storage, isPrimary: { replication.currentRole.isPrimary }, logger: logger)  // primary only
        } catch {
            logger.critical("the storage front end did not start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        // Functions (docs/FUNCTIONS.md): /functions/v1, /rest/v1/rpc, /admin/v1/functions.
        let functions = FunctionService(database: database, keys: keys, logger: logger)
        FunctionsAPI.register(on: router, service: functions, keys: keys)
        // Cron schedules of functions fire on the primary only (docs/FUNCTIONS.md "Cron").
        let cron = FunctionCron.start(service: functions, isPrimary: { replication.currentRole.isPrimary })
        // Database triggers of functions fire on the primary only (docs/FUNCTIONS.md "Database triggers").
        let triggers = FunctionTriggers.start(service: functions, isPrimary: { replication.currentRole.isPrimary })
        // Realtime (docs/REALTIME.md): /realtime/v1/websocket and the REST broadcast endpoint.
        let realtime = RealtimeService(database: database, keys: keys, logger: logger,
                                       peers: RealtimePeers(nodeID: config.nodeID, others: replication.config.peers.map(\.http)))
        realtime.register(on: router)
        let realtimeRelay = realtime.start()  // broadcast/presence between members, policy watch
        OpsRoutes.register(on: router, database: database, keys: keys, cluster: view,
                           realtimeConnections: { realtime.connectionCount })  // GET /metrics
        BackupRoutes.register(on: router, database: database, keys: keys, nodeID: config.nodeID)  // aerodb backup
        // Continuous WAL archiving on the primary (cluster setting archive.directory; docs/OPERATIONS.md).
        let archiver = WALArchiver(database: database, clusterID: marker.clusterID, directory: { try WALArchiver.directory(from: clusterSettings) },
                                   isPrimary: { replication.currentRole.isPrimary }, logger: logger)
        archiver.start()
        ArchiveRoutes.register(on: router, archiver: archiver, keys: keys)  // /admin/v1/archive
        // Scheduled backups with retention on the primary (cluster setting backup.schedule).
        let backupScheduler = BackupScheduler(database: database, nodeID: config.nodeID, settings: clusterSettings,
                                              isPrimary: { replication.currentRole.isPrimary }, archiver: archiver, logger: logger)
        backupScheduler.start()
        backupScheduler.register(on: router, keys: keys)  // GET /admin/v1/backup/schedule
        SlowLog.shared.setThreshold(millis: config.slowQueryMillis)
        SlowLog.register(on: router, keys: keys)  // GET /admin/v1/logs/slow
        RequestRing.register(on: router, keys: keys)  // GET /admin/v1/requests: the recent request log
        NodeIndex.add(to: router, nodeID: config.nodeID, replication: replication)
        DashboardRoutes.register(on: router)  // GET /dashboard: the web console (docs/DASHBOARD.md)
        ClusterSettingsAPI.register(on: router, settings: clusterSettings, keys: keys)
        knownRoutes.load(router)
        // HTTP/1 plus the realtime WebSocket upgrade, served by NIO channel handlers with no task
        // per connection (RealtimeHTTPChannel). No server pings: Phoenix clients send heartbeats
        // and realtime closes a connection silent for RealtimeLimits.idleTimeoutSeconds.
        // Hummingbird's responder is not used: the node's request loop (HTTPBridge.swift) calls the
        // router itself, every route added by now.
        let responder = Self.routerResponder(router, logger: logger)
        let plainServer = HTTPServerBuilder { _ in
            RealtimeHTTPChannel(responder: responder,
                                configuration: .init(additionalChannelHandlers: [ExpectContinueHandler()]),  // 100 Continue at once (S3 clients wait for it)
                                realtime: realtime)
        }
        let server: HTTPServerBuilder
        do {
            server = try Self.httpServer(plainServer, config: config, directory: dir, logger: logger)
        } catch {
            logger.critical("the HTTP server did not start", metadata: ["error": "\(error)"])
            throw ExitCode(2)
        }
        let app = Application(router: router,
                              server: server,
                              configuration: .init(address: .hostname(address.host, port: address.port)),
                              logger: logger)
        let watchdog = Task.detached { await Self.watchWAL(database, logger) }
        // Auth retention (docs/AUTH.md): runs while this node is the primary.
        let retention = AuthRetention.start(database: database, settings: { clusterSettings.auth() },  // auth.retention: cluster setting
                                            isPrimary: { replication.currentRole.isPrimary }, logger: logger)
        let role = replication.currentRole
        logger.info("node started", metadata: ["node_id": "\(config.nodeID)", "http": "\(address.host):\(address.port)",
                                               "replication": "\(replication.config.me.replication)",
                                               "role": "\(role.isPrimary ? "primary" : "replica")",
                                               "epoch": "\(role.epoch)", "cluster_id": "\(marker.clusterID)",
                                               "commit_mode": "\(replication.commitModes.current.rawValue)",
                                               "wal_engine": "\(database.openReport.wal.engine)"])
        try await Self.serve(app, logger: logger) { throw CLIErrors.bindFailure($0, address, "HTTP") }
        watchdog.cancel()
        storageCollector.cancel()
        s3MultipartExpiry.cancel()
        retention.cancel()
        settingsApplier.cancel()
        cron.cancel()
        archiver.stop()
        backupScheduler.stop()
        triggers.cancel()
        realtimeRelay.cancel()
        await replication.stop()
        await database.close()
        logger.info("node stopped", metadata: ["lsn": "\(database.snapshot().lsn)"])
    }

    /// Runs the HTTP application until SIGTERM or SIGINT and its drain (`HTTPDrain.secondsMax`).
    /// `failed` gets an error the server ended with before any stop was asked (it could not bind).
    static func serve(_ app: some Service, logger: Logger, failed: (any Error) throws -> Void) async throws {
        let stop = StopRequest()
        let http = ClosureService {
            defer { if Task.isCancelled { stop.cut() } }  // the drain limit passed: ServiceGroup cancelled the server
            try await withGracefulShutdownHandler {
                try await app.run()
            } onGracefulShutdown: {
                stop.ask()
                logger.info("stopping: no new connections, idle ones closed, requests in progress finish",
                            metadata: ["drain_seconds_max": "\(HTTPDrain.secondsMax)"])
            }
        }
        var configuration = ServiceGroupConfiguration(services: [http], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(HTTPDrain.secondsMax)  // then the server's tasks are cancelled
        var ended: (any Error)?  // how the server's run ended, after a stop was asked
        do {
            try await ServiceGroup(configuration: configuration).run()
        } catch {
            guard stop.state.asked else { return try failed(error) }
            ended = error
        }
        if stop.state.cut {
            logger.warning("connections still open at the drain limit were closed",
                           metadata: ["drain_seconds_max": "\(HTTPDrain.secondsMax)", "ended": "\(ended.map { "\($0)" } ?? "normally")"])
        } else if let ended {
            logger.warning("the HTTP server ended its drain with an error", metadata: ["error": "\(ended)"])
        }
    }

    /// Whether a stop was asked (SIGTERM, SIGINT) and whether its drain reached the limit.
    private final class StopRequest: Sendable {
        private let flags = Mutex<(asked: Bool, cut: Bool)>((false, false))
        func ask() { flags.withLock { $0.asked = true } }
        func cut() { flags.withLock { $0.cut = true } }
        var state: (asked: Bool, cut: Bool) { flags.withLock { $0 } }
    }

    /// The node's router as HTTPBridge calls it: each request with a context of its connection;
    /// an error that reached here (FrontMiddleware answers every error in its API's shape) is a
    /// 500, as Hummingbird answered it.
    static func routerResponder(_ router: Router<AeroRequestContext>, logger: Logger) -> HTTPBridgeResponder {
        let responder = router.buildResponder()
        return { request, channel in
            let context = AeroRequestContext(source: .init(channel: channel, logger: logger))
            do {
                return try await responder.respond(to: request, context: context)
            } catch {
                logger.debug("unanswered error", metadata: ["error": "\(error)"])
                return Response(status: .internalServerError, headers: [.contentLength: "0"])
            }
        }
    }

    /// HTTPS when `tls` is configured (docs/OPERATIONS.md "TLS"), else plain HTTP, said at start.
    /// In a cluster, `tls` needs `ca_file` (the cluster CA: members speak HTTPS to each other
    /// trusting it, TLS1).
    static func httpServer(_ plain: HTTPServerBuilder, config: NodeConfig, directory: String, logger: Logger) throws -> HTTPServerBuilder {
        guard let tls = config.tls else {
            logger.warning("HTTP without TLS: for local development or a private network; set tls.cert_file and tls.key_file in aerodb.json for HTTPS")
            return plain
        }
        guard config.members.count <= 1 || tls.caFile != nil else {
            throw AeroError(.configInvalid, "tls in a cluster needs tls.ca_file, the cluster CA that signed every member's certificate (`aerodb cluster init --tls`, `aerodb cluster cert`): members verify each other with it")
        }
        return try tls.server(plain, directory: directory)
    }

    /// A record must fit one segment: below `walSegmentBytesNodeMin` this node refuses (before
    /// logging) transactions its segments cannot hold, and as a replica it could not log such a
    /// record from a primary with larger segments. Small segments are for tests; say so.
    static func warnIfSegmentsAreSmall(_ bytes: Int, _ logger: Logger) {
        guard bytes < KernelLimits.walSegmentBytesNodeMin else { return }
        logger.warning("wal_segment_bytes is below the size that holds the largest transaction record; give every member the same value, at least the minimum",
                       metadata: ["wal_segment_bytes": "\(bytes)", "minimum": "\(KernelLimits.walSegmentBytesNodeMin)",
                                  "transaction_bytes_max": "\(KernelLimits.transactionBytesMax)"])
    }

    private static func logOpen(_ database: Database, _ logger: Logger) {
        let report = database.openReport
        for skipped in report.skippedCheckpoints {
            logger.error("damaged checkpoint skipped", metadata: ["error": "\(skipped)"])
        }
        if let torn = report.wal.tornTail {
            logger.warning("torn WAL tail truncated (never acknowledged)", metadata: ["detail": "\(torn)"])
        }
        logger.info("database opened", metadata: [
            "checkpoint": "\(report.checkpointFile ?? "none")", "records_replayed": "\(report.recordsReplayed)",
            "lsn": "\(database.snapshot().lsn)", "elapsed_ms": "\(report.elapsedNanos / 1_000_000)"])
    }

    /// F1: once a flush failed nothing may be acknowledged again; exit at once.
    private static func watchWAL(_ database: Database, _ logger: Logger) async {
        while !Task.isCancelled {
            if let failure = database.failure {
                logger.critical("WAL flush failed: stopping the node", metadata: ["error": "\(failure)"])
                Foundation.exit(70)
            }
            try? await Task.sleep(for: .milliseconds(walWatchIntervalMillis))
        }
    }
}
