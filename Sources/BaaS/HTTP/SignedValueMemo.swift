// A bounded memory of header values a node signed or verified under one key (SignedHeaderValue:
// the client address and the forwarded host of write forwarding, ClientAddress.swift), so a
// replica forwarding writes for the same clients does not compute the same HMAC-SHA256 on every
// forward, nor the primary verify the same signed text again (issue 19: `SignedHeaderValue.sign`
// was 5% of a replica's CPU under forwarded POSTs).
//
// What it keeps: for signing, value -> `value;mac`; for verifying, the signed text that verified
// -> its value. Both are pure functions of the text and the key, and a memo belongs to one key
// (one middleware, whose secret never changes), so a hit answers exactly what the computation
// would. A text that did not verify is never kept (a client sending forged values costs an HMAC
// each time, as before, and fills nothing).
// Bound: two generations of at most `entriesMax` entries each (the current one, when full,
// becomes the previous one and the older is dropped; a hit in the previous one is copied
// forward); texts longer than `textBytesMax` are computed every time, never kept.

import Crypto
import Synchronization

final class SignedValueMemo: Sendable {
    /// Entries per generation (two generations: at most twice this many in memory).
    static let entriesMax = 512  // entries
    /// A value (or signed text) longer than this is never kept: entries stay small.
    static let textBytesMax = 256  // bytes

    private struct Generations {
        var current: [String: String] = [:]
        var previous: [String: String] = [:]
    }

    let key: SymmetricKey
    private let signed = Mutex(Generations())
    private let verified = Mutex(Generations())

    init(key: SymmetricKey) { self.key = key }

    /// `SignedHeaderValue.sign(value, key: key)`.
    func sign(_ value: String) -> String {
        guard value.utf8.count <= Self.textBytesMax else { return SignedHeaderValue.sign(value, key: key) }
        if let hit = Self.lookup(value, in: signed) { return hit }
        let text = SignedHeaderValue.sign(value, key: key)
        signed.withLock { Self.insert(value, text, into: &$0) }
        return text
    }

    /// `SignedHeaderValue.verify(text, key: key)`.
    func verify(_ text: String) -> String? {
        guard text.utf8.count <= Self.textBytesMax else { return SignedHeaderValue.verify(text, key: key) }
        if let hit = Self.lookup(text, in: verified) { return hit }
        guard let value = SignedHeaderValue.verify(text, key: key) else { return nil }
        verified.withLock { Self.insert(text, value, into: &$0) }
        return value
    }

    private static func lookup(_ key: String, in state: borrowing Mutex<Generations>) -> String? {
        state.withLock { g in
            if let hit = g.current[key] { return hit }
            guard let old = g.previous[key] else { return nil }
            insert(key, old, into: &g)
            return old
        }
    }

    private static func insert(_ key: String, _ value: String, into g: inout Generations) {
        if g.current.count >= entriesMax {
            g.previous = g.current
            g.current = [:]
        }
        g.current[key] = value
    }

    var count: Int { signed.withLock { $0.current.count + $0.previous.count } + verified.withLock { $0.current.count + $0.previous.count } }
}
