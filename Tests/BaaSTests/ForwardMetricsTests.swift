import Testing
@testable import BaaS

/// ForwardMetrics (Sources/BaaS/HTTP/ForwardMetrics.swift) renders what NodeMetrics.recordForward
/// renders for the same forwards: the same series, label values and help.
@Suite struct ForwardMetricsTests {
    static let statuses: [Int?] = [201, 201, 503, 999, nil, 100, 302, 404, 42]

    @Test func theSameSeriesAsRecordForward() {
        let viaNode = NodeMetrics(), viaKept = NodeMetrics()
        let kept = ForwardMetrics(viaKept)
        for (i, status) in Self.statuses.enumerated() {
            viaNode.recordForward(status: status, elapsed: .microseconds(300 * (i + 1)))
            kept.record(status: status, elapsed: .microseconds(300 * (i + 1)))
        }
        let a = String(decoding: viaNode.registry.emitToBuffer(), as: UTF8.self)
        let b = String(decoding: viaKept.registry.emitToBuffer(), as: UTF8.self)
        #expect(Set(a.split(separator: "\n")) == Set(b.split(separator: "\n")), "\(a)\n---\n\(b)")
        #expect(b.contains(#"aerodb_forwarded_requests_total{status_class="2xx"} 2"#))
        #expect(b.contains(#"aerodb_forwarded_requests_total{status_class="error"} 3"#))
        #expect(!b.contains(#"status_class="6xx""#))
        #expect(b.contains("aerodb_forward_duration_seconds_count 9"))
        #expect(b.contains("# HELP aerodb_forward_duration_seconds On a replica"))
    }

    @Test func classesAreAFixedSet() {
        #expect(ForwardMetrics.classIndex(nil) == 5 && ForwardMetrics.classIndex(99) == 5 && ForwardMetrics.classIndex(600) == 5)
        #expect((100...599).allSatisfy { ForwardMetrics.classes[ForwardMetrics.classIndex($0)] == "\($0 / 100)xx" })
    }
}
