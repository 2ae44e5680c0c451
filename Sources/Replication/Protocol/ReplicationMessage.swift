// The replication wire protocol (SwiftNIO TCP). docs/REPLICATION.md describes it in full.
//
// Frame: u32 little-endian length of what follows, u8 message type, payload. Integers are
// little-endian; a string is u16 length + UTF-8 bytes (at most `stringBytesMax`). A frame is at
// most `frameBytesMax`; on the listening side the first frame (HELLO) at most `helloFrameBytesMax`.
//
//   1 HELLO      node -> node       version u32 (3), purpose u8 (0 follow, 1 probe, 2 adopt,
//                                   3 demote, 4 rejoin), cluster str, node str, token str, epoch u64,
//                                   primary str, lsn u64, checksum u64, epoch of that record u64
//   2 WELCOME    primary -> replica epoch u64, primary str, first LSN to be sent u64
//   3 REFUSE     either way         reason u8, epoch u64, primary str, message str
//   4 RECORDS    primary -> replica count u32, then per record: u32 length + the record's WAL bytes
//   5 ACK        replica -> primary received u64, durable u64, applied u64
//   6 HEARTBEAT  primary -> replica epoch u64, durable LSN u64, time (µs since the Unix epoch) i64
//   7 CHECKPOINT primary -> replica LSN u64, XXH64 of the file u64, the checkpoint file's bytes
//   8 STATE      answer to a probe  role u8 (0 primary, 1 replica), epoch u64, primary str,
//                                   durable lsn u64, durable checksum u64, applied u64, state str,
//                                   epoch of the durable record u64 (0: unknown; promotion then
//                                   compares LSNs alone)
//   9 FORK_QUERY rejoining -> primary  count u32, then (lsn u64, checksum u64) oldest first
//  10 FORK_POINT primary -> rejoining  lsn u64, checksum u64: the newest position on both histories
//
// Sessions: follow = HELLO, WELCOME or REFUSE, then CHECKPOINT? RECORDS/HEARTBEAT one way and
// ACK the other; probe = HELLO, STATE; adopt = HELLO naming the new epoch and primary, STATE
// once adopted durably; demote = HELLO naming the new epoch and primary, STATE once the primary
// stopped writing and drained (its durable position is final); rejoin = HELLO, FORK_QUERY,
// FORK_POINT or REFUSE.
//
// Invariants: records travel byte for byte as the primary's WAL holds them, each checked by the
// replica's decoder (checksum) and chain check before it is applied (P1). Every session starts
// with HELLO, whose token proves cluster membership; the answer names the answerer's epoch, so
// a node talking to a newer epoch learns it at the first exchange (A2). Before that token is
// verified the listening side buffers at most one HELLO-sized frame per connection, for at most
// `handshakeMillis`, on at most `unauthenticatedConnectionsMax` connections, and tells the peer
// nothing about the cluster (a generic REFUSE).

import Kernel
import NIOCore
import Synchronization

public enum ReplicationLimits {
    /// Largest frame: one whole record (16 MiB) plus headroom; checkpoints are framed whole and
    /// may be larger, up to `checkpointFrameBytesMax`. Only an authenticated peer gets this much.
    public static let frameBytesMax = 20 << 20
    /// Largest first frame on the listening side, before the peer's token is verified: exactly
    /// the largest HELLO (type, version, purpose, four strings of `stringBytesMax`, four u64).
    /// A stranger can make a node buffer no more than this per connection.
    public static let helloFrameBytesMax = 1 + 4 + 1 + 4 * (2 + stringBytesMax) + 4 * 8
    /// Connections accepted at once whose HELLO has not been verified yet; more are closed at
    /// accept. Members open a few at a time (probes every 250 ms, a follow session, a promotion),
    /// each verified within a round trip; the bound caps what strangers can hold
    /// (`unauthenticatedConnectionsMax` × `helloFrameBytesMax` of frame buffers).
    public static let unauthenticatedConnectionsMax = 64
    /// Of those, from one source address: one stranger cannot take every place and lock the
    /// members out (members connect from their own hosts, a few at a time).
    public static let unauthenticatedConnectionsPerAddressMax = 8
    /// A shipped checkpoint travels in one frame: bounds the state a replica can be bootstrapped with.
    public static let checkpointFrameBytesMax = 1 << 30
    /// WAL payload bytes per RECORDS frame (the primary reads this much at a time).
    public static let recordsFrameBytesMax = 1 << 20
    /// 2: HELLO carries the epoch of the sender's last durable record (the bootstrap fork check);
    /// 3: STATE carries the epoch of the durable record (promotion's order, `PromotionOrder`).
    public static let protocolVersion: UInt32 = 3
    /// Strings in the protocol (node ids, cluster id, messages).
    public static let stringBytesMax = 4096
    /// Positions a rejoining node sends to find the fork: how far a diverged tail can reach back.
    public static let forkPositionsMax: UInt32 = 65_536
    /// Threads that run the replication reads which may go to the disk (a catch-up's segment
    /// reads, a rejoin's fork search), off the event loops and the cooperative pool
    /// (`BlockingWork`); further reads wait their turn.
    public static let blockingReadThreads = 1
}

public enum HelloPurpose: UInt8, Sendable {
    /// Stream the WAL to me.
    case follow = 0
    /// Tell me your role, epoch and position, then close.
    case probe = 1
    /// Adopt the epoch and primary I name (sent by a node being promoted), then answer STATE.
    case adopt = 2
    /// Stop writing, drain, and hand over to the epoch and primary I name (planned switchover).
    case demote = 3
    /// I am a diverged node: tell me where our histories fork (FORK_QUERY follows).
    case rejoin = 4
}

public enum RefusalReason: UInt8, Sendable {
    case notMember = 1
    case notPrimary = 2
    case diverged = 3
    case staleEpoch = 4
    case badVersion = 5
    case failed = 6
}

public struct NodeState: Sendable, Equatable {
    public var isPrimary: Bool
    public var epoch: UInt64
    public var primary: String
    public var durable: LogPosition
    public var applied: UInt64
    /// The follower's state on a replica (`streaming`, `connecting`, `diverged: ...`), `primary` on a primary.
    public var detail: String
    /// The epoch of the durable record (0: unknown): what promotion compares first (`PromotionOrder`).
    public var durableEpoch: UInt64

    public init(isPrimary: Bool, epoch: UInt64, primary: String, durable: LogPosition, applied: UInt64, detail: String,
                durableEpoch: UInt64 = 0) {
        self.durableEpoch = durableEpoch
        self.isPrimary = isPrimary
        self.epoch = epoch
        self.primary = primary
        self.durable = durable
        self.applied = applied
        self.detail = detail
    }
}

public enum ReplicationMessage: Sendable, Equatable {
    case hello(Hello)
    case welcome(epoch: UInt64, primary: String, firstLSN: UInt64)
    case refuse(RefusalReason, epoch: UInt64, primary: String, message: String)
    case records([WALRecord])
    case ack(received: UInt64, durable: UInt64, applied: UInt64)
    case heartbeat(epoch: UInt64, durableLSN: UInt64, timeMicros: Int64)
    case checkpoint(lsn: UInt64, bytes: [UInt8])
    case state(NodeState)
    case forkQuery([LogPosition])
    case forkPoint(LogPosition)

    public struct Hello: Sendable, Equatable {
        public var purpose: HelloPurpose
        public var clusterID: String
        public var nodeID: String
        public var token: String
        /// The sender's marker epoch and primary (for `adopt`: the ones to adopt).
        public var epoch: UInt64
        public var primary: String
        /// The sender's last durable record.
        public var position: LogPosition
        /// The epoch of that record (0 for the origin): what lets a primary prove a follower older
        /// than its retained WAL is on its history before it bootstraps it (A4).
        public var positionEpoch: UInt64

        public init(purpose: HelloPurpose, clusterID: String, nodeID: String, token: String, epoch: UInt64,
                    primary: String, position: LogPosition, positionEpoch: UInt64 = 0) {
            self.purpose = purpose
            self.clusterID = clusterID
            self.nodeID = nodeID
            self.token = token
            self.epoch = epoch
            self.primary = primary
            self.position = position
            self.positionEpoch = positionEpoch
        }
    }

    var typeCode: UInt8 {
        switch self {
        case .hello: 1
        case .welcome: 2
        case .refuse: 3
        case .records: 4
        case .ack: 5
        case .heartbeat: 6
        case .checkpoint: 7
        case .state: 8
        case .forkQuery: 9
        case .forkPoint: 10
        }
    }

    // MARK: Encoding

    public func encode(into buffer: inout ByteBuffer) {
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0), endianness: .little)
        buffer.writeInteger(typeCode)
        switch self {
        case .hello(let h):
            buffer.writeInteger(ReplicationLimits.protocolVersion, endianness: .little)
            buffer.writeInteger(h.purpose.rawValue)
            Self.write(h.clusterID, &buffer)
            Self.write(h.nodeID, &buffer)
            Self.write(h.token, &buffer)
            buffer.writeInteger(h.epoch, endianness: .little)
            Self.write(h.primary, &buffer)
            buffer.writeInteger(h.position.lsn, endianness: .little)
            buffer.writeInteger(h.position.checksum, endianness: .little)
            buffer.writeInteger(h.positionEpoch, endianness: .little)
        case .welcome(let epoch, let primary, let first):
            buffer.writeInteger(epoch, endianness: .little)
            Self.write(primary, &buffer)
            buffer.writeInteger(first, endianness: .little)
        case .refuse(let reason, let epoch, let primary, let message):
            buffer.writeInteger(reason.rawValue)
            buffer.writeInteger(epoch, endianness: .little)
            Self.write(primary, &buffer)
            Self.write(message, &buffer)
        case .records(let records):
            buffer.writeInteger(UInt32(records.count), endianness: .little)
            for record in records {
                let bytes = record.encoded
                buffer.writeInteger(UInt32(bytes.count), endianness: .little)
                buffer.writeBytes(bytes)
            }
        case .ack(let received, let durable, let applied):
            buffer.writeInteger(received, endianness: .little)
            buffer.writeInteger(durable, endianness: .little)
            buffer.writeInteger(applied, endianness: .little)
        case .heartbeat(let epoch, let durable, let time):
            buffer.writeInteger(epoch, endianness: .little)
            buffer.writeInteger(durable, endianness: .little)
            buffer.writeInteger(time, endianness: .little)
        case .checkpoint(let lsn, let bytes):
            buffer.writeInteger(lsn, endianness: .little)
            buffer.writeInteger(XXH64.hash(bytes), endianness: .little)
            buffer.writeBytes(bytes)
        case .state(let s):
            buffer.writeInteger(UInt8(s.isPrimary ? 0 : 1))
            buffer.writeInteger(s.epoch, endianness: .little)
            Self.write(s.primary, &buffer)
            buffer.writeInteger(s.durable.lsn, endianness: .little)
            buffer.writeInteger(s.durable.checksum, endianness: .little)
            buffer.writeInteger(s.applied, endianness: .little)
            Self.write(s.detail, &buffer)
            buffer.writeInteger(s.durableEpoch, endianness: .little)
        case .forkQuery(let positions):
            buffer.writeInteger(UInt32(positions.count), endianness: .little)
            for p in positions {
                buffer.writeInteger(p.lsn, endianness: .little)
                buffer.writeInteger(p.checksum, endianness: .little)
            }
        case .forkPoint(let position):
            buffer.writeInteger(position.lsn, endianness: .little)
            buffer.writeInteger(position.checksum, endianness: .little)
        }
        let length = buffer.writerIndex - lengthIndex - 4
        buffer.setInteger(UInt32(length), at: lengthIndex, endianness: .little)
    }

    private static func write(_ string: String, _ buffer: inout ByteBuffer) {
        var bytes: [UInt8] = []
        for character in string {  // cut at a character boundary, never inside one
            let utf8 = Array(String(character).utf8)
            guard bytes.count + utf8.count <= ReplicationLimits.stringBytesMax else { break }
            bytes += utf8
        }
        buffer.writeInteger(UInt16(bytes.count), endianness: .little)
        buffer.writeBytes(bytes)
    }

    // MARK: Decoding

    /// Decodes one frame's body (type byte + payload). Throws AERO_REPL_REFUSED on anything
    /// malformed: a peer that sends garbage is disconnected, never trusted.
    public static func decode(type: UInt8, payload: ByteBuffer) throws -> ReplicationMessage {
        var b = payload
        let message: ReplicationMessage
        switch type {
        case 1:
            let version: UInt32 = try int(&b)
            guard version == ReplicationLimits.protocolVersion else { throw versionMismatch(peer: version) }
            guard let purpose = HelloPurpose(rawValue: try int(&b)) else { throw malformed("hello purpose") }
            message = .hello(Hello(purpose: purpose, clusterID: try string(&b), nodeID: try string(&b), token: try string(&b),
                                   epoch: try int(&b), primary: try string(&b),
                                   position: LogPosition(lsn: try int(&b), checksum: try int(&b)), positionEpoch: try int(&b)))
        case 2:
            message = .welcome(epoch: try int(&b), primary: try string(&b), firstLSN: try int(&b))
        case 3:
            guard let reason = RefusalReason(rawValue: try int(&b)) else { throw malformed("refusal reason") }
            message = .refuse(reason, epoch: try int(&b), primary: try string(&b), message: try string(&b))
        case 4:
            let count: UInt32 = try int(&b)
            var records: [WALRecord] = []
            records.reserveCapacity(Int(min(count, 100_000)))
            for _ in 0..<count {
                let length: UInt32 = try int(&b)
                guard let bytes = b.readBytes(length: Int(length)) else { throw malformed("record past the frame") }
                records.append(try WALRecord.decode(bytes))
            }
            message = .records(records)
        case 5:
            message = .ack(received: try int(&b), durable: try int(&b), applied: try int(&b))
        case 6:
            message = .heartbeat(epoch: try int(&b), durableLSN: try int(&b), timeMicros: try int(&b))
        case 7:
            let lsn: UInt64 = try int(&b)
            let hash: UInt64 = try int(&b)
            let bytes = b.readBytes(length: b.readableBytes) ?? []
            guard XXH64.hash(bytes) == hash else { throw malformed("checkpoint checksum") }
            message = .checkpoint(lsn: lsn, bytes: bytes)
        case 8:
            let role: UInt8 = try int(&b)
            message = .state(NodeState(isPrimary: role == 0, epoch: try int(&b), primary: try string(&b),
                                       durable: LogPosition(lsn: try int(&b), checksum: try int(&b)),
                                       applied: try int(&b), detail: try string(&b),
                                       durableEpoch: try int(&b)))
        case 9:
            let count: UInt32 = try int(&b)
            guard count <= ReplicationLimits.forkPositionsMax else { throw malformed("\(count) fork positions") }
            var positions: [LogPosition] = []
            for _ in 0..<count { positions.append(LogPosition(lsn: try int(&b), checksum: try int(&b))) }
            message = .forkQuery(positions)
        case 10:
            message = .forkPoint(LogPosition(lsn: try int(&b), checksum: try int(&b)))
        default:
            throw malformed("unknown message type \(type)")
        }
        guard b.readableBytes == 0 else { throw malformed("\(b.readableBytes) trailing bytes in message \(type)") }
        return message
    }

    private static func int<T: FixedWidthInteger>(_ b: inout ByteBuffer) throws -> T {
        guard let value = b.readInteger(endianness: .little, as: T.self) else { throw malformed("truncated message") }
        return value
    }

    private static func string(_ b: inout ByteBuffer) throws -> String {
        let length: UInt16 = try int(&b)
        guard length <= ReplicationLimits.stringBytesMax else { throw malformed("string of \(length) bytes") }
        guard let bytes = b.readBytes(length: Int(length)) else { throw malformed("string past the frame") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw malformed("string is not UTF-8") }
        return text
    }

    static func malformed(_ what: String) -> AeroError {
        AeroError(.replicationRefused, "malformed replication message: \(what)")
    }

    /// A HELLO of another protocol version. Versions do not mix (docs/REPLICATION.md, Upgrading):
    /// a v2 node promotes by LSN alone and cannot decode a v3 STATE, so it could be promoted over
    /// a replica of a newer epoch and could not learn of one by probing.
    public static func versionMismatch(peer: UInt32) -> AeroError {
        AeroError(.replicationRefused, versionMismatchPrefix + "the peer speaks replication protocol version \(peer), this node version \(ReplicationLimits.protocolVersion); "
                  + "versions do not mix (no rolling upgrade): stop every node of the cluster, upgrade them all, then start them (docs/REPLICATION.md, Upgrading)")
    }

    static let versionMismatchPrefix = "protocol version mismatch: "

    public static func isVersionMismatch(_ error: any Error) -> Bool {
        (error as? AeroError)?.message.hasPrefix(versionMismatchPrefix) == true
    }
}

/// Splits the TCP stream into frames; refuses a frame over the limit (the peer is cut off the
/// moment its length field is read, before anything of the frame is buffered).
///
/// The opening side (a follower, a prober) talks to a configured member and accepts CHECKPOINT
/// frames up to `checkpointFrameBytesMax`. The listening side is reachable by anyone: its first
/// frame must be a HELLO of at most `helloFrameBytesMax`; only once that HELLO's membership
/// check passes (`Handshake.authenticate`, on the event loop, before the next frame is looked
/// at) does the limit become `frameBytesMax`. After a failed check nothing more is decoded or
/// buffered: the session answers a generic REFUSE and closes.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ReplicationMessage

    enum Side {
        case opener
        case listener(Handshake)
    }

    let side: Side

    /// The largest frame accepted now, and whether it may be a CHECKPOINT.
    var frameBytesMax: Int {
        switch side {
        case .opener: ReplicationLimits.checkpointFrameBytesMax
        case .listener(let handshake):
            switch handshake.state {
            case .awaitingHello: ReplicationLimits.helloFrameBytesMax
            case .authenticated: ReplicationLimits.frameBytesMax
            case .refused: 0
            }
        }
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if case .listener(let handshake) = side, handshake.state == .refused {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)  // a refused peer is not listened to
            return .needMoreData
        }
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) else {
            return .needMoreData
        }
        let limit = frameBytesMax
        guard length >= 1, UInt64(length) <= UInt64(limit) else { throw ReplicationMessage.malformed("frame of \(length) bytes") }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let type: UInt8 = buffer.readInteger()!
        guard type == 7 || Int(length) <= ReplicationLimits.frameBytesMax else {
            throw ReplicationMessage.malformed("frame of \(length) bytes")
        }
        let payload = buffer.readSlice(length: Int(length) - 1)!
        let message = try ReplicationMessage.decode(type: type, payload: payload)
        if case .listener(let handshake) = side, handshake.state == .awaitingHello {
            guard case .hello(let hello) = message else { throw ReplicationMessage.malformed("the first message must be HELLO") }
            handshake.decide(hello)
        }
        context.fireChannelRead(wrapInboundOut(message))
        return .continue
    }
}

/// One accepted connection's handshake: waiting for its HELLO, authenticated, or refused. Holds
/// one of the listener's places (`HandshakePlaces`) until decided or closed.
final class Handshake: Sendable {
    enum State: UInt8 {
        case awaitingHello = 0, authenticated = 1, refused = 2
    }

    private let raw = Atomic<UInt8>(State.awaitingHello.rawValue)
    private let placeHeld = Atomic<Bool>(true)
    private let places: HandshakePlaces
    private let address: String
    private let authenticate: @Sendable (ReplicationMessage.Hello) -> Bool

    /// Nil when no place is free (in all, or for `address`): the connection is to be closed at once.
    init?(places: HandshakePlaces, address: String = "", authenticate: @escaping @Sendable (ReplicationMessage.Hello) -> Bool) {
        guard places.take(address) else { return nil }
        self.places = places
        self.address = address
        self.authenticate = authenticate
    }

    var state: State { State(rawValue: raw.load(ordering: .acquiring))! }

    /// The membership check of the first HELLO (cluster id, token, node id).
    func decide(_ hello: ReplicationMessage.Hello) {
        let accepted = authenticate(hello)
        raw.store((accepted ? State.authenticated : .refused).rawValue, ordering: .releasing)
        release()
    }

    /// Gives the place back (decided or closed); idempotent.
    func release() {
        if placeHeld.exchange(false, ordering: .acquiringAndReleasing) { places.give(address) }
    }
}

/// The listener's places for connections whose HELLO is not verified yet: at most `max` in all
/// and `perAddressMax` from one source address.
final class HandshakePlaces: Sendable {
    let max: Int
    let perAddressMax: Int
    private struct Taken {
        var total = 0
        var byAddress: [String: Int] = [:]
    }
    private let taken = Mutex(Taken())
    private let deadline = Mutex(ReplicationTimeouts.handshakeMillis)

    /// How long an accepted connection may take to send its HELLO (`ReplicationTimeouts.handshakeMillis`;
    /// read at each accept). Settable so a test can hold places longer than it takes a loaded
    /// machine to open them.
    var handshakeMillis: Int64 {
        get { deadline.withLock { $0 } }
        set { deadline.withLock { $0 = newValue } }
    }

    /// `perAddressMax` defaults to `max` (no per-address bound).
    init(max: Int, perAddressMax: Int? = nil) {
        self.max = max
        self.perAddressMax = perAddressMax ?? max
    }

    var inUse: Int { taken.withLock { $0.total } }

    func take(_ address: String) -> Bool {
        taken.withLock { t in
            let mine = t.byAddress[address, default: 0]
            guard t.total < max, mine < perAddressMax else { return false }
            t.total += 1
            t.byAddress[address] = mine + 1
            return true
        }
    }

    func give(_ address: String) {
        taken.withLock { t in
            t.total -= 1
            let mine = t.byAddress[address, default: 1] - 1
            t.byAddress[address] = mine > 0 ? mine : nil
        }
    }
}

struct FrameEncoder: MessageToByteEncoder {
    typealias OutboundIn = ReplicationMessage

    func encode(data: ReplicationMessage, out: inout ByteBuffer) throws {
        data.encode(into: &out)
    }
}
