// What readers see: the newest state whose LSN is durable (D1: nothing is visible before it is
// acknowledged-durable), plus the states committed by the writer but still waiting for their flush.
//
// Invariants:
// - `published.lsn` never decreases.
// - A pending state is published only once the WAL reports its LSN durable.
// - Subscribers are told of every publication (they read the records themselves from the WAL).

import Synchronization

final class Visibility: Sendable {
    private struct State {
        var published: DatabaseState
        var pending: [DatabaseState] = []
        var listeners: [Int: AsyncStream<UInt64>.Continuation] = [:]
        var nextListener = 0
    }

    private let state: Mutex<State>

    init(initial: DatabaseState) {
        state = Mutex(State(published: initial))
    }

    var current: DatabaseState { state.withLock { $0.published } }

    /// Called by the single writer after the WAL accepted the state's record.
    func enqueue(_ next: DatabaseState) {
        state.withLock { s in
            precondition(next.lsn > (s.pending.last?.lsn ?? s.published.lsn), "pending states follow LSN order")
            s.pending.append(next)
        }
    }

    /// Publishes every pending state with LSN <= `lsn` (which must be durable).
    func publish(through lsn: UInt64) {
        let (listeners, published) = state.withLock { s -> ([AsyncStream<UInt64>.Continuation], UInt64?) in
            var count = 0
            while count < s.pending.count && s.pending[count].lsn <= lsn { count += 1 }
            guard count > 0 else { return ([], nil) }
            s.published = s.pending[count - 1]
            s.pending.removeFirst(count)
            return (Array(s.listeners.values), s.published.lsn)
        }
        if let published { for listener in listeners { listener.yield(published) } }
    }

    /// Replaces everything (recovery or a replica installing a checkpoint).
    func reset(to next: DatabaseState) {
        let listeners = state.withLock { s in
            s.published = next
            s.pending = []
            return Array(s.listeners.values)
        }
        for listener in listeners { listener.yield(next.lsn) }
    }

    /// A stream of published LSNs, starting with the current one.
    func subscribe() -> AsyncStream<UInt64> {
        let (stream, continuation) = AsyncStream.makeStream(of: UInt64.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { s in
            let id = s.nextListener
            s.nextListener += 1
            s.listeners[id] = continuation
            continuation.yield(s.published.lsn)
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.listeners.removeValue(forKey: id) }
        }
        return stream
    }

    func finishSubscribers() {
        let listeners = state.withLock { s in
            defer { s.listeners = [:] }
            return Array(s.listeners.values)
        }
        for listener in listeners { listener.finish() }
    }
}
