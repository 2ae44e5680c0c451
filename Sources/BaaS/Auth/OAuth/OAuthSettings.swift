// OAuth / OpenID Connect provider settings: `auth.oauth_providers` (aerodb.json or the
// cluster-wide `_settings`, so every node agrees) and `auth.manual_linking`.
//
//   "oauth_providers": {
//     "<name>": {"issuer": "https://idp.example", "client_id": "...", "client_secret": "...",
//                "scopes": ["openid", "email", "profile"]},          generic OpenID Connect
//     "google": {"client_id": "...", "client_secret": "..."},        preset: issuer accounts.google.com
//     "github": {"client_id": "...", "client_secret": "..."}         preset: GitHub OAuth apps (no OIDC)
//   }
//
// Invariants: a provider name is 1-`nameBytesMax` of [a-z0-9_-]; at most `providersMax`
// providers; an issuer is an absolute http(s) URL without query or fragment; the client secret
// never leaves through an answer (`redacted` replaces it wherever settings are shown).

import Kernel

public struct OAuthProviderSettings: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Discovery at `<issuer>/.well-known/openid-configuration`; id_token verified by its JWKS.
        case oidc(issuer: String)
        /// GitHub OAuth apps: fixed endpoints, no id_token; the user and verified emails from its API.
        case github
    }
    public var kind: Kind
    public var clientID: String
    public var clientSecret: String
    public var scopes: [String]
    /// Set when the stored client secret does not open (SettingsSecrets): the token exchange
    /// fails with this message (AERO_CONFIG_INVALID) instead of sending a wrong secret.
    public var clientSecretUnreadable: String? = nil

    public static let googleIssuer = "https://accounts.google.com"
    public static let githubAuthorize = "https://github.com/login/oauth/authorize"
    public static let githubToken = "https://github.com/login/oauth/access_token"
    public static let githubUser = "https://api.github.com/user"
    public static let githubEmails = "https://api.github.com/user/emails"
}

public enum OAuthSettings {
    /// Configured providers at most (each has a discovery cache entry: OAuthProviderClient).
    public static let providersMax = 16
    /// A provider name's length (it travels in URLs and the signed state).
    public static let nameBytesMax = 32
    /// An issuer URL, a client id or secret, a scope: each at most this long.
    public static let valueBytesMax = 1_024
    /// Scopes per provider at most.
    public static let scopesMax = 16
    /// What `redacted` shows instead of a client secret.
    public static let redactedSecret = "(set, not shown)"
    /// What is shown instead of a stored secret that does not open (SettingsSecrets): set it again.
    public static let unreadableSecret = "(set, cannot be opened with this cluster secret: set it again)"

    static func isName(_ s: String) -> Bool {
        (1...nameBytesMax).contains(s.utf8.count)
            && s.utf8.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    static func parse(_ value: JSONValue) throws -> [String: OAuthProviderSettings] {
        guard case .object(let o) = value else { throw AuthSettings.invalid("auth.oauth_providers must be an object of providers") }
        guard o.count <= providersMax else { throw AuthSettings.invalid("auth.oauth_providers holds at most \(providersMax) providers") }
        var out: [String: OAuthProviderSettings] = [:]
        for (name, entry) in o {
            let path = "auth.oauth_providers.\(name)"
            guard isName(name) else { throw AuthSettings.invalid("\(path): a provider name is 1-\(nameBytesMax) of a-z 0-9 _ -") }
            guard case .object(let p) = entry else { throw AuthSettings.invalid("\(path) must be an object") }
            if let unknown = p.keys.first(where: { !["issuer", "client_id", "client_secret", "scopes"].contains($0) }) {
                throw AuthSettings.invalid("\(path): unknown key \"\(unknown)\" (issuer, client_id, client_secret, scopes)")
            }
            func text(_ key: String) throws -> String? {
                guard let v = p[key] else { return nil }
                guard case .string(let s) = v, !s.isEmpty, s.utf8.count <= valueBytesMax else {
                    throw AuthSettings.invalid("\(path).\(key) must be a non-empty string of at most \(valueBytesMax) bytes")
                }
                return s
            }
            guard let clientID = try text("client_id"), let secret = try text("client_secret") else {
                throw AuthSettings.invalid("\(path) needs client_id and client_secret")
            }
            let kind: OAuthProviderSettings.Kind
            switch (name, try text("issuer")) {
            case ("github", nil): kind = .github
            case ("google", nil): kind = .oidc(issuer: OAuthProviderSettings.googleIssuer)
            case (_, let issuer?):
                guard issuer.hasPrefix("https://") || issuer.hasPrefix("http://"), !issuer.contains("?"), !issuer.contains("#"),
                      !issuer.contains(where: { $0.isWhitespace }) else {
                    throw AuthSettings.invalid("\(path).issuer must be an http(s) URL without query or fragment")
                }
                kind = .oidc(issuer: issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer)
            case (_, nil): throw AuthSettings.invalid("\(path) needs an issuer (only the github and google presets have theirs)")
            }
            var scopes: [String]
            switch p["scopes"] {
            case nil: scopes = kind == .github ? ["read:user", "user:email"] : ["openid", "email", "profile"]
            case .array(let items)?:
                guard items.count <= scopesMax else { throw AuthSettings.invalid("\(path).scopes holds at most \(scopesMax) scopes") }
                scopes = try items.map { item in
                    guard case .string(let s) = item, !s.isEmpty, s.utf8.count <= valueBytesMax, !s.contains(" ") else {
                        throw AuthSettings.invalid("\(path).scopes holds non-empty scope names without spaces")
                    }
                    return s
                }
            default: throw AuthSettings.invalid("\(path).scopes must be an array of strings")
            }
            if case .oidc = kind, !scopes.contains("openid") { scopes.insert("openid", at: 0) }
            out[name] = OAuthProviderSettings(kind: kind, clientID: clientID, clientSecret: secret, scopes: scopes)
        }
        return out
    }

    /// The providers as settings JSON with every client secret replaced (admin answers).
    public static func redacted(_ providers: [String: OAuthProviderSettings]) -> JSONValue {
        .object(providers.mapValues { p in
            var o: [String: JSONValue] = ["client_id": .string(p.clientID),
                                          "client_secret": .string(p.clientSecretUnreadable == nil ? redactedSecret : unreadableSecret),
                                          "scopes": .array(p.scopes.map(JSONValue.string))]
            if case .oidc(let issuer) = p.kind { o["issuer"] = .string(issuer) }
            return .object(o)
        })
    }

    /// A stored or submitted `auth.oauth_providers` value with its secrets replaced (the echo of a PUT).
    public static func redacted(_ value: JSONValue) -> JSONValue {
        guard case .object(let o) = value else { return value }
        return .object(o.mapValues { entry in
            guard case .object(var p) = entry else { return entry }
            if p["client_secret"] != nil { p["client_secret"] = .string(redactedSecret) }
            return .object(p)
        })
    }
}
