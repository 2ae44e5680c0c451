// The functions service of a node: looks up the active version of a function in a snapshot,
// compiles its module once per (name, version, checksum) into a bounded cache, runs it on the
// runtime and keeps its recent log lines (memory only, per node, bounded).

import Foundation
import Kernel
import Logging
import Synchronization

public final class FunctionService: Sendable {
    public let database: Database
    public let runtime: FunctionRuntime
    let logger: Logger
    let keys: KeyChecker
    let policies = PolicyEngine()
    private let cache = Mutex<[String: CompiledFunction]>([:])
    let logs = FunctionLogs()

    public init(database: Database, keys: KeyChecker, logger: Logger, runtime: FunctionRuntime = FunctionRuntime()) {
        self.database = database
        self.keys = keys
        self.logger = logger
        self.runtime = runtime
    }

    /// The active version of `name` and its compiled module, or nil when it is not deployed.
    func load(_ name: String) throws -> (FunctionVersion, CompiledFunction)? {
        let snapshot = database.snapshot()
        guard let v = try FunctionStore.activeVersion(name, snapshot) else { return nil }
        let key = "\(v.name)@\(v.version):\(v.sha256)"
        if let hit = cache.withLock({ $0[key] }) { return (v, hit) }
        let compiled = try FunctionRuntime.compile(try FunctionStore.moduleBytes(v, snapshot))
        cache.withLock { table in
            if table.count >= FunctionRuntimeLimits.moduleCacheEntriesMax, let victim = table.keys.first { table[victim] = nil }
            table[key] = compiled
        }
        return (v, compiled)
    }

    /// Validates then stores a new version (primary; the route is forwarded there).
    public func deploy(_ json: JSONValue) async throws -> (FunctionVersion, lsn: UInt64) {
        let request = try DeployRequest(json: json)
        let compiled = try FunctionRuntime.compile(request.module)
        try await runtime.validate(compiled, limits: request.limits)
        let (v, lsn) = try await FunctionStore.deploy(request, database: database)
        logger.info("function deployed", metadata: ["function": "\(v.name)", "version": "\(v.version)", "bytes": "\(v.bytes)",
                                                    "sha256": "\(v.sha256)"])
        return (v, lsn)
    }

    /// Runs one invocation of a loaded function and records its logs (and its failure) on this node.
    func invoke(_ v: FunctionVersion, _ compiled: CompiledFunction, _ request: FunctionRequest,
                data: (any FunctionDataAccess)?) async throws -> FunctionResponse {
        var request = request
        request.name = v.name
        request.version = v.version
        let started = ContinuousClock.now
        do {
            let response = try await runtime.invoke(compiled, request, limits: v.limits, config: v.environment, data: data)
            logs.append(v.name, version: v.version, response.logs, dropped: response.logsDropped)
            return response
        } catch {
            let aero = AeroError.wrap(error)
            logs.append(v.name, version: v.version, [FunctionLogLine(level: "error", message: aero.description)], dropped: 0)
            logger.warning("function failed", metadata: ["function": "\(v.name)", "version": "\(v.version)", "error": "\(aero)",
                                                         "ms": "\((ContinuousClock.now - started).components.seconds * 1000 + (ContinuousClock.now - started).components.attoseconds / 1_000_000_000_000_000)"])
            throw aero
        }
    }
}

/// Recent log lines per function on this node (FunctionRuntimeLimits: lines per function,
/// functions kept). Not replicated: `functions logs` reads the node it asks.
final class FunctionLogs: Sendable {
    struct Entry: Sendable {
        let at: Date
        let version: Int
        let line: FunctionLogLine
    }

    private let table = Mutex<(lines: [String: [Entry]], order: [String])>(([:], []))

    func append(_ name: String, version: Int, _ lines: [FunctionLogLine], dropped: Int) {
        var lines = lines
        if dropped > 0 { lines.append(FunctionLogLine(level: "warn", message: "\(dropped) log messages dropped (log_bytes limit)")) }
        guard !lines.isEmpty else { return }
        let now = Date()
        table.withLock { t in
            if t.lines[name] == nil {
                t.order.append(name)
                if t.order.count > FunctionRuntimeLimits.loggedFunctionsMax { t.lines[t.order.removeFirst()] = nil }
            }
            var kept = t.lines[name] ?? []
            kept += lines.map { Entry(at: now, version: version, line: $0) }
            if kept.count > FunctionRuntimeLimits.logLinesPerFunctionMax { kept.removeFirst(kept.count - FunctionRuntimeLimits.logLinesPerFunctionMax) }
            t.lines[name] = kept
        }
    }

    func recent(_ name: String, limit: Int) -> [Entry] {
        table.withLock { Array(($0.lines[name] ?? []).suffix(limit)) }
    }
}
