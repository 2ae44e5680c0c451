// `aerodb bench --workload auth`: auth figures on this machine with a real `aerodb` node on
// loopback (this binary) and concurrent HTTP clients. Figures only, never assertions.
//   sign-ins:  POST /auth/v1/token?grant_type=password, argon2id-bound (the node's default
//              cost m=19 MiB t=2 p=1 unless --argon2-memory-kib / --argon2-iterations say otherwise);
//   refreshes: POST /auth/v1/token?grant_type=refresh_token, each client rotating its own chain;
//   policy:    GET /rest/v1/<c>?id=eq.<key> with a user's token, on a collection without
//              row-level security and on one with an owner-only policy (same rows), req/s each.
// Rate limits are raised for the run (they would otherwise answer 429 within a second).

import AsyncHTTPClient
import Foundation
import Kernel
import NIOCore
import Synchronization

struct AuthBench {
    let bench: ClusterBench
    let root: String
    let portBase: Int
    let seconds: Double
    let clients: Int
    let argon2: (memoryKiB: Int, iterations: Int)
    static let rows = 1_000

    func run() async throws {
        let node = try await BenchCluster.start(root: root, nodes: 1, portBase: portBase, mode: .async, bench: bench, running: [])
        defer { node.stopAll() }
        try configure(node.root + "/" + node.members[0].nodeID + "/aerodb.json")
        try await node.start(0)
        let url = node.url(0)
        let user = try await createUser(url, node.key)
        let signIns = try await TimedWriters.run(writers: clients, seconds: seconds) { _, _ in
            _ = try await self.signIn(url, node.key, user)
        }
        report("sign-ins (argon2id m=\(argon2.memoryKiB) KiB t=\(argon2.iterations) p=1)", signIns)
        var first: [String] = []
        for _ in 0..<clients { first.append(try await signIn(url, node.key, user).refresh) }
        let chains = Chains(first)
        let refreshes = try await TimedWriters.run(writers: clients, seconds: seconds) { w, _ in
            let (status, body) = try await self.send("POST", url + "/auth/v1/token?grant_type=refresh_token", key: node.key,
                                                     body: .object(["refresh_token": .string(chains.get(w))]))
            guard status == 200, case .string(let next)? = body["refresh_token"] else { throw CommandFailure("refresh answered \(status)") }
            chains.set(w, next)
        }
        report("token refreshes", refreshes)
        try await policyReads(url, node.key, user)
    }

    func configure(_ path: String) throws {
        guard let data = FileManager.default.contents(atPath: path), case .object(var config) = try JSON.parse(Array(data)) else {
            throw CommandFailure("cannot read \(path)")
        }
        let generous: JSONValue = .object(["limit": .int(1_000_000_000), "window_seconds": .int(3_600)])
        let cost: [String: JSONValue] = ["memory_kib": .int(Int64(argon2.memoryKiB)), "iterations": .int(Int64(argon2.iterations)),
                                         "parallelism": .int(1)]
        let limits: [String: JSONValue] = ["token": generous, "signup": generous]
        config["auth"] = .object(["argon2": .object(cost), "rate_limits": .object(limits)])
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: path))
    }

    struct BenchUser { let email: String; let password: String; let id: String }

    func createUser(_ url: String, _ key: String) async throws -> BenchUser {
        let user = BenchUser(email: "bench@example.com", password: "bench password 1", id: "")
        let (status, body) = try await send("POST", url + "/auth/v1/admin/users", key: key, body: .object([
            "email": .string(user.email), "password": .string(user.password), "email_confirm": .bool(true)]))
        guard status == 200, case .string(let id)? = body["id"] else { throw CommandFailure("creating the bench user answered \(status)") }
        return BenchUser(email: user.email, password: user.password, id: id)
    }

    func signIn(_ url: String, _ key: String, _ user: BenchUser) async throws -> (access: String, refresh: String) {
        let (status, body) = try await send("POST", url + "/auth/v1/token?grant_type=password", key: key, body: .object([
            "email": .string(user.email), "password": .string(user.password)]))
        guard status == 200, case .string(let access)? = body["access_token"], case .string(let refresh)? = body["refresh_token"] else {
            throw CommandFailure("sign-in answered \(status)")
        }
        return (access, refresh)
    }

    /// The same rows in two collections, one with an owner-only policy; GET by key on each.
    func policyReads(_ url: String, _ key: String, _ user: BenchUser) async throws {
        for name in ["open_rows", "owned_rows"] {
            let schema: JSONValue = .object(["name": .string(name), "fields": .object([
                "id": .object(["type": .string("text")]), "owner": .object(["type": .string("uuid")]),
                "body": .object(["type": .string("text")])])])
            _ = try await send("POST", url + "/admin/v1/collections", key: key, body: schema)
            let docs: [JSONValue] = (0..<Self.rows).map { .object(["id": .string("r\($0)"), "owner": .string(user.id), "body": .string("row \($0)")]) }
            _ = try await send("POST", url + "/rest/v1/" + name, key: key, body: .array(docs))
        }
        _ = try await send("POST", url + "/admin/v1/collections/owned_rows/policies", key: key, body: .object([
            "name": .string("owner_only"), "operation": .string("all"), "using": .string("owner = auth.uid()")]))
        _ = try await send("POST", url + "/admin/v1/collections/owned_rows/rls", key: key, body: .object(["enabled": .bool(true)]))
        let token = try await signIn(url, key, user).access
        var rates: [String: Double] = [:]
        for name in ["open_rows", "owned_rows"] {
            let result = try await TimedWriters.run(writers: clients, seconds: seconds) { w, n in
                let (status, body) = try await self.send("GET", url + "/rest/v1/\(name)?id=eq.r\((w * 7919 + n) % Self.rows)", key: key, token: token)
                guard status == 200, body.arrayValue?.count == 1 else { throw CommandFailure("GET \(name) answered \(status) \(body)") }
            }
            rates[name] = result.rate
            report("REST GET by key, user token, \(name == "open_rows" ? "no policy" : "owner-only policy")", result)
        }
        print(String(format: "RATIO auth rest_get policy/no-policy = %.2f", (rates["owned_rows"] ?? 0) / max(rates["open_rows"] ?? 1, 1)))
    }

    func report(_ label: String, _ result: TimedWriters.Result) {
        print(String(format: "auth %@: %d clients  %8.0f /s  p50 %.2f ms  p99 %.2f ms", label, clients, result.rate,
                     result.percentile(0.50), result.percentile(0.99)))
    }

    func send(_ method: String, _ url: String, key: String, token: String? = nil, body: JSONValue? = nil) async throws -> (Int, JSONValue) {
        var request = HTTPClientRequest(url: url)
        request.method = .RAW(value: method)
        request.headers.add(name: "apikey", value: key)
        request.headers.add(name: "Authorization", value: "Bearer \(token ?? key)")
        if let body { request.body = .bytes(ByteBuffer(bytes: JSON.encode(body))) }
        let response = try await bench.client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 22)
        return (Int(response.status.code), (try? JSON.parse(Array(bytes.readableBytesView))) ?? .null)
    }
}

/// The latest refresh token of each client's chain.
final class Chains: Sendable {
    private let tokens: Mutex<[String]>
    init(_ tokens: [String]) { self.tokens = Mutex(tokens) }
    func get(_ i: Int) -> String { tokens.withLock { $0[i] } }
    func set(_ i: Int, _ token: String) { tokens.withLock { $0[i] = token } }
}
