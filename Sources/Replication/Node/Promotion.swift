// Promotion (failover), switchover (planned handover) and demotion: explicit operator commands
// only, each validated and reported check by check (A3). Nothing changes when a check refuses.

import Foundation
import Kernel

/// What `aerodb promote` / `aerodb switchover` print: every check with its outcome.
public struct PromotionReport: Sendable {
    public struct Check: Sendable {
        public let name: String
        /// `pass`, `warn` (proceeded: --force or async mode) or `refuse`.
        public let outcome: String
        public let detail: String
    }

    public var checks: [Check] = []
    public var promoted = false
    public var epoch: UInt64?
    public var forkLSN: UInt64?
    public var betterCandidate: String?
    /// LSNs that may have been acknowledged and are not on the target (forced or async).
    public var atRisk: ClosedRange<UInt64>?
    public var elapsedMillis: Double = 0
    /// A dry run (`?dry_run=true`, `aerodb promote --dry-run`): the same checks, nothing acted on.
    /// `wouldPromote` is whether the real call would go on past them; `epoch` the epoch it would open.
    public var dryRun = false
    public var wouldPromote = false

    mutating func check(_ name: String, _ outcome: String, _ detail: String) {
        checks.append(Check(name: name, outcome: outcome, detail: detail))
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "promoted": .bool(promoted),
            "checks": .array(checks.map { .object(["name": .string($0.name), "outcome": .string($0.outcome), "detail": .string($0.detail)]) }),
            "elapsed_ms": .float(elapsedMillis),
        ]
        o["epoch"] = epoch.map { .int(Int64($0)) } ?? .null
        o["fork_lsn"] = forkLSN.map { .int(Int64($0)) } ?? .null
        o["better_candidate"] = betterCandidate.map(JSONValue.string) ?? .null
        o["lsns_at_risk"] = atRisk.map { .object(["from": .int(Int64($0.lowerBound)), "to": .int(Int64($0.upperBound))]) } ?? .null
        if dryRun {
            o["dry_run"] = .bool(true)
            o["would_promote"] = .bool(wouldPromote)
        }
        return .object(o)
    }
}

extension ReplicationNode {
    /// How long a switchover waits for the old primary to drain and the target to catch up.
    /// Below the session idle time, so the demote session is never cut while it drains.
    static let switchoverWaitMillis: Int64 = 1_500

    /// Runs `steps` after the target checks pass and reports how long it all took.
    private func timedReport(dryRun: Bool, _ steps: (inout PromotionReport) async -> Void) async -> PromotionReport {
        let started = DispatchTime.now()
        var report = PromotionReport()
        report.dryRun = dryRun
        if checkTarget(&report) { await steps(&report) }
        report.elapsedMillis = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e6
        return report
    }

    /// Failover: makes this replica the primary of a new epoch, after the checks of SPEC §4.
    /// `dryRun`: the same checks on the same facts (probes, positions, the role's answer to
    /// `.beginPromotion` computed on a copy of the role value), then a report and nothing else:
    /// no role event, no fencing, no marker. Its position is not frozen (the replica keeps
    /// following), and the "after fencing" re-check needs the fencing: the real call repeats both.
    public func promote(force: Bool, dryRun: Bool = false) async -> PromotionReport {
        await timedReport(dryRun: dryRun) { await promoteSteps(force: force, dryRun: dryRun, &$0) }
    }

    private func promoteSteps(force: Bool, dryRun: Bool = false, _ report: inout PromotionReport) async {
        let probes = await probePeers()
        let oldPrimary = marker.primary
        if let s = probes[oldPrimary] ?? nil,
           PromotionDecision.oldPrimaryAnswers(isPrimary: s.isPrimary, epoch: s.epoch, candidateEpoch: marker.epoch) {
            report.check("old primary unreachable", "refuse",
                         "\(oldPrimary) answered as primary of epoch \(s.epoch): use `aerodb switchover` for a planned handover")
            return
        }
        report.check("old primary unreachable", "pass", (probes[oldPrimary] ?? nil) == nil
                     ? "\(oldPrimary) did not answer within \(ReplicationTimeouts.probeMillis) ms" : "\(oldPrimary) is not acting as primary")
        // From here this node's position must be final: it stops following (resumed on refusal).
        // A dry run asks a copy of the role value (decide, then act: it does not act).
        if dryRun {
            var trial = machine
            guard trial.handle(.beginPromotion).contains(.stopFollowing) else {
                report.check("promotion started", "refuse", "the role of \(config.nodeID) is \(machine.mode.rawValue), not replica (a promotion in progress?)")
                return
            }
        } else {
            do {
                guard try await run(.beginPromotion, promotionShell()).actions.contains(.stopFollowing) else {
                    report.check("promotion started", "refuse", "the role of \(config.nodeID) is \(machine.mode.rawValue), not replica (a promotion in progress?)")
                    return
                }
            } catch {
                report.check("promotion started", "refuse", "\(error)")
                return
            }
        }
        let mine = database.durablePosition
        let others = config.peers.filter { $0.nodeID != oldPrimary }
        let reachable = others.compactMap { peer in (probes[peer.nodeID] ?? nil).map { (peer.nodeID, $0) } }
        guard checkNoneAhead(&report, reachable, mine: mine, after: "") else {
            if !dryRun { await promotionRefused() }
            return
        }
        guard checkHistoryProof(&report, probes: probes, oldPrimary: oldPrimary, force: force) else {
            if !dryRun { await promotionRefused() }
            return
        }
        let epoch = PromotionDecision.nextEpoch(mine: marker.epoch, peers: probes.values.compactMap { $0?.epoch })
        // Who is asked to adopt the epoch: the reachable replicas, and the old primary when it
        // answered (not acting as primary, check 3): it holds a vote like any member, though its
        // position is not compared (as before: a deposed primary's tail is not a candidate's).
        let voters = reachable.map(\.0) + ((probes[oldPrimary] ?? nil) != nil ? [oldPrimary] : [])
        // Before fencing (a refusal here changes nothing anywhere): can a majority hold the epoch?
        let reachableQuorum = PromotionDecision.epochQuorum(candidate: config.nodeID, epoch: epoch, members: config.members.count,
                                                            answers: voters.map { ($0, epoch, config.nodeID) })
        guard checkQuorum(&report, reachableQuorum, epoch: epoch, force: force, name: "majority reachable",
                          counted: "reachable") else {
            if !dryRun { await promotionRefused() }
            return
        }
        if dryRun {
            report.wouldPromote = true
            report.epoch = epoch
            return
        }
        // Fence the other replicas first: once they adopted the epoch durably they acknowledge
        // nothing more of the old primary, so their positions are final; check them again.
        let fenced = await adoptEpoch(epoch, on: voters, &report)
        guard checkNoneAhead(&report, fenced.filter { $0.0 != oldPrimary }, mine: mine, after: " after fencing") else {
            await promotionRefused()
            return
        }
        // A1: the epoch opens only once a majority holds it naming this node. Peers that adopted
        // it wait for this node (they follow it; it refuses them until a promotion succeeds).
        let quorum = PromotionDecision.epochQuorum(candidate: config.nodeID, epoch: epoch, members: config.members.count,
                                                   answers: fenced.map { ($0.0, $0.1.epoch, $0.1.primary) })
        guard checkQuorum(&report, quorum, epoch: epoch, force: force, name: "epoch adopted by a majority",
                          counted: "durably hold epoch \(epoch) naming \(config.nodeID)") else {
            await promotionRefused()
            return
        }
        do {
            let fork = try await becomePrimary(epoch: epoch)
            report.promoted = true
            report.epoch = epoch
            report.forkLSN = fork.lsn
            report.check("epoch bumped durably", "pass", "epoch \(epoch) opened at LSN \(fork.lsn + 1); marker names \(config.nodeID)")
        } catch {
            report.check("epoch bumped durably", "refuse", "\(error)")
            await promotionRefused()
        }
    }

    /// The errors of the operator's commands (promote, switchover) when the role stops writes.
    private func promotionShell() -> RoleShell {
        RoleShell(source: "operator", refusal: notPrimaryError(),
                  inDoubt: AeroError(.commitInDoubt, "node \(config.nodeID) changed role while this commit waited for replicas", invariant: "A2"))
    }

    /// The promotion was refused after it started: the role follows again.
    private func promotionRefused() async {
        do {
            try await run(.promotionRefused, promotionShell())
        } catch {
            logger.error("could not resume following after a refused promotion", metadata: ["error": "\(error)"])
        }
    }

    /// Refuses (naming the best one) when a replica holds more than this node, in the order of
    /// `PromotionOrder`: the epoch of the last durable record first, then the LSN. A deposed
    /// primary's longer tail in an older epoch is not ahead of a replica holding records of the
    /// newer one (found by `aerodb-crashtest sim --sabotage promote-by-lsn-only`: promoting it
    /// loses `sync`-acknowledged commits). A peer that does not report its record's epoch (0)
    /// is compared by LSN alone.
    private func checkNoneAhead(_ report: inout PromotionReport, _ states: [(String, NodeState)], mine: LogPosition,
                                after: String) -> Bool {
        let (position, positionEpoch) = durablePositionWithEpoch()
        let myEpoch = position == mine ? positionEpoch : 0
        let peers = states.map { ($0.0, (epoch: $0.1.durableEpoch, lsn: $0.1.durable.lsn)) }
        if let (better, key) = PromotionDecision.betterCandidate(than: (myEpoch, mine.lsn), among: peers) {
            report.betterCandidate = better
            report.check("most up-to-date replica" + after, "refuse",
                         "\(better) has durable LSN \(key.lsn) of epoch \(key.epoch), ahead of this node's \(mine.lsn) of epoch \(myEpoch): promote \(better)")
            return false
        }
        report.check("most up-to-date replica" + after, "pass",
                     "durable LSN \(mine.lsn) of epoch \(myEpoch); no reachable replica is ahead (epoch of the last record, then LSN)")
        return true
    }

    /// Reports the majority check of `quorum` (A1): pass; refuse without a majority; warn with
    /// `--force`, naming the risk (another candidate on the other side of a partition may open
    /// the same epoch, and both would accept writes).
    private func checkQuorum(_ report: inout PromotionReport, _ quorum: PromotionDecision.EpochQuorum, epoch: UInt64,
                             force: Bool, name: String, counted: String) -> Bool {
        let have = "\(quorum.holders.count) of \(quorum.members) members (\(quorum.holders.joined(separator: ", "))) \(counted); a majority is \(quorum.needed)"
        if quorum.reached {
            report.check(name, "pass", have)
            return true
        }
        if force {
            report.check(name, "warn", have + " (--force): a promotion on the other side of a partition may open epoch \(epoch) too, "
                         + "and both primaries would accept writes (A1 not guaranteed); promote no other node until the partition heals")
            return true
        }
        report.check(name, "refuse", have + ": refusing without --force (run it where a majority is reachable, or force it if the other members are known to be down)")
        return false
    }

    private func checkTarget(_ report: inout PromotionReport) -> Bool {
        guard !isPrimary else {
            report.check("target is a replica", "refuse", "\(config.nodeID) is already the primary of epoch \(marker.epoch)")
            return false
        }
        report.check("target is a replica", "pass", "\(config.nodeID) follows \(marker.primary) in epoch \(marker.epoch)")
        if let failure = database.failure {
            report.check("target is healthy", "refuse", "its WAL failed: \(failure)")
            return false
        }
        if let divergence {
            report.check("target is healthy", "refuse", "its history diverged from the primary's: \(divergence)")
            return false
        }
        report.check("target is healthy", "pass", "WAL healthy, history verified by the primary")
        return true
    }

    /// In `sync` mode every acknowledged commit was flushed by at least one replica: it is on
    /// this node if every other replica answered and none is ahead. Otherwise the range between
    /// this node's durable LSN and the last one the primary reported may hold acknowledged commits.
    private func checkHistoryProof(_ report: inout PromotionReport, probes: [String: NodeState?], oldPrimary: String,
                                   force: Bool) -> Bool {
        let mine = database.durablePosition.lsn
        let primaryDurable = progress.withLock { $0.primaryDurable }
        let risk: ClosedRange<UInt64>? = primaryDurable > mine ? (mine + 1)...primaryDurable : nil
        let name = "acknowledged history on the target"
        switch commitModes.strictestRecent {  // the cluster setting may be newer than this node's copy
        case .all:
            report.check(name, "pass", "commit mode all: every acknowledged commit was flushed by every replica")
            return true
        case .async:
            report.atRisk = risk
            report.check(name, "warn", "commit mode async: acknowledged commits are not proven on any replica"
                         + (risk.map { "; LSNs \($0.lowerBound)-\($0.upperBound) (the primary's last reported durable LSN) may be lost" } ?? ""))
            return true
        case .sync:
            let silent = config.peers.filter { $0.nodeID != oldPrimary && (probes[$0.nodeID] ?? nil) == nil }.map(\.nodeID)
            if silent.isEmpty {
                report.check(name, "pass", "commit mode sync: every other replica answered and none is ahead, so every acknowledged commit is here")
                return true
            }
            let range = risk ?? (mine + 1)...(mine + 1)
            report.atRisk = range
            let detail = "replica(s) \(silent.joined(separator: ", ")) did not answer: commits acknowledged through them may be missing here; LSNs from \(range.lowerBound) (through at least \(range.upperBound)) are at risk"
            report.check(name, force ? "warn" : "refuse", force ? detail + " (--force)" : detail + "; refusing without --force")
            return force
        }
    }

    /// The role's `.promote`: stops following, forgets replica progress (before the marker names
    /// this node: sessions admitted from then on, while the epoch record is flushed, are kept),
    /// writes the new marker durably, opens the epoch in the WAL, accepts writes.
    func becomePrimary(epoch: UInt64) async throws -> LogPosition {
        let executed = try await run(.promote(epoch: epoch), promotionShell())
        guard let fork = executed.fork else {
            throw AeroError(.promotionRefused, "epoch \(epoch) is not above this node's epoch \(machine.epoch) (it learned a newer one meanwhile)")
        }
        return fork
    }

    /// Tells `nodes` the new epoch with this node as primary; each adopts it durably, stops
    /// following the old primary and answers its final state. Unreachable ones learn it later.
    private func adoptEpoch(_ epoch: UInt64, on nodes: [String], _ report: inout PromotionReport) async -> [(String, NodeState)] {
        let hello = helloMessage(.adopt, epoch: epoch, primary: config.nodeID)
        let answers = await withTaskGroup(of: (String, NodeState?).self) { group in
            for peer in config.peers where nodes.contains(peer.nodeID) {
                group.addTask {
                    guard case .state(let s)? = try? await Transport.ask(peer.replication, hello, idleMillis: ReplicationTimeouts.probeMillis, tls: self.config.tls) else {
                        return (peer.nodeID, nil)
                    }
                    return (peer.nodeID, s)
                }
            }
            var out: [(String, NodeState?)] = []
            for await a in group { out.append(a) }
            return out.sorted { $0.0 < $1.0 }
        }
        for (node, state) in answers {
            report.check("peer \(node) fenced", "pass", state.map { "adopted epoch \($0.epoch) (primary \($0.primary)), durable LSN \($0.durable.lsn)" }
                         ?? "did not answer: it learns the epoch when it reconnects")
        }
        return answers.compactMap { a in a.1.map { (a.0, $0) } }
    }

    // MARK: Switchover

    /// Planned handover to this replica while the primary is alive: the primary stops writing
    /// and drains, this node confirms it holds the primary's final position, then takes over.
    /// `dryRun`: the checks made before the old primary is asked to demote, and nothing else
    /// (the drain and the final-position check need the demotion: the real call makes them).
    public func switchover(dryRun: Bool = false) async -> PromotionReport {
        await timedReport(dryRun: dryRun) { await switchoverSteps(dryRun: dryRun, &$0) }
    }

    private func switchoverSteps(dryRun: Bool = false, _ report: inout PromotionReport) async {
        guard let old = config.member(marker.primary), progress.withLock({ $0.connected }) else {
            report.check("primary reachable", "refuse", "this node is not streaming from \(marker.primary): use `aerodb promote` for a failover")
            return
        }
        report.check("primary reachable", "pass", "streaming from \(old.nodeID)")
        let epoch = marker.epoch + 1
        if dryRun {
            report.wouldPromote = true
            report.epoch = epoch
            return
        }
        let final: LogPosition
        do {
            let answer = try await Transport.ask(old.replication, helloMessage(.demote, epoch: epoch, primary: config.nodeID),
                                                 idleMillis: Self.switchoverWaitMillis + 1_000, tls: config.tls)
            guard case .state(let s) = answer, !s.isPrimary else {
                report.check("old primary demoted and drained", "refuse", "\(old.nodeID) did not hand over: \(answer)")
                return
            }
            final = s.durable
        } catch {
            report.check("old primary demoted and drained", "refuse", "\(AeroError.wrap(error).message)")
            return
        }
        report.check("old primary demoted and drained", "pass", "\(old.nodeID) stopped writing; its final durable position is \(final)")
        guard await database.waitApplied(final.lsn, timeout: .milliseconds(Self.switchoverWaitMillis)),
              (try? database.position(at: final.lsn)) == final else {
            report.check("final position applied here", "refuse", "this node does not hold \(final); the old primary stays demoted: run `aerodb promote`")
            return
        }
        report.check("final position applied here", "pass", "applied through LSN \(final.lsn): nothing is lost")
        do {
            let fork = try await becomePrimary(epoch: max(epoch, marker.epoch + 1))
            report.promoted = true
            report.epoch = marker.epoch
            report.forkLSN = fork.lsn
            report.check("epoch bumped durably", "pass", "epoch \(marker.epoch) opened at LSN \(fork.lsn + 1)")
        } catch {
            report.check("epoch bumped durably", "refuse", "\(error)")
            return
        }
        _ = await adoptEpoch(marker.epoch, on: config.peers.map(\.nodeID), &report)
    }

    /// The primary's half of a switchover: stop local writes, wait until they are durable and
    /// flushed by the target (and by enough replicas for the commit mode), then adopt the new
    /// epoch and follow the target. On timeout it resumes as primary and refuses.
    func demote(epoch: UInt64, primary target: String) async throws {
        guard isPrimary, machine.mode == .primary else { throw notPrimaryError() }
        let shell = RoleShell(source: "switchover to \(target)",
                              refusal: AeroError(.notPrimary, "switchover to \(target) in progress: retry on the new primary", invariant: "A1"),
                              inDoubt: AeroError(.commitInDoubt, "switchover to \(target)", invariant: "A2"))
        guard config.member(target) != nil, !(try await run(.demote(epoch: epoch, target: target), shell).actions.isEmpty) else {
            throw AeroError(.promotionRefused, "demotion to epoch \(epoch), primary \(target) is not valid from epoch \(marker.epoch)")
        }
        let last = database.lastPosition.lsn
        do {
            try await database.waitDurable(last)
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.switchoverWaitMillis) * 1_000_000
            while !PromotionDecision.drained(last: last, target: acks.durable(of: target), replicas: Array(acks.all.values),
                                             needed: config.acksNeeded(commitModes.current)) {
                guard DispatchTime.now().uptimeNanoseconds < deadline else {
                    throw AeroError(.promotionRefused, "\(target) did not flush LSN \(last) within \(Self.switchoverWaitMillis) ms; \(config.nodeID) stays primary")
                }
                try await Task.sleep(for: .milliseconds(2))
            }
        } catch {
            try await run(.demoteAborted, shell)
            throw error
        }
        let handedOver = RoleShell(source: "switchover to \(target)",
                                   refusal: AeroError(.notPrimary, "\(config.nodeID) handed over to \(target) in epoch \(epoch)", invariant: "A1"),
                                   inDoubt: shell.inDoubt)
        guard !(try await run(.drained, handedOver).actions.isEmpty) else {
            throw AeroError(.promotionRefused, "\(config.nodeID) learned a newer epoch than \(epoch) during the switchover to \(target)")
        }
        logger.notice("demoted for a switchover", metadata: ["epoch": "\(epoch)", "primary": "\(target)", "final_lsn": "\(last)"])
    }
}

// MARK: - Rejoin (the node is stopped; `aerodb rejoin` runs this)

public enum Rejoin {
    public struct Answer: Sendable {
        public let primary: String
        public let epoch: UInt64
        public let fork: LogPosition
    }

    /// Finds the current primary among the peers and asks it where `positions` (this node's
    /// last records, oldest first) leave its history.
    public static func findFork(config: ClusterConfig, marker: AuthorityMarker, positions: [LogPosition]) async throws -> Answer {
        let last = positions.last ?? .origin
        func hello(_ purpose: HelloPurpose) -> ReplicationMessage {
            .hello(.init(purpose: purpose, clusterID: config.clusterID, nodeID: config.nodeID, token: config.token,
                         epoch: marker.epoch, primary: marker.primary, position: last))
        }
        var primary: (ClusterMember, NodeState)?
        for peer in config.peers {
            guard case .state(let s)? = try? await Transport.ask(peer.replication, hello(.probe), idleMillis: ReplicationTimeouts.probeMillis, tls: config.tls),
                  s.isPrimary else { continue }
            if primary == nil || s.epoch > primary!.1.epoch { primary = (peer, s) }
        }
        guard let (member, state) = primary else {
            throw AeroError(.primaryUnavailable, "no peer answered as primary; start the cluster's primary first")
        }
        let channel = try await Transport.connect(member.replication, idleMillis: ReplicationTimeouts.sessionIdleMillis, tls: config.tls)
        let answer = try await channel.executeThenClose { inbound, outbound -> ReplicationMessage in
            try await outbound.write(hello(.rejoin))
            try await outbound.write(.forkQuery(Array(positions.suffix(Int(ReplicationLimits.forkPositionsMax)))))
            for try await message in inbound { return message }
            throw AeroError(.primaryUnavailable, "\(member.nodeID) closed the connection")
        }
        switch answer {
        case .forkPoint(let fork): return Answer(primary: member.nodeID, epoch: state.epoch, fork: fork)
        case .refuse(_, _, _, let message): throw AeroError(.replicationDiverged, message, invariant: "A4")
        default: throw ReplicationMessage.malformed("expected FORK_POINT")
        }
    }
}
