import HTTPTypes
import Testing
@testable import BaaS
@testable import Kernel

/// Issue 22: the parser and the kernel's evaluation of JSON paths, casts, aggregates, counts,
/// spreads, embedded order terms and preferences (the official client's view is
/// Tests/Compat/test_postgrest_fidelity.py).
@Suite struct PostgRESTFidelityTests {
    let schema = CollectionSchema(name: "items", primaryKey: "id", fields: [
        "id": FieldSchema(type: .text, required: true), "name": FieldSchema(type: .text, nullable: true),
        "qty": FieldSchema(type: .int, nullable: true), "ok": FieldSchema(type: .bool, nullable: true),
        "tags": FieldSchema(type: .array(.text), nullable: true), "doc": FieldSchema(type: .json, nullable: true),
        "author": FieldSchema(type: .text, nullable: true, references: FieldReference(collection: "users", onDelete: .restrict)),
    ], indexes: [])
    let users = CollectionSchema(name: "users", primaryKey: "id", fields: [
        "id": FieldSchema(type: .text), "name": FieldSchema(type: .text, nullable: true)], indexes: [])
    var all: [String: CollectionSchema] { ["items": schema, "users": users] }

    func parse(_ query: String) throws -> PostgRESTQuery { try PostgRESTQuery.parse(query, schema: schema) }

    @Test func fieldPathsRoundTripAndReadAsPostgreSQLDoes() throws {
        for text in ["doc->a", "doc->a->0->>b", "doc->>n::int", "qty::text", "doc->-1", "doc->first-name"] {
            #expect(try FieldPath(parsing: text).description == text)
        }
        let path = try FieldPath(parsing: "doc->a->0->>b")
        #expect(path.steps == [.key("a"), .index(0), .key("b")] && path.asText && path.outputName == "b")
        #expect(try FieldPath(parsing: "doc->tags->0").outputName == "tags")
        let doc: Document = ["doc": .object(["a": .array([.object(["b": .int(7)])]), "s": .string("x"),
                                             "t": .array([.int(1), .int(2)]), "o": .object(["k": .bool(true)])])]
        #expect(path.value(in: doc) == .string("7"))
        #expect(try FieldPath(parsing: "doc->t->-1").value(in: doc) == .int(2))
        #expect(try FieldPath(parsing: "doc->t->9").value(in: doc) == .null)
        #expect(try FieldPath(parsing: "doc->s->x").value(in: doc) == .null)  // a step into a scalar
        #expect(try FieldPath(parsing: "doc->>o").value(in: doc) == .string("{\"k\":true}"))
        #expect(try FieldPath(parsing: "doc->>s::int").value(in: doc) == .null)  // does not convert: null in filters
        #expect(try FieldPath(parsing: "doc->a->0->>b::int").value(in: doc) == .int(7))
        let deep = "doc" + String(repeating: "->k", count: FieldPath.stepsMax + 1)
        for bad in ["doc->>a->b", "->a", "doc->", "doc->a::money", deep, "doc->a>b", "doc->" + String(repeating: "k", count: 300)] {
            #expect(throws: AeroError.self, "\(bad.prefix(40))") { try FieldPath(parsing: bad) }
        }
    }

    @Test func filtersAndOrderOnJSONPathsAreTypedByTheOperator() throws {
        #expect(try parse("doc->>color=eq.red").filters == [.compare(field: "doc->>color", op: .eq, value: .string("red"))])
        #expect(try parse("doc->n=gt.2").filters == [.compare(field: "doc->n", op: .gt, value: .int(2))])
        #expect(try parse("%22doc-%3E%3En%3A%3Aint%22=gt.2").filters == [.compare(field: "doc->>n::int", op: .gt, value: .int(2))])
        #expect(try parse("or=(doc->>c.eq.a,doc->m->>k.is.null)").filters
            == [.or([.compare(field: "doc->>c", op: .eq, value: .string("a")), .is(field: "doc->m->>k", value: .null)])])
        #expect(try parse("ok=is.unknown").filters == [.is(field: "ok", value: .null)])
        #expect(try parse("order=doc->>c.desc.nullslast,users(name),qty").order
            == [Sort(field: "doc->>c", direction: .desc, nulls: .last), Sort(field: "users(name)"), Sort(field: "qty")])
        for bad in ["nope->>a=eq.1", "name->>a=eq.1", "doc->>a::money=eq.1", "doc->>n::int=eq.x", "order=users(name,id)"] {
            #expect(throws: AeroError.self, "\(bad)") { try parse(bad) }
        }
    }

    @Test func theKernelFiltersAndSortsByPaths() throws {
        let rows: [Document] = [
            ["id": .string("a"), "doc": .object(["c": .string("red"), "n": .int(10)])],
            ["id": .string("b"), "doc": .object(["c": .string("blue"), "n": .float(2.5)])],
            ["id": .string("c"), "doc": .null],
            ["id": .string("d"), "doc": .object(["c": .string("red"), "n": .string("7")])],
        ]
        let data = try CollectionData(schema: schema, documents: rows)
        func ids(_ query: String) throws -> [String] {
            let q = try parse(query)
            return try QueryEngine.execute(Query(collection: "items", filter: q.filter, order: q.order), on: data).rows
                .compactMap { $0["id"]?.stringValue }
        }
        #expect(try ids("doc->>c=eq.red") == ["a", "d"])
        #expect(try ids("doc->n=gt.2") == ["a", "b"])  // JSON: the string "7" is not a number
        #expect(try ids("doc->>n=gt.3") == ["d"])  // text: "7" > "3", "10" and "2.5" are not
        #expect(try ids("doc->>n::int=gt.3") == ["a", "d"])
        #expect(try ids("doc->>c=not.eq.red") == ["b"])  // three-valued: c (null) stays out
        #expect(try ids("order=doc->n.desc") == ["c", "d", "a", "b"])  // nulls first descending; strings sort after numbers
        #expect(try ids("order=doc->>c.asc.nullsfirst,id.desc") == ["c", "b", "d", "a"])
    }

    @Test func selectParsesPathsCastsCountsSpreadsAndAggregates() throws {
        let items = try SelectParser.parse("id,c:doc->color,doc->>color,qty::text,n:doc->>n::int,users(count),...users(name),count(),t:qty.sum(),doc->>k.max()",
                                           schema: schema, collections: all)
        #expect(items[1] == .path(try FieldPath(parsing: "doc->color"), alias: "c"))
        #expect(items[2] == .path(try FieldPath(parsing: "doc->>color"), alias: "color"))
        #expect(items[3] == .path(try FieldPath(parsing: "qty::text"), alias: "qty"))
        #expect(items[4] == .path(try FieldPath(parsing: "doc->>n::int"), alias: "n"))
        #expect(items[5] == .embed(collection: "users", alias: "users", items: [], options: EmbedOptions(count: true)))
        #expect(items[6] == .embed(collection: "users", alias: "users", items: [.column(name: "name", alias: "name")],
                                   options: EmbedOptions(spread: true)))
        #expect(items[7] == .aggregate(.count, column: nil, alias: "count"))
        #expect(items[8] == .aggregate(.sum, column: "qty", alias: "t"))
        #expect(items[9] == .aggregate(.max, column: "doc->>k", alias: "max"))
        func code(_ select: String, _ target: CollectionSchema? = nil) -> String? {
            do {
                _ = try SelectParser.parse(select, schema: target ?? schema, collections: all)
                return nil
            } catch let failure as PostgRESTFailure {
                return failure.code
            } catch let error as AeroError {
                return RESTError.postgrest(error.code).0
            } catch {
                return "\(error)"
            }
        }
        #expect(code("qty::money") == "42704")
        #expect(code("tags::int") == "42846")
        #expect(code("ok::float") == "42846")
        #expect(code("name->a") == "42883")
        #expect(code("name.sum()") == "42883")
        #expect(code("doc.avg()") == "42883")
        #expect(code("nope::text") == "42703")
        #expect(code("id,...items(id)", users) == "PGRST119")
        #expect(code("id,users(name.max())") == "PGRST100")
    }

    @Test func selectCastsConvertOrRefuseTheValue() throws {
        let doc: Document = ["id": .string("a"), "name": .string("abc"), "qty": .int(3), "ok": .bool(true),
                             "tags": .array([.string("x y"), .null, .string("z")]), "doc": .object(["n": .string("4")])]
        func value(_ text: String) throws -> JSONValue { try SelectCast.value(try SelectCast.path(text, schema: schema), in: doc, schema: schema) }
        #expect(try value("qty::text") == .string("3"))
        #expect(try value("qty::float") == .float(3))
        #expect(try value("ok::int") == .int(1))
        #expect(try value("tags::text") == .string("{\"x y\",NULL,z}"))
        #expect(try value("doc->>n::int") == .int(4))
        #expect(try value("doc->n::json") == .string("4"))  // a JSON string stays one
        #expect(throws: PostgRESTFailure.self) { try value("name::int") }
        #expect(throws: PostgRESTFailure.self) { try value("name::bool") }
    }

    @Test func preferencesAreStrictWhenAskedAndSayWhatWasApplied() throws {
        func prefer(_ value: String) throws -> Prefer {
            var headers = HTTPFields()
            headers[HTTPField.Name("Prefer")!] = value
            return try Prefer(headers)
        }
        let lenient = try prefer("return=headers-only, count=exact, nonsense, max-affected=3")
        #expect(lenient.headersOnly && lenient.count && lenient.maxAffected == nil)  // max-affected needs handling=strict
        let strict = try prefer("handling=strict,max-affected=3,return=minimal,tx=commit")
        #expect(strict.maxAffected == 3 && strict.strict)
        var headers = HTTPFields()
        strict.applied(read: false, into: &headers)
        #expect(headers[Preferences.appliedHeader] == "return=minimal, handling=strict, max-affected=3, tx=commit")
        for bad in ["handling=strict,nonsense=1", "handling=strict,max-affected=x", "handling=strict,max-affected=-1",
                    "handling=strict,tx=rollback", "handling=strict,timezone=UTC"] {
            do {
                _ = try prefer(bad)
                Issue.record("\(bad) was accepted")
            } catch let failure as PostgRESTFailure {
                #expect(failure.code == "PGRST122" && failure.status == 400, "\(bad)")
            }
        }
        #expect(Preferences.escape("a b/é") == "a%20b%2F%C3%A9")
        // The fuzzer's `Prefer: ==` once trapped on an empty split (Tests/Fuzz/crashers/postgrest-prefer-empty-split).
        for odd in ["=", "==", "=, a=, =b", ",,", "return", "handling=strict"] { _ = try prefer(odd) }
        #expect(throws: PostgRESTFailure.self) { try prefer("handling=strict,==") }
    }

    @Test func aggregatesFoldGroupsOfRows() throws {
        var sum = Aggregates.Accumulator(function: .sum)
        for v in [JSONValue.int(Int64.max), .int(1), .null] { sum.add(v, row: true) }
        #expect(sum.result == .float(Double(Int64.max) + 1))  // past 2^63 it goes on as a float
        var avg = Aggregates.Accumulator(function: .avg)
        for v in [JSONValue.int(1), .int(2), .null] { avg.add(v, row: true) }
        #expect(avg.result == .float(1.5))
        var count = Aggregates.Accumulator(function: .count)
        for v in [JSONValue.int(1), .null] { count.add(v, row: true) }
        #expect(count.result == .int(1))
        #expect(Aggregates.Accumulator(function: .min).result == .null)
    }
}

@Suite struct JSONPathIndexTests {
    @Test func anIndexOnAPathServesEqualityAndRangeAndFollowsWrites() throws {
        let schema = try CollectionSchema.parse(try JSON.parse(#"""
            {"name":"d","fields":{"id":{"type":"int"},"doc":{"type":"json","nullable":true}},
             "indexes":[{"fields":["doc->>c"]},{"fields":["doc->n::int"],"name":"d_n"}]}
            """#))
        #expect(schema.indexes.map(\.fields) == [["doc->>c"], ["doc->n::int"]])
        #expect(schema.indexes[0].name == "d_doc___c_ordered")
        var docs: [Document] = []
        for i in 0..<50 {
            let parity: JSONValue = .string(i % 2 == 0 ? "even" : "odd")
            let doc: JSONValue = i == 7 ? .null : .object(["c": parity, "n": .int(Int64(i))])
            docs.append(["id": .int(Int64(i)), "doc": doc])
        }
        let data = try CollectionData(schema: schema, documents: docs)
        let eq = Query(collection: "d", filter: .compare(field: "doc->>c", op: .eq, value: .string("even")), limit: 100)
        let plan = try QueryEngine.explain(eq, on: data)
        #expect(plan.access == .indexEquality && plan.index == "d_doc___c_ordered" && plan.candidateRows == 25 && plan.residual.isEmpty)
        #expect(try QueryEngine.execute(eq, on: data).rows.count == 25)
        let range = Query(collection: "d", filter: .and([.compare(field: "doc->n::int", op: .gte, value: .int(40)),
                                                          .compare(field: "doc->n::int", op: .lt, value: .int(45))]))
        let rangePlan = try QueryEngine.explain(range, on: data)
        #expect(rangePlan.access == .indexRange && rangePlan.index == "d_n" && rangePlan.candidateRows == 5)
        #expect(try QueryEngine.execute(range, on: data).rows.compactMap { $0["id"]?.intValue } == [40, 41, 42, 43, 44])
        for bad in [#"{"fields":["t->>x"]}"#, #"{"fields":["doc->>x"],"type":"fulltext"}"#, #"{"fields":["nope->>x"]}"#, #"{"fields":["doc->>"]}"#] {
            #expect(throws: AeroError.self, "\(bad)") {
                try CollectionSchema.parse(try JSON.parse(#"{"name":"e","fields":{"id":{"type":"int"},"t":{"type":"text"},"doc":{"type":"json"}},"indexes":["# + bad + "]}"))
            }
        }
    }
}
