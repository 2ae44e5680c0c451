// fuzz-modules: Kernel BaaS
// fuzz-options: -max_len=8192
//
// The PostgREST surface (Sources/BaaS/REST: PostgRESTQuery.swift, Embedding.swift,
// RESTAPI.swift): a query string and request headers from anyone holding the anon key.
// Input: byte 0 picks the collection, the method (GET/HEAD), the key (anon/service) and the
// Accept header; then text: the first line is the query string (`select=...&qty=gt.1&or=(...)
// &order=...&limit=...`), every further line a header (`Range: 0-9`, `Prefer: count=exact`,
// `Range-Unit: items`, ...).
// 1. The pure part on the small-stack thread: PostgRESTQuery.parse, SelectParser,
//    EmbedParameters and the parsed filter run on a snapshot (fulltext filters parse their
//    tsquery there): a result or an AERO_* error, never a trap or unbounded recursion.
//    The query string grammar includes issue 22's syntax (corpus: jsonpath, casts, spread,
//    count, aggregate, prefer-equals): JSON paths `doc->a->0->>b` with `::casts` in select,
//    filters and order, `rel(count)`, `...rel(cols)`, `order=rel(col)`, `count()`/`col.sum()`;
//    and `Prefer` lines (handling=strict, max-affected, return=headers-only).
// 2. The whole request through the real router (RESTAPI.register) on a real database with
//    rows (Range arithmetic, Prefer, Accept, embedding, count): an answer, never a trap or a
//    hang, and never a 5xx (a client's query is a 4xx or a result).

import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOEmbedded
@testable import BaaS
@testable import Kernel

private struct FuzzCluster: ClusterView {
    var nodeID: String { "fuzz" }
    var startedMicros: Int64 { 0 }
    func primaryHTTP() -> String? { nil }
    func statusFields() async -> [String: JSONValue] { [:] }
    func dataRefusal() -> AeroError? { nil }
}

private final class Box<T>: @unchecked Sendable { var value: T? }

/// Waits for async work from the synchronous fuzz entry point.
private func block<T>(_ body: @escaping @Sendable () async throws -> T) -> T {
    let box = Box<Result<T, any Error>>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.value = .success(try await body()) } catch { box.value = .failure(error) }
        done.signal()
    }
    done.wait()
    switch box.value! {
    case .success(let value): return value
    case .failure(let error): fatalError("fixture: \(error)")
    }
}

private struct Fixture: @unchecked Sendable {
    let database: Database
    let responder: RouterResponder<AeroRequestContext>
    let anon: String
    let service: String
}

private let schemas = [
    #"{"name":"authors","primary_key":"id","fields":{"id":{"type":"int"},"name":{"type":"text","nullable":true}}}"#,
    #"""
    {"name":"items","primary_key":"id","fields":{"id":{"type":"int"},"name":{"type":"text","nullable":true},
     "qty":{"type":"int","nullable":true},"price":{"type":"float","nullable":true},"active":{"type":"bool","nullable":true},
     "tags":{"type":"array<text>","nullable":true},"doc":{"type":"json","nullable":true},"body":{"type":"text","nullable":true},
     "created":{"type":"timestamp","nullable":true},"owner":{"type":"uuid","nullable":true},
     "author_id":{"type":"int","nullable":true,"references":{"collection":"authors"}}},
     "indexes":[{"fields":["qty"]},{"fields":["body"],"type":"fulltext"}]}
    """#,
    #"""
    {"name":"comments","primary_key":"id","fields":{"id":{"type":"int"},"body":{"type":"text","nullable":true},
     "item_id":{"type":"int","nullable":true,"references":{"collection":"items"}}}}
    """#,
]

private let rows = [
    #"{"op":"insert","collection":"authors","doc":{"id":1,"name":"Ada"}}"#,
    #"{"op":"insert","collection":"authors","doc":{"id":2,"name":"Grace"}}"#,
    #"{"op":"insert","collection":"items","doc":{"id":1,"name":"apple","qty":3,"price":1.5,"active":true,"tags":["red","fruit"],"doc":{"a":{"b":[1,2]}},"body":"the quick brown fox","created":"2026-01-01T00:00:00Z","owner":"6f1c2b1e-8a59-4a39-9a5e-1f2d3c4b5a69","author_id":1}}"#,
    #"{"op":"insert","collection":"items","doc":{"id":2,"name":"Banana, split","qty":0,"price":0.25,"active":false,"tags":[],"doc":null,"body":"lazy dogs sleep","author_id":2}}"#,
    #"{"op":"insert","collection":"items","doc":{"id":3,"name":null,"qty":null,"price":null,"active":null,"tags":null,"doc":[1,"x"],"body":null,"author_id":null}}"#,
    #"{"op":"insert","collection":"items","doc":{"id":4,"name":"c%d_e*f","qty":-7,"price":-1e10,"active":true,"tags":["a","b","c"],"doc":{"k":"v"},"body":"fox and dog","author_id":1}}"#,
    #"{"op":"insert","collection":"comments","doc":{"id":1,"body":"nice","item_id":1}}"#,
    #"{"op":"insert","collection":"comments","doc":{"id":2,"body":"meh","item_id":1}}"#,
    #"{"op":"insert","collection":"comments","doc":{"id":3,"body":null,"item_id":4}}"#,
]

private let fixture: Fixture = {
    let base = ProcessInfo.processInfo.environment["FUZZ_TMPDIR"] ?? NSTemporaryDirectory()
    let directory = base + "/postgrest-\(getpid())"
    try? FileManager.default.removeItem(atPath: directory)  // a previous run's leftovers, if any
    var options = KernelOptions(dataDirectory: directory)
    options.walSegmentBytes = 1 << 20
    let secret = Array("fuzzing-secret-fuzzing-secret-0123456789".utf8)
    let now = SystemClock().nowMicros() / 1_000_000
    return block { [options] in
        let database = try await Database.open(options)
        for schema in schemas { _ = try await database.createCollection(try JSON.parse(schema)) }
        let ops = try rows.map { try JSON.parse($0) }
        _ = try await database.commit(.object(["ops": .array(ops)]))
        let router = Router(context: AeroRequestContext.self)
        RESTAPI.register(on: router, database: database, keys: KeyChecker(secret: secret, clock: SystemClock(), database: database),
                         cluster: FuzzCluster())
        return Fixture(database: database, responder: router.buildResponder(),
                       anon: APIKeys.make(role: "anon", secret: secret, nowSeconds: now),
                       service: APIKeys.make(role: "service_role", secret: secret, nowSeconds: now))
    }
}()

private let collections = ["items", "comments", "authors"]
private let accepts = ["application/json", "application/vnd.pgrst.object+json", "text/csv", "*/*"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let selector = Int(data[0])
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let query = lines.isEmpty ? "" : lines.removeFirst()
    let collection = collections[selector % collections.count]
    onSmallStack { parseAndRun(query, collection: collection) }
    request(query, headers: lines, collection: collection, head: selector & 4 != 0, service: selector & 8 != 0,
            accept: accepts[(selector >> 4) % accepts.count])
    return 0
}

/// The parsers and the kernel's execution of the parsed filter, on the small-stack thread.
private func parseAndRun(_ query: String, collection: String) {
    let snapshot = fixture.database.snapshot()
    guard let schema = snapshot.state.collections[collection]?.schema else { fatalError("fixture collection \(collection)") }
    do {
        let parsed = try PostgRESTQuery.parse(query, schema: schema)
        let schemas = snapshot.state.collections.mapValues(\.schema)
        if let select = parsed.select {
            let items = try SelectParser.parse(select, schema: schema, collections: schemas)
            _ = try EmbedParameters.attach(parsed.embedded, to: items, collections: schemas)
        }
        _ = try snapshot.query(Query(collection: collection, filter: parsed.filter, order: parsed.order,
                                     limit: parsed.limit.map { min($0, 100) }, offset: min(parsed.offset, 100), count: true))
    } catch is AeroError {
    } catch is PostgRESTFailure {  // a refusal with its own PostgREST code and status (RESTLimits.swift)
    } catch {
        fatalError("the REST parsers threw an unexpected error: \(error)")
    }
}

/// The whole request through the router.
private func request(_ query: String, headers: [String], collection: String, head: Bool, service: Bool, accept: String) {
    var fields = HTTPFields()
    fields[HTTPField.Name("apikey")!] = service ? fixture.service : fixture.anon
    fields[.accept] = accept
    for line in headers {
        guard let colon = line.firstIndex(of: ":"), let name = HTTPField.Name(String(line[..<colon])) else { continue }
        fields[name] = String(line[line.index(after: colon)...].drop(while: { $0 == " " }))
    }
    let path = "/rest/v1/\(collection)" + (query.isEmpty ? "" : "?" + query)
    let request = Request(head: HTTPRequest(method: head ? .head : .get, scheme: "http", authority: "localhost", path: path,
                                            headerFields: fields),
                          body: RequestBody(buffer: ByteBuffer()))
    let responder = fixture.responder
    let status = block { () async -> HTTPResponse.Status in
        // An EmbeddedChannel is used on the thread that made it: one per request, in the task.
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }  // closing breaks the channel <-> pipeline cycle (else it leaks)
        let context = AeroRequestContext(source: ApplicationRequestContextSource(channel: channel, logger: Logger(label: "fuzz")))
        do {
            return try await responder.respond(to: request, context: context).status
        } catch let error as HTTPError {
            return error.status
        } catch {
            return .internalServerError
        }
    }
    precondition(status.code < 500, "GET \(path) with \(headers) answered \(status)")
}
