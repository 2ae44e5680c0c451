// The shell around the role value: `run` feeds an event to `machine` (`ReplicationRole`) and
// carries out the actions it returns, in their order, with the kernel, the marker store, the
// ack tracker and the follower task. Nothing here decides: what to do and in which order is
// the value's (the same value `aerodb-crashtest sim` runs), the shell only knows how.
//
// Invariants:
// - Actions run in the order given; an action that fails stops the rest and restores the value
//   as it was before the event (the marker was not replaced, so the role is what it was; the
//   event is fed again by whoever retries: a probe loop, the next HELLO, the operator).
// - The node's commit waits live in `AckTracker` (commits wait off the actor, under its lock):
//   `.fence` fails every one of them in doubt; `.release` and `.failInDoubt`, which answer the
//   value's own waits (the simulator's), are never produced for events this shell feeds.
// - `.follow` / `.stopFollowing` are skipped when the follower task itself fed the event (it
//   carries on with the new marker, or ends on its own): a task never awaits itself.

import Kernel

/// How one event's actions are carried out: who fed it and the errors writes and waits end with.
struct RoleShell: Sendable {
    /// For the log: where the event came from.
    var source: String
    /// Why local writes are refused when the role stops them.
    var refusal: AeroError
    /// What waiting commits fail with when the role fences.
    var inDoubt: AeroError
    /// The follower task fed the event.
    var byFollower = false
}

extension ReplicationNode {
    /// What one event did: the actions the value returned, and the fork position when it opened
    /// an epoch.
    struct Executed {
        var actions: [ReplicationRole.Action]
        var fork: LogPosition?
    }

    /// Feeds `event` to the role value and executes its actions (see the file's invariants).
    @discardableResult
    func run(_ event: ReplicationRole.Event, _ shell: RoleShell) async throws -> Executed {
        let before = machine
        var executed = Executed(actions: machine.handle(event))
        do {
            for action in executed.actions {
                if let fork = try await execute(action, shell) { executed.fork = fork }
            }
        } catch {
            machine = before
            throw error
        }
        return executed
    }

    /// One action; the fork position for `.openEpoch`.
    private func execute(_ action: ReplicationRole.Action, _ shell: RoleShell) async throws -> LogPosition? {
        switch action {
        case .acceptWrites(true):
            takePrimaryRole()
        case .acceptWrites(false):
            database.setAcceptsWrites(false, reason: shell.refusal)
        case .fence:
            acks.fence(shell.inDoubt)
            database.setCommitGate(nil)
            watcherTask?.cancel()
        case .release, .failInDoubt:
            break  // the value's own waits: none in the node (its waits are AckTracker's)
        case .forgetReplicas:
            // Sessions admitted from here on (while the epoch record is flushed) are kept.
            replicas = [:]
            acks.reset()
        case .persistMarker(let epoch, let primary):
            let wasPrimary = isPrimary
            try adopt(epoch: epoch, primary: primary)
            if primary != config.nodeID {
                database.setAcceptsWrites(false, reason: notPrimaryError())
                logger.warning("adopted a newer epoch", metadata: ["epoch": "\(epoch)", "primary": "\(primary)",
                                                                  "source": "\(shell.source)", "was_primary": "\(wasPrimary)"])
            }
        case .openEpoch(let epoch):
            let fork = try await database.advanceEpoch(to: epoch)
            // This node's history is the cluster's from here: a refusal as diverged is void.
            divergedReason.withLock { $0 = nil }
            logger.notice("promoted to primary", metadata: ["epoch": "\(epoch)", "fork_lsn": "\(fork.lsn)", "source": "\(shell.source)"])
            return fork
        case .follow:
            guard !shell.byFollower else { break }
            await stopFollower()
            startFollower()
        case .stopFollowing:
            guard !shell.byFollower else { break }
            await stopFollower()
        case .stream(let node, let session, let from):
            registerReplica(node, session: session, verified: from > 0 ? from - 1 : 0)
        case .bootstrap(let node, let session):
            // It holds nothing that counts until it reports the shipped checkpoint installed.
            registerReplica(node, session: session, verified: 0)
        case .refuse:
            break  // answered by the session that fed the HELLO
        }
        return nil
    }

    /// A follower passed the history check: it holds this history through `verified`.
    private func registerReplica(_ node: String, session: Int, verified: UInt64) {
        let now = Self.nowMicros()
        replicas[node] = ReplicaProgress(session: session, durable: verified, connectedMicros: now,
                                         lastAckMicros: now, caughtUpMicros: now)
        acks.admit(node, session: session, verified: verified)
    }
}
