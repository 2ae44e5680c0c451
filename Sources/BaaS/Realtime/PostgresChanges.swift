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

/// A class, not a struct: the shared reader reads the bindings of every candidate subscriber
/// per change, and copying a struct of seven strings and arrays was seven retains each (perf).
final class ChangeBinding: Sendable {
    let id: Int64
    let event: String          // INSERT, UPDATE, DELETE or *
    let table: String?         // nil or "*": every user collection
    let filter: String?
    let select: [String]?
    /// The binding as the client sent it, with its id: one entry of the join reply.
    let reply: JSONValue
    /// A single `column=eq.value` filter on an int or text column: the fan-out's index key
    /// (ChangeFanout). nil: evaluated for every change of the table.
    let eq: EqKey?

    struct EqKey: Hashable, Sendable {
        let column: String
        let value: String
    }

    init(id: Int64, event: String, table: String?, filter: String?, select: [String]?, reply: JSONValue, eq: EqKey?) {
        self.id = id
        self.event = event
        self.table = table
        self.filter = filter
        self.select = select
        self.reply = reply
        self.eq = eq
        kind = switch event {
        case "INSERT": .insert
        case "UPDATE": .update
        case "DELETE": .delete
        default: nil
        }
    }

    /// `event` as a change kind; nil for `*`.
    private let kind: DocumentChange.Kind?

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
        var eq: EqKey?
        if let table, table != "*" {
            guard !SystemCollections.isSystem(table), let data = snapshot.state.collections[table] else {
                throw AeroError(.collectionNotFound, "Could not find the table 'public.\(table.prefix(64))'")
            }
            if let filter {
                _ = try BindingFilter.parse(filter, schema: data.schema)
                eq = eqKey(filter, schema: data.schema)
            }
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
                             reply: .object(reply), eq: eq)
    }

    /// The index key of a lone `col=eq.v` filter on an int or text column, in the form
    /// `ChangeFanout.indexValue` gives a row's value (`5` for int 5, the text itself).
    static func eqKey(_ filter: String, schema: CollectionSchema) -> EqKey? {
        guard let eq = filter.firstIndex(of: "=") else { return nil }
        let column = String(filter[..<eq])
        let expression = filter[filter.index(after: eq)...]
        guard expression.hasPrefix("eq."), let field = schema.fields[column] else { return nil }
        let literal = String(expression.dropFirst(3))
        switch field.type {
        case .int:
            guard let n = Int64(literal) else { return nil }
            return EqKey(column: column, value: String(n))
        case .text:
            guard !literal.contains(","), !literal.contains("("), !literal.hasPrefix("\""), literal != "null" else { return nil }
            return EqKey(column: column, value: literal)
        default:
            return nil
        }
    }

    func applies(to kind: DocumentChange.Kind, collection: String) -> Bool {
        if let table, table != collection { return false }
        return self.kind == nil || self.kind == kind
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

/// Binding filters compiled once per (collection, filter text) for every subscription of the
/// node (a thousand subscribers of `grp=eq.1` share one matcher). Cleared on a schema change
/// and when it reaches `compiledFiltersMax` entries (client-growable: bounded).
final class ChangeFilters: Sendable {
    /// Distinct compiled binding filters kept (past it the cache starts again).
    static let compiledFiltersMax = 4_096

    private let cache = Mutex<[String: FilterMatcher?]>([:])

    /// The matcher for a binding's filter on `collection`, nil when it no longer compiles
    /// (a dropped column): such a binding matches nothing (fail closed).
    func matcher(_ filter: String, collection: String, schema: CollectionSchema) -> FilterMatcher? {
        let key = collection + "\u{0}" + filter
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let compiled = try? FilterMatcher(try BindingFilter.parse(filter, schema: schema), schema: schema)
        cache.withLock { c in
            if c.count >= Self.compiledFiltersMax { c = [:] }
            c[key] = .some(compiled)
        }
        return compiled
    }

    func invalidate() { cache.withLock { $0 = [:] } }
}

/// What is shared between the subscribers that see one change: filter results per distinct
/// filter and the encoded `data` object per distinct shape (decoded and encoded once, not once
/// per subscriber). Lives for one change.
struct ChangeMemo {
    /// What makes two subscribers' `data` objects differ: the projected columns (a lone matching
    /// binding's `select`) and whether the old row is visible to them (RT3).
    struct Shape: Hashable {
        let select: [String]?
        let oldVisible: Bool
    }

    var filterResults: [String: Bool] = [:]
    var payloads: [Shape: [UInt8]] = [:]
    var columns: [String: JSONValue] = [:]
}

/// One channel's postgres_changes: its bindings and the caller's compiled policies. Compact:
/// no task of its own while it is live (ChangeFanout delivers to it).
final class ChangeSubscription: Sendable {
    let id: Int
    let topic: String
    let bindings: [ChangeBinding]
    let outbox: RealtimeOutbox
    private let database: Database
    private let engine: PolicyEngine
    private let filters: ChangeFilters
    private let closedFlag = Atomic<Bool>(false)

    private struct Compiled {
        let schema: CollectionSchema
        /// nil: every row is visible (no row-level security for this caller).
        let policy: FilterMatcher?
    }

    private struct State {
        var caller: Caller
        var compiled: [String: Compiled] = [:]
    }

    private let state: Mutex<State>
    /// The frame bytes around a change's shared `data` object (RealtimeFrame.changeHead/Tail):
    /// the head, and the tail for each binding matching alone (computed once, at join).
    private let head: [UInt8]
    private let tails: [[UInt8]]

    init(id: Int, topic: String, bindings: [ChangeBinding], caller: Caller, outbox: RealtimeOutbox,
         database: Database, engine: PolicyEngine, filters: ChangeFilters) {
        self.id = id
        self.topic = topic
        self.bindings = bindings
        self.outbox = outbox
        self.database = database
        self.engine = engine
        self.filters = filters
        state = Mutex(State(caller: caller))
        head = RealtimeFrame.changeHead(outbox.version, topic: topic)
        tails = bindings.map { RealtimeFrame.changeTail(outbox.version, topic: topic, ids: [$0.id]) }
    }

    /// The channel closed: nothing more is queued for it.
    var isClosed: Bool { closedFlag.load(ordering: .acquiring) || outbox.isClosed }
    /// Its channel was closed (`remove`): no lock taken, for the shared reader's loop (a closed
    /// outbox refuses pushes anyway).
    var isRemoved: Bool { closedFlag.load(ordering: .acquiring) }
    func markClosed() { closedFlag.store(true, ordering: .releasing) }

    /// A new token on the live channel: policies are compiled again for it.
    func setCaller(_ caller: Caller) {
        state.withLock { $0 = State(caller: caller) }
    }

    /// A schema change or a policy edit: compile again (fields, policies) (RT5).
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
        let result = Compiled(schema: schema, policy: policy)
        state.withLock { s in
            if s.compiled.count >= KernelLimits.collectionsMax { s.compiled = [:] }
            s.compiled[collection] = result
        }
        return result
    }

    /// The binding indices of a mask, in order.
    static func indices(_ mask: UInt64) -> [Int] {
        (0..<64).filter { mask & (1 << UInt64($0)) != 0 }
    }

    /// The frame for one change, or nil when no binding matches or the policy hides it.
    func frame(for change: DocumentChange, in transaction: CommittedTransaction) -> RealtimeFrame? {
        var memo = ChangeMemo()
        guard let (mask, data) = render(change, in: transaction, memo: &memo),
              let value = try? JSON.parse(data) else { return nil }
        let matched = Self.indices(mask)
        return RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "postgres_changes",
                             payload: .object(["ids": .array(matched.map { JSONValue.int(bindings[$0].id) }), "data": value]))
    }

    /// The frame for one change in this subscription's protocol version (its shared `data`
    /// bytes between this subscription's head and tail), or nil.
    func changeFrame(for change: DocumentChange, in transaction: CommittedTransaction, memo: inout ChangeMemo) -> ChangeFrame? {
        guard let (mask, data) = render(change, in: transaction, memo: &memo) else { return nil }
        let tail = mask.nonzeroBitCount == 1 ? tails[mask.trailingZeroBitCount]
            : RealtimeFrame.changeTail(outbox.version, topic: topic, ids: Self.indices(mask).map { bindings[$0].id })
        return ChangeFrame(head: head, data: data, tail: tail)
    }

    /// The matching bindings (bit i set: `bindings[i]`; a mask, not an array: no allocation per
    /// subscriber and change) and the encoded `data` object (RT3: the policy decides first).
    private func render(_ change: DocumentChange, in transaction: CommittedTransaction,
                        memo: inout ChangeMemo) -> (UInt64, [UInt8])? {
        guard !SystemCollections.isSystem(change.collection) else { return nil }
        let kind = change.kind
        guard bindings.contains(where: { $0.applies(to: kind, collection: change.collection) }) else { return nil }
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
        var matched: UInt64 = 0  // bit i: bindings[i] matches (bindingsPerChannelMax is 32)
        for (index, binding) in bindings.enumerated() where binding.applies(to: kind, collection: change.collection) {
            guard let filter = binding.filter else { matched |= 1 << index; continue }
            if let known = memo.filterResults[filter] {
                if known { matched |= 1 << index }
                continue
            }
            let result = filters.matcher(filter, collection: change.collection, schema: compiled.schema)?.matches(subject) ?? false
            memo.filterResults[filter] = result
            if result { matched |= 1 << index }
        }
        guard matched != 0 else { return nil }
        let select = matched.nonzeroBitCount == 1 ? bindings[matched.trailingZeroBitCount].select : nil
        let shape = ChangeMemo.Shape(select: select, oldVisible: oldVisible)
        if let data = memo.payloads[shape] { return (matched, data) }
        func project(_ doc: Document) -> JSONValue {
            guard let select else { return .object(doc) }
            return .object(doc.filter { select.contains($0.key) || $0.key == compiled.schema.primaryKey })
        }
        let columns = memo.columns[change.collection] ?? .array(Self.columns(compiled.schema))
        memo.columns[change.collection] = columns
        var data: [String: JSONValue] = [
            "schema": .string("public"), "table": .string(change.collection),
            "commit_timestamp": .string(Timestamp.format(transaction.timestampMicros)),
            "type": .string(kind.rawValue.uppercased()), "errors": .null,
            "columns": columns, "lsn": .string(String(transaction.lsn)),
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
        let bytes = JSON.encode(.object(data))
        if memo.payloads.count < 64 { memo.payloads[shape] = bytes }
        return (matched, bytes)
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
