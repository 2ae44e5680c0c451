import Foundation
import Kernel
import Logging
import Testing
@testable import BaaS

/// Secrets in cluster settings sealed at rest (invariant SS1, Settings/SettingsSecrets.swift):
/// the stored `_settings` document and every byte the database wrote hold no plaintext secret;
/// the node reads them opened; a plain value from an earlier version is still read and sealed on
/// its next write; an envelope that does not open is an error naming the setting at use.
@Suite struct SettingsSecretsTests {
    static let secret = Array("settings-secrets-test-cluster-secret-0123456789".utf8)
    static let password = "smtp-pass-SS1-7f3a9e"
    static let clientSecret = "oauth-secret-SS1-9c2e41"
    static let smtp: JSONValue = .object(["host": .string("127.0.0.1"), "sender": .string("a@example.com"),
                                          "user": .string("mailer"), "password": .string(password)])
    static let oauth: JSONValue = .object(["google": .object(["client_id": .string("cid"), "client_secret": .string(clientSecret)]),
                                           "idp": .object(["issuer": .string("http://127.0.0.1:9/"), "client_id": .string("c2"),
                                                           "client_secret": .string(clientSecret + "-idp")])])

    /// A database in its own directory (the test reads the files it wrote).
    static func withDirectory(_ body: (Database, String) async throws -> Void) async throws {
        let dir = NSTemporaryDirectory() + "aerodb-ss-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        do { try await body(db, dir) } catch {
            await db.close()
            throw error
        }
        await db.close()
    }

    static func settings(_ db: Database, secret: [UInt8] = secret) -> ClusterSettings {
        ClusterSettings(database: db, fileAuth: nil, fileSettings: AuthSettings(), logger: Logger(label: "test"), secret: secret)
    }

    /// The files under `dir` that hold `text` (WAL segments, checkpoints, anything the database wrote).
    static func files(in dir: String, holding text: String) -> [String] {
        let needle = Data(text.utf8)
        var hits: [String] = []
        guard let paths = FileManager.default.enumerator(atPath: dir) else { return [] }
        for case let path as String in paths {
            let full = dir + "/" + path
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue,
                  let data = FileManager.default.contents(atPath: full) else { continue }
            if data.range(of: needle) != nil { hits.append(path) }
        }
        return hits
    }

    /// Writes `value` under `key` as a version before sealing did (the document as it was stored then).
    static func storeRaw(_ db: Database, _ key: String, _ value: JSONValue) async throws {
        try await SystemCollections.ensure([ClusterSettings.schema], in: db)
        _ = try await db.commit([.upsert(collection: ClusterSettings.collection,
                                         document: ["key": .string(key), "value": value, "updated_at": .string(Timestamp.format(SystemClock().nowMicros()))])])
    }

    @Test func SS1_theStoredDocumentAndTheWALHoldNoPlaintextSecret() async throws {
        try await Self.withDirectory { db, dir in
            let settings = Self.settings(db)
            _ = try await settings.set("auth.smtp", Self.smtp)
            _ = try await settings.set("auth.oauth_providers", Self.oauth)
            let raw = JSON.encodeString(.object(try settings.stored()))
            #expect(!raw.contains(Self.password) && !raw.contains(Self.clientSecret))
            #expect(raw.components(separatedBy: "{\"sealed\":\"v1:").count == 4, "\(raw)")  // the password and both client secrets
            #expect(raw.contains("mailer") && raw.contains("cid"))  // only the secrets are sealed
            // The records reached the files (the scan can see them), the secrets did not.
            #expect(!Self.files(in: dir, holding: "auth.oauth_providers").isEmpty)
            #expect(Self.files(in: dir, holding: Self.password).isEmpty)
            #expect(Self.files(in: dir, holding: Self.clientSecret).isEmpty)
            // The node uses them opened: what AuthService hands SMTPSender and the token exchange.
            let auth = settings.auth()
            #expect(auth.smtp?.password == Self.password && auth.smtp?.passwordUnreadable == nil)
            #expect(auth.oauthProviders["google"]?.clientSecret == Self.clientSecret)
            #expect(auth.oauthProviders["idp"]?.clientSecret == Self.clientSecret + "-idp")
            // Another node of the cluster (same secret) opens them: the replicated document is all it has.
            #expect(Self.settings(db).auth().smtp?.password == Self.password)
            // Shown redacted as before.
            let listed = JSON.encodeString(try settings.list())
            #expect(!listed.contains(Self.password) && !listed.contains(Self.clientSecret) && listed.contains(OAuthSettings.redactedSecret))
        }
    }

    @Test func SS1_aPlainValueFromAnEarlierVersionIsReadAndSealedOnItsNextWrite() async throws {
        try await Self.withDirectory { db, dir in
            let settings = Self.settings(db)
            try await Self.storeRaw(db, "auth.smtp", Self.smtp)
            try await Self.storeRaw(db, "auth.oauth_providers", Self.oauth)
            #expect(!Self.files(in: dir, holding: Self.password).isEmpty)  // what sealing prevents: plaintext in the WAL
            let auth = settings.auth()
            #expect(auth.smtp?.password == Self.password && auth.smtp?.passwordUnreadable == nil)
            #expect(auth.oauthProviders["google"]?.clientSecret == Self.clientSecret)
            _ = try await settings.set("auth.smtp", Self.smtp)  // the upgrade: set it again
            let stored = JSON.encodeString(try settings.stored()["auth.smtp"] ?? .null)
            #expect(!stored.contains(Self.password) && stored.contains("\"sealed\":\"v1:"))
            #expect(settings.auth().smtp?.password == Self.password)
        }
    }

    @Test func SS1_anEnvelopeThatDoesNotOpenIsAnErrorNamingTheSetting() async throws {
        try await Self.withDirectory { db, _ in
            let settings = Self.settings(db)
            _ = try await settings.set("auth.smtp", Self.smtp)
            _ = try await settings.set("auth.oauth_providers", Self.oauth)
            // Another cluster secret: neither opens.
            let other = Self.settings(db, secret: Array("another-cluster-secret-of-32-bytes-or-more!!".utf8))
            let auth = other.auth()
            let problem = try #require(auth.smtp?.passwordUnreadable)
            #expect(problem.contains("auth.smtp.password") && problem.contains("set auth.smtp again"))
            #expect(auth.smtp?.password != Self.password)
            #expect(auth.oauthProviders["google"]?.clientSecretUnreadable?.contains("auth.oauth_providers.google.client_secret") == true)
            #expect(auth.mailerAutoconfirm == AuthSettings().mailerAutoconfirm)  // the other settings stay in effect
            // Delivery fails naming it, before any connection (the mail stays in the outbox).
            let message = MailMessage(to: "x@example.com", subject: "s", body: "b", type: "signup", link: nil)
            do {
                try SMTPSender(settings: try #require(auth.smtp)).send(message)
                Issue.record("an unreadable SMTP password must not be sent")
            } catch let error as AeroError {
                #expect(error.code == .configInvalid && error.message.contains("auth.smtp.password"))
            }
            // Shown as unreadable, never as a value.
            let listed = JSON.encodeString(try other.list())
            #expect(listed.contains(OAuthSettings.unreadableSecret))
            // Altered bytes, an envelope moved to another field, an unknown version: the same error.
            guard case .object(var o)? = try settings.stored()["auth.smtp"], case .object(let env)? = o["password"],
                  case .string(let sealed)? = env["sealed"] else { Issue.record("no envelope"); return }
            var bytes = Array(sealed.utf8)
            bytes[bytes.count - 3] = bytes[bytes.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            for tampered in [String(decoding: bytes, as: UTF8.self), "v2:" + sealed.dropFirst(3), "v1:not base64!"] {
                o["password"] = .object(["sealed": .string(tampered)])
                try await Self.storeRaw(db, "auth.smtp", .object(o))
                #expect(settings.auth().smtp?.passwordUnreadable?.contains("auth.smtp.password") == true, "\(tampered)")
            }
            guard case .object(let providers)? = try settings.stored()["auth.oauth_providers"],
                  case .object(let google)? = providers["google"], case .object(var idp)? = providers["idp"] else { Issue.record("no providers"); return }
            idp["client_secret"] = google["client_secret"]  // google's envelope under idp: bound to its path, does not open
            try await Self.storeRaw(db, "auth.oauth_providers", .object(["google": .object(google), "idp": .object(idp)]))
            let moved = settings.auth().oauthProviders
            #expect(moved["google"]?.clientSecret == Self.clientSecret)
            #expect(moved["idp"]?.clientSecretUnreadable?.contains("auth.oauth_providers.idp.client_secret") == true)
            // Setting it again repairs it.
            _ = try await other.set("auth.smtp", Self.smtp)
            #expect(other.auth().smtp?.password == Self.password && other.auth().smtp?.passwordUnreadable == nil)
        }
    }

    @Test func SS1_aSubmittedEnvelopeIsRefusedNotStored() async throws {
        try await Self.withDirectory { db, _ in
            let settings = Self.settings(db)
            guard case .object(var o) = Self.smtp else { return }
            o["password"] = .object(["sealed": .string("v1:AAAA")])
            await #expect(throws: AeroError.self) { _ = try await settings.set("auth.smtp", .object(o)) }
            let stored = try settings.stored()
            #expect(stored.isEmpty)
        }
    }
}
