import Testing
import Kernel
@testable import BaaS

/// Client integers of the PostgREST surface go through named ranges with saturating arithmetic
/// (RESTLimits.swift): no value traps; malformed is 400, out of range is 416 PGRST103. The
/// recursive parsers (logic trees, select/embedding) refuse hostile nesting (Q1).
@Suite struct HostileRESTInputTests {
    let schema = CollectionSchema(name: "items", primaryKey: "id", fields: [
        "id": FieldSchema(type: .text, required: true), "name": FieldSchema(type: .text, nullable: true),
        "qty": FieldSchema(type: .int, nullable: true),
    ], indexes: [])

    @Test func clientIntegersSaturateAndNeverTrap() {
        #expect(ClientInteger.read("0") == .value(0))
        #expect(ClientInteger.read("9223372036854775807") == .value(Int.max))
        #expect(ClientInteger.read("9223372036854775808") == .value(Int.max))
        #expect(ClientInteger.read(Substring(String(repeating: "9", count: 10_000))) == .value(Int.max))
        #expect(ClientInteger.read("-9223372036854775808") == .value(-Int.max))
        #expect(ClientInteger.read("-1") == .value(-1))
        for bad in ["", "-", "+1", " 1", "1 ", "1e3", "0x10", "١٢", "1-2"] {
            #expect(ClientInteger.read(Substring(bad)) == .malformed, "\(bad)")
        }
        #expect(ClientInteger.saturatingAdd(Int.max, 1) == Int.max)
        #expect(ClientInteger.saturatingAdd(Int.min, -1) == Int.min)
        #expect(RESTAPI.contentRange(offset: Int.max, count: 3, total: nil) == "\(Int.max)-\(Int.max)/*")
    }

    @Test func rangeHeaderIsParsedIntoNamedRanges() throws {
        #expect(try RangeHeader.parse("0-9") == RangeHeader(offset: 0, count: 10))
        #expect(try RangeHeader.parse("0-9223372036854775807") == RangeHeader(offset: 0, count: Int.max))
        #expect(try RangeHeader.parse("0-99999999999999999999999") == RangeHeader(offset: 0, count: Int.max))
        #expect(try RangeHeader.parse(" items=5- ") == RangeHeader(offset: 5, count: nil))
        #expect(try RangeHeader.parse("3-3") == RangeHeader(offset: 3, count: 1))
        for malformed in ["", "-", "a-b", "1", "1-x", "-5", "1--5", "1-2-3"] {
            #expect(try RangeHeader.parse(malformed) == nil, "\(malformed)")  // ignored, as PostgREST does
        }
        for unsatisfiable in ["9-3", "9223372036854775807-9223372036854775807", "\(Query.offsetMax + 1)-"] {
            do {
                _ = try RangeHeader.parse(unsatisfiable)
                Issue.record("\(unsatisfiable) was accepted")
            } catch let failure as PostgRESTFailure {
                #expect(failure.code == "PGRST103" && failure.status == 416, "\(unsatisfiable)")
            }
        }
    }

    @Test func limitAndOffsetOutsideTheirRangesAre416AndMalformedIs400() throws {
        #expect(try PostgRESTQuery.parse("limit=99999999999999999999", schema: schema).limit == Int.max)
        #expect(try PostgRESTQuery.parse("offset=\(Query.offsetMax)", schema: schema).offset == Query.offsetMax)
        for query in ["limit=-1", "offset=-1", "offset=99999999999999999999", "offset=\(Query.offsetMax + 1)"] {
            do {
                _ = try PostgRESTQuery.parse(query, schema: schema)
                Issue.record("\(query) was accepted")
            } catch let failure as PostgRESTFailure {
                #expect(failure.code == "PGRST103" && failure.status == 416, "\(query)")
            }
        }
        for query in ["limit=ten", "offset=1.5", "limit=", "limit=0x10"] {
            #expect(throws: AeroError.self, "\(query)") { _ = try PostgRESTQuery.parse(query, schema: schema) }
        }
        // Embedded resources read their limit and offset the same way.
        let users = CollectionSchema(name: "users", primaryKey: "id", fields: ["id": FieldSchema(type: .text)], indexes: [])
        let posts = CollectionSchema(name: "posts", primaryKey: "id", fields: [
            "id": FieldSchema(type: .text),
            "author": FieldSchema(type: .text, nullable: true, references: FieldReference(collection: "users", onDelete: .restrict)),
        ], indexes: [])
        let collections = ["users": users, "posts": posts]
        let items = try SelectParser.parse("id,posts(id)", schema: users, collections: collections)
        #expect(throws: PostgRESTFailure.self) {
            _ = try EmbedParameters.attach([(["posts"], "offset", "99999999999999999999")], to: items, collections: collections)
        }
    }

    @Test func recursiveParsersRefuseHostileNesting() {
        let hostile = [
            "or=(" + String(repeating: "not.and(", count: 10_000) + "qty.eq.1" + String(repeating: ")", count: 10_001),
            "or=(" + String(repeating: "or(", count: 10_000) + ")",
            "and=" + String(repeating: "(", count: 10_000),
            "not.or=(" + String(repeating: "not.", count: 10_000) + "qty.eq.1)",
            "qty=" + String(repeating: "not.", count: 10_000) + "eq.1",
        ]
        for query in hostile {
            #expect(throws: AeroError.self) { _ = try PostgRESTQuery.parse(query, schema: schema) }
        }
        // select: embedding depth is bounded before any lookup; parentheses without a relation fail.
        let collections = ["items": schema]
        for select in [String(repeating: "items(", count: 10_000) + "id" + String(repeating: ")", count: 10_000),
                       String(repeating: "(", count: 10_000), "id," + String(repeating: "a(", count: 5_000)] {
            #expect(throws: AeroError.self) { _ = try SelectParser.parse(select, schema: schema, collections: collections) }
        }
    }
}
