import Testing
@testable import Kernel

@Suite struct ExecutionTests {
    typealias F = QueryFixtures

    @Test func sortWithNullsOnSeveralFields() throws {
        let data = try F.data()
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"qty"}]}"#, on: data) == ["d1", "c1", "a1", "a2", "b1"])
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"qty","nulls":"first"}]}"#, on: data)
                == ["b1", "d1", "c1", "a1", "a2"])
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"qty","dir":"desc"}]}"#, on: data)
                == ["b1", "a2", "a1", "c1", "d1"])
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"qty","dir":"desc","nulls":"last"}]}"#, on: data)
                == ["a2", "a1", "c1", "d1", "b1"])
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"active","nulls":"first"},{"field":"price","dir":"desc"}]}"#, on: data)
                == ["b1", "a2", "d1", "a1", "c1"])
        #expect(try F.ids(#"{"collection":"items","order":[{"field":"cat","dir":"desc"},{"field":"id","dir":"desc"}]}"#, on: data)
                == ["d1", "c1", "a2", "a1", "b1"])
    }

    @Test func limitOffsetCountAndProjection() throws {
        let data = try F.data()
        let q = try Query.parse(try F.json(
            #"{"collection":"items","filter":{"qty":{"$gte":0}},"order":[{"field":"id"}],"limit":2,"offset":1,"count":true,"select":["id","qty"]}"#))
        let r = try QueryEngine.execute(q, on: data, options: QueryOptions())
        #expect(r.rows == [["id": .string("a2"), "qty": .int(12)], ["id": .string("c1"), "qty": .int(0)]])
        #expect(r.totalCount == 3)
        let none = try QueryEngine.execute(try Query.parse(try F.json(#"{"collection":"items","limit":0,"count":true}"#)),
                                           on: data, options: QueryOptions())
        #expect(none.rows.isEmpty && none.totalCount == 5)
        let past = try F.ids(#"{"collection":"items","offset":10}"#, on: data)
        #expect(past.isEmpty)
        let defaulted = try QueryEngine.execute(Query(collection: "items"), on: data, options: QueryOptions(limitDefault: 2))
        #expect(defaulted.rows.count == 2 && defaulted.totalCount == nil)
        // Count with a residual predicate counts only matching rows.
        let counted = try QueryEngine.execute(try Query.parse(try F.json(
            #"{"collection":"items","filter":{"name":{"$ilike":"a%"}},"limit":1,"count":true}"#)), on: data, options: QueryOptions())
        #expect(counted.rows.count == 1 && counted.totalCount == 2)
    }

    @Test func keysetPagination() throws {
        var data = CollectionData(schema: F.schema)
        for i in 0..<50 { try data.put(F.doc("k\(i / 10)\(i % 10)", qty: Int64(i % 7))) }
        var seen: [String] = []
        var after: String? = nil
        while true {
            let afterJSON = after.map { #","after":"# + $0 } ?? ""
            let page = try QueryEngine.execute(try Query.parse(try F.json(
                #"{"collection":"items","order":[{"field":"qty","dir":"desc"}],"limit":7"# + afterJSON + "}")),
                on: data, options: QueryOptions())
            guard let last = page.rows.last else { break }
            seen += page.rows.map { $0["id"]!.stringValue! }
            after = JSON.encodeString(.object(["qty": last["qty"]!, "id": last["id"]!]))
        }
        let all = try F.ids(#"{"collection":"items","order":[{"field":"qty","dir":"desc"}],"limit":100}"#, on: data)
        #expect(seen == all && all.count == 50)
    }

    /// Differential check: random filters and orders give the same rows as a brute-force
    /// evaluation, whatever access path the planner picks.
    @Test func randomQueriesMatchBruteForce() throws {
        var rng = SeededRandom(seed: 42)
        var data = CollectionData(schema: F.schema)
        for i in 0..<400 {
            let qty: Int64? = Int.random(in: 0..<10, using: &rng) == 0 ? nil : Int64.random(in: -5..<30, using: &rng)
            let cat: String? = ["a", "b", "c", nil].randomElement(using: &rng)!
            let sku: String? = i % 3 == 0 ? nil : "s\(i)"
            try data.put(F.doc("k\(i)", sku: sku, qty: qty, cat: cat, body: i % 2 == 0 ? "alpha beta \(i % 5)" : "beta gamma"))
        }
        let ops: [CompareOp] = [.eq, .ne, .gt, .gte, .lt, .lte]
        func leaf() -> Filter {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0: return .compare(field: "qty", op: ops.randomElement(using: &rng)!, value: .int(Int64.random(in: -6..<31, using: &rng)))
            case 1: return .compare(field: "cat", op: .eq, value: [.string("a"), .string("b"), .null].randomElement(using: &rng)!)
            case 2: return .compare(field: "sku", op: .eq, value: .string("s\(Int.random(in: 0..<400, using: &rng))"))
            case 3: return .compare(field: "id", op: .eq, value: .string("k\(Int.random(in: 0..<400, using: &rng))"))
            case 4: return .fulltext(field: "body", query: ["alpha", "gamma", "beta 2"].randomElement(using: &rng)!, mode: .plain, language: nil)
            default: return .compare(field: "qty", op: .gte, value: .float(Double(Int.random(in: 0..<20, using: &rng)) + 0.5))
            }
        }
        let orders: [[Sort]] = [[], [Sort(field: "qty")], [Sort(field: "qty", direction: .desc)],
                                [Sort(field: "cat"), Sort(field: "qty")], [Sort(field: "id", direction: .desc)]]
        for _ in 0..<300 {
            let parts = (0..<Int.random(in: 1...3, using: &rng)).map { _ in leaf() }
            let filter: Filter = Int.random(in: 0..<5, using: &rng) == 0 ? .or(parts) : .and(parts)
            let order = orders.randomElement(using: &rng)!
            let limit = Int.random(in: 0..<30, using: &rng), offset = Int.random(in: 0..<5, using: &rng)
            let query = Query(collection: "items", filter: filter, order: order, limit: limit, offset: offset, count: true)
            let result = try QueryEngine.execute(query, on: data, options: QueryOptions())
            let predicate = try Predicate.compile(filter)
            let rowOrder = RowOrder(sorts: order, primaryKey: "id")
            let matching = Array(data.allDocuments()).filter { predicate.matches($0) }
            #expect(result.totalCount == matching.count, "\(filter) \(result.plan.access)")
            if order.isEmpty {
                // Unordered: the same set of rows when nothing is cut off.
                if matching.count <= limit && offset == 0 {
                    #expect(Set(result.rows.map { $0["id"]! }) == Set(matching.map { $0["id"]! }))
                }
            } else {
                let expected = Array(matching.sorted { rowOrder.compare($0, $1) < 0 }.dropFirst(offset).prefix(limit))
                #expect(result.rows.map { $0["id"]! } == expected.map { $0["id"]! }, "\(filter) \(order) \(result.plan.access)")
            }
        }
    }

    @Test func snapshotQueriesDoNotSeeLaterWrites() throws {
        var data = try F.data()
        let snapshot = data
        try data.put(F.doc("z9", qty: 5))
        data.remove(key: .string("a1"))
        #expect(try F.ids(#"{"collection":"items","filter":{"qty":5}}"#, on: snapshot) == ["a1"])
        #expect(try F.ids(#"{"collection":"items","filter":{"qty":5}}"#, on: data) == ["z9"])
    }
}
