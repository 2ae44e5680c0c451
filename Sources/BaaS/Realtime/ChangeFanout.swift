// postgres_changes fan-out: one shared reader per node reads each released change once from
// the kernel's change stream (ChangeHub: decoded once) and queues frames only for the
// subscriptions whose bindings can match it.
//
// Layout: subscriptions are indexed by table ("*" = a binding without a table) and, for a lone
// `column=eq.value` filter on an int or text column (ChangeBinding.eq), by column and value:
// a change looks up the subscriptions of its table's value (one dictionary probe per indexed
// column) plus the table's unindexed ones. Each candidate then applies its own policy (RT3,
// per subscriber, as before) and its bindings; a filter shared by many subscribers is
// evaluated once per change (ChangeMemo), and the `data` object is encoded once per change and
// shape, then wrapped per subscriber (topic, ids).
//
// States of a subscription:
// - live: in the index; the reader queues its frames. `after`: changes at or before this LSN
//   were already delivered (or predate the join): the reader skips them.
// - catching up: a task of its own pulls the change stream from its cursor (a resume, or a
//   subscriber whose outbox was full), exactly as one subscription's pump always did, and
//   becomes live again once its cursor reaches what the reader has taken (`pendingThrough`).
//
// The reader idles while no subscription is live: it reads nothing (no change is decoded for
// nobody), moves `pendingThrough` to the released LSN, since no live subscriber needs what comes
// before, and waits for an attach. It then resumes at the lowest `after` of the live ones (all at
// or past `pendingThrough`), clearing the shared filters: a schema may have changed meanwhile.
//
// Invariants:
// - No gap, no repeat (RT1): the reader queues one transaction's frames for a subscriber all
//   at once or not at all (RealtimeOutbox.push(texts:)); when they do not fit, the subscriber
//   leaves the index with its cursor just before that transaction and catches up from there. A
//   subscription attaches only with a cursor at or past what the reader has taken.
// - A slow subscriber never slows the reader, commits or other subscribers: the reader never
//   waits for an outbox; memory per subscriber is its outbox bound plus, within one
//   transaction, at most `fanoutFramesPerTransactionMax` pending frames.
// - A policy or schema change reaches the subscriptions before the next change after it (RT5):
//   the reader invalidates every live subscription's compiled policies and the shared filters
//   at that transaction; a catching-up pump does the same for its own.
// - No I/O and no filter evaluation under the lock; the lock guards the index and the states.

import Kernel
import Logging
import Synchronization

final class ChangeFanout: Sendable {
    private struct Live {
        let subscription: ChangeSubscription
        let after: UInt64
        /// Where it is in the index (removal touches exactly these).
        var keys: [IndexKey]
    }

    private struct IndexKey {
        let table: String
        let eq: ChangeBinding.EqKey?
    }

    /// The subscriptions with a binding on one table.
    private struct TableIndex {
        var general: Set<Int> = []
        var eq: [String: [String: Set<Int>]] = [:]  // column -> value -> ids

        var isEmpty: Bool { general.isEmpty && eq.isEmpty }
    }

    private struct State {
        var members: [Int: ChangeSubscription] = [:]
        var live: [Int: Live] = [:]
        var tables: [String: TableIndex] = [:]
        var catchingUp: [Int: Task<Void, Never>] = [:]
        /// Every change up to here has been taken by the reader (queued or being queued), or
        /// passed while no subscription was live.
        var pendingThrough: UInt64
        /// The reader waits for an attach (nothing live); the next attach wakes it.
        var readerIdle = false
        var nextID = 0
    }

    private let state: Mutex<State>
    let database: Database
    let filters = ChangeFilters()
    private let logger: Logger
    /// An attach to an idle reader signals it here (the newest signal is kept: none is lost).
    private let attached = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))

    init(database: Database, logger: Logger) {
        self.database = database
        self.logger = logger
        state = Mutex(State(pendingThrough: database.releasedLSN))
    }

    func nextID() -> Int {
        state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
    }

    /// Subscriptions on this node (live or catching up), and how many are catching up.
    var counts: (members: Int, catchingUp: Int) { state.withLock { ($0.members.count, $0.catchingUp.count) } }

    /// The shared reader waits for an attach, reading nothing (no subscription is live).
    var readerIsIdle: Bool { state.withLock { $0.readerIdle } }

    // MARK: Membership

    /// Starts delivering the changes after `cursor` to `subscription`: live at once when the
    /// reader has not gone past `cursor`, else through a catch-up pump (a resume).
    func subscribe(_ subscription: ChangeSubscription, after cursor: UInt64) {
        state.withLock { $0.members[subscription.id] = subscription }
        if !attach(subscription, after: cursor) { startCatchUp(subscription, from: cursor) }
    }

    /// The channel closed: the subscription leaves the index; its pump, if any, is cancelled.
    func remove(_ subscription: ChangeSubscription) {
        subscription.markClosed()
        let task = state.withLock { s -> Task<Void, Never>? in
            s.members[subscription.id] = nil
            if let live = s.live.removeValue(forKey: subscription.id) { Self.unindex(subscription.id, live.keys, from: &s.tables) }
            return s.catchingUp.removeValue(forKey: subscription.id)
        }
        task?.cancel()
    }

    private func attach(_ subscription: ChangeSubscription, after cursor: UInt64) -> Bool {
        let (attached, wake) = state.withLock { s -> (Bool, Bool) in
            guard s.members[subscription.id] != nil, !subscription.isClosed else { return (true, false) }  // gone: stop
            guard cursor >= s.pendingThrough else { return (false, false) }
            if let old = s.live[subscription.id] { Self.unindex(subscription.id, old.keys, from: &s.tables) }
            let keys = Self.index(subscription, into: &s.tables, eq: { $0.eq })
            s.live[subscription.id] = Live(subscription: subscription, after: cursor, keys: keys)
            s.catchingUp[subscription.id] = nil
            defer { s.readerIdle = false }
            return (true, s.readerIdle)
        }
        if wake { self.attached.continuation.yield() }
        return attached
    }

    /// Takes a live subscription out of the index; its pump resumes after `cursor`.
    private func detach(_ subscription: ChangeSubscription, cursor: UInt64) {
        let move = state.withLock { s -> Bool in
            guard let live = s.live.removeValue(forKey: subscription.id) else { return false }
            Self.unindex(subscription.id, live.keys, from: &s.tables)
            return s.members[subscription.id] != nil
        }
        if move && !subscription.isClosed { startCatchUp(subscription, from: cursor) }
    }

    private func startCatchUp(_ subscription: ChangeSubscription, from cursor: UInt64) {
        let task = Task { [self] in await catchUp(subscription, from: cursor) }
        let keep = state.withLock { s -> Bool in
            guard s.members[subscription.id] != nil, s.live[subscription.id] == nil else { return false }
            s.catchingUp[subscription.id] = task
            return true
        }
        if !keep { task.cancel() }
    }

    private static func index(_ subscription: ChangeSubscription, into tables: inout [String: TableIndex],
                              eq: (ChangeBinding) -> ChangeBinding.EqKey?) -> [IndexKey] {
        var keys: [IndexKey] = []
        for binding in subscription.bindings {
            let key = IndexKey(table: binding.table ?? "*", eq: eq(binding))
            if let eq = key.eq {
                tables[key.table, default: TableIndex()].eq[eq.column, default: [:]][eq.value, default: []].insert(subscription.id)
            } else {
                tables[key.table, default: TableIndex()].general.insert(subscription.id)
            }
            keys.append(key)
        }
        return keys
    }

    /// Removes exactly what `index` added (in place: no copy of the other entries).
    private static func unindex(_ id: Int, _ keys: [IndexKey], from tables: inout [String: TableIndex]) {
        for key in keys {
            if let eq = key.eq {
                tables[key.table]?.eq[eq.column]?[eq.value]?.remove(id)
                if tables[key.table]?.eq[eq.column]?[eq.value]?.isEmpty == true { tables[key.table]?.eq[eq.column]?[eq.value] = nil }
                if tables[key.table]?.eq[eq.column]?.isEmpty == true { tables[key.table]?.eq[eq.column] = nil }
            } else {
                tables[key.table]?.general.remove(id)
            }
            if tables[key.table]?.isEmpty == true { tables[key.table] = nil }
        }
    }

    /// A schema change: index keys are computed again from the current schemas.
    private func reindex() -> [String: TableIndex] {
        let snapshot = database.snapshot()
        return state.withLock { s in
            var tables: [String: TableIndex] = [:]
            for (id, live) in s.live {
                s.live[id]?.keys = Self.index(live.subscription, into: &tables) { binding in
                    guard let table = binding.table, let filter = binding.filter,
                          let schema = snapshot.state.collections[table]?.schema else { return nil }
                    return ChangeBinding.eqKey(filter, schema: schema)
                }
            }
            s.tables = tables
            return tables
        }
    }

    // MARK: The shared reader

    /// Reads the change stream once for every live subscription; runs until cancelled.
    func run() async {
        var cursor = state.withLock { $0.pendingThrough }
        var pending = PendingFrames()  // one transaction's frames per subscriber, storage reused
        var attaches = attached.stream.makeAsyncIterator()
        while !Task.isCancelled {
            // Nothing live: read nothing until an attach (see the header). The released LSN (the
            // hub's lock, which every release takes) is read only then, not once per batch.
            if state.withLock({ $0.live.isEmpty }), idle(through: database.releasedLSN) {
                guard await attaches.next() != nil else { return }  // cancelled
                filters.invalidate()
                // Where the live ones need it; a later attach must be at or past it (else it catches up).
                cursor = state.withLock { s in
                    let start = max(cursor, s.live.values.map(\.after).min() ?? s.pendingThrough)
                    s.pendingThrough = max(s.pendingThrough, start)
                    return start
                }
                continue
            }
            let batch: ChangeBatch
            do {
                batch = try await database.nextChanges(after: cursor, maxCount: RealtimeLimits.changesPerPull)
            } catch let error as AeroError where error.code == .lsnUnavailable {
                // The reader fell behind the retained WAL: every live subscriber missed the range.
                let oldest = database.oldestLSN
                let through = max(cursor &+ 1, oldest &- 1)
                let live = state.withLock { s -> [ChangeSubscription] in
                    s.pendingThrough = max(s.pendingThrough, through)
                    return s.live.values.map(\.subscription)
                }
                for subscription in live { Self.reportMissed(subscription, from: cursor, through: through, oldest: oldest) }
                cursor = through
                continue
            } catch {
                if Task.isCancelled { return }
                logger.error("realtime change reader failed", metadata: ["error": "\(AeroError.wrap(error).message)"])
                // As a failed pump did: its subscribers are told the stream stopped.
                let live = state.withLock { s -> [ChangeSubscription] in
                    let out = s.live.values.map(\.subscription)
                    s.tables = [:]
                    s.live = [:]
                    return out
                }
                for subscription in live {
                    subscription.outbox.push(RealtimeFrame.system(topic: subscription.topic, extension: "postgres_changes", ok: false,
                                                                  "the change stream stopped: \(AeroError.wrap(error).message)"), .control)
                }
                try? await Task.sleep(for: .milliseconds(RealtimeLimits.relayRetryMillis))
                cursor = max(cursor, database.releasedLSN)
                state.withLock { $0.pendingThrough = max($0.pendingThrough, cursor) }
                continue
            }
            var (live, tables) = state.withLock { s in
                s.pendingThrough = max(s.pendingThrough, batch.through)
                return (s.live, s.tables)
            }
            var left: Set<Int> = []
            for transaction in batch.transactions {
                if RealtimeService.touchesPolicies(transaction) {
                    filters.invalidate()
                    for entry in live.values { entry.subscription.invalidate() }
                    if transaction.schemaChange != nil { tables = reindex() }
                }
                guard !transaction.changes.isEmpty else { continue }
                pending.reset()
                for change in transaction.changes where !SystemCollections.isSystem(change.collection) {
                    var memo = ChangeMemo()
                    Self.candidates(change, tables) { id in
                        guard !left.contains(id), let entry = live[id], entry.after < transaction.lsn,
                              !entry.subscription.isRemoved else { return }
                        guard let frame = entry.subscription.changeFrame(for: change, in: transaction, memo: &memo) else { return }
                        if !pending.append(frame, for: id) {
                            // A big transaction for this subscriber: its own pump queues it as room frees.
                            left.insert(id)
                            pending.drop(id)
                            detach(entry.subscription, cursor: transaction.lsn &- 1)
                        }
                    }
                }
                var writers: [any RealtimeOutboxWriter] = []
                pending.forEach { id, frames in
                    guard let entry = live[id], !left.contains(id) else { return }
                    if !entry.subscription.outbox.push(changes: frames, deferred: &writers) {
                        // Full: the subscriber reads too slowly; it catches up from the WAL (no loss).
                        // (A closed one only leaves the index: detach starts no pump for it.)
                        left.insert(id)
                        detach(entry.subscription, cursor: transaction.lsn &- 1)
                    }
                }
                if !writers.isEmpty { RealtimeSocketWriter.schedule(writers) }
            }
            for id in left { live[id] = nil }
            cursor = batch.through
        }
    }

    /// Marks the reader idle when still nothing is live, everything through `released` passed.
    private func idle(through released: UInt64) -> Bool {
        state.withLock { s in
            guard s.live.isEmpty else { return false }
            s.pendingThrough = max(s.pendingThrough, released)
            s.readerIdle = true
            return true
        }
    }

    /// Calls `visit` with every subscription id whose bindings may match `change` (maybe twice).
    private static func candidates(_ change: DocumentChange, _ tables: [String: TableIndex], _ visit: (Int) -> Void) {
        var sets: [Set<Int>] = []
        if let index = tables[change.collection] {
            if !index.general.isEmpty { sets.append(index.general) }
            if !index.eq.isEmpty, let subject = change.kind == .delete ? change.before : change.after {
                for (column, byValue) in index.eq {
                    guard let value = subject[column] else { continue }  // eq never matches a missing value
                    if let key = indexValue(value) {
                        if let ids = byValue[key] { sets.append(ids) }
                    } else {
                        for ids in byValue.values { sets.append(ids) }  // not indexable: every one is checked
                    }
                }
            }
        }
        if let any = tables["*"], !any.general.isEmpty { sets.append(any.general) }
        if sets.count == 1 {
            for id in sets[0] { visit(id) }
        } else if sets.count > 1 {
            var seen: Set<Int> = []
            for set in sets { for id in set where seen.insert(id).inserted { visit(id) } }
        }
    }

    /// A row's value as an index key (ChangeBinding.eqKey): nil when it is not an int or text.
    static func indexValue(_ value: JSONValue) -> String? {
        switch value {
        case .int(let i): return String(i)
        case .string(let s): return s
        case .null: return "\u{0}null"  // eq never matches null: a key no filter has
        default: return nil
        }
    }

    // MARK: Catch-up

    /// One subscription's own pump, from `start` until it can join the reader again: what one
    /// subscription's pump always was (a full outbox pauses it; the WAL no longer holding its
    /// cursor is reported with the missed LSN range).
    private func catchUp(_ subscription: ChangeSubscription, from start: UInt64) async {
        let outbox = subscription.outbox
        var cursor = start
        while !Task.isCancelled && !subscription.isClosed {
            if !outbox.hasRoom {
                await outbox.waitForRoom()
                continue
            }
            if attach(subscription, after: cursor) { return }
            do {
                let batch = try await database.nextChanges(after: cursor, maxCount: RealtimeLimits.changesPerPull)
                for transaction in batch.transactions {
                    // A schema change or a policy edit reaches the subscription (RT5).
                    if RealtimeService.touchesPolicies(transaction) {
                        subscription.invalidate()
                        // The reader may be idle: the shared filters must not outlive a schema.
                        if transaction.schemaChange != nil { filters.invalidate() }
                    }
                    for change in transaction.changes {
                        var memo = ChangeMemo()
                        guard let frame = subscription.changeFrame(for: change, in: transaction, memo: &memo) else { continue }
                        var writers: [any RealtimeOutboxWriter] = []
                        while !outbox.push(changes: [frame], deferred: &writers) {
                            if subscription.isClosed || Task.isCancelled { return }
                            await outbox.waitForRoom()
                        }
                        if !writers.isEmpty { RealtimeSocketWriter.schedule(writers) }
                    }
                }
                cursor = batch.through
            } catch let error as AeroError where error.code == .lsnUnavailable {
                let oldest = database.oldestLSN
                let through = max(cursor &+ 1, oldest &- 1)
                Self.reportMissed(subscription, from: cursor, through: through, oldest: oldest)
                cursor = through
            } catch {
                if Task.isCancelled { return }
                outbox.push(RealtimeFrame.system(topic: subscription.topic, extension: "postgres_changes", ok: false,
                                                 "the change stream stopped: \(AeroError.wrap(error).message)"), .control)
                state.withLock { _ = $0.catchingUp.removeValue(forKey: subscription.id) }
                return
            }
        }
    }

    private static func reportMissed(_ subscription: ChangeSubscription, from cursor: UInt64, through: UInt64, oldest: UInt64) {
        subscription.outbox.push(RealtimeFrame.system(topic: subscription.topic, extension: "postgres_changes", ok: true,
                                                      "changes after LSN \(cursor) through \(through) were missed (this subscriber fell behind the retained WAL); continuing from LSN \(oldest)",
                                                      extra: ["missed_from_lsn": .string(String(cursor &+ 1)),
                                                              "missed_through_lsn": .string(String(through)),
                                                              "oldest_lsn": .string(String(oldest))]), .control)
    }
}

/// One transaction's frames per subscriber, in the order the reader found them (the shared
/// reader's scratch space): storage is kept from one transaction to the next, so a fan-out to
/// a thousand subscribers does not allocate a thousand arrays per transaction.
struct PendingFrames {
    private var slots: [Int: Int] = [:]  // subscription id -> index in `frames`
    private var ids: [Int] = []
    private var frames: [[ChangeFrame]] = []
    private var used = 0

    mutating func reset() {
        for i in 0..<used { frames[i].removeAll(keepingCapacity: true) }
        slots.removeAll(keepingCapacity: true)
        used = 0
        // Storage for at most as many subscribers as the last big fan-out: a bound on what is kept.
        if frames.count > RealtimeLimits.connectionsPerNodeMax { frames = []; ids = [] }
    }

    /// Adds a frame for `id`; false when `id` already has fanoutFramesPerTransactionMax.
    mutating func append(_ frame: ChangeFrame, for id: Int) -> Bool {
        let slot: Int
        if let known = slots[id] {
            slot = known
        } else {
            slot = used
            used += 1
            slots[id] = slot
            if slot == frames.count {
                frames.append([])
                ids.append(id)
            } else {
                ids[slot] = id
            }
        }
        guard frames[slot].count < RealtimeLimits.fanoutFramesPerTransactionMax else { return false }
        frames[slot].append(frame)
        return true
    }

    /// Forgets `id`'s frames (it left the reader).
    mutating func drop(_ id: Int) {
        guard let slot = slots[id] else { return }
        frames[slot].removeAll(keepingCapacity: true)
    }

    /// Every subscriber with frames, in first-seen order.
    func forEach(_ body: (Int, ArraySlice<ChangeFrame>) -> Void) {
        for slot in 0..<used where !frames[slot].isEmpty { body(ids[slot], frames[slot][...]) }
    }
}
