// A background thread carries its name to the OS (`NamedThread`): profiles and `top -H` tell the
// WAL flusher from the state releaser. Before, every such thread kept the name of the pool
// thread that started it, since Foundation on Linux does not apply a name set before `start()`.

import Dispatch
import Foundation
import Testing
@testable import Kernel

@Suite struct NamedThreadTests {
    /// The OS names of this process's threads.
    static func threadNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").compactMap { tid in
            (try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    @Test func aStartedThreadCarriesItsNameToTheOS() throws {
        let running = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        NamedThread.start("aero-name-test") {
            running.signal()
            release.wait()
        }
        running.wait()
        defer { release.signal() }
        #expect(try Self.threadNames().contains("aero-name-test"))
    }

    @Test func theWALFlusherIsNamed() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        #expect(try Self.threadNames().contains("aero-wal-flush"))
        await db.close()
    }
}
