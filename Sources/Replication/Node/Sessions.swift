// The accepting side of the replication protocol: every node listens (probes, adopt, demote,
// rejoin reach any node); only the primary streams its WAL to followers.
//
// Admission of a follower decides, then acts: epoch checks, then the history check (P1, A4),
// and only then is the follower registered. Nothing a follower says counts for `sync`/`all`
// waits before its position passed the history check, and afterwards only up to what this
// session has verified or actually sent it (`AckTracker.sent`): a deposed primary reconnecting
// with a diverged, longer log releases no commit (A1). A follower older than the retained WAL
// is bootstrapped from a checkpoint only when its position is proven to be on this history
// (`ReplicationRole.bootstrapProof`, by this node's epoch history: its record at that LSN is of the follower's
// epoch); otherwise it is refused as diverged and halts until `aerodb rejoin` (A4).

import Foundation
import Kernel
import NIOCore
import Synchronization

extension ReplicationNode {
    func serve(_ server: NIOAsyncChannel<AcceptedConnection, Never>) async {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await accepted in inbound {
                        group.addTask { await self.counted { await self.session(accepted) } }
                    }
                }
            }
        } catch is CancellationError {
            return  // the node is stopping
        } catch {
            logger.error("replication listener stopped", metadata: ["error": "\(error)"])
        }
    }

    nonisolated func session(_ accepted: AcceptedConnection) async {
        guard let channel = accepted.take() else { return }
        do {
            try await channel.executeThenClose { inbound, outbound in
                var messages = inbound.makeAsyncIterator()
                let opening: ReplicationMessage?
                do {
                    opening = try await messages.next()
                } catch where ReplicationMessage.isVersionMismatch(error) {
                    // Said to the peer too (a REFUSE's layout is the same in every version), so
                    // the operator finds it on both nodes.
                    logger.warning("refused a replication peer of another protocol version", metadata: [
                        "peer": "\(channel.channel.remoteAddress.map { "\($0)" } ?? "unknown")", "detail": "\(AeroError.wrap(error).message)"])
                    try await outbound.write(.refuse(.badVersion, epoch: 0, primary: "", message: AeroError.wrap(error).message))
                    return
                }
                guard case .hello(let hello)? = opening else { return }
                guard config.admits(hello) else {
                    // A stranger learns nothing: no cluster id, epoch, primary or node names. The
                    // operator finds why in this node's log.
                    let why = hello.clusterID != config.clusterID ? "another cluster id"
                        : config.member(hello.nodeID) == nil ? "an unknown node id" : "a wrong token (another JWT secret?)"
                    logger.notice("refused a replication peer that is not a member",
                                  metadata: ["node": "\(hello.nodeID.prefix(64))", "why": "\(why)",
                                             "peer": "\(channel.channel.remoteAddress.map { "\($0)" } ?? "unknown")"])
                    try await outbound.write(Self.strangerRefusal)
                    return
                }
                switch hello.purpose {
                case .probe:
                    try await outbound.write(.state(await state()))
                case .adopt:
                    try await learn(epoch: hello.epoch, primary: hello.primary, from: "node \(hello.nodeID) being promoted")
                    try await outbound.write(.state(await state()))
                case .demote:
                    try await demote(epoch: hello.epoch, primary: hello.primary)
                    try await outbound.write(.state(await state()))
                case .rejoin:
                    guard case .forkQuery(let positions)? = try await messages.next() else { return }
                    // Up to `forkPositionsMax` reads of the segment files: on `BlockingWork`'s
                    // thread, not on the cooperative pool (nor holding the actor).
                    let found = try await BlockingWork.run { [database] in Self.forkPoint(positions, in: database) }
                    try await outbound.write(await forkAnswer(found, asked: positions.count))
                case .follow:
                    try await follow(hello, messages: &messages, outbound: outbound, inline: try await InlineMessages.of(channel),
                                     channel: channel.channel)
                }
            }
        } catch {
            logger.debug("replication session ended", metadata: ["error": "\(error)"])
        }
    }

    /// What every peer failing the membership check gets: a refusal that names nothing.
    static let strangerRefusal = ReplicationMessage.refuse(.notMember, epoch: 0, primary: "", message: "refused")

    private enum Admission {
        case refuse(ReplicationMessage)
        case stream(from: UInt64, epoch: UInt64, session: Int)
        case bootstrap(epoch: UInt64, session: Int)
    }

    /// Decides how a follower is served: the role value's admission (`ReplicationRole` states
    /// the order of its checks and why) over the facts read here from this node's log.
    private func admit(_ hello: ReplicationMessage.Hello) async throws -> Admission {
        // The facts are read only when the value will get to the history check.
        let facts = machine.needsHistoryFacts(epoch: hello.epoch)
            ? try historyFacts(at: hello.position)
            : HistoryFacts(oldestRetained: 0, mine: .unavailable, oldest: nil, epochAtPosition: nil, durable: database.durablePosition)
        let executed = try await run(.followHello(node: hello.nodeID, epoch: hello.epoch, primary: hello.primary, position: hello.position,
                                                  positionEpoch: hello.positionEpoch, facts: facts),
                                     learnShell(epoch: hello.epoch, primary: hello.primary, from: "follower \(hello.nodeID)"))
        for action in executed.actions {
            switch action {
            case .refuse(_, let reason, let epoch, let primary, let message):
                if reason == .diverged {
                    logger.warning("refused a diverged follower", metadata: ["node": "\(hello.nodeID)", "position": "\(hello.position)",
                                                                            "position_epoch": "\(hello.positionEpoch)", "why": "\(message)"])
                }
                let code: RefusalReason = switch reason {
                case .notPrimary: .notPrimary
                case .staleEpoch: .staleEpoch
                case .diverged: .diverged
                }
                return .refuse(.refuse(code, epoch: epoch, primary: primary, message: message))
            case .stream(_, let session, let from):
                return .stream(from: from, epoch: machine.epoch, session: session)
            case .bootstrap(_, let session):
                return .bootstrap(epoch: machine.epoch, session: session)
            default:
                continue
            }
        }
        throw AeroError(.replicationRefused, "the role decided nothing for the HELLO of \(hello.nodeID)")
    }

    /// What the role needs to know of this log at a follower's position.
    func historyFacts(at position: LogPosition) throws -> HistoryFacts {
        // No arithmetic on the peer's LSN (UInt64.max is simply "ahead").
        let oldestRetained = database.oldestLSN
        var mine = HistoryFacts.Lookup.unavailable
        if HistoryFacts.withinRetained(position.lsn, oldestRetained: oldestRetained) {
            do {
                mine = try database.position(at: position.lsn).map { .at($0) } ?? .beyondEnd
            } catch let error as AeroError where error.code == .lsnUnavailable {
                mine = .unavailable  // recycled meanwhile: the proof decides
            }
        }
        if mine != .unavailable {  // decisive: the proof's facts are not read
            return HistoryFacts(oldestRetained: oldestRetained, mine: mine, oldest: nil, epochAtPosition: nil,
                                durable: database.durablePosition)
        }
        let oldest = try database.records(from: database.oldestLSN, maxBytes: 1).first.map {
            HistoryFacts.OldestRecord(lsn: $0.lsn, previousChecksum: $0.previousChecksum, epoch: $0.epoch, isEpochRecord: $0.type == .epoch)
        }
        let state = database.snapshot().state
        return HistoryFacts(oldestRetained: oldestRetained, mine: mine, oldest: oldest,
                            epochAtPosition: state.epochHistory.epoch(at: position.lsn, last: state.lsn),
                            durable: database.durablePosition)
    }

    private nonisolated func follow(_ hello: ReplicationMessage.Hello,
                                    messages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                    outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>,
                                    inline: InlineMessages, channel: any Channel) async throws {
        let admission = try await admit(hello)
        let (first, epoch, session): (UInt64, UInt64, Int)
        let mailbox = AckMailbox()
        defer { inline.disarm() }
        switch admission {
        case .refuse(let refusal):
            try await outbound.write(refusal)
            return
        case .stream(let from, let e, let s):
            (first, epoch, session) = (from, e, s)
            takeAcksInline(inline, replica: hello.nodeID, session: session, mailbox: mailbox)
            try await outbound.write(.welcome(epoch: epoch, primary: config.nodeID, firstLSN: first))
        case .bootstrap(let e, let s):
            let shipped = try await database.checkpointForShipping()
            (first, epoch, session) = (shipped.lsn + 1, e, s)
            takeAcksInline(inline, replica: hello.nodeID, session: session, mailbox: mailbox)
            // Counted before the write, as every frame: the replica's ACK of the installed
            // checkpoint can never arrive ahead of it (an ACK beyond what was sent is refused).
            acks.sent(hello.nodeID, session: session, through: first - 1)
            try await outbound.write(.welcome(epoch: epoch, primary: config.nodeID, firstLSN: first))
            try await outbound.write(.checkpoint(lsn: shipped.lsn, bytes: shipped.bytes))
            logger.info("shipped a checkpoint to a replica behind the retained WAL",
                        metadata: ["node": "\(hello.nodeID)", "lsn": "\(shipped.lsn)", "bytes": "\(shipped.bytes.count)"])
        }
        logger.info("replica connected", metadata: ["node": "\(hello.nodeID)", "from_lsn": "\(first)"])
        lag.reset(hello.nodeID, session: session)
        let sender = Task {
            try await self.counted {
                try await self.stream(from: first, epoch: epoch, to: outbound, on: OnEventLoop(channel), replica: hello.nodeID, session: session)
            }
        }
        do {
            try await takeAcks(&messages, sender: sender, replica: hello.nodeID, session: session, mailbox: mailbox)
        } catch {
            sender.cancel()
            _ = await sender.result  // nothing of the session runs once it ended
            await disconnected(hello.nodeID, session: session)
            throw error
        }
        sender.cancel()
        _ = await sender.result
        await disconnected(hello.nodeID, session: session)
    }

    private nonisolated func takeAcks(_ messages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                      sender: Task<Void, any Error>, replica: String, session: Int, mailbox: AckMailbox) async throws {
        while let message = try await messages.next() {
            guard case .ack = message else {
                throw ReplicationMessage.malformed("a follower sent something other than ACK")
            }
            // The ACK's commits were released on the event loop (`takeAcksInline`); the actor's
            // bookkeeping (status) follows here with the newest ACK taken meanwhile.
            if let ack = mailbox.take() {
                await acked(replica, session: session, received: ack.received, durable: ack.durable, applied: ack.applied)
            }
            if sender.isCancelled { break }
        }
    }

    /// Arms the session's channel to take ACKs on its event loop, as they are decoded: the
    /// commits a replica's flush completes are released there (`AckTracker.update`, counted as
    /// before: at most what this session sent) and the lag is taken at the ACK's arrival, with no
    /// hand-off to the session's task on their way. The task is woken for the actor's bookkeeping
    /// only when it has taken the previous ACK (`AckMailbox`): one wake-up for any number of ACKs.
    /// Armed before WELCOME, so no ACK of the session can arrive before it.
    private nonisolated func takeAcksInline(_ inline: InlineMessages, replica: String, session: Int, mailbox: AckMailbox) {
        let acks = self.acks, lag = self.lag, logger = self.logger
        inline.arm { message in
            guard case .ack(let received, let durable, let applied) = message else { return false }  // the task refuses it
            // An ACK beyond what this session sent counts for nothing and ends the session.
            guard acks.updateIfSent(replica, session: session, durable: durable) else {
                logger.warning("refused a replica's ACK beyond what it was sent", metadata: ["node": "\(replica)", "durable": "\(durable)"])
                throw AeroError(.replicationRefused, "replica \(replica) reported LSN \(durable) durable, beyond what this session sent it",
                                invariant: "D1")
            }
            lag.applied(replica, session: session, through: applied, atMicros: Self.nowMicros())
            return !mailbox.put(.init(received: received, durable: durable, applied: applied))
        }
    }

    /// Sends durable records as they appear, and a heartbeat when idle, until this node is no
    /// longer the primary of `epoch`.
    private nonisolated func stream(from first: UInt64, epoch: UInt64,
                                    to outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>, on loop: OnEventLoop,
                                    replica: String, session: Int) async throws {
        // The sender waits on the publications themselves (no relay task between them and it);
        // the heartbeat runs beside it and ends the session's streaming when this node is no
        // longer the primary of `epoch` (the sender also checks at every publication).
        let signals = database.appliedSignals()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(ReplicationTimeouts.heartbeatMillis))
                    guard self.isPrimary(of: epoch) else { return }
                    // Under load too: the replica's view of the primary's durable LSN (promotion's
                    // at-risk range) is at most one heartbeat old.
                    try await outbound.write(.heartbeat(epoch: epoch, durableLSN: self.database.durablePosition.lsn,
                                                        timeMicros: Self.nowMicros()))
                }
            }
            group.addTask {
                try await self.ship(from: first, epoch: epoch, signals: signals, to: outbound, on: loop, replica: replica, session: session)
            }
            // The first to end (deposed, the stream finished, a write failed) ends the other.
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// The sender's loop, on the channel's event loop (`OnEventLoop`): the flusher's publication
    /// resumes it there, and it writes the frames there, with no task hand-off in between.
    private func ship(from first: UInt64, epoch: UInt64, signals: AsyncStream<UInt64>,
                                  to outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>,
                                  on loop: isolated OnEventLoop, replica: String, session: Int) async throws {
        var next = first
        for await _ in signals {
            guard self.isPrimary(of: epoch), !Task.isCancelled else { return }
            loop.channel.eventLoop.assertInEventLoop()  // debug builds: resumed where it writes
            while true {
                // A catch-up ships frame after frame without waiting for a publication: it ends
                // here once the session ended (the session awaits this task).
                guard !Task.isCancelled else { return }
                // From memory on the loop; a read that would go to the segment files (a replica
                // catching up from further back, or any after this node restarted) runs on
                // `BlockingWork`'s thread and resumes here: frames stay in order, one at a time.
                let records: [WALRecord]
                if let recent = self.database.recentRecords(from: next, maxBytes: ReplicationLimits.recordsFrameBytesMax) {
                    records = recent
                } else {
                    records = try await BlockingWork.run { [database = self.database, next] in
                        try BlockingWork.records(database, from: next, maxBytes: ReplicationLimits.recordsFrameBytesMax)
                    }
                    loop.channel.eventLoop.assertInEventLoop()
                }
                guard let last = records.last else { break }
                precondition(records[0].lsn == next, "records are shipped in order without gaps (P1)")
                self.lag.sent(replica, through: last.lsn, atMicros: Self.nowMicros())
                // Counted before the write, so an ACK can never arrive ahead of it: the
                // follower's log is this history through its verified position, so all it
                // can hold past that is what this session writes it.
                self.acks.sent(replica, session: session, through: last.lsn)
                try await loop.send(.records(records), outbound)
                next = last.lsn + 1
            }
        }
    }

    private nonisolated func isPrimary(of epoch: UInt64) -> Bool {
        let current = role.withLock { $0 }
        return current.isPrimary && current.epoch == epoch
    }

    private func acked(_ node: String, session: Int, received: UInt64, durable: UInt64, applied: UInt64) {
        guard var r = replicas[node], r.session == session else { return }
        let now = Self.nowMicros()
        r.received = received
        r.durable = acks.durable(of: node) ?? r.durable  // as counted: at most what this session sent
        r.applied = applied
        r.lastAckMicros = now
        if r.durable >= database.durablePosition.lsn { r.caughtUpMicros = now }
        replicas[node] = r
    }

    private func disconnected(_ node: String, session: Int) {
        _ = machine.handle(.disconnected(node: node, session: session))
        guard replicas[node]?.session == session else { return }
        replicas[node] = nil
        acks.forget(node, session: session)
        logger.info("replica disconnected", metadata: ["node": "\(node)"])
    }

    /// The newest of a rejoining node's positions that is on this node's history (reads the
    /// segment files: off the event loops and the cooperative pool).
    private static func forkPoint(_ positions: [LogPosition], in database: Database) -> LogPosition? {
        for position in positions.reversed() {
            guard let mine = try? database.position(at: position.lsn) else { continue }
            if mine == position { return position }
        }
        return nil
    }

    private func forkAnswer(_ found: LogPosition?, asked: Int) -> ReplicationMessage {
        if let found { return .forkPoint(found) }
        return .refuse(.diverged, epoch: marker.epoch, primary: marker.primary,
                       message: "none of the \(asked) positions sent is on the history of \(config.nodeID) within its retained WAL; rejoin with --resync")
    }
}

/// The newest ACK of a follow session not yet taken by its task.
final class AckMailbox: Sendable {
    struct Ack: Sendable, Equatable {
        let received: UInt64
        let durable: UInt64
        let applied: UInt64
    }

    private let latest = Mutex<Ack?>(nil)

    /// Keeps `ack` as the newest; true when the box was empty (the task must be woken).
    func put(_ ack: Ack) -> Bool {
        latest.withLock { l in
            defer { l = ack }
            return l == nil
        }
    }

    func take() -> Ack? { latest.withLock { l in defer { l = nil }; return l } }
}
