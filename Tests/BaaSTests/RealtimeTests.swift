import Foundation
import Kernel
import Synchronization
import Testing
@testable import BaaS

/// The kernel change stream as realtime reads it (ChangeHub) and the realtime outbox's bounds.
@Suite struct RealtimeTests {
    static func withDatabase(_ body: (Database) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "aerodb-rt-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        do { try await body(db) } catch {
            await db.close()
            throw error
        }
        await db.close()
    }

    /// A commit gate the test opens by hand (the replica flushes of `sync` mode), or fails.
    final class ManualGate: CommitGate {
        private let state = Mutex<(open: Bool, fail: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, false, []))

        func wait(_ lsn: UInt64) async throws {
            await withCheckedContinuation { c in
                let now = state.withLock { s -> Bool in
                    if s.open || s.fail { return true }
                    s.waiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
            if state.withLock({ $0.fail }) { throw AeroError(.commitInDoubt, "test: replica did not confirm") }
        }

        func release(failing: Bool) {
            let waiters = state.withLock { s in
                if failing { s.fail = true } else { s.open = true }
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume() }
        }

        func reset() { state.withLock { $0 = (false, false, []) } }
    }

    /// The next batch within `millis`, or nil.
    static func pull(_ db: Database, after cursor: UInt64, millis: Int) async -> ChangeBatch? {
        await withTaskGroup(of: ChangeBatch?.self) { group in
            group.addTask { try? await db.nextChanges(after: cursor, maxCount: 100) }
            group.addTask { try? await Task.sleep(for: .milliseconds(millis)); return nil }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    static func insert(_ id: String) -> JSONValue {
        .object(["ops": .array([.object(["op": .string("insert"), "collection": .string("items"),
                                         "doc": .object(["id": .string(id)])])])])
    }

    /// RT2: in `sync` mode a commit still waiting for its replica (or failed as in doubt) is
    /// never shown to a subscriber; it is shown once acknowledged.
    @Test func changeStreamShowsOnlyAcknowledgedCommits() async throws {
        try await Self.withDatabase { db in
            _ = try await db.createCollection(.object(["name": .string("items"), "fields": .object(["id": .object(["type": .string("text")])])]))
            let start = db.releasedLSN
            let gate = ManualGate()
            db.setCommitGate(gate)
            let pending = Task { try await db.commit(Self.insert("a")) }
            // Durable and visible locally, waiting for the gate: not released.
            var waited = 0
            while db.snapshot().lsn == start && waited < 200 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
            #expect(db.snapshot().lsn > start)
            #expect(db.releasedLSN == start)
            #expect(await Self.pull(db, after: start, millis: 200) == nil)
            // In doubt: still never shown.
            gate.release(failing: true)
            await #expect(throws: AeroError.self) { try await pending.value }
            #expect(await Self.pull(db, after: start, millis: 200) == nil)
            // The next acknowledged commit releases both (a replica holding it holds the prefix).
            gate.reset()
            gate.release(failing: false)
            let b = try await db.commit(Self.insert("b"))
            let batch = try #require(await Self.pull(db, after: start, millis: 2_000))
            let ids = batch.transactions.flatMap(\.changes).map { $0.key }
            #expect(ids == [.string("a"), .string("b")] || ids == [.string("a")])
            #expect(db.releasedLSN == b.lsn)
        }
    }

    /// RT1: a cursor pulled batch by batch sees every change once, in LSN order, whether it
    /// reads from the shared window or from the WAL behind it.
    @Test func changeStreamHasNoGapAndNoRepeat() async throws {
        try await Self.withDatabase { db in
            _ = try await db.createCollection(.object(["name": .string("items"), "fields": .object(["id": .object(["type": .string("text")])])]))
            let start = db.releasedLSN
            var lsns: [UInt64] = []
            for n in 0..<50 { lsns.append(try await db.commit(Self.insert("k\(n)")).lsn) }
            var cursor = start, seen: [UInt64] = []
            while cursor < lsns.last! {
                let batch = try #require(await Self.pull(db, after: cursor, millis: 2_000))
                seen += batch.transactions.filter { !$0.changes.isEmpty }.map(\.lsn)
                #expect(batch.through > cursor)
                cursor = batch.through
            }
            #expect(seen == lsns)
            // Resuming in the middle gives exactly the rest.
            let middle = lsns[24]
            var rest: [UInt64] = []
            cursor = middle
            while cursor < lsns.last! {
                let batch = try #require(await Self.pull(db, after: cursor, millis: 2_000))
                rest += batch.transactions.map(\.lsn)
                cursor = batch.through
            }
            #expect(rest == Array(lsns[25...]))
        }
    }

    /// Backpressure: events stop at the named bound, broadcasts past it are counted and reported
    /// by a system message, and a client that reads nothing at all is closed (1008).
    @Test func outboxIsBounded() async throws {
        let outbox = RealtimeOutbox(version: .v1)
        func frame(_ n: Int) -> RealtimeFrame {
            RealtimeFrame(joinRef: nil, ref: nil, topic: "realtime:t", event: "broadcast", payload: .object(["n": .int(Int64(n))]))
        }
        for n in 0..<RealtimeLimits.outboundEventsMax { #expect(outbox.push(frame(n), .event)) }
        #expect(!outbox.push(frame(-1), .event))
        #expect(!outbox.hasRoom)
        outbox.pushDroppable(frame(-2))
        let taken = try #require(await outbox.take())
        #expect(taken.frames.count == RealtimeLimits.outboundEventsMax + 1)
        #expect(taken.frames.last!.contains("\"dropped\":1"))
        #expect(outbox.hasRoom)
        for n in 0..<(RealtimeLimits.outboundEventsMax + RealtimeLimits.outboundControlHeadroom) {
            outbox.push(frame(n), n < RealtimeLimits.outboundEventsMax ? .event : .control)
        }
        #expect(!outbox.isClosed)
        #expect(!outbox.push(frame(0), .control))
        #expect(outbox.isClosed)
        let rest = try #require(await outbox.take())
        #expect(rest.frames.count == RealtimeLimits.outboundEventsMax + RealtimeLimits.outboundControlHeadroom)
        let close = try #require(await outbox.take())
        #expect(close.close?.code == 1008)
    }

    /// Frames: both serializers, the binary broadcast push, and bounded refusals.
    @Test func framesParseAndRefuseBadInput() throws {
        let v1 = try RealtimeFrame.parse(text: #"{"event":"phx_join","topic":"realtime:a","payload":{},"ref":"1","join_ref":"1"}"#, .v1)
        #expect(v1.event == "phx_join" && v1.ref == "1")
        let v2 = try RealtimeFrame.parse(text: #"["1","2","realtime:a","broadcast",{"event":"e"}]"#, .v2)
        #expect(v2.joinRef == "1" && v2.ref == "2" && v2.event == "broadcast")
        #expect(v2.encoded(.v2) == #"["1","2","realtime:a","broadcast",{"event":"e"}]"#)
        let body = Array(#"{"x":1}"#.utf8)
        let bin: [UInt8] = [3, 1, 1, 10, 1, 0, 1] + Array("1".utf8) + Array("3".utf8) + Array("realtime:a".utf8) + Array("e".utf8) + body
        let pushed = try RealtimeFrame.parse(binary: bin, .v2)
        #expect(pushed.event == "broadcast" && pushed.payload["event"] == .string("e") && pushed.payload["payload"]?["x"] == .int(1))
        for bad in ["{", "[]", "[1,2,3,4,5]", #"{"event":1,"topic":"t"}"#, String(repeating: "[", count: 10_000)] {
            #expect(throws: AeroError.self) { try RealtimeFrame.parse(text: bad, .v1) }
        }
        #expect(throws: AeroError.self) { try RealtimeFrame.parse(binary: [3, 200, 0, 0, 0, 0, 1], .v2) }
        #expect(throws: AeroError.self) { try RealtimeFrame.parse(binary: [4, 0, 0, 0, 0, 0, 1], .v2) }
        #expect(throws: AeroError.self) { try RealtimeConnection.resumeLSN(.string("-1")) }
        #expect(try RealtimeConnection.resumeLSN(.string("18446744073709551615")) == KernelLimits.lsnMax)
    }
}
