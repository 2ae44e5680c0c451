import Testing
@testable import Kernel

@Suite struct PlannerTests {
    typealias F = QueryFixtures

    private func plan(_ filter: String, order: String = "[]", extra: String = "") throws -> Plan {
        try F.plan(#"{"collection":"items","filter":"# + filter + #","order":"# + order + extra + "}", on: try F.data())
    }

    @Test func priorityTable() throws {
        // 1. key lookup beats everything.
        var p = try plan(#"{"id": "a1", "sku": "S-1", "qty": 5}"#)
        #expect(p.access == .keyLookup && p.index == nil)
        #expect(p.residual.count == 2)
        p = try plan(#"{"id": {"$in": ["a2", "a1"]}}"#)
        #expect(p.access == .keyLookup && p.candidateRows == 2)
        // 2. unique index equality beats a longer non-unique prefix.
        p = try plan(#"{"sku": "S-1", "cat": "fruit", "qty": 5}"#)
        #expect(p.access == .uniqueIndex && p.index == "items_sku")
        // 3. longest equality prefix, plus a range on the next field.
        p = try plan(#"{"cat": "fruit", "qty": 5}"#)
        #expect(p.access == .indexEquality && p.index == "items_cat_qty")
        #expect(p.residual.isEmpty)
        p = try plan(#"{"cat": "fruit", "qty": {"$gt": 1, "$lte": 20}, "name": {"$like": "a%"}}"#)
        #expect(p.access == .indexEquality && p.index == "items_cat_qty")
        #expect(p.bounds.count == 3 && p.residual == [#"name LIKE "a%""#])
        // Ties on prefix length go to the first index by name.
        p = try plan(#"{"qty": 5}"#)
        #expect(p.access == .indexEquality && p.index == "items_qty")
        // 4. range on an index's first field.
        p = try plan(#"{"qty": {"$gte": 1}, "name": "x"}"#)
        #expect(p.access == .indexRange && p.index == "items_qty" && p.residual == [#"name = "x""#])
        // 5. fulltext index.
        p = try plan(#"{"body": {"$fts": "quick fox"}}"#)
        #expect(p.access == .fulltextIndex && p.index == "items_body_fts")
        // 6. ordered index matching the sort.
        p = try plan(#"{"name": {"$ne": "x"}}"#, order: #"[{"field":"qty"}]"#)
        #expect(p.access == .orderedIndexScan && p.index == "items_qty" && p.sortSatisfied && !p.reverse)
        // ... but not when nulls would come out in the wrong place.
        p = try plan(#"{"name": {"$ne": "x"}}"#, order: #"[{"field":"qty","nulls":"first"}]"#)
        #expect(p.access == .fullScan && !p.sortSatisfied)
        p = try plan(#"{"name": {"$ne": "x"}}"#, order: #"[{"field":"qty","dir":"desc"}]"#)
        #expect(p.access == .orderedIndexScan && p.reverse)
        // 7. full scan; OR at top level cannot use an index.
        p = try plan(#"{"$or": [{"qty": 5}, {"sku": "S-2"}]}"#)
        #expect(p.access == .fullScan && p.residual.count == 1)
    }

    @Test func planIsDeterministic() throws {
        let data = try F.data()
        let text = #"{"collection":"items","filter":{"qty":{"$gt":1},"cat":"fruit","name":{"$ne":"z"}},"order":[{"field":"qty"}]}"#
        let permuted = #"{"order":[{"field":"qty"}],"filter":{"name":{"$ne":"z"},"cat":"fruit","qty":{"$gt":1}},"collection":"items"}"#
        let first = try F.plan(text, on: data)
        for _ in 0..<20 {
            #expect(try F.plan(text, on: data) == first)
            #expect(try F.plan(permuted, on: data) == first)
        }
        #expect(first.json == (try F.plan(permuted, on: data)).json)
    }

    @Test func orderByIndexReadsOnlyTheLimit() throws {
        var data = CollectionData(schema: F.schema)
        for i in 0..<5_000 { try data.put(F.doc("k\(i)", qty: Int64(i % 1_000), cat: "c\(i % 3)")) }
        let q = try Query.parse(try F.json(#"{"collection":"items","order":[{"field":"qty","dir":"desc"}],"limit":10}"#))
        let r = try QueryEngine.execute(q, on: data, options: QueryOptions(scanRowsMax: 100))
        #expect(r.plan.access == .orderedIndexScan && r.rowsExamined == 10 && r.plan.rowsExaminedBound == 10)
        #expect(r.rows.map { $0["qty"] } == Array(repeating: JSONValue.int(999), count: 5) + Array(repeating: .int(998), count: 5))
        // Ties come in primary key order in the sort's direction, same as a sorted full scan.
        let sorted = try QueryEngine.execute(
            Query(collection: "items", filter: .compare(field: "cat", op: .ne, value: .string("zz")),
                  order: [Sort(field: "qty", direction: .desc, nulls: .last)], limit: 10),
            on: data, options: QueryOptions(scanRowsMax: 10_000))
        #expect(sorted.plan.access == .fullScan)
        #expect(sorted.rows == r.rows)
        // Equality + range + order on the composite index: no sort, no residual.
        let eq = try QueryEngine.execute(try Query.parse(try F.json(
            #"{"collection":"items","filter":{"cat":"c1","qty":{"$gte":10}},"order":[{"field":"qty"}],"limit":3,"count":true}"#)),
            on: data, options: QueryOptions(scanRowsMax: 100))
        #expect(eq.plan.index == "items_cat_qty" && eq.plan.sortSatisfied && eq.rowsExamined == 3)
        #expect(eq.totalCount == 1_650)
    }

    @Test func unboundedScansAreRefusedNamingTheIndex() throws {
        var data = CollectionData(schema: F.schema)
        for i in 0..<300 { try data.put(F.doc("k\(i)", name: "n\(i)", qty: Int64(i))) }
        let options = QueryOptions(scanRowsMax: 100)
        let cases: [(String, String)] = [
            (#"{"collection":"items","filter":{"name":"n5"}}"#, #"declare an index on ["name"]"#),
            (#"{"collection":"items","filter":{"price":{"$gt":1}}}"#, #"declare an index on ["price"]"#),
            (#"{"collection":"items","order":[{"field":"name"}]}"#, #"declare an index on ["name"]"#),
            (#"{"collection":"items","filter":{"qty":{"$gte":0},"name":"x"}}"#, #"declare an index on ["name"]"#),
        ]
        for (text, advice) in cases {
            let error = #expect(throws: AeroError.self) { try F.ids(text, on: data, options: options) }
            #expect(error?.code == .queryUnbounded)
            #expect(error?.message.contains(advice) == true, "\(error?.message ?? "")")
        }
        // Bounded variants pass: a narrow index range, or no filter with a small limit.
        #expect(try F.ids(#"{"collection":"items","filter":{"qty":{"$gte":0,"$lt":50},"name":"n7"}}"#,
                          on: data, options: options) == ["k7"])
        #expect(try F.ids(#"{"collection":"items","limit":5}"#, on: data, options: options).count == 5)
        #expect(try F.plan(#"{"collection":"items","limit":5}"#, on: data, options: options).rowsExaminedBound == 5)
    }

    @Test func explainJSONHasEveryField() throws {
        let p = try F.plan(#"{"collection":"items","filter":{"qty":{"$gt":1}}}"#, on: try F.data())
        guard case .object(let o) = p.json else { Issue.record("plan json is not an object"); return }
        #expect(Set(o.keys) == ["collection", "access", "index", "bounds", "direction", "residual", "sort_satisfied",
                                "candidate_rows", "rows_examined_bound"])
        #expect(o["access"] == .string("indexRange") && o["candidate_rows"] == .int(2))
    }

    /// A point read (one `eq` on the primary key) is planned without the conjunct analysis
    /// (Planner.pointRead); the plan and the answer are those of the same query written another
    /// way (T1), and a missing key, a null key, a limit of 0, an offset and an exact count answer
    /// as the general path does.
    @Test func pointReadPlansAndAnswersAsTheGeneralPath() throws {
        let data = try F.data()
        let direct = try plan(#"{"id": "a2"}"#)
        let wrapped = try plan(#"{"$and": [{"id": {"$eq": "a2"}}]}"#)
        #expect(direct == wrapped)
        #expect(direct.access == .keyLookup && direct.bounds == [#"id = "a2""#] && direct.residual.isEmpty)
        #expect(direct.candidateRows == 1 && direct.rowsExaminedBound == 1 && direct.sortSatisfied)
        #expect(try F.ids(#"{"collection":"items","filter":{"id":"a2"}}"#, on: data) == ["a2"])
        #expect(try F.ids(#"{"collection":"items","filter":{"id":"zz"}}"#, on: data) == [])
        #expect(try F.ids(#"{"collection":"items","filter":{"id":"a2"},"limit":0}"#, on: data) == [])
        #expect(try F.ids(#"{"collection":"items","filter":{"id":"a2"},"offset":1}"#, on: data) == [])
        #expect(try plan(#"{"id": null}"#).candidateRows == 0)
        for (key, total) in [("a2", 1), ("zz", 0)] {
            let q = try Query.parse(try F.json(#"{"collection":"items","count":true,"filter":{"id":""# + key + #""}}"#))
            let result = try QueryEngine.execute(q, on: data)
            #expect(result.totalCount == total && result.plan.candidateRows == total)
        }
        // A residual beside the key, or keyset pagination, still takes the general path.
        #expect(try plan(#"{"id": "a2", "qty": 12}"#).residual == ["qty = 12"])
        #expect(try F.ids(#"{"collection":"items","filter":{"id":"a2","qty":5}}"#, on: data) == [])
        // A scan bound of 0 refuses even a point read (Q1), with the plan in the error.
        #expect(throws: AeroError.self) {
            try F.plan(#"{"collection":"items","filter":{"id":"a2"}}"#, on: data, options: QueryOptions(scanRowsMax: 0))
        }
    }
}
