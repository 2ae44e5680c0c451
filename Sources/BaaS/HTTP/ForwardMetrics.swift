// The forwarded writes' two series on a replica (NodeMetrics: `aerodb_forwarded_requests_total`
// by `status_class`, `aerodb_forward_duration_seconds`), with their collectors kept at hand: the
// registry's name and label checks on every forward (`NodeMetrics.recordForward`) were 1.7% of a
// replica's CPU under forwarded POSTs (perf, issue 19). The same series, label values and help
// text as `recordForward` (ForwardMetricsTests compares both): each collector is made at its first
// use (a class never seen is not rendered as a zero series), then reused.

import Prometheus
import Synchronization

final class ForwardMetrics: Sendable {
    static let shared = ForwardMetrics(.shared)

    /// The label values of `status_class`, a fixed set.
    static let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"]

    private let metrics: NodeMetrics
    private let made = Mutex<(counters: [Prometheus.Counter?], duration: Prometheus.DurationHistogram?)>((Array(repeating: nil, count: classes.count), nil))

    init(_ metrics: NodeMetrics) { self.metrics = metrics }

    /// `status_class` of an answer's status (nil: no answer), as an index into `classes`.
    static func classIndex(_ status: Int?) -> Int {
        guard let status, (100...599).contains(status) else { return classes.count - 1 }  // "error"
        return status / 100 - 1
    }

    /// One attempt to forward a write: the primary's status (nil: no answer) and the round trip.
    func record(status: Int?, elapsed: Duration) {
        let index = Self.classIndex(status)
        let (counter, duration) = made.withLock { m in (m.counters[index], m.duration) }
        (counter ?? makeCounter(index)).increment()
        (duration ?? makeDuration()).record(elapsed)
    }

    private func makeCounter(_ index: Int) -> Prometheus.Counter {
        let counter = metrics.registry.makeCounter(descriptor: NodeMetrics.descriptor("aerodb_forwarded_requests_total"),
                                                   labels: [("status_class", Self.classes[index])])
        made.withLock { $0.counters[index] = counter }  // the registry answers the same collector to a second maker
        return counter
    }

    private func makeDuration() -> Prometheus.DurationHistogram {
        let histogram = metrics.registry.makeDurationHistogram(descriptor: NodeMetrics.descriptor("aerodb_forward_duration_seconds"),
                                                               buckets: NodeMetrics.durationBuckets)
        made.withLock { $0.duration = histogram }
        return histogram
    }
}
