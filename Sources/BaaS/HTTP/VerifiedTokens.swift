// A bounded memory of HS256 tokens this node already verified, so a client that sends the same
// API key or access token on every request (all Supabase clients do) does not pay for base64url
// decoding, two JSON parses and the HMAC on each one (REST GET by key spent ~12% of the node's
// CPU in JWT.verify, perf, issue 19).
//
// What it keeps: SHA-256(token) -> the verified claims. Keyed by the digest, not the text, so a
// lookup compares digests (no timing on the token's bytes) and memory per entry is fixed plus the
// claims. Only tokens whose header says HS256 and that verified with this checker's secret are
// kept: an ES256 token depends on a signing key that can be retired at any time, so it is always
// verified in full. A failed verification is never kept.
// What is still checked on every request, hit or miss: the expiry (`exp` against now), the role,
// and for a user token that its session still exists (KeyChecker.caller): a hit only skips work
// whose answer cannot change while the secret is the same, and the cache belongs to one
// KeyChecker, whose secret never changes.
// Bound: two generations of at most `verifiedTokensMax` entries each; when the current one is
// full it becomes the previous one and the older is dropped (tokens in use survive a turnover by
// being found in the previous generation and copied forward). Tokens longer than
// `verifiedTokenBytesMax` are not kept.

import Crypto
import Kernel
import Synchronization

final class VerifiedTokens: Sendable {
    /// Entries per generation (two generations: at most twice this many claims in memory).
    static let verifiedTokensMax = 1_024  // entries
    /// A token longer than this is verified every time, never kept (claims bounded per entry).
    static let verifiedTokenBytesMax = 4_096  // bytes

    private struct Generations {
        var current: [SHA256Digest: JSONValue] = [:]
        var previous: [SHA256Digest: JSONValue] = [:]
    }

    private let state = Mutex(Generations())

    /// The claims of `token` if it was verified before by this checker (expiry not checked here).
    func claims(_ token: String) -> JSONValue? {
        guard token.utf8.count <= Self.verifiedTokenBytesMax else { return nil }
        let digest = Self.digest(token)
        return state.withLock { g in
            if let hit = g.current[digest] { return hit }
            guard let old = g.previous[digest] else { return nil }
            Self.insert(digest, old, into: &g)
            return old
        }
    }

    /// Remembers the claims of a token that just verified as HS256 with this checker's secret.
    func remember(_ token: String, _ claims: JSONValue) {
        guard token.utf8.count <= Self.verifiedTokenBytesMax else { return }
        let digest = Self.digest(token)
        state.withLock { Self.insert(digest, claims, into: &$0) }
    }

    /// SHA-256 of the token's UTF-8 bytes, hashed in place (no copy of the token per request).
    static func digest(_ token: String) -> SHA256Digest {
        var token = token
        return token.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
    }

    private static func insert(_ digest: SHA256Digest, _ claims: JSONValue, into g: inout Generations) {
        if g.current.count >= verifiedTokensMax {
            g.previous = g.current
            g.current = [:]
        }
        g.current[digest] = claims
    }

    var count: Int { state.withLock { $0.current.count + $0.previous.count } }
}
