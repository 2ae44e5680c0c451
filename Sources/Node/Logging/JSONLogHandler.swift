// Structured logs: one JSON object per line on standard error:
// {"ts":"2026-11-24T12:00:00.123+00:00","level":"info","msg":"...","label":"aerodb", ...metadata}

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
        let level = event.level, message = event.message, extra = event.metadata
        var fields: [String: JSONValue] = [
            "ts": .string(Timestamp.format(SystemClock().nowMicros())),
            "level": .string(level.rawValue),
            "msg": .string(message.description),
            "label": .string(label),
        ]
        for (key, value) in metadata.merging(extra ?? [:], uniquingKeysWith: { $1 }) {
            fields[key] = .string(value.description)
        }
        // Every line written while a request runs names it, whichever logger wrote it.
        if fields["request_id"] == nil, let id = RequestID.current { fields["request_id"] = .string(id) }
        var text = JSON.encode(.object(fields))
        text.append(0x0A)
        FileHandle.standardError.write(Data(text))
    }
}

enum NodeLogging {
    static func bootstrap() {
        LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
    }
}
