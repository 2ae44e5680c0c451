// TOTP multi-factor authentication as GoTrue serves it (supabase-wire §2; the client's
// `auth.mfa.*`): POST /factors (enroll), POST /factors/<id>/challenge, POST /factors/<id>/verify,
// DELETE /factors/<id> (unenroll); the user's factors in GET /user; the admin's
// GET /admin/users/<id>/factors and DELETE /admin/users/<id>/factors/<factor> (recovery of a user
// who lost the device).
//
// Stored (replicated system collections):
//   _auth_mfa_factors     key id (uuid): {id, user_id, friendly_name, factor_type "totp", status
//                         "unverified"|"verified", secret (sealed, below), last_step (the newest
//                         TOTP step accepted; replay guard), created_at, updated_at}
//   _auth_mfa_challenges  key id (uuid): {id, factor_id, user_id, created_s, failures}; at most
//                         one per factor (a new challenge replaces the old one)
// The TOTP secret (20 random bytes) is sealed with AES-GCM under its own key,
// SecretDomain.mfaSecret of the JWT secret: the database, its WAL, checkpoints and backups
// never hold it in the clear; `secret` = base64(nonce || ciphertext || tag).
//
// TOTP (RFC 6238): HMAC-SHA1, 30 s steps, 6 digits, the current step and one either side
// accepted, each step at most once per factor (`last_step`). A challenge lives
// `challengeSeconds`; `challengeFailuresMax` wrong codes end it, and a new challenge inherits the
// count of one it replaces that is younger than `challengeSeconds` (so at most that many wrong
// codes per factor per `challengeSeconds`, whatever the caller's address or node); verification is
// also rate-limited per client address (`verifyBudget`).
//
// Assurance levels: a session is aal1 until a verify on it succeeds, then aal2 with
// {"method":"totp","timestamp":T} added to its amr; every access token of the session (refreshes
// included) carries the session's aal. Enrolling another factor or unenrolling a verified one
// needs an aal2 session when the user has a verified factor (as GoTrue).

import Crypto
import Foundation
import Kernel

enum AuthMFA {
    static let factors = "_auth_mfa_factors"
    static let challenges = "_auth_mfa_challenges"

    /// Factors per user (GoTrue's default MFA_MAX_ENROLLED_FACTORS).
    static let factorsPerUserMax = 10
    /// Seconds a challenge can be verified (GoTrue: 300).
    static let challengeSeconds: Int64 = 300
    /// Wrong codes before a challenge is ended (a new one must be created).
    static let challengeFailuresMax: Int64 = 5
    /// Verification attempts per client address: 30 per 5 minutes.
    static let verifyBudget = AuthRateLimits.Budget(limit: 30, windowSeconds: 300)
    /// TOTP parameters (RFC 6238 defaults, what every authenticator app uses).
    static let stepSeconds: Int64 = 30
    static let digits = 6
    static let secretBytes = 20
    /// Friendly names: at most this many bytes.
    static let friendlyNameBytesMax = 256

    static let schemas: [JSONValue] = {
        typealias C = AuthCollections
        return [
            C.schema(factors, key: "id", [
                "id": C.field("uuid", nullable: false), "user_id": C.field("uuid", nullable: false, references: AuthCollections.users),
                "friendly_name": C.field("text"), "factor_type": C.field("text", nullable: false), "status": C.field("text", nullable: false),
                "secret": C.field("text", nullable: false), "last_step": C.field("int", nullable: false),
                "created_at": C.created, "updated_at": C.created,
            ], [C.index("by_user", ["user_id"])]),
            C.schema(challenges, key: "id", [
                "id": C.field("uuid", nullable: false), "factor_id": C.field("uuid", nullable: false, references: factors),
                "user_id": C.field("uuid", nullable: false), "created_s": C.field("int", nullable: false),
                "failures": C.field("int", nullable: false), "created_at": C.created,
            ], [C.index("by_factor", ["factor_id"])]),
        ]
    }()

    /// The wrong codes a new challenge of a factor starts with: those of the challenges it
    /// replaces that were created less than `challengeSeconds` ago; `lockedUntil` when they
    /// already reach `challengeFailuresMax` (no challenge before then).
    static func carriedFailures(_ earlier: [Document], nowSeconds: Int64) -> (failures: Int64, lockedUntil: Int64?) {
        var failures: Int64 = 0
        var until: Int64 = 0
        for row in earlier {
            guard case .int(let created)? = row["created_s"], AuthInput.subtract(nowSeconds, created) < challengeSeconds else { continue }
            let count = max(0, min(row["failures"]?.intValue ?? 0, challengeFailuresMax))
            failures = max(failures, count)
            if count >= challengeFailuresMax {
                let (end, overflow) = created.addingReportingOverflow(challengeSeconds)
                until = max(until, overflow ? .max : end)
            }
        }
        return (failures, failures >= challengeFailuresMax ? until : nil)
    }

    // MARK: TOTP

    /// The 6-digit code of `step` for `secret` (RFC 4226 dynamic truncation).
    static func code(_ secret: [UInt8], step: Int64) -> String {
        var counter = UInt64(bitPattern: step).bigEndian
        let message = withUnsafeBytes(of: &counter) { Array($0) }
        let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: secret)))
        let offset = Int(mac[mac.count - 1] & 0x0f)
        let value = (UInt32(mac[offset] & 0x7f) << 24) | (UInt32(mac[offset + 1]) << 16) | (UInt32(mac[offset + 2]) << 8) | UInt32(mac[offset + 3])
        let number = value % 1_000_000
        let text = String(number)
        return String(repeating: "0", count: digits - text.count) + text
    }

    /// The step `code` matches (now and one either side), newer than `after`; nil otherwise.
    static func matchingStep(_ secret: [UInt8], code presented: String, nowSeconds: Int64, after: Int64) -> Int64? {
        guard presented.utf8.count == digits, presented.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        let now = nowSeconds / stepSeconds
        for step in [now - 1, now, now + 1] where step > after {
            // Compared in full every time (no early exit on the first differing digit).
            let expected = Array(code(secret, step: step).utf8)
            var diff: UInt8 = 0
            for (a, b) in zip(expected, Array(presented.utf8)) { diff |= a ^ b }
            if diff == 0 { return step }
        }
        return nil
    }

    static func base32(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var out = ""
        var buffer: UInt32 = 0, bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return out
    }

    // MARK: Sealing

    static func seal(_ plain: [UInt8], _ jwtSecret: [UInt8]) throws -> String {
        try SecretDomain.mfaSecret.seal(plain, secret: jwtSecret)
    }

    static func open(_ sealed: String, _ jwtSecret: [UInt8]) throws -> [UInt8] {
        try SecretDomain.mfaSecret.open(sealed, secret: jwtSecret, what: "an MFA secret")
    }

    static func factorJSON(_ doc: Document) -> JSONValue {
        .object([
            "id": doc["id"] ?? .null, "friendly_name": doc["friendly_name"] ?? .null, "factor_type": doc["factor_type"] ?? .string("totp"),
            "status": doc["status"] ?? .string("unverified"), "created_at": doc["created_at"] ?? .null, "updated_at": doc["updated_at"] ?? .null,
        ])
    }
}

extension AuthService {
    func factors(of userID: String) throws -> [Document] {
        try store.rows(AuthMFA.factors, where: "user_id", equals: .string(userID), limit: AuthMFA.factorsPerUserMax * 2)
    }

    /// The caller's session row (MFA needs one: a service key or a bare JWT has none).
    private func session(of caller: Caller) throws -> (user: Document, session: Document) {
        let user = try currentUser(caller)
        guard let id = caller.sessionID, let session = try store.document(AuthCollections.sessions, id),
              session["user_id"] == user["id"] else {
            throw AuthFailure.forbidden("session_not_found", "Session from session_id claim in JWT does not exist")
        }
        return (user, session)
    }

    private func requireAAL2IfVerified(_ factors: [Document], _ session: Document, _ what: String) throws {
        if factors.contains(where: { $0["status"] == .string("verified") }), session["aal"] != .string("aal2") {
            throw AuthFailure.forbidden("insufficient_aal", "AAL2 required to \(what)")
        }
    }

    func enrollFactor(_ caller: Caller, _ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        let (user, session) = try session(of: caller)
        let userID = user["id"]?.stringValue ?? ""
        switch body["factor_type"]?.stringValue {
        case "totp": break
        case "phone": throw AuthFailure.unprocessable("mfa_phone_enroll_not_enabled", "Phone MFA is not built in AeroDB; enroll a totp factor")
        default: throw AuthFailure.validation("factor_type must be totp")
        }
        var friendly: JSONValue = .string("")  // GoTrue answers "" for a factor without a name
        if case .string(let name)? = body["friendly_name"], !name.isEmpty {
            guard name.utf8.count <= AuthMFA.friendlyNameBytesMax else {
                throw AuthFailure.validation("friendly_name is at most \(AuthMFA.friendlyNameBytesMax) bytes")
            }
            friendly = .string(name)
        }
        let existing = try factors(of: userID)
        try requireAAL2IfVerified(existing, session, "enroll another factor")
        guard existing.count < AuthMFA.factorsPerUserMax else {
            throw AuthFailure.unprocessable("too_many_enrolled_mfa_factors", "Maximum number of enrolled factors reached (\(AuthMFA.factorsPerUserMax))")
        }
        if friendly != .string(""), existing.contains(where: { $0["friendly_name"] == friendly }) {
            throw AuthFailure.unprocessable("mfa_factor_name_conflict", "A factor with the friendly name \(friendly.stringValue ?? "") for this user already exists")
        }
        let issuerName: String
        if case .string(let given)? = body["issuer"], !given.isEmpty, given.utf8.count <= AuthMFA.friendlyNameBytesMax {
            issuerName = given
        } else {
            issuerName = URL(string: request.baseURL)?.host ?? "AeroDB"
        }
        let secretBytes = SecureRandom.bytes(AuthMFA.secretBytes)
        let id = UUIDText.random()
        try await commit([
            .insert(collection: AuthMFA.factors, document: [
                "id": .string(id), "user_id": .string(userID), "friendly_name": friendly, "factor_type": .string("totp"),
                "status": .string("unverified"), "secret": .string(try AuthMFA.seal(secretBytes, secret)), "last_step": .int(0),
            ]),
            event("factor_enrolled", user: userID, role: "authenticated", target: id, request),
        ])
        let encoded = AuthMFA.base32(secretBytes)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let issuerText = issuerName.addingPercentEncoding(withAllowedCharacters: allowed) ?? "AeroDB"
        let account = (user["email"]?.stringValue ?? userID).addingPercentEncoding(withAllowedCharacters: allowed) ?? userID
        let uri = "otpauth://totp/\(issuerText):\(account)?secret=\(encoded)&issuer=\(issuerText)&algorithm=SHA1&digits=6&period=30"
        return .object([
            "id": .string(id), "type": .string("totp"), "friendly_name": friendly,
            // An SVG QR code of the URI (QRCode); "" for a URI past what it encodes (213 bytes).
            "totp": .object(["qr_code": .string(QRCode.svg(uri) ?? ""), "secret": .string(encoded), "uri": .string(uri)]),
        ])
    }

    private func ownFactor(_ id: String, userID: String) throws -> Document {
        guard let normalized = UUIDText.normalize(id), let factor = try store.document(AuthMFA.factors, normalized),
              factor["user_id"]?.stringValue == userID else {
            throw AuthFailure.notFound("mfa_factor_not_found", "Factor not found")
        }
        return factor
    }

    func challengeFactor(_ caller: Caller, factorID: String, _ request: AuthRequest) async throws -> JSONValue {
        let (user, _) = try session(of: caller)
        let userID = user["id"]?.stringValue ?? ""
        let factor = try ownFactor(factorID, userID: userID)
        let id = UUIDText.random()
        let now = store.nowSeconds
        let earlier = try store.rows(AuthMFA.challenges, where: "factor_id", equals: factor["id"] ?? .null)
        // Wrong codes carry over to the next challenge while the one replaced is recent (a new
        // challenge must not reset the count): at most `challengeFailuresMax` wrong codes per
        // factor in any `challengeSeconds` without a challenge, on every node alike (replicated).
        let carried = AuthMFA.carriedFailures(earlier, nowSeconds: now)
        if let until = carried.lockedUntil {
            throw AuthFailure(status: .tooManyRequests, code: "over_request_rate_limit",
                              message: "Too many wrong codes for this factor: create a challenge again in \(AuthInput.subtract(until, now)) s")
        }
        try await commit(earlier.compactMap { row in row["id"].map { .delete(collection: AuthMFA.challenges, target: .key($0)) } } + [
            .insert(collection: AuthMFA.challenges, document: [
                "id": .string(id), "factor_id": factor["id"] ?? .null, "user_id": .string(userID), "created_s": .int(now), "failures": .int(carried.failures),
            ]),
            event("challenge_created", user: userID, role: "authenticated", target: factor["id"]?.stringValue, request),
        ])
        return .object(["id": .string(id), "type": .string("totp"), "expires_at": .int(now + AuthMFA.challengeSeconds)])
    }

    func verifyFactor(_ caller: Caller, factorID: String, _ body: JSONValue, _ request: AuthRequest) async throws -> JSONValue {
        try limit("mfa_verify", AuthMFA.verifyBudget, request)
        let (user, session) = try session(of: caller)
        let userID = user["id"]?.stringValue ?? ""
        let factor = try ownFactor(factorID, userID: userID)
        guard case .string(let challengeID)? = body["challenge_id"], let normalized = UUIDText.normalize(challengeID),
              let challenge = try store.document(AuthMFA.challenges, normalized), challenge["factor_id"] == factor["id"] else {
            throw AuthFailure.notFound("mfa_challenge_not_found", "Challenge not found")
        }
        // A challenge that took its last wrong code stays (so the next challenge inherits the
        // count) but verifies nothing.
        guard (challenge["failures"]?.intValue ?? 0) < AuthMFA.challengeFailuresMax else {
            throw AuthFailure.notFound("mfa_challenge_not_found", "Challenge not found")
        }
        let now = store.nowSeconds
        guard case .int(let created)? = challenge["created_s"], AuthInput.subtract(now, created) <= AuthMFA.challengeSeconds else {
            try await commit([.delete(collection: AuthMFA.challenges, target: .key(.string(normalized)))])
            throw AuthFailure.unprocessable("mfa_challenge_expired", "MFA challenge has expired, verify against another challenge or create a new challenge")
        }
        guard case .string(let code)? = body["code"] else { throw AuthFailure.validation("code is required") }
        guard case .string(let sealed)? = factor["secret"] else { throw AeroError(.internalError, "factor without a secret") }
        let last: Int64 = factor["last_step"]?.intValue ?? 0
        guard let step = AuthMFA.matchingStep(try AuthMFA.open(sealed, secret), code: code, nowSeconds: now, after: last) else {
            let failures = (challenge["failures"]?.intValue ?? 0) + 1
            let record: WriteOperation = .update(collection: AuthMFA.challenges, target: .key(.string(normalized)),
                                                 set: ["failures": .int(min(failures, AuthMFA.challengeFailuresMax))])
            try await commit([record, event("mfa_verification_failed", user: userID, role: "authenticated", target: factor["id"]?.stringValue, request)])
            throw AuthFailure.unprocessable("mfa_verification_failed", "Invalid TOTP code entered")
        }
        var amr = session["amr"]?.arrayValue ?? []
        amr.insert(.object(["method": .string("totp"), "timestamp": .int(now)]), at: 0)
        let sessionID = session["id"]?.stringValue ?? ""
        let refresh = SecureRandom.token(AuthStore.refreshTokenLength)
        // The step is taken only if the factor still has the last step this request read: two
        // concurrent verifies of one code cannot both succeed.
        let filter = Filter.and([.compare(field: "id", op: .eq, value: factor["id"] ?? .null),
                                 .compare(field: "last_step", op: .eq, value: .int(last))])
        let result = try await store.database.commit([
            .update(collection: AuthMFA.factors, target: .matching(filter),
                    set: ["last_step": .int(step), "status": .string("verified"), "updated_at": store.now]),
        ])
        guard result.changes.contains(where: { $0.collection == AuthMFA.factors }) else {
            throw AuthFailure.unprocessable("mfa_verification_failed", "Invalid TOTP code entered")
        }
        try await commit([
            .delete(collection: AuthMFA.challenges, target: .key(.string(normalized))),
            .update(collection: AuthCollections.sessions, target: .key(.string(sessionID)),
                    set: ["aal": .string("aal2"), "amr": .array(amr), "updated_at": store.now]),
            store.refreshTokenInsert(refresh, sessionID: sessionID, userID: userID, parent: nil),
            event("mfa_verified", user: userID, role: "authenticated", target: factor["id"]?.stringValue, request),
        ])
        guard let fresh = try store.user(id: userID) else { throw AuthFailure.userNotFound }
        return AuthWire.session(accessToken: accessToken(fresh, sessionID: sessionID, aal: "aal2", amr: .array(amr), request),
                                refreshToken: refresh, lifetime: settings.accessTokenSeconds, now: store.nowSeconds,
                                user: try userJSON(fresh))
    }

    func unenrollFactor(_ caller: Caller, factorID: String, _ request: AuthRequest) async throws -> JSONValue {
        let (user, session) = try session(of: caller)
        let userID = user["id"]?.stringValue ?? ""
        let factor = try ownFactor(factorID, userID: userID)
        if factor["status"] == .string("verified"), session["aal"] != .string("aal2") {
            throw AuthFailure.forbidden("insufficient_aal", "AAL2 required to unenroll verified factor")
        }
        try await commit([.delete(collection: AuthMFA.factors, target: .key(factor["id"] ?? .null)),
                          event("factor_unenrolled", user: userID, role: "authenticated", target: factor["id"]?.stringValue, request)])
        return .object(["id": factor["id"] ?? .null])
    }

    // MARK: Admin (recovery of a user who lost the device)

    func adminFactors(_ userID: String) throws -> JSONValue {
        let user = try adminUser(userID)
        return .array(try factors(of: user["id"]?.stringValue ?? "").map(AuthMFA.factorJSON))
    }

    func adminDeleteFactor(_ userID: String, factorID: String, _ request: AuthRequest) async throws -> JSONValue {
        let user = try adminUser(userID)
        let factor = try ownFactor(factorID, userID: user["id"]?.stringValue ?? "")
        try await commit([.delete(collection: AuthMFA.factors, target: .key(factor["id"] ?? .null)),
                          event("factor_deleted", role: "service_role", target: factor["id"]?.stringValue, request,
                                details: ["user_id": user["id"] ?? .null])])
        return .object(["id": factor["id"] ?? .null])
    }
}
