// A real primary (`ReplicationNode` over a real `Database` in a temporary directory, listening on
// loopback) against hand-driven peers over real sockets: strangers on the replication port
// (issue 12 item 8), followers whose HELLO position is diverged or unprovable (items 10, 11).
// The peers of the primary's config are ports nobody listens on, so its peer watch finds nothing.

import Foundation
import LiveCluster
import NIOCore
import Testing
@testable import Kernel
@testable import Replication

/// A primary node n1 of cluster "c-test" (members n1, n2, n3) with its database.
final class PrimaryUnderTest: @unchecked Sendable {
    static let secret = Array(repeating: UInt8(9), count: 32)
    let directory: String
    let database: Database
    let node: ReplicationNode
    let config: ClusterConfig
    var address: PeerAddress { config.me.replication }

    /// Opens the database, runs `prepare` on it (before any commit gate exists), writes the marker
    /// (`epoch`, naming n1) and starts the node as primary.
    /// `restart`: closes and reopens the database after `prepare` (the WAL keeps nothing in memory then).
    static func start(commitMode: CommitMode = .sync, replicaWaitMillis: Int64 = 1_000, segmentBytes: Int = 256 << 10, epoch: UInt64 = 1,
                      restart: Bool = false,
                      prepare: (Database) async throws -> Void = { _ in }) async throws -> PrimaryUnderTest {
        let directory = NSTemporaryDirectory() + "aerodb-replnode-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var options = KernelOptions(dataDirectory: directory + "/data")
        options.walSegmentBytes = segmentBytes
        options.checkpointEveryWALBytes = 0
        var database = try await Database.open(options)
        try await prepare(database)
        if epoch > 1 { try await database.advanceEpoch(to: epoch) }
        if restart {
            await database.close()
            database = try await Database.open(options)
        }
        let members = (1...3).map { i in
            ClusterMember(nodeID: "n\(i)", http: "127.0.0.1:1", replication: PeerAddress(host: "127.0.0.1", port: LiveCluster.freePort()))
        }
        let config = ClusterConfig(nodeID: "n1", clusterID: "c-test", members: members, commitMode: commitMode,
                                   replicaWaitMillis: replicaWaitMillis, secret: secret)
        let authority = AuthorityStore(dataDirectory: options.dataDirectory)
        let marker = AuthorityMarker(clusterID: "c-test", epoch: epoch, primary: "n1")
        try authority.create(marker)
        let node = ReplicationNode(config: config, database: database, authority: authority, marker: marker)
        try await node.start()
        return PrimaryUnderTest(directory: directory, database: database, node: node, config: config)
    }

    private init(directory: String, database: Database, node: ReplicationNode, config: ClusterConfig) {
        self.directory = directory
        self.database = database
        self.node = node
        self.config = config
    }

    /// Runs `body` on a started primary and always stops it (and removes its directory) after.
    static func with(commitMode: CommitMode = .sync, replicaWaitMillis: Int64 = 1_000, segmentBytes: Int = 256 << 10, epoch: UInt64 = 1,
                     restart: Bool = false, prepare: (Database) async throws -> Void = { _ in },
                     _ body: (PrimaryUnderTest) async throws -> Void) async throws {
        let primary = try await start(commitMode: commitMode, replicaWaitMillis: replicaWaitMillis, segmentBytes: segmentBytes,
                                      epoch: epoch, restart: restart, prepare: prepare)
        do {
            try await body(primary)
        } catch {
            await primary.stop()
            throw error
        }
        await primary.stop()
    }

    func stop() async {
        await node.stop()
        await database.close()
        try? FileManager.default.removeItem(atPath: directory)  // a leftover temp directory is harmless
    }

    /// A HELLO as member `node` would send it (or a stranger, with another token).
    func hello(_ purpose: HelloPurpose, node: String = "n2", token: String? = nil, epoch: UInt64 = 1,
               position: LogPosition = .origin, positionEpoch: UInt64 = 0) -> ReplicationMessage {
        .hello(.init(purpose: purpose, clusterID: config.clusterID, nodeID: node, token: token ?? config.token, epoch: epoch,
                     primary: "n1", position: position, positionEpoch: positionEpoch))
    }

    /// Opens a session, sends `first`, and hands the stream to `body`.
    func session<T: Sendable>(_ first: ReplicationMessage,
                              _ body: (inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                       NIOAsyncChannelOutboundWriter<ReplicationMessage>) async throws -> T) async throws -> T {
        let channel = try await Transport.connect(address, idleMillis: ReplicationTimeouts.sessionIdleMillis)
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(first)
            var messages = inbound.makeAsyncIterator()
            return try await body(&messages, outbound)
        }
    }

    /// The first answer to `message` (nil when the node closed without one).
    func answer(_ message: ReplicationMessage) async throws -> ReplicationMessage? {
        try await session(message) { messages, _ in try await messages.next() }
    }

    func insert(_ id: String, pad: Int = 8) async throws -> UInt64 {
        try await database.commit(JSON.parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(id)","pad":"\#(String(repeating: "p", count: pad))"}}]}"#)).lsn
    }

    static let items = #"{"name":"items","fields":{"id":{"type":"text"},"pad":{"type":"text","nullable":true}}}"#
}

extension HandshakePlaces {
    /// Far beyond anything a test waits. A test whose point is not the handshake deadline (or
    /// one filling the places) sets it, so that a loaded machine (the cooperative pool busy under
    /// a full `scripts/test`) cannot close its connections under it: an accepted connection
    /// keeps its place this long, and the accepted side's idle timeout follows it
    /// (Transport.listen). The real deadline is `ReplicationTimeouts.handshakeMillis`.
    static let outlastingAnyTestMillis: Int64 = 600_000

    func outlastAnyTest() { handshakeMillis = Self.outlastingAnyTestMillis }
}

/// A plain blocking TCP socket: what an attacker uses, no framing help.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    /// `source`: the local address to connect from (any of 127.0.0.0/8 on loopback).
    /// `receiveTimeoutMillis` only ends a read that never sees the close every caller expects: long,
    /// because the in-process node answers on the cooperative pool, which other tests of a full
    /// run keep busy for seconds (3 s once ended a read before the node's refusal).
    init(_ address: PeerAddress, source: String? = nil, receiveTimeoutMillis: Int = 30_000) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                throw AeroError(.ioError, "bind to \(source) failed: errno \(errno)")
            }
        }
        var timeout = timeval(tv_sec: receiveTimeoutMillis / 1000, tv_usec: (receiveTimeoutMillis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = in_port_t(UInt16(address.port).bigEndian)
        target.sin_addr.s_addr = inet_addr(address.host)
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw AeroError(.ioError, "connect failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    /// Sends everything; false once the peer closed or reset the connection (no SIGPIPE).
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// What arrives until the peer closes (or the receive timeout): bytes, and whether it closed.
    /// The blocking reads run on a thread of their own: on the cooperative pool (two threads on a
    /// two-core machine) they would starve the in-process node that is to answer them.
    func readUntilClosed(max: Int = 1 << 20) async -> (bytes: [UInt8], closed: Bool) {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: self.readUntilClosedBlocking(max: max)) }
        }
    }

    private func readUntilClosedBlocking(max: Int) -> (bytes: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while out.count < max {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (out, true) }
            if n < 0 { return (out, errno == ECONNRESET) }
            out += chunk[0..<n]
        }
        return (out, false)
    }
}

/// The frame of a message as the protocol encodes it.
func frameBytes(_ message: ReplicationMessage) -> [UInt8] {
    var buffer = ByteBuffer()
    message.encode(into: &buffer)
    return Array(buffer.readableBytesView)
}

/// Decodes the frames in `bytes` (whole frames only).
func decodeFrames(_ bytes: [UInt8]) throws -> [ReplicationMessage] {
    var buffer = ByteBuffer(bytes: bytes)
    var out: [ReplicationMessage] = []
    while let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self),
          buffer.readableBytes >= 4 + Int(length) {
        buffer.moveReaderIndex(forwardBy: 4)
        let type = buffer.readInteger(as: UInt8.self)!
        out.append(try ReplicationMessage.decode(type: type, payload: buffer.readSlice(length: Int(length) - 1)!))
    }
    return out
}

@Suite(.serialized) struct ReplicationNodeTests {
    /// A follower retries a primary it could not reach after 5 ms, doubling to 100 ms while it
    /// keeps failing, and starts again at 5 ms after a session that streamed (a replica sent to a
    /// node still opening its epoch reaches it within milliseconds, not after a fixed 100 ms).
    @Test func followerReconnectPausesDoubleFromFiveToAHundredMilliseconds() {
        var pauses: [Int64] = []
        var last: Int64? = nil
        for _ in 0..<8 {
            let next = ReplicationNode.nextReconnectPause(after: last, streamed: false)
            pauses.append(next)
            last = next
        }
        #expect(pauses == [5, 10, 20, 40, 80, 100, 100, 100])
        #expect(ReplicationNode.nextReconnectPause(after: 100, streamed: true) == 5)
        #expect(ReplicationNode.nextReconnectPause(after: .max, streamed: false) == 100)
    }

    // MARK: Item 8: strangers on the replication port

    @Test func aStrangerIsRefusedWithoutLearningAnythingAboutTheCluster() async throws {
        try await PrimaryUnderTest.with() { primary in
            // The refusal, not the connection's timeouts, is under test. Under a full scripts/test
            // the node once logged its refusal but the socket saw a close with no REFUSE: the
            // session task ran so late that the 2 s idle timeout (or the 1 s handshake deadline)
            // had closed the connection before the write. Both follow this handshake time.
            primary.node.handshakePlaces.outlastAnyTest()
            let wrongToken = String(repeating: "0", count: 64)
            for hello in [primary.hello(.probe, token: wrongToken), primary.hello(.follow, node: "n9"),
                          ReplicationMessage.hello(.init(purpose: .probe, clusterID: "other", nodeID: "n2", token: primary.config.token,
                                                         epoch: 1, primary: "n1", position: .origin))] {
                let socket = try RawSocket(primary.address)
                #expect(socket.send(frameBytes(hello)))
                let (bytes, closed) = await socket.readUntilClosed()
                #expect(closed, "the node closes the connection after refusing")
                let answers = try decodeFrames(bytes)
                #expect(answers == [.refuse(.notMember, epoch: 0, primary: "", message: "refused")])
                let text = String(decoding: bytes, as: UTF8.self)
                for secret in ["c-test", "n1", "n2", "n3"] { #expect(!text.contains(secret), "a refusal names \(secret)") }
            }
            // A member is still answered.
            guard case .state(let state)? = try await primary.answer(primary.hello(.probe)) else {
                Issue.record("a member's probe was not answered")
                return
            }
            #expect(state.isPrimary && state.primary == "n1")
        }
    }

    /// Versions do not mix (docs/REPLICATION.md, Upgrading): a v2 peer's HELLO is refused with
    /// REFUSE(bad version) naming both versions and the procedure, and nothing else is said.
    @Test func aPeerOfProtocolVersion2IsRefusedNamingBothVersions() async throws {
        try await PrimaryUnderTest.with() { primary in
            primary.node.handshakePlaces.outlastAnyTest()  // as for the stranger above
            var bytes = frameBytes(primary.hello(.follow))
            bytes.replaceSubrange(5..<9, with: withUnsafeBytes(of: UInt32(2).littleEndian, Array.init))
            let socket = try RawSocket(primary.address)
            #expect(socket.send(bytes))
            let (answer, closed) = await socket.readUntilClosed()
            #expect(closed)
            let frames = try decodeFrames(answer)
            guard frames.count == 1, case .refuse(let reason, let epoch, let node, let message) = frames[0] else {
                Issue.record("expected one REFUSE, got \(frames)")
                return
            }
            #expect(reason == .badVersion && epoch == 0 && node == "")
            #expect(message.contains("version 2") && message.contains("version 3") && message.contains("no rolling upgrade"), "\(message)")
        }
    }

    @Test func nothingLargerThanAHelloIsBufferedBeforeThePeerIsAuthenticated() async throws {
        try await PrimaryUnderTest.with() { primary in
            // A member's probe whose HELLO is longer than any HELLO can be (a 60,000-byte string):
            // before the token is checked the frame is over the limit, so the node reads its length,
            // closes, and never answers (it used to buffer it whole and answer STATE).
            var long: [UInt8] = []
            func string(_ s: [UInt8]) { long += withUnsafeBytes(of: UInt16(s.count).littleEndian, Array.init) + s }
            long += withUnsafeBytes(of: ReplicationLimits.protocolVersion.littleEndian, Array.init) + [HelloPurpose.probe.rawValue]
            string(Array("c-test".utf8)); string(Array("n2".utf8)); string(Array(primary.config.token.utf8))
            long += withUnsafeBytes(of: UInt64(1).littleEndian, Array.init)
            string(Array(repeating: UInt8(ascii: "x"), count: 60_000))
            long += [UInt8](repeating: 0, count: 24)
            let frame = withUnsafeBytes(of: UInt32(long.count + 1).littleEndian, Array.init) + [1] + long
            #expect(frame.count - 4 > ReplicationLimits.helloFrameBytesMax)
            let socket = try RawSocket(primary.address)
            _ = socket.send(frame)  // may already fail: the node closes at the length field
            let (bytes, closed) = await socket.readUntilClosed()
            #expect(closed)
            #expect(bytes.isEmpty, "an oversized first frame is never answered")

            // A stranger announcing an almost complete 20 MiB frame and streaming it: cut off at the
            // length field, so the node never holds more than one socket read of it.
            let stranger = try RawSocket(primary.address)
            var accepted = 0
            var cutOff = !stranger.send(withUnsafeBytes(of: UInt32(ReplicationLimits.frameBytesMax - 1).littleEndian, Array.init) + [1])
            let chunk = [UInt8](repeating: 0xAB, count: 64 << 10)
            while !cutOff && accepted < 4 << 20 {
                if stranger.send(chunk) { accepted += chunk.count } else { cutOff = true }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(cutOff, "the node kept reading an unauthenticated 20 MiB frame (\(accepted) bytes taken)")

            // The limits themselves: HELLO-sized until the membership check passes, then the normal
            // limit; nothing after a failed check.
            let places = HandshakePlaces(max: 1)
            let member = try #require(Handshake(places: places) { primary.config.admits($0) })
            #expect(FrameDecoder(side: .listener(member)).frameBytesMax == ReplicationLimits.helloFrameBytesMax)
            #expect(Handshake(places: places) { _ in true } == nil, "places are bounded")
            guard case .hello(let memberHello) = primary.hello(.probe) else { return }
            member.decide(memberHello)
            #expect(FrameDecoder(side: .listener(member)).frameBytesMax == ReplicationLimits.frameBytesMax)
            #expect(places.inUse == 0, "a decided handshake gives its place back")
            let stranger2 = try #require(Handshake(places: places) { primary.config.admits($0) })
            guard case .hello(let bad) = primary.hello(.probe, token: "nope") else { return }
            stranger2.decide(bad)
            #expect(FrameDecoder(side: .listener(stranger2)).frameBytesMax == 0)
            #expect(ReplicationLimits.helloFrameBytesMax < 20 << 10)
            // The largest HELLO a member can send fits the limit exactly.
            let longest = String(repeating: "y", count: ReplicationLimits.stringBytesMax)
            let biggest = frameBytes(.hello(.init(purpose: .follow, clusterID: longest, nodeID: longest, token: longest, epoch: .max,
                                                  primary: longest, position: LogPosition(lsn: .max, checksum: .max), positionEpoch: .max)))
            #expect(biggest.count - 4 == ReplicationLimits.helloFrameBytesMax)
        }
    }

    @Test func connectionsAwaitingTheirHelloAreBoundedAndTimedOut() async throws {
        try await PrimaryUnderTest.with { primary in
            let places = primary.node.handshakePlaces
            #expect(places.max == ReplicationLimits.unauthenticatedConnectionsMax)
            #expect(places.perAddressMax == ReplicationLimits.unauthenticatedConnectionsPerAddressMax)
            #expect(places.handshakeMillis == ReplicationTimeouts.handshakeMillis)
            // While the places are filled, a connection keeps its place far longer than opening 64
            // takes on a loaded machine (with the real 1 s, the first ones timed out before the last
            // were open; the listener's idle timeout follows it, or its 2 s closed them once under a
            // full `scripts/test`); the real deadline is checked at the end.
            places.outlastAnyTest()
            /// Silent connections from `source` until the node holds `count` places in all.
            func fill(_ source: String, _ n: Int, until count: Int) async throws -> [RawSocket] {
                let sockets = try (0..<n).map { _ in try RawSocket(primary.address, source: source) }
                for _ in 0..<1_000 where places.inUse < count { try await Task.sleep(for: .milliseconds(10)) }
                #expect(places.inUse == count)
                return sockets
            }
            func expectClosedAtAccept(_ source: String) async {
                guard let extra = try? RawSocket(primary.address, source: source) else { return }  // refused outright: closed too
                _ = extra.send(frameBytes(primary.hello(.probe)))
                let refused = await extra.readUntilClosed()
                #expect(refused.closed && refused.bytes.isEmpty, "a connection past the places was answered")
            }
            // One source address gets its share of the places, not more...
            var silent = try await fill("127.0.0.2", places.perAddressMax, until: places.perAddressMax)
            // The session idle timeout does not cut a connection's handshake time short.
            try await Task.sleep(for: .milliseconds(ReplicationTimeouts.sessionIdleMillis + 500))
            #expect(places.inUse == places.perAddressMax, "the idle timeout closed connections still in their handshake time")
            await expectClosedAtAccept("127.0.0.2")
            // ...so a member on another address still gets in,
            guard case .state? = try await primary.answer(primary.hello(.probe)) else {
                Issue.record("a member's probe was refused while one stranger held its share")
                return
            }
            // and all sources together get at most the global bound.
            let perAddress = places.perAddressMax
            for k in 1..<(places.max / perAddress) {
                silent += try await fill("127.0.1.\(k)", perAddress, until: perAddress * (k + 1))
            }
            #expect(places.inUse == places.max)
            await expectClosedAtAccept("127.0.2.1")
            // A connection that closes gives its place back...
            silent.removeAll()
            for _ in 0..<1_000 where places.inUse > 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(places.inUse == 0)
            // ...and silent ones are closed when their handshake time is up, and their places freed.
            places.handshakeMillis = ReplicationTimeouts.handshakeMillis
            silent = try (0..<places.perAddressMax).map { _ in try RawSocket(primary.address, source: "127.0.3.1") }
            for socket in silent { #expect(await socket.readUntilClosed().closed) }
            for _ in 0..<1_000 where places.inUse > 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(places.inUse == 0)
            guard case .state? = try await primary.answer(primary.hello(.probe)) else {
                Issue.record("a member's probe was not answered after the strangers left")
                return
            }
        }
    }

    // MARK: Item 10: positions count only after the history check, only as streamed

    @Test func aDivergedLongerFollowerReleasesNoSyncCommit() async throws {
        try await PrimaryUnderTest.with(replicaWaitMillis: 1_500, prepare: { db in
            _ = try await db.createCollection(JSON.parse(PrimaryUnderTest.items))
        }) { primary in
            // The HELLO below is this test's point, not its timing: under a full `scripts/test` its
            // write once failed with "I/O on closed channel" (the session's channel closed before
            // the HELLO went out, 3.16 s into the test), which the 1 s handshake deadline explains
            // when the cooperative pool is busy. The deadline itself is tested above.
            primary.node.handshakePlaces.outlastAnyTest()
            let before = primary.database.durablePosition.lsn
            let commit = Task { try await primary.insert("waits") }
            for _ in 0..<200 where primary.database.durablePosition.lsn == before { try await Task.sleep(for: .milliseconds(5)) }
            #expect(primary.database.durablePosition.lsn == before + 1)  // flushed, now waiting for a replica
            // A deposed primary comes back with a longer log of its own (A4): refused as diverged...
            let answer = try await primary.answer(primary.hello(.follow, position: LogPosition(lsn: before + 50, checksum: 0xBAD),
                                                                positionEpoch: 1))
            guard case .refuse(.diverged, _, _, _)? = answer else {
                Issue.record("expected REFUSE(diverged), got \(String(describing: answer))")
                return
            }
            // ...and its HELLO position never counted: the commit ends in doubt, not acknowledged (A1).
            do {
                _ = try await commit.value
                Issue.record("a sync commit was acknowledged on the word of a diverged follower")
            } catch let error as AeroError {
                #expect(error.code == .commitInDoubt)
            }
            #expect(primary.node.acks.durable(of: "n2") == nil)
        }
    }

    @Test func acksCountOnlyForRecordsStreamedInTheSession() async throws {
        try await PrimaryUnderTest.with(replicaWaitMillis: 800, prepare: { db in
            _ = try await db.createCollection(JSON.parse(PrimaryUnderTest.items))
        }) { primary in
            let start = primary.database.durablePosition
            try await primary.session(primary.hello(.follow, position: start, positionEpoch: 1)) { messages, outbound in
                guard case .welcome(_, _, let first)? = try await messages.next() else {
                    Issue.record("a follower on the primary's history was not welcomed")
                    return
                }
                #expect(first == start.lsn + 1)
                // Meanwhile the follower acknowledges what it verified every heartbeat, as a real one
                // does: the primary closes a session silent for `sessionIdleMillis`, and the commit
                // below waits `replicaWaitMillis`, which with scheduling on a loaded machine can pass it.
                let keepalive = Task {
                    while !Task.isCancelled {
                        try await outbound.write(.ack(received: start.lsn, durable: start.lsn, applied: start.lsn))
                        try await Task.sleep(for: .milliseconds(ReplicationTimeouts.heartbeatMillis))
                    }
                }
                await #expect(throws: AeroError.self) { _ = try await primary.insert("unconfirmed") }
                keepalive.cancel()
                _ = await keepalive.result
                // A follower that acknowledges what it was actually sent releases the commit: sync works.
                let confirmed = Task { try await primary.insert("confirmed") }
                var received: UInt64 = 0
                while received < start.lsn + 2, let message = try await messages.next() {
                    if case .records(let records) = message, let last = records.last { received = last.lsn }
                }
                try await outbound.write(.ack(received: received, durable: received, applied: received))
                #expect(try await confirmed.value == start.lsn + 2)
            }
        }
    }

    /// A real replica with nothing to acknowledge answers the primary's heartbeats: its session
    /// lives on past the primary's idle timeout (`sessionIdleMillis`, 2 s without a frame from the
    /// replica). Before, an idle replica sent nothing after its first ACK, so the primary closed
    /// every idle session after 2 s and the replica reconnected: a new session number each time.
    @Test func anIdleReplicasSessionOutlivesThePrimarysIdleTimeout() async throws {
        try await PrimaryUnderTest.with(prepare: { db in
            _ = try await db.createCollection(JSON.parse(PrimaryUnderTest.items))
        }) { primary in
            let replica = try await ReplicaUnderTest.start(following: primary)
            try await replica.whileRunning {
                _ = try await primary.insert("one")
                #expect(try await replica.waitCaughtUp(primary))
                let session = try #require(await primary.node.replicas["n2"]?.session, "n2 follows the primary")
                try await Task.sleep(for: .milliseconds(3 * ReplicationTimeouts.sessionIdleMillis))
                #expect(await primary.node.replicas["n2"]?.session == session, "the idle session was closed and n2 reconnected")
                // And it still serves: a sync commit is released by n2's ACK.
                let lsn = try await primary.insert("two")
                #expect(try await replica.waitCaughtUp(primary))
                #expect(replica.database.durablePosition.lsn == lsn)
                #expect(await primary.node.replicas["n2"]?.session == session)
            }
        }
    }

    /// A replica's ACK naming a durable LSN beyond what its session sent it cannot be its
    /// durable position on this history: the primary counts nothing of it (a waiting sync
    /// commit whose record was sent is not released by it) and ends the session (D1).
    @Test func anAckBeyondWhatTheSessionSentCountsForNothingAndEndsTheSession_D1() async throws {
        try await PrimaryUnderTest.with(replicaWaitMillis: 800, prepare: { db in
            _ = try await db.createCollection(JSON.parse(PrimaryUnderTest.items))
        }) { primary in
            // Only the node's own decision may end the session: with the real 2 s idle timeout the
            // session also ended after the ACK whether or not the claim ended it.
            primary.node.handshakePlaces.outlastAnyTest()
            let start = primary.database.durablePosition
            let ended = try await primary.session(primary.hello(.follow, position: start, positionEpoch: 1)) { messages, outbound in
                guard case .welcome? = try await messages.next() else {
                    Issue.record("a follower on the primary's history was not welcomed")
                    return false
                }
                let commit = Task { try await primary.insert("claimed") }
                var received: UInt64 = 0
                while received < start.lsn + 1, let message = try await messages.next() {
                    if case .records(let records) = message, let last = records.last { received = last.lsn }
                }
                #expect(received == start.lsn + 1, "the commit's record was sent")
                // Claims far more than it was sent: counted as what was sent, this would release the commit.
                try await outbound.write(.ack(received: start.lsn + 100, durable: start.lsn + 100, applied: start.lsn + 100))
                do {
                    _ = try await commit.value
                    Issue.record("an ACK beyond what the session sent released a sync commit")
                } catch let error as AeroError {
                    #expect(error.code == .commitInDoubt)
                }
                #expect((primary.node.acks.durable(of: "n2") ?? 0) <= start.lsn)
                // The primary closed the session (heartbeats may come first), long before the idle
                // timeout could have.
                let draining = ContinuousClock.now
                do {
                    while try await messages.next() != nil {}
                } catch {}
                #expect(ContinuousClock.now - draining < .milliseconds(HandshakePlaces.outlastingAnyTestMillis / 2),
                        "the session was ended by the idle timeout, not by the ACK's claim")
                return true
            }
            #expect(ended)
        }
    }

    // MARK: Item 11: bootstrap only after a fork check

    @Test func aFollowerOlderThanTheRetainedWALIsBootstrappedOnlyWhenProvenOnTheHistory() async throws {
        // Epoch 1 up to `fork`; epoch 2 opened at fork + 1 and then enough writes to recycle every
        // segment holding epoch 1 (a deposed primary of epoch 1 was down meanwhile).
        var fork: UInt64 = 0
        try await PrimaryUnderTest.with(segmentBytes: KernelLimits.walSegmentBytesMin, epoch: 2, prepare: { db in
            _ = try await db.createCollection(JSON.parse(PrimaryUnderTest.items))
            for k in 0..<3 { _ = try await db.commit(JSON.parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"e1-\#(k)"}}]}"#)) }
            fork = db.durablePosition.lsn
        }) { primary in
            // Async writes here: the gate needs a replica, so these end in doubt but are durable.
            primary.database.setCommitGate(nil)
            for k in 0..<120 { _ = try await primary.insert("e2-\(k)", pad: 2_000) }
            _ = try await primary.database.checkpoint()
            let oldest = try #require(try primary.database.records(from: primary.database.oldestLSN, maxBytes: 1).first)
            try #require(oldest.lsn > fork + 3)
            #expect(oldest.epoch == 2 && oldest.type != .epoch)

            // The proof by this primary's epoch history (epoch 1 from LSN 1, epoch 2 from fork + 1):
            // a follower whose record at its LSN is of the same epoch as this primary's record
            // there is bootstrapped; anything else is refused (A4).
            #expect(primary.database.snapshot().state.epochHistory.entries
                    == [EpochHistory.Entry(epoch: 1, startLSN: 1), EpochHistory.Entry(epoch: 2, startLSN: fork + 1)])
            let cases: [(what: String, lsn: UInt64, epoch: UInt64, bootstrapped: Bool)] = [
                ("an empty replica", 0, 0, true),
                ("an honest replica of epoch 1, down across the promotion, at the fork", fork, 1, true),
                ("an honest replica of epoch 1 further back", fork - 2, 1, true),
                ("the deposed primary's longer tail in epoch 1", fork + 2, 1, false),
                ("a tail in epoch 1 just past the fork", fork + 1, 1, false),
                ("a replica that got epoch 2's epoch record", fork + 1, 2, true),
                ("a replica of epoch 2", fork + 2, 2, true),
                ("epoch 2 before it began here", fork, 2, false),
                ("an epoch this primary never had", fork + 2, 3, false),
                ("an unknown epoch", fork, 0, false),
            ]
            for c in cases {
                let frames = try await primary.session(primary.hello(.follow, epoch: 2, position: LogPosition(lsn: c.lsn, checksum: 0x5EED),
                                                                    positionEpoch: c.epoch)) { messages, _ in
                    [try await messages.next(), try await messages.next()]
                }
                if c.bootstrapped {
                    guard case .welcome(2, "n1", let first)?? = frames.first, case .checkpoint(let lsn, _)?? = frames.last else {
                        Issue.record("\(c.what) (LSN \(c.lsn), epoch \(c.epoch)) was not bootstrapped: \(frames)")
                        continue
                    }
                    #expect(first == lsn + 1)
                } else {
                    guard case .refuse(.diverged, _, _, let why)?? = frames.first else {
                        Issue.record("\(c.what) (LSN \(c.lsn), epoch \(c.epoch)) was not refused: \(frames)")
                        continue
                    }
                    #expect(why.contains("cannot be proven"), "\(c.what): \(why)")
                }
            }
            // The position just before the oldest retained record is proven exactly by its chain:
            // streamed, no checkpoint.
            let justBefore = LogPosition(lsn: oldest.lsn - 1, checksum: oldest.previousChecksum)
            guard case .welcome(_, _, let first)? = try await primary.answer(primary.hello(.follow, epoch: 2, position: justBefore, positionEpoch: 2)) else {
                Issue.record("the position before the oldest record was not streamed")
                return
            }
            #expect(first == oldest.lsn)
            let wrongChain = LogPosition(lsn: oldest.lsn - 1, checksum: oldest.previousChecksum ^ 1)
            guard case .refuse(.diverged, _, _, _)? = try await primary.answer(primary.hello(.follow, epoch: 2, position: wrongChain, positionEpoch: 2)) else {
                Issue.record("a wrong checksum before the oldest record was not refused")
                return
            }
        }
    }
}
