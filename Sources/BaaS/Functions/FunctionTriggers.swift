// Database triggers of functions (docs/FUNCTIONS.md "Database triggers"). A function deployed
// with `"trigger": {"collection": "notes", "events": ["insert", "update", "delete"]}` is invoked
// for every committed change of that collection, on the primary only, fed by the kernel's change
// stream: a change is delivered only once it is released (durable, and acknowledged through the
// commit gate in `sync`/`all` mode), so a commit in doubt never fires a trigger.
//
// State, in replicated system collections (so a new primary continues where the old one was):
//   _function_triggers      key name: {name, after_lsn, updated_at}. Every change of the
//                           function's collection with LSN <= after_lsn was delivered or
//                           dead-lettered. Written at deploy (the deploy's snapshot LSN: changes
//                           committed after the deploy fire), after each transaction that had
//                           deliveries, and otherwise at most every `cursorPersistMillis`.
//   _function_dead_letters  key id "<name>@<lsn>:<index>": {name, lsn, index, collection, event,
//                           key, error, attempts, created_at}; at most `deadLettersKept` per
//                           function (the oldest are deleted).
//
// Invariants (FN5):
// - At least once, in LSN order per function: the cursor only moves past a change after its
//   delivery succeeded or was dead-lettered, and only by a conditional update from the value
//   this worker read, so a promotion or restart re-delivers at most the changes delivered after
//   the last cursor write, never skips one. The idempotency key is "<lsn>:<index>" (header
//   `x-aerodb-trigger-id`, and `lsn`/`index` in the body): a function that writes with it as a
//   key applies each change exactly once.
// - A delivery succeeds when the function answers 2xx. Otherwise it is retried after
//   `backoffMillis(attempt)`; after `attemptsMax` attempts a dead letter is written and delivery
//   moves on. A worker that stops being the primary's stops before its next attempt.
// - Triggers on system collections (`_`-prefixed) are refused: the trigger's own cursor writes
//   would feed it.

import Foundation
import Kernel
import Synchronization

/// What a function is triggered by: the changes of one collection, of the listed kinds.
public struct FunctionTrigger: Sendable, Equatable {
    public var collection: String
    public var events: Set<DocumentChange.Kind>

    static let allEvents: Set<DocumentChange.Kind> = [.insert, .update, .delete]

    public init(json: JSONValue) throws {
        guard case .object(let o) = json else {
            throw AeroError(.functionInvalid, #"trigger must be an object such as {"collection":"notes","events":["insert"]}"#)
        }
        if let unknown = o.keys.sorted().first(where: { !["collection", "events"].contains($0) }) {
            throw AeroError(.functionInvalid, "unknown trigger field \(unknown.prefix(80)); known: collection, events")
        }
        guard case .string(let collection)? = o["collection"], !collection.isEmpty,
              collection.utf8.count <= KernelLimits.nameBytesMax else {
            throw AeroError(.functionInvalid, "trigger.collection must name a collection")
        }
        guard !collection.hasPrefix("_") else {
            throw AeroError(.functionInvalid, "trigger.collection \(collection.prefix(80)) is a system collection; triggers are for application collections")
        }
        self.collection = collection
        switch o["events"] {
        case nil, .null?:
            events = Self.allEvents
        case .array(let items)?:
            var kinds: Set<DocumentChange.Kind> = []
            for item in items {
                guard case .string(let text) = item, let kind = DocumentChange.Kind(rawValue: text) else {
                    throw AeroError(.functionInvalid, "trigger.events lists insert, update or delete")
                }
                kinds.insert(kind)
            }
            guard !kinds.isEmpty else { throw AeroError(.functionInvalid, "trigger.events must list at least one of insert, update, delete") }
            events = kinds
        default:
            throw AeroError(.functionInvalid, "trigger.events must be an array of insert, update, delete")
        }
    }

    var json: JSONValue {
        .object(["collection": .string(collection),
                 "events": .array(events.map(\.rawValue).sorted().map(JSONValue.string))])
    }

    func matches(_ change: DocumentChange) -> Bool { change.collection == collection && events.contains(change.kind) }
}

public enum FunctionTriggers {
    static let cursors = "_function_triggers"
    static let deadLetters = "_function_dead_letters"

    /// Attempts of one delivery before it is dead-lettered.
    public static let attemptsMax = 5
    /// Wait before the second attempt, doubled for each later one, at most `backoffMillisMax`.
    public static let backoffMillis = 200
    public static let backoffMillisMax = 10_000
    /// Dead letters kept per function (the oldest are deleted).
    public static let deadLettersKept = 1_000
    /// Changes pulled from the change stream at once.
    static let batchMax = 64
    /// How often a worker with nothing to deliver looks for new changes, and how often the
    /// set of triggers is reconciled with the deployed functions.
    static let pollMillis = 100
    static let reconcileMillis = 1_000
    /// A cursor that moved past changes of other collections only is written at most this often
    /// (so that a restart does not re-read much WAL, and an idle trigger writes nothing).
    static let cursorPersistMillis = 10_000

    static let schemas: [JSONValue] = {
        typealias C = AuthCollections
        return [
            C.schema(cursors, key: "name", [
                "name": C.field("text", nullable: false), "after_lsn": C.field("int", nullable: false), "updated_at": C.created,
            ], []),
            C.schema(deadLetters, key: "id", [
                "id": C.field("text", nullable: false), "name": C.field("text", nullable: false),
                "lsn": C.field("int", nullable: false), "index": C.field("int", nullable: false),
                "collection": C.field("text", nullable: false), "event": C.field("text", nullable: false),
                "key": C.field("json"), "error": C.field("text", nullable: false), "attempts": C.field("int", nullable: false),
                "created_at": C.created,
            ], [C.index("by_name", ["name", "lsn", "index"])]),
        ]
    }()

    /// The wait after failed attempt `attempt` (1-based), or nil when it was the last one.
    static func backoff(afterAttempt attempt: Int) -> Int? {
        guard attempt < attemptsMax else { return nil }
        let shift = min(attempt - 1, 20)
        return min(backoffMillis << shift, backoffMillisMax)
    }

    /// The write that makes a trigger start after `lsn`, when it has no cursor yet.
    static func initialCursor(_ name: String, after lsn: UInt64, _ snapshot: Snapshot) throws -> WriteOperation? {
        guard try cursor(name, snapshot) == nil else { return nil }
        return .insert(collection: cursors, document: ["name": .string(name), "after_lsn": .int(Int64(lsn))])
    }

    static func cursor(_ name: String, _ snapshot: Snapshot) throws -> UInt64? {
        guard snapshot.state.collections[cursors] != nil, let row = try snapshot.document(cursors, key: .string(name)),
              case .int(let n)? = row["after_lsn"], n >= 0 else { return nil }
        return UInt64(n)
    }

    static func deleteOps(_ name: String, _ snapshot: Snapshot) throws -> [WriteOperation] {
        try cursor(name, snapshot) == nil ? [] : [.delete(collection: cursors, target: .key(.string(name)))]
    }

    // MARK: Running (primary only)

    /// Keeps one worker per deployed function with a trigger while this node is the primary.
    public static func start(service: FunctionService, isPrimary: @escaping @Sendable () -> Bool) -> Task<Void, Never> {
        Task.detached {
            var workers: [String: Task<Void, Never>] = [:]
            // Workers that returned (a lost cursor update, a redeploy): started again next pass,
            // reading the cursor afresh.
            let ended = EndedWorkers()
            while !Task.isCancelled {
                var wanted: [String: FunctionVersion] = [:]
                if isPrimary(), let listed = try? FunctionStore.list(service.database.snapshot()) {
                    for (_, v) in listed where v.trigger != nil { wanted["\(v.name)@\(v.version)"] = v }
                }
                for key in ended.take() { workers[key] = nil }
                for (key, worker) in workers where wanted[key] == nil {
                    worker.cancel()
                    workers[key] = nil
                }
                for (key, v) in wanted where workers[key] == nil {
                    workers[key] = Task.detached {
                        await run(service, v, isPrimary: isPrimary)
                        ended.add(key)
                    }
                }
                try? await Task.sleep(for: .milliseconds(reconcileMillis))
            }
            // Cancelled (no longer primary, shutdown): the workers stop, and this task ends only
            // once they have, so no invocation of a cancelled runner outlives it.
            for worker in workers.values { worker.cancel() }
            for worker in workers.values { await worker.value }
        }
    }

    /// Delivers the changes of `v`'s trigger from its cursor on, until cancelled or no longer primary.
    static func run(_ service: FunctionService, _ v: FunctionVersion, isPrimary: @escaping @Sendable () -> Bool) async {
        guard let trigger = v.trigger else { return }
        let database = service.database
        do {
            try await SystemCollections.ensure(schemas, in: database)
        } catch {
            service.logger.warning("trigger: cannot create its collections", metadata: ["function": "\(v.name)", "error": "\(error)"])
            return
        }
        var persisted: UInt64
        if let stored = try? cursor(v.name, database.snapshot()) {
            persisted = stored
        } else {
            // Deployed by a version that wrote no cursor: start at what is released now.
            persisted = database.releasedLSN
            guard await persist(service, v.name, from: nil, to: persisted) else { return }
        }
        var cursor = persisted
        var lastPersist = ContinuousClock.now
        while !Task.isCancelled && isPrimary() {
            if cursor > persisted && ContinuousClock.now - lastPersist > .milliseconds(cursorPersistMillis) {
                guard await persist(service, v.name, from: persisted, to: cursor) else { return }
                persisted = cursor
                lastPersist = .now
            }
            guard database.releasedLSN > cursor else {
                try? await Task.sleep(for: .milliseconds(pollMillis))
                continue
            }
            let batch: ChangeBatch
            do {
                batch = try await database.nextChanges(after: cursor, maxCount: batchMax)
            } catch let error as AeroError where error.code == .lsnUnavailable {
                // The WAL no longer holds changes this trigger did not deliver: say so durably.
                let now = database.releasedLSN
                service.logger.error("trigger: changes are gone from the WAL", metadata: ["function": "\(v.name)", "after": "\(cursor)", "through": "\(now)"])
                guard await deadLetter(service, v.name, lsn: cursor + 1, index: -1, collection: trigger.collection, event: "gap", key: nil,
                                       error: "changes after LSN \(cursor) through \(now) are no longer in the WAL and were not delivered",
                                       attempts: 0) else { return }
                guard await persist(service, v.name, from: persisted, to: now) else { return }
                (cursor, persisted) = (now, now)
                continue
            } catch {
                service.logger.warning("trigger: cannot read the change stream", metadata: ["function": "\(v.name)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(backoffMillisMax))
                continue
            }
            for transaction in batch.transactions {
                let matching = transaction.changes.enumerated().filter { trigger.matches($0.element) }
                guard !matching.isEmpty else { continue }
                for (index, change) in matching {
                    guard await deliver(service, v.name, trigger, transaction, index: index, change, isPrimary: isPrimary) else { return }
                }
                guard await persist(service, v.name, from: persisted, to: transaction.lsn) else { return }
                persisted = transaction.lsn
                lastPersist = .now
            }
            cursor = batch.through
        }
    }

    /// Conditional cursor write: `from` -> `to` (an insert when `from` is nil). False when another
    /// worker or primary moved it, or this node cannot write: the worker stops (the reconciler
    /// starts a fresh one that reads the cursor again).
    static func persist(_ service: FunctionService, _ name: String, from: UInt64?, to: UInt64) async -> Bool {
        let database = service.database
        do {
            guard let from else {
                _ = try await database.commit([.insert(collection: cursors, document: ["name": .string(name), "after_lsn": .int(Int64(to))])])
                return true
            }
            guard to != from else { return true }
            let filter = Filter.and([.compare(field: "name", op: .eq, value: .string(name)),
                                     .compare(field: "after_lsn", op: .eq, value: .int(Int64(from)))])
            let result = try await database.commit([.update(collection: cursors, target: .matching(filter), set: ["after_lsn": .int(Int64(to))])])
            return result.changes.contains { $0.collection == cursors }
        } catch {
            // The worker stops and is started again (the reconciler); say why it stopped.
            service.logger.warning("trigger: cursor not written", metadata: ["function": "\(name)", "error": "\(error)"])
            return false
        }
    }

    /// One change, with retries; true when delivered or dead-lettered, false when the worker
    /// must stop (no longer primary, cancelled, or the function lost its trigger).
    static func deliver(_ service: FunctionService, _ name: String, _ trigger: FunctionTrigger, _ transaction: CommittedTransaction,
                        index: Int, _ change: DocumentChange, isPrimary: @Sendable () -> Bool) async -> Bool {
        let id = "\(transaction.lsn):\(index)"
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let body = JSON.encode(.object([
            "type": .string(change.kind.rawValue.uppercased()), "table": .string(change.collection), "schema": .string("public"),
            "record": change.after.map { .object($0) } ?? .null, "old_record": change.before.map { .object($0) } ?? .null,
            "lsn": .int(Int64(transaction.lsn)), "index": .int(Int64(index)),
            "commit_timestamp": .string(iso.string(from: Date(timeIntervalSince1970: Double(transaction.timestampMicros) / 1_000_000))),
        ]))
        let caller = Caller(role: "service_role", claims: .object(["role": .string("service_role")]))
        var attempt = 1
        var lastError = ""
        while true {
            guard !Task.isCancelled, isPrimary() else { return false }
            guard let (v, compiled) = try? service.load(name), v.trigger == trigger else { return false }
            let request = FunctionRequest(method: "POST", headers: [("content-type", "application/json"), ("x-aerodb-trigger-id", id),
                                                                    ("x-aerodb-trigger-attempt", String(attempt))],
                                          body: body, caller: caller)
            do {
                let out = try await service.invoke(v, compiled, request, data: service.dataAccess(caller))
                if (200...299).contains(out.status) { return true }
                lastError = "answered \(out.status): \(String(decoding: out.body.prefix(200), as: UTF8.self))"
            } catch {
                lastError = "\(AeroError.wrap(error))"
            }
            service.logs.append(name, version: v.version, [FunctionLogLine(level: "warn", message: "trigger: change \(id) attempt \(attempt) failed: \(lastError.prefix(300))")], dropped: 0)
            guard let wait = backoff(afterAttempt: attempt) else { break }
            try? await Task.sleep(for: .milliseconds(wait))
            attempt += 1
        }
        // True only when recorded: otherwise the worker stops with its cursor before this change.
        return await deadLetter(service, name, lsn: transaction.lsn, index: index, collection: change.collection,
                                event: change.kind.rawValue, key: change.key, error: lastError, attempts: attempt)
    }

    /// Records a change that was not delivered, and keeps at most `deadLettersKept` per function.
    static func deadLetter(_ service: FunctionService, _ name: String, lsn: UInt64, index: Int, collection: String, event: String,
                           key: JSONValue?, error: String, attempts: Int) async -> Bool {
        let database = service.database
        do {
            _ = try await database.commit([.upsert(collection: deadLetters, document: [
                "id": .string("\(name)@\(lsn):\(index)"), "name": .string(name), "lsn": .int(Int64(lsn)), "index": .int(Int64(index)),
                "collection": .string(collection), "event": .string(event), "key": key ?? .null,
                "error": .string(String(error.prefix(FunctionRuntimeLimits.logLineBytesMax))), "attempts": .int(Int64(attempts)),
            ])])
            let rows = try listDeadLetters(name, database.snapshot(), limit: deadLettersKept + batchMax)
            if rows.count > deadLettersKept {
                let ops: [WriteOperation] = rows.prefix(rows.count - deadLettersKept).compactMap { row in
                    row["id"].map { .delete(collection: deadLetters, target: .key($0)) }
                }
                _ = try await database.commit(ops)
            }
            service.logger.warning("trigger: change dead-lettered", metadata: ["function": "\(name)", "lsn": "\(lsn)", "index": "\(index)", "error": "\(error.prefix(300))"])
            return true
        } catch {
            // Not recorded: the caller must not move the cursor past the change (FN5).
            service.logger.error("trigger: cannot write a dead letter", metadata: ["function": "\(name)", "lsn": "\(lsn)", "error": "\(error)"])
            return false
        }
    }

    /// Dead letters of `name`, oldest first.
    static func listDeadLetters(_ name: String, _ snapshot: Snapshot, limit: Int) throws -> [Document] {
        try snapshot.rowsIfPresent(Query(collection: deadLetters, filter: .compare(field: "name", op: .eq, value: .string(name)),
                                         order: [Sort(field: "name"), Sort(field: "lsn"), Sort(field: "index")], limit: limit))
    }
}

/// Keys of trigger workers that returned, for the reconciler to start again.
private final class EndedWorkers: Sendable {
    private let keys = Mutex<Set<String>>([])
    func add(_ key: String) { _ = keys.withLock { $0.insert(key) } }
    func take() -> Set<String> { keys.withLock { k in defer { k = [] }; return k } }
}
