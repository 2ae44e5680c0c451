// Tokenizer of fulltext indexes and `$fts` queries (one rule for both, so they always agree).
//
// A token is a maximal run of Unicode letters and digits (`Character.isLetter || isNumber`, which
// covers every script); everything else separates tokens. Tokens are case-folded with
// `lowercased()`. There is no stemming and there are no stop words, for every language: "runs"
// does not match "run", and "the" is searchable. The `language` of a query is accepted for
// compatibility and does not change tokenization.

public enum TextTokenizer {
    /// Longest token kept, in characters: bounds index key size; longer runs are truncated.
    public static let tokenCharactersMax = 64

    /// Tokens in text order, with repeats.
    public static func tokens(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        var length = 0
        for ch in text {
            if ch.isLetter || ch.isNumber {
                if length < tokenCharactersMax { current.append(ch); length += 1 }
            } else if !current.isEmpty {
                out.append(current.lowercased())
                current = ""
                length = 0
            }
        }
        if !current.isEmpty { out.append(current.lowercased()) }
        return out
    }
}
