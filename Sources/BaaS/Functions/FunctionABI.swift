// The host ABI of AeroDB functions, version 1 (docs/FUNCTIONS.md "Host ABI"; sdk/aerodb.h).
//
// A function is a WebAssembly module (wasm32, little-endian). It must export:
//   memory              its linear memory (every pointer below is a byte offset into it)
//   handle: () -> i32   called once per invocation; 0 = success, any other value = the function
//                       failed (HTTP 500, "handle returned N")
// and may import only these functions, from module "aerodb" (any other import is refused at deploy):
//
//   request_read(part i32, dst i32, cap i32) -> i32
//       Copies min(len, cap) bytes of request part `part` to dst and returns len (the full
//       length, so a guest may call with cap 0 to size its buffer). -1 for an unknown part.
//       parts: 0 method ("POST"), 1 path after /functions/v1/<name> ("" or "/a/b"),
//       2 query string without "?", 3 body bytes, 4 caller role ("anon", "authenticated",
//       "service_role"), 5 caller user id (uuid text, "" without a user), 6 rpc arguments as a
//       JSON object (rpc calls; "{}" otherwise), 7 function name, 8 version (decimal text).
//   request_header(name_ptr i32, name_len i32, dst i32, cap i32) -> i32
//       The request header `name` (ASCII, case-insensitive); copies like request_read and returns
//       its length, or -1 when absent. Several headers of one name are joined with ", ".
//   response_status(code i32) -> i32
//       Sets the HTTP status (default 200). 0, or -1 when code is not in 100...599 (unchanged).
//   response_header(name_ptr i32, name_len i32, value_ptr i32, value_len i32) -> i32
//       Adds a response header. 0; -1 for an invalid name or value (not a token / contains CR, LF
//       or NUL); -2 past FunctionRuntimeLimits.responseHeadersMax.
//   response_write(ptr i32, len i32) -> i32
//       Appends len bytes to the response body; 0. Past the response_bytes limit the invocation
//       ends with AERO_FUNCTION_LIMIT (it does not return).
//   log(level i32, ptr i32, len i32) -> i32
//       One log line (UTF-8; invalid bytes replaced), level 0 debug, 1 info, 2 warn, 3 error
//       (others read as info). 0 kept, 1 dropped (the log_bytes limit of this invocation).
//   config_get(name_ptr i32, name_len i32, dst i32, cap i32) -> i32
//       The config or secret value `name` (secrets win on a clash); copies like request_read,
//       returns its length or -1 when absent.
//   time_now_ms() -> i64
//       Wall-clock milliseconds since the Unix epoch.
//   db_request(req_ptr i32, req_len i32) -> i32
//       Runs one database request AS THE CALLER (their policies apply; only the service key
//       bypasses them), through the same code as /rest/v1. The request is a JSON object
//       {"method": "GET"|"POST"|"PATCH"|"DELETE", "path": "<collection>", "query": "<PostgREST
//       query string>", "body": <JSON>, "prefer": "<Prefer header>"}. Returns the length of the
//       answer, a JSON object {"status": <int>, "body": <JSON or null>}, kept by the host until
//       the next db_request; read it with db_result. -1: the request is not valid JSON of that
//       shape; -2: the db_calls limit is reached.
//   db_result(dst i32, cap i32) -> i32
//       Copies min(len, cap) bytes of the last db_request answer and returns len (0 before any).
//
// Invariants: every guest pointer range is checked against the memory's current size before the
// host touches it (WasmKit's own accessors `precondition` and would stop the node); an out of
// range pointer ends the invocation with AERO_FUNCTION_FAILED. Lengths are i32 read as unsigned
// and added in 64 bits (no overflow). Host functions never block on the writer: a database write
// is a commit awaited from this (non-cooperative) thread.

import Foundation
import Kernel
import WasmKit

/// What a function asked the host for and wrote, during one invocation (confined to its thread).
final class Invocation {
    let request: FunctionRequest
    let limits: FunctionLimits
    let deadline: ContinuousClock.Instant
    let data: (any FunctionDataAccess)?
    let config: [String: String]
    var status = 200
    var headers: [(String, String)] = []
    var body: [UInt8] = []
    var logs: [FunctionLogLine] = []
    var logBytes = 0
    var logsDropped = 0
    var dbCalls = 0
    var dbResult: [UInt8] = []
    /// The reason the host stopped the guest (a limit), reported instead of the resulting trap.
    var abort: AeroError?

    init(request: FunctionRequest, limits: FunctionLimits, deadline: ContinuousClock.Instant,
         data: (any FunctionDataAccess)?, config: [String: String]) {
        self.request = request
        self.limits = limits
        self.deadline = deadline
        self.data = data
        self.config = config
    }

    func stop(_ error: AeroError) -> AeroError {
        if abort == nil { abort = error }
        return error
    }
}

enum FunctionABI {
    static let module = "aerodb"
    static let names: Set<String> = ["request_read", "request_header", "response_status", "response_header", "response_write",
                                     "log", "config_get", "time_now_ms", "db_request", "db_result"]

    /// Checks what a module imports and exports, before it is stored.
    static func check(_ module: Module) throws {
        for item in module.imports {
            guard item.module == Self.module, names.contains(item.name) else {
                throw AeroError(.functionInvalid, "the module imports \(item.module).\(item.name), which the host does not provide (imports must come from \"aerodb\": \(names.sorted().joined(separator: ", ")))")
            }
        }
        let exported = Set(module.exports.map(\.name))
        for needed in ["memory", "handle"] where !exported.contains(needed) {
            throw AeroError(.functionInvalid, "the module does not export \(needed) (a function exports its memory and handle: () -> i32)")
        }
    }

    static func imports(store: Store, _ inv: Invocation) -> Imports {
        var imports = Imports()
        func define(_ name: String, _ parameters: [ValueType], _ results: [ValueType],
                    _ body: @escaping (borrowing WasmKit.Caller, [Value]) throws -> [Value]) {
            imports.define(module: module, name: name, Function(store: store, parameters: parameters, results: results, body: body))
        }
        define("request_read", [.i32, .i32, .i32], [.i32]) { caller, args in
            guard let part = inv.request.part(Int(args[0].i32)) else { return [.i32(UInt32(bitPattern: -1))] }
            return [.i32(try copyOut(caller, part, dst: args[1].i32, cap: args[2].i32, inv))]
        }
        define("request_header", [.i32, .i32, .i32, .i32], [.i32]) { caller, args in
            let name = String(decoding: try read(caller, args[0].i32, args[1].i32, inv), as: UTF8.self).lowercased()
            let values = inv.request.headers.filter { $0.0.lowercased() == name }.map(\.1)
            guard !values.isEmpty else { return [.i32(UInt32(bitPattern: -1))] }
            return [.i32(try copyOut(caller, Array(values.joined(separator: ", ").utf8), dst: args[2].i32, cap: args[3].i32, inv))]
        }
        define("response_status", [.i32], [.i32]) { _, args in
            let code = Int32(bitPattern: args[0].i32)
            guard (100...599).contains(code) else { return [.i32(UInt32(bitPattern: -1))] }
            inv.status = Int(code)
            return [.i32(0)]
        }
        define("response_header", [.i32, .i32, .i32, .i32], [.i32]) { caller, args in
            let name = String(decoding: try read(caller, args[0].i32, args[1].i32, inv), as: UTF8.self)
            let value = String(decoding: try read(caller, args[2].i32, args[3].i32, inv), as: UTF8.self)
            guard validHeader(name, value) else { return [.i32(UInt32(bitPattern: -1))] }
            guard inv.headers.count < FunctionRuntimeLimits.responseHeadersMax else { return [.i32(UInt32(bitPattern: -2))] }
            inv.headers.append((name, value))
            return [.i32(0)]
        }
        define("response_write", [.i32, .i32], [.i32]) { caller, args in
            let len = Int(args[1].i32)
            guard inv.body.count + len <= inv.limits.responseBytes else {
                throw inv.stop(AeroError(.functionLimit, "the response is larger than the function's response_bytes limit (\(inv.limits.responseBytes) bytes)"))
            }
            inv.body.append(contentsOf: try read(caller, args[0].i32, args[1].i32, inv))
            return [.i32(0)]
        }
        define("log", [.i32, .i32, .i32], [.i32]) { caller, args in
            let bytes = try read(caller, args[1].i32, args[2].i32, inv)
            guard inv.logBytes + bytes.count <= inv.limits.logBytes else {
                inv.logsDropped += 1
                return [.i32(1)]
            }
            inv.logBytes += bytes.count
            let text = String(decoding: bytes.prefix(FunctionRuntimeLimits.logLineBytesMax), as: UTF8.self)
            inv.logs.append(FunctionLogLine(level: FunctionLogLine.level(Int32(bitPattern: args[0].i32)), message: text))
            return [.i32(0)]
        }
        define("config_get", [.i32, .i32, .i32, .i32], [.i32]) { caller, args in
            let name = String(decoding: try read(caller, args[0].i32, args[1].i32, inv), as: UTF8.self)
            guard let value = inv.config[name] else { return [.i32(UInt32(bitPattern: -1))] }
            return [.i32(try copyOut(caller, Array(value.utf8), dst: args[2].i32, cap: args[3].i32, inv))]
        }
        define("time_now_ms", [], [.i64]) { _, _ in
            [.i64(UInt64(bitPattern: Int64(Date().timeIntervalSince1970 * 1000)))]
        }
        define("db_request", [.i32, .i32], [.i32]) { caller, args in
            try checkDeadline(inv)
            guard inv.dbCalls < inv.limits.dbCalls else { return [.i32(UInt32(bitPattern: -2))] }
            inv.dbCalls += 1
            let bytes = try read(caller, args[0].i32, args[1].i32, inv)
            guard let data = inv.data, let request = try? FunctionDataRequest(json: JSON.parse(bytes)) else {
                return [.i32(UInt32(bitPattern: -1))]
            }
            let answer = data.run(request, deadline: inv.deadline)
            try checkDeadline(inv)
            inv.dbResult = answer
            return [.i32(UInt32(answer.count))]
        }
        define("db_result", [.i32, .i32], [.i32]) { caller, args in
            [.i32(try copyOut(caller, inv.dbResult, dst: args[0].i32, cap: args[1].i32, inv))]
        }
        return imports
    }

    static func checkDeadline(_ inv: Invocation) throws {
        if ContinuousClock.now >= inv.deadline {
            throw inv.stop(AeroError(.functionLimit, "the function ran longer than its wall_ms limit (\(inv.limits.wallMillis) ms)"))
        }
    }

    /// The guest's `memory`, and the range [ptr, ptr+len) checked against its current size.
    private static func memory(_ caller: borrowing WasmKit.Caller, _ ptr: UInt32, _ len: Int, _ inv: Invocation) throws -> Memory {
        guard let memory = caller.instance?.exports[memory: "memory"] else {
            throw inv.stop(AeroError(.functionFailed, "the module exports no memory"))
        }
        guard UInt64(ptr) + UInt64(len) <= UInt64(memory.byteCount) else {
            throw inv.stop(AeroError(.functionFailed, "the function passed an out-of-bounds pointer (\(ptr) + \(len) > \(memory.byteCount) bytes of memory)"))
        }
        return memory
    }

    static func read(_ caller: borrowing WasmKit.Caller, _ ptr: UInt32, _ len: UInt32, _ inv: Invocation) throws -> [UInt8] {
        let memory = try memory(caller, ptr, Int(len), inv)
        guard len > 0 else { return [] }
        return memory.withUnsafeBufferPointer(offset: UInt(ptr), count: Int(len)) { Array($0) }
    }

    /// Copies min(bytes.count, cap) bytes to dst; returns bytes.count.
    static func copyOut(_ caller: borrowing WasmKit.Caller, _ bytes: [UInt8], dst: UInt32, cap: UInt32, _ inv: Invocation) throws -> UInt32 {
        let n = min(bytes.count, Int(cap))
        let memory = try memory(caller, dst, n, inv)
        if n > 0 {
            memory.withUnsafeMutableBufferPointer(offset: UInt(dst), count: n) { out in
                bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
        }
        return UInt32(clamping: bytes.count)
    }

    static func validHeader(_ name: String, _ value: String) -> Bool {
        let token = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".unicodeScalars)
        guard !name.isEmpty, name.unicodeScalars.allSatisfy(token.contains) else { return false }
        return !value.unicodeScalars.contains { $0 == "\r" || $0 == "\n" || $0 == "\0" }
    }
}
