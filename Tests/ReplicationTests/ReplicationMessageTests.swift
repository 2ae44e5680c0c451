// The replication wire format: every message round-trips, and malformed input is refused
// with an error, never a crash.

import NIOCore
import Testing
@testable import Kernel
@testable import Replication

@Suite struct ReplicationMessageTests {
    static func record(_ lsn: UInt64) -> WALRecord {
        // A real record: encoded by the WAL codec, decoded back.
        let (encoded, _) = WALFormat.encodeRecord(type: .transaction, lsn: lsn, epoch: 1, batchStart: lsn, timestampMicros: 1,
                                                  previousChecksum: 0, payload: Array("payload \(lsn)".utf8))
        return try! WALRecord.decode(encoded)
    }

    static let samples: [ReplicationMessage] = [
        .hello(.init(purpose: .follow, clusterID: "c-1", nodeID: "n2", token: "abc", epoch: 3, primary: "n1",
                     position: LogPosition(lsn: 42, checksum: 0xDEAD_BEEF))),
        .hello(.init(purpose: .rejoin, clusterID: "c-1", nodeID: "n1", token: "", epoch: 1, primary: "n1", position: .origin)),
        .welcome(epoch: 3, primary: "n1", firstLSN: 43),
        .refuse(.diverged, epoch: 4, primary: "n3", message: "not on my history: é"),
        .records([record(1), record(2), record(3)]),
        .records([]),
        .ack(received: 10, durable: 9, applied: 8),
        .heartbeat(epoch: 2, durableLSN: 77, timeMicros: -5),
        .checkpoint(lsn: 12, bytes: Array(repeating: 7, count: 1000)),
        .state(NodeState(isPrimary: false, epoch: 2, primary: "n1", durable: LogPosition(lsn: 5, checksum: 6), applied: 5, detail: "streaming", durableEpoch: 2)),
        .forkQuery([LogPosition(lsn: 1, checksum: 2), LogPosition(lsn: 3, checksum: 4)]),
        .forkPoint(LogPosition(lsn: 3, checksum: 4)),
    ]

    static func frame(_ message: ReplicationMessage) -> ByteBuffer {
        var buffer = ByteBuffer()
        message.encode(into: &buffer)
        return buffer
    }

    static func decodeFrame(_ buffer: ByteBuffer) throws -> ReplicationMessage {
        var b = buffer
        let length = b.readInteger(endianness: .little, as: UInt32.self)!
        #expect(Int(length) == b.readableBytes)
        let type = b.readInteger(as: UInt8.self)!
        return try ReplicationMessage.decode(type: type, payload: b)
    }

    @Test func messagesRoundTripAndMalformedFramesAreRefused() throws {
        for message in Self.samples {
            #expect(try Self.decodeFrame(Self.frame(message)) == message)
        }
        // Every truncation of every message is refused (or, for the empty list, still decodes).
        for message in Self.samples {
            let full = Self.frame(message)
            var body = full
            body.moveReaderIndex(forwardBy: 4)
            let type = body.readInteger(as: UInt8.self)!
            for cut in 0..<body.readableBytes {
                let truncated = body.getSlice(at: body.readerIndex, length: cut)!
                #expect(throws: AeroError.self) { _ = try ReplicationMessage.decode(type: type, payload: truncated) }
            }
        }
        // Trailing bytes, unknown types, a flipped bit in a shipped record or checkpoint: refused.
        var trailing = ByteBuffer(bytes: [9, 9])
        #expect(throws: AeroError.self) { _ = try ReplicationMessage.decode(type: 5, payload: Self.ackPayload(extra: &trailing)) }
        #expect(throws: AeroError.self) { _ = try ReplicationMessage.decode(type: 99, payload: ByteBuffer()) }
        for type: UInt8 in [4, 7] {
            var body = Self.frame(type == 4 ? .records([Self.record(1)]) : .checkpoint(lsn: 1, bytes: [1, 2, 3, 4]))
            body.moveReaderIndex(forwardBy: 5)
            var bytes = Array(body.readableBytesView)
            bytes[type == 4 ? 4 + 4 + 64 + 1 : bytes.count - 2] ^= 0x10  // a payload byte of the record / checkpoint
            #expect(throws: AeroError.self) { _ = try ReplicationMessage.decode(type: type, payload: ByteBuffer(bytes: bytes)) }
        }
        // Random garbage never crashes the decoder.
        var rng = SeededRandom(seed: 7)
        for _ in 0..<2000 {
            let type = UInt8(rng.next() % 12)
            let bytes = (0..<Int(rng.next() % 80)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? ReplicationMessage.decode(type: type, payload: ByteBuffer(bytes: bytes))
        }
    }

    static func ackPayload(extra: inout ByteBuffer) -> ByteBuffer {
        var body = frame(.ack(received: 1, durable: 1, applied: 1))
        body.moveReaderIndex(forwardBy: 5)
        body.writeBuffer(&extra)
        return body
    }

    @Test func tokensProveMembershipAndDifferPerCluster() {
        let secret = Array(repeating: UInt8(3), count: 32)
        let members = [ClusterMember(nodeID: "n1", http: "127.0.0.1:1", replication: PeerAddress(host: "127.0.0.1", port: 2))]
        let a = ClusterConfig(nodeID: "n1", clusterID: "a", members: members, commitMode: .sync, replicaWaitMillis: 10, secret: secret)
        let b = ClusterConfig(nodeID: "n1", clusterID: "b", members: members, commitMode: .sync, replicaWaitMillis: 10, secret: secret)
        #expect(a.token != b.token)
        #expect(a.accepts(token: a.token))
        #expect(!a.accepts(token: b.token))
        #expect(!a.accepts(token: String(a.token.dropLast())))
        #expect(a.replicaAcksNeeded == 0)  // a cluster of one needs no replica
    }

    @Test func syncWaitsAreReleasedByAcksAndFailInDoubtOnTimeoutOrFence() async throws {
        let tracker = AckTracker()
        tracker.admit("n2", session: 1, verified: 5)
        try await tracker.wait(5, needed: 1, timeoutMillis: 100)  // verified by the history check
        tracker.admit("n3", session: 2, verified: 5)
        let waiting = Task { try await tracker.wait(9, needed: 1, timeoutMillis: 5_000) }
        try await Task.sleep(for: .milliseconds(50))
        tracker.sent("n3", session: 2, through: 9)
        tracker.update("n3", session: 2, durable: 9)
        try await waiting.value
        await #expect(throws: AeroError.self) { try await tracker.wait(10, needed: 1, timeoutMillis: 50) }
        let fenced = Task { try await tracker.wait(11, needed: 1, timeoutMillis: 5_000) }
        try await Task.sleep(for: .milliseconds(50))
        tracker.fence(AeroError(.commitInDoubt, "fenced"))
        do {
            try await fenced.value
            Issue.record("a fenced wait succeeded")
        } catch let error as AeroError {
            #expect(error.code == .commitInDoubt)
        }
        await #expect(throws: AeroError.self) { try await tracker.wait(1, needed: 1, timeoutMillis: 50) }
    }

    /// Waits that ended leave nothing behind: one sweeping task serves every wait's deadline
    /// (no timer task per `sync` commit) and drops the deadlines of waits that ended. (A timer
    /// per wait used to expire ended waits too, keeping one id per commit for good.)
    @Test func finishedWaitsLeaveNoTrackedDeadlines() async throws {
        let tracker = AckTracker()
        tracker.admit("n2", session: 1, verified: 0)
        let waits = (UInt64(1)...200).map { lsn in Task { try await tracker.wait(lsn, needed: 1, timeoutMillis: 60_000) } }
        // Bounds in polls (6,000 polls 5 ms apart, at least 30 s), not wall time: a cooperative
        // pool kept busy by other tests runs neither the waits nor this loop meanwhile.
        for _ in 0..<6_000 { if tracker.trackedDeadlines == 200 { break }; try await Task.sleep(for: .milliseconds(5)) }
        #expect(tracker.trackedDeadlines == 200)
        tracker.sent("n2", session: 1, through: 200)
        tracker.update("n2", session: 1, durable: 200)
        for wait in waits { try await wait.value }
        // A bound of its own: a slow first phase on a busy machine must not leave this one no time.
        for _ in 0..<6_000 { if tracker.trackedDeadlines == 0 { break }; try await Task.sleep(for: .milliseconds(5)) }
        #expect(tracker.trackedDeadlines == 0)
    }

    /// A1/A4 (issue 12, item 10): a replica counts only from its admission (after the history
    /// check), only up to what its session verified or sent, and only in its own session.
    @Test func acksCountOnlyWhatTheSessionVerifiedOrSent() async throws {
        let tracker = AckTracker()
        // Nothing counts before admission: an ACK of an unknown node is ignored.
        tracker.update("n2", session: 1, durable: 100)
        #expect(tracker.durable(of: "n2") == nil)
        tracker.admit("n2", session: 1, verified: 10)
        #expect(tracker.durable(of: "n2") == 10)
        // Claiming more than was sent counts as what was sent.
        tracker.update("n2", session: 1, durable: 100)
        #expect(tracker.durable(of: "n2") == 10)
        await #expect(throws: AeroError.self) { try await tracker.wait(11, needed: 1, timeoutMillis: 50) }
        tracker.sent("n2", session: 1, through: 20)
        tracker.update("n2", session: 1, durable: 100)
        #expect(tracker.durable(of: "n2") == 20)
        try await tracker.wait(20, needed: 1, timeoutMillis: 100)
        // A new session replaces the old one: the old session's ACKs, sends and end are ignored,
        // and the new one counts from its own verified position (not the old maximum).
        tracker.admit("n2", session: 2, verified: 15)
        #expect(tracker.durable(of: "n2") == 15)
        tracker.sent("n2", session: 1, through: 50)
        tracker.update("n2", session: 1, durable: 50)
        tracker.forget("n2", session: 1)
        #expect(tracker.durable(of: "n2") == 15)
        tracker.forget("n2", session: 2)
        #expect(tracker.durable(of: "n2") == nil)
        #expect(tracker.all.isEmpty)
    }
}
