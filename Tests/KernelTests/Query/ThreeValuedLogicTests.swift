import Testing
@testable import Kernel

/// Filters follow SQL's three-valued logic (Filter.swift, Predicate.evaluate): a test on a null
/// field is UNKNOWN, NOT UNKNOWN is UNKNOWN, and only TRUE selects a row. Fixture qty values:
/// a1 5, a2 12, b1 null, c1 0, d1 -3; name: d1 null; tags: d1 null; body: c1 null.
@Suite struct ThreeValuedLogicTests {
    typealias F = QueryFixtures

    private func ids(_ filter: String) throws -> [String] {
        try F.ids(#"{"collection":"items","filter":"# + filter + #","order":[{"field":"id"}]}"#, on: try F.data())
    }

    @Test func notOfAComparisonLeavesOutNullRows() throws {
        #expect(try ids(#"{"$not": {"qty": 5}}"#) == ["a2", "c1", "d1"])            // b1 (null) is not returned
        #expect(try ids(#"{"$not": {"qty": {"$gt": 0}}}"#) == ["c1", "d1"])
        #expect(try ids(#"{"$not": {"$not": {"qty": 5}}}"#) == ["a1"])
        #expect(try ids(#"{"qty": {"$ne": 5}}"#) == ["a2", "c1", "d1"])             // same as NOT =
    }

    @Test func notOfInLikeContainmentAndFulltextLeavesOutNullRows() throws {
        #expect(try ids(#"{"$not": {"qty": {"$in": [5, 12]}}}"#) == ["c1", "d1"])
        #expect(try ids(#"{"$not": {"name": {"$like": "A%"}}}"#) == ["a2", "b1", "c1"])
        #expect(try ids(#"{"$not": {"name": {"$ilike": "a%"}}}"#) == ["b1", "c1"])
        #expect(try ids(#"{"$not": {"tags": {"$contains": ["fruit"]}}}"#) == ["b1", "c1"])
        #expect(try ids(#"{"$not": {"tags": {"$overlaps": ["red", "yellow"]}}}"#) == ["a2", "c1"])
        #expect(try ids(#"{"$not": {"body": {"$fts": "fox"}}}"#) == ["a2", "b1"])
    }

    @Test func andOrCombineUnknownAsSQLDoes() throws {
        // UNKNOWN OR FALSE is UNKNOWN: b1 is in neither a filter nor its negation.
        #expect(try ids(#"{"$or": [{"qty": 5}, {"$not": {"qty": 5}}]}"#) == ["a1", "a2", "c1", "d1"])
        #expect(try ids(#"{"$not": {"$or": [{"qty": 5}, {"name": "Apple"}]}}"#) == ["a2", "c1"])
        // FALSE AND UNKNOWN is FALSE, so its negation is TRUE: every row, b1 included.
        #expect(try ids(#"{"$not": {"$and": [{"qty": {"$gt": 100}}, {"name": "x"}]}}"#) == ["a1", "a2", "b1", "c1", "d1"])
        // TRUE OR UNKNOWN is TRUE.
        #expect(try ids(#"{"$or": [{"qty": 5}, {"name": "Banana_split"}]}"#) == ["a1", "b1"])
    }

    @Test func isAndEqNullStayTwoValued() throws {
        #expect(try ids(#"{"$not": {"qty": {"$is": null}}}"#) == ["a1", "a2", "c1", "d1"])
        #expect(try ids(#"{"$not": {"qty": null}}"#) == ["a1", "a2", "c1", "d1"])
        #expect(try ids(#"{"$not": {"qty": {"$ne": null}}}"#) == ["b1"])
        #expect(try ids(#"{"$not": {"active": {"$is": true}}}"#) == ["a2", "b1", "d1"])
    }

    @Test func theMatcherUsedByPoliciesAgrees() throws {
        let matcher = try FilterMatcher(.not(.compare(field: "qty", op: .eq, value: .int(1))), schema: F.schema)
        #expect(!matcher.matches(["id": .string("x")]))                     // missing field reads as null
        #expect(!matcher.matches(["id": .string("x"), "qty": .null]))
        #expect(matcher.matches(["id": .string("x"), "qty": .int(2)]))
        #expect(!matcher.matches(["id": .string("x"), "qty": .int(1)]))
        // The policy compiler's TRUE constant (`NOT pk IN []`) stays TRUE on every row.
        let always = try FilterMatcher(.not(.in(field: "id", values: [])), schema: F.schema)
        #expect(always.matches(["id": .string("x")]))
    }
}
