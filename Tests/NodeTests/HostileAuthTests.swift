// /auth/v1 against a hostile client, over HTTP with a real `aerodb` node (issue 12): client
// integers that used to overflow and stop the node, a JWT passed off as the signature of a
// made-up client address (per-IP budgets and audit addresses), concurrent refreshes of one
// token, and tokens in non-canonical spellings.

import Foundation
import Testing
import Kernel
import LiveCluster

@Suite(.serialized) struct HostileAuthTests {
    static let cheapArgon2: JSONValue = .object(["memory_kib": .int(8_192), "iterations": .int(1), "parallelism": .int(1)])
    static let version = ["X-Supabase-Api-Version": "2024-01-01"]

    /// A started node with these `auth` settings (and a cheap password hash).
    func node(_ auth: [String: JSONValue]) async throws -> TestNode {
        let node = try await TestNode()
        let path = node.directory + "/aerodb.json"
        guard case .object(var config) = try JSON.parse(Array(FileManager.default.contents(atPath: path)!)) else {
            throw AeroError(.internalError, "bad config")
        }
        var settings = auth
        settings["argon2"] = Self.cheapArgon2
        config["auth"] = .object(settings)
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: path))
        try await node.start()
        return node
    }

    func call(_ node: TestNode, _ method: String, _ path: String, _ body: JSONValue? = nil, key: String,
              headers: [String: String] = [:]) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch(method, node.baseURL + "/auth/v1/" + path, body, key: key,
                                   headers: Self.version.merging(headers) { $1 })
    }

    func text(_ answer: HTTPAnswer) -> String { "\(answer.status) \(answer.body.map(JSON.encodeString) ?? "")" }

    @Test("issue 12 item 1: page, per_page and ban_duration are ranged and saturate; the node survives")
    func adminIntegersAreRanged() async throws {
        let node = try await node(["mailer_autoconfirm": .bool(true)])
        let key = node.serviceKey
        let created = try await call(node, "POST", "admin/users", .object([
            "email": .string("p@example.com"), "password": .string("hostile pw 1"), "email_confirm": .bool(true)]), key: key)
        #expect(created.status == 200, "\(text(created))")
        let id = try #require(created.body?["id"]?.stringValue)

        let overflow = try await call(node, "GET", "admin/users?per_page=1000&page=9223372036854775807", key: key)
        #expect(overflow.status == 400 && overflow.body?["code"] == .string("validation_failed"), "\(text(overflow))")
        for bad in ["page=0", "page=abc", "page=-1", "per_page=0", "per_page=-5", "per_page=99999999999999999999", "page=1000002"] {
            let answer = try await call(node, "GET", "admin/users?" + bad, key: key)
            #expect(answer.status == 400 && answer.body?["code"] == .string("validation_failed"), "\(bad): \(text(answer))")
        }
        let clamped = try await call(node, "GET", "admin/users?per_page=5000&page=1", key: key)  // GoTrue clamps to 1,000
        #expect(clamped.status == 200 && clamped.body?["users"]?.arrayValue?.count == 1, "\(text(clamped))")
        let past = try await call(node, "GET", "admin/users?per_page=1000&page=1000001", key: key)  // in range, past the end
        #expect(past.status == 200 && past.body?["users"]?.arrayValue?.isEmpty == true, "\(text(past))")

        for bad: JSONValue in [.string("999999999h999999999h999999999h"), .string("9223372036854775807s"), .string("876001h"), .int(5)] {
            let answer = try await call(node, "PUT", "admin/users/" + id, .object(["ban_duration": bad]), key: key)
            #expect(answer.status == 400 && answer.body?["code"] == .string("validation_failed"), "\(bad): \(text(answer))")
        }
        let banned = try await call(node, "PUT", "admin/users/" + id, .object(["ban_duration": .string("24h")]), key: key)
        #expect(banned.status == 200 && banned.body?["banned_until"]?.stringValue != nil, "\(text(banned))")
        #expect(try await node.request("GET", "/health", key: nil).status == 200)
    }

    @Test("issue 12 item 6: a JWT is no signature for a client address; per-IP budgets and audit addresses hold")
    func aJWTDoesNotSignAClientAddress() async throws {
        let node = try await node(["mailer_autoconfirm": .bool(true),
                                   "rate_limits": .object(["signup": .object(["limit": .int(1), "window_seconds": .int(300)])])])
        // Any JWT is `header.payload.signature`, an HMAC of `header.payload` under the secret:
        // presented as `<address>;<mac>` it claimed the address "header.payload".
        func forged(_ jwt: String) -> String {
            let parts = jwt.split(separator: ".")
            return parts[0] + "." + parts[1] + ";" + parts[2]
        }
        let first = try await call(node, "POST", "signup", .object(["email": .string("a@example.com"), "password": .string("hostile pw 1")]),
                                   key: node.anonKey, headers: ["X-AeroDB-Client-IP": forged(node.anonKey)])
        #expect(first.status == 200, "\(text(first))")
        let access = try #require(first.body?["access_token"]?.stringValue)
        // A fresh made-up address per token: each would have had a budget of its own.
        for token in [node.serviceKey, access] {
            let next = try await call(node, "POST", "signup", .object(["email": .string("b@example.com"), "password": .string("hostile pw 1")]),
                                      key: node.anonKey, headers: ["X-AeroDB-Client-IP": forged(token)])
            #expect(next.status == 429 && next.body?["code"] == .string("over_request_rate_limit"), "\(text(next))")
        }
        let audit = try await node.admin("GET", "audit?action=user_signedup")
        let ips = audit.body?["events"]?.arrayValue?.compactMap { $0["ip"]?.stringValue } ?? []
        #expect(ips == ["127.0.0.1"], "\(text(audit))")
        // /metrics counts the sign-up and the two refusals (aerodb_auth_events_total).
        let metrics = try await exchange("GET", node.baseURL + "/metrics", headers: ["Authorization": "Bearer \(node.serviceKey)"])
        let scraped = String(decoding: metrics.body, as: UTF8.self)
        #expect(scraped.contains(#"aerodb_auth_events_total{event="user_signedup"} 1"#), "\(scraped)")
        #expect(scraped.contains(#"aerodb_auth_events_total{event="rate_limited"} 2"#))
    }

    /// Signs up `email` and answers its session.
    func session(_ node: TestNode, _ email: String) async throws -> (access: String, refresh: String) {
        let answer = try await call(node, "POST", "signup", .object(["email": .string(email), "password": .string("hostile pw 1")]),
                                    key: node.anonKey)
        #expect(answer.status == 200, "\(text(answer))")
        return (try #require(answer.body?["access_token"]?.stringValue), try #require(answer.body?["refresh_token"]?.stringValue))
    }

    func refreshConcurrently(_ node: TestNode, _ token: String, times: Int) async throws -> [HTTPAnswer] {
        try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
            for _ in 0..<times {
                group.addTask {
                    try await self.call(node, "POST", "token?grant_type=refresh_token", .object(["refresh_token": .string(token)]),
                                        key: node.anonKey)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test("issue 12 item 15: 16 concurrent refreshes of one token rotate it once (C1: a compare-and-set in the writer)")
    func concurrentRefreshesRotateOnce() async throws {
        let generous: JSONValue = .object(["limit": .int(1_000), "window_seconds": .int(300)])
        let node = try await node(["mailer_autoconfirm": .bool(true), "refresh_token_reuse_interval": .int(0),
                                   "rate_limits": .object(["token": generous, "signup": generous])])
        for round in 0..<3 {
            let (_, refresh) = try await session(node, "c\(round)@example.com")
            let answers = try await refreshConcurrently(node, refresh, times: 16)
            let winners = answers.filter { $0.status == 200 }
            #expect(winners.count == 1, "round \(round): \(answers.map(text))")
            for loser in answers where loser.status != 200 {
                #expect(loser.status == 400 && ["refresh_token_already_used", "refresh_token_not_found"].contains(loser.body?["code"]?.stringValue ?? ""),
                        "\(text(loser))")
            }
        }
    }

    @Test("issue 12 item 15: within a reuse interval concurrent refreshes all get a sibling")
    func concurrentRefreshesWithinTheIntervalGetSiblings() async throws {
        let generous: JSONValue = .object(["limit": .int(1_000), "window_seconds": .int(300)])
        let node = try await node(["mailer_autoconfirm": .bool(true), "refresh_token_reuse_interval": .int(60),
                                   "rate_limits": .object(["token": generous, "signup": generous])])
        let (_, refresh) = try await session(node, "s@example.com")
        let answers = try await refreshConcurrently(node, refresh, times: 16)
        #expect(answers.allSatisfy { $0.status == 200 }, "\(answers.map(text))")
        #expect(Set(answers.compactMap { $0.body?["refresh_token"]?.stringValue }).count == 16)
    }

    @Test("issue 12 item 15: keys, access and refresh tokens in another spelling are refused")
    func nonCanonicalTokensAreRefused() async throws {
        let node = try await node(["mailer_autoconfirm": .bool(true)])
        let (access, refresh) = try await session(node, "n@example.com")
        for variant in [node.anonKey + "=", node.anonKey.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")]
            where variant != node.anonKey {
            let answer = try await call(node, "POST", "signup", .object(["email": .string("x@example.com"), "password": .string("hostile pw 1")]),
                                        key: variant)
            #expect(answer.status == 401, "\(text(answer))")
        }
        #expect(try await call(node, "GET", "user", key: access + "=").status == 401)
        #expect(try await call(node, "GET", "user", key: access).status == 200)
        for variant in [refresh + "=", refresh + "\n", " " + refresh] {
            let answer = try await call(node, "POST", "token?grant_type=refresh_token", .object(["refresh_token": .string(variant)]),
                                        key: node.anonKey)
            #expect(answer.status == 400 && answer.body?["code"] == .string("refresh_token_not_found"), "\(text(answer))")
        }
        let good = try await call(node, "POST", "token?grant_type=refresh_token", .object(["refresh_token": .string(refresh)]), key: node.anonKey)
        #expect(good.status == 200, "\(text(good))")
    }
}
