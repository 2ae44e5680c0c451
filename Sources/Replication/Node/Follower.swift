// The replica side: connect to the primary the marker names, present this node's last durable
// position, then append the records it ships (byte for byte, P1) and acknowledge flushes.
// When the primary is unreachable, probe every peer for a newer epoch and follow it (A2).

import Foundation
import Kernel
import NIOCore
import Synchronization

extension ReplicationNode {
    /// Longest pause between attempts to reach the primary.
    static let reconnectMillis: Int64 = 100
    /// First pause after a session that streamed ended (or before the first retry): the pause
    /// doubles up to `reconnectMillis` while attempts fail. A replica told to follow a node being
    /// promoted often reaches it a few milliseconds before it opens its epoch: a fixed 100 ms
    /// pause there was the whole of the slowest promotions (promotion to first accepted write
    /// p50 9.6 ms, max 112 ms in one bench run).
    static let reconnectFirstMillis: Int64 = 5

    /// The pause before the next attempt: `reconnectFirstMillis` after a session that streamed,
    /// else twice the last pause, at most `reconnectMillis`.
    static func nextReconnectPause(after last: Int64?, streamed: Bool) -> Int64 {
        guard let last, !streamed else { return reconnectFirstMillis }
        return last >= reconnectMillis / 2 ? reconnectMillis : max(last, 1) * 2
    }

    func startFollower() {
        followerTask?.cancel()
        followerTask = Task { await self.counting(); defer { self.ended() }; await self.followLoop() }
    }

    /// Stops the follower and waits until it can no longer append anything (promotion, a new epoch).
    func stopFollower() async {
        guard let task = followerTask else { return }
        task.cancel()
        followerTask = nil
        try? await followerChannel?.close()
        await task.value
        followerChannel = nil
        progress.withLock { $0.connected = false }
    }

    private func followLoop() async {
        var pause: Int64? = nil
        while !Task.isCancelled && !isPrimary && divergence == nil {
            guard let primary = config.member(marker.primary) else {
                followerState = "no member \(marker.primary) in the cluster config"
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            do {
                followerState = "connecting to \(primary.nodeID)"
                try await followSession(primary)
            } catch {
                if !Task.isCancelled { followerState = "reconnecting to \(primary.nodeID): \(AeroError.wrap(error).message)" }
            }
            let streamed = progress.withLock { p in
                defer { p.connected = false }
                return p.connected
            }
            if Task.isCancelled || divergence != nil { break }
            let next = Self.nextReconnectPause(after: pause, streamed: streamed)
            pause = next
            try? await Task.sleep(for: .milliseconds(next))
            if let newer = await highestEpochAmongPeers(), newer.epoch > marker.epoch {
                await learnLogged(epoch: newer.epoch, primary: newer.primary, from: "peer probe", byFollower: true)
            }
        }
    }

    private func followSession(_ primary: ClusterMember) async throws {
        let channel = try await Transport.connect(primary.replication, idleMillis: ReplicationTimeouts.sessionIdleMillis, tls: config.tls)
        guard !Task.isCancelled else {
            // Through executeThenClose: dropping an NIOAsyncChannel whose writer was never
            // finished traps the process (apple/swift-nio#2813, INVARIANTS SD1).
            try? await channel.executeThenClose { _, _ in }
            return
        }
        followerChannel = channel.channel
        let hello = helloMessage(.follow)
        let myEpoch = marker.epoch
        let inline = try await InlineMessages.of(channel)
        // Every message passes through the stream until `receive` applies records on the event
        // loop; the count keeps them in order (`ReceiveQueue`).
        let queued = ReceiveQueue()
        inline.arm { _ in
            queued.add()
            return false
        }
        defer { inline.disarm() }
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(hello)
            var messages = inbound.makeAsyncIterator()
            guard let first = try await messages.next() else {
                throw AeroError(.primaryUnavailable, "\(primary.nodeID) closed the connection")
            }
            let epoch: UInt64
            switch first {
            case .welcome(let e, let p, _):
                guard e >= myEpoch else {
                    try await outbound.write(.refuse(.staleEpoch, epoch: myEpoch, primary: self.marker.primary,
                                                     message: "epoch \(e) is older than this node's epoch \(myEpoch)"))
                    throw AeroError(.replicationRefused, "\(p) offered epoch \(e), older than this node's \(myEpoch)", invariant: "A2")
                }
                if e > myEpoch { try await learnWhileFollowing(epoch: e, primary: p) }
                epoch = e
            case .refuse(.diverged, _, _, let message):
                await self.halt(diverged: message)
                return
            case .refuse(let reason, let e, let p, let message):
                if e > myEpoch { try await self.learn(epoch: e, primary: p, from: "\(primary.nodeID) refusing (\(reason))", byFollower: true) }
                throw AeroError(.replicationRefused, message)
            default:
                throw ReplicationMessage.malformed("expected WELCOME")
            }
            self.setFollowerState("streaming from \(primary.nodeID)")
            self.progress.withLock { $0.connected = true }
            queued.done()  // the WELCOME
            try await self.receive(&messages, epoch: epoch, outbound: outbound, inline: inline, queued: queued, channel: channel.channel)
        }
    }

    /// A WELCOME in a newer epoch from the node we already follow: adopt it without restarting
    /// this session (the marker changes durably before anything of that epoch is applied).
    private func learnWhileFollowing(epoch: UInt64, primary: String) async throws {
        try await learn(epoch: epoch, primary: primary, from: "WELCOME of \(primary)", byFollower: true)
    }

    private func setFollowerState(_ text: String) { followerState = text }

    private func halt(diverged message: String) async {
        divergedReason.withLock { $0 = message }
        // The role's one action (stop following) is this follower's own return.
        let error = AeroError(.replicationDiverged, message, invariant: "A4")
        do {
            try await run(.refusedDiverged, RoleShell(source: "the primary's refusal", refusal: error, inDoubt: error, byFollower: true))
        } catch {
            logger.error("could not halt the role as diverged", metadata: ["error": "\(error)"])
        }
        followerState = "diverged"
        logger.error("this node's history diverged from the primary's: run `aerodb rejoin`", metadata: ["detail": "\(message)"])
    }

    /// Applies what the primary sends; a separate task acknowledges flushes, so receiving and
    /// flushing overlap (the replica's WAL groups what arrives while it flushes).
    ///
    /// Shipped records are applied on the channel's event loop as they are decoded (no hand-off
    /// to this task on their way to the log) whenever nothing passed to the stream is still
    /// unprocessed (`ReceiveQueue`): everything is applied in the order it arrived. The stream's
    /// path below handles all the rest (checkpoint, heartbeat, a frame that fails a check), as
    /// before. Applying there stops before this returns (`InlineMessages.disarm` waits for a
    /// frame being applied), so a follower that was stopped appends nothing more.
    private nonisolated func receive(_ messages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                     epoch: UInt64, outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>,
                                     inline: InlineMessages, queued: ReceiveQueue, channel: any Channel) async throws {
        let (pokes, poke) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let heartbeat = HeartbeatDue()
        let acker = Task { try await self.counted { try await self.acknowledge(pokes, heartbeat, outbound, on: OnEventLoop(channel)) } }
        do {
            try await receiveFrames(&messages, epoch: epoch, inline: inline, queued: queued, poke: poke, heartbeat: heartbeat)
        } catch {
            inline.disarm()
            poke.finish()
            acker.cancel()
            _ = await acker.result  // nothing of the session runs once it ended
            throw error
        }
        inline.disarm()
        poke.finish()
        acker.cancel()
        _ = await acker.result
    }

    private nonisolated func receiveFrames(_ messages: inout NIOAsyncChannelInboundStream<ReplicationMessage>.AsyncIterator,
                                           epoch: UInt64, inline: InlineMessages, queued: ReceiveQueue,
                                           poke: AsyncStream<Void>.Continuation, heartbeat: HeartbeatDue) async throws {
        inline.arm { message in
            try queued.route(message) { records in try self.applyInline(records, epoch: epoch, poke: poke) }
        }
        poke.yield()
        while let message = try await messages.next() {
            defer { queued.done() }
            if Task.isCancelled { return }
            switch message {
            case .records(let records):
                // A node that adopted a newer epoch appends nothing more of this session's (A2).
                guard role.withLock({ $0.epoch }) == epoch else { return }
                guard records.allSatisfy({ $0.epoch <= epoch }) else {
                    throw AeroError(.replicationRefused, "the primary of epoch \(epoch) sent a record of a later epoch", invariant: "A2")
                }
                // Here waiting for the WAL's next segment is allowed (not on the event loop).
                let last = try BlockingWork.applyMayWait(database, records)
                progress.withLock { $0.received = last }
            case .checkpoint(let lsn, let bytes):
                try await database.install(checkpoint: bytes)
                progress.withLock { $0.received = lsn }
                logger.info("installed a checkpoint shipped by the primary", metadata: ["lsn": "\(lsn)", "bytes": "\(bytes.count)"])
            case .heartbeat(let e, let durable, _):
                guard e == epoch else { throw AeroError(.replicationRefused, "heartbeat of epoch \(e) in a session of epoch \(epoch)") }
                progress.withLock {
                    $0.primaryDurable = durable
                    $0.lastHeartbeatMicros = Self.nowMicros()
                }
                heartbeat.due.store(true, ordering: .releasing)  // answered by an ACK (the poke below)
            default:
                throw ReplicationMessage.malformed("unexpected message while streaming")
            }
            poke.yield()
        }
    }

    /// Applies a frame on the event loop when it passes the stream path's checks (same epoch,
    /// no record of a later one) and can be placed without waiting; false leaves it to that
    /// path, which decides (A2) or applies it where waiting is allowed. A frame that would wait
    /// for the WAL's next segment to be preallocated (`applyReplicatedWithoutWaiting` nil:
    /// nothing placed) goes the stream's way, and so does every frame after it until the stream
    /// has processed it (`ReceiveQueue.route` counts it): arrival order is kept (P1).
    private nonisolated func applyInline(_ records: [WALRecord], epoch: UInt64,
                                         poke: AsyncStream<Void>.Continuation) throws -> Bool {
        guard role.withLock({ $0.epoch }) == epoch, records.allSatisfy({ $0.epoch <= epoch }) else { return false }
        guard let last = try database.applyReplicatedWithoutWaiting(records) else {
            ReplicationProbes.framesLeftToTheStream.add(1, ordering: .relaxed)
            return false
        }
        progress.withLock { $0.received = last }
        poke.yield()
        return true
    }

    /// Sends ACK(received, durable, applied) after each flush that advances durability over what
    /// was received: it waits for the first LSN not yet acknowledged, not for everything received,
    /// so a flush is acknowledged as it completes even while more records keep arriving (a
    /// replica that waited for all it had received answered one flush late, or not at all while
    /// frames kept coming).
    ///
    /// It runs on the channel's event loop (`OnEventLoop`) and waits for durability on the
    /// database's publications, which the WAL's flusher makes right after each flush (on a
    /// replica every shipped batch ends in a state published once it is durable): the flush
    /// resumes it on the event loop, which writes the ACK at once. (`Database.waitDurable`, a
    /// nonisolated async call, would resume on the cooperative pool and hop to the event loop to
    /// write.) The ACK still names only what the WAL reports durable when it is written (D1).
    ///
    /// A heartbeat not followed by any ACK is answered by one, with the same positions if nothing
    /// changed: the primary closes its side of a session after `sessionIdleMillis` without a
    /// frame from the replica, so an idle replica that sent nothing lost its session every 2 s
    /// (and reconnected: a sync commit arriving meanwhile waited for the new session).
    private func acknowledge(_ pokes: AsyncStream<Void>, _ heartbeat: HeartbeatDue,
                             _ outbound: NIOAsyncChannelOutboundWriter<ReplicationMessage>,
                             on loop: isolated OnEventLoop) async throws {
        var acknowledged: UInt64?  // the durable LSN of the last ACK; none yet in this session
        var publications = database.appliedSignals().makeAsyncIterator()
        for await _ in pokes {
            acking: while true {
                let received = progress.withLock { $0.received }
                if let acknowledged, received <= acknowledged {
                    guard heartbeat.due.exchange(false, ordering: .acquiring) else { break }
                    try await loop.send(.ack(received: received, durable: acknowledged, applied: database.snapshot().lsn), outbound)
                    break
                }
                let target = min(received, (acknowledged ?? 0) + 1)
                while database.durablePosition.lsn < target {
                    // nil: the database closed; the next poke acks what is durable, if anything.
                    guard await publications.next(isolation: loop) != nil else { break acking }
                }
                loop.channel.eventLoop.assertInEventLoop()  // debug builds: resumed where it writes
                let durable = database.durablePosition.lsn
                heartbeat.due.store(false, ordering: .relaxed)  // this ACK answers it
                try await loop.send(.ack(received: progress.withLock { $0.received }, durable: durable,
                                         applied: database.snapshot().lsn), outbound)
                acknowledged = durable
            }
        }
    }
}

/// A heartbeat arrived that no ACK answered yet (`Follower.acknowledge`).
final class HeartbeatDue: Sendable {
    let due = Atomic<Bool>(false)
}

/// Messages a follow session passed to its stream and has not finished processing: the event
/// loop applies a frame itself only when none is left, so nothing overtakes an earlier message.
final class ReceiveQueue: Sendable {
    private let count = Atomic<Int>(0)

    var isEmpty: Bool { count.load(ordering: .acquiring) == 0 }

    /// On the event loop, before passing a message on.
    func add() { count.add(1, ordering: .relaxed) }

    /// On the event loop: true when `apply` took `message` (a frame, with nothing passed on still
    /// unprocessed, and `apply` accepted it); otherwise the message is counted as passed on.
    func route(_ message: ReplicationMessage, apply: ([WALRecord]) throws -> Bool) rethrows -> Bool {
        if case .records(let records) = message, isEmpty, try apply(records) { return true }
        add()
        return false
    }

    /// On the session's task, after a message was processed.
    func done() { count.subtract(1, ordering: .releasing) }
}
