// `aerodb migrate new|up|down|status`: migration files of schema changes, applied in order
// through a node's admin API, checksummed, refused if an applied file changed.
//
// File `<dir>/<version>_<name>.json`, version = UTC `YYYYMMDDHHMMSS`:
//   {"up":[<step>...],"down":[<step>...]}   (steps: see Sources/BaaS/Admin/Migrations.swift)
// The checksum is XXH64 of the file's bytes.

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kernel

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Create and apply migration files of schema changes.",
        discussion: "Examples:\n  aerodb migrate new --dir ./migrations create_items\n  aerodb migrate up --url http://127.0.0.1:54321 --dir ./migrations",
        subcommands: [New.self, Up.self, Down.self, Status.self])

    struct Connection: ParsableArguments {
        @Option(help: "The node's URL, e.g. http://127.0.0.1:54321.") var url: String
        @Option(help: "The migrations directory.") var dir: String
        @Option(help: "The service_role key (default: $AERODB_SERVICE_KEY).") var key: String?

        func serviceKey() throws -> String {
            guard let k = key ?? ProcessInfo.processInfo.environment["AERODB_SERVICE_KEY"], !k.isEmpty else {
                throw ValidationError("pass --key or set AERODB_SERVICE_KEY (see `aerodb keys`)")
            }
            return k
        }
    }

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an empty migration file.",
            discussion: "Writes DIR/<YYYYMMDDHHMMSS>_<name>.json with empty up and down steps.\n\nExamples:\n  aerodb migrate new --dir ./migrations create_items")
        @Option(help: "The migrations directory.") var dir: String
        @Argument(help: "A short name: letters, digits and _.") var name: String

        func run() throws {
            try CollectionSchema.validateName(name, what: "migration name")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let version = Timestamp.format(SystemClock().nowMicros()).filter(\.isNumber).prefix(14)
            let path = "\(dir)/\(version)_\(name).json"
            guard !FileManager.default.fileExists(atPath: path) else { throw ValidationError("\(path) exists") }
            guard FileManager.default.createFile(atPath: path, contents: Data("{\"up\":[],\"down\":[]}\n".utf8)) else {
                throw AeroError(.ioError, "cannot write \(path)")
            }
            print(path)
        }
    }

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply every pending migration, in order.",
            discussion: "Examples:\n  aerodb migrate up --url http://127.0.0.1:54321 --dir ./migrations")
        @OptionGroup var connection: Connection

        func run() async throws {
            let client = try MigrationClient(connection)
            let applied = try await client.applied()
            for file in try MigrationFile.all(in: connection.dir) {
                if let checksum = applied[file.version] {
                    guard checksum == file.checksum else {
                        print("\(file.version)_\(file.name): applied with checksum \(checksum) but the file has changed (\(file.checksum)); refusing")
                        throw ExitCode(1)
                    }
                    continue
                }
                try await client.send(file, direction: "up")
                print("applied \(file.version)_\(file.name)")
            }
        }
    }

    struct Down: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revert the last applied migration with its down steps.",
            discussion: "Examples:\n  aerodb migrate down --url http://127.0.0.1:54321 --dir ./migrations")
        @OptionGroup var connection: Connection

        func run() async throws {
            let client = try MigrationClient(connection)
            let applied = try await client.applied()
            guard let last = applied.keys.max() else { print("nothing to revert"); return }
            guard let file = try MigrationFile.all(in: connection.dir).first(where: { $0.version == last }) else {
                print("migration \(last) is applied but its file is missing from \(connection.dir)")
                throw ExitCode(1)
            }
            guard file.checksum == applied[last] else {
                print("\(file.version)_\(file.name) has changed since it was applied; refusing")
                throw ExitCode(1)
            }
            try await client.send(file, direction: "down")
            print("reverted \(file.version)_\(file.name)")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each migration file as applied, pending or changed.",
            discussion: "Examples:\n  aerodb migrate status --url http://127.0.0.1:54321 --dir ./migrations")
        @OptionGroup var connection: Connection

        func run() async throws {
            let applied = try await MigrationClient(connection).applied()
            for file in try MigrationFile.all(in: connection.dir) {
                let state = applied[file.version].map { $0 == file.checksum ? "applied" : "CHANGED since applied" } ?? "pending"
                print("\(file.version)_\(file.name)  \(state)")
            }
        }
    }
}

struct MigrationFile {
    let version: String
    let name: String
    let checksum: String
    let up: JSONValue
    let down: JSONValue

    static func all(in dir: String) throws -> [MigrationFile] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".json") }.sorted().map { file in
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file)))
            let stem = file.dropLast(5)
            guard let underscore = stem.firstIndex(of: "_"), stem[..<underscore].allSatisfy(\.isNumber) else {
                throw ValidationError("\(file): migration files are named <version>_<name>.json")
            }
            let json = try JSON.parse(bytes)
            guard let up = json["up"], let down = json["down"] else { throw ValidationError("\(file): needs \"up\" and \"down\" lists") }
            return MigrationFile(version: String(stem[..<underscore]), name: String(stem[stem.index(after: underscore)...]),
                                 checksum: String(XXH64.hash(bytes), radix: 16), up: up, down: down)
        }
    }
}

struct MigrationClient {
    let base: String
    let key: String

    init(_ connection: MigrateCommand.Connection) throws {
        base = connection.url.hasSuffix("/") ? String(connection.url.dropLast()) : connection.url
        key = try connection.serviceKey()
    }

    /// version -> checksum of every applied migration.
    func applied() async throws -> [String: String] {
        let answer = try await call("GET", nil)
        var out: [String: String] = [:]
        for row in answer["migrations"]?.arrayValue ?? [] {
            if case .string(let v)? = row["version"], case .string(let c)? = row["checksum"] { out[v] = c }
        }
        return out
    }

    func send(_ file: MigrationFile, direction: String) async throws {
        _ = try await call("POST", .object(["version": .string(file.version), "name": .string(file.name),
                                            "checksum": .string(file.checksum), "direction": .string(direction),
                                            "steps": direction == "up" ? file.up : file.down]))
    }

    private func call(_ method: String, _ body: JSONValue?) async throws -> JSONValue {
        guard let url = URL(string: base + "/admin/v1/migrations") else { throw ValidationError("bad --url \(base)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        if let body { request.httpBody = Data(JSON.encode(body)) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let json = (try? JSON.parse(Array(data))) ?? .null
        guard let status = (response as? HTTPURLResponse)?.statusCode, (200..<300).contains(status) else {
            print("\(json["code"]?.stringValue ?? "error"): \(json["message"]?.stringValue ?? String(decoding: data, as: UTF8.self))")
            throw ExitCode(1)
        }
        return json
    }
}
