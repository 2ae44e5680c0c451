import Testing
@testable import Kernel

/// Every recursive rule of the tsquery parser (`'!' unary`, `'(' or ')'`) counts against
/// `TSQueryParser.nestingDepthMax` (Q1): hostile nesting is refused, never a stack overflow.
@Suite struct TextQueryDepthTests {
    private func refused(_ text: String) -> Bool {
        do {
            _ = try TextQuery.parse(text, mode: .tsquery)
            return false
        } catch let error as AeroError {
            return error.code == .queryInvalid
        } catch {
            return false
        }
    }

    @Test func tenThousandNegationsAreRefused() {
        #expect(refused(String(repeating: "!", count: 10_000) + "word"))
        #expect(refused(String(repeating: "! ", count: 10_000) + "word"))
        #expect(refused("a & " + String(repeating: "!", count: 10_000) + "word"))
    }

    @Test func deepParenthesesAndMixturesAreRefused() {
        #expect(refused(String(repeating: "(", count: 10_000) + "w" + String(repeating: ")", count: 10_000)))
        #expect(refused(String(repeating: "!(", count: 5_000) + "w" + String(repeating: ")", count: 5_000)))
        #expect(refused(String(repeating: "(", count: 10_000)))
    }

    @Test func nestingUpToTheBoundParsesAndMatches() throws {
        let max = TSQueryParser.nestingDepthMax
        let even = try TextQuery.parse(String(repeating: "!", count: max) + "fox", mode: .tsquery)
        #expect(even.matches(TokenizedText("the fox")) && !even.matches(TokenizedText("the dog")))
        #expect(refused(String(repeating: "!", count: max + 1) + "fox"))
        let grouped = try TextQuery.parse(String(repeating: "(", count: max) + "fox" + String(repeating: ")", count: max), mode: .tsquery)
        #expect(grouped.matches(TokenizedText("fox")))
        #expect(refused(String(repeating: "(", count: max + 1) + "fox" + String(repeating: ")", count: max + 1)))
        // Depth is per path, not a total: many sibling groups are fine.
        let siblings = Array(repeating: "!(a | !b)", count: TextQuery.termsMax / 2).joined(separator: " & ")
        #expect(try TextQuery.parse(siblings, mode: .tsquery) != .nothing)
    }

    @Test func wordsPerQueryAreBoundedInEveryMode() throws {
        let max = TextQuery.termsMax
        let phrase = Array(repeating: "a", count: max + 1).joined(separator: "<->")
        for mode in FullTextMode.allCases {
            let text = mode == .tsquery ? phrase : Array(repeating: "a", count: max + 1).joined(separator: " ")
            #expect(throws: AeroError.self, "\(mode)") { _ = try TextQuery.parse(text, mode: mode) }
        }
        // 100,000 words joined by <-> once took quadratic time in the parser: refused at once.
        #expect(refused(Array(repeating: "w", count: 100_000).joined(separator: "<->")))
        let atMax = try TextQuery.parse(Array(repeating: "a", count: max).joined(separator: "<->"), mode: .tsquery)
        #expect(atMax == .phrase(Array(repeating: "a", count: max)))
    }

    @Test func theQueryLanguagesFtsRefusesItToo() throws {
        let hostile = String(repeating: "!", count: 10_000) + "fox"
        let query = #"{"collection":"items","filter":{"body":{"$fts":{"query":""# + hostile + #"","mode":"tsquery"}}}}"#
        #expect(throws: AeroError.self) { _ = try QueryFixtures.ids(query, on: try QueryFixtures.data()) }
        let unindexed = #"{"collection":"items","filter":{"name":{"$fts":{"query":""# + hostile + #"","mode":"tsquery","language":"english"}}}}"#
        #expect(throws: AeroError.self) { _ = try QueryFixtures.ids(unindexed, on: try QueryFixtures.data()) }
    }
}
