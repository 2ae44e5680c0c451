// One async call from a thread that may block: a dispatch queue's (the backup scheduler) or a
// `Thread` of its own (the bench's lag probe). The calling thread waits on a semaphore while the
// task runs on the cooperative pool. Never call it on a thread of that pool: it would hold the
// thread the task may need.

import Dispatch
import Synchronization

/// Runs `body` as a detached task and blocks this thread until it finishes; its value, or its
/// error rethrown.
public func waitForTask<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let outcome = Mutex<Result<T, any Error>?>(nil)
    Task.detached {
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}
