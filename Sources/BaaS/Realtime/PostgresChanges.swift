// postgres_changes: the bindings of a join, their ids, row-level security per subscriber, and
// the payload the Supabase clients expect (supabase-wire §5.3), fed by the kernel's change
// stream (Database.nextChanges: released records only, in LSN order).
//
// Payload sent per matching change (one frame per change, `ids` = the matching bindings):
//   {"ids":[Int], "data":{"schema":"public","table":T,"commit_timestamp":ISO,"type":"INSERT"|..,
//    "errors":null,"columns":[{"name","type"}],"record"?:{..},"old_record"?:{..},"lsn":"<LSN>"}}
// `lsn` is the transaction's LSN as a decimal string (beyond Supabase; RT1): a client resumes
// after it with `config.resume_after_lsn`.
//
// Row-level security (RLS1 applied to realtime, RT3): the subscriber's `select` policy for a
// table is compiled once per subscription (PolicyEngine, as REST does), again after its token
// changes or the table's schema changes. INSERT and UPDATE are sent only when the new row is
// admitted; DELETE only when the old row was. `old_record` of an UPDATE is the old row when it
// was admitted, else only its primary key (which the admitted new row shows anyway): it never
// reveals a row the subscriber could not read.

import Kernel
import Synchronization

struct ChangeBinding: Sendable {
    let id: Int64
    let event: String          // INSERT, UPDATE, DELETE or *
    let table: String?         // nil or "*": every user collection
    let filter: String?
    let select: [String]?
    /// The binding as the client sent it, with its id: one entry of the join reply.
    let reply: JSONValue

    static func parse(_ value: JSONValue, database: Database) throws -> ChangeBinding {
        guard case .object(let o) = value else { throw RealtimeFrame.invalid("a postgres_changes binding is an object") }
        let event = o["event"]?.stringValue ?? "*"
        guard ["INSERT", "UPDATE", "DELETE", "*"].contains(event) else {
            throw RealtimeFrame.invalid("postgres_changes event must be INSERT, UPDATE, DELETE or *")
        }
        let schema = o["schema"]?.stringValue ?? "public"
        guard schema == "public" else { throw RealtimeFrame.invalid("only the schema public exists (got \(schema.prefix(64)))") }
        let table = o["table"]?.stringValue
        let filter = o["filter"]?.stringValue
        var select: [String]?
        if let items = o["select"]?.arrayValue {
            select = items.compactMap(\.stringValue)
            guard select!.count == items.count, items.count <= KernelLimits.fieldsPerCollectionMax else {
                throw RealtimeFrame.invalid("select is a list of column names")
            }
        }
        let snapshot = database.snapshot()
        if let table, table != "*" {
            guard !SystemCollections.isSystem(table), let data = snapshot.state.collections[table] else {
                throw AeroError(.collectionNotFound, "Could not find the table 'public.\(table.prefix(64))'")
            }
            if let filter { _ = try BindingFilter.parse(filter, schema: data.schema) }
        } else if filter != nil {
            throw RealtimeFrame.invalid("a filter needs a table")
        }
        // The id Supabase derives from the binding: stable for the same binding, never 0.
        var hash: UInt32 = 2_166_136_261
        for byte in "\(event)|\(schema)|\(table ?? "")|\(filter ?? "")".utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        let id = Int64(hash & 0x3fff_ffff) + 1
        var reply: [String: JSONValue] = ["id": .int(id), "event": .string(event), "schema": .string(schema)]
        if let table { reply["table"] = .string(table) }
        if let filter { reply["filter"] = .string(filter) }
        if let select { reply["select"] = .array(select.map(JSONValue.string)) }
        return ChangeBinding(id: id, event: event, table: table == "*" ? nil : table, filter: filter, select: select,
                             reply: .object(reply))
    }

    func applies(to kind: DocumentChange.Kind, collection: String) -> Bool {
        if let table, table != collection { return false }
        return event == "*" || event == kind.rawValue.uppercased()
    }
}

/// `col=op.value[,col=op.value...]`: the REST filter operators, comma = AND.
enum BindingFilter {
    /// PostgREST operators that Supabase Realtime's filters do not have (its walrus filters take
    /// eq, neq, lt, lte, gt, gte, in): refused by name at join rather than misread.
    static let refusedOperators: Set<String> = ["match", "imatch", "isdistinct"]

    static func parse(_ text: String, schema: CollectionSchema) throws -> Filter {
        var parts: [Filter] = []
        for term in try split(text) {
            guard let eq = term.firstIndex(of: "=") else { throw RealtimeFrame.invalid("filter \(term.prefix(64)): expected column=operator.value") }
            let expression = term[term.index(after: eq)...]
            let op = (expression.hasPrefix("not.") ? expression.dropFirst(4) : expression).prefix { $0 != "." }
            guard !refusedOperators.contains(String(op)) else {
                throw RealtimeFrame.invalid("filter operator \(op) is not supported in postgres_changes (Supabase Realtime accepts eq, neq, lt, lte, gt, gte, in; AeroDB also like, ilike, is, and not.<op>)")
            }
            parts.append(try FilterParser.parse(column: String(term[..<eq]), expression: String(term[term.index(after: eq)...]),
                                                schema: schema))
        }
        guard !parts.isEmpty, parts.count <= 16 else { throw RealtimeFrame.invalid("a filter has 1 to 16 conditions") }
        return parts.count == 1 ? parts[0] : .and(parts)
    }

    /// Splits on commas outside parentheses (`status=in.(a,b),n=gt.1`).
    static func split(_ text: String) throws -> [String] {
        guard text.utf8.count <= 4_096 else { throw RealtimeFrame.invalid("filter longer than 4096 bytes") }
        var out: [String] = [], current = "", depth = 0
        for ch in text {
            if ch == "(" { depth += 1 } else if ch == ")" { depth = max(0, depth - 1) }
            if ch == "," && depth == 0 { out.append(current); current = "" } else { current.append(ch) }
        }
        out.append(current)
        return out.filter { !$0.isEmpty }
    }
}

/// One channel's postgres_changes: its bindings and the caller's compiled policies.
final class ChangeSubscription: Sendable {
    let topic: String
    let joinRef: String?
    let bindings: [ChangeBinding]
    private let database: Database
    private let engine: PolicyEngine

    private struct Compiled {
        let schema: CollectionSchema
        /// nil: every row is visible (no row-level security for this caller).
        let policy: FilterMatcher?
        let filters: [Int64: FilterMatcher]
    }

    private struct State {
        var caller: Caller
        var compiled: [String: Compiled] = [:]
    }

    private let state: Mutex<State>

    init(topic: String, joinRef: String?, bindings: [ChangeBinding], caller: Caller, database: Database, engine: PolicyEngine) {
        self.topic = topic
        self.joinRef = joinRef
        self.bindings = bindings
        self.database = database
        self.engine = engine
        state = Mutex(State(caller: caller))
    }

    /// A new token on the live channel: policies are compiled again for it.
    func setCaller(_ caller: Caller) {
        state.withLock { $0 = State(caller: caller) }
    }

    /// A schema change: compile again (fields, policies).
    func invalidate() {
        state.withLock { $0.compiled = [:] }
    }

    private func compiled(_ collection: String) throws -> Compiled? {
        if let hit = state.withLock({ $0.compiled[collection] }) { return hit }
        let caller = state.withLock { $0.caller }
        let snapshot = database.snapshot()
        guard let data = snapshot.state.collections[collection] else { return nil }
        let schema = data.schema
        let view = try engine.view(schema, caller: caller, snapshot: snapshot)
        let policy = try view.condition(.select).map { try FilterMatcher($0, schema: schema) }
        var filters: [Int64: FilterMatcher] = [:]
        for binding in bindings where binding.filter != nil && binding.table == collection {
            filters[binding.id] = try FilterMatcher(try BindingFilter.parse(binding.filter!, schema: schema), schema: schema)
        }
        let result = Compiled(schema: schema, policy: policy, filters: filters)
        state.withLock { s in
            if s.compiled.count >= KernelLimits.collectionsMax { s.compiled = [:] }
            s.compiled[collection] = result
        }
        return result
    }

    /// The frame for one change, or nil when no binding matches or the policy hides it.
    func frame(for change: DocumentChange, in transaction: CommittedTransaction) -> RealtimeFrame? {
        guard !SystemCollections.isSystem(change.collection) else { return nil }
        let kind = change.kind
        let candidates = bindings.filter { $0.applies(to: kind, collection: change.collection) }
        guard !candidates.isEmpty else { return nil }
        guard let compiled = try? compiled(change.collection) else { return nil }  // fail closed
        func admitted(_ doc: Document?) -> Bool {
            guard let doc else { return false }
            return compiled.policy?.matches(doc) ?? true
        }
        let newVisible = admitted(change.after), oldVisible = admitted(change.before)
        switch kind {
        case .insert, .update: guard newVisible else { return nil }
        case .delete: guard oldVisible else { return nil }
        }
        let subject = kind == .delete ? change.before! : change.after!
        let ids = candidates.filter { binding in
            guard let filter = compiled.filters[binding.id] else { return binding.filter == nil }
            return filter.matches(subject)
        }
        guard !ids.isEmpty else { return nil }
        let select = ids.count == 1 ? ids[0].select : nil
        func project(_ doc: Document) -> JSONValue {
            guard let select else { return .object(doc) }
            return .object(doc.filter { select.contains($0.key) || $0.key == compiled.schema.primaryKey })
        }
        var data: [String: JSONValue] = [
            "schema": .string("public"), "table": .string(change.collection),
            "commit_timestamp": .string(Timestamp.format(transaction.timestampMicros)),
            "type": .string(kind.rawValue.uppercased()), "errors": .null,
            "columns": .array(Self.columns(compiled.schema)), "lsn": .string(String(transaction.lsn)),
        ]
        switch kind {
        case .insert:
            data["record"] = project(change.after!)
        case .update:
            data["record"] = project(change.after!)
            data["old_record"] = oldVisible ? project(change.before!)
                : .object([compiled.schema.primaryKey: change.key])
        case .delete:
            data["old_record"] = project(change.before!)
        }
        return RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "postgres_changes",
                             payload: .object(["ids": .array(ids.map { .int($0.id) }), "data": .object(data)]))
    }

    /// Columns in Postgres type names, primary key first then by name (realtime-js casts by them).
    static func columns(_ schema: CollectionSchema) -> [JSONValue] {
        let names = [schema.primaryKey] + schema.fields.keys.filter { $0 != schema.primaryKey }.sorted()
        return names.compactMap { name in
            guard let field = schema.fields[name] else { return nil }
            return .object(["name": .string(name), "type": .string(pgType(field.type))])
        }
    }

    static func pgType(_ type: FieldType) -> String {
        switch type {
        case .text: return "text"
        case .int: return "int8"
        case .float: return "float8"
        case .bool: return "bool"
        case .timestamp: return "timestamptz"
        case .uuid: return "uuid"
        case .json: return "jsonb"
        case .array(let element): return "_" + pgType(element)
        }
    }
}
