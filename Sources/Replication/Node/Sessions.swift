// The accepting side of the replication protocol: every node listens (probes, adopt, demote,
// rejoin reach any node); only the primary streams its WAL to followers.

import Foundation
import Kernel
import NIOCore
import Synchronization

extension ReplicationNode {
    func serve(_ server: NIOAsyncChannel<ReplicationChannel, Never>) async {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await channel in inbound {
                        group.addTask { await self.session(channel) }
                    }
                }
            }
        } catch is CancellationError {
            return  // the node is stopping
        } catch {
            logger.error("replication listener stopped", metadata: ["error": "\(error)"])
        }
    }

    nonisolated func session(_ channel: ReplicationChannel) async {
        do {
            try await channel.executeThenClose { inbound, outbound in
                var messages = inbound.makeAsyncIterator()
                guard case .hello(let hello)? = try await messages.next() else { return }
                guard hello.clusterID == config.clusterID, config.accepts(token: hello.token),
                      config.member(hello.nodeID) != nil else {
                    try await outbound.write(.refuse(.notMember, epoch: 0, primary: "", message: "not a member of cluster \(config.clusterID)"))
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
                    try await outbound.write(await forkPoint(positions))
                case .follow:
                    try await follow(hello, messages: &messages, outbound: outbound)
                }
            }
        } catch {
            logger.debug("replication session ended", metadata: ["error": "\(error)"])
        }
    }

    private enum Admission {
        case refuse(ReplicationMessage)
        case stream(from: UInt64, epoch: UInt64, session: Int)
        case bootstrap(epoch: UInt64, session: Int)
    }

    /// Decides how a follower is served: the checks of SPEC §4 on its epoch and position.
    private func admit(_ hello: ReplicationMessage.Hello) async throws -> Admission {
        if hello.epoch > marker.epoch && hello.primary == config.nodeID {
            return .refuse(.refuse(.notPrimary, epoch: marker.epoch, primary: marker.primary,
                                   message: "\(config.nodeID) is being promoted to epoch \(hello.epoch) and does not stream yet"))
        }
        if hello.epoch > marker.epoch {
            try await learn(epoch: hello.epoch, primary: hello.primary, from: "follower \(hello.nodeID)")
            return .refuse(.refuse(.staleEpoch, epoch: marker.epoch, primary: marker.primary,
                                   message: "this node learned of epoch \(hello.epoch) from you and stopped being primary"))
        }
        guard isPrimary else {
            return .refuse(.refuse(.notPrimary, epoch: marker.epoch, primary: marker.primary,
                                   message: "\(config.nodeID) is not the primary; \(marker.primary) is, in epoch \(marker.epoch)"))
        }
        let session = nextSessionID
        nextSessionID += 1
        let now = Self.nowMicros()
        replicas[hello.nodeID] = ReplicaProgress(session: session, durable: hello.position.lsn, connectedMicros: now,
                                                 lastAckMicros: now, caughtUpMicros: now)
        acks.update(hello.nodeID, durable: hello.position.lsn)
        if hello.position.lsn + 1 < database.oldestLSN {
            return .bootstrap(epoch: marker.epoch, session: session)
        }
        do {
            guard let mine = try database.position(at: hello.position.lsn) else {
                return .refuse(divergedRefusal(hello, "it is ahead of this primary's log (durable \(database.durablePosition))"))
            }
            guard mine == hello.position else {
                return .refuse(divergedRefusal(hello, "its record \(hello.position.lsn) differs from this primary's (\(mine))"))
            }
            return .stream(from: hello.position.lsn + 1, epoch: marker.epoch, session: session)
        } catch let error as AeroError where error.code == .lsnUnavailable {
            return .bootstrap(epoch: marker.epoch, session: session)
        }
    }

    private func divergedRefusal(_ hello: ReplicationMessage.Hello, _ why: String) -> ReplicationMessage {
        replicas[hello.nodeID] = nil
        acks.forget(hello.nodeID)
        logger.warning("refused a diverged follower", metadata: ["node": "\(hello.nodeID)", "position": "\(hello.position)", "why": "\(why)"])
        return .refuse(.diverged, epoch: marker.epoch, primary: marker.primary,
                       message: "position \(hello.position) is not on the history of \(config.nodeID): \(why); run `aerodb rejoin`")
    }

    private nonisolated func follow(_ hello: ReplicationMessage.Hello,
                                    messages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                    outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>) async throws {
        let admission = try await admit(hello)
        let (first, epoch, session): (UInt64, UInt64, Int)
        switch admission {
        case .refuse(let refusal):
            try await outbound.write(refusal)
            return
        case .stream(let from, let e, let s):
            (first, epoch, session) = (from, e, s)
            try await outbound.write(.welcome(epoch: epoch, primary: config.nodeID, firstLSN: first))
        case .bootstrap(let e, let s):
            let shipped = try await database.checkpointForShipping()
            (first, epoch, session) = (shipped.lsn + 1, e, s)
            try await outbound.write(.welcome(epoch: epoch, primary: config.nodeID, firstLSN: first))
            try await outbound.write(.checkpoint(lsn: shipped.lsn, bytes: shipped.bytes))
            logger.info("shipped a checkpoint to a replica behind the retained WAL",
                        metadata: ["node": "\(hello.nodeID)", "lsn": "\(shipped.lsn)", "bytes": "\(shipped.bytes.count)"])
        }
        logger.info("replica connected", metadata: ["node": "\(hello.nodeID)", "from_lsn": "\(first)"])
        lag.reset(hello.nodeID)
        let sender = Task { try await self.stream(from: first, epoch: epoch, to: outbound, replica: hello.nodeID) }
        defer {
            sender.cancel()
            Task { await self.disconnected(hello.nodeID, session: session) }
        }
        while let message = try await messages.next() {
            guard case .ack(let received, let durable, let applied) = message else {
                throw ReplicationMessage.malformed("a follower sent something other than ACK")
            }
            await acked(hello.nodeID, session: session, received: received, durable: durable, applied: applied)
            if sender.isCancelled { break }
        }
    }

    /// Sends durable records as they appear, and a heartbeat when idle, until this node is no
    /// longer the primary of `epoch`.
    private nonisolated func stream(from first: UInt64, epoch: UInt64,
                                    to outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>, replica: String) async throws {
        let (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let signals = database.appliedSignals()
        let relay = Task {
            for await _ in signals { wakeContinuation.yield() }
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(ReplicationTimeouts.heartbeatMillis))
                wakeContinuation.yield()
            }
        }
        defer {
            relay.cancel()
            ticker.cancel()
            wakeContinuation.finish()
        }
        var next = first
        var lastHeartbeat = Self.nowMicros()
        for await _ in wake {
            let current = role.withLock { $0 }
            guard current.isPrimary, current.epoch == epoch, !Task.isCancelled else { return }
            while true {
                let records = try database.records(from: next, maxBytes: ReplicationLimits.recordsFrameBytesMax)
                guard let last = records.last else { break }
                precondition(records[0].lsn == next, "records are shipped in order without gaps (P1)")
                lag.sent(replica, through: last.lsn, atMicros: Self.nowMicros())
                try await outbound.write(.records(records))
                next = last.lsn + 1
            }
            // Under load too: the replica's view of the primary's durable LSN (promotion's
            // at-risk range) is at most one heartbeat old.
            let now = Self.nowMicros()
            if now - lastHeartbeat >= ReplicationTimeouts.heartbeatMillis * 1000 {
                try await outbound.write(.heartbeat(epoch: epoch, durableLSN: database.durablePosition.lsn, timeMicros: now))
                lastHeartbeat = now
            }
        }
    }

    private func acked(_ node: String, session: Int, received: UInt64, durable: UInt64, applied: UInt64) {
        guard var r = replicas[node], r.session == session else { return }
        let now = Self.nowMicros()
        r.received = received
        r.durable = max(r.durable, durable)
        r.applied = applied
        r.lastAckMicros = now
        if r.durable >= database.durablePosition.lsn { r.caughtUpMicros = now }
        replicas[node] = r
        acks.update(node, durable: durable)
        lag.applied(node, through: applied, atMicros: now)
    }

    private func disconnected(_ node: String, session: Int) {
        guard replicas[node]?.session == session else { return }
        replicas[node] = nil
        acks.forget(node)
        logger.info("replica disconnected", metadata: ["node": "\(node)"])
    }

    /// The newest of a rejoining node's positions that is on this node's history.
    private func forkPoint(_ positions: [LogPosition]) -> ReplicationMessage {
        for position in positions.reversed() {
            guard let mine = try? database.position(at: position.lsn) else { continue }
            if mine == position { return .forkPoint(position) }
        }
        return .refuse(.diverged, epoch: marker.epoch, primary: marker.primary,
                       message: "none of the \(positions.count) positions sent is on the history of \(config.nodeID) within its retained WAL; rejoin with --resync")
    }
}
