import Testing
import Kernel
@testable import BaaS

@Suite struct PostgRESTQueryTests {
    let schema = CollectionSchema(name: "items", primaryKey: "id", fields: [
        "id": FieldSchema(type: .text, required: true), "name": FieldSchema(type: .text, nullable: true),
        "qty": FieldSchema(type: .int, nullable: true), "price": FieldSchema(type: .float, nullable: true),
        "tags": FieldSchema(type: .array(.text), nullable: true), "ok": FieldSchema(type: .bool, nullable: true),
    ], indexes: [])

    func parse(_ query: String) throws -> PostgRESTQuery { try PostgRESTQuery.parse(query, schema: schema) }

    @Test func decodesTheClientsFormEncoding() throws {
        let q = try parse("select=id&name=like.p1+x+%25&order=qty.desc.nullslast,name.asc&limit=2&offset=4")
        #expect(q.filters == [.like(field: "name", pattern: "p1 x %", caseInsensitive: false)])
        #expect(q.order == [Sort(field: "qty", direction: .desc, nulls: .last), Sort(field: "name", direction: .asc)])
        #expect(q.limit == 2 && q.offset == 4)
        #expect(q.select == "id")
    }

    @Test func typesValuesByColumnAndParsesLogicTrees() throws {
        let q = try parse("or=(and(qty.gt.1,qty.lt.4),qty.is.null,name.eq.%22a%2C+b%22)&price=gte.2.5&ok=eq.true&tags=cs.%7Ba%2Cb%7D")
        #expect(q.filters == [
            .or([.and([.compare(field: "qty", op: .gt, value: .int(1)), .compare(field: "qty", op: .lt, value: .int(4))]),
                 .is(field: "qty", value: .null), .compare(field: "name", op: .eq, value: .string("a, b"))]),
            .compare(field: "price", op: .gte, value: .float(2.5)),
            .compare(field: "ok", op: .eq, value: .bool(true)),
            .contains(field: "tags", value: .array([.string("a"), .string("b")])),
        ])
        #expect(try parse("qty=not.in.(1,2)").filters == [.not(.in(field: "qty", values: [.int(1), .int(2)]))])
        #expect(try parse("name=plfts(english).blue+widget").filters
            == [.fulltext(field: "name", query: "blue widget", mode: .plain, language: "english")])
    }

    @Test(arguments: [
        "qty=eq.abc", "qty=gt", "nope=eq.1", "qty=between.1", "or=(qty.eq.1", "or=qty.eq.1", "or=((((",
        "limit=x", "offset=x", "order=nope.desc", "order=qty.sideways", 
        "qty=in.1,2", "qty=is.maybe", "ok=eq.yes", "name=like", "tags=cs.{\"unterminated}",
        "or=(" + String(repeating: "and(", count: 40) + "qty.eq.1" + String(repeating: ")", count: 41),
        "%ZZ=%", "=&&=", "qty=eq.99999999999999999999999",
    ])
    func malformedInputIsAClearErrorNeverACrash(_ query: String) {
        do {
            _ = try parse(query)
            Issue.record("\(query) was accepted")
        } catch let error as AeroError {
            let (code, status) = RESTError.postgrest(error.code)
            #expect(status.code == 400 || status.code == 404, "\(query) -> \(code) \(status)")
        } catch {
            Issue.record("\(query) threw a non-AeroError \(error)")
        }
    }

    @Test func selectParsesColumnsRenamesAndEmbeddingsAlongDeclaredReferences() throws {
        let users = CollectionSchema(name: "users", primaryKey: "id", fields: ["id": FieldSchema(type: .text), "name": FieldSchema(type: .text)], indexes: [])
        let posts = CollectionSchema(name: "posts", primaryKey: "id", fields: [
            "id": FieldSchema(type: .text),
            "author": FieldSchema(type: .text, nullable: true, references: FieldReference(collection: "users", onDelete: .restrict)),
        ], indexes: [])
        let all = ["users": users, "posts": posts, "items": schema]
        #expect(try SelectParser.parse("*,writer:users(name)", schema: posts, collections: all)
            == [.all, .embed(collection: "users", alias: "writer", items: [.column(name: "name", alias: "name")])])
        #expect(try SelectParser.parse("name,posts(id)", schema: users, collections: all)
            == [.column(name: "name", alias: "name"), .embed(collection: "posts", alias: "posts", items: [.column(name: "id", alias: "id")])])
        for bad in ["nope", "*,author:users(name)", "users(nope)", "ghosts(*)", "posts(" ] {
            let target = bad.hasPrefix("users") ? posts : (bad == "*,author:users(name)" ? schema : users)
            #expect(throws: AeroError.self, "\(bad)") { try SelectParser.parse(bad, schema: target, collections: all) }
        }
    }

    @Test func embeddedResourceParametersAttachToTheirEmbedding() throws {
        let users = CollectionSchema(name: "users", primaryKey: "id", fields: ["id": FieldSchema(type: .text), "name": FieldSchema(type: .text)], indexes: [])
        let posts = CollectionSchema(name: "posts", primaryKey: "id", fields: [
            "id": FieldSchema(type: .text), "n": FieldSchema(type: .int, nullable: true),
            "author": FieldSchema(type: .text, nullable: true, references: FieldReference(collection: "users", onDelete: .restrict)),
        ], indexes: [])
        let all = ["users": users, "posts": posts]
        #expect(PostgRESTQuery.embeddedKey("posts.n")! == (["posts"], "n"))
        #expect(PostgRESTQuery.embeddedKey("a.b.not.or")! == (["a", "b"], "not.or"))
        for bad in ["n", "posts.", ".n", "a..b"] { #expect(PostgRESTQuery.embeddedKey(bad) == nil, "\(bad)") }
        let q = try PostgRESTQuery.parse("select=name,p:posts!inner(id)&p.n=gt.2&p.order=n.desc&p.limit=3", schema: users)
        let items = try EmbedParameters.attach(q.embedded, to: try SelectParser.parse(q.select!, schema: users, collections: all), collections: all)
        guard case .embed(_, "p", _, let options) = items[1] else { Issue.record("no embedding"); return }
        #expect(options.inner && options.limit == 3 && options.order == [Sort(field: "n", direction: .desc)])
        #expect(options.filters == [.compare(field: "n", op: .gt, value: .int(2))])
        for bad in ["select=name&posts.n=eq.1", "select=name,posts(id)&ghost.n=eq.1", "select=name,posts(id)&posts.nope=eq.1",
                    "select=name,posts(id)&posts.n=eq.x", "select=name,posts(id)&posts.limit=ten", "select=name,posts(id)&posts.or=(n.eq"] {
            #expect(throws: AeroError.self, "\(bad)") {
                let q = try PostgRESTQuery.parse(bad, schema: users)
                guard let select = q.select, !q.embedded.isEmpty else { throw AeroError(.queryInvalid, "no select") }
                _ = try EmbedParameters.attach(q.embedded, to: try SelectParser.parse(select, schema: users, collections: all), collections: all)
            }
        }
    }
}
