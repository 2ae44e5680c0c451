// Structured logs: one JSON object per line on standard error:
// {"ts":"2026-11-24T12:00:00.123+00:00","level":"info","msg":"...","label":"aerodb", ...metadata}
// (keys sorted; built by LogLine, Sources/BaaS/HTTP/LogLine.swift). A line written while a request
// runs names it by `request_id`, the id echoed in `X-Request-Id` (RequestID.swift). Hummingbird's
// own per-request id (`hb.request.id`, which Hummingbird's request loop set on every request's
// logger; the node's own loop, HTTPBridge.swift, sets none, so Hummingbird's `context.id` is not
// to be used: `RequestID.current` names the request) is kept apart when set and is not metadata of
// the lines: one id per request in the log (issue 19). Info and debug lines (every
// request's line) are queued and written by `LogLine.stderr`'s thread; a warning or worse line is
// written, after every line queued before it, before `log` returns (LogLine.swift's header).

import BaaS
import Foundation
import Kernel
import Logging

struct JSONLogHandler: LogHandler, RequestLineHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    /// Hummingbird's `hb.request.id` of the request this logger serves, kept apart from
    /// `metadata` (the file's header).
    private var hummingbirdRequestID: Logger.Metadata.Value?
    /// The key Hummingbird's `Application` sets on each request's logger.
    static let hummingbirdRequestIDKey = "hb.request.id"

    init(label: String) {
        self.label = label
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { key == Self.hummingbirdRequestIDKey ? hummingbirdRequestID : metadata[key] }
        set {
            if key == Self.hummingbirdRequestIDKey {
                hummingbirdRequestID = newValue
            } else {
                metadata[key] = newValue
            }
        }
    }

    /// Rising precedence, as the dictionary merge this replaced: a request's id unless the
    /// metadata names one, the fixed fields, the handler's metadata, then the event's.
    private func fields(level: Logger.Level, message: String, extra: Int) -> [(key: String, value: String)] {
        var fields: [(key: String, value: String)] = []
        fields.reserveCapacity(5 + metadata.count + extra)
        // Every line written while a request runs names it, whichever logger wrote it.
        if let id = RequestID.current { fields.append(("request_id", id)) }
        fields.append(("ts", LogLine.timestamp(SystemClock().nowMicros())))
        fields.append(("level", level.rawValue))
        fields.append(("msg", message))
        fields.append(("label", label))
        for (key, value) in metadata { fields.append((key, value.description)) }
        return fields
    }

    private static func emit(_ line: [UInt8], level: Logger.Level) {
        if level >= .warning {
            LogLine.stderr.writeNow(line)  // written (after what was queued) before this returns
        } else {
            LogLine.stderr.enqueue(line)  // off the caller's path; a dropped line is counted
        }
    }

    func log(event: LogEvent) {
        var fields = fields(level: event.level, message: event.message.description, extra: event.metadata?.count ?? 0)
        for (key, value) in event.metadata ?? [:] { fields.append((key, value.description)) }
        Self.emit(LogLine.encode(fields), level: event.level)
    }

    /// The line of `logger.info("request", metadata: line.fields)`, without the dictionary and
    /// without sorting the fixed fields (LogLine.requestLine: the same bytes).
    func logRequestLine(_ line: RequestLine) {
        guard logLevel <= .info else { return }
        let pairs = metadata.map { (key: $0.key, value: $0.value.description) }
        Self.emit(LogLine.requestLine(line, requestID: RequestID.current, ts: LogLine.timestamp(SystemClock().nowMicros()),
                                      level: Logger.Level.info.rawValue, label: label, metadata: pairs), level: .info)
    }
}

enum NodeLogging {
    static func bootstrap() {
        LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
        atexit { LogLine.stderr.flush() }  // queued lines are written when the process exits
    }
}
