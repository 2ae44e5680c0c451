// fuzz-modules: Kernel BaaS
// fuzz-options: -max_len=8192
//
// The row-level-security policy language (Sources/BaaS/Policies/PolicyExpression.swift) and
// its compiler (PolicyCompiler.swift). Input: byte 0 picks the caller (anon, a user with or
// without email and claims, the service role), the rest is the expression text.
// - parse answers an expression or AERO_REQUEST_INVALID, never traps, hangs or recurses
//   without bound;
// - the canonical text parses back to the same expression (`parse(e.description) == e`);
// - an expression that validates against the schema compiles for the caller to a filter at
//   most PolicyLimits.compiledDepthMax deep (or AERO_REQUEST_INVALID/AERO_QUERY_UNBOUNDED),
//   which the kernel accepts and runs, alone and combined with another policy.

@testable import BaaS
@testable import Kernel

private func schema(_ text: String) -> CollectionSchema {
    do { return try CollectionSchema.parse(try JSON.parse(text)) } catch { fatalError("fixture: \(error)") }
}

private let docs = schema("""
    {"name":"docs","primary_key":"id","fields":{"id":{"type":"text"},"owner":{"type":"uuid","nullable":true},
     "title":{"type":"text","nullable":true},"n":{"type":"int","nullable":true},"price":{"type":"float","nullable":true},
     "flag":{"type":"bool","nullable":true},"tags":{"type":"array<text>","nullable":true},"meta":{"type":"json","nullable":true},
     "created":{"type":"timestamp","nullable":true},"team":{"type":"int","nullable":true}}}
    """)
private let members = schema("""
    {"name":"members","primary_key":"id","fields":{"id":{"type":"int"},"team":{"type":"int"},"user_id":{"type":"uuid","nullable":true},
     "email":{"type":"text","nullable":true}}}
    """)
private let collections = ["docs": docs, "members": members]

private let data: CollectionData = {
    do {
        return try CollectionData(schema: docs, documents: [
            ["id": .string("a"), "owner": .string("6f1c2b1e-8a59-4a39-9a5e-1f2d3c4b5a69"), "title": .string("hello"), "n": .int(1),
             "price": .float(2.5), "flag": .bool(true), "tags": .array([.string("x")]), "meta": .object(["k": .int(1)]),
             "created": .string("2026-01-01T00:00:00Z"), "team": .int(7)],
            ["id": .string("b"), "owner": .null, "title": .null, "n": .null, "price": .null, "flag": .null, "tags": .null,
             "meta": .null, "created": .null, "team": .null],
        ])
    } catch {
        fatalError("fixture: \(error)")
    }
}()

private let callers: [PolicyCaller] = [
    PolicyCaller(uid: nil, role: "anon", email: nil, claims: .object(["role": .string("anon")])),
    PolicyCaller(uid: "6f1c2b1e-8a59-4a39-9a5e-1f2d3c4b5a69", role: "authenticated", email: "a@example.com",
                 claims: .object(["role": .string("authenticated"), "app_metadata": .object(["team": .string("7"), "n": .int(3)])])),
    PolicyCaller(uid: "not-a-uuid", role: "authenticated", email: nil, claims: .null),
    PolicyCaller(uid: nil, role: "service_role", email: nil, claims: .object(["role": .string("service_role")])),
]

/// `x in (select ...)` answered from a fixed table: team 7 has two members, any other value none.
private struct Lookup: MembershipLookup {
    func values(of field: String, in collection: String, where whereField: String, equals value: JSONValue) throws -> [JSONValue] {
        switch value {
        case .int(7), .string("7"), .string("6f1c2b1e-8a59-4a39-9a5e-1f2d3c4b5a69"): return [.int(7), .string("a")]
        default: return []
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ bytes: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 1 else { return }
    let caller = callers[Int(bytes[0]) % callers.count]
    let text = String(decoding: UnsafeBufferPointer(start: bytes + 1, count: size - 1), as: UTF8.self)
    let expression: PolicyExpression
    do {
        expression = try PolicyExpression.parse(text)
    } catch {
        expect(error, [.requestInvalid], "PolicyExpression.parse")
        return
    }
    let canonical = expression.description
    do {
        let again = try PolicyExpression.parse(canonical)
        precondition(again == expression, "canonical text \(canonical) parses to a different expression")
    } catch {
        fatalError("canonical text \(canonical) does not parse: \(error)")
    }
    _ = expression.referencedFields
    _ = expression.referencedCollections
    do {
        try expression.validate(for: docs, collections: collections)
    } catch {
        expect(error, [.requestInvalid], "validate")
        return
    }
    let filter: Filter
    do {
        filter = try PolicyCompiler.filter(expression, caller: caller, schema: docs, lookup: Lookup())
    } catch {
        expect(error, [.requestInvalid, .queryUnbounded], "PolicyCompiler.filter")
        return
    }
    precondition(PolicyCompiler.depth(of: filter) <= PolicyLimits.compiledDepthMax, "compiled filter too deep")
    let combined = PolicyCompiler.combine([filter, .compare(field: "n", op: .gt, value: .int(0))], schema: docs)
    for f in [filter, combined, Filter.and([combined, .compare(field: "title", op: .eq, value: .string("hello"))])] {
        do {
            _ = try QueryEngine.execute(Query(collection: "docs", filter: f, count: true), on: data)
        } catch {
            fatalError("the kernel refuses a compiled policy (\(error)): \(canonical) -> \(f)")
        }
    }
}

private func expect(_ error: any Error, _ codes: [AeroError.Code], _ what: String) {
    guard let aero = error as? AeroError, codes.contains(aero.code) else { fatalError("\(what) threw \(error)") }
}
