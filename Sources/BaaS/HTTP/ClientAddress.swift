// The client's address as every handler sees it (`context.clientIP`): the TCP peer, unless the
// request carries `X-AeroDB-Client-IP: <ip>;<mac>` that verifies, where the MAC is an
// HMAC-SHA256 of the address under the cluster secret: a write another node of the cluster
// forwarded here, on behalf of that client. A client cannot forge one, so per-IP rate limits
// and the audit log's "from where" survive forwarding.

import Crypto
import HTTPTypes
import Hummingbird
import Kernel

enum ClientAddress {
    static var header: HTTPField.Name { HTTPField.Name("X-AeroDB-Client-IP")! }

    static func sign(_ ip: String, secret: [UInt8]) -> String {
        ip + ";" + JWT.base64URL(Array(HMAC<SHA256>.authenticationCode(for: Array(ip.utf8), using: SymmetricKey(data: secret))))
    }

    /// The address in a signed header value, or nil when the MAC does not verify.
    static func verify(_ value: String, secret: [UInt8]) -> String? {
        guard let split = value.lastIndex(of: ";"), let mac = JWT.decodeBase64URL(value[value.index(after: split)...]) else { return nil }
        let ip = String(value[..<split])
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Array(ip.utf8), using: SymmetricKey(data: secret)) else { return nil }
        return ip
    }
}

public struct ClientAddressMiddleware<Context: ClientAddressContext>: RouterMiddleware {
    let secret: [UInt8]

    public init(secret: [UInt8]) { self.secret = secret }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.clientIP = request.headers[ClientAddress.header].flatMap { ClientAddress.verify($0, secret: secret) }
            ?? (context as? any RemoteAddressRequestContext)?.remoteAddress?.ipAddress
        return try await next(request, context)
    }

}
