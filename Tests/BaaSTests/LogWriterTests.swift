// The log writer (LogLine.Writer, Sources/BaaS/HTTP/LogLine.swift): request lines are queued and
// written off the request path; the queue is bounded and a line it drops is counted; a warning
// line is written, after every line queued before it, before `writeNow` returns.

import Foundation
import Kernel
import Synchronization
import Testing
@testable import BaaS

@Suite struct LogWriterTests {
    static func line(_ text: String) -> [UInt8] { LogLine.encode([("msg", text)]) }

    @Test func queuedLinesAreWrittenInOrderAndAWarningAfterThemBeforeItReturns() throws {
        let path = NSTemporaryDirectory() + "aerodb-logwriter-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        let writer = LogLine.Writer(fd: fd)
        for i in 0..<2_000 { #expect(writer.enqueue(Self.line("q\(i)"))) }
        writer.writeNow(Self.line("warning"))
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines == (0..<2_000).map { String(decoding: Self.line("q\($0)").dropLast(), as: UTF8.self) }
                    + [String(decoding: Self.line("warning").dropLast(), as: UTF8.self)])
        for i in 0..<10 { writer.enqueue(Self.line("after\(i)")) }
        writer.flush()  // what atexit does: everything queued is written before it returns
        lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.count == 2_011 && lines.last == String(decoding: Self.line("after9").dropLast(), as: UTF8.self))
        #expect(writer.dropped == 0)
    }

    /// A descriptor that does not drain (a pipe nobody reads) fills the queue; the lines that do
    /// not fit are dropped, each counted once, and every accepted line arrives, in order, once the
    /// pipe is read.
    @Test func aFullQueueDropsLinesAndCountsEachOne() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let counted = Atomic<Int>(0)
        let writer = LogLine.Writer(fd: ends[1], bytesMax: 8_192, onDrop: { counted.add(1, ordering: .relaxed) })
        var accepted: [UInt8] = []
        var refused = 0
        // The pipe holds 64 KiB and the queue 8 KiB: well before 4 MiB of lines, some must be refused.
        for i in 0..<4_096 {
            let line = Self.line(String(repeating: "x", count: 1_000) + "\(i)")
            if writer.enqueue(line) { accepted += line } else { refused += 1 }
        }
        #expect(refused > 0)
        #expect(writer.dropped == UInt64(refused) && counted.load(ordering: .relaxed) == refused)
        // Read everything accepted (the writer thread continues as the pipe drains).
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = ContinuousClock.now + .seconds(60)
        while received.count < accepted.count && ContinuousClock.now < deadline {
            var poller = pollfd(fd: ends[0], events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 1_000) > 0 else { continue }
            let n = read(ends[0], &buffer, buffer.count)
            if n > 0 { received += buffer[0..<n] }
        }
        #expect(received == accepted)
    }
}
