// Runs the real `aerodb` binary: init a node directory, start it on a free loopback port, talk
// HTTP to it, kill it. Every node started here is stopped by pid when the test ends.

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kernel
import LiveCluster

enum Binaries {
    /// `swift test` builds the executables next to the test bundle.
    static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["AERODB_BIN_DIR"] { return dir }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }

    static func path(_ name: String) -> String { directory + "/" + name }

    /// Runs a command to completion, off the cooperative pool; returns exit status and standard output.
    static func run(_ name: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await LiveCluster.runOffPool(path(name), arguments)
    }
}

final class TestNode: @unchecked Sendable {
    let directory: String
    let port: Int
    private(set) var process: Process?
    let serviceKey: String
    let anonKey: String

    init() async throws {
        directory = NSTemporaryDirectory() + "aerodb-node-\(UUID().uuidString)"
        port = Self.freePort()
        let (status, _) = try await Binaries.run("aerodb", ["init", "--dir", directory, "--http", "127.0.0.1:\(port)"])
        guard status == 0 else { throw AeroError(.internalError, "aerodb init failed with \(status)") }
        let keys = try JSON.parse(try await Binaries.run("aerodb", ["keys", "--dir", directory, "--json"]).output)
        serviceKey = keys["service_role"]!.stringValue!
        anonKey = keys["anon"]!.stringValue!
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.path("aerodb"))
        process.arguments = ["start", "--dir", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null") ?? FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<200 {   // up to 20 s: recovery of a large WAL in a debug build
            if let answer = try? await request("GET", "/ready", key: nil), answer.status == 200 { return }
            guard process.isRunning else { throw AeroError(.internalError, "aerodb start exited with \(process.terminationStatus)") }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw AeroError(.internalError, "node did not become ready")
    }

    /// SIGKILL: the process gets no chance to flush anything.
    func kill() {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() -> Int32 {
        guard let process else { return -1 }
        process.terminate()
        process.waitUntilExit()
        return process.terminationStatus
    }

    func request(_ method: String, _ path: String, _ body: JSONValue? = nil, key: String?) async throws -> HTTPAnswer {
        try await HTTPAnswer.fetch(method, baseURL + path, body, key: key)
    }

    func admin(_ method: String, _ path: String, _ body: JSONValue? = nil) async throws -> HTTPAnswer {
        try await request(method, "/admin/v1/" + path, body, key: serviceKey)
    }

    static func freePort() -> Int { LiveCluster.freePort() }
}

func parse(_ text: String) -> JSONValue {
    do { return try JSON.parse(text) } catch { preconditionFailure("test JSON does not parse: \(text)") }
}
