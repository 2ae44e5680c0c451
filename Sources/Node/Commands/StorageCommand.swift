import ArgumentParser
import Foundation
import Kernel

/// `aerodb storage keys create|list|revoke`: S3 access keys (docs/STORAGE.md "S3 access keys").
struct StorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Operate storage: the S3 access keys of /storage/v1/s3.",
        discussion: "Examples:\n  aerodb storage keys create --url http://127.0.0.1:54321 --dir ./node1\n  aerodb storage keys list --url http://127.0.0.1:54321 --dir ./node1",
        subcommands: [Keys.self])

    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create, list or revoke S3 access keys (they act with the service role).",
            discussion: "Examples:\n  aerodb storage keys create --description backups \\\n      --url http://127.0.0.1:54321 --dir ./node1\n  aerodb storage keys revoke AKEXAMPLE \\\n      --url http://127.0.0.1:54321 --dir ./node1",
            subcommands: [Create.self, List.self, Revoke.self])
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an access key; its secret is printed this once (stored sealed, never shown again).",
            discussion: "Examples:\n  aerodb storage keys create --description backups --json \\\n      --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Option(help: "What the key is for (at most 200 bytes).") var description: String?
        @Flag(help: "Print the answer as JSON.") var json = false

        func run() async throws {
            let body: JSONValue = .object(description.map { ["description": .string($0)] } ?? [:])
            let (status, answer) = try await target.call("POST", "/admin/v1/storage/s3-keys", body: body)
            try FunctionsCommand.check(status, answer, "create")
            if json { print(JSON.encodeString(answer)); return }
            print("access key id:     \(answer["access_key_id"]?.stringValue ?? "?")")
            print("secret access key: \(answer["secret_access_key"]?.stringValue ?? "?")  (shown once)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the access keys (ids, descriptions, creation times; never secrets).",
            discussion: "Examples:\n  aerodb storage keys list --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Flag(help: "Print the answer as JSON.") var json = false

        func run() async throws {
            let (status, answer) = try await target.call("GET", "/admin/v1/storage/s3-keys")
            try FunctionsCommand.check(status, answer, "list")
            if json { print(JSON.encodeString(answer)); return }
            let keys = answer.arrayValue ?? []
            if keys.isEmpty { print("no S3 access key (aerodb storage keys create makes one)") }
            for key in keys {
                print("\(key["access_key_id"]?.stringValue ?? "?")  \(key["created_at"]?.stringValue ?? "")  \(key["description"]?.stringValue ?? "")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an access key: requests signed with it are refused (InvalidAccessKeyId).",
            discussion: "Examples:\n  aerodb storage keys revoke AKEXAMPLE \\\n      --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget
        @Argument(help: "The access key id.") var id: String

        func run() async throws {
            let (status, answer) = try await target.call("DELETE", "/admin/v1/storage/s3-keys/\(id)")
            try FunctionsCommand.check(status, answer, "revoke")
            print("revoked \(id)")
        }
    }
}
