// `/rest/v1/<collection>`: the PostgREST surface the Supabase clients use (supabase-wire §3).
// Reads run on one snapshot (answer header X-AeroDB-LSN); writes are one kernel transaction,
// answered after they are durable. A bad, expired, revoked or unknown-role token gets 401.
// Row-level security (docs/POLICIES.md, RLS1): on a collection with policies enabled, the
// caller's policy conditions are ANDed into every read, count, embedding, update and delete
// filter before execution, and the writer checks every new row; service_role bypasses them.
// Collections without policies enabled are open to every valid key (docs/API.md).

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore
import NIOPosix

enum RESTAPI {
    static func register(on router: Router<AeroRequestContext>, database: Database, keys: KeyChecker, cluster: any ClusterView) {
        let rest = router.group("rest/v1")
        let engine = PolicyEngine()
        rest.get("/") { request, _ in await guarded(request, keys) { _ in try openAPI(database) } }
        // rpc/<name> is registered by FunctionsAPI (Sources/BaaS/Functions): functions deployed as rpc.
        @Sendable func access(_ caller: Caller) -> Access { Access(database: database, caller: caller, engine: engine, keys: keys) }
        rest.get(":collection") { request, context in await readRoute(request, context, keys, access, head: false) }
        rest.head(":collection") { request, context in await readRoute(request, context, keys, access, head: true) }
        rest.post(":collection") { request, context in
            await guarded(request, keys) { try await insert(try DataRequest(request, context), access($0)) }
        }
        rest.patch(":collection") { request, context in
            await guarded(request, keys) { try await modify(try DataRequest(request, context), access($0), delete: false) }
        }
        rest.delete(":collection") { request, context in
            await guarded(request, keys) { try await modify(try DataRequest(request, context), access($0), delete: true) }
        }
    }

    /// One data request, as /rest/v1 and a function's `db_request` make it: the same code answers
    /// both, with the same policies, budgets and ranges (docs/FUNCTIONS.md "Database calls").
    struct DataRequest: Sendable {
        let collection: String
        let query: String?
        let headers: HTTPFields
        /// The JSON body, read when (and if) the operation needs it.
        let body: @Sendable () async throws -> JSONValue

        init(_ request: Request, _ context: AeroRequestContext) throws {
            collection = try context.parameters.require("collection")
            query = request.uri.query
            headers = request.headers
            body = { try await HTTPJSON.body(request) }
        }

        init(collection: String, query: String?, headers: HTTPFields, body: JSONValue?) {
            self.collection = collection
            self.query = query
            self.headers = headers
            self.body = {
                guard let body else { throw AeroError(.jsonInvalid, "the request needs a JSON body") }
                return body
            }
        }
    }

    /// Runs a data request as `access.caller`: GET, HEAD, POST, PATCH or DELETE, as the routes above.
    static func data(method: String, _ request: DataRequest, _ access: Access) async -> Response {
        do {
            switch method {
            case "GET": return try await read(request, access, head: false)
            case "HEAD": return try await read(request, access, head: true)
            case "POST": return try await insert(request, access)
            case "PATCH": return try await modify(request, access, delete: false)
            case "DELETE": return try await modify(request, access, delete: true)
            default: throw AeroError(.methodNotAllowed, "method \(method.prefix(16)) is not one of GET, HEAD, POST, PATCH, DELETE")
            }
        } catch {
            return RESTError.response(error)
        }
    }

    /// Who is asking and how their policies are found.
    struct Access {
        let database: Database
        let caller: Caller
        let engine: PolicyEngine
        let keys: KeyChecker

        func policies(_ schema: CollectionSchema, _ snapshot: Snapshot) throws -> PolicyView {
            try engine.view(schema, caller: caller, snapshot: snapshot)
        }
    }

    private static func guarded(_ request: Request, _ keys: KeyChecker, _ body: (Caller) async throws -> Response) async -> Response {
        do {
            return try await body(try keys.caller(request))
        } catch {
            return RESTError.response(error)
        }
    }

    // MARK: Reads

    /// Reads with embedded resources fan out into one query per parent row and embedding; they
    /// run on this pool, not on the cooperative threads every other request needs, so at most
    /// `readPoolThreads` of them run at once and a burst of them cannot stall the node (the
    /// request budget bounds each one). Other reads are one query bounded by Q1 and run inline.
    static let readPoolThreads = 2
    private static let readPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: readPoolThreads)
        pool.start()
        return pool  // lives as long as the process
    }()

    private static func read(_ request: DataRequest, _ access: Access, head: Bool) async throws -> Response {
        guard pooled(request.query) else { return try readNow(request, access, head: head) }
        return try await readPool.runIfActive { try readNow(request, access, head: head) }
    }

    /// GET and HEAD as routes: the caller's key (401 first), then the read, answered in this
    /// frame when it runs inline (no further async frames per request: issue 19, a GET by key).
    private static func readRoute(_ request: Request, _ context: AeroRequestContext, _ keys: KeyChecker,
                                  _ access: (Caller) -> Access, head: Bool) async -> Response {
        do {
            let caller = try keys.caller(request)
            let data = try DataRequest(request, context)
            guard pooled(data.query) else { return try readNow(data, access(caller), head: head) }
            let who = access(caller)
            return try await readPool.runIfActive { try readNow(data, who, head: head) }
        } catch {
            return RESTError.response(error)
        }
    }

    /// Whether a read runs on `readPool`: its select or order embeds a resource.
    private static func pooled(_ query: String?) -> Bool {
        // No `(` in the raw query (nor `%28`, its encoding): no decoded value holds one.
        guard let query else { return false }
        if !query.utf8.contains(UInt8(ascii: "(")) && !query.utf8.contains(UInt8(ascii: "%")) { return false }
        let pairs = PostgRESTQuery.decodePairs(query)
        let select = pairs.first { $0.0 == "select" }?.1, order = pairs.first { $0.0 == "order" }?.1
        return select?.contains("(") == true || order?.contains("(") == true
    }

    private static func readNow(_ request: DataRequest, _ access: Access, head: Bool) throws -> Response {
        let database = access.database
        let snapshot = database.snapshot()
        let schema = try collection(request.collection, snapshot)
        let parsed = try PostgRESTQuery.parse(request.query, schema: schema)
        let prefer = try Prefer(request.headers)
        let accept = request.headers.value(.accept) ?? "*/*"
        let explainAs = try explainCaller(request, access, explain: accept.hasPrefix("application/vnd.pgrst.plan"))
        let policies = try explainAs.policies(schema, snapshot)
        let items = try selectItems(parsed, schema, snapshot, aggregates: database.queryOptions.aggregatesEnabled, read: true)
        let budget = RequestBudget(options: database.queryOptions)
        let projector = try Projector(snapshot: snapshot, items: items, budget: budget) {
            try explainAs.policies($0, snapshot).condition(.select)
        }
        let filter = try InnerEmbedding.restrict(policies.restrict(parsed.filter, for: .select), items: items, schema: schema,
                                                  snapshot: snapshot, projector: projector)
        let embeddedOrder = parsed.order.contains(where: EmbeddedOrder.isEmbedded)
        var query = Query(collection: schema.name, filter: filter, order: embeddedOrder ? [] : parsed.order,
                          limit: parsed.limit, offset: parsed.offset, count: prefer.count)
        if let header = request.headers.value(rangeHeader), parsed.limit == nil, let range = try RangeHeader.parse(header) {
            query.offset = range.offset
            query.limit = range.count
        }
        let maxRows = database.queryOptions.limitMax
        query.limit = min(query.limit ?? database.queryOptions.limitDefault, maxRows)
        if accept.hasPrefix("application/vnd.pgrst.plan") {
            return HTTPJSON.response(explained(try snapshot.explain(query), policies, explainAs.caller), lsn: snapshot.lsn)
        }
        var rows: [Document] = [], total: Int?
        // Aggregates answer computed rows (Aggregates.swift); every other read projects documents.
        var aggregated: [JSONValue]?
        if Aggregates.contains(items) {
            let folded = try Aggregates.rows(query, order: parsed.order, items: items, schema: schema, snapshot: snapshot, budget: budget)
            (aggregated, total) = (folded.rows, prefer.count ? folded.total : nil)
        } else if embeddedOrder {
            let sorted = try EmbeddedOrder.rows(query, order: parsed.order, items: items, schema: schema, snapshot: snapshot,
                                                budget: budget) { try explainAs.policies($0, snapshot).condition(.select) }
            (rows, total) = (sorted.rows, prefer.count ? sorted.total : nil)
        } else {
            let result = try budget.query(query, on: snapshot)
            (rows, total) = (result.rows, result.totalCount)
        }
        let count = aggregated?.count ?? rows.count
        func row(_ i: Int) throws -> JSONValue { try aggregated?[i] ?? projector.project(rows[i], items, schema: schema) }
        var headers = HTTPJSON.lsnFields(snapshot)  // the LSN and its epoch only: Content-Range is appended
        headers.append(HTTPField(name: contentRangeHeader, value: contentRange(offset: query.offset, count: count, total: total)))
        prefer.applied(read: true, into: &headers)
        if accept.hasPrefix("application/vnd.pgrst.object+json") {
            guard count == 1 else {
                return RESTError.response(code: "PGRST116", message: "JSON object requested, multiple (or no) rows returned",
                                          details: "The result contains \(count) rows", status: .notAcceptable)
            }
            let row = try row(0)
            var out: [UInt8] = []
            JSON.encode(row, into: &out)
            try budget.chargeBytes(out.count)
            return body(out, "application/json", headers, head: head)
        }
        if head {  // headers only: nothing is projected, no embedded resource is read
            return body([], accept.hasPrefix("text/csv") ? "text/csv" : "application/json", headers, head: true)
        }
        if accept.hasPrefix("text/csv") {
            let columns = items == [.all] ? schema.fieldNames : items.compactMap(\.outputName)
            var out = CSV.header(columns)
            for i in 0..<count {
                let before = out.count
                CSV.append(try row(i), columns: columns, to: &out)
                try budget.chargeBytes(out.count - before)
            }
            return body(out, "text/csv", headers, head: head)
        }
        // Rows are projected and encoded one at a time, so the response budget is checked while
        // the body is built, not after the whole fan-out was materialized.
        var out: [UInt8] = [UInt8(ascii: "[")]
        for i in 0..<count {
            let before = out.count
            if i > 0 { out.append(UInt8(ascii: ",")) }
            JSON.encode(try row(i), into: &out)
            try budget.chargeBytes(out.count - before)
        }
        out.append(UInt8(ascii: "]"))
        return body(out, "application/json", headers, head: head)
    }

    /// Explain is for the service role (it shows plans and policy conditions). With
    /// `X-AeroDB-Explain-As: <access token>` it explains the query as that caller would run it,
    /// injected policy predicates included.
    static let explainAsHeader = HTTPField.Name("X-AeroDB-Explain-As")!

    private static func explainCaller(_ request: DataRequest, _ access: Access, explain: Bool) throws -> Access {
        guard explain else { return access }
        guard access.caller.isService else { throw AeroError(.forbidden, "explain needs the service_role key") }
        guard let token = request.headers[explainAsHeader] else { return access }
        return Access(database: access.database, caller: try access.keys.caller(token: token), engine: access.engine, keys: access.keys)
    }

    private static func explained(_ plan: Plan, _ policies: PolicyView, _ caller: Caller) -> JSONValue {
        guard case .object(var o) = plan.json else { return plan.json }
        o["policies"] = .object([
            "role": .string(caller.role), "enabled": .bool(policies.isActive),
            "select": policies.condition(.select).map { .string($0.description) } ?? .null,
        ])
        return .object(o)
    }

    private static func collection(_ name: String, _ snapshot: Snapshot) throws -> CollectionSchema {
        // System collections (users, sessions, policies, audit...) are never served over REST.
        guard !SystemCollections.isSystem(name), let data = snapshot.state.collections[name] else {
            throw AeroError(.collectionNotFound, "Could not find the table 'public.\(name)' in the schema cache")
        }
        return data.schema
    }

    /// `aggregates`: the node allows them (QueryOptions.aggregatesEnabled); `read`: a GET/HEAD.
    private static func selectItems(_ parsed: PostgRESTQuery, _ schema: CollectionSchema, _ snapshot: Snapshot,
                                    aggregates: Bool, read: Bool) throws -> [SelectItem] {
        guard let text = parsed.select else {
            guard parsed.embedded.isEmpty else { throw RESTError.parse("parameters of an embedded resource need it in select") }
            return [.all]
        }
        // `select=*`, the supabase client's default: what parsing answers, without copying every
        // collection's schema into a dictionary for a parse that cannot embed anything.
        if text == "*" && parsed.embedded.isEmpty { return [.all] }
        let collections = snapshot.state.collections.mapValues(\.schema)
        let items = try EmbedParameters.attach(parsed.embedded, to: try SelectParser.parse(text, schema: schema, collections: collections),
                                               collections: collections)
        if Aggregates.contains(items) {
            guard aggregates else { throw Aggregates.disabled }
            guard read else { throw RESTError.parse("aggregates in the rows a write returns are not built: select columns") }
        }
        return items
    }

    /// Header names of every read, checked once (not per request).
    static let rangeHeader = HTTPField.Name("Range")!
    static let contentRangeHeader = HTTPField.Name("Content-Range")!

    /// `Content-Range: <first>-<last>/<total or *>`; `*/<total>` without rows.
    static func contentRange(offset: Int, count: Int, total: Int?) -> String {
        let totalText = total.map(String.init) ?? "*"
        return count == 0 ? "*/\(totalText)" : "\(offset)-\(ClientInteger.saturatingAdd(offset, count - 1))/\(totalText)"
    }

    private static func body(_ bytes: [UInt8], _ type: String, _ headers: HTTPFields, head: Bool,
                             status: HTTPResponse.Status = .ok) -> Response {
        var headers = headers
        headers[.contentType] = type
        return Response(status: status, headers: headers, body: head ? .init() : .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: Writes

    private static func insert(_ request: DataRequest, _ access: Access) async throws -> Response {
        let database = access.database
        let snapshot = database.snapshot()
        let schema = try collection(request.collection, snapshot)
        let parsed = try PostgRESTQuery.parse(request.query, schema: schema)
        let prefer = try Prefer(request.headers)
        let documents: [Document]
        switch try await request.body() {
        case .object(let doc): documents = [doc]
        case .array(let items):
            documents = try items.map { item in
                guard case .object(let doc) = item else { throw RESTError.parse("every inserted row must be a JSON object") }
                return doc
            }
        default: throw RESTError.parse("insert a JSON object or an array of objects")
        }
        // Decided before any work under the writer's lock; the writer holds the same bound for every path.
        guard documents.count <= KernelLimits.transactionOpsMax else {
            throw AeroError(.transactionTooLarge, "at most \(KernelLimits.transactionOpsMax) operations per transaction: insert \(documents.count) rows in several requests")
        }
        let rows = applyColumns(documents, parsed.columns, missingDefault: prefer.missingDefault)
        let operations = try writeOperations(rows, onConflict: parsed.onConflict ?? [schema.primaryKey],
                                             resolution: prefer.resolution, schema: schema, snapshot: snapshot)
        let policies = try access.policies(schema, snapshot)
        let check = try policies.writeCheck(includeInsert: true)
        let changes = operations.isEmpty ? (lsn: snapshot.lsn, docs: []) : try await commit(database, operations, check: check)
        return try written(changes.docs, lsn: changes.lsn, prefer: prefer, parsed: parsed, schema: schema,
                           access: access, policies: policies, status: .created)
    }

    /// PostgREST's `columns=`: only the listed keys of each row are inserted, and a listed key a
    /// row lacks is null, unless `Prefer: missing=default` asks for the field's declared default
    /// (the kernel fills defaults for absent fields).
    static func applyColumns(_ documents: [Document], _ columns: [String]?, missingDefault: Bool) -> [Document] {
        guard let columns else { return documents }
        return documents.map { doc in
            var out: Document = [:]
            for column in columns {
                if let value = doc[column] { out[column] = value } else if !missingDefault { out[column] = .null }
            }
            return out
        }
    }

    /// The operations of an insert. `on_conflict` names the primary key (default) or the fields
    /// of a unique index; a row whose conflict fields match an existing row is merged into it
    /// (`merge-duplicates`: an update of that row's key, the payload's primary key left out),
    /// skipped (`ignore-duplicates`), or inserted (and refused 409 by the unique index). Rows with
    /// a null conflict field never conflict. The match is read from this request's snapshot; a
    /// row inserted concurrently makes the commit fail with 409, never merge twice.
    static func writeOperations(_ documents: [Document], onConflict: [String], resolution: String?, schema: CollectionSchema,
                                snapshot: Snapshot) throws -> [WriteOperation] {
        let byKey = onConflict == [schema.primaryKey]
        if !byKey, !schema.indexes.contains(where: { $0.unique && Set($0.fields) == Set(onConflict) }) {
            throw AeroError(.queryInvalid, "there is no unique index matching the ON CONFLICT specification (\(onConflict.joined(separator: ","))): name the primary key \(schema.primaryKey) or the fields of a unique index")
        }
        return try documents.compactMap { doc in
            guard let resolution, resolution == "merge-duplicates" || resolution == "ignore-duplicates" else {
                return .insert(collection: schema.name, document: doc)
            }
            if byKey, resolution == "merge-duplicates" { return .upsert(collection: schema.name, document: doc) }
            guard let existing = try conflicting(doc, onConflict, schema, snapshot) else { return .insert(collection: schema.name, document: doc) }
            guard resolution == "merge-duplicates" else { return nil }
            var set = doc
            set[schema.primaryKey] = nil
            return .update(collection: schema.name, target: .key(existing[schema.primaryKey] ?? .null), set: set)
        }
    }

    private static func conflicting(_ doc: Document, _ fields: [String], _ schema: CollectionSchema, _ snapshot: Snapshot) throws -> Document? {
        var parts: [Filter] = []
        for field in fields {
            guard let value = doc[field], !value.isNull else { return nil }
            parts.append(.compare(field: field, op: .eq, value: value))
        }
        if fields == [schema.primaryKey], let key = doc[schema.primaryKey] { return try snapshot.document(schema.name, key: key) }
        return try snapshot.query(Query(collection: schema.name, filter: parts.count == 1 ? parts[0] : .and(parts), limit: 1)).rows.first
    }

    private static func modify(_ request: DataRequest, _ access: Access,
                               delete: Bool) async throws -> Response {
        let database = access.database
        let snapshot = database.snapshot()
        let schema = try collection(request.collection, snapshot)
        let parsed = try PostgRESTQuery.parse(request.query, schema: schema)
        let prefer = try Prefer(request.headers)
        guard let requested = parsed.filter else {
            return RESTError.response(code: "21000", message: "\(delete ? "DELETE" : "UPDATE") requires a WHERE clause",
                                      details: nil, hint: "add a filter, e.g. ?id=eq.1", status: .badRequest)
        }
        let policies = try access.policies(schema, snapshot)
        let operation: WriteOperation
        let target: Filter
        if delete {
            target = policies.restrict(policies.restrict(requested, for: .select), for: .delete)!
            operation = .delete(collection: schema.name, target: .matching(target))
        } else {
            guard case .object(let set) = try await request.body() else { throw RESTError.parse("PATCH needs a JSON object") }
            // As in PostgreSQL: an update or delete only reaches rows the caller may also select.
            target = policies.restrict(policies.restrict(requested, for: .select), for: .updateUsing)!
            operation = .update(collection: schema.name, target: .matching(target), set: set)
        }
        var check: (any ChangeCheck)? = try policies.writeCheck(includeInsert: false)
        if let most = prefer.maxAffected {
            // Refused before the commit when the snapshot already shows too many rows (the exact
            // number in details); the check refuses the commit itself if more rows match by then.
            // A count the scan bound refuses (no usable index) is left to the writer's check.
            let counted: Int?
            do {
                counted = try RequestBudget(options: database.queryOptions)
                    .query(Query(collection: schema.name, filter: target, limit: 0, count: true), on: snapshot).totalCount
            } catch let error as AeroError where error.code == .queryUnbounded || error.code == .queryBudget {
                counted = nil
            }
            if let counted, counted > most { throw MaxAffected.failure(counted) }
            check = MaxAffected(most: most, collection: schema.name, next: check)
        }
        let (lsn, docs) = try await commit(database, [operation], deleted: delete, collection: schema.name, check: check)
        return try written(docs, lsn: lsn, prefer: prefer, parsed: parsed, schema: schema, access: access,
                           policies: policies, status: .ok)
    }

    /// Commits and returns the affected documents of `collection` (after images, or before images for deletes).
    private static func commit(_ database: Database, _ operations: [WriteOperation], deleted: Bool = false,
                               collection: String? = nil, check: (any ChangeCheck)?) async throws -> (lsn: UInt64, docs: [Document]) {
        let result = try await database.commit(operations, check: check)
        let target = collection ?? operations.first?.collection
        let docs = result.changes.filter { $0.collection == target }.compactMap { deleted ? $0.before : $0.after }
        return (result.lsn, docs)
    }

    private static func written(_ docs: [Document], lsn: UInt64, prefer: Prefer, parsed: PostgRESTQuery,
                                schema: CollectionSchema, access: Access, policies: PolicyView,
                                status: HTTPResponse.Status) throws -> Response {
        var headers: HTTPFields = [HTTPJSON.lsnHeader: String(lsn)]
        if prefer.count { headers[contentRangeHeader] = "*/\(docs.count)" }
        prefer.applied(read: false, into: &headers)
        if prefer.headersOnly, status == .created, let key = docs.first?[schema.primaryKey] {
            // PostgREST's Location: the inserted (first) row by its primary key.
            let value: String
            if case .string(let s) = key { value = s } else { value = JSON.encodeString(key) }
            headers[.location] = "/\(schema.name)?\(schema.primaryKey)=eq.\(Preferences.escape(value))"
        }
        guard prefer.returnRepresentation else {
            return Response(status: status == .created ? .created : .noContent, headers: headers)
        }
        let snapshot = access.database.snapshot()
        let items = try selectItems(parsed, schema, snapshot, aggregates: access.database.queryOptions.aggregatesEnabled, read: false)
        let budget = RequestBudget(options: access.database.queryOptions)
        let projector = try Projector(snapshot: snapshot, items: items, budget: budget) { try access.policies($0, snapshot).condition(.select) }
        // Returned rows are only those the caller may select (an insert may create a row its author cannot read).
        let visible = try policies.condition(.select).map { try FilterMatcher($0, schema: schema) }
        var out: [UInt8] = [UInt8(ascii: "[")]
        for doc in docs where visible?.matches(doc) ?? true {
            let before = out.count
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            JSON.encode(try projector.project(doc, items, schema: schema), into: &out)
            try budget.chargeBytes(out.count - before)
        }
        out.append(UInt8(ascii: "]"))
        return body(out, "application/json", headers, head: false, status: status)
    }

    // MARK: OpenAPI

    private static func openAPI(_ database: Database) throws -> Response {
        let snapshot = database.snapshot()
        var paths: [String: JSONValue] = [:]
        var schemas: [String: JSONValue] = [:]
        for schema in snapshot.collections where !SystemCollections.isSystem(schema.name) {
            let operation: JSONValue = .object(["tags": .array([.string(schema.name)]),
                                                "responses": .object(["200": .object(["description": .string("OK")])])])
            paths["/" + schema.name] = .object(["get": operation, "post": operation, "patch": operation, "delete": operation])
            var properties: [String: JSONValue] = [:]
            for (name, field) in schema.fields { properties[name] = openAPIType(field.type) }
            let required = schema.fields.filter { $0.value.required }.keys.sorted().map(JSONValue.string)
            schemas[schema.name] = .object(["type": .string("object"), "properties": .object(properties), "required": .array(required)])
        }
        let document: JSONValue = .object([
            "openapi": .string("3.0.3"),
            "info": .object(["title": .string("AeroDB REST"), "version": .string("1")]),
            "paths": .object(paths), "components": .object(["schemas": .object(schemas)]),
        ])
        return HTTPJSON.response(document, lsn: snapshot.lsn)
    }

    private static func openAPIType(_ type: FieldType) -> JSONValue {
        switch type {
        case .int: return .object(["type": .string("integer"), "format": .string("int64")])
        case .float: return .object(["type": .string("number")])
        case .bool: return .object(["type": .string("boolean")])
        case .timestamp: return .object(["type": .string("string"), "format": .string("date-time")])
        case .uuid: return .object(["type": .string("string"), "format": .string("uuid")])
        case .text: return .object(["type": .string("string")])
        case .json: return .object([:])
        case .array(let element): return .object(["type": .string("array"), "items": openAPIType(element)])
        }
    }
}

/// RFC 4180 CSV of rows (for `Accept: text/csv`), built row by row.
enum CSV {
    static func header(_ columns: [String]) -> [UInt8] { Array((columns.map(field).joined(separator: ",") + "\n").utf8) }

    static func append(_ row: JSONValue, columns: [String], to out: inout [UInt8]) {
        let line = columns.map { column -> String in
            switch row[column] ?? .null {
            case .null: return ""
            case .string(let s): return field(s)
            case let other: return field(JSON.encodeString(other))
            }
        }.joined(separator: ",") + "\n"
        out.append(contentsOf: line.utf8)
    }

    private static func field(_ text: String) -> String {
        guard text.containsScalar(of: ",\"\n\r") else { return text }
        return "\"" + text.replacingScalar("\"", with: "\"\"") + "\""
    }
}
