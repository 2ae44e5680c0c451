// The `state` of an OAuth sign-in: everything the callback needs, carried by the browser and
// MAC'd, so any node of the cluster can finish a flow another node began (no pending-flow table
// to replicate or to grow: the flow's bound is its expiry).
//
// Layout (text): base64url(JSON payload) "." base64url(HMAC-SHA256(SecretDomain.oauthState key, payload bytes))
// Payload: {"v":1, "id": <flow id, 22 random chars>, "p": <provider>, "r": <redirect_to, allowed>,
//           "n": <nonce sent to the provider>, "e": <expiry, unix seconds>, "b": <redirect_uri sent to the provider>,
//           "c": <PKCE challenge>?, "m": <s256|plain>?, "u": <user id when linking>?}
// Invariants: the MAC is checked (constant time) before the payload is parsed; a state is at most
// `bytesMax`; past `e` it is refused; one flow id is consumed once (the callback commits a marker
// keyed by it in the sign-in's own transaction, AuthService+OAuth: a replayed state is refused).

import Crypto
import Foundation
import Kernel

struct OAuthState: Sendable, Equatable {
    let id: String
    let provider: String
    let redirectTo: String
    let nonce: String
    let expiresAt: Int64
    /// The redirect_uri the provider was given: the code exchange must repeat it, also when another
    /// node (the primary a replica forwards the callback to) finishes the flow.
    let callback: String
    var challenge: String?
    var challengeMethod: String?
    var linkUserID: String?

    /// A flow must come back from the provider within this long (GoTrue: 10 minutes).
    static let lifetimeSeconds: Int64 = 600
    /// A state text at most this long (the redirect is bounded by `redirectBytesMax`).
    static let bytesMax = 8_192
    /// `redirect_to` at most this long.
    static let redirectBytesMax = 2_048

    func encode(secret: [UInt8]) -> String {
        var o: [String: JSONValue] = ["v": .int(1), "id": .string(id), "p": .string(provider), "r": .string(redirectTo),
                                      "n": .string(nonce), "e": .int(expiresAt), "b": .string(callback)]
        if let challenge { o["c"] = .string(challenge) }
        if let challengeMethod { o["m"] = .string(challengeMethod) }
        if let linkUserID { o["u"] = .string(linkUserID) }
        let payload = JSON.encode(.object(o))
        let mac = HMAC<SHA256>.authenticationCode(for: payload, using: SecretDomain.oauthState.key(secret))
        return JWT.base64URL(payload) + "." + JWT.base64URL(Array(mac))
    }

    enum Refusal: Error, Equatable {
        case malformed, forged, expired
    }

    static func decode(_ text: String, secret: [UInt8], nowSeconds: Int64) throws(Refusal) -> OAuthState {
        guard text.utf8.count <= bytesMax else { throw .malformed }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = JWT.decodeBase64URL(parts[0]), let mac = JWT.decodeBase64URL(parts[1]) else {
            throw .malformed
        }
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: SecretDomain.oauthState.key(secret)) else {
            throw .forged
        }
        guard let o = try? JSON.parse(payload), o["v"] == .int(1), case .string(let id)? = o["id"], case .string(let provider)? = o["p"],
              case .string(let redirect)? = o["r"], case .string(let nonce)? = o["n"], case .int(let expires)? = o["e"], case .string(let callback)? = o["b"] else {
            throw .malformed
        }
        guard nowSeconds < expires else { throw .expired }
        return OAuthState(id: id, provider: provider, redirectTo: redirect, nonce: nonce, expiresAt: expires, callback: callback,
                          challenge: o["c"]?.stringValue, challengeMethod: o["m"]?.stringValue, linkUserID: o["u"]?.stringValue)
    }
}
