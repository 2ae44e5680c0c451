// The dates S3 writes and reads, formatted and parsed by hand (pure functions: thread-safe, no
// DateFormatter per request). Proleptic Gregorian calendar, UTC, seconds since 1970 (floor for
// times before it).
//   ISO 8601 (XML LastModified, Initiated):  2026-12-04T16:30:05.123Z (milliseconds, truncated)
//   RFC 1123 (Last-Modified header):          Fri, 04 Dec 2026 16:30:05 GMT
//   SigV4 x-amz-date:                         20261204T163005Z
// Parsed (If-Modified-Since, If-Unmodified-Since, Date): the three HTTP-date forms of RFC 9110
// §5.6.7: IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT"
// (two-digit years: 70...99 -> 19yy, else 20yy), asctime "Sun Nov  6 08:49:37 1994"; the zone
// must be GMT or UTC; anything else is nil (the header is then ignored, as RFC 9110 asks).

import Kernel

enum S3Dates {
    static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let longWeekdays = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    struct Civil: Equatable { var year, month, day, hour, minute, second, weekday: Int }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// The civil date and time of `seconds` (the date from Kernel's `Timestamp.civilFromDays`).
    static func civil(seconds: Int64) -> Civil {
        let days = floorDiv(seconds, 86_400)
        let rem = Int(seconds - days * 86_400)
        let (y, m, d) = Timestamp.civilFromDays(days)
        let weekday = Int(((days % 7) + 11) % 7)  // 1970-01-01 was a Thursday (4)
        return Civil(year: Int(y), month: Int(m), day: Int(d), hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60, weekday: weekday)
    }

    /// Days from civil (Howard Hinnant) as seconds, nil when a field is out of range.
    static func seconds(year y: Int, month mo: Int, day d: Int, hour h: Int, minute mi: Int, second s: Int) -> Int64? {
        guard (1...12).contains(mo), (1...31).contains(d), (0...23).contains(h), (0...59).contains(mi), (0...60).contains(s),
              (0...9999).contains(y) else { return nil }
        let yy = Int64(mo <= 2 ? y - 1 : y)
        let era = floorDiv(yy, 400)
        let yoe = yy - era * 400
        let doy = Int64((153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1)
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return (era * 146_097 + doe - 719_468) * 86_400 + Int64(h * 3600 + mi * 60 + s)
    }

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    static func iso8601(micros: Int64) -> String {
        let c = civil(seconds: floorDiv(micros, 1_000_000))
        let millis = Int(floorDiv(micros, 1_000) - floorDiv(micros, 1_000_000) * 1_000)
        return "\(pad(c.year, 4))-\(pad(c.month, 2))-\(pad(c.day, 2))T\(pad(c.hour, 2)):\(pad(c.minute, 2)):\(pad(c.second, 2)).\(pad(millis, 3))Z"
    }

    static func rfc1123(seconds: Int64) -> String {
        let c = civil(seconds: seconds)
        return "\(weekdays[c.weekday]), \(pad(c.day, 2)) \(months[c.month - 1]) \(pad(c.year, 4)) \(pad(c.hour, 2)):\(pad(c.minute, 2)):\(pad(c.second, 2)) GMT"
    }

    static func amz(seconds: Int64) -> String {
        let c = civil(seconds: seconds)
        return "\(pad(c.year, 4))\(pad(c.month, 2))\(pad(c.day, 2))T\(pad(c.hour, 2))\(pad(c.minute, 2))\(pad(c.second, 2))Z"
    }

    /// An HTTP-date (the three forms above) as seconds since 1970; nil when not one.
    static func parseHTTPDate(_ text: String) -> Int64? {
        guard text.utf8.count <= 64 else { return nil }
        let parts = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        func number(_ s: String, digits: ClosedRange<Int>) -> Int? {
            guard digits.contains(s.utf8.count), s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            return Int(s)
        }
        func time(_ s: String) -> (Int, Int, Int)? {
            let t = s.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard t.count == 3, let h = number(t[0], digits: 2...2), let m = number(t[1], digits: 2...2), let sec = number(t[2], digits: 2...2) else { return nil }
            return (h, m, sec)
        }
        func month(_ s: String) -> Int? { months.firstIndex(of: s).map { $0 + 1 } }
        let zoneOK: (String) -> Bool = { $0 == "GMT" || $0 == "UTC" }
        if parts.count == 6, parts[0].hasSuffix(","), weekdays.contains(String(parts[0].dropLast())) {
            // IMF-fixdate
            guard let d = number(parts[1], digits: 1...2), let m = month(parts[2]), let y = number(parts[3], digits: 4...4),
                  let (h, mi, s) = time(parts[4]), zoneOK(parts[5]) else { return nil }
            return seconds(year: y, month: m, day: d, hour: h, minute: mi, second: s)
        }
        if parts.count == 4, parts[0].hasSuffix(","), longWeekdays.contains(String(parts[0].dropLast())) {
            // RFC 850
            let dmy = parts[1].split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard dmy.count == 3, let d = number(dmy[0], digits: 2...2), let m = month(dmy[1]), let yy = number(dmy[2], digits: 2...2),
                  let (h, mi, s) = time(parts[2]), zoneOK(parts[3]) else { return nil }
            return seconds(year: yy >= 70 ? 1900 + yy : 2000 + yy, month: m, day: d, hour: h, minute: mi, second: s)
        }
        if parts.count == 5, weekdays.contains(parts[0]) {
            // asctime
            guard let m = month(parts[1]), let d = number(parts[2], digits: 1...2), let (h, mi, s) = time(parts[3]),
                  let y = number(parts[4], digits: 4...4) else { return nil }
            return seconds(year: y, month: m, day: d, hour: h, minute: mi, second: s)
        }
        return nil
    }
}
