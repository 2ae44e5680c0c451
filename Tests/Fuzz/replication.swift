// fuzz-modules: Kernel Replication
// fuzz-options: -max_len=20000
//
// Replication frames (Sources/Replication/Protocol/ReplicationMessage.swift): the bytes a peer
// sends, split into frames by the real FrameDecoder inside a NIO pipeline (EmbeddedChannel),
// on each side: the opener (a follower reading its primary) and the listener before and after
// the HELLO is checked. Every frame decodes or the connection is refused with an error, never
// a trap, a hang or a buffer a stranger can grow. Input: byte 0 picks the side, byte 1 the
// size of the reads the stream arrives in, the rest is the stream. Every decoded message must
// encode and decode back to itself.

import NIOCore
import NIOEmbedded
@testable import Kernel
@testable import Replication

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ data: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 2 else { return }
    let stream = UnsafeBufferPointer(start: data + 2, count: size - 2)
    let side: FrameDecoder.Side
    switch data[0] % 3 {
    case 0:
        side = .opener
    case 1:
        guard let handshake = Handshake(places: HandshakePlaces(max: 1), authenticate: { _ in true }) else { return }
        side = .listener(handshake)
    default:
        guard let handshake = Handshake(places: HandshakePlaces(max: 1), authenticate: { _ in false }) else { return }
        side = .listener(handshake)
    }
    // Reads of 1 byte up to everything at once; after 256 reads the rest arrives in one.
    let chunk = [1, 2, 5, 13, 64, 512, 4096, Int.max][Int(data[1]) % 8]
    var reads = 0
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(side: side)))
    var offset = 0
    feeding: while offset < stream.count {
        reads += 1
        let end = reads >= 256 ? stream.count : min(stream.count, offset &+ chunk)
        var buffer = channel.allocator.buffer(capacity: end - offset)
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(stream)[offset..<end]))
        offset = end
        do {
            try channel.writeInbound(buffer)
        } catch {
            expectRefusal(error)
            break feeding
        }
        while let message = try? channel.readInbound(as: ReplicationMessage.self) { roundTrip(message) }
    }
    while let message = try? channel.readInbound(as: ReplicationMessage.self) { roundTrip(message) }
    _ = try? channel.finish()

    // The body decoder on its own: type byte then payload, as one frame carries them.
    if let type = stream.first {
        var payload = ByteBuffer()
        payload.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(stream)[1...]))
        do {
            roundTrip(try ReplicationMessage.decode(type: type, payload: payload))
        } catch {
            expectRefusal(error)
        }
    }
}

private func expectRefusal(_ error: any Error) {
    if let aero = error as? AeroError {
        precondition(aero.code == .replicationRefused || aero.code == .walCorrupt, "frame decoding threw \(aero)")
    }
    // NIO's own errors (a decoder in an error state, a closed channel) are refusals too.
}

private func roundTrip(_ message: ReplicationMessage) {
    var buffer = ByteBuffer()
    message.encode(into: &buffer)
    guard let length = buffer.readInteger(endianness: .little, as: UInt32.self), let type = buffer.readInteger(as: UInt8.self) else {
        fatalError("an encoded message has no frame header")
    }
    precondition(Int(length) == buffer.readableBytes + 1, "frame length does not match the encoded message")
    do {
        let again = try ReplicationMessage.decode(type: type, payload: buffer)
        precondition(again == message, "a decoded message does not encode and decode to itself: \(message)")
    } catch {
        fatalError("an encoded message does not decode (\(error)): \(message)")
    }
}
