// The function runtime: WasmKit, one fresh Store and Instance per invocation, compiled modules
// shared (a parsed `Module` is Sendable and immutable).
//
// Where guest code runs: on `FunctionRuntime`'s own thread pool (`FunctionRuntimeLimits.threads`
// threads), never on the cooperative pool that serves HTTP and never under the writer: a guest's
// database write is an ordinary commit awaited from its pool thread. At most
// `inFlightMax` invocations are admitted at once; more are refused at once (546).
//
// Limits (FunctionLimits): fuel is WasmKit's (the interpreter charges a counter it reads through
// a pointer on every metered block); memory through WasmKit's ResourceLimiter (initial size and
// every grow); wall time by a watchdog task: at the deadline it sets the store's remaining fuel
// to zero, again every `drainIntervalMillis` until the guest stops, so the next metered block
// traps (WasmKit 0.4.2 has no interrupt and cannot resume after an out-of-fuel trap, so fuel
// slices are not possible). That write races with the interpreter's own update of the same
// aligned 64-bit counter by design: either write may win one round, the drain repeats, and the
// fuel limit bounds the guest even if every round lost. Host calls check the deadline too.

import Foundation
import Kernel
import NIOPosix
import Synchronization
@_spi(Fuzzing) import WasmKit

/// One invocation's input.
public struct FunctionRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var caller: Caller
    public var args: [UInt8]
    public var name: String
    public var version: Int

    public init(method: String, path: String = "", query: String = "", headers: [(String, String)] = [], body: [UInt8] = [],
                caller: Caller, args: [UInt8] = Array("{}".utf8), name: String = "", version: Int = 0) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.caller = caller
        self.args = args
        self.name = name
        self.version = version
    }

    /// A `request_read` part (FunctionABI).
    func part(_ index: Int) -> [UInt8]? {
        switch index {
        case 0: return Array(method.utf8)
        case 1: return Array(path.utf8)
        case 2: return Array(query.utf8)
        case 3: return body
        case 4: return Array(caller.role.utf8)
        case 5: return Array((caller.userID ?? "").utf8)
        case 6: return args
        case 7: return Array(name.utf8)
        case 8: return Array(String(version).utf8)
        default: return nil
        }
    }
}

public struct FunctionLogLine: Sendable {
    public var level: String
    public var message: String

    static func level(_ n: Int32) -> String {
        switch n {
        case 0: return "debug"
        case 2: return "warn"
        case 3: return "error"
        default: return "info"
        }
    }
}

/// What an invocation answered.
public struct FunctionResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var logs: [FunctionLogLine]
    public var logsDropped: Int
    public var fuelUsed: UInt64
}

/// A database request from a guest (`db_request`).
public struct FunctionDataRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String
    public var body: JSONValue?
    public var prefer: String

    init(json: JSONValue) throws {
        guard case .object(let o) = json, case .string(let method)? = o["method"], case .string(let path)? = o["path"] else {
            throw AeroError(.requestInvalid, "db_request needs {\"method\", \"path\"}")
        }
        self.method = method.uppercased()
        self.path = path
        if case .string(let q)? = o["query"] { query = q } else { query = "" }
        body = o["body"]
        if case .string(let p)? = o["prefer"] { prefer = p } else { prefer = "" }
    }
}

/// Runs a guest's database requests as its caller. Called on a runtime thread (blocking is fine);
/// returns the JSON answer `{"status": N, "body": ...}`.
public protocol FunctionDataAccess: Sendable {
    func run(_ request: FunctionDataRequest, deadline: ContinuousClock.Instant) -> [UInt8]
}

/// A module ready to run: parsed once, shared by every invocation of that version.
public struct CompiledFunction: Sendable {
    public let module: Module
    public let bytes: Int
}

public final class FunctionRuntime: Sendable {
    let engine: EngineBox
    private let pool: NIOThreadPool
    private let inFlight = Mutex(0)

    /// `Engine` is documented thread-safe for sharing (WasmKit: a final class, @unchecked Sendable
    /// in 0.4.2's own use); boxed so this type states it.
    final class EngineBox: @unchecked Sendable {
        let engine: Engine
        init(_ engine: Engine) { self.engine = engine }
    }

    /// Linear memory is bounds-checked by the interpreter (`.software`), not by WasmKit's
    /// default on Linux (`.mprotect`: a 4 GiB + 64 KiB `mmap(PROT_NONE)` reservation per instance,
    /// its `munmap` at the end of every invocation, a TLB shootdown across the cores, and traps
    /// taken by a SIGSEGV handler). With one fresh instance per invocation, that reservation was
    /// the largest cost of a warm call: node CPU per `hello` 358-372 us against 205-252 us here
    /// (docs/BENCHMARKS.md "s29").
    public init(threads: Int = FunctionRuntimeLimits.threads) {
        engine = EngineBox(Engine(configuration: EngineConfiguration(compilationMode: .lazy, memoryBoundsChecking: .software,
                                                                     fuelMetering: true)))
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    deinit { pool.shutdownGracefully { _ in } }

    /// Parses and checks a module for deploy: wasm validity, imports and exports, and that every
    /// function body translates (an eager instantiation, its start function dropped, nothing run).
    public static func compile(_ bytes: [UInt8]) throws -> CompiledFunction {
        guard !bytes.isEmpty else { throw AeroError(.functionInvalid, "the module is empty") }
        guard bytes.count <= FunctionRuntimeLimits.moduleBytesMax else {
            throw AeroError(.functionInvalid, "the module is \(bytes.count) bytes; at most \(FunctionRuntimeLimits.moduleBytesMax)")
        }
        let module: Module
        do {
            module = try parseWasm(bytes: bytes)
        } catch {
            throw AeroError(.functionInvalid, "not a valid WebAssembly module: \(error)")
        }
        try FunctionABI.check(module)
        return CompiledFunction(module: module, bytes: bytes.count)
    }

    /// Validates every function body by instantiating eagerly, with no start function and the
    /// default memory limit, on the calling thread (deploy runs on the runtime pool).
    func validate(_ compiled: CompiledFunction, limits: FunctionLimits) async throws {
        try await pool.runIfActive {
            var module = compiled.module
            module.dropStartFunction()
            let engine = Engine(configuration: EngineConfiguration(compilationMode: .eager, fuelMetering: true))
            let store = Store(engine: engine)
            store.resourceLimiter = MemoryLimiter(maxBytes: limits.memoryBytes)
            let inv = Invocation(request: FunctionRequest(method: "GET", caller: Caller(role: "anon", claims: .object([:]))),
                                 limits: limits, deadline: .now, data: nil, config: [:])
            do {
                let instance = try module.instantiate(store: store, imports: FunctionABI.imports(store: store, inv))
                guard let handle = instance.exports[function: "handle"] else {
                    throw AeroError(.functionInvalid, "the export handle is not a function")
                }
                guard handle.type.parameters.isEmpty, handle.type.results == [.i32] else {
                    throw AeroError(.functionInvalid, "handle must be () -> i32, not \(handle.type.parameters) -> \(handle.type.results)")
                }
                guard instance.exports[memory: "memory"] != nil else { throw AeroError(.functionInvalid, "the export memory is not a memory") }
            } catch let error as AeroError {
                throw error
            } catch {
                throw AeroError(.functionInvalid, "the module cannot be instantiated: \(error)")
            }
        }
    }

    /// Runs one invocation. Throws AERO_FUNCTION_LIMIT / AERO_FUNCTION_FAILED; the node is never harmed.
    public func invoke(_ compiled: CompiledFunction, _ request: FunctionRequest, limits: FunctionLimits,
                       config: [String: String], data: (any FunctionDataAccess)?) async throws -> FunctionResponse {
        guard request.body.count <= limits.requestBytes else {
            throw AeroError(.functionLimit, "the request body is \(request.body.count) bytes; this function takes at most \(limits.requestBytes) (request_bytes)")
        }
        let admitted = inFlight.withLock { n -> Bool in
            guard n < FunctionRuntimeLimits.inFlightMax else { return false }
            n += 1
            return true
        }
        guard admitted else {
            throw AeroError(.functionLimit, "the node is running \(FunctionRuntimeLimits.inFlightMax) invocations already; retry")
        }
        defer { inFlight.withLock { $0 -= 1 } }
        let deadline = ContinuousClock.now + .milliseconds(limits.wallMillis)
        let watch = Watch()
        let watchdog = Task.detached { await watch.drain(at: deadline) }
        defer { watchdog.cancel() }
        let engine = self.engine
        return try await pool.runIfActive {
            try Self.run(compiled, request, limits, config, data, deadline, engine.engine, watch)
        }
    }

    private static func run(_ compiled: CompiledFunction, _ request: FunctionRequest, _ limits: FunctionLimits,
                            _ config: [String: String], _ data: (any FunctionDataAccess)?, _ deadline: ContinuousClock.Instant,
                            _ engine: Engine, _ watch: Watch) throws -> FunctionResponse {
        let store = Store(engine: engine)
        let limiter = MemoryLimiter(maxBytes: limits.memoryBytes)
        store.resourceLimiter = limiter
        let fuel = UInt64(limits.fuel)
        store.fuel = Fuel(remaining: fuel)
        let inv = Invocation(request: request, limits: limits, deadline: deadline, data: data, config: config)
        watch.attach(store)
        defer { watch.finish() }
        do {
            let instance = try compiled.module.instantiate(store: store, imports: FunctionABI.imports(store: store, inv))
            guard let handle = instance.exports[function: "handle"] else {
                throw AeroError(.functionInvalid, "the module does not export handle")
            }
            let result = try handle([])
            if let code = result.first?.i32, code != 0 {
                throw inv.stop(AeroError(.functionFailed, "handle returned \(Int32(bitPattern: code))"))
            }
        } catch {
            if inv.abort == nil, let refused = limiter.refusedBytes {
                throw AeroError(.functionLimit, "the function asked for \(refused) bytes of memory; its memory_bytes limit is \(limits.memoryBytes)")
            }
            throw classify(error, inv, watch, limits)
        }
        let used = fuel &- (store.fuel?.remaining ?? 0)
        return FunctionResponse(status: inv.status, headers: inv.headers, body: inv.body, logs: inv.logs,
                                logsDropped: inv.logsDropped, fuelUsed: used)
    }

    static func classify(_ error: any Error, _ inv: Invocation, _ watch: Watch, _ limits: FunctionLimits) -> AeroError {
        if let abort = inv.abort { return abort }
        let text = "\(error)"
        if text.contains("out of fuel") {
            if watch.expired {
                return AeroError(.functionLimit, "the function ran longer than its wall_ms limit (\(limits.wallMillis) ms)")
            }
            return AeroError(.functionLimit, "the function used all its fuel (\(limits.fuel) units; the fuel limit bounds compute)")
        }
        if let aero = error as? AeroError { return aero }
        if text.contains("memory") && (text.contains("limit") || text.contains("exceed")) {
            return AeroError(.functionLimit, "the function asked for more than its memory_bytes limit (\(limits.memoryBytes) bytes): \(firstLine(text))")
        }
        return AeroError(.functionFailed, "the function trapped: \(firstLine(text))")
    }

    private static func firstLine(_ text: String) -> String {
        String(text.split(separator: "\n", maxSplits: 1).first ?? "").prefix(500).description
    }

    /// The wall-time watchdog of one invocation (see the file header).
    final class Watch: @unchecked Sendable {
        private let lock = NSLock()
        private var store: Store?
        private var done = false
        private var didExpire = false

        var expired: Bool { lock.withLock { didExpire } }

        func attach(_ store: Store) { lock.withLock { self.store = store } }

        func finish() {
            lock.withLock {
                done = true
                store = nil
            }
        }

        func drain(at deadline: ContinuousClock.Instant) async {
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }
            while !Task.isCancelled {
                let stop = lock.withLock { () -> Bool in
                    if done { return true }
                    didExpire = true
                    store?.fuel = Fuel(remaining: 0)
                    return false
                }
                if stop { return }
                try? await Task.sleep(for: .milliseconds(FunctionRuntimeLimits.drainIntervalMillis))
            }
        }
    }
}

/// Refuses linear memory (initial or grown) past the function's memory_bytes limit.
/// Refusals are remembered, so a guest that traps after its allocation failed (malloc returned
/// NULL, memory.grow gave -1) is reported as over its memory limit, not as a plain trap.
final class MemoryLimiter: ResourceLimiter, @unchecked Sendable {
    let maxBytes: Int
    /// Written and read on the invocation's thread only.
    private(set) var refusedBytes: Int?
    init(maxBytes: Int) { self.maxBytes = maxBytes }
    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= maxBytes else {
            refusedBytes = desired
            return false
        }
        return true
    }
    /// Table elements (function references): 100,000 is far past what a compiler emits.
    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= 100_000 }
}
