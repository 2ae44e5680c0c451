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
        let siblings = Array(repeating: "!(a | !b)", count: 500).joined(separator: " & ")
        #expect(try TextQuery.parse(siblings, mode: .tsquery) != .nothing)
    }

    @Test func theQueryLanguagesFtsRefusesItToo() throws {
        let hostile = String(repeating: "!", count: 10_000) + "fox"
        let query = #"{"collection":"items","filter":{"body":{"$fts":{"query":""# + hostile + #"","mode":"tsquery"}}}}"#
        #expect(throws: AeroError.self) { _ = try QueryFixtures.ids(query, on: try QueryFixtures.data()) }
        let unindexed = #"{"collection":"items","filter":{"name":{"$fts":{"query":""# + hostile + #"","mode":"tsquery","language":"english"}}}}"#
        #expect(throws: AeroError.self) { _ = try QueryFixtures.ids(unindexed, on: try QueryFixtures.data()) }
    }
}
