import Foundation
import Kernel
import Logging
import Testing
import WAT
@testable import BaaS

/// The function store on a real kernel in a temporary directory: chunking past the document
/// size limit with the checksum checked on load, versions kept and rolled back, delete (FN3).
@Suite struct FunctionsStoreTests {
    static func withService(_ body: (FunctionService, Database) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "aerodb-fn-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        let keys = KeyChecker(secret: Array(repeating: 7, count: 32), clock: SystemClock(), database: db)
        do {
            try await body(FunctionService(database: db, keys: keys, logger: Logger(label: "test")), db)
        } catch {
            await db.close()
            throw error
        }
        await db.close()
    }

    static func deployJSON(_ name: String, _ bytes: [UInt8], rpc: String? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["name": .string(name), "module": .string(Data(bytes).base64EncodedString())]
        if let rpc { o["rpc"] = .string(rpc) }
        return .object(o)
    }

    /// A module of about `size` bytes (a data segment), answering "ok".
    static func module(size: Int) throws -> [UInt8] {
        let pages = size / 65536 + 2
        return try wat2wasm("""
          (module (import "aerodb" "response_write" (func $w (param i32 i32) (result i32)))
            (memory (export "memory") \(pages))
            (data (i32.const 0) "ok")
            (data (i32.const 16) "\(String(repeating: "z", count: size))")
            (func (export "handle") (result i32) (drop (call $w (i32.const 0) (i32.const 2))) (i32.const 0)))
        """)
    }

    @Test func bigModulesAreChunkedAndCheckedOnLoad() async throws {
        try await Self.withService { service, db in
            let bytes = try Self.module(size: 1_200_000)
            #expect(bytes.count > KernelLimits.documentBytesMax)
            let (v, _) = try await service.deploy(Self.deployJSON("big", bytes))
            #expect(v.chunks == 3 && v.bytes == bytes.count)
            let loaded = try #require(try service.load("big"))
            let out = try await service.invoke(loaded.0, loaded.1, FunctionRequest(method: "GET", caller: Caller(role: "anon", claims: .object([:]))), data: nil)
            #expect(out.body == Array("ok".utf8))
            // An altered chunk is refused on load (a fresh node's service, no cached module).
            _ = try await db.commit([.update(collection: FunctionStore.chunks, target: .key(.string("big@1#1")),
                                             set: ["data": .string(Data(repeating: 1, count: 10).base64EncodedString())])])
            let fresh = FunctionService(database: db, keys: service.keys, logger: Logger(label: "test"))
            #expect { _ = try fresh.load("big") } throws: { ($0 as? AeroError)?.code == .functionFailed }
            // A module over the bound is refused before anything is stored.
            let tooBig = [UInt8](repeating: 0, count: FunctionRuntimeLimits.moduleBytesMax + 1)
            await #expect(throws: AeroError.self) { _ = try await service.deploy(Self.deployJSON("huge", tooBig)) }
            #expect(try FunctionStore.activeVersion("huge", db.snapshot()) == nil)
        }
    }

    @Test func versionsAreKeptRolledBackAndDeleted() async throws {
        try await Self.withService { service, db in
            let small = try Self.module(size: 10)
            for _ in 0..<(FunctionRuntimeLimits.versionsKept + 2) {
                _ = try await service.deploy(Self.deployJSON("v", small, rpc: "a:int"))
            }
            let all = try FunctionStore.allVersions("v", db.snapshot()).map(\.version)
            #expect(all == Array(3...(FunctionRuntimeLimits.versionsKept + 2)))
            let (back, _) = try await FunctionStore.rollback("v", to: nil, database: db)
            #expect(back.version == FunctionRuntimeLimits.versionsKept + 1)
            #expect(try FunctionStore.activeVersion("v", db.snapshot())?.version == back.version)
            await #expect(throws: AeroError.self) { _ = try await FunctionStore.rollback("v", to: 1, database: db) }
            _ = try await FunctionStore.delete("v", database: db)
            let snapshot = db.snapshot()
            #expect(try FunctionStore.activeVersion("v", snapshot) == nil)
            #expect(try snapshot.rowsIfPresent(Query(collection: FunctionStore.chunks, limit: 10)).isEmpty)
            #expect(try snapshot.rowsIfPresent(Query(collection: FunctionStore.versions, limit: 10)).isEmpty)
            await #expect(throws: AeroError.self) { _ = try await FunctionStore.delete("v", database: db) }
        }
    }
}
