// Operator commands of a cluster: `cluster init`, `status`, `promote`, `switchover`, `rejoin`.
// The online ones talk to a node's admin API with the service key, taken from `--key`, else
// `$AERODB_SERVICE_KEY`, else the `secrets.json` of `--dir`.

import ArgumentParser
import AsyncHTTPClient
import BaaS
import Foundation
import Kernel
import Logging
import NIOCore
import Replication

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Create the node directories of a cluster.",
        discussion: "Examples:\n  aerodb cluster init --dir ./c --nodes 3",
        subcommands: [ClusterInitCommand.self, ClusterCertCommand.self])
}

struct ClusterInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write DIR/n1 ... DIR/nN: one cluster id, JWT secret and key pair for all, n1 primary at epoch 1.",
        discussion: "Ports are consecutive: node i gets HTTP port http-port+i-1 and replication port repl-port+i-1. Start each member with `aerodb start --dir DIR/n<i>`. --tls makes a cluster CA in DIR/cluster-ca (its key stays there: keep it offline) and a certificate per member in DIR/n<i>/tls: mutual TLS on the replication port, HTTPS on the HTTP port and between members; without it the cluster speaks plain TCP and HTTP (local development, private networks). Production defaults: sign-ups wait for a confirmation mail and anonymous sign-ins are off; --dev turns both on (scripts/dev uses it).\n\nExamples:\n  aerodb cluster init --dir ./c --nodes 3\n  aerodb cluster init --dir ./c --tls --san db.internal\n  aerodb cluster init --dir /tmp/c --host 10.0.0.1 --commit-mode all\n  aerodb cluster init --dir ./dev --dev --http-port 56321 --repl-port 57321")

    @Option(help: "The directory to hold the node directories.") var dir: String
    @Option(help: "Number of members (2 to 9).") var nodes: Int = 3
    @Option(help: "Host every member listens on.") var host: String = "127.0.0.1"
    @Option(help: "HTTP port of n1.") var httpPort: Int = 54321
    @Option(help: "Replication port of n1.") var replPort: Int = 55321
    @Option(help: "Commit mode: async, sync (at least one replica flushed) or all.") var commitMode: String = "sync"
    @Flag(help: "A development cluster: sign-ups confirmed at once, anonymous sign-ins on (scripts/dev uses it).") var dev = false
    @Flag(help: "TLS: a cluster CA (DIR/cluster-ca) and a certificate per member (mutual TLS between members, HTTPS).") var tls = false
    @Option(help: "With --tls: one more name (DNS or IP) in every member certificate; repeatable.") var san: [String] = []

    func validate() throws {
        guard (2...9).contains(nodes) else { throw ValidationError("--nodes must be between 2 and 9") }
        guard CommitMode(rawValue: commitMode) != nil else { throw ValidationError("--commit-mode must be async, sync or all") }
        for port in [httpPort, replPort] where !(1...(65535 - nodes)).contains(port) {
            throw ValidationError("ports must leave room for \(nodes) consecutive ports")
        }
    }

    func run() throws {
        let (clusterID, members, secrets) = try Self.write(dir: dir, nodes: nodes, host: host, httpPort: httpPort,
                                                           replPort: replPort, commitMode: CommitMode(rawValue: commitMode)!,
                                                           auth: dev ? NodeConfig.developmentAuth : nil, tls: tls, sans: san)
        print("initialized cluster \(clusterID) in \(dir): \(nodes) nodes, commit mode \(commitMode), n1 primary at epoch 1")
        if dev { print(NodeConfig.developmentNotice) }
        let scheme = tls ? "https" : "http"
        for member in members { print("  \(member.nodeID)  \(scheme)://\(member.http)  replication \(member.replication)\(tls ? " (mutual TLS)" : "")") }
        if tls {
            print("cluster CA: \(dir)/\(ClusterCA.directoryName)/\(ClusterCA.certificateFile) (clients trust it); its key \(dir)/\(ClusterCA.directoryName)/\(ClusterCA.keyFile) is in no member directory: keep it offline, `aerodb cluster cert` needs it to issue or replace a member certificate")
        } else {
            print("plain TCP and HTTP between members and to clients (local development or a private network); --tls makes a cluster CA")
        }
        print("anon key:         \(secrets.anonKey)")
        print("service_role key: \(secrets.serviceRoleKey)")
        print("start each member: aerodb start --dir \(dir)/n1   (and n2 ... n\(nodes))")
    }

    /// Writes the member directories; returns the cluster id, the members and the shared secrets.
    static func write(dir: String, nodes: Int, host: String, httpPort: Int, replPort: Int,
                      commitMode: CommitMode, auth: JSONValue? = nil, tls: Bool = false, sans: [String] = []) throws -> (String, [ClusterMember], NodeSecrets) {
        let members = (1...nodes).map { i in
            ClusterMember(nodeID: "n\(i)", http: "\(host):\(httpPort + i - 1)",
                          replication: PeerAddress(host: host, port: replPort + i - 1))
        }
        let secrets = NodeSecrets.generate(nowSeconds: SystemClock().nowMicros() / 1_000_000)
        let clusterID = FieldValidator.randomUUID()
        let ca = try tls ? ClusterCA.create(clusterID: clusterID) : nil
        try ca?.write(directory: dir + "/" + ClusterCA.directoryName)
        for member in members {
            var config = NodeConfig()
            config.nodeID = member.nodeID
            config.http = member.http
            config.replication = member.replication.description
            config.members = members
            config.commitMode = commitMode
            if let auth {
                config.authJSON = auth
                config.auth = try AuthSettings.parse(auth)
            }
            if ca != nil { config.tls = ClusterCA.memberTLS }
            try NodeDirectory.create(dir + "/" + member.nodeID, config: config, secrets: secrets,
                                     marker: AuthorityMarker(clusterID: clusterID, epoch: 1, primary: "n1"))
            _ = try ca?.writeMember(nodeDirectory: dir + "/" + member.nodeID, nodeID: member.nodeID,
                                    hosts: config.certificateHosts + sans)
        }
        return (clusterID, members, secrets)
    }
}

/// `--url`, and the service key for the admin API.
struct AdminTarget: ParsableArguments {
    @Option(help: "Base URL of a node, e.g. http://127.0.0.1:54322.") var url: String
    @Option(help: "The service_role key (default: $AERODB_SERVICE_KEY, or the keys of --dir).") var key: String?
    @Option(help: "A node directory to read the service_role key from (and, for https://, the cluster CA in its tls.ca_file).") var dir: String?
    @Option(help: "A PEM CA bundle to trust for an https:// --url (default: the tls.ca_file of --dir, else the system's roots).") var cacert: String?

    func serviceKey() throws -> String {
        if let key { return key }
        if let env = ProcessInfo.processInfo.environment["AERODB_SERVICE_KEY"], !env.isEmpty { return env }
        if let dir { return try NodeSecrets.load(directory: dir).serviceRoleKey }
        throw AeroError(.unauthorized, "this command needs the service_role key: pass --dir NODE_DIR (a node directory, e.g. --dir .dev-cluster/n1), --key KEY (from `aerodb keys --dir NODE_DIR`), or set AERODB_SERVICE_KEY")
    }

    /// Sends a request; returns the HTTP status and the parsed JSON body.
    func call(_ method: String, _ path: String, body: JSONValue? = nil) async throws -> (Int, JSONValue) {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        var request = HTTPClientRequest(url: base + path)
        request.method = .init(rawValue: method)
        request.headers.add(name: "apikey", value: try serviceKey())
        if let body { request.body = .bytes(ByteBuffer(bytes: JSON.encode(body))) }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            let trusted = try ClusterCLI.caFile(cacert: cacert, dir: dir)
            (response, bytes) = try await ClusterCLI.withClient(trusting: base.hasPrefix("https://") ? trusted : nil) { client in
                let response = try await client.execute(request, timeout: .seconds(60))
                return (response, try await response.body.collect(upTo: 16 << 20))
            }
        } catch let error as AeroError where error.code == .configInvalid {
            throw error
        } catch {
            throw AeroError(.primaryUnavailable, "cannot reach \(base): \(CLIErrors.networkPhrase(error)) (is a node running there?)")
        }
        let json = (try? JSON.parse(Array(bytes.readableBytesView))) ?? .string(String(buffer: bytes))
        return (Int(response.status.code), json)
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show every member of the cluster: role, epoch, LSNs, lag, reachable or not.",
        discussion: "Any node answers; it probes the others. The service_role key comes from --key, else $AERODB_SERVICE_KEY, else the secrets.json of --dir.\n\nExamples:\n  aerodb status --url http://127.0.0.1:54321 --dir ./c/n1\n  aerodb status --url http://127.0.0.1:54322 --key \"$SERVICE_KEY\" --json")

    @OptionGroup var target: AdminTarget
    @Flag(help: "Print the JSON answer.") var json = false

    func run() async throws {
        let (status, body) = try await target.call("GET", "/admin/v1/cluster/status")
        guard status == 200 else { throw CommandFailure("status failed (\(status)): \(JSON.encodeString(body))") }
        if json { print(JSON.encodeString(body)); return }
        print("cluster \(body["cluster_id"]?.stringValue ?? "?")  commit mode \(body["commit_mode"]?.stringValue ?? "?")  (answered by \(body["answered_by"]?.stringValue ?? "?"))")
        print(pad("NODE", 6) + pad("ROLE", 9) + pad("EPOCH", 7) + pad("DURABLE", 10) + pad("APPLIED", 10) + pad("LAG", 7) + "STATE")
        for member in body["members"]?.arrayValue ?? [] {
            let id = member["node_id"]?.stringValue ?? "?"
            guard member["reachable"] == .bool(true) else {
                print(pad(id, 6) + "unreachable (\(member["http"]?.stringValue ?? ""))")
                continue
            }
            print(pad(id, 6) + pad(member["role"]?.stringValue ?? "", 9) + pad(text(member["epoch"]), 7)
                  + pad(text(member["durable_lsn"]), 10) + pad(text(member["applied_lsn"]), 10) + pad(text(member["lag_lsn"]), 7)
                  + (member["state"]?.stringValue ?? ""))
        }
        for replica in body["replicas"]?.arrayValue ?? [] where replica["connected"] == .bool(true) {
            print("  lag of \(replica["node_id"]?.stringValue ?? "?") seen by the primary: \(text(replica["lag_lsn"])) LSNs, \(text(replica["lag_ms"])) ms")
        }
        // Cluster-wide settings that differ from the defaults (aerodb config list shows all).
        if let (code, settings) = try? await target.call("GET", "/admin/v1/settings"), code == 200 {
            let set = (settings["settings"]?.arrayValue ?? []).filter { $0["source"] != .string("default") }
            print("settings: " + (set.isEmpty ? "all defaults" : set.map { "\(text($0["key"]))=\(JSON.encodeString($0["value"] ?? .null)) (\(text($0["source"])))" }.joined(separator: ", ")))
        }
    }
}

struct PromoteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote",
        abstract: "Make the replica at --url the primary of a new epoch (failover), after checking it is safe.",
        discussion: "Checks, each printed with its outcome: the target is a healthy replica; the old primary is unreachable; no reachable replica is ahead (else the better candidate is named); in sync mode every acknowledged commit is provably on the target (else refused unless --force, which lists the LSNs at risk). Exits non-zero and changes nothing when a check refuses. --dry-run makes the same checks and stops there (exit 0 when the promotion would go on).\n\nExamples:\n  aerodb promote --url http://127.0.0.1:54322 --dir ./c/n2 --dry-run\n  aerodb promote --url http://127.0.0.1:54322 --dir ./c/n2\n  aerodb promote --url http://127.0.0.1:54323 --dir ./c/n3 --force")

    @OptionGroup var target: AdminTarget
    @Flag(help: "Promote even when the acknowledged history cannot be proven on the target.") var force = false
    @Flag(help: "Make the checks and print the report; change nothing.") var dryRun = false
    @Flag(help: "Print the JSON report.") var json = false

    func run() async throws {
        try await runOperation(target, "/admin/v1/cluster/promote" + (dryRun ? "?dry_run=true" : ""), body: .object(["force": .bool(force)]), json: json)
    }
}

struct SwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Planned, zero-loss handover to the replica at --url while the primary is alive.",
        discussion: "The primary stops accepting writes, drains, and hands over once the target holds its final position; writes sent meanwhile fail cleanly with AERO_NOT_PRIMARY (retry). --dry-run makes the checks made before the primary is asked to demote and stops there.\n\nExamples:\n  aerodb switchover --url http://127.0.0.1:54322 --dir ./c/n2 --dry-run\n  aerodb switchover --url http://127.0.0.1:54322 --dir ./c/n2")

    @OptionGroup var target: AdminTarget
    @Flag(help: "Make the checks and print the report; change nothing.") var dryRun = false
    @Flag(help: "Print the JSON report.") var json = false

    func run() async throws {
        try await runOperation(target, "/admin/v1/cluster/switchover" + (dryRun ? "?dry_run=true" : ""), body: nil, json: json)
    }
}

/// Prints a promotion or switchover report; exits 1 when it was refused.
private func runOperation(_ target: AdminTarget, _ path: String, body: JSONValue?, json: Bool) async throws {
    let (status, report) = try await target.call("POST", path, body: body)
    if json {
        print(JSON.encodeString(report))
    } else {
        for check in report["checks"]?.arrayValue ?? [] {
            print("[\(check["outcome"]?.stringValue ?? "?")] \(check["name"]?.stringValue ?? ""): \(check["detail"]?.stringValue ?? "")")
        }
        if report["dry_run"] == .bool(true) {
            print(report["would_promote"] == .bool(true)
                  ? "dry run: the checks pass; it would open epoch \(text(report["epoch"])); nothing was changed"
                  : "dry run: refused; nothing was changed" + (report["better_candidate"]?.stringValue.map { "; better candidate: \($0)" } ?? ""))
        } else if report["promoted"] == .bool(true) {
            print("promoted: epoch \(text(report["epoch"])), fork LSN \(text(report["fork_lsn"])), \(text(report["elapsed_ms"])) ms")
        } else if let message = report["message"]?.stringValue {
            print("refused: \(message)")
        } else {
            print("refused: nothing was changed" + (report["better_candidate"]?.stringValue.map { "; better candidate: \($0)" } ?? ""))
        }
        if let risk = report["lsns_at_risk"], risk != .null { print("LSNs at risk: \(text(risk["from"])) to \(text(risk["to"]))") }
    }
    guard status == 200, report["promoted"] == .bool(true) || report["would_promote"] == .bool(true) else { throw ExitCode(1) }
}

struct RejoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rejoin",
        abstract: "Rejoin a diverged former primary: cut its log at the fork point, report what was cut, follow the primary.",
        discussion: "The node must be stopped. Asks the current primary (found among the peers) where the histories fork, removes this node's records after it and writes them to DIR/rejoin-<epoch>-<time>.json, then starts the node as a replica (unless --no-start).\n\nExamples:\n  aerodb rejoin --dir ./c/n1\n  aerodb rejoin --dir ./c/n1 --no-start\n  aerodb rejoin --dir ./c/n1 --resync")

    @Option(help: "The stopped node's directory.") var dir: String
    @Flag(help: "Discard the whole local log instead; the primary ships a checkpoint.") var resync = false
    @Flag(help: "Prepare the directory but do not start the node.") var noStart = false

    func run() async throws {
        let config = try NodeConfig.load(directory: dir)
        let secrets = try NodeSecrets.load(directory: dir)
        let options = config.kernelOptions(directory: dir)
        try await Self.requireStopped(config, directory: dir)
        // One process per data directory: a running node (or another rejoin) holds the lock.
        let lock = try DataDirectoryLock.acquire(dataDirectory: options.dataDirectory)
        let authority = AuthorityStore(dataDirectory: options.dataDirectory)
        guard let marker = try authority.read() else { throw CommandFailure("no authority marker in \(options.dataDirectory)") }
        var cluster = try config.clusterConfig(clusterID: marker.clusterID, secret: secrets.jwtSecret)
        cluster.tls = try config.replicationTLS(directory: dir, logger: Logger(label: "aerodb.rejoin"))  // TLS1
        print("reading the last \(ReplicationLimits.forkPositionsMax) record positions of \(options.dataDirectory)")
        let positions = try Database.lastPositions(options, count: Int(ReplicationLimits.forkPositionsMax))
        print("asking the peers (\(cluster.peers.map(\.nodeID).joined(separator: ", "))) for the primary and the fork point")
        let report: JSONValue
        let answer: Rejoin.Answer
        if resync {
            answer = try await Rejoin.findFork(config: cluster, marker: marker, positions: [.origin])
            try Database.discardHistory(options)
            report = .object(["resync": .bool(true), "discarded_through_lsn": .int(Int64(positions.last?.lsn ?? 0))])
            print("discarded the whole local log (through LSN \(positions.last?.lsn ?? 0)); \(answer.primary) sends everything again (its WAL, or a checkpoint when that is recycled)")
        } else {
            answer = try await Rejoin.findFork(config: cluster, marker: marker, positions: positions)
            let cut = try Database.truncateHistory(options, after: answer.fork)
            report = .object(["fork": .object(["lsn": .int(Int64(answer.fork.lsn)), "checksum": .string(String(answer.fork.checksum, radix: 16))]),
                              "primary": .string(answer.primary), "epoch": .int(Int64(answer.epoch)),
                              "discarded": .array(cut.map(Self.describe))])
            print("fork at LSN \(answer.fork.lsn) on the history of \(answer.primary) (epoch \(answer.epoch)); \(cut.count) transaction(s) after it were cut")
        }
        let file = "\(dir)/rejoin-\(answer.epoch)-\(SystemClock().nowMicros() / 1_000_000).json"
        guard FileManager.default.createFile(atPath: file, contents: Data(JSON.encode(report) + [0x0A])) else {
            throw CommandFailure("cannot write \(file)")
        }
        print("report: \(file)")
        if answer.epoch > marker.epoch {
            try authority.replace(with: AuthorityMarker(clusterID: marker.clusterID, epoch: answer.epoch, primary: answer.primary))
        } else if answer.primary != marker.primary {
            throw CommandFailure("this node's marker names \(marker.primary) in epoch \(marker.epoch), but \(answer.primary) answered as primary of epoch \(answer.epoch)")
        }
        guard !noStart else { lock.release(); return }
        print("starting \(config.nodeID) as a replica of \(answer.primary)")
        try await StartCommand.run(directory: dir, httpOverride: nil, lock: lock)
    }

    /// A rejoin cuts the log under the node's feet: refuse while its HTTP port answers.
    static func requireStopped(_ config: NodeConfig, directory: String) async throws {
        var request = HTTPClientRequest(url: "\(config.tls == nil ? "http" : "https")://\(config.http)/health")
        request.method = .GET
        let ca = config.tls?.caFile.map { TLSFiles.path($0, in: directory) }
        let answered = (try? await ClusterCLI.withClient(trusting: ca) { client in
            let answer = try await client.execute(request, timeout: .seconds(1))
            _ = try? await answer.body.collect(upTo: 1 << 16)
            return true
        }) ?? false
        guard answered else { return }
        throw CommandFailure("node \(config.nodeID) answers on \(config.http): stop it before `aerodb rejoin`")
    }

    static func describe(_ t: CommittedTransaction) -> JSONValue {
        .object(["lsn": .int(Int64(t.lsn)), "epoch": .int(Int64(t.epoch)), "timestamp_micros": .int(t.timestampMicros),
                 "changes": .array(t.changes.map { c in
                     .object(["collection": .string(c.collection), "key": c.key, "kind": .string(c.kind.rawValue),
                              "before": c.before.map { .object($0) } ?? .null, "after": c.after.map { .object($0) } ?? .null])
                 }),
                 "schema_change": .bool(t.schemaChange != nil)])
    }
}

struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }

/// A JSON value as the CLI and the bench print it (floats with `decimals` digits, "-" for none).
func text(_ value: JSONValue?, decimals: Int = 1) -> String {
    switch value {
    case .int(let n)?: return String(n)
    case .float(let x)?: return String(format: "%.\(decimals)f", x)
    case .string(let s)?: return s
    case .bool(let b)?: return String(b)
    default: return "-"
    }
}
