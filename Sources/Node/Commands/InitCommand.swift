import ArgumentParser
import BaaS
import Foundation
import Kernel
import Replication

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a node directory: config, data directory, JWT secret and the anon and service_role keys.",
        discussion: "Refuses a directory that exists and is not empty. Production defaults: sign-ups wait for a confirmation mail and anonymous sign-ins are off; --dev turns both on.\n\nExamples:\n  aerodb init --dir ./node1\n  aerodb init --dir ./node2 --http 127.0.0.1:54400 --node-id n2\n  aerodb init --dir ./play --dev")

    @Option(help: "The node directory to create (must not exist or be empty).") var dir: String
    @Option(help: "HTTP address HOST:PORT.") var http: String = NodeConfig.defaultHTTP
    @Option(help: "This node's id.") var nodeId: String = "n1"
    @Flag(help: "A development node: sign-ups confirmed at once, anonymous sign-ins on.") var dev = false

    func run() throws {
        _ = try HostPort.parse(http)
        var config = NodeConfig()
        config.http = http
        config.nodeID = nodeId
        if dev {
            config.authJSON = NodeConfig.developmentAuth
            config.auth = try AuthSettings.parse(NodeConfig.developmentAuth)
        }
        let secrets = NodeSecrets.generate(nowSeconds: SystemClock().nowMicros() / 1_000_000)
        let marker = AuthorityMarker(clusterID: FieldValidator.randomUUID(), epoch: 1, primary: nodeId)
        try NodeDirectory.create(dir, config: config, secrets: secrets, marker: marker)
        print("initialized node \(nodeId) in \(dir) (HTTP \(http))")
        print("anon key:         \(secrets.anonKey)")
        print("service_role key: \(secrets.serviceRoleKey)")
        if dev { print(NodeConfig.developmentNotice) }
    }
}

/// Writes a new node directory: config, secrets (mode 0600), data directory, authority marker.
enum NodeDirectory {
    static func create(_ dir: String, config: NodeConfig, secrets: NodeSecrets, marker: AuthorityMarker) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: dir), !(try fm.contentsOfDirectory(atPath: dir)).isEmpty {
            throw AeroError(.configInvalid, "\(dir) exists and is not empty; refusing to overwrite a node directory")
        }
        try fm.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        try write(config.json, to: dir + "/" + NodeConfig.fileName, mode: 0o644)
        try write(secrets.json, to: dir + "/" + NodeConfig.secretsFileName, mode: 0o600)
        try AuthorityStore(dataDirectory: config.kernelOptions(directory: dir).dataDirectory).create(marker)
    }

    private static func write(_ value: JSONValue, to path: String, mode: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(JSON.encode(value) + [0x0A]),
                                             attributes: [.posixPermissions: mode]) else {
            throw AeroError(.ioError, "cannot write \(path)")
        }
    }
}

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Print the node's anon and service_role API keys.",
        discussion: "Examples:\n  aerodb keys --dir ./node1\n  aerodb keys --dir ./node1 --json\n  SERVICE_KEY=$(aerodb keys --dir ./node1 --role service_role)")

    @Option(help: "The node directory.") var dir: String
    @Flag(help: "Print {\"anon\": ..., \"service_role\": ...}.") var json = false
    @Option(help: "Print only this key: anon or service_role (for KEY=$(aerodb keys ...)).") var role: String?

    func run() throws {
        let secrets = try NodeSecrets.load(directory: dir)
        if let role {
            switch role {
            case "anon": print(secrets.anonKey)
            case "service_role": print(secrets.serviceRoleKey)
            default: throw ValidationError("--role is anon or service_role")
            }
        } else if json {
            print(JSON.encodeString(.object(["anon": .string(secrets.anonKey), "service_role": .string(secrets.serviceRoleKey)])))
        } else {
            print("anon:         \(secrets.anonKey)")
            print("service_role: \(secrets.serviceRoleKey)")
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a stopped node's WAL and checkpoints offline. Exit 0 when sound, 1 with the AERO_ error otherwise.",
        discussion: "Decodes every record and replays the log onto the newest checkpoint, so sound means the node will start. Refuses while a node runs on the directory.\n\nExamples:\n  aerodb verify --dir ./node1")

    @Option(help: "The node directory.") var dir: String

    func run() throws {
        let options = try NodeConfig.load(directory: dir).kernelOptions(directory: dir)
        do {
            // A running node changes the log under the scan: refuse, naming it (one process per data directory).
            let lock = try DataDirectoryLock.acquire(dataDirectory: options.dataDirectory)
            defer { lock.release() }
            FileHandle.standardError.write(Data("verifying \(options.dataDirectory): every WAL record decoded, the log replayed onto the newest checkpoint\n".utf8))
            print(try Database.verify(dataDirectory: options.dataDirectory).summary)
        } catch let error as AeroError {
            print("\(error.code.rawValue): \(error.message)")
            throw ExitCode(1)
        }
    }
}
