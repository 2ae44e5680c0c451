// Issue 12, the REST front end as an attacker with the anon key sees it, against a real node on
// loopback: each request that once stopped a node or blew up its work is refused with a clear
// PostgREST-shaped error, and the node keeps answering (Q1).

import Foundation
import Kernel
import LiveCluster
import Testing

@Suite(.serialized) struct HostileRESTTests {
    static let items = #"{"name":"items","fields":{"id":{"type":"text"},"name":{"type":"text","nullable":true},"qty":{"type":"int","nullable":true}}}"#
    static let parents = #"{"name":"fp","fields":{"id":{"type":"int"}}}"#
    static let children = #"{"name":"fc","fields":{"id":{"type":"int"},"fp":{"type":"int","references":{"collection":"fp","on_delete":"cascade"}}}}"#

    private func rest(_ node: TestNode, _ method: String, _ path: String, _ body: JSONValue? = nil,
                      headers: [String: String] = [:]) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch(method, node.baseURL + "/rest/v1/" + path, body, key: node.anonKey, headers: headers, timeout: 60)
    }

    private func started() async throws -> TestNode {
        let node = try await TestNode()
        try await node.start()
        for schema in [Self.items, Self.parents, Self.children] {
            #expect(try await node.admin("POST", "collections", parse(schema)).status == 201)
        }
        let rows: JSONValue = .array([
            .object(["id": .string("a"), "name": .string("blue widget"), "qty": .int(1)]),
            .object(["id": .string("b"), "name": .string("red widget"), "qty": .int(2)]),
            .object(["id": .string("c"), "name": .null, "qty": .null]),
        ])
        #expect(try await rest(node, "POST", "items", rows).status == 201)
        return node
    }

    private func alive(_ node: TestNode) async throws -> Bool {
        let health = try await node.request("GET", "/health", key: nil).status
        let rows = try await rest(node, "GET", "items?select=id").body?.arrayValue?.count
        return health == 200 && rows == 3
    }

    @Test("Item 1: client integers (Range, limit, offset) never trap; 416 PGRST103 out of range, 400 malformed")
    func clientIntegersNeverStopTheNode() async throws {
        let node = try await started()
        defer { node.kill() }
        for method in ["GET", "HEAD"] {
            let huge = try await rest(node, method, "items?select=id", headers: ["Range": "0-9223372036854775807"])
            #expect(huge.status == 200, "\(method)")
        }
        let page = try await rest(node, "GET", "items?select=id&order=id", headers: ["Range": "1-1"])
        #expect(page.body == .array([.object(["id": .string("b")])]))
        let inverted = try await rest(node, "GET", "items", headers: ["Range": "5-2"])
        #expect(inverted.status == 416 && inverted.body?["code"] == .string("PGRST103"))
        #expect(try await rest(node, "GET", "items", headers: ["Range": "9223372036854775807-9223372036854775807"]).status == 416)
        #expect(try await rest(node, "GET", "items?limit=99999999999999999999").status == 200)
        let offset = try await rest(node, "GET", "items?offset=99999999999999999999")
        #expect(offset.status == 416 && offset.body?["code"] == .string("PGRST103"))
        #expect(try await rest(node, "GET", "items?limit=-1").status == 416)
        let malformed = try await rest(node, "GET", "items?limit=ten")
        #expect(malformed.status == 400 && malformed.body?["code"] == .string("PGRST100"))
        #expect(try await rest(node, "GET", "fp?select=id,fc(id)&fc.offset=99999999999999999999").status == 416)
        #expect(try await alive(node))
    }

    @Test("Item 2: 10,000 `!` in a tsquery (fts, fts(english), $fts) is refused, never a stack overflow")
    func deepTsqueryIsRefused() async throws {
        let node = try await started()
        defer { node.kill() }
        let bangs = String(repeating: "!", count: 10_000)
        for op in ["fts", "fts(english)"] {
            let answer = try await rest(node, "GET", "items?name=\(op).\(bangs)widget")
            #expect(answer.status == 400 && answer.body?["code"] == .string("PGRST100"), "\(op)")
            #expect(answer.body?["message"]?.stringValue?.contains("nest deeper") == true, "\(op)")
        }
        let parens = String(repeating: "(", count: 10_000)
        #expect(try await rest(node, "GET", "items?name=fts.\(parens)widget").status == 400)
        for op in ["plfts", "phfts", "wfts"] {   // no recursion in these modes: the words are read plainly
            #expect(try await rest(node, "GET", "items?name=\(op).\(bangs)widget").status == 200, "\(op)")
        }
        let admin = try await node.admin("POST", "query", .object([
            "collection": .string("items"),
            "filter": .object(["name": .object(["$fts": .object(["query": .string(bangs + "widget"), "mode": .string("tsquery")])])]),
        ]))
        #expect(admin.status == 400 && admin.body?["code"] == .string("AERO_QUERY_INVALID"))
        #expect(try await alive(node))
    }

    @Test("Item 4: a multiplying embedding is refused by the request budget; ordinary reads still answer")
    func multiplyingEmbeddingIsRefusedAndOthersStillAnswer() async throws {
        let node = try await started()
        defer { node.kill() }
        #expect(try await rest(node, "POST", "fp", .object(["id": .int(1)])).status == 201)
        let children = JSONValue.array((1...80).map { .object(["id": .int(Int64($0)), "fp": .int(1)]) })
        #expect(try await rest(node, "POST", "fc", children).status == 201)
        // One level of embedding is ordinary and within budget.
        let ordinary = try await rest(node, "GET", "fp?select=id,fc(id)")
        #expect(ordinary.status == 200 && ordinary.body?.arrayValue?.first?["fc"]?.arrayValue?.count == 80)
        let hostile = "fc?select=id,fp(id,fc(id,fp(id,fc(id))))"
        let (refusals, plain) = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
            for _ in 0..<4 { group.addTask { try await rest(node, "GET", hostile) } }
            var refusals: [HTTPAnswer] = []
            for try await answer in group { refusals.append(answer) }
            return (refusals, try await rest(node, "GET", "items?select=id&id=eq.a"))
        }
        for answer in refusals {
            #expect(answer.status == 400)
            #expect(answer.body?["code"] == .string("AERO_QUERY_BUDGET"))
            #expect(answer.body?["hint"]?.stringValue?.isEmpty == false)
        }
        #expect(plain.status == 200 && plain.body?.arrayValue?.count == 1)
        // While hostile reads run, other requests are served (the reads run on their own pool).
        async let busy: [HTTPAnswer] = withThrowingTaskGroup(of: HTTPAnswer.self) { group in
            for _ in 0..<4 { group.addTask { try await rest(node, "GET", hostile) } }
            var all: [HTTPAnswer] = []
            for try await answer in group { all.append(answer) }
            return all
        }
        #expect(try await node.request("GET", "/health", key: nil).status == 200)
        #expect(try await rest(node, "GET", "items?select=id&id=eq.b").body?.arrayValue?.count == 1)
        #expect(try await busy.allSatisfy { $0.body?["code"] == .string("AERO_QUERY_BUDGET") })
        #expect(try await alive(node))
    }

    @Test("Item 5: a REST bulk insert over transactionOpsMax is refused whole (C1)")
    func bulkInsertOverTheOpsLimitIsRefused() async throws {
        let node = try await started()
        defer { node.kill() }
        let rows = JSONValue.array((0..<25_000).map { .object(["id": .string("r\($0)")]) })
        let answer = try await rest(node, "POST", "items", rows)
        #expect(answer.status == 413)
        #expect(answer.body?["code"] == .string("AERO_TRANSACTION_TOO_LARGE"))
        #expect(try await alive(node))  // still the 3 rows: nothing of the 25,000 was written
        let atLimit = JSONValue.array((0..<KernelLimits.transactionOpsMax).map { .object(["id": .string("r\($0)")]) })
        #expect(try await rest(node, "POST", "items", atLimit).status == 201)
    }

    @Test("Item 14: not. filters are three-valued: rows whose column is null are left out")
    func notFiltersLeaveOutNulls() async throws {
        let node = try await started()
        defer { node.kill() }
        func ids(_ query: String) async throws -> [String] {
            try await rest(node, "GET", "items?select=id&order=id&" + query).body?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        }
        #expect(try await ids("qty=not.eq.1") == ["b"])
        #expect(try await ids("qty=not.in.(1,3)") == ["b"])
        #expect(try await ids("name=not.like.blue*") == ["b"])
        #expect(try await ids("or=(qty.eq.1,qty.not.eq.1)") == ["a", "b"])
        #expect(try await ids("not.or=(qty.eq.1,name.eq.x)") == ["b"])
        #expect(try await ids("qty=not.is.null") == ["a", "b"])
        #expect(try await ids("qty=is.null") == ["c"])
    }

    @Test("Item 15: unknown routes and wrong methods answer in the API's JSON error shape")
    func unknownRoutesAnswerJSON() async throws {
        let node = try await started()
        defer { node.kill() }
        let restPath = try await rest(node, "GET", "items/extra")
        #expect(restPath.status == 404 && restPath.body?["code"] == .string("PGRST125"))
        #expect(restPath.body?["hint"] == .null && restPath.body?["message"]?.stringValue?.isEmpty == false)
        let restMethod = try await rest(node, "PUT", "items", .object([:]))
        #expect(restMethod.status == 405 && restMethod.body?["code"] == .string("PGRST117"))
        let auth = try await node.request("GET", "/auth/v1/nope", key: node.anonKey)
        #expect(auth.status == 404 && auth.body?["code"] == .int(404) && auth.body?["error_code"] == .string("not_found"))
        #expect(auth.body?["msg"]?.stringValue?.isEmpty == false)
        let authMethod = try await node.request("DELETE", "/auth/v1/token", key: node.anonKey)
        #expect(authMethod.status == 405 && authMethod.body?["error_code"] == .string("method_not_allowed"))
        let admin = try await node.admin("GET", "nope")
        #expect(admin.status == 404 && admin.body?["code"] == .string("AERO_NOT_FOUND"))
        let adminMethod = try await node.admin("PATCH", "collections")
        #expect(adminMethod.status == 405 && adminMethod.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
        let elsewhere = try await node.request("GET", "/nope", key: nil)
        #expect(elsewhere.status == 404 && elsewhere.body?["code"] == .string("AERO_NOT_FOUND"))
        #expect(try await alive(node))
    }
}
