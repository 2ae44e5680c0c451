// Storage across three real `aerodb` processes (sync commit mode): uploads through the primary
// and through a replica while the primary is killed with SIGKILL, then a promotion. Every
// acknowledged object must be downloadable byte for byte from every live node, and nothing
// listed may be incomplete (ST1, docs/STORAGE.md "Cluster"). A TUS upload cut by the kill is
// not resumable on the new primary (its parts lived on the old one) and is never listed.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Synchronization
import Testing
import Kernel
import LiveCluster

/// One raw HTTP exchange with bytes in and out (storage bodies are not JSON).
func storageRequest(_ url: String, _ method: String, key: String, body: Data? = nil, headers: [String: String] = [:],
                    timeout: TimeInterval = 20) async -> (status: Int, headers: [String: String], body: Data)? {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.timeoutInterval = timeout
    request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
    for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
    request.httpBody = body
    guard let (data, response) = try? await URLSession.shared.data(for: request), let http = response as? HTTPURLResponse else { return nil }
    var fields: [String: String] = [:]
    for (k, v) in http.allHeaderFields { fields[String(describing: k).lowercased()] = String(describing: v) }
    return (http.statusCode, fields, data)
}

/// What the uploaders sent and which uploads were acknowledged (200).
final class UploadLog: Sendable {
    struct State { var sent: [String: Data] = [:]; var acknowledged: [String] = [] }
    let state = Mutex(State())
    func sent(_ name: String, _ body: Data) { state.withLock { $0.sent[name] = body } }
    func acknowledged(_ name: String) { state.withLock { $0.acknowledged.append(name) } }
    var snapshot: State { state.withLock { $0 } }
}

@Suite(.serialized) struct StorageClusterTests {
    @Test func killedPrimaryDuringUploadsPromotionLosesNoAcknowledgedObject() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        let key = cluster.serviceKey
        let created = await storageRequest(cluster.url(0) + "/storage/v1/bucket", "POST", key: key,
                                           body: Data(#"{"id":"crash","public":false}"#.utf8), headers: ["Content-Type": "application/json"])
        #expect(created?.status == 200, "bucket: \(created.map { String(decoding: $0.body, as: UTF8.self) } ?? "no answer")")
        // A TUS upload in progress on the primary when it dies.
        let tusMeta = "bucketName \(Data("crash".utf8).base64EncodedString()),objectName \(Data("tus/cut.bin".utf8).base64EncodedString())"
        let tus = await storageRequest(cluster.url(0) + "/storage/v1/upload/resumable", "POST", key: key,
                                       headers: ["Tus-Resumable": "1.0.0", "Upload-Length": "1000000", "Upload-Metadata": tusMeta])
        #expect(tus?.status == 201)
        let tusPath = tus?.headers["location"] ?? "/storage/v1/upload/resumable/none"
        let firstChunk = await storageRequest(cluster.url(0) + tusPath, "PATCH", key: key, body: Data(repeating: 7, count: 100_000),
                                              headers: ["Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                                                        "Content-Type": "application/offset+octet-stream"])
        #expect(firstChunk?.status == 204)

        let log = UploadLog()
        let stop = StopFlag()
        Task {
            // SIGKILL the primary while uploads stream in, once a dozen were acknowledged (a
            // condition, not a time: on a loaded machine 1.5 s once gave exactly 10), at most 60 s.
            for _ in 0..<600 where log.snapshot.acknowledged.count < 12 { try? await Task.sleep(for: .milliseconds(100)) }
            try? await Task.sleep(for: .milliseconds(200))
            cluster.kill(0)
            try? await Task.sleep(for: .milliseconds(300))
            stop.stop()
        }
        // Four uploaders: two to the primary, two through replica n2 (forwarded as a stream).
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask {
                    var n = 0
                    while !stop.isStopped {
                        let name = "w\(w)/o\(n)"
                        n += 1
                        var bytes = [UInt8](repeating: 0, count: 64 * 1024 + (n * 7919) % (192 * 1024))
                        var rng = SystemRandomNumberGenerator()
                        for i in stride(from: 0, to: bytes.count, by: 8) {
                            let r = rng.next()
                            for j in 0..<min(8, bytes.count - i) { bytes[i + j] = UInt8(truncatingIfNeeded: r >> (8 * UInt64(j))) }
                        }
                        let body = Data(bytes)
                        log.sent(name, body)
                        let node = w < 2 ? 0 : 1
                        let answer = await storageRequest(cluster.url(node) + "/storage/v1/object/crash/" + name, "POST", key: key, body: body,
                                                          headers: ["Content-Type": "application/octet-stream"], timeout: 10)
                        if answer?.status == 200 { log.acknowledged(name) }
                        if answer == nil || answer!.status >= 500 { try? await Task.sleep(for: .milliseconds(50)) }
                    }
                }
            }
        }
        let state = log.snapshot
        #expect(state.acknowledged.count > 10, "only \(state.acknowledged.count) uploads were acknowledged before the kill")

        // Promote whichever replica is ahead.
        // A keep-alive connection the node closed meanwhile can answer one request with a reset
        // (seen once in 12 runs): retry, and show the replicas' logs if they really do not answer.
        func status(_ i: Int) async throws -> JSONValue {
            for attempt in 1...3 {
                do { return try await cluster.status(i) } catch where attempt < 3 { try await Task.sleep(for: .milliseconds(200)) }
            }
            preconditionFailure("the last attempt returns or throws")
        }
        let s1: JSONValue, s2: JSONValue
        do {
            s1 = try await status(1)
            s2 = try await status(2)
        } catch {
            Issue.record("a replica did not answer after the kill: \(error)\nn2: \(cluster.log(1).suffix(4000))\nn3: \(cluster.log(2).suffix(4000))")
            return
        }
        let d1 = s1["lsn"]?["durable"]?.intValue ?? 0, d2 = s2["lsn"]?["durable"]?.intValue ?? 0
        let (best, other) = d1 >= d2 ? (1, 2) : (2, 1)
        let (status, report) = try promote(cluster, best)
        #expect(status == 0, "promotion failed: \(JSON.encodeString(report))")
        _ = try await cluster.waitConverged([best, other], to: best)

        for i in [best, other] {
            // Every acknowledged object, byte for byte.
            var lost: [String] = []
            for name in state.acknowledged {
                let got = await storageRequest(cluster.url(i) + "/storage/v1/object/crash/" + name, "GET", key: key)
                if got?.status != 200 || got?.body != state.sent[name] { lost.append("\(name): \(got?.status ?? 0)") }
            }
            #expect(lost.isEmpty, "n\(i + 1) lost \(lost.count) of \(state.acknowledged.count) acknowledged objects, e.g. \(lost.prefix(3))")
            // Everything listed is complete (acknowledged or not: an upload in doubt is all or nothing).
            var listed = 0
            for w in 0..<4 {
                let page = await storageRequest(cluster.url(i) + "/storage/v1/object/list/crash", "POST", key: key,
                                                body: Data(#"{"prefix":"w\#(w)","limit":1000}"#.utf8), headers: ["Content-Type": "application/json"])
                guard let page, page.status == 200, case .array(let entries)? = try? JSON.parse(Array(page.body)) else {
                    Issue.record("list on n\(i + 1) failed: \(page?.status ?? 0)")
                    continue
                }
                for entry in entries {
                    guard let short = entry["name"]?.stringValue else { continue }
                    let name = "w\(w)/\(short)"
                    listed += 1
                    let got = await storageRequest(cluster.url(i) + "/storage/v1/object/crash/" + name, "GET", key: key)
                    #expect(got?.status == 200 && got?.body == state.sent[name], "n\(i + 1) lists \(name) but serves other bytes")
                    #expect(entry["metadata"]?["size"]?.intValue == state.sent[name].map { Int64($0.count) })
                }
            }
            #expect(listed >= state.acknowledged.count)
            // The TUS upload cut by the kill: its parts were on the old primary only.
            let head = await storageRequest(cluster.url(i) + tusPath, "HEAD", key: key, headers: ["Tus-Resumable": "1.0.0"])
            #expect(head?.status == 404)
            let info = await storageRequest(cluster.url(i) + "/storage/v1/object/info/crash/tus/cut.bin", "GET", key: key)
            #expect(info?.status == 404)
        }
        // Uploads go on through any live node.
        for i in [best, other] {
            let answer = await storageRequest(cluster.url(i) + "/storage/v1/object/crash/after-\(i)", "POST", key: key,
                                              body: Data("after".utf8), headers: ["Content-Type": "text/plain"])
            #expect(answer?.status == 200)
        }
    }

    /// ST8: a replica that was down during an upload (the primary pushed the bytes to the other
    /// replica only, which `sync` allows) restarts, follows the log, and is promoted before its
    /// periodic catch-up ran: as the new primary it must still serve the acknowledged object,
    /// fetching the bytes from a member that holds them. It used to fetch from the primary only,
    /// i.e. from no one once it was the primary: 503 on it for good (found while reading
    /// `BlobReplicator` for the `aerodb-crashtest cluster --uploaders` work).
    @Test func aPromotedReplicaThatMissedABlobPushServesTheObject() async throws {
        let cluster = try makeCluster(commitMode: "sync")
        try await cluster.startAll()
        let key = cluster.serviceKey
        let created = await storageRequest(cluster.url(0) + "/storage/v1/bucket", "POST", key: key,
                                           body: Data(#"{"id":"missed","public":false}"#.utf8), headers: ["Content-Type": "application/json"])
        #expect(created?.status == 200)
        cluster.stop(2)
        let body = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) })
        let upload = await storageRequest(cluster.url(0) + "/storage/v1/object/missed/while-n3-was-down.bin", "POST", key: key, body: body,
                                          headers: ["Content-Type": "application/octet-stream"])
        #expect(upload?.status == 200, "\(upload.map { String(decoding: $0.body, as: UTF8.self) } ?? "no answer")")
        try await cluster.start(2)
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        // Precondition: n3 has the row but not the bytes (a list hides an object whose blob is absent).
        let listed = await storageRequest(cluster.url(2) + "/storage/v1/object/list/missed", "POST", key: key,
                                          body: Data(#"{"prefix":"","limit":10}"#.utf8), headers: ["Content-Type": "application/json"])
        #expect(listed?.status == 200 && (try? JSON.parse(Array(listed!.body)))?.arrayValue?.isEmpty == true,
                "n3 already holds the blob: \(listed.map { String(decoding: $0.body, as: UTF8.self) } ?? "no answer")")
        cluster.kill(0)
        let (status, report) = try promote(cluster, 2)
        #expect(status == 0, "promotion of n3 failed: \(JSON.encodeString(report))")
        _ = try await cluster.waitConverged([1, 2], to: 2)
        for i in [2, 1] {
            let got = await storageRequest(cluster.url(i) + "/storage/v1/object/missed/while-n3-was-down.bin", "GET", key: key)
            #expect(got?.status == 200 && got?.body == body,
                    "n\(i + 1) answered \(got?.status ?? 0): \(got.map { String(decoding: $0.body.prefix(300), as: UTF8.self) } ?? "")")
        }
    }
}
