// Password hashing with argon2id (RFC 9106) from Debian's libargon2, in the PHC string format
// `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt b64>$<hash b64>`, so the cost travels with
// each hash and can be raised without invalidating old ones. The default cost is OWASP's
// minimum recommendation for argon2id: m = 19 MiB, t = 2, p = 1 (docs/AUTH.md measures it).
// Verification runs in libargon2 and compares in constant time.

import CArgon2
import Kernel

public struct PasswordCost: Sendable, Hashable {
    public var memoryKiB: UInt32
    public var iterations: UInt32
    public var parallelism: UInt32

    public static let standard = PasswordCost(memoryKiB: 19 * 1024, iterations: 2, parallelism: 1)
    /// Named limits on the configurable cost: below the floor a hash is too cheap to guess
    /// against; above the ceiling one sign-in could exhaust a node's memory.
    public static let memoryKiBRange: ClosedRange<UInt32> = 8 * 1024...1024 * 1024
    public static let iterationsRange: ClosedRange<UInt32> = 1...16
    public static let parallelismRange: ClosedRange<UInt32> = 1...8

    public init(memoryKiB: UInt32, iterations: UInt32, parallelism: UInt32) {
        self.memoryKiB = memoryKiB
        self.iterations = iterations
        self.parallelism = parallelism
    }
}

public enum PasswordHasher {
    static let saltBytes = 16
    static let hashBytes = 32
    /// Longest password accepted (bytes): bounds the work a request can ask for.
    public static let passwordBytesMax = 1024

    public static func hash(_ password: String, cost: PasswordCost) throws -> String {
        let salt = SecureRandom.bytes(saltBytes)
        let passwordBytes = Array(password.utf8)
        let encodedLength = argon2_encodedlen(cost.iterations, cost.memoryKiB, cost.parallelism, UInt32(saltBytes),
                                              UInt32(hashBytes), Argon2_id)
        var encoded = [CChar](repeating: 0, count: encodedLength)
        let status = argon2id_hash_encoded(cost.iterations, cost.memoryKiB, cost.parallelism, passwordBytes, passwordBytes.count,
                                           salt, salt.count, hashBytes, &encoded, encodedLength)
        guard status == ARGON2_OK.rawValue else {
            throw AeroError(.internalError, "argon2id failed: \(String(cString: argon2_error_message(status)))")
        }
        return String(decoding: encoded.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True when `password` matches `encoded`; false for a wrong password or a malformed hash.
    public static func verify(_ password: String, encoded: String) -> Bool {
        let passwordBytes = Array(password.utf8)
        return argon2id_verify(encoded, passwordBytes, passwordBytes.count) == ARGON2_OK.rawValue
    }
}

/// Cryptographically secure random bytes (the system generator).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// `count` characters of [A-Za-z0-9] (refresh tokens, message ids).
    public static func token(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet.randomElement(using: &generator)! })
    }

    /// `count` decimal digits (email one-time codes).
    public static func digits(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in Character(String(Int.random(in: 0...9, using: &generator))) })
    }
}
