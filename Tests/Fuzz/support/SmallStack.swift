// Shared by every fuzz target (scripts/fuzz compiles this directory into each one).
//
// `onSmallStack` runs a fuzz input on one long-lived thread whose stack is `fuzzStackBytes`,
// not on libFuzzer's main thread (8 MiB). Recursion bounded by an explicit depth limit (64
// levels of JSON, 16 of filters, 32 of policies) needs a few tens of KiB; recursion bounded
// only by the input's length (one level per `!`, per `(`) overflows 512 KiB within a few
// thousand levels, so the fuzzer finds it with short inputs instead of needing the 10,000-level
// inputs that overflow a server thread's 8 MiB (issue 12 item 2).

import Dispatch
import Glibc

/// Stack of the thread that runs each input: small enough that unbounded recursion overflows
/// with inputs of a few KiB, large enough for every documented depth limit under ASan.
let fuzzStackBytes = 512 << 10

private final class SmallStackThread: @unchecked Sendable {
    // One input at a time: libFuzzer calls the target from one thread and waits for it.
    var work: (() -> Void)?
    let ready = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)

    init() {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setstacksize(&attributes, fuzzStackBytes)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, &attributes, { raw in
            let runner = Unmanaged<SmallStackThread>.fromOpaque(raw!).takeRetainedValue()
            while true {
                runner.ready.wait()
                runner.work?()
                runner.work = nil
                runner.done.signal()
            }
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_attr_destroy(&attributes)
    }
}

private let smallStackThread = SmallStackThread()

/// Runs `body` on the small-stack thread and waits for it.
func onSmallStack(_ body: () -> Void) {
    withoutActuallyEscaping(body) { escaping in
        smallStackThread.work = escaping
        smallStackThread.ready.signal()
        smallStackThread.done.wait()
    }
}
