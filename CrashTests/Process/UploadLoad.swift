// Storage uploads under `aerodb-crashtest kill --uploaders U` and `aerodb-crashtest cluster
// --uploaders U` (docs/CRASH_TESTING.md, ST1/ST4/ST8): beside the kernel writers, U uploaders send
// plain uploads (`POST /storage/v1/object/crash/…`) and TUS uploads in 64 KiB chunks, each
// uploader to its own node (`round(_:ports:until:)`: one node in kill mode; replicas and the
// primary in cluster mode, where a replica forwards to the primary). After each restart or
// failover, on every node given to `verify`:
//   - every object acknowledged (200, or `Tus-Complete: 1`) in any round downloads with the
//     SHA-256 of the bytes sent;
//   - (kill mode, `resumePending`) every TUS upload acknowledged (201 at creation) answers HEAD
//     with an offset at least the last acknowledged one, and resuming from that offset completes
//     it byte-identical; in cluster mode unfinished uploads are dropped (their parts live on the
//     old primary only, docs/STORAGE.md) and only their absence from listings is checked;
//   - every object listed in the bucket is one an uploader sent, whole (no torn or foreign bytes).
// Contents are regenerated from (name, size) with SeededRandom, so nothing large is kept in memory.
// Kill mode passes a `Sample` so a round's cost does not grow with every round before it: each
// round downloads the objects not checked yet plus a rotating 1/`every` of the others (each one
// again at least every `every` rounds), and a last unsampled `verify` checks every object.

import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kernel

final class UploadLoad: @unchecked Sendable {
    /// HTTP port of the node requests go to unless told otherwise (kill mode: the only node).
    let port: Int
    let serviceKey: String
    let uploaders: Int
    static let bucket = "crash"
    static let chunkBytes = 64 << 10
    /// Sizes cycle through these (empty, one byte, under a chunk, several chunks).
    static let sizes = [0, 1, 1_000, 70_000, 200_001]

    struct TUSUpload {
        var url: String
        var name: String
        var size: Int
        var acked: Int
    }

    private let lock = NSLock()
    /// name → size of every upload sent (acknowledged or not): what a listed object must be.
    private var sent: [String: Int] = [:]
    private var acknowledged: [String: Int] = [:]
    private var pending: [TUSUpload] = []
    /// Names whose bytes a verify has downloaded and checked at least once.
    private var checked: Set<String> = []

    /// Which already-checked objects a sampled verify downloads again: those whose name hashes
    /// to `round` modulo `every`.
    struct Sample {
        let round: Int
        let every: Int
    }

    private func due(_ name: String, _ sample: Sample?, _ checked: Set<String>) -> Bool {
        guard let sample, sample.every > 1 else { return true }
        return !checked.contains(name) || Self.nameHash(name) % UInt64(sample.every) == UInt64(sample.round % sample.every)
    }

    init(port: Int, serviceKey: String, uploaders: Int) {
        self.port = port
        self.serviceKey = serviceKey
        self.uploaders = uploaders
    }

    convenience init(node: KilledNode, uploaders: Int) {
        self.init(port: node.port, serviceKey: node.serviceKey, uploaders: uploaders)
    }

    var acknowledgedCount: Int { lock.withLock { acknowledged.count } }

    /// FNV-1a of the name: the seed of its bytes and its sampling slot.
    static func nameHash(_ name: String) -> UInt64 {
        var hash: UInt64 = 1_469_598_103_934_665_603
        for b in name.utf8 { hash = (hash ^ UInt64(b)) &* 1_099_511_628_211 }
        return hash
    }

    static func bytes(_ name: String, _ size: Int) -> [UInt8] {
        var random = SeededRandom(seed: nameHash(name))
        var out = [UInt8]()
        out.reserveCapacity(size)
        while out.count < size {
            var word = random.next()
            for _ in 0..<min(8, size - out.count) { out.append(UInt8(truncatingIfNeeded: word)); word >>= 8 }
        }
        return out
    }

    static func sha256(_ bytes: some DataProtocol) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    struct Answer {
        var status: Int
        var headers: [String: String]
        var body: Data
    }

    func fetch(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:], port: Int? = nil) async throws -> Answer {
        let url = path.hasPrefix("http") ? path : "http://127.0.0.1:\(port ?? self.port)" + path
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 10
        request.setValue("Bearer \(serviceKey)", forHTTPHeaderField: "Authorization")
        request.setValue(serviceKey, forHTTPHeaderField: "apikey")
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        if let body { request.httpBody = Data(body) }
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw AeroError(.internalError, "not an HTTP answer") }
        var h: [String: String] = [:]
        for (k, v) in http.allHeaderFields { h[String(describing: k).lowercased()] = String(describing: v) }
        return Answer(status: http.statusCode, headers: h, body: data)
    }

    func prepare() async throws {
        let body = JSON.encode(.object(["id": .string(Self.bucket), "public": .bool(false)]))
        let answer = try await fetch("POST", "/storage/v1/bucket", body: body, headers: ["Content-Type": "application/json"])
        guard answer.status == 200 || answer.status == 201 else {
            throw AeroError(.internalError, "could not create the crash bucket: \(answer.status)")
        }
    }

    static let tus = ["Tus-Resumable": "1.0.0"]

    /// One round. Uploader u sends to `ports[u % ports.count]` (default: `port`). Without `stop`
    /// (kill mode) each uploader stops at its first failed request (the node was killed); with
    /// `stop` (cluster mode) a failure (a killed or isolated primary, a replica forwarding to it)
    /// only means that upload was not acknowledged, and it goes on until `stop()`.
    func round(_ round: Int, ports: [Int]? = nil, until stop: (@Sendable () -> Bool)? = nil) async {
        let ports = ports ?? [port]
        await withTaskGroup(of: Void.self) { group in
            for u in 0..<uploaders {
                group.addTask {
                    var seq = 0
                    let port = ports[u % ports.count]
                    while !(stop?() ?? false) {
                        let name = "r\(round)/u\(u)/\(seq)"
                        let size = Self.sizes[(seq + u) % Self.sizes.count]
                        seq += 1
                        self.lock.withLock { self.sent[name] = size }
                        let ok = seq % 2 == 0 ? await self.plain(name, size, port: port) : await self.resumable(name, size, port: port)
                        if !ok {
                            if stop == nil { return }
                            try? await Task.sleep(for: .milliseconds(50))  // the primary is down: no hot loop
                        }
                    }
                }
            }
        }
    }

    private func plain(_ name: String, _ size: Int, port: Int) async -> Bool {
        guard let a = try? await fetch("POST", "/storage/v1/object/\(Self.bucket)/\(name)", body: Self.bytes(name, size),
                                       headers: ["Content-Type": "application/octet-stream"], port: port), a.status == 200 else { return false }
        lock.withLock { acknowledged[name] = size }
        return true
    }

    private func resumable(_ name: String, _ size: Int, port: Int) async -> Bool {
        let meta = "bucketName \(Data(Self.bucket.utf8).base64EncodedString()),objectName \(Data(name.utf8).base64EncodedString())"
        guard let created = try? await fetch("POST", "/storage/v1/upload/resumable",
                                             headers: Self.tus.merging(["Upload-Length": String(size), "Upload-Metadata": meta]) { a, _ in a },
                                             port: port),
              created.status == 201, let location = created.headers["location"] else { return false }
        if created.headers["tus-complete"] == "1" {
            lock.withLock { acknowledged[name] = size }
            return true
        }
        var upload = TUSUpload(url: location, name: name, size: size, acked: 0)
        let index = lock.withLock { pending.append(upload); return pending.count - 1 }
        let bytes = Self.bytes(name, size)
        while upload.acked < size {
            let end = min(size, upload.acked + Self.chunkBytes)
            guard let a = try? await fetch("PATCH", location, body: Array(bytes[upload.acked..<end]),
                                           headers: Self.tus.merging(["Upload-Offset": String(upload.acked),
                                                                      "Content-Type": "application/offset+octet-stream"]) { a, _ in a },
                                           port: port),
                  a.status == 204, let offset = a.headers["upload-offset"].flatMap(Int.init) else { return false }
            upload.acked = offset
            let done = a.headers["tus-complete"] == "1"
            lock.withLock {
                pending[index] = upload
                if done { acknowledged[name] = size }
            }
            if done { break }
        }
        return true
    }

    /// After a restart or failover: the checks of the file comment on every node of `ports`
    /// (default: `port`); returns the violations. `resumePending` false (cluster mode): unfinished
    /// TUS uploads are forgotten instead of resumed.
    func verify(ports: [Int]? = nil, resumePending: Bool = true, sample: Sample? = nil) async -> [String] {
        let ports = ports ?? [port]
        var problems: [String] = []
        let (objects, uploads) = lock.withLock { (acknowledged, pending) }
        if !resumePending { lock.withLock { pending.removeAll() } }
        // Unfinished acknowledged TUS uploads: the offset survived, and they complete byte-identical.
        var resumed: [TUSUpload] = []
        for u in uploads where objects[u.name] == nil && resumePending {
            guard let h = try? await fetch("HEAD", u.url, headers: Self.tus), h.status == 200,
                  let offset = h.headers["upload-offset"].flatMap(Int.init) else {
                // Its last chunk may have committed the object without the answer arriving.
                if let d = try? await fetch("GET", "/storage/v1/object/\(Self.bucket)/\(u.name)"), d.status == 200 {
                    resumed.append(u)
                    continue
                }
                problems.append("TUS upload \(u.name): acknowledged at offset \(u.acked), lost after the restart")
                continue
            }
            guard offset >= u.acked, offset <= u.size else {
                problems.append("TUS upload \(u.name): offset \(offset) after the restart, \(u.acked) acknowledged")
                continue
            }
            let bytes = Self.bytes(u.name, u.size)
            let a = try? await fetch("PATCH", u.url, body: Array(bytes[offset...]),
                                     headers: Self.tus.merging(["Upload-Offset": String(offset),
                                                                "Content-Type": "application/offset+octet-stream"]) { a, _ in a })
            guard let a, a.status == 204, a.headers["tus-complete"] == "1" else {
                let why = a.map { "\($0.status) \($0.headers["x-aerodb-error-code"] ?? "") \(String(decoding: $0.body.prefix(200), as: UTF8.self))" } ?? "no answer"
                problems.append("TUS upload \(u.name): could not be resumed from \(offset) of \(u.size): \(why)")
                continue
            }
            resumed.append(u)
        }
        lock.withLock {
            for u in resumed { acknowledged[u.name] = u.size }
            pending.removeAll { acknowledged[$0.name] != nil }
        }
        let many = ports.count > 1
        let checkedBefore = lock.withLock { checked }
        for (name, size) in lock.withLock({ acknowledged }).sorted(by: { $0.key < $1.key }) where due(name, sample, checkedBefore) {
            let expected = Self.sha256(Self.bytes(name, size))
            for port in ports {
                let on = many ? " on 127.0.0.1:\(port)" : ""
                guard let a = try? await fetch("GET", "/storage/v1/object/\(Self.bucket)/\(name)", port: port), a.status == 200 else {
                    problems.append("acknowledged object \(name) lost\(on)")
                    continue
                }
                if Self.sha256(a.body) != expected {
                    problems.append("acknowledged object \(name): bytes differ\(on) (\(a.body.count) of \(size), SHA-256 \(Self.sha256(a.body).prefix(12)) instead of \(expected.prefix(12)))")
                }
            }
        }
        for port in ports {
            problems += await listedAreWhole(port: port, sample: sample, checkedBefore).map { many ? "\($0) on 127.0.0.1:\(port)" : $0 }
        }
        lock.withLock { checked.formUnion(acknowledged.keys) }
        return problems
    }

    /// Every listed object is one that was sent, with exactly its bytes (downloaded when due).
    private func listedAreWhole(port: Int, sample: Sample?, _ checkedBefore: Set<String>) async -> [String] {
        var problems: [String] = []
        let sent = lock.withLock { self.sent }
        var cursor: String?
        var pages = 0
        repeat {
            var body: [String: JSONValue] = ["prefix": .string(""), "limit": .int(1_000)]
            if let cursor { body["cursor"] = .string(cursor) }
            guard let a = try? await fetch("POST", "/storage/v1/object/list-v2/\(Self.bucket)", body: JSON.encode(.object(body)),
                                           headers: ["Content-Type": "application/json"], port: port), a.status == 200,
                  let page = try? JSON.parse(Array(a.body)) else { return ["list_v2 failed after the restart"] }
            for o in page["objects"]?.arrayValue ?? [] {
                let name = o["name"]?.stringValue ?? ""
                guard let size = sent[name] else { problems.append("listed object \(name) was never sent"); continue }
                guard due(name, sample, checkedBefore) else { continue }
                guard let d = try? await fetch("GET", "/storage/v1/object/\(Self.bucket)/\(name)", port: port), d.status == 200,
                      Self.sha256(d.body) == Self.sha256(Self.bytes(name, size)) else {
                    problems.append("listed object \(name) is not whole")
                    continue
                }
            }
            cursor = page["hasNext"]?.boolValue == true ? page["nextCursor"]?.stringValue : nil
            pages += 1
        } while cursor != nil && pages < 1_000
        return problems
    }
}
