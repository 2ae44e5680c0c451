import ArgumentParser
import Foundation
import Kernel

/// `aerodb auth keys list|rotate`: the asymmetric signing keys of access tokens
/// (docs/AUTH.md "Signing keys").
struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth",
        abstract: "Operate auth: the signing keys of access tokens.",
        discussion: "Examples:\n  aerodb auth keys list --url http://127.0.0.1:54321 --dir ./node1\n  aerodb auth keys rotate --url http://127.0.0.1:54321 --dir ./node1",
        subcommands: [Keys.self])

    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List or rotate the ES256 keys that sign access tokens (published at /auth/v1/.well-known/jwks.json).",
            discussion: "Examples:\n  aerodb auth keys list --url http://127.0.0.1:54321 --dir ./node1\n  aerodb auth keys rotate --url http://127.0.0.1:54321 --dir ./node1",
            subcommands: [List.self, Rotate.self])
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the signing keys: kid, status (current or previous) and until when a previous one verifies.",
            discussion: "Examples:\n  aerodb auth keys list --url http://127.0.0.1:54321 --dir ./node1\n  aerodb auth keys list --url http://127.0.0.1:54321 --dir ./node1 --json")
        @OptionGroup var target: AdminTarget
        @Flag(help: "Print the answer as JSON.") var json = false

        func run() async throws {
            let (status, answer) = try await target.call("GET", "/auth/v1/admin/signing-keys")
            try FunctionsCommand.check(status, answer, "list")
            if json { print(JSON.encodeString(answer)); return }
            let keys = answer["keys"]?.arrayValue ?? []
            if keys.isEmpty { print("no signing key: access tokens are HS256 (run `aerodb auth keys rotate` for ES256)") }
            for key in keys {
                let until = key["verify_until"]?.intValue.map { " (verifies until \(Date(timeIntervalSince1970: Double($0))))" } ?? ""
                print("\(key["kid"]?.stringValue ?? "?")  \(key["alg"]?.stringValue ?? "?")  \(key["status"]?.stringValue ?? "?")\(until)")
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new current ES256 key; the old one keeps verifying for one access-token lifetime plus 5 minutes.",
            discussion: "The first rotation switches access tokens from HS256 to ES256.\n\nExamples:\n  aerodb auth keys rotate --url http://127.0.0.1:54321 --dir ./node1")
        @OptionGroup var target: AdminTarget

        func run() async throws {
            let (status, answer) = try await target.call("POST", "/auth/v1/admin/signing-keys/rotate")
            try FunctionsCommand.check(status, answer, "rotate")
            let current = (answer["keys"]?.arrayValue ?? []).first { $0["status"]?.stringValue == "current" }
            print("rotated: the current signing key is \(current?["kid"]?.stringValue ?? "?") (ES256)")
        }
    }
}
