// Escaping and unescaping by Unicode scalar, never by Character.
//
// Swift compares Strings by grapheme cluster: a quote followed by a combining mark ("'\u{65E}")
// is one Character that is not "'", and "\r\n" is one Character that is neither "\r" nor "\n".
// `replacingOccurrences(of:)`, `contains(_:)` and Character comparisons therefore miss such a
// quote, while every parser here reads bytes and sees it: an escaped text would not parse back
// (the policy fuzz target found a canonical policy text that did not re-parse), and a CSV field
// holding "\r\n" went out unquoted. Every quoting and escaping of outside text goes through here.

extension String {
    /// Every `scalar` replaced by `replacement`, scalar by scalar.
    func replacingScalar(_ scalar: Unicode.Scalar, with replacement: String) -> String {
        var out = String.UnicodeScalarView()
        for s in unicodeScalars {
            if s == scalar { out.append(contentsOf: replacement.unicodeScalars) } else { out.append(s) }
        }
        return String(out)
    }

    /// Whether any scalar of the text is one of `scalars`.
    func containsScalar(of scalars: String) -> Bool {
        let set = Set(scalars.unicodeScalars)
        return unicodeScalars.contains { set.contains($0) }
    }

    /// `\"` → `"` and `\\` → `\` in one pass (a quoted string's escapes); any other backslash stays.
    func unescapingQuotesAndBackslashes() -> String {
        var out = String.UnicodeScalarView()
        var escaped = false
        for s in unicodeScalars {
            if escaped {
                if s != "\"" && s != "\\" { out.append("\\") }
                out.append(s)
                escaped = false
            } else if s == "\\" {
                escaped = true
            } else {
                out.append(s)
            }
        }
        if escaped { out.append("\\") }
        return String(out)
    }
}
