import Kernel
import NIOCore
import Synchronization
import Testing
@testable import BaaS

/// The batched writer's framing (RealtimeSocketWriter): one buffer holds whole, unmasked,
/// unfragmented text frames in order, each with the shortest RFC 6455 length encoding.
@Suite struct RealtimeSocketWriterTests {
    /// Reads the frames back as a client would.
    struct Truncated: Error {}

    static func frames(_ buffer: ByteBuffer) throws -> [String] {
        var buffer = buffer
        var out: [String] = []
        while buffer.readableBytes > 0 {
            guard let first = buffer.readInteger(as: UInt8.self), let second = buffer.readInteger(as: UInt8.self) else { throw Truncated() }
            #expect(first == 0x81)  // FIN, text, no RSV bits
            #expect(second & 0x80 == 0)  // a server never masks
            var size = Int(second & 0x7F)
            if size == 126 {
                guard let n = buffer.readInteger(as: UInt16.self) else { throw Truncated() }
                size = Int(n)
                #expect(size >= 126)
            } else if size == 127 {
                guard let n = buffer.readInteger(as: UInt64.self) else { throw Truncated() }
                size = Int(n)
                #expect(size > 0xFFFF)
            }
            guard let text = buffer.readString(length: size) else { throw Truncated() }
            out.append(text)
        }
        return out
    }

    @Test func framesKeepOrderAndUseTheShortestLength() throws {
        let texts = ["", "short", String(repeating: "a", count: 125), String(repeating: "b", count: 126),
                     String(repeating: "é", count: 40_000), String(repeating: "c", count: 65_535), String(repeating: "d", count: 70_000)]
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        for text in texts { RealtimeSocketWriter.appendTextFrame(text, to: &buffer) }
        #expect(try Self.frames(buffer) == texts)
        let headers = texts.map { $0.utf8.count < 126 ? 2 : $0.utf8.count <= 0xFFFF ? 4 : 10 }
        #expect(buffer.readableBytes == zip(texts, headers).map { $0.utf8.count + $1 }.reduce(0, +))
    }

    /// Records when the outbox schedules it; the test drives `takeForWrite` as the event loop would.
    final class ManualWriter: RealtimeOutboxWriter {
        let scheduled = Atomic<Int>(0)
        func schedule() { scheduled.add(1, ordering: .relaxed) }
    }

    /// The outbox's writer protocol (RealtimeSocketWriter runs it on the event loop): a push while
    /// no write is in flight schedules the writer once; pushes during a write schedule nothing and
    /// ride in the next write, whole and in order; `.idle` ends the write loop and the next push
    /// schedules again; a close with a reason ends with `.finished(close:)` after what was queued.
    @Test func theWriterIsScheduledOnceAndTakesEverythingInOrder() async throws {
        let outbox = RealtimeOutbox(version: .v1)
        let writer = ManualWriter()
        outbox.attach(writer)
        #expect(writer.scheduled.load(ordering: .relaxed) == 0)  // nothing waits
        func frame(_ n: Int) -> RealtimeFrame {
            RealtimeFrame(joinRef: nil, ref: nil, topic: "realtime:t", event: "broadcast", payload: .object(["n": .int(Int64(n))]))
        }
        #expect(outbox.push(frame(1), .event))
        #expect(outbox.push(frame(2), .control))
        #expect(writer.scheduled.load(ordering: .relaxed) == 1)
        // One transaction's change frames: the shared data bytes between this subscriber's head and tail.
        let data = Array(#"{"type":"INSERT","lsn":"7"}"#.utf8)
        let change = ChangeFrame(head: RealtimeFrame.changeHead(.v1, topic: "realtime:t"), data: data,
                                 tail: RealtimeFrame.changeTail(.v1, topic: "realtime:t", ids: [5]))
        var deferred: [any RealtimeOutboxWriter] = []
        #expect(outbox.push(changes: [change, change], deferred: &deferred))
        #expect(deferred.isEmpty)  // a write is already scheduled
        guard case .write(let first) = outbox.takeForWrite() else { Issue.record("expected a write"); return }
        let texts = try Self.frames(first)
        let changeText = RealtimeFrame.changeText(.v1, topic: "realtime:t", ids: [5], data: String(decoding: data, as: UTF8.self))
        #expect(texts == [frame(1).encoded(.v1), frame(2).encoded(.v1), changeText, changeText])
        // During the write: queued, not scheduled again; the writer takes it next.
        #expect(outbox.push(frame(3), .event))
        #expect(writer.scheduled.load(ordering: .relaxed) == 1)
        guard case .write(let second) = outbox.takeForWrite() else { Issue.record("expected a write"); return }
        #expect(try Self.frames(second) == [frame(3).encoded(.v1)])
        guard case .idle = outbox.takeForWrite() else { Issue.record("expected idle"); return }
        // Idle: the next push schedules the writer again (deferred to the caller when asked).
        #expect(outbox.push(changes: [change], deferred: &deferred))
        #expect(deferred.count == 1 && writer.scheduled.load(ordering: .relaxed) == 1)
        outbox.close(code: 1008, reason: "client is not reading its messages")
        #expect(!outbox.push(frame(4), .control))
        guard case .write(let last) = outbox.takeForWrite() else { Issue.record("expected the queued frame first"); return }
        #expect(try Self.frames(last) == [changeText])
        guard case .finished(let close) = outbox.takeForWrite() else { Issue.record("expected finished"); return }
        #expect(close?.code == 1008)
        outbox.writerFinished()
        await outbox.finished()  // returns: the writer finished
        #expect(writer.scheduled.load(ordering: .relaxed) == 1)
    }
}
