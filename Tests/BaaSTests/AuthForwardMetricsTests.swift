// The auth-event and forwarding series keep their label values to fixed sets (issue 18 part 4:
// no unbounded label values): an action outside the list counts as `other`, a status outside
// 100...599 or no answer as `error`. The end-to-end counts are in OperationsTests and
// HostileAuthTests (real nodes, scraped over HTTP, checked by promtool).

import Testing
@testable import BaaS

@Suite struct AuthForwardMetricsTests {
    @Test func authEventAndForwardLabelsStayWithinFixedSets() {
        let metrics = NodeMetrics()
        metrics.countAuthEvent("login")
        metrics.countAuthEvent("someone@example.com")  // never a label value
        metrics.countAuthEvent("rate_limited")
        metrics.recordForward(status: 201, elapsed: .milliseconds(3))
        metrics.recordForward(status: 503, elapsed: .milliseconds(1))
        metrics.recordForward(status: 999, elapsed: .milliseconds(1))
        metrics.recordForward(status: nil, elapsed: .seconds(1))
        let text = String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
        #expect(text.contains(#"aerodb_auth_events_total{event="login"} 1"#), "\(text)")
        #expect(text.contains(#"aerodb_auth_events_total{event="other"} 1"#))
        #expect(text.contains(#"aerodb_auth_events_total{event="rate_limited"} 1"#))
        #expect(!text.contains("example.com"))
        #expect(text.contains(#"aerodb_forwarded_requests_total{status_class="2xx"} 1"#))
        #expect(text.contains(#"aerodb_forwarded_requests_total{status_class="5xx"} 1"#))
        #expect(text.contains(#"aerodb_forwarded_requests_total{status_class="error"} 2"#))
        #expect(text.contains("aerodb_forward_duration_seconds_count 4"))
        #expect(text.contains("# HELP aerodb_forward_duration_seconds On a replica"))
    }
}
