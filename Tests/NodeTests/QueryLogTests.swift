// The query operation log (issue 18 part 5): a refused query is an entry of its own, with the plan
// that was refused, even with the slow log off; read on /admin/v1/logs/queries and with
// `aerodb logs`. A real node, real HTTP, the real CLI.

import Foundation
import Testing
import Kernel
import LiveCluster

@Suite(.serialized) struct QueryLogTests {
    /// A REST read the scan bound refuses (AERO_QUERY_UNBOUNDED: a filter on an unindexed field of
    /// a collection larger than `scan_rows_max`) is a `refused` entry with its request id, code,
    /// and the plan it would have run (`refused: true`, the full scan's `rows_examined_bound`
    /// above `scan_rows_max`); an allowed read is not an entry; with `slow_query_ms` 0 there are
    /// no slow entries; `aerodb logs --kind refused` prints it.
    @Test func refusedQueriesAreLoggedWithTheirPlans() async throws {
        let node = try await TestNode()
        let configPath = node.directory + "/aerodb.json"
        guard case .object(var config) = try JSON.parse(Array(FileManager.default.contents(atPath: configPath)!)) else { return }
        config["slow_query_ms"] = .int(0)  // slow entries off: refused entries do not depend on them
        config["scan_rows_max"] = .int(1_000)
        try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: configPath))
        try await node.start()
        defer { node.kill() }
        let things = parse(#"{"name":"things","fields":{"id":{"type":"text"},"n":{"type":"int"}},"indexes":[]}"#)
        #expect(try await node.admin("POST", "collections", things).status == 201)
        for batch in 0..<2 {
            let ops = (0..<750).map { #"{"op":"insert","collection":"things","doc":{"id":"t\#(batch)-\#($0)","n":\#($0)}}"# }.joined(separator: ",")
            #expect(try await node.admin("POST", "transactions", parse(#"{"ops":[\#(ops)]}"#)).status == 200)
        }
        let headers = ["apikey": node.serviceKey, "Authorization": "Bearer \(node.serviceKey)"]
        let refusedID = "refused-\(UUID().uuidString)", allowedID = "allowed-\(UUID().uuidString)"
        let refused = try await exchange("GET", node.baseURL + "/rest/v1/things?n=eq.5&select=id", headers: headers.merging(["X-Request-Id": refusedID]) { $1 })
        #expect(refused.status == 400 && String(decoding: refused.body, as: UTF8.self).contains("could examine"), "\(String(decoding: refused.body, as: UTF8.self))")
        let allowed = try await exchange("GET", node.baseURL + "/rest/v1/things?id=eq.t0-5&select=id", headers: headers.merging(["X-Request-Id": allowedID]) { $1 })
        #expect(allowed.status == 200)

        let log = try await node.admin("GET", "logs/queries?limit=100")
        #expect(log.status == 200 && log.body?["threshold_ms"]?.intValue == 0)
        let entries = log.body?["entries"]?.arrayValue ?? []
        let entry = try #require(entries.first { $0["request_id"]?.stringValue == refusedID }, "\(entries)")
        #expect(entry["kind"] == .string("refused") && entry["code"] == .string("AERO_QUERY_UNBOUNDED") && entry["status"]?.intValue == 400)
        #expect(entry["route"]?.stringValue?.hasPrefix("/rest/v1/") == true && entry["path"] == .string("/rest/v1/things"), "\(entry)")
        let plans = entry["plans"]?.arrayValue ?? []
        #expect(plans.count == 1, "\(plans)")
        let plan = try #require(plans.first)
        #expect(plan["refused"] == .bool(true) && plan["collection"] == .string("things") && plan["scan_rows_max"]?.intValue == 1_000, "\(plan)")
        #expect((plan["rows_examined_bound"]?.intValue ?? 0) >= 1_500 && plan["index"] == .null, "the full scan it would have run: \(plan)")
        #expect(!entries.contains { $0["request_id"]?.stringValue == allowedID }, "an allowed read is no entry")
        #expect(!entries.contains { $0["kind"] == .string("slow") }, "slow entries are off")
        // The same at /admin/v1/logs/slow, and filtered by kind.
        let onlySlow = try await node.admin("GET", "logs/slow?kind=slow")
        #expect(onlySlow.status == 200 && onlySlow.body?["entries"] == .array([]))
        #expect(try await node.admin("GET", "logs/queries?kind=other").status == 400)

        // The CLI.
        let printed = try await runProgram(Binaries.path("aerodb"), ["logs", "--url", node.baseURL, "--dir", node.directory, "--kind", "refused"])
        #expect(printed.status == 0 && printed.output.contains(refusedID) && printed.output.contains("AERO_QUERY_UNBOUNDED")
                    && printed.output.contains("refused: things"), "\(printed.output)")
        let asJSON = try await runProgram(Binaries.path("aerodb"), ["logs", "--url", node.baseURL, "--dir", node.directory, "--json", "--limit", "5"])
        #expect(asJSON.status == 0 && (try? JSON.parse(asJSON.output))?["entries"]?.arrayValue?.first?["request_id"]?.stringValue == refusedID, "\(asJSON.output)")
    }
}
