// `waitForTask`: one async call from a thread that may block (the backup scheduler's queue, the
// bench's lag probe thread) gives back the task's value or rethrows its error.

import Foundation
@testable import Kernel
import Testing

@Suite struct TaskWaitTests {
    @Test func aThreadGetsTheTasksValueAndItsError() async throws {
        let outcome: (Int, String) = await withCheckedContinuation { done in
            let thread = Thread {
                let value = (try? waitForTask { () async throws -> Int in
                    try await Task.sleep(for: .milliseconds(20))  // the thread really waits for it
                    return 42
                }) ?? -1
                var thrown = "nothing thrown"
                do {
                    _ = try waitForTask { () async throws -> Int in throw AeroError(.internalError, "from the task") }
                } catch let error as AeroError {
                    thrown = error.message
                } catch {
                    thrown = "\(error)"
                }
                done.resume(returning: (value, thrown))
            }
            thread.start()
        }
        #expect(outcome.0 == 42)
        #expect(outcome.1 == "from the task")
    }
}
