// Structured logs: one JSON object per line on standard error:
// {"ts":"2026-11-24T12:00:00.123+00:00","level":"info","msg":"...","label":"aerodb", ...metadata}
// (keys sorted; built and written by LogLine, Sources/BaaS/HTTP/LogLine.swift)

import BaaS
import Foundation
import Kernel
import Logging

struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        // Rising precedence, as the dictionary merge this replaced: a request's id unless the
        // metadata names one, the fixed fields, the handler's metadata, then the event's.
        var fields: [(key: String, value: String)] = []
        fields.reserveCapacity(5 + metadata.count + (event.metadata?.count ?? 0))
        // Every line written while a request runs names it, whichever logger wrote it.
        if let id = RequestID.current { fields.append(("request_id", id)) }
        fields.append(("ts", LogLine.timestamp(SystemClock().nowMicros())))
        fields.append(("level", event.level.rawValue))
        fields.append(("msg", event.message.description))
        fields.append(("label", label))
        for (key, value) in metadata { fields.append((key, value.description)) }
        for (key, value) in event.metadata ?? [:] { fields.append((key, value.description)) }
        LogLine.write(LogLine.encode(fields), to: STDERR_FILENO)  // the whole line before this returns
    }
}

enum NodeLogging {
    static func bootstrap() {
        LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
    }
}
