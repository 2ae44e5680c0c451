// Operations (issue 18), with real processes: request ids across write forwarding, `/metrics`
// checked by a real `promtool` and scraped by a real `prometheus`, online backup while writers
// run and point-in-time restore into a new node directory checked by `aerodb verify`.

import BaaS
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing
import Kernel
import LiveCluster

/// Runs `body` on its own thread (a blocking wait never holds a cooperative thread).
func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// One HTTP exchange with its response headers and raw body.
func exchange(_ method: String, _ url: String, headers: [String: String] = [:], body: Data? = nil,
              timeout: TimeInterval = 10) async throws -> (status: Int, headers: [String: String], body: Data) {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.timeoutInterval = timeout
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    request.httpBody = body
    let (data, response) = try await URLSession.shared.data(for: request)
    guard let http = response as? HTTPURLResponse else { throw AeroError(.internalError, "not an HTTP answer") }
    var fields: [String: String] = [:]
    for (name, value) in http.allHeaderFields { fields[String(describing: name).lowercased()] = String(describing: value) }
    return (http.statusCode, fields, data)
}

/// Runs a program to completion off the cooperative pool, `stdin` fed from a file when given.
func runProgram(_ path: String, _ arguments: [String], stdin: String? = nil) async throws -> (status: Int32, output: String) {
    try await offThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        if let stdin { process.standardInput = FileHandle(forReadingAtPath: stdin) }
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

func findProgram(_ name: String) -> String? {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + name) {
        return dir + "/" + name
    }
    return nil
}

@Suite struct RequestIDUnitTests {
    @Test func acceptsBoundedSafeIdsOnly() {
        #expect(RequestID.accept("3f2a-9c_1.x:y") == "3f2a-9c_1.x:y")
        #expect(RequestID.accept(String(repeating: "a", count: RequestID.bytesMax)) != nil)
        #expect(RequestID.accept(String(repeating: "a", count: RequestID.bytesMax + 1)) == nil)
        #expect(RequestID.accept("") == nil)
        #expect(RequestID.accept(nil) == nil)
        #expect(RequestID.accept("with space") == nil)
        #expect(RequestID.accept("line\nbreak") == nil)
        #expect(RequestID.accept("quote\"") == nil)
        let a = RequestID.generate(), b = RequestID.generate()
        #expect(a.count == 32 && RequestID.accept(a) == a && a != b)
    }
}

@Suite(.serialized) struct OperationsTests {
    /// A request id sent to a replica is echoed, and the primary's log line for the forwarded
    /// write names it; `/metrics` on every member passes `promtool check metrics`, and a real
    /// Prometheus scraping the three nodes answers the per-follower lag series.
    @Test func requestIDsFollowForwardedWritesAndPrometheusScrapesTheCluster() async throws {
        let cluster = try makeCluster()
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        let id = "ops-\(UUID().uuidString)"
        let write = try await exchange("POST", cluster.url(1) + "/admin/v1/transactions",
                                       headers: ["Authorization": "Bearer \(cluster.serviceKey)", "X-Request-Id": id],
                                       body: Data(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"r1","qty":1}}]}"#.utf8))
        #expect(write.status == 200)
        #expect(write.headers["x-request-id"] == id)
        // The primary's line for the forwarded request carries the id (and the replica's too).
        let primaryLines = cluster.log(0).split(separator: "\n").filter { $0.contains(id) }
        #expect(primaryLines.contains { $0.contains("\"path\":\"/admin/v1/transactions\"") && $0.contains("\"status\":\"200\"") },
                "n1 log: \(cluster.log(0).suffix(1500))")
        #expect(cluster.log(1).contains(id))
        // An unacceptable id is replaced, and an error body names the id it was given.
        let bad = try await exchange("POST", cluster.url(0) + "/admin/v1/transactions",
                                     headers: ["Authorization": "Bearer \(cluster.serviceKey)", "X-Request-Id": "no spaces allowed"],
                                     body: Data(#"{"ops":[{"op":"insert","collection":"nope","doc":{"id":"x"}}]}"#.utf8))
        let given = try #require(bad.headers["x-request-id"])
        #expect(given != "no spaces allowed" && RequestID.accept(given) == given)
        #expect(try JSON.parse(Array(bad.body))["request_id"]?.stringValue == given)

        // /metrics: the service key is required; promtool accepts what each node serves.
        #expect(try await exchange("GET", cluster.url(0) + "/metrics").status == 401)
        let promtool = try #require(findProgram("promtool"), "promtool (Debian's prometheus package) is required")
        for i in 0..<3 {
            let metrics = try await exchange("GET", cluster.url(i) + "/metrics", headers: ["Authorization": "Bearer \(cluster.serviceKey)"])
            #expect(metrics.status == 200)
            let text = String(decoding: metrics.body, as: UTF8.self)
            #expect(text.contains("aerodb_http_requests_total{"))
            #expect(text.contains("aerodb_wal_fsync_duration_seconds_bucket"))
            if i == 0 {
                #expect(text.contains(#"aerodb_replication_follower_lag_lsn{follower="n2"}"#))
                #expect(text.contains("aerodb_commit_duration_seconds_count"))
            }
            let file = cluster.root + "/metrics-\(i).txt"
            try metrics.body.write(to: URL(fileURLWithPath: file))
            let check = try await runProgram(promtool, ["check", "metrics"], stdin: file)
            #expect(check.status == 0, "promtool check metrics on n\(i + 1): \(check.output)")
        }

        // A real Prometheus scrapes all three; its query API returns the lag series of both followers.
        let prometheusBinary = try #require(findProgram("prometheus"))
        let port = LiveCluster.freePort()
        let config = """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
        scrape_configs:
          - job_name: aerodb
            authorization:
              credentials: \(cluster.serviceKey)
            static_configs:
              - targets: [\((0..<3).map { "'127.0.0.1:\(cluster.httpPorts[$0])'" }.joined(separator: ", "))]
        """
        try config.write(toFile: cluster.root + "/prometheus.yml", atomically: true, encoding: .utf8)
        let prometheus = Process()
        prometheus.executableURL = URL(fileURLWithPath: prometheusBinary)
        prometheus.arguments = ["--config.file=\(cluster.root)/prometheus.yml", "--storage.tsdb.path=\(cluster.root)/tsdb",
                                "--web.listen-address=127.0.0.1:\(port)"]
        prometheus.standardOutput = FileHandle.nullDevice
        prometheus.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try prometheus.run()
        defer { prometheus.terminate(); prometheus.waitUntilExit() }
        var followers: Set<String> = []
        let deadline = Date().addingTimeInterval(90)
        while followers.count < 2, Date() < deadline, prometheus.isRunning {
            try await Task.sleep(for: .milliseconds(500))
            guard let answer = try? await exchange("GET", "http://127.0.0.1:\(port)/api/v1/query?query=aerodb_replication_follower_lag_lsn"),
                  answer.status == 200, let json = try? JSON.parse(Array(answer.body)),
                  case .array(let series)? = json["data"]?["result"] else { continue }
            followers = Set(series.compactMap { $0["metric"]?["follower"]?.stringValue })
        }
        #expect(followers == ["n2", "n3"], "prometheus running: \(prometheus.isRunning)")
        for i in 0..<3 { cluster.stop(i) }
    }
}
