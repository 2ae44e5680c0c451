// The limits of one function invocation (docs/FUNCTIONS.md "Limits", docs/LIMITS.md "Functions").
//
// Each limit has a default, a range, and a per-function override given at deploy
// (`{"limits": {"fuel": 5000000, "wall_ms": 2000}}`). A deploy with an unknown limit name, a
// non-integer or a value outside its range is refused (AERO_FUNCTION_INVALID) and nothing is
// stored. Exceeding a limit ends that invocation with AERO_FUNCTION_LIMIT (HTTP 546, as
// Supabase's edge runtime answers a worker over a resource limit); the node and the other
// invocations are not affected.

import Kernel

public struct FunctionLimits: Sendable, Equatable {
    /// Fuel: about one unit per WebAssembly operator executed (+1 per 64 bytes of bulk memory ops).
    public var fuel: Int
    /// Largest linear memory of the instance (initial size and every `memory.grow`).
    public var memoryBytes: Int
    /// Wall-clock time of one invocation, host calls (database) included.
    public var wallMillis: Int
    /// Largest request body handed to the function (larger requests are refused before it runs).
    public var requestBytes: Int
    /// Largest response body the function may write (`response_write` past it ends the invocation).
    public var responseBytes: Int
    /// Bytes of log messages kept per invocation; later messages are dropped and counted.
    public var logBytes: Int
    /// Database calls (`db_request`) per invocation.
    public var dbCalls: Int

    public static let `default` = FunctionLimits(
        fuel: FunctionLimitDefaults.fuel, memoryBytes: FunctionLimitDefaults.memoryBytes,
        wallMillis: FunctionLimitDefaults.wallMillis, requestBytes: FunctionLimitDefaults.requestBytes,
        responseBytes: FunctionLimitDefaults.responseBytes, logBytes: FunctionLimitDefaults.logBytes,
        dbCalls: FunctionLimitDefaults.dbCalls)

    /// The JSON names (deploy `limits` object, `functions list`), their ranges and key paths.
    static var table: [(name: String, range: ClosedRange<Int>, path: WritableKeyPath<FunctionLimits, Int>)] { [
        ("fuel", FunctionLimitDefaults.fuelRange, \.fuel),
        ("memory_bytes", FunctionLimitDefaults.memoryBytesRange, \.memoryBytes),
        ("wall_ms", FunctionLimitDefaults.wallMillisRange, \.wallMillis),
        ("request_bytes", FunctionLimitDefaults.requestBytesRange, \.requestBytes),
        ("response_bytes", FunctionLimitDefaults.responseBytesRange, \.responseBytes),
        ("log_bytes", FunctionLimitDefaults.logBytesRange, \.logBytes),
        ("db_calls", FunctionLimitDefaults.dbCallsRange, \.dbCalls),
    ] }

    /// The defaults overridden by `json` (an object of the names above, or null).
    public static func parse(_ json: JSONValue?) throws -> FunctionLimits {
        var limits = FunctionLimits.default
        guard let json, !json.isNull else { return limits }
        guard case .object(let o) = json else { throw AeroError(.functionInvalid, "limits must be a JSON object") }
        for (key, value) in o {
            guard let entry = table.first(where: { $0.name == key }) else {
                throw AeroError(.functionInvalid, "unknown limit \(key); known: \(table.map(\.name).joined(separator: ", "))")
            }
            guard case .int(let n) = value, let v = Int(exactly: n), entry.range.contains(v) else {
                throw AeroError(.functionInvalid, "limit \(key) must be an integer in \(entry.range.lowerBound)...\(entry.range.upperBound)")
            }
            limits[keyPath: entry.path] = v
        }
        return limits
    }

    public var json: JSONValue {
        .object(Dictionary(uniqueKeysWithValues: Self.table.map { ($0.name, JSONValue.int(Int64(self[keyPath: $0.path]))) }))
    }
}

/// Defaults and ranges of `FunctionLimits`, and the runtime's own bounds (docs/LIMITS.md).
public enum FunctionLimitDefaults {
    /// 200 M operators: a few seconds of interpreted compute at most, far more than a handler needs.
    public static let fuel = 200_000_000
    public static let fuelRange = 1_000...10_000_000_000
    /// 64 MiB: room for a C program's heap; 1 GiB at most (a 2-core node serves several at once).
    public static let memoryBytes = 64 << 20
    public static let memoryBytesRange = (64 << 10)...(1 << 30)
    /// 10 s, beyond the official client's 5 s default timeout; 60 s at most.
    public static let wallMillis = 10_000
    public static let wallMillisRange = 10...60_000
    /// 6 MiB like Supabase's request payload limit; at most the HTTP body limit.
    public static let requestBytes = 6 << 20
    public static let requestBytesRange = 0...HTTPLimits.requestBodyBytesMax
    /// 6 MiB; at most the HTTP body limit (the answer is held in memory until the guest returns).
    public static let responseBytes = 6 << 20
    public static let responseBytesRange = 0...HTTPLimits.requestBodyBytesMax
    /// 64 KiB of log messages per invocation (a loop of `log` calls cannot fill the node's memory).
    public static let logBytes = 64 << 10
    public static let logBytesRange = 0...(1 << 20)
    /// 100 database calls per invocation.
    public static let dbCalls = 100
    public static let dbCallsRange = 0...10_000
}

/// Bounds of the function runtime and store that are not per function.
public enum FunctionRuntimeLimits {
    /// Threads that run guest code (never the cooperative pool): two on a 2-core node, so guests
    /// can use at most the cores, never starve the HTTP event loops of scheduling.
    public static let threads = 2
    /// Invocations admitted at once (running or waiting for a thread); more answer 546 at once.
    public static let inFlightMax = 64
    /// Largest module (`.wasm` bytes): the whole deploy is one transaction (never half deployed),
    /// so the module in base64 must fit `KernelLimits.transactionBytesMax` (16 MiB) with room.
    public static let moduleBytesMax = 8 << 20
    /// Raw bytes of module per chunk document: base64 grows it by 4/3, so a chunk stays well under
    /// `KernelLimits.documentBytesMax` (1 MiB).
    public static let chunkBytes = 512 << 10
    /// Versions kept per function (older ones are deleted at deploy; the active one always stays).
    public static let versionsKept = 20
    /// Compiled modules cached per node (keyed by name, version and checksum).
    public static let moduleCacheEntriesMax = 64
    /// Log lines kept per function on each node (memory only, newest last).
    public static let logLinesPerFunctionMax = 200
    /// Functions whose logs a node keeps (oldest-written dropped first).
    public static let loggedFunctionsMax = 1_000
    /// Longest log line kept (bytes); longer messages are cut.
    public static let logLineBytesMax = 4_096
    /// Response headers a function may set.
    public static let responseHeadersMax = 64
    /// Config and secret entries per function, and the bytes of each value.
    public static let configEntriesMax = 100
    public static let configValueBytesMax = 16 << 10
    /// rpc parameters per function.
    public static let rpcParametersMax = 32
    /// After the wall-time deadline the watchdog drains the guest's fuel every this many ms
    /// until the guest stops (see FunctionRuntime).
    public static let drainIntervalMillis = 1
    /// Function names: `[a-z][a-z0-9_-]*`, at most this long (the kernel's name bound).
    public static let nameBytesMax = KernelLimits.nameBytesMax
}
