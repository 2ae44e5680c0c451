// The `wal_engine` setting through the real binary: which engine a node reports, that a node
// SIGKILLed under one engine restarts under another with every acknowledged write (the files are
// the same whatever wrote them, D1), and that an unknown engine is refused with the names.

import Foundation
import Testing
import Kernel

private func setWALEngine(_ node: TestNode, _ engine: String) throws {
    let path = node.directory + "/aerodb.json"
    guard case .object(var config) = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path)))) else {
        throw AeroError(.internalError, "aerodb.json is not an object")
    }
    config["wal_engine"] = .string(engine)
    try Data(JSON.encode(.object(config))).write(to: URL(fileURLWithPath: path))
}

private func reportedEngine(_ node: TestNode) async throws -> String? {
    try await node.admin("GET", "status").body?["wal_engine"]?.stringValue
}

@Suite struct WALEngineNodeTests {
    @Test func everyEngineReadsWhatAnotherAcknowledgedAfterASigkill() async throws {
        let node = try await TestNode()
        try await node.start()
        let schema = parse(#"{"name":"items","fields":{"id":{"type":"text"}},"indexes":[]}"#)
        #expect(try await node.admin("POST", "collections", schema).status == 201)
        let automatic = try await reportedEngine(node)
        #expect(automatic == "io_uring" || automatic == "pwrite", "\(String(describing: automatic))")
        // Where io_uring cannot be set up only pwrite is left to check.
        let engines = automatic == "io_uring" ? ["uring-buffered", "pwrite", "uring"] : ["pwrite"]
        let names = ["uring": "io_uring", "uring-buffered": "io_uring-buffered", "pwrite": "pwrite"]
        var acknowledged: [String] = []
        for (round, engine) in ([("automatic", automatic ?? "")] + engines.map { ($0, names[$0]!) }).enumerated() {
            if round > 0 {
                try setWALEngine(node, engine.0)
                try await node.start()
                #expect(try await reportedEngine(node) == engine.1)
            }
            for row in acknowledged {  // every write acknowledged under the engines before
                let answer = try await node.request("GET", "/rest/v1/items?select=*&id=eq.\(row)", key: node.serviceKey)
                #expect(answer.body?.arrayValue?.count == 1, "\(row) after a restart under \(engine.0)")
            }
            for i in 0..<20 {
                let id = "\(engine.0)-\(i)"
                let answer = try await node.admin("POST", "transactions", parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(id)"}}]}"#))
                #expect(answer.status == 200)
                if answer.status == 200 { acknowledged.append(id) }
            }
            node.kill()
        }
        #expect(acknowledged.count == 20 * (engines.count + 1))
    }

    @Test func anUnknownEngineIsRefusedNamingTheChoices() async throws {
        let node = try await TestNode()
        try setWALEngine(node, "direct")
        let (status, output) = try await runProgram(Binaries.path("aerodb"), ["start", "--dir", node.directory])
        #expect(status != 0)
        #expect(output.contains("wal_engine must be one of automatic, uring, pwrite, uring-buffered"), "\(output)")
    }
}
