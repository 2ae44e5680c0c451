import Foundation
import Kernel
import Logging
import Testing
@testable import BaaS

/// RT4: the relay of broadcast and presence between members (RealtimeRelay), below the HTTP
/// layer: signatures, the snapshot/sequence rules of a receiver, and the bounded link queue.
/// The end-to-end behaviour (three real nodes, the official client, SIGKILL) is
/// Tests/Compat/test_realtime_cluster.py.
@Suite struct RealtimeRelayTests {
    static let secret = Array(repeating: UInt8(9), count: 32)

    static func withService(_ body: (RealtimeService) async throws -> Void) async throws {
        try await RealtimeTests.withDatabase { db in
            let keys = KeyChecker(secret: secret, clock: SystemClock(), database: db)
            try await body(RealtimeService(database: db, keys: keys, logger: Logger(label: "test"),
                                           peers: RealtimePeers(nodeID: "n1", others: [])))
        }
    }

    static let lobby = TopicKey(topic: "realtime:lobby", isPrivate: false)

    static func track(_ conn: Int64, _ key: String, ref: String) -> JSONValue {
        .object(["kind": .string("track"), "topic": .string("realtime:lobby"), "private": .bool(false), "conn": .int(conn),
                 "key": .string(key), "meta": .object(["phx_ref": .string(ref)])])
    }

    static func untrack(_ conn: Int64) -> JSONValue {
        .object(["kind": .string("untrack"), "topic": .string("realtime:lobby"), "private": .bool(false), "conn": .int(conn)])
    }

    static func snapshot(_ items: [(Int64, String, String)]) -> [JSONValue] {
        items.map { conn, key, ref in
            .object(["topic": .string("realtime:lobby"), "private": .bool(false), "conn": .int(conn), "key": .string(key),
                     "meta": .object(["phx_ref": .string(ref)])])
        }
    }

    static func keys(_ service: RealtimeService, _ topic: TopicKey = lobby) -> [String] {
        guard case .object(let state) = service.presenceState(topic) else { return [] }
        return state.keys.sorted()
    }

    @Test func batchesAreSignedUnderTheirOwnDomain() {
        let body = Array(#"{"origin":"n2"}"#.utf8)
        let mac = RealtimeRelay.mac(body, secret: Self.secret)
        #expect(RealtimeRelay.validMAC(mac, body, secret: Self.secret))
        #expect(!RealtimeRelay.validMAC(mac, body + [32], secret: Self.secret))  // tampered body
        #expect(!RealtimeRelay.validMAC(mac, body, secret: Array(repeating: 8, count: 32)))  // other cluster
        #expect(!RealtimeRelay.validMAC(String(mac.dropLast()) + "g", body, secret: Self.secret))
        #expect(!RealtimeRelay.validMAC(nil, body, secret: Self.secret))
        // 64 bytes but 63 characters (a two-byte character last): refused, never a trap.
        #expect(!RealtimeRelay.validMAC(String(repeating: "a", count: 62) + "é", body, secret: Self.secret))
        // Not the key of another purpose: a plain HMAC with the secret, or another domain's key, differs.
        let other = RealtimeRelay.mac(body, secret: SecretDomain.storageSignedURL.keyBytes(Self.secret))
        #expect(other != mac)
    }

    @Test func anotherMembersPresencesFollowSnapshotsAndSequence() async throws {
        try await Self.withService { service in
            func apply(_ origin: String, _ incarnation: String, _ seq: Int64, snapshot: [JSONValue]? = nil,
                       _ messages: [JSONValue]) throws -> Bool {
                try service.applyRelay(origin: origin, incarnation: incarnation, seq: seq, snapshot: snapshot, messages: messages)
            }
            // First contact without a snapshot: presence messages wait, a snapshot is asked for.
            var needed = try apply("n2", "a@1", 1, [Self.track(1, "ann", ref: "r1")])
            #expect(needed && Self.keys(service).isEmpty)
            // Snapshot, then the messages after it.
            needed = try apply("n2", "a@1", 2, snapshot: Self.snapshot([(1, "ann", "r1")]), [Self.track(2, "bob", ref: "r2")])
            #expect(!needed && Self.keys(service) == ["ann", "bob"])
            // A duplicate (replayed) batch changes nothing.
            needed = try apply("n2", "a@1", 2, [Self.untrack(1)])
            #expect(!needed && Self.keys(service) == ["ann", "bob"])
            // A gap: presence messages are ignored until the next snapshot.
            needed = try apply("n2", "a@1", 4, [Self.untrack(1)])
            #expect(needed && Self.keys(service) == ["ann", "bob"])
            needed = try apply("n2", "a@1", 5, [Self.untrack(2)])
            #expect(needed && Self.keys(service) == ["ann", "bob"])
            needed = try apply("n2", "a@1", 6, snapshot: Self.snapshot([(2, "bob", "r2")]), [])
            #expect(!needed && Self.keys(service) == ["bob"])
            // A restarted member (new incarnation) must send a snapshot again; a third member is
            // kept apart from the second.
            needed = try apply("n2", "b@2", 1, [Self.track(3, "cat", ref: "r3")])
            #expect(needed)
            needed = try apply("n3", "c@1", 1, snapshot: Self.snapshot([(1, "dan", "x1")]), [])
            #expect(!needed && Self.keys(service) == ["bob", "dan"])
            // Private and public topics of one name never mix.
            #expect(Self.keys(service, TopicKey(topic: "realtime:lobby", isPrivate: true)).isEmpty)
            // A batch of the earlier process of n2 (replayed or delayed) is refused, with a new
            // sequence number too, and still after n2's presences were swept; so is an
            // incarnation without its start time.
            #expect(throws: AeroError.self) { try apply("n2", "a@1", 99, snapshot: Self.snapshot([(9, "eve", "e1")]), []) }
            #expect(throws: AeroError.self) { try apply("n2", "a", 99, []) }
            #expect(!Self.keys(service).contains("eve"))
            // The restarted member's batches go on.
            needed = try apply("n2", "b@2", 2, snapshot: Self.snapshot([(3, "cat", "r3")]), [])
            #expect(!needed && Self.keys(service) == ["cat", "dan"])
        }
    }

    /// A node's presences always fit one relay batch: `track` past presenceBytesPerNodeMax is
    /// refused; a snapshot over presencesPerNodeMax is refused whole; a batch's messages stop
    /// at relayMessageBytesMax (a bigger message goes alone).
    @Test func aPresenceSnapshotAlwaysFitsOneBatch() async throws {
        try await Self.withService { service in
            let meta: [String: JSONValue] = ["blob": .string(String(repeating: "p", count: 7_000))]
            var tracked = 0
            var refused: AeroError?
            while refused == nil && tracked < 10_000 {
                do {
                    try service.track(Self.lobby, connection: tracked, presenceKey: "k\(tracked)", state: meta)
                    tracked += 1
                } catch let error as AeroError { refused = error }
            }
            #expect(refused?.code == .realtimeLimit)
            let bytes = JSON.encode(service.localPresenceSnapshot()).count
            #expect(bytes <= RealtimeLimits.presenceBytesPerNodeMax + tracked + 2)  // items, commas, brackets
            #expect(bytes + RealtimeLimits.relayMessageBytesMax + 4_096 <= RealtimeLimits.relayBodyBytesMax)
            // Untracking frees room again.
            service.untrack(Self.lobby, connection: 0)
            try service.track(Self.lobby, connection: 0, presenceKey: "k0", state: meta)
            // A snapshot with more presences than a member can have is refused, none applied.
            let item = Self.snapshot([(1, "many", "m")])[0]
            #expect(throws: AeroError.self) {
                _ = try service.applyRelay(origin: "n2", incarnation: "x@1", seq: 1,
                                           snapshot: Array(repeating: item, count: RealtimeLimits.presencesPerNodeMax + 1), messages: [])
            }
            #expect(!Self.keys(service).contains("many"))
        }
        let link = RelayLink(address: "127.0.0.1:1")
        let big = JSONValue.object(["kind": .string("broadcast"), "topic": .string("realtime:x"), "event": .string("e"),
                                    "payload": .object(["b": .string(String(repeating: "b", count: 3 << 20))])])
        for _ in 0..<3 { link.enqueue(big) }
        #expect(link.take().messages.count == 2)  // 6 MiB: a third would pass relayMessageBytesMax
        #expect(link.take().messages.count == 1)
        let huge = JSONValue.object(["kind": .string("broadcast"), "payload": .string(String(repeating: "h", count: 9 << 20))])
        link.enqueue(huge)
        link.enqueue(big)
        #expect(link.take().messages.count == 1)  // a bigger message goes alone
        #expect(link.take().messages.count == 1)
    }

    @Test func aLinkQueueIsBoundedAndAFailureForcesASnapshot() {
        let link = RelayLink(address: "127.0.0.1:1")
        #expect(link.needsSnapshot)  // the first batch of a link carries one
        _ = link.delivered(carriedSnapshot: true, snapshotNeeded: false)
        #expect(!link.needsSnapshot)
        let broadcast = JSONValue.object(["kind": .string("broadcast"), "topic": .string("realtime:x"), "event": .string("e"),
                                          "payload": .object([:])])
        for _ in 0..<(RealtimeLimits.relayQueueMessagesMax + 5) { link.enqueue(broadcast) }
        #expect(!link.needsSnapshot)
        let first = link.take()
        #expect(first.messages.count == RealtimeLimits.relayBatchMessagesMax && first.dropped == 5 && first.seq == 1)
        for _ in 0..<RealtimeLimits.relayBatchMessagesMax { link.enqueue(broadcast) }  // full again
        link.enqueue(Self.track(1, "ann", ref: "r"))  // dropped: a presence message lost forces a snapshot
        #expect(link.needsSnapshot)
        _ = link.delivered(carriedSnapshot: true, snapshotNeeded: false)
        #expect(link.take().seq == 2)
        link.enqueue(Self.untrack(1))
        #expect(!link.needsSnapshot)
        #expect(link.failed())  // first failure of a streak (logged once)
        #expect(!link.failed())
        #expect(link.needsSnapshot)
        var total = 0
        while link.hasMessages { total += link.take().messages.count }
        #expect(total == RealtimeLimits.relayQueueMessagesMax - RealtimeLimits.relayBatchMessagesMax)  // broadcasts kept, presence dropped
    }
}
