// A real cluster of `aerodb` processes on loopback, for the cluster tests and for
// `aerodb-crashtest cluster`: `aerodb cluster init`, then each member's ports are moved to free
// ones (and, with proxies, every replication link X -> Y goes through its own TCPProxy, so one
// node can be cut off from the others). Every process and proxy started here is stopped when the
// cluster is released.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kernel
import Replication
import Synchronization

public final class LiveCluster: @unchecked Sendable {
    public let binary: String
    public let root: String
    public let size: Int
    public let httpPorts: [Int]
    public let replicationPorts: [Int]
    public let serviceKey: String
    /// proxies[x][y]: the link from node x to node y (x != y), when built with proxies.
    public private(set) var proxies: [[TCPProxy?]] = []
    private var processes: [Process?]
    /// Told when a node had not exited `stopDeadlineSeconds` after SIGTERM (it is then killed):
    /// a test records it as an issue, the crash harness as a violation (SD1).
    public let onStopPastDeadline: @Sendable (String) -> Void

    /// The longest `stop` waits for a node to exit after SIGTERM (a clean stop takes under 2 s,
    /// the node's own drain limit is 8 s) before it SIGKILLs it and reports it.
    public static let stopDeadlineSeconds = 30

    /// `binary` is the `aerodb` executable to run.
    public init(binary: String, size: Int = 3, commitMode: String = "sync", proxies useProxies: Bool = false,
                settings: [String: JSONValue] = [:],
                onStopPastDeadline: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(("LiveCluster: " + $0 + "\n").utf8)) }) throws {
        self.onStopPastDeadline = onStopPastDeadline
        self.binary = binary
        self.size = size
        root = NSTemporaryDirectory() + "aerodb-cluster-\(UUID().uuidString)"
        httpPorts = (0..<size).map { _ in LiveCluster.freePort() }
        replicationPorts = (0..<size).map { _ in LiveCluster.freePort() }
        processes = Array(repeating: nil, count: size)
        let (status, output) = try LiveCluster.run(binary, ["cluster", "init", "--dir", root, "--nodes", String(size),
                                                            "--commit-mode", commitMode])
        guard status == 0 else { throw AeroError(.internalError, "cluster init failed (\(status)): \(output)") }
        guard let key = try JSON.parse(try LiveCluster.run(binary, ["keys", "--dir", root + "/n1", "--json"]).output)["service_role"]?.stringValue else {
            throw AeroError(.internalError, "no service key")
        }
        serviceKey = key
        if useProxies {
            proxies = try (0..<size).map { x in
                try (0..<size).map { y in x == y ? nil : try TCPProxy(targetPort: replicationPorts[y]) }
            }
        }
        for i in 0..<size { try rewriteConfig(i, settings: settings) }
    }

    deinit {
        for i in 0..<size { kill(i) }
        for row in proxies { for proxy in row { proxy?.stop() } }
        try? FileManager.default.removeItem(atPath: root)
    }

    public func directory(_ i: Int) -> String { root + "/n\(i + 1)" }
    public func url(_ i: Int) -> String { "http://127.0.0.1:\(httpPorts[i])" }

    /// Node i's view of the members: its own real ports, its peers through proxies if any.
    private func rewriteConfig(_ i: Int, settings: [String: JSONValue]) throws {
        let path = directory(i) + "/aerodb.json"
        guard case .object(var config) = try JSON.parse(Array(FileManager.default.contents(atPath: path)!)) else {
            throw AeroError(.internalError, "bad config")
        }
        config["http"] = .string("127.0.0.1:\(httpPorts[i])")
        config["replication"] = .string("127.0.0.1:\(replicationPorts[i])")
        config["cluster"] = .array((0..<size).map { j in
            let port = proxies.isEmpty || i == j ? replicationPorts[j] : proxies[i][j]!.port
            return .object(["node_id": .string("n\(j + 1)"), "http": .string("127.0.0.1:\(httpPorts[j])"),
                            "replication": .string("127.0.0.1:\(port)")])
        })
        for (key, value) in settings { config[key] = value }
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: path))
    }

    public func start(_ i: Int) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["start", "--dir", directory(i)]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = directory(i) + "/node.log"
        guard FileManager.default.createFile(atPath: log, contents: nil) else { throw AeroError(.ioError, "cannot create \(log)") }
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        processes[i] = process
        for _ in 0..<200 {
            if let answer = try? await HTTPAnswer.fetch("GET", url(i) + "/ready", key: nil, timeout: 1), answer.status == 200 { return }
            guard process.isRunning else { throw AeroError(.internalError, "n\(i + 1) exited with \(process.terminationStatus): \(self.log(i))") }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw AeroError(.internalError, "n\(i + 1) did not become ready")
    }

    public func startAll() async throws {
        for i in 0..<size { try await start(i) }
    }

    public func log(_ i: Int) -> String {
        (try? String(contentsOfFile: directory(i) + "/node.log", encoding: .utf8)) ?? ""
    }

    /// n(i+1)'s log once it contains `text`, or as it is after `seconds`: a node writes its info
    /// lines from its log writer's thread shortly after logging them (LogLine.Writer), so a line
    /// about something that just happened may not be in the file yet.
    public func log(_ i: Int, eventuallyContaining text: String, seconds: Int = 20) async -> String {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while true {
            let current = log(i)
            if current.contains(text) || ContinuousClock.now > deadline { return current }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    public func kill(_ i: Int) {
        guard let process = processes[i], process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM and wait: a clean stop. A node still running `stopDeadlineSeconds` later is
    /// SIGKILLed and reported to `onStopPastDeadline` (a stuck stop fails a test, not hangs it).
    public func stop(_ i: Int) {
        guard let process = processes[i], process.isRunning else { return }
        process.terminate()
        let deadline = ContinuousClock.now + .seconds(Self.stopDeadlineSeconds)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            onStopPastDeadline("n\(i + 1) had not exited \(Self.stopDeadlineSeconds) s after SIGTERM: killed; its log ends: \(log(i).suffix(1_500))")
        }
        process.waitUntilExit()
    }

    /// Cuts node i off from every peer (both directions), or heals it.
    public func isolate(_ i: Int, _ cut: Bool) {
        for x in 0..<size where x != i {
            for proxy in [proxies[x][i]!, proxies[i][x]!] { cut ? proxy.cut() : proxy.heal() }
        }
    }

    public func request(_ i: Int, _ method: String, _ path: String, _ body: JSONValue? = nil,
                 headers: [String: String] = [:], timeout: TimeInterval = 10) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch(method, url(i) + path, body, key: serviceKey, headers: headers, timeout: timeout)
    }

    public func admin(_ i: Int, _ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> HTTPAnswer {
        try await request(i, method, "/admin/v1/" + path, body)
    }

    /// Runs the aerodb CLI with the service key; returns exit status and output.
    public func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try LiveCluster.run(binary, arguments + ["--key", serviceKey])
    }

    /// `run` on a thread of its own, for async callers: the command's whole run (a crash harness
    /// run takes tens of seconds) would otherwise block a thread of the cooperative pool (two
    /// here), and every other task of the test process, with its timeouts, would wait behind it.
    public static func runOffPool(_ binary: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await onOwnThread { try run(binary, arguments) }
    }

    /// Runs `work` on a new thread (8 MiB of stack) and resumes with its result: for blocking or
    /// CPU-bound work in tests, which must not hold a thread of the cooperative pool.
    public static func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try work() }) }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Runs a command to completion; returns exit status and standard output.
    public static func run(_ binary: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// A port the kernel just handed out for 127.0.0.1 (bind to port 0, read it back, close).
    /// A port on 127.0.0.1 nothing listens on, from `freePortRange`: below the kernel's ephemeral
    /// range (32768-60999), because a port the kernel picked for a bind to 0 is ephemeral and an
    /// outgoing connection of another test could take it before the node binds it (a full run
    /// once failed with AERO_PORT_IN_USE that way). Ports are handed out in turn, so one process
    /// never hands out the same port twice within the range's length; the start depends on the pid.
    public static func freePort() -> Int {
        for _ in 0..<freePortRange.count {
            let candidate = nextFreePort.withLock { next -> Int in
                if next == 0 { next = freePortRange.lowerBound + Int(getpid()) % freePortRange.count }
                let port = next
                next = port + 1 < freePortRange.upperBound ? port + 1 : freePortRange.lowerBound
                return port
            }
            if let port = bound(candidate) { return port }
        }
        return bound(0) ?? 0  // the whole range taken: an ephemeral port, as before
    }

    static let freePortRange = 20_000..<32_000
    private static let nextFreePort = Mutex(0)

    /// The port a bind of `port` on 127.0.0.1 got (the kernel's pick for 0), or nil when it failed.
    private static func bound(_ port: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return ok ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// Documents with these ids on node i, as id -> content (through the admin query API).
    public func documents(_ i: Int, _ ids: [String], collection: String = "items") async throws -> [String: [String: JSONValue]] {
        var found: [String: [String: JSONValue]] = [:]
        for start in stride(from: 0, to: ids.count, by: 500) {
            let chunk = ids[start..<min(start + 500, ids.count)]
            let query: JSONValue = .object(["collection": .string(collection), "limit": .int(1000),
                                            "filter": .object(["id": .object(["$in": .array(chunk.map(JSONValue.string))])])])
            let answer = try await admin(i, "POST", "query", query)
            guard answer.status == 200 else {
                throw AeroError(.internalError, "query on n\(i + 1) answered \(answer.status): \(answer.body.map(JSON.encodeString) ?? "")")
            }
            for row in answer.body?["rows"]?.arrayValue ?? [] {
                if case .object(let doc) = row, case .string(let id)? = doc["id"] { found[id] = doc }
            }
        }
        return found
    }

    /// Acknowledged writes of `log` missing on node i, or there with another content.
    public func missing(_ log: WriteLog, on i: Int) async throws -> [WriteLog.Attempt] {
        let acked = await log.acknowledged
        let found = try await documents(i, acked.map(\.id))
        return acked.filter { found[$0.id]?["qty"] != .int(Int64($0.qty)) }
    }

    /// The replica of `candidates` an operator promotes: the most up-to-date in the node's own
    /// order (`PromotionDecision`: the epoch of the last durable record first, then its LSN; a
    /// node that cannot tell the epoch is compared by LSN alone), the lowest index on ties.
    /// A pick by LSN alone can name a deposed primary's longer tail of an older epoch, which the
    /// node refuses (`better_candidate`).
    public func mostUpToDate(_ candidates: [Int]) async throws -> Int {
        var keys: [PromotionDecision.Key] = []
        for i in candidates { keys.append(Self.durableRecord(try await status(i))) }
        return candidates[Self.best(keys)]
    }

    /// The promotion key of a node from its `/admin/v1/status` (`replication.durable_record`,
    /// else `lsn.durable` of unknown epoch).
    static func durableRecord(_ status: JSONValue) -> PromotionDecision.Key {
        let record = status["replication"]?["durable_record"]
        let lsn = record?["lsn"]?.intValue ?? status["lsn"]?["durable"]?.intValue ?? 0
        return (epoch: UInt64(max(0, record?["epoch"]?.intValue ?? 0)), lsn: UInt64(max(0, lsn)))
    }

    /// The index of the first of `keys` that no other is ahead of, in `PromotionDecision`'s
    /// order (the node's own check).
    package static func best(_ keys: [PromotionDecision.Key]) -> Int {
        var best = 0
        for i in keys.indices.dropFirst() where PromotionDecision.isAhead(keys[i], of: keys[best]) { best = i }
        return best
    }

    /// This node's own replication status (`/admin/v1/status`).
    public func status(_ i: Int) async throws -> JSONValue {
        let answer = try await admin(i, "GET", "status")
        guard answer.status == 200, let body = answer.body else { throw AeroError(.internalError, "status of n\(i + 1): \(answer.status)") }
        return body
    }

    /// Waits until every running node listed has the same durable (LSN, checksum) as node
    /// `reference`, i.e. the same log (hash chain); returns that position.
    public func waitConverged(_ nodes: [Int], to reference: Int, seconds: Double = 20) async throws -> (UInt64, String) {
        let deadline = Date().addingTimeInterval(seconds)
        var last = ""
        while Date() < deadline {
            let answer = try await admin(reference, "GET", "cluster/status")
            let members = answer.body?["members"]?.arrayValue ?? []
            func position(_ i: Int) -> (UInt64, String)? {
                let m = members.first { $0["node_id"]?.stringValue == "n\(i + 1)" }
                guard let m, case .int(let lsn)? = m["durable_lsn"], case .string(let sum)? = m["durable_checksum"],
                      case .int(let applied)? = m["applied_lsn"], applied == lsn else { return nil }
                return (UInt64(lsn), sum)
            }
            if let target = position(reference), nodes.allSatisfy({ position($0).map { $0 == target } ?? false }) { return target }
            last = JSON.encodeString(answer.body ?? .null)
            try await Task.sleep(for: .milliseconds(100))
        }
        throw AeroError(.internalError, "nodes \(nodes) did not converge to n\(reference + 1): \(last)")
    }
}

/// Concurrent writers inserting unique documents and recording exactly what each answer said.
public actor WriteLog {
    public struct Attempt: Sendable {
        public let id: String
        public let qty: Int
        public let status: Int
        public let code: String?
        /// When the write was sent (monotonic nanoseconds).
        public let sentNanos: UInt64
    }

    public private(set) var attempts: [Attempt] = []

    func record(_ a: Attempt) { attempts.append(a) }

    public var acknowledged: [Attempt] { attempts.filter { $0.status == 200 } }

    /// `writers` tasks insert into `collection` through the nodes `targets(w, n)` picks, until
    /// `stop()` returns true.
    public static func run(_ cluster: LiveCluster, writers: Int, collection: String = "items", prefix: String,
                    target: @escaping @Sendable (Int, Int) -> Int, until stop: @escaping @Sendable () async -> Bool) async -> WriteLog {
        let log = WriteLog()
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    var n = 0
                    while !(await stop()) {
                        let id = "\(prefix)-\(w)-\(n)"
                        let body: JSONValue = .object(["ops": .array([.object(["op": .string("insert"), "collection": .string(collection),
                                                                               "doc": .object(["id": .string(id), "qty": .int(Int64(n))])])])])
                        let sent = DispatchTime.now().uptimeNanoseconds
                        let answer = try? await cluster.admin(target(w, n), "POST", "transactions", body)
                        await log.record(Attempt(id: id, qty: n, status: answer?.status ?? -1, code: answer?.body?["code"]?.stringValue,
                                                 sentNanos: sent))
                        n += 1
                    }
                }
            }
        }
        return log
    }
}

/// A flag that stops writers.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    public init() {}
    public func stop() { lock.withLock { stopped = true } }
    public var isStopped: Bool { lock.withLock { stopped } }
}

/// One HTTP answer: status, parsed JSON body, X-AeroDB-LSN.
public struct HTTPAnswer: Sendable {
    public let status: Int
    public let body: JSONValue?
    public let lsn: UInt64?
    /// `X-AeroDB-LSN-Epoch`: the epoch of the record at `lsn`.
    public var epoch: UInt64? = nil

    /// One HTTP request with a key; `headers` are added as given.
    public static func fetch(_ method: String, _ url: String, _ body: JSONValue? = nil, key: String?,
                             headers: [String: String] = [:], timeout: TimeInterval = 10) async throws -> HTTPAnswer {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body { request.httpBody = Data(JSON.encode(body)) }
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw AeroError(.internalError, "not an HTTP answer") }
        let parsed = data.isEmpty ? nil : try? JSON.parse(Array(data))
        return HTTPAnswer(status: http.statusCode, body: parsed,
                          lsn: (http.value(forHTTPHeaderField: "X-AeroDB-LSN")).flatMap { UInt64($0) },
                          epoch: (http.value(forHTTPHeaderField: "X-AeroDB-LSN-Epoch")).flatMap { UInt64($0) })
    }
}
