import Testing
@testable import Kernel

@Suite struct FilterTests {
    typealias F = QueryFixtures

    private func ids(_ filter: String) throws -> [String] {
        try F.ids(#"{"collection":"items","filter":"# + filter + #","order":[{"field":"id"}]}"#, on: try F.data())
    }

    @Test func comparisons() throws {
        #expect(try ids(#"{"qty": 5}"#) == ["a1"])
        #expect(try ids(#"{"qty": {"$eq": 5.0}}"#) == ["a1"])               // int field, float value
        #expect(try ids(#"{"price": 3}"#) == ["a2"])                         // float field, int value
        #expect(try ids(#"{"qty": {"$ne": 5}}"#) == ["a2", "c1", "d1"])       // null is not <> 5 (SQL)
        #expect(try ids(#"{"qty": {"$gt": 0}}"#) == ["a1", "a2"])
        #expect(try ids(#"{"qty": {"$gte": 0}}"#) == ["a1", "a2", "c1"])
        #expect(try ids(#"{"qty": {"$lt": 5}}"#) == ["c1", "d1"])
        #expect(try ids(#"{"qty": {"$lte": 5, "$gt": -3}}"#) == ["a1", "c1"])
        #expect(try ids(#"{"qty": {"$gt": 4.5, "$lt": 12.5}}"#) == ["a1", "a2"])
        #expect(try ids(#"{"qty": {"$gt": 5, "$lt": 3}}"#).isEmpty)          // inverted range: no rows
        #expect(try ids(#"{"name": {"$gt": "a"}}"#) == ["a2", "c1"])          // bytes: uppercase < lowercase
        #expect(try ids(#"{"qty": null}"#) == ["b1"])
        #expect(try ids(#"{"qty": {"$ne": null}}"#) == ["a1", "a2", "c1", "d1"])
        #expect(try ids(#"{"qty": 99}"#).isEmpty)
        #expect(try ids(#"{"active": true}"#) == ["a1", "c1"])
    }

    @Test func inAndIs() throws {
        #expect(try ids(#"{"qty": {"$in": [5, 0, 77]}}"#) == ["a1", "c1"])
        #expect(try ids(#"{"qty": {"$in": []}}"#).isEmpty)
        #expect(try ids(#"{"qty": {"$in": [null, 12]}}"#) == ["a2", "b1"])
        #expect(try ids(#"{"id": {"$in": ["d1", "a1", "zz", "a1"]}}"#) == ["a1", "d1"])
        #expect(try ids(#"{"qty": {"$is": null}}"#) == ["b1"])
        #expect(try ids(#"{"active": {"$is": true}}"#) == ["a1", "c1"])
        #expect(try ids(#"{"active": {"$is": false}}"#) == ["a2", "d1"])
        #expect(try ids(#"{"$not": {"active": {"$is": null}}}"#) == ["a1", "a2", "c1", "d1"])
    }

    @Test func likeAndIlike() throws {
        #expect(try ids(#"{"name": {"$like": "A%"}}"#) == ["a1"])
        #expect(try ids(#"{"name": {"$ilike": "a%"}}"#) == ["a1", "a2"])
        #expect(try ids(#"{"name": {"$like": "%an%"}}"#) == ["b1"])
        #expect(try ids(#"{"name": {"$like": "_pple"}}"#) == ["a1"])
        #expect(try ids(#"{"name": {"$like": "Banana\\_%"}}"#) == ["b1"])     // escaped _
        #expect(try ids(#"{"name": {"$like": "Banana\\_"}}"#).isEmpty)
        #expect(try ids(#"{"name": {"$like": "%100\\%"}}"#) == ["c1"])        // escaped %
        #expect(try ids(#"{"name": {"$like": "%"}}"#) == ["a1", "a2", "b1", "c1"])  // null never matches
        #expect(try ids(#"{"name": {"$ilike": "APPLE"}}"#) == ["a1"])
        #expect(LikePattern.matchesForTest("ééx", "_%x") && !LikePattern.matchesForTest("x", "_%x"))
    }

    @Test func arrayAndJSONOperators() throws {
        #expect(try ids(#"{"tags": {"$contains": ["fruit"]}}"#) == ["a1", "a2"])
        #expect(try ids(#"{"tags": {"$contains": ["fruit", "red"]}}"#) == ["a1"])
        #expect(try ids(#"{"tags": {"$contains": []}}"#) == ["a1", "a2", "b1", "c1"])
        #expect(try ids(#"{"tags": {"$containedBy": ["red", "fruit", "yellow"]}}"#) == ["a1", "b1", "c1"])
        #expect(try ids(#"{"tags": {"$overlaps": ["red", "yellow"]}}"#) == ["a1", "b1"])
        #expect(try ids(#"{"tags": {"$overlaps": []}}"#).isEmpty)
        #expect(try ids(#"{"meta": {"$contains": {"color": "red"}}}"#) == ["a1"])
        #expect(try ids(#"{"meta": {"$contains": {"size": 3.0}}}"#) == ["a1"])
        #expect(try ids(#"{"meta": {"$containedBy": {"color": "orange", "x": 1}}}"#) == ["a2"])
        #expect(try ids(#"{"meta": {"color": "orange"}}"#) == ["a2"])           // json equality
    }

    @Test func fulltext() throws {
        #expect(try ids(#"{"body": {"$fts": "QUICK brown"}}"#) == ["a1", "a2"])
        #expect(try ids(#"{"body": {"$fts": "fox dog"}}"#) == ["a1", "d1"])
        #expect(try ids(#"{"body": {"$fts": {"query": "brown fox", "mode": "phrase"}}}"#) == ["a1"])
        #expect(try ids(#"{"body": {"$fts": {"query": "fox brown", "mode": "phrase"}}}"#).isEmpty)
        #expect(try ids(#"{"body": {"$fts": {"query": "\"lazy dog\" or afternoon", "mode": "websearch"}}}"#) == ["a1", "b1"])
        #expect(try ids(#"{"body": {"$fts": {"query": "fox -quick", "mode": "websearch", "language": "english"}}}"#) == ["d1"])
        #expect(try ids(#"{"body": {"$fts": {"query": "(bread | friends) & !lunch", "mode": "tsquery"}}}"#) == ["d1"])
        #expect(try ids(#"{"body": {"$fts": {"query": "quick <-> brown", "mode": "tsquery"}}}"#) == ["a1"])
        #expect(try ids(#"{"body": {"$fts": "jump"}}"#).isEmpty)                 // no stemming
        #expect(try ids(#"{"body": {"$fts": "  ... "}}"#).isEmpty)               // no words: nothing
    }

    @Test func booleanNesting() throws {
        #expect(try ids(#"{"$or": [{"qty": 5}, {"qty": {"$lt": 0}}]}"#) == ["a1", "d1"])
        #expect(try ids(#"{"$and": [{"cat": "fruit"}, {"$not": {"qty": 5}}]}"#) == ["a2"])
        #expect(try ids(#"{"$not": {"$or": [{"cat": "fruit"}, {"cat": null}]}}"#) == ["b1", "c1"])
        #expect(try ids(#"{"cat": "fruit", "qty": {"$gt": 6}}"#) == ["a2"])
        #expect(try ids(#"{"$or": [{"$and": [{"cat": "veg"}, {"qty": 0}]}, {"name": {"$like": "B%"}}]}"#) == ["b1", "c1"])
        #expect(try ids(#"{"$not": {"$not": {"qty": 12}}}"#) == ["a2"])
    }

    @Test func swiftCallersBuildFiltersDirectly() throws {
        let data = try F.data()
        let query = Query(collection: "items",
                          filter: .or([.compare(field: "qty", op: .gte, value: .int(12)),
                                       .like(field: "name", pattern: "c%", caseInsensitive: false)]),
                          order: [Sort(field: "id")])
        let result = try QueryEngine.execute(query, on: data, options: QueryOptions())
        #expect(result.rows.map { $0["id"] } == [.string("a2"), .string("c1")])
    }
}

extension LikePattern {
    static func matchesForTest(_ text: String, _ pattern: String) -> Bool {
        (try? LikePattern(pattern, caseInsensitive: false))?.matches(text) ?? false
    }
}
