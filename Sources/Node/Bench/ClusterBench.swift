// `aerodb bench --workload cluster`: replication figures on this machine with real `aerodb`
// processes on loopback (this binary, `aerodb start`) and HTTP clients, as an application sees
// them. Figures only, never assertions.
//   inserts:   durable single-document inserts/s (1 KiB) through the primary's admin API, with
//              8 and 32 concurrent writers, in `async` and in `sync` mode (one replica flushed);
//   lag:       replica visibility lag p50/p99 (primary's sender read -> replica's applied ACK)
//              under paced insert load aiming at `lagTargetCommitsPerSecond`; in the kernel
//              phase also probed as PostgreSQL's side is (`visibilityProbe`);
//   promotion: SIGKILL the primary, then time from sending the promote command to the first
//              accepted write on the promoted node, `promotionRuns` times;
//   kernel:    the same inserts and lag with the primary in this process (kernel commits, no
//              HTTP) and its replica as a process: the replication machinery without the HTTP
//              stack, the figure to set beside pgbench against PostgreSQL streaming replication.

import AsyncHTTPClient
import Foundation
import Kernel
import Logging
import NIOCore
import Replication

struct ClusterBench {
    /// Commit rate the lag workload paces its writers to (the issue asks for ~10k commits/s).
    static let lagTargetCommitsPerSecond = 10_000

    let root: String
    let portBase: Int
    let seconds: Double
    let promotionRuns: Int
    let client: HTTPClient

    init(root: String, portBase: Int, seconds: Double, promotionRuns: Int) {
        self.root = root
        self.portBase = portBase
        self.seconds = seconds
        self.promotionRuns = promotionRuns
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 128)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func run() async throws {
        do {
            try await phases()
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func phases() async throws {
        for mode in [CommitMode.async, .sync] { try await kernelPhase(mode) }
        for mode in [CommitMode.async, .sync] {
            let cluster = try await BenchCluster.start(root: root + "/\(mode.rawValue)", nodes: 2, portBase: portBase, mode: mode, bench: self)
            defer { cluster.stopAll() }
            try await prepare(cluster)
            for writers in [8, 32] {
                let (rate, p50, p99) = try await inserts(cluster, writers: writers, seconds: seconds, pace: nil)
                print(String(format: "cluster inserts %@ %2d writers: %8.0f commits/s  p50 %.2f ms  p99 %.2f ms",
                             mode.rawValue, writers, rate, p50, p99))
            }
            if mode == .async { try await lag(cluster) }
        }
        if promotionRuns > 0 { try await promotions() }
    }

    /// The primary in this process, its replica a child process; writers call the kernel.
    func kernelPhase(_ mode: CommitMode) async throws {
        let dir = root + "/kernel-\(mode.rawValue)"
        let replica = try await BenchCluster.start(root: dir, nodes: 2, portBase: portBase, mode: mode, bench: self, running: [1])
        defer { replica.stopAll() }
        let config = try NodeConfig.load(directory: dir + "/n1")
        let secrets = try NodeSecrets.load(directory: dir + "/n1")
        let options = config.kernelOptions(directory: dir + "/n1")
        let authority = AuthorityStore(dataDirectory: options.dataDirectory)
        let marker = try authority.read()!
        let db = try await Database.open(options)
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let node = ReplicationNode(config: try config.clusterConfig(clusterID: marker.clusterID, secret: secrets.jwtSecret),
                                   database: db, authority: authority, marker: marker, logger: logger)
        try await node.start()
        _ = try await db.createCollection(try JSON.parse(BenchCommand.schema))
        while await !(node.status()["replicas"]?.arrayValue?.first?["connected"] == .bool(true)) {
            try await Task.sleep(for: .milliseconds(20))
        }
        let prefix = UUID().uuidString.prefix(8)
        func run(_ writers: Int, pace: Int?) async throws -> TimedWriters.Result {
            try await TimedWriters.run(writers: writers, seconds: seconds, pace: pace) { w, n in
                _ = try await db.commit(BenchCommand.insert([BenchCommand.document("\(prefix)-\(writers)-\(pace ?? 0)-\(w)-\(n)", n)]))
            }
        }
        if mode == .async {
            async let load = run(32, pace: Self.lagTargetCommitsPerSecond)
            let probe = try await visibilityProbe(db, replica: replica.members[1].http, key: replica.key, prefix: "\(prefix)-probe")
            let paced = try await load
            let lag = await node.status()["replicas"]?.arrayValue?.first?["visibility_lag_ms"]
            print(String(format: "kernel replica visibility lag at %.0f commits/s (async, target %d/s): p50 %@ ms  p99 %@ ms  max %@ ms  (%@ samples)",
                         paced.rate, Self.lagTargetCommitsPerSecond, text(lag?["p50"], decimals: 2), text(lag?["p99"], decimals: 2), text(lag?["max"], decimals: 2), text(lag?["samples"])))
            print(String(format: "kernel replica visibility probe at %.0f commits/s (async, target %d/s; a row committed every %d ms, read on the replica over REST): p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d samples)",
                         paced.rate, Self.lagTargetCommitsPerSecond, Self.probeIntervalMillis, probe.percentile(0.5), probe.percentile(0.99), probe.latencies.last ?? 0, probe.latencies.count))
        }
        for writers in [1, 8, 32] {
            let result = try await run(writers, pace: nil)
            print(String(format: "kernel inserts %@ %2d writers: %8.0f commits/s  p50 %.2f ms  p99 %.2f ms",
                         mode.rawValue, writers, result.rate, result.percentile(0.5), result.percentile(0.99)))
        }
        await node.stop()
        await db.close()
    }

    /// Pause between two probes of `visibilityProbe`, as PostgreSQL's side of the lag row sleeps.
    static let probeIntervalMillis = 10
    /// Longest wait for one probe row to appear on the replica before the bench fails.
    static let probeDeadlineSeconds: Double = 30

    /// Replica visibility lag measured the way `scripts/bench` measures PostgreSQL's: during the
    /// paced load, commit one row on the primary (its commit returned: durable there), then read it
    /// by key on the replica over REST, again at once until it is there; the time from the commit's
    /// return to the read that found it is one sample; then `probeIntervalMillis` of pause. The
    /// per-batch figure of the node's status times every shipped batch from the sender's read to
    /// the replica's ACK instead: it includes the ACK's way back and weighs each batch, not time.
    /// The probe runs on a thread of its own and reads with blocking calls (`ProbeReader`), as
    /// PostgreSQL's probe does from its own process; only its commits go through the kernel's API.
    /// `replica`: the replica's HTTP address, host:port.
    func visibilityProbe(_ db: Database, replica: String, key: String, prefix: String) async throws -> TimedWriters.Result {
        let seconds = max(self.seconds - 0.5, 0.5)
        return try await withCheckedThrowingContinuation { (done: CheckedContinuation<TimedWriters.Result, any Error>) in
            NamedThread.start("aero-lag-probe") {
                done.resume(with: Result(catching: { try Self.probe(db, replica: replica, key: key, prefix: prefix, seconds: seconds) }))
            }
        }
    }

    /// The probe's loop, on its own thread (`visibilityProbe`).
    private static func probe(_ db: Database, replica: String, key: String, prefix: String, seconds: Double) throws -> TimedWriters.Result {
        let reader = try ProbeReader(address: replica, key: key)
        let started = DispatchTime.now().uptimeNanoseconds
        let end = started + UInt64(seconds * 1e9)
        var samples: [Double] = []
        var n = 0
        while DispatchTime.now().uptimeNanoseconds < end {
            let id = "\(prefix)-\(n)"
            let doc = BenchCommand.document(id, n)
            _ = try waitForTask { try await db.commit(BenchCommand.insert([doc])) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let path = "/rest/v1/bench?select=id&id=eq." + id
            while true {
                let (status, body) = try reader.get(path)
                guard status == 200, let found = (try? JSON.parse(body))?.arrayValue else {
                    throw CommandFailure("the lag probe's read on the replica answered \(status): \(String(decoding: body.prefix(300), as: UTF8.self))")
                }
                if !found.isEmpty { break }
                guard Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 < probeDeadlineSeconds else {
                    throw CommandFailure("the lag probe's row \(id) did not appear on the replica within \(probeDeadlineSeconds) s")
                }
            }
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            n += 1
            usleep(UInt32(probeIntervalMillis * 1_000))
        }
        return TimedWriters.Result(latencies: samples.sorted(), elapsedSeconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }

    func prepare(_ cluster: BenchCluster) async throws {
        let status = try await post(cluster.url(0) + "/admin/v1/collections", cluster.key, Array(BenchCommand.schema.utf8))
        guard status == 201 else { throw CommandFailure("creating the bench collection answered \(status)") }
    }

    /// `writers` tasks insert over HTTP for `seconds`, optionally paced to a total rate.
    func inserts(_ cluster: BenchCluster, writers: Int, seconds: Double, pace: Int?) async throws -> (Double, Double, Double) {
        let url = cluster.url(0) + "/admin/v1/transactions"
        let prefix = UUID().uuidString.prefix(8)
        let result = try await TimedWriters.run(writers: writers, seconds: seconds, pace: pace) { w, n in
            let doc = BenchCommand.document("\(prefix)-\(w)-\(n)", n)
            let body = JSON.encode(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string("bench"), "doc": doc])])]))
            let status = try await post(url, cluster.key, body)
            guard status == 200 else { throw CommandFailure("an insert answered \(status)") }
        }
        return (result.rate, result.percentile(0.50), result.percentile(0.99))
    }

    func lag(_ cluster: BenchCluster) async throws {
        let (rate, _, _) = try await inserts(cluster, writers: 32, seconds: seconds, pace: Self.lagTargetCommitsPerSecond)
        let (_, status) = try await get(cluster.url(0) + "/admin/v1/status", cluster.key)
        let replica = status["replication"]?["replicas"]?.arrayValue?.first
        let lag = replica?["visibility_lag_ms"]
        print(String(format: "replica visibility lag at %.0f commits/s (async, target %d/s): p50 %@ ms  p99 %@ ms  max %@ ms  (%@ samples)",
                     rate, Self.lagTargetCommitsPerSecond, text(lag?["p50"], decimals: 2), text(lag?["p99"], decimals: 2), text(lag?["max"], decimals: 2), text(lag?["samples"])))
    }

    /// Kill the primary, promote the next node, time until a write is accepted there; restart
    /// the killed node (it follows the new primary) and repeat with the next one.
    func promotions() async throws {
        let cluster = try await BenchCluster.start(root: root + "/promote", nodes: 3, portBase: portBase, mode: .sync, bench: self)
        defer { cluster.stopAll() }
        try await prepare(cluster)
        var times: [Double] = []
        var reported: [Double] = []
        var primary = 0
        var rejoins = 0
        var redirected = 0
        var runs: [String] = []  // each run in order, for the outlier the p50 and max do not explain
        for run in 0..<promotionRuns {
            var target = (primary + 1) % 3
            // Kill a settled primary: every member has its durable LSN. The promotion is what is
            // timed, not the loss of a record written just before the kill (such a record, e.g. a
            // system collection the node makes at start, is an unreplicated tail: the restarted
            // node halts as diverged and is rejoined below, A4).
            try await cluster.waitSettled(primary: primary)
            cluster.kill(primary)
            let t0 = DispatchTime.now().uptimeNanoseconds
            var (status, report) = try await postJSON(cluster.url(target) + "/admin/v1/cluster/promote", cluster.key, .object([:]))
            if status != 200, let better = report["better_candidate"]?.stringValue,
               let named = cluster.members.indices.first(where: { cluster.members[$0].nodeID == better }), named != primary {
                // What an operator does next: the refusal names the most up-to-date replica (a
                // record the primary wrote after the settle reached only that one). Timed from
                // the kill, so the refused attempt counts in this run's time.
                redirected += 1
                target = named
                (status, report) = try await postJSON(cluster.url(target) + "/admin/v1/cluster/promote", cluster.key, .object([:]))
            }
            guard status == 200 else { throw CommandFailure("promotion \(run) refused: \(JSON.encodeString(report))") }
            let doc = BenchCommand.document("promote-\(run)", run)
            let body = JSON.encode(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string("bench"), "doc": doc])])]))
            var attempts = 0
            while try await post(cluster.url(target) + "/admin/v1/transactions", cluster.key, body) != 200 {
                attempts += 1
                guard attempts < 10_000 else { throw CommandFailure("promotion \(run): the new primary accepted no write") }
            }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            if case .float(let ms)? = report["elapsed_ms"] { reported.append(ms) }
            runs.append(String(format: "%.1f/%@/%d%@", times.last!, text(report["elapsed_ms"], decimals: 1), attempts,
                               target == (primary + 1) % 3 ? "" : "r"))
            try await cluster.start(primary)  // it learns the new epoch and follows
            if try await cluster.followOrRejoin(primary, primary: target) { rejoins += 1 }
            primary = target
        }
        times.sort()
        reported.sort()
        print(String(format: "promotion to first accepted write (%d runs, sync, SIGKILLed primary): p50 %.1f ms  max %.1f ms  (promote command alone: p50 %.1f ms, max %.1f ms)",
                     times.count, times[times.count / 2], times.last!, reported[reported.count / 2], reported.last!))
        print("promotion runs in order (ms to the first accepted write / ms of the promote command / writes refused before it; r: redirected): "
              + runs.joined(separator: " "))
        if rejoins > 0 { print("killed primaries rejoined (an unreplicated tail, A4): \(rejoins) of \(promotionRuns)") }
        if redirected > 0 { print("promotions redirected to the replica a refusal named as more up to date: \(redirected) of \(promotionRuns)") }
    }

    // MARK: HTTP

    func post(_ url: String, _ key: String, _ body: [UInt8]) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "apikey", value: key)
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(30))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    func postJSON(_ url: String, _ key: String, _ body: JSONValue) async throws -> (Int, JSONValue) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "apikey", value: key)
        request.body = .bytes(ByteBuffer(bytes: JSON.encode(body)))
        let response = try await client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), (try? JSON.parse(Array(bytes.readableBytesView))) ?? .null)
    }

    func get(_ url: String, _ key: String, timeoutMillis: Int64 = 30_000) async throws -> (Int, JSONValue) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "apikey", value: key)
        let response = try await client.execute(request, timeout: .milliseconds(timeoutMillis))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), (try? JSON.parse(Array(bytes.readableBytesView))) ?? .null)
    }
}

/// A restarted member halted as diverged (A4): it will not follow until rejoined.
struct MemberDiverged: Error, CustomStringConvertible {
    let description: String
}

/// Member processes of a bench cluster, started from this very binary.
final class BenchCluster: @unchecked Sendable {
    let root: String
    let members: [ClusterMember]
    let key: String
    private var processes: [Process?]

    private let bench: ClusterBench

    private init(root: String, members: [ClusterMember], key: String, bench: ClusterBench) {
        self.bench = bench
        self.root = root
        self.members = members
        self.key = key
        processes = Array(repeating: nil, count: members.count)
    }

    /// Writes the member directories and starts the members listed in `running` (default all).
    static func start(root: String, nodes: Int, portBase: Int, mode: CommitMode, bench: ClusterBench,
                      running: [Int]? = nil) async throws -> BenchCluster {
        let (_, members, secrets) = try ClusterInitCommand.write(dir: root, nodes: nodes, host: "127.0.0.1", httpPort: portBase,
                                                                 replPort: portBase + 100, commitMode: mode)
        let cluster = BenchCluster(root: root, members: members, key: secrets.serviceRoleKey, bench: bench)
        for i in running ?? Array(0..<nodes) { try await cluster.start(i) }
        return cluster
    }

    func url(_ i: Int) -> String { "http://" + members[i].http }

    func start(_ i: Int) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = ["start", "--dir", root + "/" + members[i].nodeID]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        if !FileManager.default.fileExists(atPath: logPath(i)), !FileManager.default.createFile(atPath: logPath(i), contents: nil) {
            throw AeroError(.configInvalid, "cannot create the member log \(logPath(i))")
        }
        guard let log = FileHandle(forWritingAtPath: logPath(i)) else {
            throw AeroError(.configInvalid, "cannot open the member log \(logPath(i))")
        }
        _ = try log.seekToEnd()  // a restarted member appends
        process.standardError = log
        try process.run()
        processes[i] = process
        for _ in 0..<300 {
            if let (status, _) = try? await bench.get(url(i) + "/ready", key, timeoutMillis: 500), status == 200 { return }
            guard process.isRunning else {
                throw CommandFailure("bench node \(members[i].nodeID) exited with \(process.terminationStatus) at start (port \(members[i].http) in use?)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CommandFailure("bench node \(members[i].nodeID) did not become ready")
    }

    /// Waits until node i reports that it streams from `primary`: a condition with a deadline, not
    /// a count of polls (a loaded machine stretches a restart and its peer probe; a count of polls
    /// of unknown length each failed once on a slower machine). A node that reports itself
    /// diverged will never follow: that is reported at once, with the state, not waited out.
    func waitFollowing(_ i: Int, primary: Int) async throws {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.followWaitSeconds) * 1_000_000_000
        var last = "no answer to /admin/v1/status"
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if let (_, status) = try? await bench.get(url(i) + "/admin/v1/status", key, timeoutMillis: 1_000) {
                let state = status["replication"]?["state"]?.stringValue ?? "no replication state"
                if state == "streaming from \(members[primary].nodeID)" { return }
                last = state
                if state.hasPrefix("diverged") {
                    throw MemberDiverged(description: "\(members[i].nodeID) halted as diverged: \(state) (node log: \(logPath(i)))")
                }
            }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw CommandFailure("\(members[i].nodeID) did not follow \(members[primary].nodeID) within \(Self.followWaitSeconds) s: "
                             + "its replication state: \(last) (node log: \(logPath(i)))")
    }

    /// Waits until node i follows `primary`; a node that halted as diverged (it wrote a record the
    /// new primary never received before it was killed) is stopped, rejoined with `aerodb rejoin
    /// --no-start` (which discards that tail) and started again, once. True when it was rejoined.
    func followOrRejoin(_ i: Int, primary: Int) async throws -> Bool {
        do {
            try await waitFollowing(i, primary: primary)
            return false
        } catch is MemberDiverged {
            kill(i)
            let rejoin = Process()
            rejoin.executableURL = URL(fileURLWithPath: "/proc/self/exe")
            rejoin.arguments = ["rejoin", "--dir", root + "/" + members[i].nodeID, "--no-start"]
            rejoin.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            guard let log = FileHandle(forWritingAtPath: logPath(i)) else {
                throw AeroError(.configInvalid, "cannot open the member log \(logPath(i))")
            }
            _ = try log.seekToEnd()  // appended after the node's own lines, as a restart does
            rejoin.standardError = log
            try rejoin.run()
            rejoin.waitUntilExit()
            guard rejoin.terminationStatus == 0 else {
                throw CommandFailure("\(members[i].nodeID) diverged and `aerodb rejoin` failed with \(rejoin.terminationStatus) (node log: \(logPath(i)))")
            }
            try await start(i)
            try await waitFollowing(i, primary: primary)
            return true
        }
    }

    /// Waits until every running member's durable LSN has reached the primary's (deadline
    /// `followWaitSeconds`).
    func waitSettled(primary: Int) async throws {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.followWaitSeconds) * 1_000_000_000
        var last = "no answer to /admin/v1/status"
        func durable(_ i: Int) async -> Int64? {
            (try? await bench.get(url(i) + "/admin/v1/status", key, timeoutMillis: 1_000))?.1["lsn"]?["durable"]?.intValue
        }
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if let target = await durable(primary) {
                var behind: [String] = []
                for i in members.indices where i != primary && processes[i]?.isRunning == true {
                    let lsn = await durable(i)
                    if (lsn ?? -1) < target { behind.append("\(members[i].nodeID) at \(lsn.map(String.init) ?? "?")") }
                }
                if behind.isEmpty { return }
                last = "primary at \(target), " + behind.joined(separator: ", ")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw CommandFailure("the members did not settle on \(members[primary].nodeID)'s durable LSN within \(Self.followWaitSeconds) s: \(last)")
    }

    /// How long a restarted member may take to stream from the primary before the bench fails.
    static let followWaitSeconds = 60

    /// Each member's standard error, kept for a failed run (the bench's root is removed afterwards
    /// unless --dir is given).
    func logPath(_ i: Int) -> String { root + "/" + members[i].nodeID + ".log" }

    func kill(_ i: Int) {
        guard let p = processes[i], p.isRunning else { return }
        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func stopAll() {
        for p in processes.compactMap({ $0 }) where p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
    }
}
