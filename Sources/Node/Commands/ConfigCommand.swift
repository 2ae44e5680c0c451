// `aerodb config list|get|set|unset`: the cluster-wide settings (docs/OPERATIONS.md "Cluster
// settings") through the admin API of any node; a change is written on the primary, reaches
// every member with the WAL, and is audited.

import ArgumentParser
import BaaS
import Foundation
import Kernel

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Read and change the cluster-wide settings (stored in the replicated database, the same on every node).",
        discussion: "Settable: \(SettingsKeys.all.joined(separator: ", ")). Node-local settings (ports, directories, WAL engine, memory) stay in aerodb.json; for replication.commit_mode and query.* aerodb.json's value applies until one is set.\n\nExamples:\n  aerodb config list --url http://127.0.0.1:54321 --dir ./c/n1\n  aerodb config set auth.mailer_autoconfirm true --url http://127.0.0.1:54322 \\\n      --dir ./c/n1",
        subcommands: [List.self, Get.self, Set.self, Unset.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every cluster setting with its value and where it comes from (cluster, aerodb.json or default).",
            discussion: "Examples:\n  aerodb config list --url http://127.0.0.1:54321 --dir ./c/n1\n  aerodb config list --url http://127.0.0.1:54321 --dir ./c/n1 --json")
        @OptionGroup var target: AdminTarget
        @Flag(help: "Print the JSON answer.") var json = false

        func run() async throws {
            let body = try await ConfigCommand.call(target, "GET", "/admin/v1/settings", nil)
            if json { print(JSON.encodeString(body)); return }
            for row in body["settings"]?.arrayValue ?? [] {
                print("\(text(row["key"])) = \(JSON.encodeString(row["value"] ?? .null))  (\(text(row["source"])))")
            }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One cluster setting's value (as JSON).",
            discussion: "Examples:\n  aerodb config get auth.anonymous_sign_ins --url http://127.0.0.1:54323 \\\n      --dir ./c/n1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "The setting, e.g. auth.mailer_autoconfirm.") var key: String

        func run() async throws {
            let row = try await ConfigCommand.call(target, "GET", "/admin/v1/settings/\(key)", nil)
            print(JSON.encodeString(row["value"] ?? .null))
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a cluster setting on every node (validated first; audited).",
            discussion: "VALUE is JSON (true, 8, [\"a\"], \"text\"); anything that is not JSON is taken as a string.\n\nExamples:\n  aerodb config set auth.mailer_autoconfirm true --url http://127.0.0.1:54321 \\\n      --dir ./c/n1\n  aerodb config set replication.commit_mode all \\\n      --url http://127.0.0.1:54321 --dir ./c/n1\n  aerodb config set auth.site_url https://app.example.com \\\n      --url http://127.0.0.1:54321 --dir ./c/n1\n  aerodb config set auth.rate_limits \\\n      '{\"signup\":{\"limit\":10,\"window_seconds\":300}}' \\\n      --url http://127.0.0.1:54321 --dir ./c/n1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "The setting, e.g. auth.mailer_autoconfirm.") var key: String
        @Argument(help: "The value, as JSON (or a plain string).") var value: String

        func run() async throws {
            let parsed = (try? JSON.parse(value)) ?? .string(value)
            let answer = try await ConfigCommand.call(target, "PUT", "/admin/v1/settings/\(key)", .object(["value": parsed]))
            print("\(key) = \(JSON.encodeString(parsed))  (cluster, LSN \(text(answer["lsn"])))")
        }
    }

    struct Unset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a cluster setting: aerodb.json's value (or the default) applies again.",
            discussion: "Examples:\n  aerodb config unset auth.mailer_autoconfirm --url http://127.0.0.1:54321 \\\n      --dir ./c/n1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "The setting, e.g. auth.mailer_autoconfirm.") var key: String

        func run() async throws {
            let answer = try await ConfigCommand.call(target, "DELETE", "/admin/v1/settings/\(key)", nil)
            print("\(key) removed (LSN \(text(answer["lsn"])))")
        }
    }

    static func call(_ target: AdminTarget, _ method: String, _ path: String, _ body: JSONValue?) async throws -> JSONValue {
        let (status, answer) = try await target.call(method, path, body: body)
        guard (200..<300).contains(status) else {
            let code = answer["code"]?.stringValue ?? "HTTP \(status)"
            throw CommandFailure("\(code): \(answer["message"]?.stringValue ?? JSON.encodeString(answer))")
        }
        return answer
    }
}
