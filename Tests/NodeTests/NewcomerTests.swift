// A newcomer's first hour (issue 13), against the real `aerodb` binary: unknown routes answer
// JSON in the shape of their API, `/` is an index of the node, `--version` names the build,
// every `--help` wraps cleanly and shows an example.

import Foundation
import Kernel
import LiveCluster
import Testing

@Suite("Newcomer", .serialized)
struct NewcomerTests {
    @Test("Unknown routes answer in their API's shape; a wrong method is 405 on routes registered late (storage, cluster, realtime)")
    func unknownRoutesInEveryAPIShape() async throws {
        let node = try TestNode()
        try await node.start()
        defer { node.kill() }
        // Storage: Supabase Storage's {statusCode, error, message}, the status as a string.
        let storage = try await node.request("GET", "/storage/v1/nope/deeper", key: node.anonKey)
        #expect(storage.status == 404 && storage.body?["statusCode"] == .string("404"))
        #expect(storage.body?["error"] == .string("not_found") && storage.body?["message"]?.stringValue?.contains("/storage/v1/nope") == true)
        let storageMethod = try await node.request("PATCH", "/storage/v1/bucket", .object([:]), key: node.serviceKey)
        #expect(storageMethod.status == 405 && storageMethod.body?["statusCode"] == .string("405"))
        #expect(storageMethod.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
        // Cluster routes are registered by the node after the admin router: still 405, not 404.
        let promote = try await node.admin("GET", "cluster/promote")
        #expect(promote.status == 405 && promote.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
        #expect(promote.body?["message"]?.stringValue?.contains("POST") == true)
        // Functions: the edge runtime's {code, message, error}.
        let functions = try await node.request("GET", "/functions/v1", key: node.anonKey)
        #expect(functions.status == 404 && functions.body?["error"]?.stringValue?.isEmpty == false)
        #expect(functions.body?["code"] == .string("AERO_NOT_FOUND"))
        // Realtime: AeroDB's {code, message}, as its other endpoints answer.
        let realtime = try await node.request("GET", "/realtime/v1/nope", key: node.anonKey)
        #expect(realtime.status == 404 && realtime.body?["code"] == .string("AERO_NOT_FOUND"))
        let broadcast = try await node.request("GET", "/realtime/v1/api/broadcast", key: node.anonKey)
        #expect(broadcast.status == 405 && broadcast.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
        // REST and auth keep PostgREST's and GoTrue's shapes.
        let rest = try await node.request("GET", "/rest/v1/a/b/c", key: node.anonKey)
        #expect(rest.status == 404 && rest.body?["code"] == .string("PGRST125"))
        let auth = try await node.request("GET", "/auth/v1/nope", key: node.anonKey)
        #expect(auth.status == 404 && auth.body?["error_code"] == .string("not_found"))
    }

    @Test("GET / is a JSON index: version, role, API roots")
    func rootIndex() async throws {
        let node = try TestNode()
        try await node.start()
        defer { node.kill() }
        let root = try await node.request("GET", "/", key: nil)
        #expect(root.status == 200 && root.body?["name"] == .string("AeroDB"))
        #expect(root.body?["role"] == .string("primary") && root.body?["node_id"] == .string("n1"))
        let version = try Binaries.run("aerodb", ["--version"])
        #expect(version.status == 0)
        #expect(version.output.contains(root.body?["version"]?.stringValue ?? "missing"))
        for api in ["rest", "auth", "storage", "functions", "realtime", "admin"] {
            #expect(root.body?["apis"]?[api]?.stringValue?.hasPrefix("/\(api)/v1") == true, "api \(api)")
        }
        let post = try await node.request("POST", "/", .object([:]), key: nil)
        #expect(post.status == 405 && post.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
    }
}
