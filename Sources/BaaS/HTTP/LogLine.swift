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
// - `write` hands the whole line to the file descriptor before it returns (a request's line is
//   written before its answer leaves, and so survives a SIGKILL right after the answer); a
//   partial write is continued, EINTR retried, any other error drops the line (there is nowhere
//   to report a failing log).

#if canImport(Glibc)
import Glibc
#endif
import Kernel

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
