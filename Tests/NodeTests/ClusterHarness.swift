// Runs a real cluster of `aerodb` processes on loopback: `aerodb cluster init`, then each
// member's ports are moved to free ones (and, with proxies, every replication link X -> Y goes
// through its own TCPProxy, so a test can cut one node off from the others). Every process and
// proxy started here is stopped when the cluster is released.

import Foundation
import Kernel

final class TestCluster: @unchecked Sendable {
    let root: String
    let size: Int
    let httpPorts: [Int]
    let replicationPorts: [Int]
    let serviceKey: String
    /// proxies[x][y]: the link from node x to node y (x != y), when built with proxies.
    private(set) var proxies: [[TCPProxy?]] = []
    private var processes: [Process?]

    init(size: Int = 3, commitMode: String = "sync", proxies useProxies: Bool = false,
         settings: [String: JSONValue] = [:]) throws {
        self.size = size
        root = NSTemporaryDirectory() + "aerodb-cluster-\(UUID().uuidString)"
        httpPorts = (0..<size).map { _ in TestNode.freePort() }
        replicationPorts = (0..<size).map { _ in TestNode.freePort() }
        processes = Array(repeating: nil, count: size)
        let (status, output) = try Binaries.run("aerodb", ["cluster", "init", "--dir", root, "--nodes", String(size),
                                                           "--commit-mode", commitMode])
        guard status == 0 else { throw AeroError(.internalError, "cluster init failed (\(status)): \(output)") }
        serviceKey = try JSON.parse(try Binaries.run("aerodb", ["keys", "--dir", root + "/n1", "--json"]).output)["service_role"]!.stringValue!
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

    func directory(_ i: Int) -> String { root + "/n\(i + 1)" }
    func url(_ i: Int) -> String { "http://127.0.0.1:\(httpPorts[i])" }

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

    func start(_ i: Int) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.path("aerodb"))
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

    func startAll() async throws {
        for i in 0..<size { try await start(i) }
    }

    func log(_ i: Int) -> String {
        (try? String(contentsOfFile: directory(i) + "/node.log", encoding: .utf8)) ?? ""
    }

    /// SIGKILL: no chance to flush or say goodbye.
    func kill(_ i: Int) {
        guard let process = processes[i], process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM and wait: a clean stop.
    func stop(_ i: Int) {
        guard let process = processes[i], process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Cuts node i off from every peer (both directions), or heals it.
    func isolate(_ i: Int, _ cut: Bool) {
        for x in 0..<size where x != i {
            for proxy in [proxies[x][i]!, proxies[i][x]!] { cut ? proxy.cut() : proxy.heal() }
        }
    }

    func request(_ i: Int, _ method: String, _ path: String, _ body: JSONValue? = nil,
                 headers: [String: String] = [:], timeout: TimeInterval = 10) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch(method, url(i) + path, body, key: serviceKey, headers: headers, timeout: timeout)
    }

    func admin(_ i: Int, _ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> HTTPAnswer {
        try await request(i, method, "/admin/v1/" + path, body)
    }

    /// Runs the aerodb CLI with the service key; returns exit status and output.
    func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try Binaries.run("aerodb", arguments + ["--key", serviceKey])
    }

    /// This node's own replication status (`/admin/v1/status`).
    func status(_ i: Int) async throws -> JSONValue {
        let answer = try await admin(i, "GET", "status")
        guard answer.status == 200, let body = answer.body else { throw AeroError(.internalError, "status of n\(i + 1): \(answer.status)") }
        return body
    }

    /// Waits until every running node listed has the same durable (LSN, checksum) as node
    /// `reference`, i.e. the same log (hash chain); returns that position.
    func waitConverged(_ nodes: [Int], to reference: Int, seconds: Double = 20) async throws -> (UInt64, String) {
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
actor WriteLog {
    struct Attempt: Sendable {
        let id: String
        let qty: Int
        let status: Int
        let code: String?
    }

    private(set) var attempts: [Attempt] = []

    func record(_ a: Attempt) { attempts.append(a) }

    var acknowledged: [Attempt] { attempts.filter { $0.status == 200 } }

    /// `writers` tasks insert into `collection` through the nodes `targets(w, n)` picks, until
    /// `stop()` returns true.
    static func run(_ cluster: TestCluster, writers: Int, collection: String = "items", prefix: String,
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
                        let answer = try? await cluster.admin(target(w, n), "POST", "transactions", body)
                        await log.record(Attempt(id: id, qty: n, status: answer?.status ?? -1, code: answer?.body?["code"]?.stringValue))
                        n += 1
                    }
                }
            }
        }
        return log
    }
}

/// A flag tests flip to stop writers.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    func stop() { lock.withLock { stopped = true } }
    var isStopped: Bool { lock.withLock { stopped } }
}
