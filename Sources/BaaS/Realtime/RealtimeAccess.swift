// Private channels (`config.private: true`, REST broadcast `?private=true`), authorized as
// Supabase authorizes them with RLS on `realtime.messages` (docs/REALTIME.md "Private channels"):
// the policies of the collection `realtime_messages` (declared by the operator, row-level
// security enabled) are evaluated against the message a client wants to read or write:
//   {"topic": <topic without "realtime:">, "extension": "broadcast" | "presence"}
// (fields the collection does not declare are left out; its primary key gets the topic).
// - read = the `select` policy: joining (broadcast or presence must be admitted), receiving
//   broadcasts (extension broadcast) and presence state/diffs (extension presence);
// - write = the `insert` policy: sending a broadcast (socket or REST), tracking a presence.
// The service role passes; the collection missing or its RLS disabled refuses with a message
// that says so (never open by default).
//
// Invariants:
// - Private and public channels of the same name are separate topics: nothing sent on one
//   reaches the other (RealtimeService.TopicKey).
// - A policy edit reaches live channels (RT5): decisions are cached per channel with the
//   service's policy generation, which the service bumps when the visible state's `_policies`,
//   `_rls` or any schema changed (RealtimeService.watchPolicies); the next delivery re-evaluates.

import Kernel
import Synchronization

enum MessageExtension: String, Sendable { case broadcast, presence }
enum MessageAccess: Sendable { case read, write }

/// One private channel member's authorization, cached per policy generation.
final class ChannelAccess: Sendable {
    static let collection = "realtime_messages"

    let topic: String  // without "realtime:"
    private let service: RealtimeService

    private struct State {
        var caller: Caller
        var generation: UInt64
        var decisions: [String: Bool] = [:]
    }

    private let state: Mutex<State>

    init(topic: String, caller: Caller, service: RealtimeService) {
        self.topic = topic
        self.service = service
        state = Mutex(State(caller: caller, generation: service.policyGeneration))
    }

    func setCaller(_ caller: Caller) {
        state.withLock { $0 = State(caller: caller, generation: service.policyGeneration) }
    }

    /// Whether this member may read/write the extension now; fails closed on an error.
    func allows(_ access: MessageAccess, _ ext: MessageExtension) -> Bool {
        (try? check(access, ext)) ?? false
    }

    func check(_ access: MessageAccess, _ ext: MessageExtension) throws -> Bool {
        let generation = service.policyGeneration
        let key = "\(access)|\(ext.rawValue)"
        let (hit, caller) = state.withLock { s -> (Bool?, Caller) in
            if s.generation != generation { s.decisions = [:]; s.generation = generation }
            return (s.decisions[key], s.caller)
        }
        if let hit { return hit }
        let decision = try Self.decide(caller: caller, topic: topic, access, ext, database: service.database, engine: service.engine)
        state.withLock { s in if s.generation == generation { s.decisions[key] = decision } }
        return decision
    }

    static func decide(caller: Caller, topic: String, _ access: MessageAccess, _ ext: MessageExtension,
                       database: Database, engine: PolicyEngine) throws -> Bool {
        if caller.isService { return true }
        let snapshot = database.snapshot()
        guard let data = snapshot.state.collections[collection] else {
            throw AeroError(.forbidden, "Unauthorized: private channels are authorized by the policies of the collection \(collection), which does not exist: create it with row-level security and select/insert policies (docs/REALTIME.md \"Private channels\")")
        }
        guard try PolicyStore.isEnabled(collection, snapshot) else {
            throw AeroError(.forbidden, "Unauthorized: row-level security is disabled on \(collection): enable it so its policies decide who uses private channels")
        }
        let schema = data.schema
        let view = try engine.view(schema, caller: caller, snapshot: snapshot)
        guard let filter = view.condition(access == .read ? .select : .insertCheck) else { return true }
        var message: Document = [:]
        if schema.fields["topic"] != nil { message["topic"] = .string(topic) }
        if schema.fields["extension"] != nil { message["extension"] = .string(ext.rawValue) }
        if message[schema.primaryKey] == nil { message[schema.primaryKey] = .string(topic) }
        return try FilterMatcher(filter, schema: schema).matches(message)
    }

    static func denied(_ access: MessageAccess, topic: String) -> AeroError {
        AeroError(.forbidden, "Unauthorized: You do not have permissions to \(access == .read ? "read from" : "write to") this Channel topic: \(topic)")
    }
}
