// The HTTP side of OAuth: discovery (`<issuer>/.well-known/openid-configuration`), the JWKS,
// the code exchange at the token endpoint and the user endpoints, over async-http-client.
//
// Invariants: every call has a deadline (`requestMillis`) and a bounded answer (`bodyBytesMax`);
// a discovery document whose `issuer` is not the configured issuer is refused (OIDC Discovery
// §4.3); the cache holds one entry per issuer, at most `cacheEntriesMax` (the oldest goes), and an
// entry is refetched after `cacheSeconds`, or for an unknown `kid` when older than
// `refetchSeconds` (key rotation at the provider, without letting forged kids hammer it).
// No I/O under the cache lock (decide, unlock, fetch, then store).

import AsyncHTTPClient
import Foundation
import Kernel
import NIOCore
import NIOHTTP1
import Synchronization

struct OIDCMetadata: Sendable {
    let issuer: String
    let authorizationEndpoint: String
    let tokenEndpoint: String
    let userinfoEndpoint: String?
    let keys: OIDCKeySet
    let fetchedAt: Int64
}

struct OAuthProviderError: Error {
    let message: String
}

final class OAuthProviderClient: Sendable {
    /// A provider call (discovery, JWKS, token, user) must answer within this long.
    static let requestMillis: Int64 = 10_000
    /// A provider answer is at most this large.
    static let bodyBytesMax = 1 << 20
    /// Discovery and JWKS are reused this long.
    static let cacheSeconds: Int64 = 600
    /// An unknown `kid` refetches the JWKS only when the cached one is older than this.
    static let refetchSeconds: Int64 = 30
    /// Issuers cached at most (the configured providers are fewer: OAuthSettings.providersMax).
    static let cacheEntriesMax = 32

    static let shared = OAuthProviderClient()

    private let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .milliseconds(OAuthProviderClient.requestMillis)
        configuration.timeout.read = .milliseconds(OAuthProviderClient.requestMillis)
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()
    private let cache = Mutex<[String: OIDCMetadata]>([:])

    /// The provider's metadata and keys; `unknownKid` asks for fresh keys when allowed.
    func metadata(issuer: String, nowSeconds: Int64, unknownKid: Bool = false) async throws -> OIDCMetadata {
        let cached = cache.withLock { $0[issuer] }
        if let cached {
            let age = AuthInput.subtract(nowSeconds, cached.fetchedAt)
            if age < Self.cacheSeconds && !(unknownKid && age >= Self.refetchSeconds) { return cached }
        }
        let discovery = try await getJSON(issuer + "/.well-known/openid-configuration")
        guard discovery["issuer"]?.stringValue == issuer else {
            throw OAuthProviderError(message: "the discovery document of \(issuer) names another issuer (\(discovery["issuer"]?.stringValue ?? "none"))")
        }
        guard case .string(let authorize)? = discovery["authorization_endpoint"], case .string(let token)? = discovery["token_endpoint"],
              case .string(let jwksURI)? = discovery["jwks_uri"] else {
            throw OAuthProviderError(message: "the discovery document of \(issuer) lacks authorization_endpoint, token_endpoint or jwks_uri")
        }
        let keys = OIDCKeySet(jwks: try await getJSON(jwksURI))
        let metadata = OIDCMetadata(issuer: issuer, authorizationEndpoint: authorize, tokenEndpoint: token,
                                    userinfoEndpoint: discovery["userinfo_endpoint"]?.stringValue, keys: keys, fetchedAt: nowSeconds)
        cache.withLock { entries in
            if entries[issuer] == nil, entries.count >= Self.cacheEntriesMax,
               let oldest = entries.min(by: { $0.value.fetchedAt < $1.value.fetchedAt })?.key {
                entries[oldest] = nil
            }
            entries[issuer] = metadata
        }
        return metadata
    }

    /// POSTs a form (the code exchange); the JSON answer.
    func postForm(_ url: String, _ fields: [(String, String)]) async throws -> JSONValue {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        let form = fields.map { "\(Self.formEncode($0.0))=\(Self.formEncode($0.1))" }.joined(separator: "&")
        request.body = .bytes(ByteBuffer(string: form))
        return try await send(request)
    }

    /// GETs JSON, with a bearer token when given (user endpoints).
    func getJSON(_ url: String, bearer: String? = nil) async throws -> JSONValue {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "aerodb-auth")
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer " + bearer) }
        return try await send(request)
    }

    private func send(_ request: HTTPClientRequest) async throws -> JSONValue {
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .milliseconds(Self.requestMillis))
            body = try await response.body.collect(upTo: Self.bodyBytesMax)
        } catch {
            throw OAuthProviderError(message: "\(request.url): \(error)")
        }
        guard let value = try? JSON.parse(Array(body.readableBytesView)) else {
            throw OAuthProviderError(message: "\(request.url) answered \(response.status.code) without JSON")
        }
        guard (200..<300).contains(response.status.code) else {
            let why = value["error_description"]?.stringValue ?? value["error"]?.stringValue ?? "status \(response.status.code)"
            throw OAuthProviderError(message: "\(request.url) refused: \(why)")
        }
        return value
    }

    /// application/x-www-form-urlencoded value: unreserved characters kept, the rest %XX.
    static func formEncode(_ text: String) -> String {
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}
