import NIOCore
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
}
