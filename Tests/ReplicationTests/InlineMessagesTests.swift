// Messages a session handles on its channel's event loop (`InlineMessages`): the replica applies
// shipped frames there, the primary releases an ACK's commits there. What must hold: a message the
// hook does not take reaches the session's stream, in order; nothing is taken once the hook is
// disarmed, and `disarm` returns only after a hook call in progress ended (a stopped follower
// appends nothing more, A2); a frame is never applied ahead of a message passed on earlier and not
// yet processed (P1: records in order); the primary's session task is woken for the newest ACK only.

import Foundation
import LiveCluster
import NIOCore
import Synchronization
import Testing
@testable import Kernel
@testable import Replication

/// A listener and one connection to it, both sides framed as replication channels.
private func withConnectedPair(_ body: (_ client: NIOAsyncChannelOutboundWriter<ReplicationMessage>,
                                        _ server: ReplicationChannel,
                                        _ serverMessages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator) async throws -> Void) async throws {
    let address = PeerAddress(host: "127.0.0.1", port: LiveCluster.freePort())
    // Both sides' read-idle timeouts far above anything a test waits: on a loaded machine (and
    // while `disarmWaitsForAHookCallInProgress_A2` holds an event loop) the 2 s session idle
    // timeout closed these channels under the tests (`I/O on closed channel`).
    let places = HandshakePlaces(max: 4)
    places.outlastAnyTest()  // the accepted side's idle timeout is at least this
    let listener = try await Transport.listen(address, places: places) { _ in true }
    try await listener.executeThenClose { accepted in
        let client = try await Transport.connect(address, idleMillis: HandshakePlaces.outlastingAnyTestMillis)
        try await client.executeThenClose { _, clientOut in
            var connections = accepted.makeAsyncIterator()
            let connection = try #require(try await connections.next())
            let server = try #require(connection.take())
            try await server.executeThenClose { serverIn, _ in
                // The listener takes nothing before a HELLO.
                try await clientOut.write(.hello(.init(purpose: .probe, clusterID: "c", nodeID: "n2", token: "t", epoch: 1,
                                                       primary: "n1", position: .origin)))
                var messages = serverIn.makeAsyncIterator()
                guard case .hello? = try await messages.next() else {
                    Issue.record("the HELLO did not arrive first")
                    return
                }
                try await body(clientOut, server, &messages)
            }
        }
    }
}

private func heartbeat(_ n: UInt64) -> ReplicationMessage { .heartbeat(epoch: 1, durableLSN: n, timeMicros: 0) }

private final class Seen: Sendable {
    let values = Mutex<[UInt64]>([])
    func add(_ v: UInt64) { values.withLock { $0.append(v) } }
    var all: [UInt64] { values.withLock { $0 } }
}

private final class Flags: Sendable {
    let entered = Atomic<Bool>(false)
    let disarmed = Atomic<Bool>(false)
    let events = Mutex<[String]>([])
}

@Suite struct InlineMessagesTests {
    @Test func aHookTakesMessagesOnTheEventLoopAndEverythingElseReachesTheStreamInOrder() async throws {
        try await withConnectedPair { client, server, messages in
            let inline = try await InlineMessages.of(server)
            let taken = Seen()
            inline.arm { message in
                guard case .heartbeat(_, let n, _) = message else { return false }
                taken.add(n)
                return true
            }
            try await client.write(heartbeat(1))
            try await client.write(.ack(received: 1, durable: 1, applied: 1))
            try await client.write(heartbeat(2))
            try await client.write(.ack(received: 2, durable: 2, applied: 2))
            guard case .ack(1, _, _)? = try await messages.next(), case .ack(2, _, _)? = try await messages.next() else {
                Issue.record("the messages the hook did not take did not reach the stream in order")
                return
            }
            #expect(taken.all == [1, 2], "the hook saw the messages it takes, in order, before the later ACK reached the stream")

            // Disarmed: everything reaches the stream again.
            inline.disarm()
            try await client.write(heartbeat(3))
            guard case .heartbeat(_, 3, _)? = try await messages.next() else {
                Issue.record("a message after disarm did not reach the stream")
                return
            }
            #expect(taken.all == [1, 2])

            // A hook that throws ends the session: the stream ends (with the error or closed).
            inline.arm { _ in throw AeroError(.replicationRefused, "refused by the hook") }
            try await client.write(heartbeat(4))
            var ended = false
            do {
                ended = try await messages.next() == nil
            } catch {
                ended = true
            }
            #expect(ended, "the session went on after its hook failed")
        }
    }

    @Test func disarmWaitsForAHookCallInProgress_A2() async throws {
        try await withConnectedPair { client, server, _ in
            let inline = try await InlineMessages.of(server)
            let flags = Flags()
            let release = DispatchSemaphore(value: 0)
            inline.arm { _ in
                flags.entered.store(true, ordering: .releasing)
                release.wait()  // on the event loop, held by the test below
                flags.events.withLock { $0.append("hook ended") }
                return true
            }
            try await client.write(heartbeat(1))
            for _ in 0..<2_000 where !flags.entered.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
            let entered = flags.entered.load(ordering: .acquiring)
            #expect(entered)
            let disarming = Thread {
                inline.disarm()
                flags.events.withLock { $0.append("disarmed") }
                flags.disarmed.store(true, ordering: .releasing)
            }
            disarming.start()
            // Give the disarming thread every chance to return early (it must not).
            try await Task.sleep(for: .milliseconds(50))
            let early = flags.disarmed.load(ordering: .acquiring)
            #expect(!early, "disarm returned while a hook call was in progress")
            release.signal()
            for _ in 0..<2_000 where !flags.disarmed.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(5)) }
            #expect(flags.events.withLock { $0 } == ["hook ended", "disarmed"])
        }
    }

    @Test func aFrameIsAppliedOnTheEventLoopOnlyWhenNothingPassedOnIsUnprocessed_P1() throws {
        let queue = ReceiveQueue()
        let frame = ReplicationMessage.records([ReplicationMessageTests.record(1)])
        var applied = 0
        let apply: ([WALRecord]) -> Bool = { _ in
            applied += 1
            return true
        }
        #expect(queue.route(frame, apply: apply), "nothing pending: applied where it was decoded")
        #expect(applied == 1)
        #expect(!queue.route(heartbeat(1), apply: apply), "not a frame: passed on")
        #expect(!queue.isEmpty)
        #expect(!queue.route(frame, apply: apply), "a frame behind an unprocessed message is passed on, not applied ahead of it")
        #expect(applied == 1)
        queue.done()  // the heartbeat processed by the session's task
        #expect(!queue.route(frame, apply: apply), "the frame passed on before is still unprocessed")
        queue.done()
        queue.done()  // both frames processed
        #expect(queue.isEmpty)
        #expect(!queue.route(frame) { _ in false }, "a frame failing the hook's checks goes to the stream's path")
        #expect(!queue.isEmpty)
        queue.done()
        #expect(queue.route(frame, apply: apply))
        #expect(applied == 2)
    }

    @Test func theSessionTaskIsWokenOnlyForTheNewestAck() {
        let mailbox = AckMailbox()
        #expect(mailbox.take() == nil)
        #expect(mailbox.put(.init(received: 1, durable: 1, applied: 1)), "empty: the task must be woken")
        #expect(!mailbox.put(.init(received: 3, durable: 2, applied: 2)), "not taken yet: no second wake-up")
        #expect(mailbox.take() == .init(received: 3, durable: 2, applied: 2), "the task takes the newest")
        #expect(mailbox.take() == nil)
        #expect(mailbox.put(.init(received: 4, durable: 4, applied: 4)))
    }
}
