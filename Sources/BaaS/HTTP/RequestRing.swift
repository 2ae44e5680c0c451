// The request ring: the node's most recent requests in memory, read at `GET /admin/v1/requests`
// (service key; the dashboard's Observability page). It holds what the stdout request log writes
// (RequestLog.swift), with the same redaction, and nothing more: time, request id, method, path,
// query, status, milliseconds. No header (keys, tokens) and no body is ever kept.
//
// Layout: a circular buffer of at most `entriesMax` records, oldest evicted first, also bounded
// in bytes (`bytesMax`, counted as each record's text plus a fixed overhead); a path longer than
// `pathBytesMax` or a query longer than `queryBytesMax` is cut (UTF-8 safe) and ends with "...".
// In memory only: a restart empties it; each node keeps its own (a forwarded write is in the
// ring of the replica that forwarded it and of the primary that served it).
//
// Invariants (OBS1 in docs/INVARIANTS.md):
// - the ring never holds more than `entriesMax` records or `bytesMax` bytes;
// - a query is stored exactly as the stdout log writes it (`RequestRedaction.query`): the whole
//   query of a `secretQueryPaths` path is `(redacted)`, and elsewhere the value of every
//   parameter named in `secretParameterNames` is `(redacted)`.

import Foundation
import Hummingbird
import Kernel
import Synchronization

/// What the request log (stdout and ring) may show of a request's query.
public enum RequestRedaction {
    /// Paths whose whole query is a secret: an email link's token, the realtime socket's `apikey`
    /// (a browser cannot send it as a header), an OAuth provider's authorization code.
    public static let secretQueryPaths: Set<String> = ["/auth/v1/verify", "/realtime/v1/websocket", "/auth/v1/callback"]
    /// Query parameters whose value is a secret on any path (compared lowercased, percent-decoded):
    /// keys, tokens (storage signed URLs carry `token`), S3 presigned-URL signatures and credentials.
    public static let secretParameterNames: Set<String> = [
        "apikey", "api_key", "token", "access_token", "refresh_token", "id_token", "provider_token",
        "provider_refresh_token", "password", "secret", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
        "signature",
    ]
    public static let redacted = "(redacted)"

    /// The query as the request log writes it.
    public static func query(path: String, query: String?) -> String {
        guard let query, !query.isEmpty else { return "" }
        if secretQueryPaths.contains(path) { return redacted }
        // Most queries name no secret parameter: say so without building a part list (every
        // request's log line passes here). `hasSecret` answers exactly as `isSecret` per part.
        guard hasSecret(query) else { return query }
        var changed = false
        let parts = query.split(separator: "&", omittingEmptySubsequences: false).map { part -> Substring in
            // A bare name (no "=") carries no value.
            guard let equals = part.firstIndex(of: "="), isSecret(part[..<equals]) else { return part }
            changed = true
            return part[...equals] + redacted
        }
        return changed ? parts.joined(separator: "&") : query
    }

    /// Whether some `&`-separated part of `query` has a secret name (`isSecret` of the text
    /// before its `=`; a bare name carries no value).
    static func hasSecret(_ query: String) -> Bool {
        var query = query
        return query.withUTF8 { bytes in
            var start = 0
            while start <= bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != UInt8(ascii: "&") { end += 1 }
                var equals = start
                while equals < end && bytes[equals] != UInt8(ascii: "=") { equals += 1 }
                if equals < end && isSecret(UnsafeBufferPointer(rebasing: bytes[start..<equals])) { return true }
                start = end + 1
            }
            return false
        }
    }

    /// The longest name in `secretParameterNames`, bytes.
    static let secretNameBytesMax = secretParameterNames.map(\.utf8.count).max() ?? 0

    /// The bytes of `secretParameterNames` (all lowercase ASCII), compared in place.
    static let secretNameBytes: [[UInt8]] = secretParameterNames.map { Array($0.utf8) }

    /// `isSecret` on a name's bytes: a name of plain ASCII (no `%`, `+`, space or control
    /// character: percent-decoding and trimming leave it as it is) is compared, lowercased byte
    /// by byte, with the names of the same length (no String and no hashing per query part: the
    /// String built from a lazily lowercased view cost ~1% of a GET by key, perf, issue 19); any
    /// other name goes through `isSecret(_: Substring)`.
    static func isSecret(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        var plain = true
        for b in name where b <= 0x20 || b >= 0x7F || b == UInt8(ascii: "%") || b == UInt8(ascii: "+") {
            plain = false
            break
        }
        guard plain else { return isSecret(Substring(String(decoding: name, as: UTF8.self))) }
        guard name.count <= secretNameBytesMax else { return false }
        candidates: for secret in secretNameBytes where secret.count == name.count {
            for i in 0..<name.count {
                let b = name[i]
                if (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) != secret[i] { continue candidates }
            }
            return true
        }
        return false
    }

    static func isSecret(_ name: Substring) -> Bool {
        let decoded = String(name).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(name)
        return secretParameterNames.contains(decoded.lowercased().trimmingCharacters(in: .whitespaces))
    }
}

public final class RequestRing: Sendable {
    public static let shared = RequestRing()

    /// Records kept (oldest dropped first): recent requests for a person looking, not an archive.
    public static let entriesMax = 1_000
    /// Bytes kept (each record's text plus `recordOverheadBytes`): bounds the ring whatever the paths.
    public static let bytesMax = 1 << 20
    /// Longest path kept in a record (bytes); longer ones are cut with "...".
    public static let pathBytesMax = 512
    /// Longest query kept in a record (bytes), after redaction; longer ones are cut with "...".
    public static let queryBytesMax = 1_024
    /// Fixed cost counted per record (timestamp, status, milliseconds, the struct itself), bytes.
    static let recordOverheadBytes = 64
    /// Records answered by `GET /admin/v1/requests` without `limit`.
    public static let listLimitDefault = 100

    public struct Record: Sendable, Equatable {
        public let micros: Int64
        public let requestID: String
        public let method: String
        public let path: String
        public let query: String
        public let status: Int
        public let millis: Double

        var bytes: Int { RequestRing.recordOverheadBytes + requestID.utf8.count + method.utf8.count + path.utf8.count + query.utf8.count }

        public var json: JSONValue {
            .object(["ts": .string(Timestamp.format(micros)), "request_id": .string(requestID), "method": .string(method),
                     "path": .string(path), "query": .string(query), "status": .int(Int64(status)), "ms": .float(millis)])
        }
    }

    /// Which records a reader wants (each bound checked by `Filter.parse`).
    public struct Filter: Sendable, Equatable {
        public var limit = RequestRing.listLimitDefault
        /// One status (`404`) or a class (`4xx`: `statusClass` 4).
        public var status: Int?
        public var statusClass: Int?
        public var pathPrefix: String?

        public init() {}

        func matches(_ r: Record) -> Bool {
            if let status, r.status != status { return false }
            if let statusClass, r.status / 100 != statusClass { return false }
            if let pathPrefix, !r.path.hasPrefix(pathPrefix) { return false }
            return true
        }

        /// `limit` 1...entriesMax; `status` 100...599 or `1xx`...`5xx`; `path_prefix` starting with "/", at most `pathBytesMax` bytes.
        public static func parse(limit: String?, status: String?, pathPrefix: String?) throws -> Filter {
            var filter = Filter()
            if let limit {
                guard let n = Int(limit), (1...RequestRing.entriesMax).contains(n) else {
                    throw AeroError(.requestInvalid, "limit must be an integer from 1 to \(RequestRing.entriesMax)")
                }
                filter.limit = n
            }
            if let status, !status.isEmpty {
                if status.count == 3, status.hasSuffix("xx"), let digit = Int(status.prefix(1)), (1...5).contains(digit) {
                    filter.statusClass = digit
                } else if let n = Int(status), (100...599).contains(n) {
                    filter.status = n
                } else {
                    throw AeroError(.requestInvalid, "status must be an HTTP status from 100 to 599 or a class 1xx...5xx")
                }
            }
            if let pathPrefix, !pathPrefix.isEmpty {
                guard pathPrefix.hasPrefix("/"), pathPrefix.utf8.count <= RequestRing.pathBytesMax else {
                    throw AeroError(.requestInvalid, "path_prefix must start with / and be at most \(RequestRing.pathBytesMax) bytes")
                }
                filter.pathPrefix = pathPrefix
            }
            return filter
        }
    }

    private struct State {
        var slots: [Record?] = Array(repeating: nil, count: RequestRing.entriesMax)
        var head = 0  // the oldest record's slot
        var count = 0
        var bytes = 0
        var recorded: Int64 = 0

        mutating func dropOldest() {
            guard count > 0, let old = slots[head] else { return }
            bytes -= old.bytes
            slots[head] = nil
            head = (head + 1) % slots.count
            count -= 1
        }

        mutating func append(_ r: Record) {
            while count > 0 && (count >= slots.count || bytes + r.bytes > RequestRing.bytesMax) { dropOldest() }
            slots[(head + count) % slots.count] = r
            count += 1
            bytes += r.bytes
            recorded &+= 1
        }
    }

    private let state = Mutex(State())

    public init() {}

    /// Keeps one request (the query already redacted by `RequestRedaction.query`); cuts long text.
    public func record(micros: Int64, requestID: String, method: String, path: String, query: String, status: Int, millis: Double) {
        let r = Record(micros: micros, requestID: String(requestID.prefix(RequestID.bytesMax)), method: Self.cut(method, 16),
                       path: Self.cut(path, Self.pathBytesMax), query: Self.cut(query, Self.queryBytesMax),
                       status: status, millis: millis)
        state.withLock { $0.append(r) }
    }

    /// Matching records, newest first, at most `filter.limit` (the scan is over at most `entriesMax`).
    public func records(_ filter: Filter = Filter()) -> [Record] {
        state.withLock { s in
            var out: [Record] = []
            var i = s.count - 1
            while i >= 0 && out.count < filter.limit {
                if let r = s.slots[(s.head + i) % s.slots.count], filter.matches(r) { out.append(r) }
                i -= 1
            }
            return out
        }
    }

    /// Records and bytes held now, and records kept since the node started.
    public var usage: (count: Int, bytes: Int, recorded: Int64) {
        state.withLock { ($0.count, $0.bytes, $0.recorded) }
    }

    static func cut(_ text: String, _ maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        // Cut on a character boundary: drop a trailing partial UTF-8 sequence (continuation bytes and their lead byte).
        var bytes = Array(text.utf8.prefix(maxBytes - 3))
        while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
        if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self) + "..."
    }

    /// `GET /admin/v1/requests?limit=&status=&path_prefix=` (service_role key): newest first.
    public static func register(on router: Router<AeroRequestContext>, keys: KeyChecker, ring: RequestRing = .shared) {
        router.get("/admin/v1/requests") { request, _ in
            do {
                try keys.requireServiceRole(request)
                let q = request.uri.queryParameters
                let filter = try Filter.parse(limit: q.get("limit"), status: q.get("status"), pathPrefix: q.get("path_prefix"))
                let usage = ring.usage
                return HTTPJSON.response(.object([
                    "entries": .array(ring.records(filter).map(\.json)),
                    "kept": .int(Int64(usage.count)), "bytes": .int(Int64(usage.bytes)), "recorded": .int(usage.recorded),
                    "entries_max": .int(Int64(entriesMax)), "bytes_max": .int(Int64(bytesMax)),
                ]))
            } catch {
                return HTTPErrors.response(error)
            }
        }
    }
}
