// The `Prefer` request header (PostgREST "Prefer header"): one comma-joined list, e.g.
//   Prefer: return=representation,count=exact,handling=strict,max-affected=1
// Understood: return=minimal|representation|headers-only, count=exact|planned|estimated (all
// exact here), resolution=merge-duplicates|ignore-duplicates, missing=default,
// handling=lenient|strict, max-affected=<n>, tx=commit. Anything else (tx=rollback and
// timezone=... included: not built) is ignored, unless handling=strict: then the request is
// refused, 400 PGRST122, before any work. max-affected applies with handling=strict to PATCH
// and DELETE: a write that would change more rows is refused whole, 400 PGRST124, nothing
// changed (MaxAffected). `Preference-Applied` lists what was honored, as PostgREST sends it.

import HTTPTypes
import Kernel
import Synchronization

struct Prefer {
    enum Return: String { case minimal, representation, headersOnly = "headers-only" }

    var returnMode: Return?
    var count = false
    private var countName: String?
    var resolution: String?
    /// `missing=default`: a column a row lacks takes its declared default, not null.
    var missingDefault = false
    var strict = false
    private var handlingGiven = false
    /// `max-affected=<n>` with handling=strict (PostgREST ignores it when lenient).
    var maxAffected: Int?
    private var txCommit = false

    var returnRepresentation: Bool { returnMode == .representation }
    var headersOnly: Bool { returnMode == .headersOnly }

    static let header = HTTPField.Name("Prefer")!

    /// Largest `max-affected` (any integer from 0 up fits: the bound is the writer's own).
    static let maxAffectedRange = 0...Int.max

    /// Parses every `Prefer` line. Each item is read in place (a Substring of the header's text,
    /// compared with the names understood; a line of printable ASCII is split over its bytes):
    /// no array or String per item, which the old split/map/String parse made on every write
    /// (1.1-1.4% of the node's CPU per REST insert, perf, issue 19). Same items as the old
    /// Character-level split and trim (the old parse is kept in RequestPathCostTests and
    /// compared on random headers, ASCII and not).
    init(_ headers: HTTPFields) throws {
        var invalid: [String] = []
        var most: Int?
        for value in headers[values: Self.header] {
            if readPrintableASCII(value, invalid: &invalid, most: &most) { continue }
            var rest = Substring(value)
            while !rest.isEmpty {
                let comma = rest.firstIndex(of: ",") ?? rest.endIndex
                let item = rest[rest.startIndex..<comma].trimmingSpacesAndTabs()
                rest = comma == rest.endIndex ? rest[comma...] : rest[rest.index(after: comma)...]
                guard !item.isEmpty else { continue }
                let equals = item.firstIndex(of: "=")
                take(item, key: equals.map { item[..<$0] } ?? item, arg: equals.map { item[item.index(after: $0)...] } ?? "",
                     invalid: &invalid, most: &most)
            }
        }
        if strict, !invalid.isEmpty {
            throw PostgRESTFailure(code: "PGRST122", message: "Invalid preferences given with handling=strict",
                                   details: "Invalid preferences: " + invalid.prefix(8).joined(separator: ", "), hint: nil, status: 400)
        }
        if strict { maxAffected = most }
    }

    /// A header line of printable ASCII, tab and space only (what clients send): split at `,`,
    /// trimmed and split at the first `=` over its bytes. Each byte is then one Character, so the
    /// items, keys and arguments are those of the Character-level parse below. Any other line
    /// (false) is left to that parse.
    private mutating func readPrintableASCII(_ value: String, invalid: inout [String], most: inout Int?) -> Bool {
        let utf8 = value.utf8
        guard utf8.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) }) else { return false }
        var start = utf8.startIndex
        while start < utf8.endIndex {
            let comma = utf8[start...].firstIndex(of: UInt8(ascii: ",")) ?? utf8.endIndex
            var lower = start, upper = comma
            while lower < upper, utf8[lower] == 0x20 || utf8[lower] == 0x09 { lower = utf8.index(after: lower) }
            while lower < upper, utf8[utf8.index(before: upper)] == 0x20 || utf8[utf8.index(before: upper)] == 0x09 {
                upper = utf8.index(before: upper)
            }
            if lower < upper {
                let item = value[lower..<upper]
                if let equals = utf8[lower..<upper].firstIndex(of: UInt8(ascii: "=")) {
                    take(item, key: value[lower..<equals], arg: value[utf8.index(after: equals)..<upper], invalid: &invalid, most: &most)
                } else {
                    take(item, key: item, arg: "", invalid: &invalid, most: &most)
                }
            }
            start = comma == utf8.endIndex ? comma : utf8.index(after: comma)
        }
        return true
    }

    /// One item, `key` or `key=arg` split at its first `=` (`=`, `==`, `a=`: an empty key or
    /// argument, never a trap: the fuzzer's `Prefer: ==` once trapped an older split).
    private mutating func take(_ item: Substring, key: Substring, arg: Substring, invalid: inout [String], most: inout Int?) {
        switch key {
        case "return":
            switch arg {
            case "minimal": returnMode = .minimal
            case "representation": returnMode = .representation
            case "headers-only": returnMode = .headersOnly
            default: invalid.append(String(item.prefix(64)))
            }
        case "count":
            switch arg {
            case "exact": countName = "exact"
            case "planned": countName = "planned"
            case "estimated": countName = "estimated"
            default: invalid.append(String(item.prefix(64))); return
            }
            count = true
        case "resolution":
            switch arg {
            case "merge-duplicates": resolution = "merge-duplicates"
            case "ignore-duplicates": resolution = "ignore-duplicates"
            default: invalid.append(String(item.prefix(64)))
            }
        case "missing" where arg == "default": missingDefault = true
        case "handling" where arg == "strict" || arg == "lenient":
            strict = arg == "strict"
            handlingGiven = true
        case "max-affected":
            guard case .value(let n) = ClientInteger.read(arg), Self.maxAffectedRange.contains(n) else {
                invalid.append(String(item.prefix(64)))
                return
            }
            most = n
        case "tx" where arg == "commit": txCommit = true
        default: invalid.append(String(item.prefix(64)))
        }
    }

    /// `Preference-Applied`: the preferences this request honored (`read`: a GET or HEAD).
    func applied(read: Bool, into headers: inout HTTPFields) {
        var out: [String] = []
        if !read, let returnMode { out.append("return=" + returnMode.rawValue) }
        if let countName { out.append("count=" + countName) }
        if !read, let resolution { out.append("resolution=" + resolution) }
        if !read, missingDefault { out.append("missing=default") }
        if handlingGiven { out.append("handling=" + (strict ? "strict" : "lenient")) }
        if !read, let maxAffected { out.append("max-affected=\(maxAffected)") }
        if txCommit { out.append("tx=commit") }
        if !out.isEmpty { headers[Preferences.appliedHeader] = out.joined(separator: ", ") }
    }
}

enum Preferences {
    static let appliedHeader = HTTPField.Name("Preference-Applied")!

    /// A key value in a `Location` query string: percent-encodes what is not unreserved.
    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80, c.isLetter || c.isNumber || "-._~".contains(c) { out.append(c) } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }
}

/// `max-affected` (handling=strict) inside the transaction: the writer calls it for each change
/// under its lock, so a write that reaches more than `most` rows of `collection` is refused
/// whole (nothing logged or applied), even when rows matched after the request's own count.
final class MaxAffected: ChangeCheck {
    let most: Int
    let collection: String
    let next: (any ChangeCheck)?
    private let seen = Mutex(0)

    init(most: Int, collection: String, next: (any ChangeCheck)?) {
        self.most = most
        self.collection = collection
        self.next = next
    }

    static func failure(_ affected: Int?) -> PostgRESTFailure {
        PostgRESTFailure(code: "PGRST124", message: "Query result exceeds max-affected preference constraint",
                         details: affected.map { "The query affects \($0) rows" } ?? "The query affects more rows than allowed",
                         hint: nil, status: 400)
    }

    func check(_ change: DocumentChange) throws {
        try next?.check(change)
        guard change.collection == collection else { return }  // cascades are not the statement's rows
        let count = seen.withLock { n -> Int in n += 1; return n }
        if count > most { throw Self.failure(nil) }
    }
}

extension Substring {
    fileprivate func trimmingSpacesAndTabs() -> Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
