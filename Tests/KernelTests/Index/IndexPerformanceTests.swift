import Testing
@testable import Kernel

/// Bulk load and lookups of 200k documents: checks every key is found. The printed rates are
/// information only (no timing assertions in tests; `aerodb bench` measures in release mode).
@Suite struct IndexPerformanceTests {
    @Test func bulkLoadAndPointLookups() throws {
        let n = 200_000
        let clock = SystemClock()
        let docs: [Document] = (0..<n).map { ["id": .string("key\($0)"), "qty": .int(Int64($0 % 1_000))] }
        let schema = CollectionSchema(name: "bench", primaryKey: "id",
                                      fields: ["id": FieldSchema(type: .text, required: true),
                                               "qty": FieldSchema(type: .int, nullable: true)],
                                      indexes: [IndexSchema(name: "bench_qty", fields: ["qty"])])
        let t0 = clock.monotonicNanos()
        let data = try CollectionData(schema: schema, documents: docs)
        let t1 = clock.monotonicNanos()
        var found = 0
        let keys = (0..<n).map { JSONValue.string("key\(($0 &* 7_919) % n)") }
        let t2 = clock.monotonicNanos()
        for key in keys where data.document(forKey: key) != nil { found += 1 }
        let t3 = clock.monotonicNanos()
        #expect(found == n)
        let loadMs = Double(t1 - t0) / 1e6
        let lookupsPerSecond = Double(n) / (Double(t3 - t2) / 1e9)
        print("bulk load of \(n) documents with one index: \(Int(loadMs)) ms; point lookups: \(Int(lookupsPerSecond))/s")
    }
}
