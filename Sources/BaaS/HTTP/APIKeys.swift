// The two API keys of a node (or cluster): long-lived HS256 JWTs with the `role` claim the
// Supabase clients expect (`anon`, `service_role`), like Supabase's own keys.

import Kernel

public enum APIKeys {
    /// Supabase's self-hosted keys live ten years; so do ours (rotate by changing the secret).
    public static let lifetimeSeconds: Int64 = 10 * 365 * 86_400

    public static func make(role: String, secret: [UInt8], nowSeconds: Int64) -> String {
        JWT.sign(.object(["role": .string(role), "iss": .string("aerodb"), "iat": .int(nowSeconds),
                          "exp": .int(nowSeconds + lifetimeSeconds)]), secret: secret)
    }

    /// The role of a verified key or token; AERO_AUTH_UNAUTHORIZED when it does not verify
    /// or names no role we know.
    public static func role(of token: String, secret: [UInt8], nowSeconds: Int64) throws -> String {
        let claims = try JWT.verify(token, secret: secret, nowSeconds: nowSeconds)
        guard case .string(let role)? = claims["role"], ["anon", "service_role", "authenticated"].contains(role) else {
            throw AeroError(.unauthorized, "token has no known role")
        }
        return role
    }
}
