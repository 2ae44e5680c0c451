// Background threads under a name the OS shows (`perf`, `top -H`, /proc/<pid>/task/*/comm).
// Foundation on Linux gives a name set before `Thread.start()` to the `Thread` object only, and
// Linux refuses a name over 15 bytes: either way the thread kept the name of the thread that
// started it (`oot.default-qos`, a cooperative pool thread's), so profiles could not tell the WAL
// flusher from the state releaser. The thread names itself as its first step instead.

import Foundation

public enum NamedThread {
    /// Linux's limit for a thread's name, in bytes (its terminating zero not counted).
    public static let nameBytesMax = 15

    /// Starts `body` on a new thread named `name` (ASCII, at most `nameBytesMax` bytes: a longer
    /// name is a programming error, which Linux would refuse silently).
    public static func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        precondition(name.utf8.count <= nameBytesMax && name.allSatisfy(\.isASCII),
                     "a thread name is ASCII of at most \(nameBytesMax) bytes: \(name)")
        let thread = Thread {
            Thread.current.name = name
            body()
        }
        thread.start()
    }
}
