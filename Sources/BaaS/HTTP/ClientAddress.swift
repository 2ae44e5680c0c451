// The client's address as every handler sees it (`context.clientIP`, set by FrontMiddleware): the TCP peer, unless the
// request carries `X-AeroDB-Client-IP: <ip>;<mac>` that verifies: a write another node of the
// cluster forwarded here, on behalf of that client. A client cannot forge one, so per-IP rate
// limits and the audit log's "from where" survive forwarding.
//
// The MAC is HMAC-SHA256 of the address under the key of `SecretDomain.clientAddress` (derived
// from the cluster secret, never the secret itself: under the raw secret every JWT, the public
// anon key included, is an HMAC of its own `header.payload`, and so would sign a made-up
// address). Only a syntactically valid IPv4 or IPv6 address is accepted; the MAC is canonical
// base64url (JWT.decodeBase64URL).

import Crypto
import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

enum ClientAddress {
    static var header: HTTPField.Name { HTTPField.Name("X-AeroDB-Client-IP")! }

    static func sign(_ ip: String, secret: [UInt8]) -> String {
        sign(ip, key: SecretDomain.clientAddress.key(secret))
    }

    static func sign(_ ip: String, key: SymmetricKey) -> String { SignedHeaderValue.sign(ip, key: key) }

    /// The address in a signed header value, or nil when the MAC does not verify.
    static func verify(_ value: String, secret: [UInt8]) -> String? {
        verify(value, key: SecretDomain.clientAddress.key(secret))
    }

    static func verify(_ value: String, key: SymmetricKey) -> String? {
        guard let ip = SignedHeaderValue.verify(value, key: key), isIPAddress(ip) else { return nil }
        return ip
    }

    /// A literal IPv4 or IPv6 address (what a node ever signs: its TCP peer's address).
    static func isIPAddress(_ text: String) -> Bool {
        do {
            _ = try SocketAddress(ipAddress: text, port: 0)
            return true
        } catch {
            return false  // not an address literal: the only failure this parse has
        }
    }
}

/// A header value a node vouches for to another node of its cluster: `<value>;<mac>`, the MAC
/// HMAC-SHA256 of the value under the key of the header's own SecretDomain (never shared by two
/// headers: a value signed for one cannot be replayed as the other).
enum SignedHeaderValue {
    static func sign(_ value: String, key: SymmetricKey) -> String {
        value + ";" + JWT.base64URL(Array(HMAC<SHA256>.authenticationCode(for: Array(value.utf8), using: key)))
    }

    /// The value when the MAC verifies, else nil.
    static func verify(_ text: String, key: SymmetricKey) -> String? {
        guard let split = text.lastIndex(of: ";"), let mac = JWT.decodeBase64URL(text[text.index(after: split)...]) else { return nil }
        let value = String(text[..<split])
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Array(value.utf8), using: key) else { return nil }
        return value
    }
}

/// `X-AeroDB-Forwarded-Host`: the host a client addressed on the node that forwarded its request
/// (S3 SigV4 signs the host, S3API), signed under `SecretDomain.forwardedHost`. An unsigned or
/// forged value is ignored: a client cannot make a node check a signature against another host.
enum ForwardedHost {
    static var header: HTTPField.Name { HTTPField.Name("X-AeroDB-Forwarded-Host")! }
    static func sign(_ host: String, secret: [UInt8]) -> String { SignedHeaderValue.sign(host, key: SecretDomain.forwardedHost.key(secret)) }
    static func verify(_ value: String, secret: [UInt8]) -> String? { SignedHeaderValue.verify(value, key: SecretDomain.forwardedHost.key(secret)) }
}

/// Sets `context.clientIP` (FrontMiddleware): the verified forwarded address, else the TCP peer.
struct ClientAddressVerifier: Sendable {
    let key: SymmetricKey
    /// Signed addresses that verified before (SignedValueMemo.swift): a primary receiving the
    /// forwards of a replica verifies each client's address once, not on every write.
    let verified: SignedValueMemo

    init(secret: [UInt8]) {
        key = SecretDomain.clientAddress.key(secret)
        verified = SignedValueMemo(key: key)
    }

    func clientIP(_ request: Request, remote: SocketAddress?) -> String? {
        request.headers[ClientAddress.header].flatMap { text in
            verified.verify(text).flatMap { ClientAddress.isIPAddress($0) ? $0 : nil }
        }
            ?? remote?.ipAddress
    }
}
