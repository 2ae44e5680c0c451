import Testing
@testable import Kernel

@Suite struct MalformedQueryTests {
    typealias F = QueryFixtures

    private func code(_ text: String) throws -> AeroError.Code? {
        let data = try F.data()
        do {
            _ = try QueryEngine.execute(try Query.parse(try F.json(text)), on: data, options: QueryOptions())
            return nil
        } catch let error as AeroError {
            return error.code
        }
    }

    @Test(arguments: [
        #"[]"#,
        #"{"filter":{}}"#,
        #"{"collection":"items","bogus":1}"#,
        #"{"collection":"items","limit":-1}"#,
        #"{"collection":"items","limit":10001}"#,
        #"{"collection":"items","limit":1.5}"#,
        #"{"collection":"items","offset":-3}"#,
        #"{"collection":"items","count":"yes"}"#,
        #"{"collection":"items","select":[]}"#,
        #"{"collection":"items","select":["id","id"]}"#,
        #"{"collection":"items","order":"qty"}"#,
        #"{"collection":"items","order":[{"field":"qty","dir":"up"}]}"#,
        #"{"collection":"items","order":[{"field":"qty","nulls":"middle"}]}"#,
        #"{"collection":"items","order":[{"field":"qty"},{"field":"qty"}]}"#,
        #"{"collection":"items","filter":[]}"#,
        #"{"collection":"items","filter":{"qty":{"$between":[1,2]}}}"#,
        #"{"collection":"items","filter":{"qty":{"$gt":1,"lt":2}}}"#,
        #"{"collection":"items","filter":{"$xor":[]}}"#,
        #"{"collection":"items","filter":{"$and":[]}}"#,
        #"{"collection":"items","filter":{"$or":{}}}"#,
        #"{"collection":"items","filter":{"qty":{"$gt":null}}}"#,
        #"{"collection":"items","filter":{"qty":{"$in":5}}}"#,
        #"{"collection":"items","filter":{"qty":{"$is":5}}}"#,
        #"{"collection":"items","filter":{"name":{"$like":5}}}"#,
        #"{"collection":"items","filter":{"name":{"$like":"abc\\"}}}"#,
        #"{"collection":"items","filter":{"body":{"$fts":{"query":"a","mode":"fuzzy"}}}}"#,
        #"{"collection":"items","filter":{"body":{"$fts":{"query":"a","language":"klingon"}}}}"#,
        #"{"collection":"items","filter":{"body":{"$fts":{"query":"(a & ","mode":"tsquery"}}}}"#,
        #"{"collection":"items","filter":{"body":{"$fts":{"query":"a <-> !b","mode":"tsquery"}}}}"#,
        #"{"collection":"items","filter":{"tags":{"$overlaps":"red"}}}"#,
        #"{"collection":"items","after":{"id":"a1"},"order":[{"field":"qty"}]}"#,
        #"{"collection":"other"}"#,
    ])
    func refusedAsInvalid(_ text: String) throws {
        #expect(try code(text) == .queryInvalid, "\(text)")
    }

    @Test(arguments: [
        #"{"collection":"items","filter":{"nope":1}}"#,
        #"{"collection":"items","filter":{"$or":[{"qty":1},{"missing":{"$gt":2}}]}}"#,
        #"{"collection":"items","order":[{"field":"ghost"}]}"#,
        #"{"collection":"items","select":["id","ghost"]}"#,
    ])
    func refusedAsUnknownField(_ text: String) throws {
        #expect(try code(text) == .unknownField, "\(text)")
    }

    @Test(arguments: [
        #"{"collection":"items","filter":{"qty":"5"}}"#,
        #"{"collection":"items","filter":{"qty":{"$gt":"NaN"}}}"#,
        #"{"collection":"items","filter":{"name":5}}"#,
        #"{"collection":"items","filter":{"qty":{"$in":[1,"two",3]}}}"#,
        #"{"collection":"items","filter":{"active":"true"}}"#,
        #"{"collection":"items","filter":{"qty":{"$is":true}}}"#,
        #"{"collection":"items","filter":{"qty":{"$like":"1%"}}}"#,
        #"{"collection":"items","filter":{"tags":{"$contains":["a",1]}}}"#,
        #"{"collection":"items","filter":{"qty":{"$contains":[1]}}}"#,
        #"{"collection":"items","filter":{"qty":{"$fts":"x"}}}"#,
        #"{"collection":"items","filter":{"tags":"red"}}"#,
    ])
    func refusedAsTypeMismatch(_ text: String) throws {
        #expect(try code(text) == .typeMismatch, "\(text)")
    }

    @Test func oddButValidInputsNeverCrash() throws {
        let data = try F.data()
        for text in [
            #"{"collection":"items","filter":{"qty":1e300}}"#,
            #"{"collection":"items","filter":{"qty":{"$lt":-9223372036854775808}}}"#,
            #"{"collection":"items","filter":{"qty":{"$gt":9223372036854775807}}}"#,
            #"{"collection":"items","filter":{"name":"\u0000🙂é\u202e"}}"#,
            #"{"collection":"items","filter":{"name":{"$ilike":"%%%%_%%%_%%%%%%%%%%%%%%%%%%%%%%%x"}}}"#,
            #"{"collection":"items","filter":{"meta":{"$contains":[[[[]]]]}}}"#,
            #"{"collection":"items","filter":{"id":{"$in":[]}}}"#,
            #"{"collection":"items","filter":{"body":{"$fts":{"query":"!!!a | (b & (c))","mode":"tsquery"}}}}"#,
            #"{"collection":"items","filter":{"body":{"$fts":{"query":"\"unterminated -","mode":"websearch"}}}}"#,
            #"{"collection":"items","offset":1000000,"limit":10000}"#,
        ] {
            _ = try QueryEngine.execute(try Query.parse(try F.json(text)), on: data, options: QueryOptions())
        }
    }

    @Test func deepNestingIsRefused() throws {
        var text = #"{"qty":1}"#
        for _ in 0..<(KernelLimits.filterDepthMax + 1) { text = #"{"$not":"# + text + "}" }
        #expect(try code(#"{"collection":"items","filter":"# + text + "}") == .queryInvalid)
        // The same depth built in Swift is refused too, without recursing through all of it.
        var filter = Filter.compare(field: "qty", op: .eq, value: .int(1))
        for _ in 0..<2_000 { filter = .not(filter) }
        let error = #expect(throws: AeroError.self) {
            try QueryEngine.explain(Query(collection: "items", filter: filter), on: try F.data(), options: QueryOptions())
        }
        #expect(error?.code == .queryInvalid)
        // At the limit it is accepted.
        var ok = #"{"qty":1}"#
        for _ in 0..<KernelLimits.filterDepthMax { ok = #"{"$not":"# + ok + "}" }
        #expect(try code(#"{"collection":"items","filter":"# + ok + "}") == nil)
    }

    @Test func inListIsBounded() throws {
        let values = (0...KernelLimits.inListMax).map(String.init).joined(separator: ",")
        #expect(try code(#"{"collection":"items","filter":{"qty":{"$in":["# + values + "]}}}") == .queryInvalid)
    }

    @Test func swiftLimitAboveOptionsMaxIsRefused() throws {
        let error = #expect(throws: AeroError.self) {
            try QueryEngine.execute(Query(collection: "items", limit: 50), on: try F.data(), options: QueryOptions(limitMax: 10))
        }
        #expect(error?.code == .queryInvalid)
    }
}
