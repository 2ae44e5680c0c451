// Background threads under a name the OS shows (`perf`, `top -H`, /proc/<pid>/task/*/comm).
// Foundation on Linux gives a name set before `Thread.start()` to the `Thread` object only, and
// Linux refuses a name over 15 bytes: either way the thread kept the name of the thread that
// started it (`oot.default-qos`, a cooperative pool thread's), so profiles could not tell the WAL
// flusher from the state releaser. The thread names itself as its first step instead, by
// writing /proc/thread-self/comm (what `pthread_setname_np` does on Linux; Swift's Glibc module
// does not export that GNU function). Foundation's setter on `Thread.current` named the OS
// thread in a quiet run but not once under scripts/test's load (`NamedThreadTests`), which fits
// a setter that needs the handle `start()` stores after the new thread may already run.
// A name is for observers only: without /proc the thread runs unnamed.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum NamedThread {
    /// Linux's limit for a thread's name, in bytes (its terminating zero not counted).
    public static let nameBytesMax = 15

    /// Starts `body` on a new thread named `name` (ASCII, at most `nameBytesMax` bytes: a longer
    /// name is a programming error: Linux would cut it short or refuse it).
    public static func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        precondition(name.utf8.count <= nameBytesMax && name.allSatisfy(\.isASCII),
                     "a thread name is ASCII of at most \(nameBytesMax) bytes: \(name)")
        let thread = Thread {
            nameCurrentThread(name)
            body()
        }
        thread.start()
    }

    private static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = name.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}
