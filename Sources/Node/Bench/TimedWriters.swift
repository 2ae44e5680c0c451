// Concurrent writers for a fixed time, optionally paced to a total rate; every bench workload
// that measures commits uses it.

import Foundation

enum TimedWriters {
    struct Result {
        /// Latencies in milliseconds, sorted.
        let latencies: [Double]
        let elapsedSeconds: Double

        var rate: Double { Double(latencies.count) / elapsedSeconds }
        func percentile(_ q: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))]
        }
    }

    /// Runs `writers` tasks calling `body(writer, n)` until `seconds` passed. With `pace`, the
    /// writers together start at most `pace` bodies per second.
    static func run(writers: Int, seconds: Double, pace: Int? = nil,
                    _ body: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Result {
        let started = DispatchTime.now().uptimeNanoseconds
        let deadline = started + UInt64(seconds * 1e9)
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for w in 0..<writers {
                group.addTask {
                    var mine: [Double] = []
                    var n = 0
                    while true {
                        let now = DispatchTime.now().uptimeNanoseconds
                        guard now < deadline else { break }
                        if let pace {
                            let due = started + UInt64(Double(n * writers + w) / Double(pace) * 1e9)
                            if due > now { try await Task.sleep(nanoseconds: due - now) }
                        }
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        try await body(w, n)
                        mine.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
                        n += 1
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        return Result(latencies: latencies, elapsedSeconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }
}
