import Foundation
import Kernel
import Testing
import WAT
@testable import BaaS

/// The function runtime on real WasmKit modules (written in WAT here): the ABI, every limit, and
/// hostile modules. Each bad case must end in a clear AeroError, never a crash (FN1, FN2).
@Suite struct FunctionsRuntimeTests {
    static let runtime = FunctionRuntime(threads: 2)
    static let anon = Caller(role: "anon", claims: .object([:]))

    static let abi = """
      (import "aerodb" "request_read" (func $read (param i32 i32 i32) (result i32)))
      (import "aerodb" "response_write" (func $write (param i32 i32) (result i32)))
      (import "aerodb" "response_status" (func $status (param i32) (result i32)))
      (import "aerodb" "log" (func $log (param i32 i32 i32) (result i32)))
      (import "aerodb" "config_get" (func $config (param i32 i32 i32 i32) (result i32)))
    """

    static func module(_ body: String, memory: String = "(memory (export \"memory\") 1)") throws -> CompiledFunction {
        try FunctionRuntime.compile(try wat2wasm("(module \(abi) \(memory) \(body))"))
    }

    static func run(_ compiled: CompiledFunction, body: String = "", limits: FunctionLimits = .default,
                    config: [String: String] = [:]) async throws -> FunctionResponse {
        try await runtime.invoke(compiled, FunctionRequest(method: "POST", body: Array(body.utf8), caller: anon),
                                 limits: limits, config: config, data: nil)
    }

    static func limitError(_ compiled: CompiledFunction, limits: FunctionLimits = .default) async -> AeroError? {
        do {
            _ = try await run(compiled, limits: limits)
            return nil
        } catch {
            return error as? AeroError
        }
    }

    @Test func helloExampleEchoesTheBodyAndContentType() async throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/functions/hello/hello.wat")
        let compiled = try FunctionRuntime.compile(try wat2wasm(String(contentsOf: url, encoding: .utf8)))
        let out = try await Self.runtime.invoke(compiled, FunctionRequest(method: "POST", headers: [("Content-Type", "text/plain")],
                                                                          body: Array("hi there".utf8), caller: Self.anon),
                                                limits: .default, config: [:], data: nil)
        #expect(out.status == 200)
        #expect(String(decoding: out.body, as: UTF8.self) == "hi there")
        #expect(out.headers.contains { $0.0 == "content-type" && $0.1 == "text/plain" })
        #expect(out.logs.map(\.message) == ["hello: echoing the body"])
        let empty = try await Self.run(compiled)
        #expect(String(decoding: empty.body, as: UTF8.self) == "{}")
    }

    @Test func statusConfigAndSecretsReachTheGuest() async throws {
        let compiled = try Self.module("""
          (data (i32.const 0) "greeting")
          (func (export "handle") (result i32)
            (local $n i32)
            (drop (call $status (i32.const 201)))
            (local.set $n (call $config (i32.const 0) (i32.const 8) (i32.const 100) (i32.const 100)))
            (drop (call $write (i32.const 100) (local.get $n)))
            (i32.const 0))
        """)
        let out = try await Self.run(compiled, config: ["greeting": "salut"])
        #expect(out.status == 201)
        #expect(String(decoding: out.body, as: UTF8.self) == "salut")
    }

    /// FN2: fuel stops an infinite loop with a limit error.
    @Test func infiniteLoopRunsOutOfFuel() async throws {
        let compiled = try Self.module("(func (export \"handle\") (result i32) (loop $l (br $l)) (i32.const 0))")
        var limits = FunctionLimits.default
        limits.fuel = 1_000_000
        let error = await Self.limitError(compiled, limits: limits)
        #expect(error?.code == .functionLimit)
        #expect(error?.message.contains("fuel") == true)
    }

    /// FN2: the wall-time watchdog stops a loop that still has fuel.
    @Test func wallTimeStopsALoopWithFuelLeft() async throws {
        let compiled = try Self.module("(func (export \"handle\") (result i32) (loop $l (br $l)) (i32.const 0))")
        var limits = FunctionLimits.default
        limits.fuel = FunctionLimitDefaults.fuelRange.upperBound
        limits.wallMillis = 100
        let error = await Self.limitError(compiled, limits: limits)
        #expect(error?.code == .functionLimit)
        #expect(error?.message.contains("wall_ms") == true)
    }

    /// FN2: memory growth past memory_bytes is refused and reported as the limit.
    @Test func memoryBombIsStopped() async throws {
        let grow = try Self.module("""
          (func (export "handle") (result i32)
            (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable)
        """)
        let error = await Self.limitError(grow)
        #expect(error?.code == .functionLimit)
        #expect(error?.message.contains("memory_bytes") == true)
        // A module whose initial memory is over the limit is refused at instantiation.
        let big = try Self.module("(func (export \"handle\") (result i32) (i32.const 0))", memory: "(memory (export \"memory\") 2000)")
        #expect(await Self.limitError(big)?.code == .functionLimit)
    }

    @Test func hugeResponseIsStopped() async throws {
        let compiled = try Self.module("""
          (func (export "handle") (result i32)
            (loop $l (drop (call $write (i32.const 0) (i32.const 65536))) (br $l))
            (i32.const 0))
        """)
        let error = await Self.limitError(compiled)
        #expect(error?.code == .functionLimit)
        #expect(error?.message.contains("response_bytes") == true)
    }

    /// FN1: a guest pointer outside its memory ends the invocation; the host is not touched.
    @Test func outOfBoundsPointersAndTrapsAreFailures() async throws {
        let oob = try Self.module("""
          (func (export "handle") (result i32) (drop (call $write (i32.const 65000) (i32.const 1000))) (i32.const 0))
        """)
        let error = await Self.limitError(oob)
        #expect(error?.code == .functionFailed)
        #expect(error?.message.contains("out-of-bounds") == true)
        let wrap = try Self.module("""
          (func (export "handle") (result i32) (drop (call $read (i32.const 3) (i32.const -1) (i32.const -1))) (i32.const 0))
        """)
        #expect(await Self.limitError(wrap)?.code == .functionFailed)
        let trap = try Self.module("(func (export \"handle\") (result i32) unreachable)")
        #expect(await Self.limitError(trap)?.code == .functionFailed)
        let failing = try Self.module("(func (export \"handle\") (result i32) (i32.const 7))")
        #expect(await Self.limitError(failing)?.message == "handle returned 7")
    }

    /// FN1: the guest's own loads and stores are bounds-checked by the interpreter (the runtime
    /// asks WasmKit for software checks, not page protection): just past the end of its memory,
    /// far past it (inside the 4 GiB that page protection would have reserved), with a wrapping
    /// offset, and after a grow, each ends the invocation as a trap and the next one still runs.
    @Test func aGuestsOwnOutOfBoundsAccessIsATrap() async throws {
        let accesses = [
            "(drop (i32.load (i32.const 65533)))",  // the last 3 bytes of one page, 4 read
            "(i32.store8 (i32.const 65536) (i32.const 1))",
            "(drop (i64.load (i32.const 0x7fff0000)))",
            "(drop (i32.load offset=0xffffffff (i32.const 1)))",
            "(drop (memory.grow (i32.const 1))) (i32.store (i32.const 131070) (i32.const 1))",
        ]
        for access in accesses {
            let compiled = try Self.module("(func (export \"handle\") (result i32) \(access) (i32.const 0))")
            let error = await Self.limitError(compiled)
            #expect(error?.code == .functionFailed, "\(access)")
            #expect(error?.message.contains("trapped") == true, "\(access): \(String(describing: error))")
        }
        let inside = try Self.module("""
          (func (export "handle") (result i32)
            (drop (memory.grow (i32.const 1))) (i32.store (i32.const 131068) (i32.const 1)) (i32.const 0))
        """)
        #expect(try await Self.run(inside).status == 200)
    }

    @Test func badModulesAreRefusedAtCompile() throws {
        #expect(throws: AeroError.self) { try FunctionRuntime.compile([0, 1, 2, 3]) }
        #expect(throws: AeroError.self) { try FunctionRuntime.compile([]) }
        let noHandle = try wat2wasm("(module (memory (export \"memory\") 1))")
        #expect { try FunctionRuntime.compile(noHandle) } throws: { ($0 as? AeroError)?.message.contains("handle") == true }
        let foreign = try wat2wasm("""
          (module (import "env" "system" (func (param i32))) (memory (export "memory") 1)
            (func (export "handle") (result i32) (i32.const 0)))
        """)
        #expect { try FunctionRuntime.compile(foreign) } throws: { ($0 as? AeroError)?.message.contains("env.system") == true }
    }

    @Test func handleMustHaveTheRightType() async throws {
        let compiled = try FunctionRuntime.compile(try wat2wasm("(module (memory (export \"memory\") 1) (func (export \"handle\") (param i32)))"))
        await #expect(throws: AeroError.self) { try await Self.runtime.validate(compiled, limits: .default) }
    }

    @Test func limitsParseWithRangesAndNames() throws {
        #expect(try FunctionLimits.parse(nil) == .default)
        let custom = try FunctionLimits.parse(.object(["fuel": .int(5_000), "wall_ms": .int(200)]))
        #expect(custom.fuel == 5_000 && custom.wallMillis == 200)
        #expect(throws: AeroError.self) { try FunctionLimits.parse(.object(["fuel": .int(1)])) }
        #expect(throws: AeroError.self) { try FunctionLimits.parse(.object(["cpu": .int(1)])) }
        #expect(throws: AeroError.self) { try FunctionLimits.parse(.object(["wall_ms": .string("1")])) }
        #expect(throws: AeroError.self) { try FunctionLimits.parse(.object(["memory_bytes": .int(Int64.max)])) }
    }

    @Test func namesAndRPCDeclarationsAreChecked() throws {
        try FunctionStore.checkName("hello-world_2")
        for bad in ["", "Hello", "1abc", "a/b", "a b", "..", String(repeating: "a", count: 64), "é"] {
            #expect(throws: AeroError.self) { try FunctionStore.checkName(bad) }
        }
        #expect(try RPCParameter.parse(.string("a:int, b:int")) == [RPCParameter(name: "a", kind: .int), RPCParameter(name: "b", kind: .int)])
        #expect(throws: AeroError.self) { try RPCParameter.parse(.string("a:bigdecimal")) }
        #expect(throws: AeroError.self) { try RPCParameter.parse(.string("a:int,a:int")) }
        #expect(throws: AeroError.self) { try RPCParameter.parse(.string("A-b:int")) }
    }
}
