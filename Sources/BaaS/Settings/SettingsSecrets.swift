// Secrets inside cluster settings, sealed at rest (docs/AUTH.md "Secrets at rest", invariant SS1).
//
// Two settings of `_settings` (ClusterSettings) hold secrets: `auth.oauth_providers.<name>.client_secret`
// and `auth.smtp.password`. The node needs them in the clear (a token exchange, SMTP AUTH), so
// they cannot be hashed; each is stored as a versioned envelope instead of the string:
//
//   {"sealed": "v1:" + base64(nonce(12) || ciphertext || tag(16))}
//
// AES-GCM under the key of its own purpose, SecretDomain.settingsOAuthClientSecret or
// .settingsSMTPPassword of the cluster's JWT secret, with the field's path ("auth.smtp.password",
// "auth.oauth_providers.google.client_secret") as additional authenticated data: a sealed value
// copied into another field or provider does not open. The database, its WAL, checkpoints and
// backups hold only envelopes.
//
// Invariants:
// - `seal` runs on every value `ClusterSettings.set` writes: no secret field reaches a commit in
//   the clear. A submitted value is the plain string (an envelope in a PUT is refused by the
//   settings parse: a secret is a string).
// - `open` runs on every read for use. A plain string there was written by a version before
//   sealing: it is read as is and sealed on the next write of that setting (upgrade path).
// - An envelope that does not open (another cluster secret, altered bytes, an unknown version)
//   is never a crash nor a silent fallback: it is reported by path (`Unreadable`), the setting
//   stays in effect with that secret marked unreadable, and its use fails with
//   AERO_CONFIG_INVALID naming the setting (SMTPSender, the OAuth token exchange).

import Crypto
import Foundation
import Kernel

public enum SettingsSecrets {
    /// The envelope's version prefix (a later format gets another, and `open` names the unknown one).
    static let versionPrefix = "v1:"
    /// What a secret that does not open is replaced with before the settings parse (never used:
    /// the parsed setting carries the `Unreadable` message and refuses to send it).
    static let unreadablePlaceholder = "(unreadable)"

    /// A secret field of a stored setting that does not open, by path, and why.
    public struct Unreadable: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { message }
    }

    /// The secret fields of `key`'s value: (path, purpose, read, write). Keys without secrets: none.
    static func fields(_ key: String, _ value: JSONValue) -> [(path: String, domain: SecretDomain, provider: String?)] {
        switch (key, value) {
        case ("auth.smtp", .object(let o)) where o["password"] != nil:
            return [("auth.smtp.password", .settingsSMTPPassword, nil)]
        case ("auth.oauth_providers", .object(let providers)):
            return providers.keys.sorted().compactMap { name in
                guard case .object(let p)? = providers[name], p["client_secret"] != nil else { return nil }
                return ("auth.oauth_providers.\(name).client_secret", .settingsOAuthClientSecret, name)
            }
        default: return []
        }
    }

    static func get(_ value: JSONValue, _ provider: String?) -> JSONValue? {
        guard case .object(let o) = value else { return nil }
        if let provider {
            guard case .object(let p)? = o[provider] else { return nil }
            return p["client_secret"]
        }
        return o["password"]
    }

    static func put(_ value: JSONValue, _ provider: String?, _ field: JSONValue) -> JSONValue {
        guard case .object(var o) = value else { return value }
        if let provider {
            guard case .object(var p)? = o[provider] else { return value }
            p["client_secret"] = field
            o[provider] = .object(p)
        } else {
            o["password"] = field
        }
        return .object(o)
    }

    /// A submitted value's secret fields are the secrets themselves (strings): an envelope (or
    /// anything else) there is refused before anything is stored.
    public static func checkSubmitted(_ key: String, _ value: JSONValue) throws {
        for field in fields(key, value) {
            guard case .string? = get(value, field.provider) else {
                throw AeroError(.requestInvalid, "\(field.path) is the secret itself, a string (it is sealed when stored)")
            }
        }
    }

    /// `value` as it is stored: every secret field that is a plain string replaced by its envelope.
    public static func seal(_ key: String, _ value: JSONValue, secret: [UInt8]) throws -> JSONValue {
        var out = value
        for field in fields(key, value) {
            guard case .string(let plain)? = get(value, field.provider) else { continue }  // not a string: the parse refused it
            let sealed = try field.domain.seal(Array(plain.utf8), secret: secret, context: Array(field.path.utf8))
            out = put(out, field.provider, .object(["sealed": .string(versionPrefix + sealed)]))
        }
        return out
    }

    /// `value` as used: every envelope opened (a plain string, from an earlier version, kept);
    /// an envelope that does not open is replaced by `unreadablePlaceholder` and reported.
    public static func open(_ key: String, _ value: JSONValue, secret: [UInt8]) -> (value: JSONValue, unreadable: [Unreadable]) {
        var out = value, unreadable: [Unreadable] = []
        for field in fields(key, value) {
            guard case .object(let envelope)? = get(value, field.provider), let sealed = envelope["sealed"] else { continue }
            do {
                out = put(out, field.provider, .string(try openEnvelope(sealed, envelope.count, field.path, field.domain, secret)))
            } catch {
                unreadable.append(Unreadable(path: field.path, message: "\(field.path) cannot be opened (\(error)): it was sealed under another cluster secret or altered; set \(key) again"))
                out = put(out, field.provider, .string(unreadablePlaceholder))
            }
        }
        return (out, unreadable)
    }

    static func openEnvelope(_ sealed: JSONValue, _ keys: Int, _ path: String, _ domain: SecretDomain, _ secret: [UInt8]) throws -> String {
        guard keys == 1, case .string(let text) = sealed else { throw AeroError(.configInvalid, "the envelope is not {\"sealed\": \"v1:...\"}") }
        guard text.hasPrefix(versionPrefix) else {
            throw AeroError(.configInvalid, "unknown envelope version \"\(text.prefix(while: { $0 != ":" }).prefix(8))\" (this node reads v1)")
        }
        do {
            let plain = try domain.open(String(text.dropFirst(versionPrefix.count)), secret: secret, context: Array(path.utf8), what: "the envelope")
            return String(decoding: plain, as: UTF8.self)
        } catch let error as AeroError {
            throw AeroError(.configInvalid, error.message)  // "the envelope is not base64"
        } catch {
            throw AeroError(.configInvalid, "AES-GCM authentication failed")
        }
    }
}
