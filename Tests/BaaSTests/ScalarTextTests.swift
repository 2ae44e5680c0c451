import Foundation
import Testing
import Kernel
@testable import BaaS

/// Quoting goes by Unicode scalar (Sources/BaaS/HTTP/ScalarText.swift): a quote followed by a
/// combining mark is one Swift Character that is not a quote, and "\r\n" is one Character that is
/// neither "\r" nor "\n"; Character-based escaping missed both.
@Suite struct ScalarTextTests {
    /// The policy fuzz target's finding: `''` followed by U+065E inside a claim name printed as a
    /// single quote (canonical text that did not parse back).
    @Test func aPolicyQuoteBeforeACombiningMarkRoundTrips() throws {
        let text = "auth.jwt() ->> 'a''\u{65E}b' = 'x''\u{301}'"
        let expression = try PolicyExpression.parse(text)
        let again = try PolicyExpression.parse(expression.description)
        #expect(again == expression, "\(expression.description)")
    }

    @Test func csvFieldsQuoteEveryQuoteAndLineBreak() {
        var out: [UInt8] = []
        CSV.append(.object(["a": .string("x\"\u{301}y"), "b": .string("1\r\n2"), "c": .string("plain")]), columns: ["a", "b", "c"], to: &out)
        let expected = "\"x\"\"\u{301}y\",\"1\r\n2\",plain\n"
        #expect(String(decoding: out, as: UTF8.self) == expected)
    }

    @Test func arrayLiteralsEscapeByScalar() {
        let literal = SelectCast.arrayLiteral([.string("q\"\u{301}"), .string("b\\\u{301}"), .string("c\r\nd")])
        let expected = "{\"q\\\"\u{301}\",\"b\\\\\u{301}\",\"c\r\nd\"}"
        #expect(literal == expected)
    }

    @Test func unescapingIsOnePassByScalar() {
        let cases: [(String, String)] = [
            ("a\\\"\u{301}b", "a\"\u{301}b"),
            ("a\\\\\"b", "a\\\"b"),
            ("a\\nb\\", "a\\nb\\"),
        ]
        for (escaped, plain) in cases {
            let unescaped = escaped.unescapingQuotesAndBackslashes()
            #expect(unescaped == plain)
        }
        let stars = "*\u{301}x*".replacingScalar("*", with: "%"), percents = "%\u{301}x%"
        #expect(stars == percents)
    }
}
