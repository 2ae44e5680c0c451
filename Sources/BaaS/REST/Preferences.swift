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

    init(_ headers: HTTPFields) throws {
        var invalid: [String] = []
        var most: Int?
        for value in headers[values: Self.header] {
            for item in value.split(separator: ",").map({ $0.trimmingSpacesAndTabs() }) where !item.isEmpty {
                // `=`, `==`, `a=`: never an empty split (the fuzzer's `Prefer: ==` once trapped here).
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let key = parts[0], arg = parts.count == 2 ? parts[1] : ""
                switch (key, arg) {
                case ("return", "minimal"), ("return", "representation"), ("return", "headers-only"):
                    returnMode = Return(rawValue: arg)
                case ("count", "exact"), ("count", "planned"), ("count", "estimated"):
                    count = true
                    countName = arg
                case ("resolution", "merge-duplicates"), ("resolution", "ignore-duplicates"): resolution = arg
                case ("missing", "default"): missingDefault = true
                case ("handling", "strict"), ("handling", "lenient"):
                    strict = arg == "strict"
                    handlingGiven = true
                case ("max-affected", _):
                    guard case .value(let n) = ClientInteger.read(Substring(arg)), Self.maxAffectedRange.contains(n) else {
                        invalid.append(String(item.prefix(64)))
                        continue
                    }
                    most = n
                case ("tx", "commit"): txCommit = true
                default: invalid.append(String(item.prefix(64)))
                }
            }
        }
        if strict, !invalid.isEmpty {
            throw PostgRESTFailure(code: "PGRST122", message: "Invalid preferences given with handling=strict",
                                   details: "Invalid preferences: " + invalid.prefix(8).joined(separator: ", "), hint: nil, status: 400)
        }
        if strict { maxAffected = most }
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
