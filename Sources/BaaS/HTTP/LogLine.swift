// One structured log line (the node's stderr log, Sources/Node/Logging/JSONLogHandler.swift):
// built straight into bytes, without a dictionary or JSON values, because every request writes
// one (RequestLog.swift) and the profile of a GET by key showed the line's building as a tenth of
// the node's CPU.
//
// Layout: one JSON object whose values are all strings, keys sorted by UTF-8 bytes, no
// whitespace, then `\n`:
//   {"label":"aerodb","level":"info","method":"GET",...,"ts":"2026-12-04T18:00:00.123+00:00"}\n
// Invariants:
// - The bytes are those of `JSON.encode(.object(fields as [String: JSONValue.string]))` plus a
//   newline (the line the handler wrote before), strings escaped by `JSON.encodeString`
//   (LogLineTests compares both on hostile keys and values).
// - Fields are given in rising precedence: of two fields with the same key the later one is
//   written, the earlier one dropped (the dictionary merge the handler did).
// - `write` hands the whole line to the file descriptor before it returns; a partial write is
//   continued, EINTR retried, any other error drops the line (there is nowhere to report a
//   failing log).
// - The node's lines go through `LogLine.Writer` (below): an info or debug line (every request's
//   line) is queued and written by the writer's own thread, off the request path, many lines per
//   `write`; a warning or worse line is written before `log` returns, after every line queued
//   before it (order kept). The queue is bounded (`Writer.pendingBytesMax`); a line that does not
//   fit is dropped and counted (`aerodb_log_lines_dropped_total`), never dropped silently. Queued
//   lines are written at exit (`flush`, atexit); a SIGKILL loses the lines still queued (at most
//   the last few milliseconds of request lines; warnings and errors are already written).

#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import Kernel
import Logging
import Synchronization

public enum LogLine {
    /// The line of `fields` (rising precedence), newline included.
    public static func encode(_ fields: [(key: String, value: String)]) -> [UInt8] {
        // Stable order: by key, then by position, so the last of equal keys comes last.
        let order = fields.indices.sorted { a, b in
            let c = JSONValue.compareUTF8(fields[a].key, fields[b].key)
            return c != 0 ? c < 0 : a < b
        }
        var out: [UInt8] = []
        out.reserveCapacity(256)
        out.append(UInt8(ascii: "{"))
        var first = true
        for (n, i) in order.enumerated() {
            if n + 1 < order.count, JSONValue.compareUTF8(fields[order[n + 1]].key, fields[i].key) == 0 { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSON.encodeString(fields[i].key, into: &out)
            out.append(UInt8(ascii: ":"))
            JSON.encodeString(fields[i].value, into: &out)
        }
        out.append(UInt8(ascii: "}"))
        out.append(0x0A)
        return out
    }

    /// The line of a request (FrontMiddleware), with the handler's fields around it: the bytes of
    /// `encode` of, in rising precedence, `request_id` (when given), `ts`, `level`, `msg`, `label`,
    /// every `metadata` pair, then `method`, `path`, `query`, `status`, `ms` (LogLineTests compare
    /// both). The ten fixed keys are written in their sorted order as they come, and only the
    /// metadata (usually none: the node's handler keeps Hummingbird's `hb.request.id` off its
    /// lines) is sorted and merged in: no sort of all fields per request (issue 19: the sort's
    /// comparisons were a tenth of the request line's cost).
    public static func requestLine(_ line: RequestLine, requestID: String?, ts: String, level: String, label: String,
                                   metadata: [(key: String, value: String)]) -> [UInt8] {
        let status = String(line.status), ms = line.millis.description
        // Sorted by UTF-8 bytes: label < level < method < ms < msg < path < query < request_id < status < ts.
        // `above`: the field takes precedence over a metadata pair of the same key (else the pair does).
        let fixed: [(key: String, value: String?, above: Bool)] = [
            ("label", label, false), ("level", level, false), ("method", line.method, true), ("ms", ms, true),
            ("msg", "request", false), ("path", line.path, true), ("query", line.query, true),
            ("request_id", requestID, false), ("status", status, true), ("ts", ts, false),
        ]
        let extra = metadata.count < 2 ? metadata : metadata.sorted { JSONValue.compareUTF8($0.key, $1.key) < 0 }
        var out: [UInt8] = []
        out.reserveCapacity(256 + line.path.utf8.count + line.query.utf8.count)
        out.append(UInt8(ascii: "{"))
        var first = true
        func field(_ key: String, _ value: String) {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            JSON.encodeString(key, into: &out)
            out.append(UInt8(ascii: ":"))
            JSON.encodeString(value, into: &out)
        }
        var m = 0
        for f in fixed {
            guard let value = f.value else { continue }
            var order = 1
            while m < extra.count {
                order = JSONValue.compareUTF8(extra[m].key, f.key)
                guard order < 0 else { break }
                field(extra[m].key, extra[m].value)
                m += 1
            }
            if m < extra.count, order == 0 {  // the same key: the pair of higher precedence is written
                field(f.key, f.above ? value : extra[m].value)
                m += 1
            } else {
                field(f.key, value)
            }
        }
        while m < extra.count {
            field(extra[m].key, extra[m].value)
            m += 1
        }
        out.append(UInt8(ascii: "}"))
        out.append(0x0A)
        return out
    }

    /// `Timestamp.format(micros)` (`2026-12-04T18:00:00.123+00:00`: the fraction without
    /// trailing zeros, none when zero), built in place of its string interpolations.
    public static func timestamp(_ micros: Int64) -> String {
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let fraction = micros - seconds * 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (y, m, d) = Timestamp.civilFromDays(days)
        guard (0...9999).contains(y) else { return Timestamp.format(micros) }  // widths as Timestamp.format pads them
        var out: [UInt8] = []
        out.reserveCapacity(32)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var v = value
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(v / divisor))
                v %= divisor
                divisor /= 10
            }
        }
        digits(y, 4); out.append(UInt8(ascii: "-")); digits(m, 2); out.append(UInt8(ascii: "-")); digits(d, 2)
        out.append(UInt8(ascii: "T")); digits(secondOfDay / 3600, 2); out.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2); out.append(UInt8(ascii: ":")); digits(secondOfDay % 60, 2)
        if fraction > 0 {
            out.append(UInt8(ascii: "."))
            digits(fraction, 6)
            while out.last == UInt8(ascii: "0") { out.removeLast() }
        }
        out.append(contentsOf: "+00:00".utf8)
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes `line` whole to `fd` (see the invariants above).
    public static func write(_ line: [UInt8], to fd: Int32) {
        line.withUnsafeBytes { raw in
            guard var base = raw.baseAddress else { return }
            var left = raw.count
            while left > 0 {
                let n = Glibc.write(fd, base, left)
                if n > 0 {
                    base += n
                    left -= n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}

extension LogLine {
    /// Lines queued for one file descriptor and written by a thread of its own (see the header).
    public final class Writer: Sendable {
        /// Bytes queued and not yet written, at most; a line that would pass it is dropped and
        /// counted. 4 MiB is some 20,000 request lines: a second of a busy node's lines while the
        /// descriptor (a pipe to a log collector) does not drain.
        public static let pendingBytesMax = 4 << 20

        private struct State {
            var pending: [UInt8] = []
            /// The thread waits for lines (a producer that queues into an empty queue wakes it).
            var sleeping = false
            var dropped: UInt64 = 0
            var started = false
        }

        let fd: Int32
        let bytesMax: Int
        private let state = Mutex(State())
        /// Held while bytes go to the descriptor: the writer thread's batches and `writeNow`'s
        /// lines leave in the order they were queued.
        private let writing = Mutex(())
        private let wake = DispatchSemaphore(value: 0)
        /// Called once per dropped line (the node counts it in its metrics).
        private let onDrop: @Sendable () -> Void

        public init(fd: Int32, bytesMax: Int = Writer.pendingBytesMax, onDrop: @escaping @Sendable () -> Void = {}) {
            self.fd = fd
            self.bytesMax = bytesMax
            self.onDrop = onDrop
        }

        /// Lines dropped because the queue was full, since start.
        public var dropped: UInt64 { state.withLock { $0.dropped } }

        /// Queues `line` for the writer thread (started at the first line); false when it was
        /// dropped (the queue held `bytesMax` bytes).
        @discardableResult
        public func enqueue(_ line: [UInt8]) -> Bool {
            let (accepted, wakeIt, start) = state.withLock { s -> (Bool, Bool, Bool) in
                guard s.pending.count + line.count <= bytesMax else {
                    s.dropped &+= 1
                    return (false, false, false)
                }
                if s.pending.isEmpty { s.pending.reserveCapacity(64 << 10) }
                s.pending.append(contentsOf: line)
                let start = !s.started
                s.started = true
                let wakeIt = s.sleeping
                if wakeIt { s.sleeping = false }
                return (true, wakeIt, start)
            }
            if !accepted { onDrop() }
            if start { startThread() }
            if wakeIt { wake.signal() }
            return accepted
        }

        /// Writes every queued line, then `line`, before it returns.
        public func writeNow(_ line: [UInt8]) { writeQueued(then: line) }

        /// Writes every queued line before it returns.
        public func flush() { writeQueued(then: nil) }

        /// Under `writing`: what is queued, then `line`, so both leave in order.
        private func writeQueued(then line: [UInt8]?) {
            writing.withLock { _ in
                let queued = state.withLock { s -> [UInt8] in
                    let taken = s.pending
                    s.pending = []
                    return taken
                }
                if !queued.isEmpty { LogLine.write(queued, to: fd) }
                if let line { LogLine.write(line, to: fd) }
            }
        }

        private func startThread() {
            NamedThread.start("aero-log") { [self] in self.run() }
        }

        /// Longest the writer thread lets lines gather between two writes while lines keep
        /// coming: a busy node's lines leave once per interval in one `write`, and producers do
        /// not wake the thread (a wake-up per line cost more than the write: issue 19 profile).
        static let gatherMicros: UInt32 = 1_000

        /// The writer thread: writes what is queued, one `write` per batch, waits
        /// `gatherMicros` after a batch, and sleeps until woken once the queue is found empty.
        private func run() {
            var spare: [UInt8] = []
            while true {
                let wrote = writing.withLock { _ -> Bool in
                    let empty = state.withLock { s -> Bool in
                        if s.pending.isEmpty {
                            s.sleeping = true  // the next line queued wakes this thread
                            return true
                        }
                        swap(&s.pending, &spare)
                        return false
                    }
                    if empty { return false }
                    LogLine.write(spare, to: fd)
                    spare.removeAll(keepingCapacity: spare.capacity <= 1 << 20)
                    return true
                }
                if wrote { usleep(Self.gatherMicros) } else { wake.wait() }
            }
        }
    }
}

extension LogLine {
    /// The node's standard-error log (Sources/Node/Logging/JSONLogHandler.swift); a dropped line
    /// counts in `aerodb_log_lines_dropped_total`.
    public static let stderr = Writer(fd: STDERR_FILENO, onDrop: { NodeMetrics.shared.countDroppedLogLine() })
}

/// What a request's log line says of it (FrontMiddleware): its fields as `logger.info("request",
/// metadata:)` would write them are `method`, `path`, `query`, `status` (decimal) and `ms`
/// (`millis.description`).
public struct RequestLine: Sendable {
    public let method: String
    public let path: String
    /// Redacted (RequestRedaction.query).
    public let query: String
    public let status: Int
    public let millis: Double

    public init(method: String, path: String, query: String, status: Int, millis: Double) {
        self.method = method
        self.path = path
        self.query = query
        self.status = status
        self.millis = millis
    }

    /// The fields, in the order (rising precedence) the line gives them.
    public var fields: [(key: String, value: String)] {
        [("method", method), ("path", path), ("query", query), ("status", String(status)), ("ms", millis.description)]
    }
}

/// A log handler that writes a request's line itself: the same line as
/// `logger.info("request", metadata: line.fields as strings)`, without building the metadata
/// dictionary (RequestLog's line, one per request). Such a handler names the request's id on every
/// line it writes during a request (`RequestID.current`), so FrontMiddleware does not also copy
/// it into each request logger's metadata.
public protocol RequestLineHandler: LogHandler {
    func logRequestLine(_ line: RequestLine)
}
