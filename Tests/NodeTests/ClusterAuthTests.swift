// Auth across a real three-node cluster: a user signs in on a replica (the write is forwarded
// and applied there before the answer, so the new session works at once), refreshes on the
// other replica, and the tokens work on every node; reusing a rotated refresh token revokes the
// session everywhere.

import Foundation
import Testing
import Kernel
import LiveCluster

@Suite(.serialized) struct ClusterAuthTests {
    let auth: JSONValue = .object([
        "refresh_token_reuse_interval": .int(0),
        "argon2": .object(["memory_kib": .int(8_192), "iterations": .int(1), "parallelism": .int(1)]),
    ])

    func post(_ cluster: LiveCluster, _ i: Int, _ path: String, _ body: JSONValue) async throws -> HTTPAnswer {
        try await cluster.request(i, "POST", "/auth/v1/" + path, body, headers: ["X-Supabase-Api-Version": "2024-01-01"])
    }

    func user(_ cluster: LiveCluster, _ i: Int, token: String) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch("GET", cluster.url(i) + "/auth/v1/user", key: token)
    }

    @Test func signInOnAReplicaRefreshOnAnotherAndReuseRevokesEverywhere() async throws {
        let cluster = try makeCluster(settings: ["auth": auth])
        try await cluster.startAll()
        let created = try await post(cluster, 1, "admin/users", .object([
            "email": .string("r@example.com"), "password": .string("replica pw 1"), "email_confirm": .bool(true)]))
        #expect(created.status == 200, "\(created.body.map(JSON.encodeString) ?? "")")

        let signIn = try await post(cluster, 1, "token?grant_type=password",
                                    .object(["email": .string("r@example.com"), "password": .string("replica pw 1")]))
        #expect(signIn.status == 200, "\(signIn.body.map(JSON.encodeString) ?? "")")
        let access = try #require(signIn.body?["access_token"]?.stringValue)
        let refresh = try #require(signIn.body?["refresh_token"]?.stringValue)
        #expect(try await user(cluster, 1, token: access).status == 200)  // the replica that forwarded it

        let refreshed = try await post(cluster, 2, "token?grant_type=refresh_token", .object(["refresh_token": .string(refresh)]))
        #expect(refreshed.status == 200, "\(refreshed.body.map(JSON.encodeString) ?? "")")
        let newAccess = try #require(refreshed.body?["access_token"]?.stringValue)
        #expect(refreshed.body?["refresh_token"]?.stringValue != refresh)
        for i in 0..<3 { #expect(try await user(cluster, i, token: newAccess).status == 200, "node n\(i + 1)") }

        let reused = try await post(cluster, 0, "token?grant_type=refresh_token", .object(["refresh_token": .string(refresh)]))
        #expect(reused.status == 400 && reused.body?["code"] == .string("refresh_token_already_used"))
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        for i in 0..<3 { #expect(try await user(cluster, i, token: newAccess).status == 401, "node n\(i + 1) still accepts a revoked session") }
        // The attempt is forwarded by n3; the primary's audit row names the real client, and a
        // client-sent (unsigned) address header is ignored.
        let wrong = try await cluster.request(2, "POST", "/auth/v1/token?grant_type=password",
                                              .object(["email": .string("r@example.com"), "password": .string("not it")]),
                                              headers: ["X-Supabase-Api-Version": "2024-01-01", "X-AeroDB-Client-IP": "203.0.113.66;forged"])
        #expect(wrong.status == 400 && wrong.body?["code"] == .string("invalid_credentials"))
        let audit = try await cluster.admin(0, "GET", "audit?action=login_failed")
        let ips = audit.body?["events"]?.arrayValue?.compactMap { $0["ip"]?.stringValue } ?? []
        #expect(ips == ["127.0.0.1"], "\(audit.body.map(JSON.encodeString) ?? "")")
    }

    /// Issue 12 item 7: the primary trims the dev outbox to its ring on its timer; the replica
    /// receives the deletions by replication and never runs the rules itself.
    @Test func retentionRunsOnThePrimaryOnly() async throws {
        let cluster = try makeCluster(settings: ["auth": .object([
            "argon2": .object(["memory_kib": .int(8_192), "iterations": .int(1), "parallelism": .int(1)]),
            "retention": .object(["interval_seconds": .int(1), "outbox_messages_max": .int(10)]),
        ])])
        try await cluster.startAll()
        for n in 0..<15 {  // each creates a user and mails a code (no SMTP: the dev outbox)
            let sent = try await post(cluster, n % 3, "otp", .object(["email": .string("ring\(n)@example.com")]))
            #expect(sent.status == 200, "\(sent.body.map(JSON.encodeString) ?? "")")
        }
        func outbox(_ i: Int) async throws -> [String] {
            let answer = try await cluster.admin(i, "GET", "outbox?limit=100")
            return answer.body?["messages"]?.arrayValue?.compactMap { $0["to"]?.stringValue } ?? []
        }
        var primary: [String] = []
        for _ in 0..<100 {  // up to 20 s for a run of the 1 s timer
            primary = try await outbox(0)
            if primary.count <= 10 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(Set(primary) == Set((5..<15).map { "ring\($0)@example.com" }), "\(primary)")
        _ = try await cluster.waitConverged([0, 1, 2], to: 0)
        for i in 1..<3 { #expect(Set(try await outbox(i)) == Set(primary), "n\(i + 1)") }
        #expect(await cluster.log(0, eventuallyContaining: "auth retention run").contains("auth retention run"))
        for i in 1..<3 { #expect(!cluster.log(i).contains("auth retention"), "n\(i + 1) ran retention: \(cluster.log(i))") }
    }
}
