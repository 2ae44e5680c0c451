// Issue 19 (REST request path): the cheaper log line, redaction check and metrics series give the
// same results as the code they replaced. The replaced code is kept here as the reference.

import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import Testing
@testable import BaaS

@Suite struct RequestPathCostTests {
    /// The handler's line before issue 19: a dictionary merge, JSON values, `JSON.encode`.
    static func referenceLine(_ fields: [(key: String, value: String)]) -> [UInt8] {
        var object: [String: JSONValue] = [:]
        for (key, value) in fields { object[key] = .string(value) }
        var text = JSON.encode(.object(object))
        text.append(0x0A)
        return text
    }

    @Test func logLineHasTheBytesOfTheDictionaryEncoding() throws {
        let hostile = ["", "a\"b", "back\\slash", "tab\there", "nl\nx", "\u{01}\u{1F}", "é ü 漢字 🙂", "{\"json\":1}", "ts", "msg"]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            var fields: [(key: String, value: String)] = [("ts", "2026-12-04T18:00:00.1+00:00"), ("level", "info"),
                                                          ("msg", "request"), ("label", "aerodb")]
            for _ in 0..<Int.random(in: 0...8, using: &generator) {
                let key = hostile.randomElement(using: &generator)! + (Bool.random(using: &generator) ? "" : "\(round % 3)")
                fields.append((key, hostile.randomElement(using: &generator)! + String(Int.random(in: 0...99, using: &generator))))
            }
            let line = LogLine.encode(fields)
            #expect(line == Self.referenceLine(fields), "\(fields)")
            // One JSON object per line, and the later of two equal keys wins.
            let parsed = try JSON.parse(Array(line.dropLast()))
            if let last = fields.last { #expect(parsed[last.key]?.stringValue == last.value) }
        }
    }

    /// `decodePairs` before its ASCII byte split: Characters split, kept as the reference.
    static func referencePairs(_ raw: String) -> [(String, String)] {
        raw.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (PostgRESTQuery.formDecode(parts[0]), parts.count > 1 ? PostgRESTQuery.formDecode(parts[1]) : "")
        }
    }

    @Test func queryPairsSplitAsTheCharacterSplit() {
        let pieces = ["&", "&", "=", "=", "select", "*", "id", "eq.k4242", "a+b", "%28", "%2", "%zz", "\r\n", "\r", "\n", "", " ",
                      "or=(a.eq.1,b.eq.2)", "é", "&\u{301}", "=\u{301}", "漢", "🙂", "%C3%A9", "\u{0}"]
        var generator = SystemRandomNumberGenerator()
        var samples = ["", "&", "=", "&&", "==", "a=", "=b", "a=b=c", "select=*&id=eq.k4242", "\r\n=&\r\n"]
        for _ in 0..<3_000 {
            samples.append((0..<Int.random(in: 1...10, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined())
        }
        for raw in samples {
            let got = PostgRESTQuery.decodePairs(raw), want = Self.referencePairs(raw)
            #expect(got.map(\.0) == want.map(\.0) && got.map(\.1) == want.map(\.1), "\(Array(raw.unicodeScalars))")
        }
    }

    @Test func logTimestampIsTimestampFormat() {
        var generator = SystemRandomNumberGenerator()
        var samples: [Int64] = [0, 1, 999_999, 1_000_000, -1, -1_000_000, -999_999, 1_764_870_400_000_000, 1_764_870_400_120_000,
                                253_402_300_799_999_999, -62_135_596_800_000_000]
        for _ in 0..<5_000 { samples.append(Int64.random(in: -62_135_596_800_000_000...253_402_300_799_999_999, using: &generator)) }
        for _ in 0..<1_000 { samples.append(Int64.random(in: 0...4_000_000_000, using: &generator) * 1_000) }  // whole milliseconds
        for micros in samples {
            #expect(LogLine.timestamp(micros) == Timestamp.format(micros), "\(micros)")
        }
    }

    @Test func logLineIsWrittenWholeBeforeWriteReturns() throws {
        let path = NSTemporaryDirectory() + "aerodb-logline-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        try #require(fd >= 0)
        let big = LogLine.encode([("msg", String(repeating: "x", count: 300_000)), ("level", "info")])
        LogLine.write(big, to: fd)
        LogLine.write(LogLine.encode([("msg", "second")]), to: fd)
        close(fd)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2 && Array(text.utf8).count == big.count + 17)
        #expect(try JSON.parse(String(lines[1]))["msg"]?.stringValue == "second")
    }

    /// `RequestRedaction.query` before issue 19 (every part through Foundation's decoding).
    static func referenceRedaction(path: String, query: String?) -> String {
        guard let query, !query.isEmpty else { return "" }
        if RequestRedaction.secretQueryPaths.contains(path) { return RequestRedaction.redacted }
        var changed = false
        let parts = query.split(separator: "&", omittingEmptySubsequences: false).map { part -> Substring in
            guard let equals = part.firstIndex(of: "="), RequestRedaction.isSecret(part[..<equals]) else { return part }
            changed = true
            return part[...equals] + RequestRedaction.redacted
        }
        return changed ? parts.joined(separator: "&") : query
    }

    @Test func redactionFastCheckAnswersAsTheFullOne() {
        let names = ["select", "id", "apikey", "APIKEY", "ApiKey", "api%6Bey", "%61pikey", "api+key", " apikey", "apikey ",
                     "token", "x-amz-signature", "X-Amz-Signature", "provider_refresh_token", "provider_refresh_tokens",
                     "signature", "sig", "pass%77ord", "tok%", "%zz", "é", "apikéy", "order", "", "a=b"]
        let values = ["1", "eq.k4242", "", "x=y", "%41", "secret value", "*"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3_000 {
            var parts: [String] = []
            for _ in 0..<Int.random(in: 1...5, using: &generator) {
                let name = names.randomElement(using: &generator)!
                parts.append(Bool.random(using: &generator) && Int.random(in: 0...5, using: &generator) == 0
                             ? name : name + "=" + values.randomElement(using: &generator)!)
            }
            let query = parts.joined(separator: "&")
            #expect(RequestRedaction.query(path: "/rest/v1/items", query: query) == Self.referenceRedaction(path: "/rest/v1/items", query: query),
                    "\(query)")
        }
        // Every secret name in random case, and one byte changed, cut or added: the in-place
        // comparison answers as the Foundation path (percent-decoding, lowercasing, trimming).
        for name in RequestRedaction.secretParameterNames {
            #expect(name.utf8.allSatisfy { $0 < 0x80 && !($0 >= 0x41 && $0 <= 0x5A) }, "\(name)")  // lowercase ASCII
            for _ in 0..<20 {
                var bytes = Array(name.utf8).map { Bool.random(using: &generator) && $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
                switch Int.random(in: 0...3, using: &generator) {
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0x21...0x7E, using: &generator)
                case 1: bytes.removeLast()
                case 2: bytes.append(UInt8.random(in: 0x21...0x7E, using: &generator))
                default: break
                }
                let fast = bytes.withUnsafeBufferPointer { RequestRedaction.isSecret($0) }
                #expect(fast == RequestRedaction.isSecret(Substring(String(decoding: bytes, as: UTF8.self))), "\(bytes)")
            }
        }
        #expect(RequestRedaction.query(path: "/rest/v1/items", query: "select=*&id=eq.k4242") == "select=*&id=eq.k4242")
        #expect(RequestRedaction.query(path: "/rest/v1/items", query: "select=*&ApiKey=K&x") == "select=*&ApiKey=(redacted)&x")
        #expect(RequestRedaction.query(path: "/rest/v1/items", query: "%61pikey=K") == "%61pikey=(redacted)")
    }

    /// `Prefer`'s parse before issue 19's in-place one: split, map, a String per part. What it
    /// decided, said as the answer's `Preference-Applied` (read and write) plus the fields a
    /// write reads, or the PGRST122 details it refused with.
    static func referencePrefer(_ values: [String]) -> String {
        var returnMode: String?, countName: String?, resolution: String?, missingDefault = false
        var strict = false, handlingGiven = false, txCommit = false
        var invalid: [String] = []
        var most: Int?
        func trimmed(_ text: Substring) -> Substring {  // the old Substring.trimmingSpacesAndTabs
            var s = text
            while s.first == " " || s.first == "\t" { s = s.dropFirst() }
            while s.last == " " || s.last == "\t" { s = s.dropLast() }
            return s
        }
        for value in values {
            for item in value.split(separator: ",").map(trimmed) where !item.isEmpty {
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let key = parts[0], arg = parts.count == 2 ? parts[1] : ""
                switch (key, arg) {
                case ("return", "minimal"), ("return", "representation"), ("return", "headers-only"): returnMode = arg
                case ("count", "exact"), ("count", "planned"), ("count", "estimated"): countName = arg
                case ("resolution", "merge-duplicates"), ("resolution", "ignore-duplicates"): resolution = arg
                case ("missing", "default"): missingDefault = true
                case ("handling", "strict"), ("handling", "lenient"):
                    strict = arg == "strict"
                    handlingGiven = true
                case ("max-affected", _):
                    guard case .value(let n) = ClientInteger.read(Substring(arg)), Prefer.maxAffectedRange.contains(n) else {
                        invalid.append(String(item.prefix(64)))
                        continue
                    }
                    most = n
                case ("tx", "commit"): txCommit = true
                default: invalid.append(String(item.prefix(64)))
                }
            }
        }
        if strict, !invalid.isEmpty { return "PGRST122 Invalid preferences: " + invalid.prefix(8).joined(separator: ", ") }
        let maxAffected = strict ? most : nil
        func applied(read: Bool) -> String {
            var out: [String] = []
            if !read, let returnMode { out.append("return=" + returnMode) }
            if let countName { out.append("count=" + countName) }
            if !read, let resolution { out.append("resolution=" + resolution) }
            if !read, missingDefault { out.append("missing=default") }
            if handlingGiven { out.append("handling=" + (strict ? "strict" : "lenient")) }
            if !read, let maxAffected { out.append("max-affected=\(maxAffected)") }
            if txCommit { out.append("tx=commit") }
            return out.joined(separator: ", ")
        }
        return "read[\(applied(read: true))] write[\(applied(read: false))] return=\(returnMode ?? "-") count=\(countName != nil) "
            + "resolution=\(resolution ?? "-") missing=\(missingDefault) strict=\(strict) max=\(maxAffected.map(String.init) ?? "-")"
    }

    static func describe(_ prefer: Prefer) -> String {
        func applied(read: Bool) -> String {
            var headers = HTTPFields()
            prefer.applied(read: read, into: &headers)
            return headers[Preferences.appliedHeader] ?? ""
        }
        return "read[\(applied(read: true))] write[\(applied(read: false))] return=\(prefer.returnMode?.rawValue ?? "-") count=\(prefer.count) "
            + "resolution=\(prefer.resolution ?? "-") missing=\(prefer.missingDefault) strict=\(prefer.strict) max=\(prefer.maxAffected.map(String.init) ?? "-")"
    }

    @Test func preferReadInPlaceDecidesAsTheSplitParse() throws {
        let tokens = ["return", "minimal", "representation", "headers-only", "count", "exact", "planned", "estimated",
                      "resolution", "merge-duplicates", "ignore-duplicates", "missing", "default", "handling", "strict",
                      "lenient", "max-affected", "3", "0", "-1", "x", "99999999999999999999", "tx", "commit", "rollback",
                      "=", "==", ",", ",", ",", " ", "\t", "é", "e\u{301}", "\u{301}", ", ", " ,", "=\u{301}", ",\u{301}",
                      String(repeating: "y", count: 70)]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<4_000 {
            var values: [String] = []
            for _ in 0..<Int.random(in: 1...2, using: &generator) {
                var text = ""
                for _ in 0..<Int.random(in: 0...12, using: &generator) { text += tokens.randomElement(using: &generator)! }
                // Half the rounds: well-formed items (key=arg), as clients send them.
                if round % 2 == 0 {
                    text = (0..<Int.random(in: 1...4, using: &generator)).map { _ in
                        tokens.randomElement(using: &generator)! + "=" + tokens.randomElement(using: &generator)!
                    }.joined(separator: Bool.random(using: &generator) ? "," : ", ")
                }
                values.append(text)
            }
            var headers = HTTPFields()
            for value in values { headers.append(HTTPField(name: Prefer.header, value: value)) }
            let sent = headers[values: Prefer.header]  // as HTTPFields keeps them
            let got: String
            do {
                got = Self.describe(try Prefer(headers))
            } catch let failure as PostgRESTFailure {
                got = "\(failure.code) \(failure.details ?? "")"
            }
            #expect(got == Self.referencePrefer(sent), "\(sent)")
        }
        // Fixed lines, each also decided by the reference: tabs and spaces around items, keys and
        // arguments, empty items, and the same items on a non-ASCII line (the Character path).
        for line in ["\treturn=minimal\t", " return=minimal ,\tcount=exact \t", "handling=strict,\t=x",
                     "handling=strict, return =minimal", "handling=strict,return= minimal", ",,\t,return=headers-only,",
                     "handling=strict,\tmax-affected=2\t", "count=exact\t,\té", "é,\treturn=minimal\t,handling=lenient"] {
            var headers = HTTPFields()
            headers[Prefer.header] = line
            let got: String
            do {
                got = Self.describe(try Prefer(headers))
            } catch let failure as PostgRESTFailure {
                got = "\(failure.code) \(failure.details ?? "")"
            }
            #expect(got == Self.referencePrefer([line]), "\(line)")
        }
        let typical = try Prefer([Prefer.header: "return=representation"])
        #expect(typical.returnRepresentation && !typical.count && typical.resolution == nil && !typical.strict)
    }

    @Test func formDecodingUnchangedWithAndWithoutEscapes() {
        let pairs = PostgRESTQuery.decodePairs("select=*&id=eq.k4242&name=eq.a+b&q=%2Bx%20y&bare&order=id.desc")
        #expect(pairs.map(\.0) == ["select", "id", "name", "q", "bare", "order"])
        #expect(pairs.map(\.1) == ["*", "eq.k4242", "eq.a b", "+x y", "", "id.desc"])
    }

    @Test func requestSeriesCountEveryRequestOnce() {
        let metrics = NodeMetrics()
        for _ in 0..<3 { metrics.recordRequest(method: "GET", route: "/rest/v1/:table", status: 200, elapsed: .microseconds(120)) }
        metrics.recordRequest(method: "GET", route: "/rest/v1/:table", status: 404, elapsed: .microseconds(80))
        metrics.recordRequest(method: "BREW", route: nil, status: 999, elapsed: .milliseconds(3))
        var out: [UInt8] = []
        metrics.registry.emit(into: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.contains(#"aerodb_http_requests_total{method="GET",route="/rest/v1/:table",status="200"} 3"#), "\(text)")
        #expect(text.contains(#"aerodb_http_requests_total{method="GET",route="/rest/v1/:table",status="404"} 1"#))
        #expect(text.contains(#"aerodb_http_requests_total{method="other",route="unmatched",status="other"} 1"#))
        #expect(text.contains(#"aerodb_http_request_duration_seconds_count{method="GET",route="/rest/v1/:table"} 4"#))
    }

    @Test func signedValueMemoAnswersAsTheHMACAndStaysBounded() {
        let key = SecretDomain.clientAddress.key(Array("cluster secret of the test".utf8))
        let memo = SignedValueMemo(key: key)
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "127.0.0.1"] {
            #expect(memo.sign(ip) == SignedHeaderValue.sign(ip, key: key))
            #expect(memo.verify(memo.sign(ip)) == ip)
            #expect(memo.verify(SignedHeaderValue.sign(ip, key: key)) == SignedHeaderValue.verify(SignedHeaderValue.sign(ip, key: key), key: key))
        }
        let held = memo.count
        // Forged or foreign-key texts never verify and are never kept.
        let other = SecretDomain.forwardedHost.key(Array("cluster secret of the test".utf8))
        for i in 0..<100 {
            #expect(memo.verify(SignedHeaderValue.sign("127.0.0.\(i)", key: other)) == nil)
            #expect(memo.verify("127.0.0.\(i);AAAA") == nil)
        }
        #expect(memo.count == held)
        // A long value is signed correctly and not kept.
        let long = String(repeating: "h", count: SignedValueMemo.textBytesMax + 1)
        #expect(memo.sign(long) == SignedHeaderValue.sign(long, key: key))
        #expect(memo.count == held)
        // Many distinct values: at most two generations are held, and values in use survive.
        for i in 0..<(SignedValueMemo.entriesMax * 5) {
            #expect(memo.sign("host-\(i)") == SignedHeaderValue.sign("host-\(i)", key: key))
            _ = memo.sign("127.0.0.1")
        }
        #expect(memo.count <= 2 * SignedValueMemo.entriesMax * 2)
        #expect(memo.sign("127.0.0.1") == SignedHeaderValue.sign("127.0.0.1", key: key))
    }

    /// `LogLine.requestLine` (ten fixed keys in their sorted order, the metadata merged in) writes
    /// the bytes of `encode` of the fields in the handler's order of precedence, whatever the
    /// metadata holds: keys equal to fixed ones (the metadata beats request_id, ts, level, msg and
    /// label, and loses to the request's own fields), keys sorting between them, hostile text.
    @Test func requestLineHasTheBytesOfTheGeneralEncoding() throws {
        let keys = ["hb.request.id", "request_id", "ts", "level", "msg", "label", "method", "ms", "path", "query", "status",
                    "a", "zz", "m", "mt", "pat", "label2", "", "é", "\u{01}", "Status"]
        let hostile = ["", "a\"b", "back\\slash", "nl\nx", "\u{01}\u{1F}", "é 漢字 🙂", "0.123", "x"]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            var metadata: [String: String] = [:]
            for _ in 0..<Int.random(in: 0...5, using: &generator) {
                metadata[keys.randomElement(using: &generator)!] = hostile.randomElement(using: &generator)!
            }
            let pairs = metadata.map { (key: $0.key, value: $0.value) }
            let line = RequestLine(method: ["GET", "POST", "a\"b"].randomElement(using: &generator)!,
                                   path: hostile.randomElement(using: &generator)!, query: hostile.randomElement(using: &generator)!,
                                   status: Int.random(in: 100...599, using: &generator),
                                   millis: Double.random(in: 0...2_000, using: &generator))
            let id: String? = Bool.random(using: &generator) ? nil : hostile.randomElement(using: &generator)!
            let ts = "2026-12-05T08:00:00.12+00:00"
            var fields: [(key: String, value: String)] = []
            if let id { fields.append(("request_id", id)) }
            fields += [("ts", ts), ("level", "info"), ("msg", "request"), ("label", "aerodb")]
            fields += pairs
            fields += line.fields
            let got = LogLine.requestLine(line, requestID: id, ts: ts, level: "info", label: "aerodb", metadata: pairs)
            #expect(got == LogLine.encode(fields), "\(fields)")
            #expect(got == Self.referenceLine(fields), "\(fields)")
        }
    }

    /// Fresh request ids come from a pool of random bytes refilled by one system call: across
    /// refills (4,096 bytes = 256 ids) every id is 32 lowercase hex digits, accepted as a
    /// client's id would be, and none repeats.
    @Test func freshRequestIDsAreDistinctHexAcrossRefills() {
        var seen = Set<String>()
        for _ in 0..<2_000 {
            let id = RequestID.generate()
            #expect(id.utf8.count == 32 && id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }, "\(id)")
            #expect(RequestID.accept(id) == id)
            seen.insert(id)
        }
        #expect(seen.count == 2_000)
    }

    private struct OneNode: ClusterView {
        let nodeID = "n1"
        let startedMicros: Int64 = 0
        func primaryHTTP() -> String? { nil }
        func statusFields() async -> [String: JSONValue] { [:] }
        func dataRefusal() -> AeroError? { nil }
    }

    /// A REST read names its LSN's epoch from its own snapshot (`HTTPJSON.lsnFields`), so
    /// ClusterMiddleware leaves the answer as it is; the header is the one `stamped` adds to an
    /// answer naming only the LSN, before and after an epoch change.
    @Test func readLSNFieldsNameTheEpochAsTheClusterStamp() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-lsnfields-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        let cluster = ClusterMiddleware<AeroRequestContext>(cluster: OneNode(), database: db, secret: Array(repeating: 7, count: 32))
        _ = try await db.advanceEpoch(to: 1)
        _ = try await db.createCollection(.object(["name": .string("items"), "fields": .object(["id": .object(["type": .string("text")])])]))
        for epoch: UInt64 in [1, 3] {
            if epoch == 3 { _ = try await db.advanceEpoch(to: 3) }
            _ = try await db.commit([.insert(collection: "items", document: ["id": .string("k\(epoch)")])])
            let snapshot = db.snapshot()
            let fields = HTTPJSON.lsnFields(snapshot)
            let stamped = cluster.stamped(Response(status: .ok, headers: [HTTPJSON.lsnHeader: String(snapshot.lsn)]))
            #expect(fields[HTTPJSON.lsnHeader] == String(snapshot.lsn))
            #expect(fields[ClusterHTTP.lsnEpochHeader] == String(epoch))
            #expect(fields[ClusterHTTP.lsnEpochHeader] == stamped.headers[ClusterHTTP.lsnEpochHeader])
            let answer = Response(status: .ok, headers: fields)
            #expect(cluster.stamped(answer).headers == answer.headers)  // left as it is
        }
        await db.close()
    }
}
