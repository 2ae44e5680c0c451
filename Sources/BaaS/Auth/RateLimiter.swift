// Fixed-window counters per (budget, key), in memory on the node that handles the write (the
// primary: auth writes are forwarded there, with the client's address in X-AeroDB-Client-IP).
// Bounded: at most `keysMax` live keys; when full, expired windows are dropped and, if that is
// not enough, the oldest tenth, so an attacker spraying keys can grow neither memory nor the
// cost of a request (one eviction pass per `keysMax / 10` new keys at worst).

import Synchronization

final class RateLimiter: Sendable {
    static let keysMax = 100_000
    private struct Window { var start: Int64; var count: Int }
    private let windows = Mutex<[String: Window]>([:])

    /// Counts one request against `budget` for `key`; false when the budget is spent.
    func allow(_ name: String, key: String, budget: AuthRateLimits.Budget, nowSeconds: Int64) -> Bool {
        windows.withLock { windows in
            let id = name + "\u{0}" + key
            var window = windows[id] ?? Window(start: nowSeconds, count: 0)
            if nowSeconds - window.start >= budget.windowSeconds { window = Window(start: nowSeconds, count: 0) }
            guard window.count < budget.limit else { return false }
            window.count += 1
            if windows[id] == nil, windows.count >= Self.keysMax { Self.evict(&windows, nowSeconds: nowSeconds, window: budget.windowSeconds) }
            windows[id] = window
            return true
        }
    }

    private static func evict(_ windows: inout [String: Window], nowSeconds: Int64, window: Int64) {
        windows = windows.filter { nowSeconds - $0.value.start < window }
        guard windows.count > keysMax - keysMax / 10 else { return }
        for key in windows.sorted(by: { $0.value.start < $1.value.start }).prefix(keysMax / 10).map(\.key) { windows[key] = nil }
    }
}
