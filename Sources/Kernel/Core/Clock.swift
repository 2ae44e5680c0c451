// Time as the kernel sees it. All kernel code asks a `KernelClock`, never the system directly,
// so tests and the crash harness control time.

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Microseconds since the Unix epoch, UTC.
public typealias TimestampMicros = Int64

public protocol KernelClock: Sendable {
    /// Wall-clock time, for commit timestamps and `now()` defaults.
    func nowMicros() -> TimestampMicros
    /// Monotonic nanoseconds, for measuring durations and timeouts.
    func monotonicNanos() -> UInt64
}

public struct SystemClock: KernelClock {
    public init() {}

    public func nowMicros() -> TimestampMicros {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }

    public func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// A clock that moves only when told to.
public final class ManualClock: KernelClock {
    private let state: Mutex<(wall: TimestampMicros, mono: UInt64)>

    public init(startMicros: TimestampMicros = 1_767_225_600_000_000) {
        state = Mutex((startMicros, 0))
    }

    public func nowMicros() -> TimestampMicros { state.withLock { $0.wall } }

    public func monotonicNanos() -> UInt64 { state.withLock { $0.mono } }

    public func advance(micros: Int64) {
        state.withLock {
            $0.wall += micros
            $0.mono += UInt64(micros) * 1_000
        }
    }
}
