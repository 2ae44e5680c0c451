import Foundation
import Kernel
import Logging
import Testing
import WAT
@testable import BaaS

/// Database triggers of functions (docs/FUNCTIONS.md "Database triggers", FN5): every matching
/// committed change is delivered in LSN order with its idempotency key, the cursor follows what
/// was delivered, a failing delivery is retried and dead-lettered, a node that is not the
/// primary delivers nothing.
@Suite(.serialized) struct FunctionsTriggerTests {
    /// Logs the `x-aerodb-trigger-id` header it was invoked with.
    static let logsItsTriggerID = """
      (module
        (import "aerodb" "request_header" (func $hdr (param i32 i32 i32 i32) (result i32)))
        (import "aerodb" "log" (func $log (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 0) "x-aerodb-trigger-id")
        (func (export "handle") (result i32)
          (drop (call $log (i32.const 1) (i32.const 100) (call $hdr (i32.const 0) (i32.const 19) (i32.const 100) (i32.const 64))))
          (i32.const 0)))
    """
    /// Always answers 503.
    static let alwaysFails = """
      (module (import "aerodb" "response_status" (func $status (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "handle") (result i32) (drop (call $status (i32.const 503))) (i32.const 0)))
    """

    struct Node {
        let dir: String
        let db: Database
        let service: FunctionService

        static func open() async throws -> Node {
            let dir = NSTemporaryDirectory() + "aerodb-trigger-\(UUID().uuidString)"
            let db = try await Database.open(KernelOptions(dataDirectory: dir))
            let keys = KeyChecker(secret: Array(repeating: 7, count: 32), clock: SystemClock(), database: db)
            _ = try await db.createCollection(JSONValue.object([
                "name": .string("notes"),
                "fields": .object(["id": .object(["type": .string("text")]), "n": .object(["type": .string("int")])]),
            ]))
            return Node(dir: dir, db: db, service: FunctionService(database: db, keys: keys, logger: Logger(label: "test")))
        }

        func deploy(_ name: String, _ wat: String, trigger: JSONValue) async throws {
            _ = try await service.deploy(.object(["name": .string(name), "module": .string(Data(try wat2wasm(wat)).base64EncodedString()),
                                                  "trigger": trigger]))
        }

        func insert(_ ids: [String]) async throws -> UInt64 {
            try await db.commit(ids.map { .insert(collection: "notes", document: ["id": .string($0), "n": .int(1)]) }).lsn
        }

        /// The trigger ids `name` logged, in order.
        func delivered(_ name: String) -> [String] {
            service.logs.recent(name, limit: FunctionRuntimeLimits.logLinesPerFunctionMax).map(\.line.message)
                .filter { !$0.hasPrefix("trigger:") }
        }

        func close() async {
            await db.close()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Polls `condition` for up to 30 s (a loaded machine is slow; nothing here is timed).
    func eventually(_ condition: () throws -> Bool) async rethrows -> Bool {
        for _ in 0..<300 {
            if try condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return try condition()
    }

    @Test func triggerSpecsAreCheckedAndABadOneDeploysNothing() async throws {
        let spec = try FunctionTrigger(json: .object(["collection": .string("notes"), "events": .array([.string("insert")])]))
        #expect(spec.events == [.insert])
        #expect(try FunctionTrigger(json: .object(["collection": .string("notes")])).events == [.insert, .update, .delete])
        for bad: JSONValue in [.string("notes"), .object([:]), .object(["collection": .string("_functions")]),
                               .object(["collection": .string("notes"), "events": .array([])]),
                               .object(["collection": .string("notes"), "events": .array([.string("truncate")])]),
                               .object(["collection": .string("notes"), "when": .string("after")])] {
            #expect(throws: AeroError.self, "\(bad)") { try FunctionTrigger(json: bad) }
        }
        let node = try await Node.open()
        await #expect(throws: AeroError.self) {
            try await node.deploy("bad", Self.logsItsTriggerID, trigger: .object(["collection": .string("_function_triggers")]))
        }
        #expect(try FunctionStore.activeVersion("bad", node.db.snapshot()) == nil)
        await node.close()
    }

    /// FN5: changes committed after the deploy, of the trigger's collection and events only, in
    /// LSN order, each once with "<lsn>:<index>"; the cursor reaches the last one; a new worker
    /// (a restart, a new primary) re-delivers nothing.
    @Test func everyMatchingChangeIsDeliveredOnceInOrder() async throws {
        let node = try await Node.open()
        let before = try await node.insert(["before"])
        try await node.deploy("log", Self.logsItsTriggerID,
                              trigger: .object(["collection": .string("notes"), "events": .array([.string("insert"), .string("delete")])]))
        let runner = FunctionTriggers.start(service: node.service, isPrimary: { true })
        let a = try await node.insert(["a"])
        let bc = try await node.insert(["b", "c"])
        _ = try await node.db.commit([.update(collection: "notes", target: .key(.string("a")), set: ["n": .int(2)])])  // not an event of it
        let d = try await node.db.commit([.delete(collection: "notes", target: .key(.string("b")))]).lsn
        let expected = ["\(a):0", "\(bc):0", "\(bc):1", "\(d):0"]
        #expect(await eventually { node.delivered("log").count >= expected.count }, "\(node.delivered("log"))")
        #expect(node.delivered("log") == expected)
        #expect(!node.delivered("log").contains("\(before):0"))
        #expect(try await eventually { try FunctionTriggers.cursor("log", node.db.snapshot()) == d })
        runner.cancel()
        await runner.value  // its workers have stopped: none of them sees `e` below

        // A fresh worker continues from the stored cursor: nothing is delivered twice.
        let again = FunctionTriggers.start(service: node.service, isPrimary: { true })
        let e = try await node.insert(["e"])
        #expect(await eventually { node.delivered("log").count >= expected.count + 1 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(node.delivered("log") == expected + ["\(e):0"])
        again.cancel()
        await node.close()
    }

    /// A worker whose conditional cursor write loses (another writer moved the cursor) stops and
    /// is started again by the reconciler from the stored cursor: later changes are still
    /// delivered (a change may be delivered again: at least once).
    @Test func aWorkerThatLosesItsCursorIsStartedAgain() async throws {
        let node = try await Node.open()
        try await node.deploy("log", Self.logsItsTriggerID, trigger: .object(["collection": .string("notes")]))
        let runner = FunctionTriggers.start(service: node.service, isPrimary: { true })
        let a = try await node.insert(["a"])
        #expect(try await eventually { try FunctionTriggers.cursor("log", node.db.snapshot()) == a })
        // Someone else moves the cursor: the worker's next conditional write fails.
        _ = try await node.db.commit([.update(collection: FunctionTriggers.cursors, target: .key(.string("log")), set: ["after_lsn": .int(Int64(a))  ])])
        _ = try await node.db.commit([.update(collection: FunctionTriggers.cursors, target: .key(.string("log")), set: ["after_lsn": .int(Int64(a - 1))])])
        let b = try await node.insert(["b"])
        let c = try await node.insert(["c"])
        #expect(await eventually { node.delivered("log").contains("\(c):0") }, "\(node.delivered("log"))")
        #expect(node.delivered("log").contains("\(b):0"))
        runner.cancel()
        await node.close()
    }

    /// A delivery that keeps failing is retried `attemptsMax` times, then dead-lettered, and the
    /// trigger moves on to the next change.
    @Test func aFailingDeliveryIsRetriedThenDeadLettered() async throws {
        let node = try await Node.open()
        try await node.deploy("fails", Self.alwaysFails, trigger: .object(["collection": .string("notes")]))
        let runner = FunctionTriggers.start(service: node.service, isPrimary: { true })
        let lsn = try await node.insert(["x"])
        #expect(try await eventually { try !FunctionTriggers.listDeadLetters("fails", node.db.snapshot(), limit: 10).isEmpty })
        let letters = try FunctionTriggers.listDeadLetters("fails", node.db.snapshot(), limit: 10)
        #expect(letters.count == 1)
        #expect(letters.first?["lsn"] == .int(Int64(lsn)) && letters.first?["attempts"] == .int(Int64(FunctionTriggers.attemptsMax)))
        #expect(letters.first?["event"] == .string("insert") && letters.first?["key"] == .string("x"))
        #expect(letters.first?["error"]?.stringValue?.contains("503") == true)
        let attempts = node.service.logs.recent("fails", limit: 100).filter { $0.line.message.hasPrefix("trigger: change \(lsn):0 attempt") }
        #expect(attempts.count == FunctionTriggers.attemptsMax)
        #expect(try await eventually { try FunctionTriggers.cursor("fails", node.db.snapshot()) == lsn })
        runner.cancel()
        #expect(FunctionTriggers.backoff(afterAttempt: 1) == FunctionTriggers.backoffMillis)
        #expect(FunctionTriggers.backoff(afterAttempt: FunctionTriggers.attemptsMax) == nil)
        #expect(FunctionTriggers.backoff(afterAttempt: 4) ?? 0 <= FunctionTriggers.backoffMillisMax)
        await node.close()
    }

    /// Triggers fire on the primary only: a replica's runner delivers nothing and moves no cursor.
    @Test func aNodeThatIsNotThePrimaryDeliversNothing() async throws {
        let node = try await Node.open()
        try await node.deploy("log", Self.logsItsTriggerID, trigger: .object(["collection": .string("notes")]))
        let start = try #require(try FunctionTriggers.cursor("log", node.db.snapshot()))
        let runner = FunctionTriggers.start(service: node.service, isPrimary: { false })
        _ = try await node.insert(["a"])
        try await Task.sleep(for: .milliseconds(1_500))  // a reconcile period and more: it had every chance
        #expect(node.delivered("log").isEmpty)
        #expect(try FunctionTriggers.cursor("log", node.db.snapshot()) == start)
        runner.cancel()
        await node.close()
    }
}
