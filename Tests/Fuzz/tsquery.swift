// fuzz-modules: Kernel
// fuzz-options: -max_len=20000
//
// Fulltext queries (Sources/Kernel/Query/TextQuery.swift): the tsquery parser and the plain,
// phrase and websearch readers, on any text. Input: byte 0 picks the mode, the rest is the
// query. Parsing answers a TextQuery or throws AERO_QUERY_INVALID, never traps or recurses
// without bound (10,000 `!` overflowed the stack once); the parsed query is then matched
// against a document and run through the planner on a collection with a fulltext index.

@testable import Kernel

private let documents: [Document] = [
    ["id": .int(1), "body": .string("the quick brown fox jumps over the lazy dog")],
    ["id": .int(2), "body": .string("Fuzzing finds crashes; crashes find fixes")],
    ["id": .int(3), "body": .string("Ünïcödé wörds and 数字 123 mixed")],
    ["id": .int(4), "body": .null],
]

private let collection: CollectionData = {
    do {
        let schema = try CollectionSchema.parse(try JSON.parse("""
            {"name":"docs","primary_key":"id","fields":{"id":{"type":"int"},"body":{"type":"text","nullable":true}},
             "indexes":[{"fields":["body"],"type":"fulltext"}]}
            """))
        return try CollectionData(schema: schema, documents: documents)
    } catch {
        fatalError("fixture: \(error)")
    }
}()

private let tokenized = documents.compactMap { $0["body"]?.stringValue }.map(TokenizedText.init)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ data: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 1 else { return }
    let modes = FullTextMode.allCases
    let mode = modes[Int(data[0]) % modes.count]
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self)
    do {
        let query = try TextQuery.parse(text, mode: mode)
        _ = query.requiredTerms
        for doc in tokenized { _ = query.matches(doc) }
    } catch let error as AeroError {
        precondition(error.code == .queryInvalid, "TextQuery.parse threw \(error)")
        return
    } catch {
        fatalError("TextQuery.parse threw a non-AeroError: \(error)")
    }
    do {
        let query = Query(collection: "docs", filter: .fulltext(field: "body", query: text, mode: mode, language: nil),
                          count: true)
        _ = try QueryEngine.execute(query, on: collection)
    } catch is AeroError {
        return
    } catch {
        fatalError("QueryEngine.execute threw a non-AeroError: \(error)")
    }
}
