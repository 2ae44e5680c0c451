// A newcomer's first hour (issue 13), against the real `aerodb` binary: unknown routes answer
// JSON in the shape of their API, `/` is an index of the node, `--version` names the build,
// every `--help` wraps cleanly and shows an example.

import Foundation
@testable import Kernel
import LiveCluster
import Testing

@Suite("Newcomer", .serialized)
struct NewcomerTests {
    @Test("Unknown routes answer in their API's shape; a wrong method is 405 on routes registered late (storage, cluster, realtime)")
    func unknownRoutesInEveryAPIShape() async throws {
        let node = try await TestNode()
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
        let node = try await TestNode()
        try await node.start()
        defer { node.kill() }
        let root = try await node.request("GET", "/", key: nil)
        #expect(root.status == 200 && root.body?["name"] == .string("AeroDB"))
        #expect(root.body?["role"] == .string("primary") && root.body?["node_id"] == .string("n1"))
        let version = try await Binaries.run("aerodb", ["--version"])
        #expect(version.status == 0)
        #expect(version.output.contains(root.body?["version"]?.stringValue ?? "missing"))
        for api in ["rest", "auth", "storage", "functions", "realtime", "admin"] {
            #expect(root.body?["apis"]?[api]?.stringValue?.hasPrefix("/\(api)/v1") == true, "api \(api)")
        }
        let post = try await node.request("POST", "/", .object([:]), key: nil)
        #expect(post.status == 405 && post.body?["code"] == .string("AERO_METHOD_NOT_ALLOWED"))
    }

    /// Commands added by issues in flight (operations: backup, restore, logs)
    /// whose help has no example or whose flags are not in the command reference yet: exempt
    /// from those two checks only (named in issue 13's report), never from the wrapping checks.
    static let examplesPending: Set<String> = ["backup", "backup take", "backup verify", "restore", "logs"]

    @Test("Help texts: no line broken mid-word or mid-command, no hard-wrapped sentence, every subcommand has an example, every flag is in docs/OPERATIONS.md")
    func helpTexts() async throws {
        let operations = try String(contentsOfFile: Self.repositoryRoot + "/docs/OPERATIONS.md", encoding: .utf8)
        var checked = 0
        var queue: [[String]] = [[]]
        while let path = queue.popLast() {
            let wide = try await Self.help(path, columns: 1000)
            let narrow = try await Self.help(path, columns: 80)
            let name = path.joined(separator: " ")
            let subcommands = Self.subcommands(wide)
            queue += subcommands.map { path + [$0] }
            checked += 1
            // Mid-word: every word of the 80-column text is a word of the unwrapped text.
            let words = Set(wide.split(whereSeparator: \.isWhitespace))
            for word in narrow.split(whereSeparator: \.isWhitespace) where !words.contains(word) {
                Issue.record("aerodb help \(name): \"\(word)\" is a word broken by wrapping")
            }
            // Mid-command: each example command (with its `\\` continuations) stays whole at 80 columns.
            let narrowLines = Set(narrow.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
            for line in wide.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) })
            where line.hasPrefix("aerodb ") || line.hasPrefix("for ") {
                #expect(narrowLines.contains(line), "aerodb help \(name): the command \"\(line)\" is broken across lines at 80 columns")
            }
            // Hard-wrapped prose: in the unwrapped text a sentence never continues on the next line.
            let prose = wide.components(separatedBy: "USAGE:")[0].split(separator: "\n", omittingEmptySubsequences: false)
            for (line, next) in zip(prose, prose.dropFirst()) {
                let text = line.trimmingCharacters(in: .whitespaces), following = next.trimmingCharacters(in: .whitespaces)
                guard !text.isEmpty, !text.hasPrefix("aerodb "), !text.hasSuffix("\\"), let first = following.first else { continue }
                #expect(!first.isLowercase || text.hasSuffix(":") || following.hasPrefix("aerodb ") || following.hasPrefix("for "),
                        "aerodb help \(name): a sentence is hard-wrapped after \"\(text)\"")
            }
            guard !path.isEmpty else { continue }
            // An example of this very command.
            if !Self.examplesPending.contains(name) {
                #expect(wide.contains("  aerodb \(name) ") || wide.contains("  aerodb \(name)\n"), "aerodb help \(name) shows no example of itself")
            }
            // Every flag in OPERATIONS.md's command reference row of this command.
            guard subcommands.isEmpty, !Self.examplesPending.contains(name) else { continue }
            let row = operations.split(separator: "\n").first { line in
                line.hasPrefix("| `aerodb \(name)`") || line.hasPrefix("| `aerodb \(name)` ")
                    || (path.count == 2 && line.hasPrefix("| `aerodb \(path[0]) ") && line.contains("`\(path[1])`"))
                    || (path.count == 2 && line.hasPrefix("| `aerodb \(path[0])` (`\(path[1])`)"))
            }
            guard let row else {
                Issue.record("docs/OPERATIONS.md has no command reference row for aerodb \(name)")
                continue
            }
            for flag in Self.flags(wide) where !row.contains("`\(flag)") {
                Issue.record("docs/OPERATIONS.md: the row of aerodb \(name) does not name \(flag)")
            }
        }
        #expect(checked > 20)
    }

    @Test("Recovery finds the last non-zero byte of a segment at every block boundary (the scan that made opening slow)")
    func lastNonZeroByteAtBlockBoundaries() {
        let size = 4 * WALFormat.blockBytes + 100
        var bytes = [UInt8](repeating: 0, count: size)
        #expect(bytes.withUnsafeBytes { WALScan.lastNonZero($0, from: 0) } == nil)
        for position in [0, 1, 4095, 4096, 4097, 8191, 8192, 3 * 4096 - 1, size - 101, size - 1] {
            bytes = [UInt8](repeating: 0, count: size)
            bytes[position] = 0x5A
            for from in [0, position, max(0, position - 1)] {
                #expect(bytes.withUnsafeBytes { WALScan.lastNonZero($0, from: from) } == position, "byte at \(position), from \(from)")
            }
            if position + 1 < size {
                #expect(bytes.withUnsafeBytes { WALScan.lastNonZero($0, from: position + 1) } == nil)
            }
        }
        bytes = [UInt8](repeating: 0, count: size)
        bytes[10] = 1
        bytes[5000] = 2
        #expect(bytes.withUnsafeBytes { WALScan.lastNonZero($0, from: 0) } == 5000)
        #expect(bytes.withUnsafeBytes { WALScan.isZero($0, 4096, 4096) } == false)
        #expect(bytes.withUnsafeBytes { WALScan.isZero($0, 8192, 4096) } == true)
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// `aerodb help PATH` with COLUMNS set, run on a thread of its own (never blocking the pool).
    static func help(_ path: [String], columns: Int) async throws -> String {
        try await LiveCluster.onOwnThread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Binaries.path("aerodb"))
            process.arguments = ["help"] + path
            process.environment = ProcessInfo.processInfo.environment.merging(["COLUMNS": String(columns)]) { _, new in new }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
    }


    static func subcommands(_ help: String) -> [String] {
        guard let range = help.range(of: "SUBCOMMANDS:\n") else { return [] }
        return help[range.upperBound...].split(separator: "\n").compactMap { line in
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let word = line.split(separator: " ").first,
                  word.allSatisfy({ $0.isLowercase || $0 == "-" }) else { return nil }
            return String(word)
        }
    }

    static func flags(_ help: String) -> [String] {
        guard let range = help.range(of: "OPTIONS:\n") else { return [] }
        return help[range.upperBound...].split(separator: "\n").compactMap { line in
            let parts = line.trimmingCharacters(in: .whitespaces).split(separator: " ")
            guard line.hasPrefix("  "), let flag = parts.first(where: { $0.hasPrefix("--") }).map({ String($0.trimmingCharacters(in: CharacterSet(charactersIn: ","))) }),
                  !["--help", "--version"].contains(flag) else { return nil }
            return flag
        }
    }
}
