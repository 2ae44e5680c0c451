// HTTP routes of functions (docs/FUNCTIONS.md, docs/API.md):
//   ANY  /functions/v1/<name>[/<path>]   invoke (supabase-wire §6)
//   POST /rest/v1/rpc/<name>             rpc with a JSON object of arguments (supabase-wire §3)
//   GET  /rest/v1/rpc/<name>?a=1&b=2     rpc with query arguments
//   GET|POST /admin/v1/functions, GET|DELETE /admin/v1/functions/<name>,
//   POST /admin/v1/functions/<name>/rollback, GET /admin/v1/functions/<name>/logs   (service key)
//
// Errors at /functions/v1 are JSON objects with `error` (the client's FunctionsHttpError takes its
// message from it), `code` and `message`. Unknown function: 404 NOT_FOUND. A function that could
// not be started (its stored module fails its checksum, the node is at its in-flight bound)
// answers with `x-relay-error: true` (FunctionsRelayError): the function itself never ran.
// rpc answers in PostgREST's shapes: PGRST202 (404) for a missing function or a parameter set
// that does not match its declaration.

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public enum FunctionsAPI {
    public static func register(on router: Router<AeroRequestContext>, service: FunctionService, keys: KeyChecker) {
        let functions = router.group("functions/v1")
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            functions.on(":name", method: method) { request, context in
                await invoke(request, try context.parameters.require("name"), subpath: "", service, keys)
            }
            functions.on(":name/**", method: method) { request, context in
                let name = try context.parameters.require("name")
                let prefix = "/functions/v1/\(name)"
                let path = request.uri.path.hasPrefix(prefix) ? String(request.uri.path.dropFirst(prefix.count)) : ""
                return await invoke(request, name, subpath: path, service, keys)
            }
        }
        let rest = router.group("rest/v1")
        rest.post("rpc/:name") { request, context in await rpc(request, try context.parameters.require("name"), get: false, service, keys) }
        rest.get("rpc/:name") { request, context in await rpc(request, try context.parameters.require("name"), get: true, service, keys) }
        addAdminRoutes(router.group("admin/v1"), service, keys)
    }

    // MARK: Invoke

    static func invoke(_ request: Request, _ name: String, subpath: String, _ service: FunctionService, _ keys: KeyChecker) async -> Response {
        let loaded: (FunctionVersion, CompiledFunction)?
        do {
            loaded = try service.load(name)
        } catch {
            return failure(AeroError.wrap(error), relay: true)
        }
        guard let (version, compiled) = loaded else {
            return json(.object(["code": .string("NOT_FOUND"), "message": .string("Requested function was not found"),
                                 "error": .string("Requested function was not found")]), status: .notFound)
        }
        let caller: Caller
        do {
            caller = try keys.caller(request)
        } catch {
            guard !version.verifyJWT else {
                let aero = AeroError.wrap(error)
                return json(.object(["code": .string("UNAUTHORIZED"), "message": .string(aero.message), "error": .string("Invalid JWT")]),
                            status: .unauthorized)
            }
            caller = Caller(role: "anon", claims: .object([:]))
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: version.limits.requestBytes)
        } catch {
            return failure(AeroError(.functionLimit, "the request body is larger than this function's request_bytes limit (\(version.limits.requestBytes) bytes)"), relay: false)
        }
        let headers = request.headers.map { ($0.name.rawName, $0.value) }
        let input = FunctionRequest(method: request.method.rawValue, path: subpath, query: request.uri.query ?? "", headers: headers,
                                    body: Array(body.readableBytesView), caller: caller)
        do {
            let out = try await service.invoke(version, compiled, input, data: service.dataAccess(caller))
            var fields = HTTPFields()
            for (name, value) in out.headers {
                if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) }
            }
            if fields[.contentType] == nil { fields[.contentType] = "text/plain; charset=utf-8" }
            // Read-your-writes through a replica: the LSN this node had applied when the function
            // returned covers every write it made, and the forwarding node waits for it (P2).
            fields[HTTPJSON.lsnHeader] = String(service.database.snapshot().lsn)
            return Response(status: HTTPResponse.Status(code: out.status), headers: fields,
                            body: .init(byteBuffer: ByteBuffer(bytes: out.body)))
        } catch {
            let aero = AeroError.wrap(error)
            // Busy: the function never ran (a relay-side refusal).
            return failure(aero, relay: aero.code == .functionLimit && aero.message.contains("invocations already"))
        }
    }

    static func failure(_ error: AeroError, relay: Bool) -> Response {
        var response = json(.object(["code": .string(error.code.rawValue), "message": .string(error.message), "error": .string(error.message)]),
                            status: HTTPErrors.status(of: error.code))
        if relay { response.headers[HTTPField.Name("x-relay-error")!] = "true" }
        return response
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status) -> Response { HTTPJSON.response(value, status: status) }

    // MARK: rpc

    static func rpc(_ request: Request, _ name: String, get: Bool, _ service: FunctionService, _ keys: KeyChecker) async -> Response {
        do {
            let caller = try keys.caller(request)
            guard let (version, compiled) = try service.load(name), let parameters = version.rpc else {
                return missing(name, details: "no function \(name) is deployed as an rpc")
            }
            let args: [String: JSONValue]
            if get {
                args = try queryArguments(request.uri.query ?? "", parameters, name)
            } else {
                var request = request
                let body = try await request.collectBody(upTo: version.limits.requestBytes)
                if body.readableBytes == 0 {
                    args = [:]
                } else {
                    guard case .object(let o) = try JSON.parse(Array(body.readableBytesView)) else {
                        throw AeroError(.queryInvalid, "rpc arguments must be a JSON object")
                    }
                    args = o
                }
            }
            let given = Set(args.keys)
            guard given == Set(parameters.map(\.name)) else {
                return missing(name, details: "declared parameters: \(parameters.map { "\($0.name) \($0.kind.rawValue)" }.joined(separator: ", ")); given: \(given.sorted().joined(separator: ", "))",
                               signature: given.sorted())
            }
            for p in parameters { try check(args[p.name] ?? .null, p) }
            let encoded = JSON.encode(.object(args))
            let input = FunctionRequest(method: "POST", path: "", query: "", headers: request.headers.map { ($0.name.rawName, $0.value) },
                                        body: encoded, caller: caller, args: encoded)
            let out = try await service.invoke(version, compiled, input, data: service.dataAccess(caller))
            var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", HTTPJSON.lsnHeader: String(service.database.snapshot().lsn)]
            if (200..<300).contains(out.status) {
                for (n, v) in out.headers where n.lowercased() != "content-type" {
                    if let field = HTTPField.Name(n) { headers[field] = v }
                }
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: out.body)))
            }
            // A failure the function answered itself: PostgREST's shape (P0001 is RAISE EXCEPTION's code).
            let message: JSONValue
            if case .object(var o)? = try? JSON.parse(out.body), o["message"] != nil {
                if o["code"] == nil { o["code"] = .string("P0001") }
                for key in ["details", "hint"] where o[key] == nil { o[key] = .null }
                message = .object(o)
            } else {
                message = .object(["code": .string("P0001"), "message": .string(String(decoding: out.body.prefix(4096), as: UTF8.self)),
                                   "details": .null, "hint": .null])
            }
            return HTTPJSON.response(message, status: HTTPResponse.Status(code: out.status >= 400 ? out.status : 400))
        } catch {
            return RESTError.response(error)
        }
    }

    static func missing(_ name: String, details: String, signature: [String]? = nil) -> Response {
        let args = signature.map { "(\($0.joined(separator: ", ")))" } ?? ""
        return RESTError.response(code: "PGRST202", message: "Could not find the function public.\(name)\(args) in the schema cache",
                                  details: details, status: .notFound)
    }

    /// GET arguments: each declared parameter from the query string, read as its type.
    static func queryArguments(_ query: String, _ parameters: [RPCParameter], _ name: String) throws -> [String: JSONValue] {
        var args: [String: JSONValue] = [:]
        for (key, text) in PostgRESTQuery.decodePairs(query) where !["select", "order", "limit", "offset"].contains(key) {
            guard let p = parameters.first(where: { $0.name == key }) else { args[key] = .string(text); continue }
            switch p.kind {
            case .int:
                guard case .value(let n) = ClientInteger.read(Substring(text)), n > -Int.max, n < Int.max else {
                    throw AeroError(.typeMismatch, "invalid input syntax for type bigint: \"\(text.prefix(40))\" (argument \(key))")
                }
                args[key] = .int(Int64(n))
            case .float:
                guard let d = Double(text), d.isFinite else { throw AeroError(.typeMismatch, "invalid input syntax for type double precision: \"\(text.prefix(40))\" (argument \(key))") }
                args[key] = .float(d)
            case .bool:
                guard text == "true" || text == "false" else { throw AeroError(.typeMismatch, "invalid input syntax for type boolean: \"\(text.prefix(40))\" (argument \(key))") }
                args[key] = .bool(text == "true")
            case .text: args[key] = .string(text)
            case .json: args[key] = try JSON.parse(Array(text.utf8))
            }
        }
        return args
    }

    static func check(_ value: JSONValue, _ p: RPCParameter) throws {
        let ok: Bool
        switch (p.kind, value) {
        case (.int, .int), (.float, .int), (.float, .float), (.text, .string), (.bool, .bool), (.json, _): ok = true
        case (_, .null): ok = true
        default: ok = false
        }
        guard ok else {
            throw AeroError(.typeMismatch, "argument \(p.name) must be of type \(p.kind.rawValue), not \(JSON.encodeString(value).prefix(40))")
        }
    }

    // MARK: Admin

    static func addAdminRoutes(_ admin: RouterGroup<AeroRequestContext>, _ service: FunctionService, _ keys: KeyChecker) {
        admin.get("functions") { request, _ in
            try await AdminAPI.guarded(request, keys) {
                let snapshot = service.database.snapshot()
                let items = try FunctionStore.list(snapshot).map { $0.version.json(active: true) }
                return HTTPJSON.response(.object(["functions": .array(items)]), lsn: snapshot.lsn)
            }
        }
        admin.post("functions") { request, _ in
            try await AdminAPI.guarded(request, keys) {
                let (v, lsn) = try await service.deploy(try await HTTPJSON.body(request))
                return HTTPJSON.response(v.json(active: true), status: .created, lsn: lsn)
            }
        }
        admin.get("functions/:name") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let name = try context.parameters.require("name")
                let snapshot = service.database.snapshot()
                guard let active = try FunctionStore.activeVersion(name, snapshot) else { throw FunctionStore.notFound(name) }
                let versions = try FunctionStore.allVersions(name, snapshot).map { $0.json(active: $0.version == active.version) }
                var body = active.json(active: true)
                if case .object(var o) = body { o["versions"] = .array(versions); body = .object(o) }
                return HTTPJSON.response(body, lsn: snapshot.lsn)
            }
        }
        admin.delete("functions/:name") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let lsn = try await FunctionStore.delete(try context.parameters.require("name"), database: service.database)
                return HTTPJSON.response(.object(["deleted": .bool(true), "lsn": .int(Int64(lsn))]), lsn: lsn)
            }
        }
        admin.post("functions/:name/rollback") { request, context in
            try await AdminAPI.guarded(request, keys) {
                var version: Int?
                if let body = try await HTTPJSON.optionalBody(request), let value = body["version"], !value.isNull {
                    guard case .int(let n) = value, let v = Int(exactly: n), v > 0 else {
                        throw AeroError(.functionInvalid, "version must be a positive integer")
                    }
                    version = v
                }
                let (v, lsn) = try await FunctionStore.rollback(try context.parameters.require("name"), to: version, database: service.database)
                return HTTPJSON.response(v.json(active: true), lsn: lsn)
            }
        }
        admin.get("functions/:name/logs") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let name = try context.parameters.require("name")
                let q = AuthAPI.query(request)
                let limit = try q["limit"].map { text -> Int in
                    guard case .value(let n) = ClientInteger.read(Substring(text)), n > 0 else {
                        throw AeroError(.requestInvalid, "limit must be a positive integer")
                    }
                    return min(n, FunctionRuntimeLimits.logLinesPerFunctionMax)
                } ?? 50
                let iso = ISO8601DateFormatter()
                iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                let lines = service.logs.recent(name, limit: limit).map { e -> JSONValue in
                    .object(["at": .string(iso.string(from: e.at)), "version": .int(Int64(e.version)),
                             "level": .string(e.line.level), "message": .string(e.line.message)])
                }
                return HTTPJSON.response(.object(["function": .string(name), "logs": .array(lines)]))
            }
        }
        // Changes a database trigger could not deliver (FunctionTriggers), oldest first.
        admin.get("functions/:name/dead-letters") { request, context in
            try await AdminAPI.guarded(request, keys) {
                let name = try context.parameters.require("name")
                let snapshot = service.database.snapshot()
                let rows = try FunctionTriggers.listDeadLetters(name, snapshot, limit: FunctionTriggers.deadLettersKept)
                return HTTPJSON.response(.object(["function": .string(name), "dead_letters": .array(rows.map { .object($0) }),
                                                  "cursor": (try FunctionTriggers.cursor(name, snapshot)).map { .int(Int64($0)) } ?? .null]),
                                         lsn: snapshot.lsn)
            }
        }
    }
}
