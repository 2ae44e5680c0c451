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
}
