// Integers a client sends to /auth/v1 (query parameters, body fields, durations): each is read
// through a named range (the caller's constant, listed in docs/LIMITS.md) and combined with
// saturating arithmetic, so no client value can overflow a computation and stop the node.
// Out of range answers GoTrue's 400 shape (`validation_failed`, the message naming the range).

enum AuthInput {
    /// A decimal integer parameter (digits only, as Go's strconv.ParseUint reads GoTrue's), nil
    /// when absent or empty (as GoTrue: supabase-py sends `page=` for "no page"); refused when
    /// it is not one or lies outside `range`.
    static func integer(_ text: String?, _ name: String, in range: ClosedRange<Int64>, context: String = "") throws -> Int64? {
        guard let text, !text.isEmpty else { return nil }
        guard text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let value = Int64(text), range.contains(value) else {
            throw AuthFailure.validation("\(context)\(name) must be an integer within \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    static func add(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? .max : .min) : sum
    }

    static func subtract(_ a: Int64, _ b: Int64) -> Int64 {
        let (difference, overflow) = a.subtractingReportingOverflow(b)
        return overflow ? (b < 0 ? .max : .min) : difference
    }

    static func multiply(_ a: Int64, _ b: Int64) -> Int64 {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? ((a < 0) == (b < 0) ? .max : .min) : product
    }

    /// `seconds` from now, in microseconds since the epoch (saturating).
    static func micros(afterSeconds seconds: Int64, now: Int64) -> Int64 { add(now, multiply(seconds, 1_000_000)) }
}
