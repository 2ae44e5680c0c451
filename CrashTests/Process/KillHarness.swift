// `aerodb-crashtest kill`: a real node under concurrent write load is SIGKILLed at random
// moments and restarted; after each restart every write it acknowledged, in every round so far,
// must be there with its exact content (D1). Loopback only, bounded in time, and the node is
// killed by pid when the run ends.

import Foundation
import Kernel
import LiveCluster

struct KillHarness {
    let kills: Int
    let seconds: Double
    let writers: Int
    var random: SeededRandom
    /// Storage uploaders beside the writers (UploadLoad: plain and TUS uploads, ST1/ST4).
    var uploaders = 0

    static let schema = #"{"name":"log","fields":{"id":{"type":"text"},"writer":{"type":"int"},"seq":{"type":"int"},"body":{"type":"text"}}}"#
    /// How long a restarted node may take to answer /ready before the run counts a violation.
    static let readyTimeoutSeconds = 30.0

    struct Outcome {
        var kills = 0
        var acknowledged = 0
        var uploadsAcknowledged = 0
        var violations: [String] = []
    }

    mutating func run() async throws -> Outcome {
        let node = try KilledNode()
        defer { node.kill() }
        try await node.start()
        guard try await node.post("collections", try JSON.parse(Self.schema)).status == 201 else {
            throw AeroError(.internalError, "could not create the test collection")
        }
        var acknowledged: [String: Document] = [:]
        var outcome = Outcome()
        let uploads = UploadLoad(node: node, uploaders: uploaders)
        if uploaders > 0 { try await uploads.prepare() }
        let roundSeconds = seconds / Double(max(kills, 1))
        for round in 0..<kills {
            let killAfter = roundSeconds * (0.3 + Double(random.next(below: 70)) / 100)
            let uploading = Task { await uploads.round(round) }
            let acked = try await load(node, round: round, killAfterSeconds: killAfter)
            await uploading.value
            acknowledged.merge(acked) { a, _ in a }
            outcome.kills += 1
            do {
                try await node.start()
            } catch {
                outcome.violations.append("round \(round): the node did not restart after SIGKILL: \(error)")
                break
            }
            outcome.violations += try await missing(acknowledged, on: node).map { "round \(round): \($0)" }
            if uploaders > 0 {
                let sample = UploadLoad.Sample(round: round, every: Self.uploadRecheckRounds)
                outcome.violations += await uploads.verify(sample: sample).map { "round \(round): \($0)" }
            }
            Progress.line("kill \(round + 1)/\(kills): restarted, \(acknowledged.count) acknowledged writes checked"
                          + (uploaders > 0 ? ", \(uploads.acknowledgedCount) uploads" : "") + ", \(outcome.violations.count) violations")
        }
        // Every acknowledged object's bytes once more, unsampled, after the last restart.
        if uploaders > 0, outcome.kills == kills {
            outcome.violations += await uploads.verify().map { "after the last kill: \($0)" }
        }
        outcome.acknowledged = acknowledged.count
        outcome.uploadsAcknowledged = uploads.acknowledgedCount
        return outcome
    }

    /// Writers insert until the node dies; returns what the node acknowledged.
    private func load(_ node: KilledNode, round: Int, killAfterSeconds: Double) async throws -> [String: Document] {
        try await withThrowingTaskGroup(of: [String: Document].self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var mine: [String: Document] = [:]
                    var seq = 0
                    while true {
                        let id = "r\(round)-w\(writer)-\(seq)"
                        let doc: Document = ["id": .string(id), "writer": .int(Int64(writer)), "seq": .int(Int64(seq)),
                                             "body": .string("round \(round) writer \(writer) write \(seq)")]
                        let tx: JSONValue = .object(["ops": .array([.object(["op": .string("insert"), "collection": .string("log"),
                                                                              "doc": .object(doc)])])])
                        guard let answer = try? await node.post("transactions", tx), answer.status == 200 else { return mine }
                        mine[id] = doc
                        seq += 1
                    }
                }
            }
            try await Task.sleep(for: .seconds(killAfterSeconds))
            node.kill()
            return try await group.reduce(into: [String: Document]()) { $0.merge($1) { a, _ in a } }
        }
    }

    /// Acknowledged writes that are absent or different after the restart.
    private func missing(_ acknowledged: [String: Document], on node: KilledNode) async throws -> [String] {
        var problems: [String] = []
        let ids = acknowledged.keys.sorted()
        for start in stride(from: 0, to: ids.count, by: Self.idsPerQuery) {
            let chunk = ids[start..<min(start + Self.idsPerQuery, ids.count)]
            let query: JSONValue = .object(["collection": .string("log"), "limit": .int(Int64(Self.idsPerQuery)),
                                            "filter": .object(["id": .object(["$in": .array(chunk.map { .string($0) })])])])
            let answer = try await node.post("query", query)
            var found: [String: Document] = [:]
            for row in answer.body?["rows"]?.arrayValue ?? [] {
                if case .object(let doc) = row, let id = doc["id"]?.stringValue { found[id] = doc }
            }
            for id in chunk where found[id] != acknowledged[id] {
                problems.append(found[id] == nil ? "acknowledged write \(id) lost" : "acknowledged write \(id) changed")
            }
        }
        return problems
    }

    /// Each round re-downloads a rotating 1/N of the objects checked before (UploadLoad.Sample):
    /// every object at least every N rounds, and all of them after the last kill.
    static let uploadRecheckRounds = 10

    /// `$in` lists are limited to 1,000 values (KernelLimits.inListMax).
    static let idsPerQuery = 1_000
}

/// One real `aerodb` process in a temporary node directory on a free loopback port.
final class KilledNode: @unchecked Sendable {
    let directory = NSTemporaryDirectory() + "aerodb-kill-\(UUID().uuidString)"
    let port: Int
    let serviceKey: String
    private var process: Process?

    init() throws {
        port = LiveCluster.freePort()
        _ = try Self.run(["init", "--dir", directory, "--http", "127.0.0.1:\(port)"])
        let keys = try JSON.parse(try Self.run(["keys", "--dir", directory, "--json"]))
        guard let key = keys["service_role"]?.stringValue else { throw AeroError(.internalError, "no service key") }
        serviceKey = key
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path + "/aerodb"
    }

    static func run(_ arguments: [String]) throws -> String {
        let (status, output) = try LiveCluster.run(binary, arguments)
        guard status == 0 else {
            throw AeroError(.internalError, "aerodb \(arguments.first ?? "") exited with \(status)")
        }
        return output
    }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["start", "--dir", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(KillHarness.readyTimeoutSeconds)
        while Date() < deadline {
            if let answer = try? await request("GET", "/ready", nil), answer.status == 200 { return }
            guard process.isRunning else { throw AeroError(.internalError, "aerodb start exited with \(process.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw AeroError(.internalError, "the node did not become ready in \(KillHarness.readyTimeoutSeconds) s")
    }

    func kill() {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func post(_ path: String, _ body: JSONValue) async throws -> (status: Int, body: JSONValue?) {
        try await request("POST", "/admin/v1/" + path, body)
    }

    private func request(_ method: String, _ path: String, _ body: JSONValue?) async throws -> (status: Int, body: JSONValue?) {
        let answer = try await HTTPAnswer.fetch(method, "http://127.0.0.1:\(port)" + path, body, key: serviceKey)
        return (answer.status, answer.body)
    }
}
