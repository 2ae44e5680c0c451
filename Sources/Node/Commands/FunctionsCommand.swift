// `aerodb functions deploy|list|invoke|logs|rollback|delete`: the /admin/v1/functions API and
// /functions/v1 from the command line (docs/FUNCTIONS.md "CLI"). Every subcommand takes the
// node's --url and the service key (--key, $AERODB_SERVICE_KEY, or --dir NODE_DIR).

import ArgumentParser
import AsyncHTTPClient
import Foundation
import Kernel
import NIOCore

struct FunctionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "functions", abstract: "Deploy, list, invoke and manage WebAssembly functions.",
        discussion: "Each command talks to the admin API of the node at --url with the service_role key: --key, else $AERODB_SERVICE_KEY, else the secrets.json of --dir.\n\nExamples:\n  aerodb functions deploy hello --file hello.wasm --url http://127.0.0.1:54321\n  aerodb functions list --url http://127.0.0.1:54321 --dir ./node1",
        subcommands: [Deploy.self, List.self, Invoke.self, Logs.self, Rollback.self, Delete.self])

    static func check(_ status: Int, _ body: JSONValue, _ what: String) throws {
        guard (200..<300).contains(status) else {
            throw CommandFailure("\(what) failed (\(status)) \(body["code"]?.stringValue ?? ""): \(body["message"]?.stringValue ?? JSON.encodeString(body))")
        }
    }

    struct Deploy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deploy a .wasm module as the next version of NAME and make it active.",
            discussion: "Examples:\n  aerodb functions deploy hello --file hello.wasm --url http://127.0.0.1:54321\n  aerodb functions deploy add --file add.wasm --rpc 'a:int,b:int' \\\n      --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "Function name: [a-z][a-z0-9_-]*, at most 63 bytes.") var name: String
        @Option(help: "The WebAssembly module (.wasm).") var file: String
        @Option(help: "Make it an rpc (/rest/v1/rpc/NAME) with these parameters, e.g. 'a:int,b:int' (types: int, float, text, bool, json).")
        var rpc: String?
        @Option(parsing: .singleValue, help: "A limit override NAME=VALUE (fuel, memory_bytes, wall_ms, request_bytes, response_bytes, log_bytes, db_calls); repeatable.")
        var limit: [String] = []
        @Option(parsing: .singleValue, help: "A config entry KEY=VALUE the function reads with config_get; repeatable.") var config: [String] = []
        @Option(parsing: .singleValue, help: "A secret KEY=VALUE (config_get; never listed back); repeatable.") var secret: [String] = []
        @Flag(help: "Let requests without a valid JWT in (as anon), like Supabase's --no-verify-jwt.") var noVerifyJwt = false
        @Option(help: "A 5-field cron schedule in UTC, e.g. '*/5 * * * *': the primary invokes the function once per matching minute.")
        var schedule: String?
        @Option(help: "A database trigger COLLECTION[:EVENTS], e.g. 'notes:insert,update' (events: insert, update, delete; default all): the primary invokes the function once per committed change.")
        var trigger: String?

        func run() async throws {
            let bytes: Data
            do { bytes = try Data(contentsOf: URL(fileURLWithPath: file)) } catch { throw CommandFailure("cannot read \(file): \(error)") }
            var body: [String: JSONValue] = ["name": .string(name), "module": .string(bytes.base64EncodedString()),
                                             "verify_jwt": .bool(!noVerifyJwt)]
            if let rpc { body["rpc"] = .string(rpc) }
            if let schedule { body["schedule"] = .string(schedule) }
            if let trigger {
                let parts = trigger.split(separator: ":", maxSplits: 1).map(String.init)
                var spec: [String: JSONValue] = ["collection": .string(parts.first ?? "")]
                if parts.count == 2 { spec["events"] = .array(parts[1].split(separator: ",").map { .string(String($0)) }) }
                body["trigger"] = .object(spec)
            }
            var limits: [String: JSONValue] = [:]
            for (key, value) in try pairs(limit, "--limit") {
                guard let n = Int64(value) else { throw ValidationError("--limit \(key)=\(value): the value must be an integer") }
                limits[key] = .int(n)
            }
            if !limits.isEmpty { body["limits"] = .object(limits) }
            body["config"] = .object(try pairs(config, "--config").mapValues(JSONValue.string))
            body["secrets"] = .object(try pairs(secret, "--secret").mapValues(JSONValue.string))
            let (status, answer) = try await target.call("POST", "/admin/v1/functions", body: .object(body))
            try FunctionsCommand.check(status, answer, "deploy")
            print("deployed \(name) version \(answer["version"].map(JSON.encodeString) ?? "?") (\(answer["bytes"].map(JSON.encodeString) ?? "?") bytes, sha256 \(answer["sha256"]?.stringValue ?? "?"))")
        }

        private func pairs(_ items: [String], _ option: String) throws -> [String: String] {
            var out: [String: String] = [:]
            for item in items {
                guard let eq = item.firstIndex(of: "=") else { throw ValidationError("\(option) \(item): write KEY=VALUE") }
                out[String(item[..<eq])] = String(item[item.index(after: eq)...])
            }
            return out
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List deployed functions with their active version.",
            discussion: "Examples:\n  aerodb functions list --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Flag(help: "Print the JSON answer.") var json = false

        func run() async throws {
            let (status, body) = try await target.call("GET", "/admin/v1/functions")
            try FunctionsCommand.check(status, body, "list")
            if json { print(JSON.encodeString(body)); return }
            for f in body["functions"]?.arrayValue ?? [] {
                let rpc = f["rpc"]?.arrayValue.map { "rpc(" + $0.map { "\($0["name"]?.stringValue ?? ""):\($0["type"]?.stringValue ?? "")" }.joined(separator: ",") + ")" } ?? "http"
                print("\(f["name"]?.stringValue ?? "?")  v\(f["version"].map(JSON.encodeString) ?? "?")  \(rpc)  \(f["bytes"].map(JSON.encodeString) ?? "?") bytes  verify_jwt=\(f["verify_jwt"].map(JSON.encodeString) ?? "?")")
            }
        }
    }

    struct Invoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invoke NAME at /functions/v1/NAME and print the answer body.",
            discussion: "Examples:\n  aerodb functions invoke hello --data '{\"name\":\"Ada\"}' \\\n      --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "Function name.") var name: String
        @Option(help: "The request body (text).") var data: String?
        @Option(help: "HTTP method.") var method = "POST"
        @Option(help: "Content-Type of the body.") var contentType = "application/json"

        func run() async throws {
            let base = target.url.hasSuffix("/") ? String(target.url.dropLast()) : target.url
            var request = HTTPClientRequest(url: base + "/functions/v1/" + name)
            request.method = .init(rawValue: method.uppercased())
            let key = try target.serviceKey()
            request.headers.add(name: "apikey", value: key)
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
            if let data {
                request.headers.add(name: "Content-Type", value: contentType)
                request.body = .bytes(ByteBuffer(string: data))
            }
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
            let bytes = try await response.body.collect(upTo: 64 << 20)
            print(String(buffer: bytes))
            guard (200..<300).contains(Int(response.status.code)) else {
                throw CommandFailure("invoke answered \(response.status.code)")
            }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recent log lines of NAME on the node at --url (logs are kept per node, in memory).",
            discussion: "Examples:\n  aerodb functions logs hello --limit 20 --url http://127.0.0.1:54321")
        @OptionGroup var target: AdminTarget
        @Argument(help: "Function name.") var name: String
        @Option(help: "Lines to show (newest last).") var limit = 50

        func run() async throws {
            let (status, body) = try await target.call("GET", "/admin/v1/functions/\(name)/logs?limit=\(limit)")
            try FunctionsCommand.check(status, body, "logs")
            for line in body["logs"]?.arrayValue ?? [] {
                print("\(line["at"]?.stringValue ?? "")  v\(line["version"].map(JSON.encodeString) ?? "?")  \(line["level"]?.stringValue ?? "")  \(line["message"]?.stringValue ?? "")")
            }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an older version of NAME active (default: the one before the active one).",
            discussion: "Examples:\n  aerodb functions rollback hello --url http://127.0.0.1:54321 --dir ./node1\n  aerodb functions rollback hello --version 2 --url http://127.0.0.1:54321")
        @OptionGroup var target: AdminTarget
        @Argument(help: "Function name.") var name: String
        @Option(help: "The version to make active.") var version: Int?

        func run() async throws {
            let body: JSONValue = version.map { .object(["version": .int(Int64($0))]) } ?? .object([:])
            let (status, answer) = try await target.call("POST", "/admin/v1/functions/\(name)/rollback", body: body)
            try FunctionsCommand.check(status, answer, "rollback")
            print("\(name) is now at version \(answer["version"].map(JSON.encodeString) ?? "?")")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete NAME with all its versions.",
            discussion: "Examples:\n  aerodb functions delete hello --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "Function name.") var name: String

        func run() async throws {
            let (status, answer) = try await target.call("DELETE", "/admin/v1/functions/\(name)")
            try FunctionsCommand.check(status, answer, "delete")
            print("deleted \(name)")
        }
    }
}
