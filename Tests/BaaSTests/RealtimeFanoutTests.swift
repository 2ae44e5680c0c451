import Foundation
import Kernel
import Logging
import Testing
@testable import BaaS

/// The node's shared postgres_changes reader (ChangeFanout): one read per change, delivered
/// only to the subscriptions whose bindings match, with no gap and no repeat (RT1) when a
/// subscriber's outbox is full.
@Suite struct RealtimeFanoutTests {
    static let service = Caller(role: "service_role", claims: .object(["role": .string("service_role")]))

    static func withFanout(_ body: (Database, ChangeFanout) async throws -> Void) async throws {
        try await RealtimeTests.withDatabase { db in
            _ = try await db.createCollection(.object(["name": .string("fan"), "fields": .object([
                "id": .object(["type": .string("int")]), "grp": .object(["type": .string("int")]),
                "name": .object(["type": .string("text")]),
            ])]))
            let fanout = ChangeFanout(database: db, logger: Logger(label: "test"))
            let reader = Task { await fanout.run() }
            defer { reader.cancel() }
            try await body(db, fanout)
        }
    }

    static func subscribe(_ fanout: ChangeFanout, _ db: Database, _ topic: String, _ bindings: [[String: JSONValue]],
                          after: UInt64? = nil) throws -> ChangeSubscription {
        let parsed = try bindings.map { try ChangeBinding.parse(.object($0), database: db) }
        let subscription = ChangeSubscription(id: fanout.nextID(), topic: "realtime:\(topic)", bindings: parsed, caller: service,
                                              outbox: RealtimeOutbox(version: .v1), database: db, engine: PolicyEngine(),
                                              filters: fanout.filters)
        fanout.subscribe(subscription, after: after ?? db.releasedLSN)
        return subscription
    }

    /// Frames from `outbox` until `count` arrived or 6,000 empty polls 5 ms apart (at least 30 s)
    /// found nothing new (polling: never blocks). The bound counts polls, not wall time, so a
    /// cooperative pool kept busy by other tests does not use it up unseen.
    static func frames(_ outbox: RealtimeOutbox, count: Int) async throws -> [JSONValue] {
        var out: [JSONValue] = []
        var emptyPolls = 0
        while out.count < count && emptyPolls < 6_000 {
            let taken = outbox.takeAvailable()
            if taken.isEmpty {
                emptyPolls += 1
                try await Task.sleep(for: .milliseconds(5))
            }
            out += try taken.map { try JSON.parse($0) }
        }
        return out
    }

    static func insert(_ rows: [(Int64, Int64, String)]) -> JSONValue {
        .object(["ops": .array(rows.map { id, grp, name in
            .object(["op": .string("insert"), "collection": .string("fan"),
                     "doc": .object(["id": .int(id), "grp": .int(grp), "name": .string(name)])])
        })])
    }

    static func op(_ op: String, _ id: Int64, set: Document? = nil) -> JSONValue {
        var o: [String: JSONValue] = ["op": .string(op), "collection": .string("fan"), "key": .int(id)]
        if let set { o["set"] = .object(set) }
        return .object(["ops": .array([.object(o)])])
    }

    static func summary(_ frame: JSONValue) -> String {
        let data = frame["payload"]?["data"]
        let row = data?["record"] ?? data?["old_record"]
        let ids = frame["payload"]?["ids"]?.arrayValue?.count ?? 0
        return "\(data?["type"]?.stringValue ?? "?") \(row?["id"].map { JSON.encodeString($0) } ?? "?")/\(ids)"
    }

    /// Only the subscriptions whose table, event and filter match get a frame, once; eq filters
    /// (indexed by value) and other filters (evaluated per change) agree with the bindings.
    @Test func eachChangeReachesOnlyTheMatchingSubscriptionsOnce() async throws {
        try await Self.withFanout { db, fanout in
            let a = try Self.subscribe(fanout, db, "a", [["event": .string("INSERT"), "table": .string("fan"), "filter": .string("grp=eq.1")]])
            let b = try Self.subscribe(fanout, db, "b", [["event": .string("*"), "table": .string("fan"), "filter": .string("grp=eq.2")]])
            let c = try Self.subscribe(fanout, db, "c", [["event": .string("*"), "table": .string("fan"), "filter": .string("grp=gt.1")]])
            let d = try Self.subscribe(fanout, db, "d", [["event": .string("DELETE"), "table": .string("fan")]])
            let e = try Self.subscribe(fanout, db, "e", [["event": .string("*")]])
            let f = try Self.subscribe(fanout, db, "f", [["event": .string("INSERT"), "table": .string("fan"), "filter": .string("grp=eq.1")],
                                                         ["event": .string("INSERT"), "table": .string("fan"), "filter": .string("name=eq.x")]])
            _ = try await db.commit(Self.insert([(1, 1, "x")]))
            _ = try await db.commit(Self.insert([(2, 2, "y")]))
            _ = try await db.commit(Self.op("update", 2, set: ["grp": .int(1)]))
            _ = try await db.commit(Self.op("delete", 1))
            let all = try await Self.frames(e.outbox, count: 4)
            #expect(all.map(Self.summary) == ["INSERT 1/1", "INSERT 2/1", "UPDATE 2/1", "DELETE 1/1"])
            #expect(all.allSatisfy { $0["topic"]?.stringValue == "realtime:e" && $0["event"]?.stringValue == "postgres_changes" })
            // A sentinel only `e` and `c` match: once `e` has it, every earlier change was dispatched.
            _ = try await db.commit(Self.insert([(3, 3, "z")]))
            #expect(try await Self.frames(e.outbox, count: 1).map(Self.summary) == ["INSERT 3/1"])
            #expect(try await Self.frames(c.outbox, count: 2).map(Self.summary) == ["INSERT 2/1", "INSERT 3/1"])
            #expect(a.outbox.takeAvailable().compactMap { try? JSON.parse($0) }.map(Self.summary) == ["INSERT 1/1"])
            #expect(b.outbox.takeAvailable().compactMap { try? JSON.parse($0) }.map(Self.summary) == ["INSERT 2/1"])
            #expect(d.outbox.takeAvailable().compactMap { try? JSON.parse($0) }.map(Self.summary) == ["DELETE 1/1"])
            // Both bindings of `f` match the first row: one frame naming both ids.
            #expect(f.outbox.takeAvailable().compactMap { try? JSON.parse($0) }.map(Self.summary) == ["INSERT 1/2"])
            #expect(c.outbox.takeAvailable().isEmpty)
            #expect(fanout.counts.members == 6)
            fanout.remove(e)
            _ = try await db.commit(Self.insert([(4, 2, "w")]))
            #expect(try await Self.frames(b.outbox, count: 1).map(Self.summary) == ["INSERT 4/1"])
            #expect(e.outbox.takeAvailable().isEmpty)
            #expect(fanout.counts.members == 5)
        }
    }

    /// RT1: a subscriber whose outbox fills leaves the shared reader, catches up from the WAL
    /// and rejoins: it receives every change once, in LSN order, while another subscriber
    /// keeps receiving; a resume after an LSN replays exactly what follows it.
    @Test func aFullOutboxCatchesUpWithNoGapAndNoRepeat() async throws {
        try await Self.withFanout { db, fanout in
            let start = db.releasedLSN
            let slow = try Self.subscribe(fanout, db, "slow", [["event": .string("INSERT"), "table": .string("fan")]])
            let fast = try Self.subscribe(fanout, db, "fast", [["event": .string("INSERT"), "table": .string("fan")]])
            let transactions = 150, rows = 10  // 1,500 frames: more than one outbox holds
            let drained = Task { try await Self.frames(fast.outbox, count: transactions * rows) }
            var lsns: [UInt64] = []
            for t in 0..<transactions {
                let batch = (0..<rows).map { r in (Int64(t * rows + r), Int64(t % 3), "n") }
                lsns.append(try await db.commit(Self.insert(batch)).lsn)
            }
            #expect(try await drained.value.count == transactions * rows)
            let got = try await Self.frames(slow.outbox, count: transactions * rows)
            let ids = got.compactMap { $0["payload"]?["data"]?["record"]?["id"]?.intValue }
            #expect(ids == (0..<Int64(transactions * rows)).map { $0 })
            let frameLSNs = got.compactMap { $0["payload"]?["data"]?["lsn"]?.stringValue.flatMap(UInt64.init) }
            #expect(frameLSNs == lsns.flatMap { Array(repeating: $0, count: rows) })
            // Caught up: it rejoins the shared reader and receives the next change live, once.
            var waited = 0
            while fanout.counts.catchingUp > 0 && waited < 3_000 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
            #expect(fanout.counts.catchingUp == 0)
            _ = try await db.commit(Self.insert([(99_999, 1, "last")]))
            #expect(try await Self.frames(slow.outbox, count: 1).map(Self.summary) == ["INSERT 99999/1"])
            // A resume after the 75th transaction replays exactly the rest.
            let resumed = try Self.subscribe(fanout, db, "resumed", [["event": .string("INSERT"), "table": .string("fan")]],
                                             after: lsns[74])
            let rest = try await Self.frames(resumed.outbox, count: 75 * rows + 1)
            #expect(rest.compactMap { $0["payload"]?["data"]?["record"]?["id"]?.intValue }
                == (750..<1_500).map { Int64($0) } + [99_999])
            _ = start
        }
    }

    /// With nothing live the shared reader reads nothing (it decoded every change for nobody);
    /// it wakes for an attach and delivers from the subscriber's LSN, with no gap and no
    /// repeat, and a resume from before the idle stretch catches up from the WAL (RT1).
    @Test func anIdleReaderReadsNothingAndWakesForAnAttach() async throws {
        try await Self.withFanout { db, fanout in
            func waitIdle(_ idle: Bool) async throws {
                var waited = 0
                while fanout.readerIsIdle != idle && waited < 3_000 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
                #expect(fanout.readerIsIdle == idle)
            }
            try await waitIdle(true)
            var lsns: [UInt64] = []
            for i in 0..<20 { lsns.append(try await db.commit(Self.insert([(Int64(i), 1, "idle")])).lsn) }
            #expect(fanout.readerIsIdle, "commits with no live subscription do not wake the reader")
            let first = try Self.subscribe(fanout, db, "first", [["event": .string("INSERT"), "table": .string("fan")]])
            try await waitIdle(false)
            _ = try await db.commit(Self.insert([(100, 1, "a"), (101, 2, "b")]))
            #expect(try await Self.frames(first.outbox, count: 2).map(Self.summary) == ["INSERT 100/1", "INSERT 101/1"])
            fanout.remove(first)
            _ = try await db.commit(Self.insert([(102, 1, "c")]))  // the reader takes it, then finds nothing live
            try await waitIdle(true)
            for i in 200..<210 { _ = try await db.commit(Self.insert([(Int64(i), 1, "idle")])) }
            // A resume from before the idle stretch: from the WAL, then live; nothing twice.
            let resumed = try Self.subscribe(fanout, db, "resumed", [["event": .string("INSERT"), "table": .string("fan")]],
                                             after: lsns[9])
            let live = try Self.subscribe(fanout, db, "live", [["event": .string("INSERT"), "table": .string("fan"),
                                                                "filter": .string("grp=eq.2")]])
            _ = try await db.commit(Self.insert([(300, 2, "d")]))
            let expected = (10..<20).map { Int64($0) } + [100, 101, 102] + (200..<210).map { Int64($0) } + [300]
            let got = try await Self.frames(resumed.outbox, count: expected.count)
            #expect(got.compactMap { $0["payload"]?["data"]?["record"]?["id"]?.intValue } == expected)
            #expect(try await Self.frames(live.outbox, count: 1).map(Self.summary) == ["INSERT 300/1"])
            try await Task.sleep(for: .milliseconds(50))
            #expect(resumed.outbox.takeAvailable().isEmpty && live.outbox.takeAvailable().isEmpty)
        }
    }

    /// RT5's policy watch compares stamps, not the change stream: a write to a data collection
    /// leaves them equal; a policy, an RLS flag or any schema change makes them differ.
    @Test func thePolicyStampChangesWithPoliciesRLSAndSchemasOnly() async throws {
        try await Self.withFanout { db, _ in
            for schema in PolicyStore.schemas { _ = try await db.createCollection(schema) }
            func stamp() -> RealtimeService.PolicyStamp { RealtimeService.PolicyStamp(db.snapshot().state) }
            var last = stamp()
            func expectChange(_ changed: Bool, _ what: Comment) {
                let now = stamp()
                #expect((now != last) == changed, what)
                last = now
            }
            _ = try await db.commit(Self.insert([(1, 1, "a")]))
            expectChange(false, "a row in a data collection")
            _ = try await db.commit(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string(PolicyStore.enabled),
                "doc": .object(["collection": .string("fan"), "enabled": .bool(true)])])])]))
            expectChange(true, "row-level security enabled")
            _ = try await db.commit(.object(["ops": .array([.object(["op": .string("insert"), "collection": .string(PolicyStore.policies),
                "doc": .object(["id": .string("p1"), "collection": .string("fan"), "name": .string("p1"), "operation": .string("select"),
                                "roles": .array([.string("anon")]), "using": .string("true")])])])]))
            expectChange(true, "a policy")
            _ = try await db.createCollection(.object(["name": .string("other"), "fields": .object(["id": .object(["type": .string("int")])])]))
            expectChange(true, "a schema")
            _ = try await db.commit(Self.op("delete", 1))
            expectChange(false, "a delete in a data collection")
        }
    }

    /// The frame the fan-out wraps around a shared `data` object is the frame `encoded` gives.
    @Test func wrappedChangeFramesEqualEncodedFrames() throws {
        let data: JSONValue = .object(["type": .string("INSERT"), "record": .object(["id": .int(1), "t": .string("a\"b")])])
        for version in [RealtimeVersion.v1, .v2] {
            let frame = RealtimeFrame(joinRef: nil, ref: nil, topic: "realtime:q\"x", event: "postgres_changes",
                                      payload: .object(["ids": .array([.int(7), .int(9)]), "data": data]))
            let wrapped = RealtimeFrame.changeText(version, topic: frame.topic, ids: [7, 9], data: JSON.encodeString(data))
            #expect(try JSON.parse(wrapped) == JSON.parse(frame.encoded(version)))
        }
    }
}
