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
    try await LiveCluster.onOwnThread {
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

/// `aerodb start --dir DIR` in the background, its output discarded (a restored node in the
/// backup tests); the caller terminates it.
func startNodeProcess(_ directory: String) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Binaries.path("aerodb"))
    process.arguments = ["start", "--dir", directory]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}

/// Polls `url` + "/ready" every 100 ms, at most 20 s, while `process` runs.
func awaitReady(_ process: Process, _ url: String) async throws {
    for _ in 0..<200 where process.isRunning {
        if let ready = try? await exchange("GET", url + "/ready"), ready.status == 200 { return }
        try await Task.sleep(for: .milliseconds(100))
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
        let cluster = try makeCluster(settings: ["auth": .object([
            "argon2": .object(["memory_kib": .int(8_192), "iterations": .int(1), "parallelism": .int(1)])])])
        try await cluster.startAll()
        #expect(try await cluster.admin(0, "POST", "collections", clusterItems).status == 201)
        let id = "ops-\(UUID().uuidString)"
        let write = try await exchange("POST", cluster.url(1) + "/admin/v1/transactions",
                                       headers: ["Authorization": "Bearer \(cluster.serviceKey)", "X-Request-Id": id],
                                       body: Data(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"r1","qty":1}}]}"#.utf8))
        #expect(write.status == 200)
        #expect(write.headers["x-request-id"] == id)
        // The primary's line for the forwarded request carries the id (and the replica's too).
        // Request lines are written by the log writer's thread, shortly after the answer
        // (LogLine.Writer): wait for them, up to a deadline.
        func primaryHasLine() -> Bool {
            cluster.log(0).split(separator: "\n").filter { $0.contains(id) }
                .contains { $0.contains("\"path\":\"/admin/v1/transactions\"") && $0.contains("\"status\":\"200\"") }
        }
        let linesDeadline = ContinuousClock.now + .seconds(20)
        while !(primaryHasLine() && cluster.log(1).contains(id)) && ContinuousClock.now < linesDeadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(primaryHasLine(), "n1 log: \(cluster.log(0).suffix(1500))")
        #expect(cluster.log(1).contains(id))
        // One id per request in the log: the line names the request by `request_id`, the id
        // echoed in X-Request-Id; Hummingbird's own `hb.request.id` is on no line (docs/OPERATIONS.md "Logs").
        let line = try #require(cluster.log(0).split(separator: "\n").first { $0.contains(id) && $0.contains("\"msg\":\"request\"") })
        #expect(try JSON.parse(Array(line.utf8))["request_id"]?.stringValue == id, "\(line)")
        #expect(!cluster.log(0).contains("hb.request.id") && !cluster.log(1).contains("hb.request.id"))
        // An unacceptable id is replaced, and an error body names the id it was given.
        let bad = try await exchange("POST", cluster.url(0) + "/admin/v1/transactions",
                                     headers: ["Authorization": "Bearer \(cluster.serviceKey)", "X-Request-Id": "no spaces allowed"],
                                     body: Data(#"{"ops":[{"op":"insert","collection":"nope","doc":{"id":"x"}}]}"#.utf8))
        let given = try #require(bad.headers["x-request-id"])
        #expect(given != "no spaces allowed" && RequestID.accept(given) == given)
        #expect(try JSON.parse(Array(bad.body))["request_id"]?.stringValue == given)

        // Auth events: a user made on the primary, then a failed and a successful sign-in through
        // the replica n2 (forwarded: the primary counts the events, n2 the forwards).
        let auth = ["X-Supabase-Api-Version": "2024-01-01"]
        let created = try await cluster.request(0, "POST", "/auth/v1/admin/users", .object([
            "email": .string("m@example.com"), "password": .string("metrics pw 1"), "email_confirm": .bool(true)]), headers: auth)
        #expect(created.status == 200)
        let wrong = try await cluster.request(1, "POST", "/auth/v1/token?grant_type=password",
                                              .object(["email": .string("m@example.com"), "password": .string("not it")]), headers: auth)
        #expect(wrong.status == 400)
        let signIn = try await cluster.request(1, "POST", "/auth/v1/token?grant_type=password",
                                               .object(["email": .string("m@example.com"), "password": .string("metrics pw 1")]), headers: auth)
        #expect(signIn.status == 200)
        // A REST read on the primary: its series is labelled with the route pattern, not the path.
        #expect(try await cluster.request(0, "GET", "/rest/v1/items?select=id").status == 200)

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
                #expect(text.contains(#"aerodb_http_requests_total{method="GET",route="/rest/v1/{collection}",status="200"} 1"#), "\(text)")
                #expect(text.contains(#"aerodb_auth_events_total{event="login_failed"} 1"#), "\(text)")
                #expect(text.contains(#"aerodb_auth_events_total{event="login"} 1"#))
                #expect(text.contains(#"aerodb_auth_events_total{event="user_created"} 1"#))
                #expect(!text.contains("aerodb_forwarded_requests_total{"))  // the primary forwards nothing
            }
            if i == 1 {  // the transaction and the sign-in answered 200, the wrong password 400
                #expect(text.contains(#"aerodb_forwarded_requests_total{status_class="2xx"} 2"#), "\(text)")
                #expect(text.contains(#"aerodb_forwarded_requests_total{status_class="4xx"} 1"#))
                #expect(text.contains("aerodb_forward_duration_seconds_count 3"))
                #expect(!text.contains("aerodb_auth_events_total{"))  // events are counted where they commit
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

        // A stopped follower reads as disconnected, and its lag series disappear (no stale figure);
        // a connected one keeps them. Both are read from one scrape in which n3 is disconnected
        // and n2 connected: on a loaded machine n2's session once dropped at that very moment (its
        // idle limit is 2 s) and the scrape showed both disconnected, with no series for either.
        cluster.stop(2)
        var scraped = ""
        let until = Date().addingTimeInterval(30)
        while Date() < until, !(scraped.contains(#"aerodb_replication_follower_connected{follower="n3"} 0"#)
                                && scraped.contains(#"aerodb_replication_follower_connected{follower="n2"} 1"#)) {
            try await Task.sleep(for: .milliseconds(200))
            scraped = String(decoding: try await exchange("GET", cluster.url(0) + "/metrics",
                                                          headers: ["Authorization": "Bearer \(cluster.serviceKey)"]).body, as: UTF8.self)
        }
        #expect(scraped.contains(#"aerodb_replication_follower_connected{follower="n3"} 0"#))
        #expect(scraped.contains(#"aerodb_replication_follower_connected{follower="n2"} 1"#))
        #expect(!scraped.contains(#"aerodb_replication_follower_lag_lsn{follower="n3"}"#))
        #expect(scraped.contains(#"aerodb_replication_follower_lag_lsn{follower="n2"}"#))
        for i in 0..<3 { cluster.stop(i) }
    }
}

/// Which of `ids` a restored node directory holds, opened in-process (its epoch is set, so
/// opening writes nothing), and its LSN and number of items.
func restoredIDs(_ nodeDirectory: String, among ids: [String]) async throws -> (ids: Set<String>, lsn: UInt64, count: Int) {
    let database = try await Database.open(KernelOptions(dataDirectory: nodeDirectory + "/data"))
    let snapshot = database.snapshot()
    let present = try Set(ids.filter { try snapshot.document("items", key: .string($0)) != nil })
    let count = snapshot.state.collections["items"]?.count ?? 0
    await database.close()
    return (present, snapshot.lsn, count)
}

struct Ack: Sendable { let id: String; let status: Int; let lsn: UInt64? }

actor AckLog {
    private(set) var all: [Ack] = []
    func append(_ ack: Ack) { all.append(ack) }
    var count: Int { all.count }
}

@Suite(.serialized) struct BackupRestoreTests {
    /// B1, B2: a backup taken while writers run restores to its end with every acknowledged write
    /// up to its LSN and none after; to an LSN and to a time between two commits exactly; a
    /// flipped byte is caught by `aerodb backup verify`; the restored node starts and serves.
    @Test func onlineBackupWhileWritingAndPointInTimeRestore() async throws {
        let node = try await TestNode()
        try await node.start()
        defer { node.kill() }
        #expect(try await node.admin("POST", "collections", clusterItems).status == 201)
        let insert: @Sendable (String) async throws -> HTTPAnswer = { id in
            try await node.admin("POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(id)","qty":1}}]}"#))
        }
        let a = try await insert("A")
        try await Task.sleep(for: .milliseconds(30))
        let between = SystemClock().nowMicros()
        try await Task.sleep(for: .milliseconds(30))
        let b = try await insert("B")
        let lsnA = try #require(a.lsn), lsnB = try #require(b.lsn)
        #expect(a.status == 200 && b.status == 200 && lsnB > lsnA)

        // Writers run before, during and after the backup.
        let stop = StopFlag()
        let acks = AckLog()
        let writers = Task {
            await withTaskGroup(of: Void.self) { group in
                for w in 0..<4 {
                    group.addTask {
                        var n = 0
                        while !stop.isStopped {
                            let id = "w\(w)-\(n)"
                            let answer = try? await insert(id)
                            await acks.append(Ack(id: id, status: answer?.status ?? -1, lsn: answer?.lsn))
                            n += 1
                        }
                    }
                }
            }
        }
        while await acks.count < 100 { try await Task.sleep(for: .milliseconds(20)) }
        let backupDir = node.directory + "-backup"
        defer { try? FileManager.default.removeItem(atPath: backupDir) }
        let taken = try await runProgram(Binaries.path("aerodb"), ["backup", "--url", node.baseURL, "--out", backupDir,
                                                                   "--key", node.serviceKey, "--json"])
        #expect(taken.status == 0, "\(taken.output)")
        // B5 on the wire: the base answer names the hold keeping its WAL; the WAL read through
        // that hold answers; a hold that is not a number is refused.
        let key = ["apikey": node.serviceKey]
        let base = try await exchange("GET", node.baseURL + "/admin/v1/backup/base", headers: key)
        let hold = try #require(base.headers["x-aerodb-backup-hold"].flatMap { UInt64($0) })
        let baseLSN = try #require(base.headers["x-aerodb-backup-base-lsn"])
        let page = try await exchange("GET", node.baseURL + "/admin/v1/backup/wal?after=\(baseLSN)&hold=\(hold)", headers: key)
        #expect(page.status == 200 && !page.body.isEmpty)
        let unnumbered = try await exchange("GET", node.baseURL + "/admin/v1/backup/wal?after=\(baseLSN)&hold=x", headers: key)
        #expect(unnumbered.status == 400 && String(decoding: unnumbered.body, as: UTF8.self).contains("AERO_REQUEST_INVALID"))
        let countAtEnd = await acks.count
        while await acks.count < countAtEnd + 50 { try await Task.sleep(for: .milliseconds(20)) }
        stop.stop()
        await writers.value
        let manifest = try JSON.parse(taken.output.trimmingCharacters(in: .whitespacesAndNewlines))
        let end = UInt64(try #require(manifest["end"]?["lsn"]?.intValue))
        let acknowledged = await acks.all.filter { $0.status == 200 }
        #expect(acknowledged.contains { $0.lsn! > end }, "writes continued after the backup's end")

        // verify: sound; a flipped byte in a WAL chunk is caught.
        let verified = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", backupDir])
        #expect(verified.status == 0, "\(verified.output)")
        let damaged = backupDir + "-damaged"
        defer { try? FileManager.default.removeItem(atPath: damaged) }
        try FileManager.default.copyItem(atPath: backupDir, toPath: damaged)
        let chunk = damaged + "/wal-000001.records"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: chunk))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: chunk))
        let refused = try await runProgram(Binaries.path("aerodb"), ["backup", "verify", damaged])
        #expect(refused.status == 1 && refused.output.contains("AERO_BACKUP_CORRUPT"), "\(refused.output)")

        // Restore to the end: every acknowledged write up to `end`, none after; aerodb verify passes.
        let full = node.directory + "-restored"
        defer { try? FileManager.default.removeItem(atPath: full) }
        let port = TestNode.freePort()
        let restored = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backupDir, "--dir", full,
                                                                      "--http", "127.0.0.1:\(port)", "--secrets-from", node.directory])
        #expect(restored.status == 0, "\(restored.output)")
        #expect(try await runProgram(Binaries.path("aerodb"), ["verify", "--dir", full]).status == 0)
        let everyID = ["A", "B"] + acknowledged.map(\.id)
        let (ids, lsn, count) = try await restoredIDs(full, among: everyID)
        #expect(lsn == end)
        #expect(count == ids.count, "the restored node holds only documents that were written and acknowledged")
        let missing = acknowledged.filter { $0.lsn! <= end && !ids.contains($0.id) }
        let extra = acknowledged.filter { $0.lsn! > end && ids.contains($0.id) }
        #expect(missing.isEmpty, "acknowledged up to \(end) but not restored: \(missing.prefix(3).map(\.id))")
        #expect(extra.isEmpty, "after \(end) but restored: \(extra.prefix(3).map(\.id))")
        #expect(ids.contains("A") && ids.contains("B"))

        // The restored node starts (a new single-node cluster) and serves the data with the old keys.
        let process = try startNodeProcess(full)
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        var served: HTTPAnswer?
        for _ in 0..<200 where process.isRunning {
            served = try? await HTTPAnswer.fetch("GET", "http://127.0.0.1:\(port)/rest/v1/items?id=eq.A&select=id", key: node.serviceKey)
            if served?.status == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(served?.status == 200 && served?.body == parse(#"[{"id":"A"}]"#), "\(String(describing: served?.body))")

        // To the time between A and B: A and not B. To A's LSN: exactly up to it.
        let atTime = node.directory + "-at-time"
        defer { try? FileManager.default.removeItem(atPath: atTime) }
        let toTime = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backupDir, "--dir", atTime,
                                                                    "--to-time", Timestamp.format(between)])
        #expect(toTime.status == 0, "\(toTime.output)")
        let timeIDs = try await restoredIDs(atTime, among: everyID)
        #expect(timeIDs.ids == ["A"] && timeIDs.count == 1, "\(timeIDs.ids.sorted().prefix(5))")
        let atLSN = node.directory + "-at-lsn"
        defer { try? FileManager.default.removeItem(atPath: atLSN) }
        let toLSN = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backupDir, "--dir", atLSN, "--to-lsn", String(lsnB)])
        #expect(toLSN.status == 0, "\(toLSN.output)")
        let (lsnIDs, restoredLSN, lsnCount) = try await restoredIDs(atLSN, among: everyID)
        #expect(lsnIDs == ["A", "B"] && lsnCount == 2 && restoredLSN == lsnB)
        #expect(try await runProgram(Binaries.path("aerodb"), ["verify", "--dir", atLSN]).status == 0)
        // Past the end is refused, never rounded.
        let beyond = try await runProgram(Binaries.path("aerodb"), ["restore", "--from", backupDir, "--dir", atLSN + "-x",
                                                                    "--to-lsn", String(end + 1)])
        #expect(beyond.status == 1 && beyond.output.contains("AERO_BACKUP_TARGET_UNAVAILABLE"), "\(beyond.output)")
        #expect(!FileManager.default.fileExists(atPath: atLSN + "-x"))

        // A stopped node is backed up from its directory (refused while it runs: DIR1).
        let offline = node.directory + "-offline"
        defer { try? FileManager.default.removeItem(atPath: offline) }
        let running = try await runProgram(Binaries.path("aerodb"), ["backup", "--dir", node.directory, "--out", offline])
        #expect(running.status == 1 && running.output.contains("AERO_DATA_DIRECTORY_INVALID"), "\(running.output)")
        try? FileManager.default.removeItem(atPath: offline)
        #expect(node.terminate() == 0)
        let stopped = try await runProgram(Binaries.path("aerodb"), ["backup", "--dir", node.directory, "--out", offline, "--json"])
        #expect(stopped.status == 0, "\(stopped.output)")
        let offlineEnd = try JSON.parse(stopped.output.trimmingCharacters(in: .whitespacesAndNewlines))["end"]?["lsn"]?.intValue
        let lastAck = acknowledged.compactMap(\.lsn).max() ?? 0
        #expect(offlineEnd.map { UInt64($0) >= lastAck } == true)
        let fromOffline = node.directory + "-from-offline"
        defer { try? FileManager.default.removeItem(atPath: fromOffline) }
        #expect(try await runProgram(Binaries.path("aerodb"), ["restore", "--from", offline, "--dir", fromOffline]).status == 0)
        let all = try await restoredIDs(fromOffline, among: everyID)
        #expect(all.ids.count == acknowledged.count + 2 && all.count == all.ids.count)
    }
}

@Suite(.serialized) struct TLSAndSlowLogTests {
    /// HTTPS with the certificate and key files of aerodb.json, checked by curl against the CA;
    /// plain HTTP on that port gets no answer; a request slower than `slow_query_ms` is in the
    /// slow log with its request id.
    @Test func httpsWithConfiguredFilesAndTheSlowLog() async throws {
        let node = try await TestNode()
        let openssl = try #require(findProgram("openssl")), curl = try #require(findProgram("curl"))
        let made = try await runProgram(openssl, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                                  "-keyout", node.directory + "/key.pem", "-out", node.directory + "/cert.pem",
                                                  "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        #expect(made.status == 0, "\(made.output)")
        let configPath = node.directory + "/aerodb.json"
        guard case .object(var config) = try JSON.parse(Array(FileManager.default.contents(atPath: configPath)!)) else { return }
        config["tls"] = parse(#"{"cert_file":"cert.pem","key_file":"key.pem"}"#)
        config["slow_query_ms"] = .int(500)
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: configPath))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.path("aerodb"))
        process.arguments = ["start", "--dir", node.directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let https = "https://127.0.0.1:\(node.port)"
        var ready = false
        for _ in 0..<200 where process.isRunning && !ready {
            ready = try await runProgram(curl, ["-sSf", "--max-time", "2", "--cacert", node.directory + "/cert.pem", https + "/ready"]).status == 0
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready)
        // Not trusted without the CA; plain HTTP on the port gets no HTTP answer.
        #expect(try await runProgram(curl, ["-sS", "--max-time", "5", https + "/ready"]).status != 0)
        #expect(try await runProgram(curl, ["-sS", "--max-time", "5", "http://127.0.0.1:\(node.port)/ready"]).status != 0)

        let key = ["-H", "Authorization: Bearer \(node.serviceKey)"]
        let created = try await runProgram(curl, ["-sS", "--cacert", node.directory + "/cert.pem"] + key +
                                           ["-X", "POST", https + "/admin/v1/collections", "-d", JSON.encodeString(clusterItems)])
        #expect(created.output.contains("\"name\":\"items\""), "\(created.output)")
        // A read that waits for an LSN the node never reaches answers after about 2 s: slow.
        let id = "slow-\(UUID().uuidString)"
        let slow = try await runProgram(curl, ["-sS", "--cacert", node.directory + "/cert.pem"] + key +
                                        ["-H", "X-Request-Id: \(id)", "-H", "X-AeroDB-Min-LSN: 1000000", https + "/rest/v1/items?select=id"])
        #expect(slow.status == 0)
        let log = try await runProgram(curl, ["-sS", "--cacert", node.directory + "/cert.pem"] + key + [https + "/admin/v1/logs/slow?limit=10"])
        let entries = try JSON.parse(log.output)
        #expect(entries["threshold_ms"]?.intValue == 500)
        guard case .array(let list)? = entries["entries"] else { Issue.record("no entries: \(log.output)"); return }
        let entry = list.first { $0["request_id"]?.stringValue == id }
        #expect(entry?["route"]?.stringValue == "/rest/v1/:table" || entry?["path"]?.stringValue == "/rest/v1/items", "\(log.output)")
        #expect((entry?["ms"]?.numberValue ?? 0) >= 500)
        #expect(!list.contains { $0["path"]?.stringValue == "/admin/v1/collections" }, "fast requests are not slow")
        #expect(try await runProgram(curl, ["-sS", "--cacert", node.directory + "/cert.pem"] + key + [https + "/admin/v1/logs/slow?limit=0"])
                    .output.contains("AERO_REQUEST_INVALID"))
    }
}

@Suite(.serialized) struct SlowLogPlanTests {
    /// A slow REST read's slow-log entry carries the plan of the query it ran (issue 18 part 4):
    /// the threshold at 1 ms makes every read slow; the plan names the index the filter used.
    @Test func slowLogEntriesCarryTheQueryPlan() async throws {
        let node = try await TestNode()
        let configPath = node.directory + "/aerodb.json"
        guard case .object(var config) = try JSON.parse(Array(FileManager.default.contents(atPath: configPath)!)) else { return }
        config["slow_query_ms"] = .int(1)
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: configPath))
        try await node.start()
        defer { node.kill() }
        #expect(try await node.admin("POST", "collections", clusterItems).status == 201)
        // 1,000 rows the read returns: well over 1 ms to serialize and send.
        let ops = (0..<1_000).map { #"{"op":"insert","collection":"items","doc":{"id":"r\#($0)","qty":1}}"# }.joined(separator: ",")
        #expect(try await node.admin("POST", "transactions", parse(#"{"ops":[\#(ops)]}"#)).status == 200)
        let id = "plan-\(UUID().uuidString)"
        for _ in 0..<20 {  // until one read takes 1 ms or more (it does on any machine, but loop to be sure)
            let read = try await exchange("GET", node.baseURL + "/rest/v1/items?select=id&qty=eq.1",
                                          headers: ["apikey": node.serviceKey, "Authorization": "Bearer \(node.serviceKey)", "X-Request-Id": id])
            #expect(read.status == 200)
            let log = try await node.admin("GET", "logs/slow?limit=50")
            if log.body?["entries"]?.arrayValue?.contains(where: { $0["request_id"]?.stringValue == id }) == true { break }
        }
        let entries = try await node.admin("GET", "logs/slow?limit=50").body?["entries"]?.arrayValue ?? []
        let entry = try #require(entries.first { $0["request_id"]?.stringValue == id }, "\(entries)")
        let plan = entry["plans"]?.arrayValue?.first
        #expect(plan?["collection"]?.stringValue == "items" && plan?["index"] != nil && plan?["index"] != .null
                    && (plan?["bounds"]?.arrayValue ?? []).contains { $0.stringValue?.contains("qty") == true }, "\(entry)")
        // A request that ran no query has an empty plan list.
        let collections = entries.first { $0["path"]?.stringValue == "/admin/v1/collections" }
        #expect(collections == nil || collections?["plans"] == .array([]), "\(String(describing: collections))")
    }
}
