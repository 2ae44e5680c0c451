// Settings of `/auth/v1`, read from the `auth` object of aerodb.json (docs/AUTH.md lists every
// key). Defaults follow GoTrue's where GoTrue has one; every limit is named and enforced.

import Kernel

public struct AuthSettings: Sendable {
    /// Where email links send the browser when a request names no allowed `redirect_to`.
    public var siteURL = "http://localhost:3000"
    /// Other `redirect_to` targets allowed (exact URLs or prefixes ending in `*`); anything else
    /// falls back to `siteURL`, so a link cannot hand a session to another site.
    public var redirectURLs: [String] = []
    /// The URL clients reach this service at: email links and the token issuer are built from
    /// it, never from a request's Host header. Default: `http://<this node's http address>`.
    public var externalURL: String?
    /// Access-token lifetime (GoTrue's JWT_EXP).
    public var accessTokenSeconds: Int64 = 3_600
    /// A rotated refresh token still refreshes for this long (concurrent refreshes of one tab).
    public var refreshReuseIntervalSeconds: Int64 = 10
    /// Sign-ups are confirmed at once (no confirmation email) when true.
    public var mailerAutoconfirm = false
    public var disableSignup = false
    /// Off by default, as in GoTrue: anonymous users get the `authenticated` role.
    public var anonymousSignIns = false
    public var passwordMinLength = 6
    /// Each string is a set of characters of which a password must contain at least one.
    public var passwordRequiredCharacters: [String] = []
    /// Changing the password needs a fresh sign-in (≤ 24 h) or a reauthentication code.
    public var securePasswordChange = false
    public var otpLength = 6
    public var otpExpirySeconds: Int64 = 3_600
    public var passwordCost = PasswordCost.standard
    public var rateLimits = AuthRateLimits()
    /// Mail is delivered over SMTP when set; otherwise it stays in the dev outbox.
    public var smtp: SMTPSettings?
    /// How the primary trims the tables clients grow (AuthRetention).
    public var retention = AuthRetentionSettings()
    /// OAuth / OpenID Connect providers by name (OAuth/OAuthSettings.swift).
    public var oauthProviders: [String: OAuthProviderSettings] = [:]
    /// GoTrue's GOTRUE_SECURITY_MANUAL_LINKING_ENABLED: `/user/identities/authorize` and unlinking.
    public var manualLinking = false

    public static let accessTokenSecondsRange: ClosedRange<Int64> = 30...86_400 * 7
    public static let refreshReuseIntervalRange: ClosedRange<Int64> = 0...3_600
    public static let otpLengthRange: ClosedRange<Int64> = 6...10
    public static let otpExpirySecondsRange: ClosedRange<Int64> = 60...86_400
    public static let passwordMinLengthRange: ClosedRange<Int64> = 6...Int64(PasswordHasher.passwordBytesMax)
    /// A sign-in this recent allows a password change without a reauthentication code.
    public static let recentSignInSeconds: Int64 = 86_400

    public init() {}

    /// `redirect_to` when it is the site URL or allowed by `redirect_urls`; else the site URL.
    public func allowedRedirect(_ requested: String?) -> String {
        guard let requested, !requested.isEmpty else { return siteURL }
        let allowed = ([siteURL] + redirectURLs).contains { pattern in
            pattern.hasSuffix("*") ? requested.hasPrefix(String(pattern.dropLast())) : requested == pattern
        }
        return allowed ? requested : siteURL
    }

    public static func parse(_ json: JSONValue?) throws -> AuthSettings {
        var s = AuthSettings()
        guard let json else { return s }
        guard case .object(let o) = json else { throw invalid("auth must be an object") }
        for (key, value) in o {
            switch (key, value) {
            case ("site_url", .string(let v)): s.siteURL = v
            case ("redirect_urls", .array(let items)):
                s.redirectURLs = try items.map { item in
                    guard case .string(let url) = item, !url.isEmpty else { throw invalid("auth.redirect_urls holds URL strings") }
                    return url
                }
            case ("external_url", .string(let v)):
                guard v.hasPrefix("http://") || v.hasPrefix("https://") else { throw invalid("auth.external_url must start with http:// or https://") }
                s.externalURL = v.hasSuffix("/") ? String(v.dropLast()) : v
            case ("jwt_expiry", .int(let v)): s.accessTokenSeconds = try within(v, accessTokenSecondsRange, key)
            case ("refresh_token_reuse_interval", .int(let v)): s.refreshReuseIntervalSeconds = try within(v, refreshReuseIntervalRange, key)
            case ("mailer_autoconfirm", .bool(let v)): s.mailerAutoconfirm = v
            case ("disable_signup", .bool(let v)): s.disableSignup = v
            case ("anonymous_sign_ins", .bool(let v)): s.anonymousSignIns = v
            case ("password_min_length", .int(let v)):
                s.passwordMinLength = Int(try within(v, passwordMinLengthRange, key))
            case ("password_required_characters", .array(let items)):
                s.passwordRequiredCharacters = try items.map { item in
                    guard case .string(let set) = item, !set.isEmpty else { throw invalid("\(key) holds non-empty strings") }
                    return set
                }
            case ("secure_password_change", .bool(let v)): s.securePasswordChange = v
            case ("otp_length", .int(let v)): s.otpLength = Int(try within(v, otpLengthRange, key))
            case ("otp_expiry", .int(let v)): s.otpExpirySeconds = try within(v, otpExpirySecondsRange, key)
            case ("argon2", .object(let cost)):
                func part(_ key: String, _ current: UInt32, _ range: ClosedRange<UInt32>) throws -> UInt32 {
                    guard let value = cost[key] else { return current }
                    guard case .int(let n) = value, n >= Int64(range.lowerBound), n <= Int64(range.upperBound) else {
                        throw invalid("auth.argon2.\(key) must be an integer within \(range)")
                    }
                    return UInt32(n)
                }
                if let unknown = cost.keys.first(where: { !["memory_kib", "iterations", "parallelism"].contains($0) }) {
                    throw invalid("unknown auth.argon2 setting \"\(unknown)\" (memory_kib, iterations, parallelism)")
                }
                s.passwordCost = PasswordCost(memoryKiB: try part("memory_kib", s.passwordCost.memoryKiB, PasswordCost.memoryKiBRange),
                                              iterations: try part("iterations", s.passwordCost.iterations, PasswordCost.iterationsRange),
                                              parallelism: try part("parallelism", s.passwordCost.parallelism, PasswordCost.parallelismRange))
            case ("rate_limits", .object(let limits)): s.rateLimits = try AuthRateLimits.parse(limits)
            case ("smtp", let v): s.smtp = try SMTPSettings.parse(v)
            case ("retention", .object(let r)): s.retention = try AuthRetentionSettings.parse(r)
            case ("oauth_providers", let v): s.oauthProviders = try OAuthSettings.parse(v)
            case ("manual_linking", .bool(let v)): s.manualLinking = v
            default: throw invalid("unknown or mistyped auth setting \"\(key)\" (see docs/AUTH.md)")
            }
        }
        return s
    }

    static func within(_ value: Int64, _ range: ClosedRange<Int64>, _ key: String) throws -> Int64 {
        guard range.contains(value) else { throw invalid("auth.\(key) must be within \(range)") }
        return value
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.configInvalid, "aerodb.json: " + message) }
}

/// Fixed-window request budgets. `perIP` budgets key on the client address, `perEmail` on the
/// address a message goes to. Defaults follow GoTrue's (per 5 minutes, emails per hour).
public struct AuthRateLimits: Sendable {
    public struct Budget: Sendable {
        public var limit: Int
        public var windowSeconds: Int64

        /// Requests a window allows: one to a billion (the top is "no budget", as benchmarks ask;
        /// the counter is an Int, so no value here can overflow it).
        public static let limitRange: ClosedRange<Int64> = 1...1_000_000_000
        /// A second to a week.
        public static let windowSecondsRange: ClosedRange<Int64> = 1...7 * 86_400
    }
    public var signup = Budget(limit: 30, windowSeconds: 300)
    public var token = Budget(limit: 150, windowSeconds: 300)
    public var verify = Budget(limit: 30, windowSeconds: 300)
    public var otp = Budget(limit: 30, windowSeconds: 300)
    public var emailPerAddress = Budget(limit: 5, windowSeconds: 3_600)

    static func parse(_ o: [String: JSONValue]) throws -> AuthRateLimits {
        var r = AuthRateLimits()
        for (key, value) in o {
            guard case .object(let b) = value, case .int(let limit)? = b["limit"], Budget.limitRange.contains(limit),
                  case .int(let window)? = b["window_seconds"], Budget.windowSecondsRange.contains(window) else {
                throw AuthSettings.invalid("auth.rate_limits.\(key) is {\"limit\": \(Budget.limitRange), \"window_seconds\": \(Budget.windowSecondsRange)}")
            }
            let budget = Budget(limit: Int(limit), windowSeconds: window)
            switch key {
            case "signup": r.signup = budget
            case "token": r.token = budget
            case "verify": r.verify = budget
            case "otp": r.otp = budget
            case "email_per_address": r.emailPerAddress = budget
            default: throw AuthSettings.invalid("unknown rate limit \"\(key)\" (signup, token, verify, otp, email_per_address)")
            }
        }
        return r
    }
}
