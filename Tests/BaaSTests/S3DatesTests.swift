// S3Dates (the hand-written, thread-safe date formats of the S3 endpoint) against Foundation's
// DateFormatter as the oracle over a spread of instants (1900 ... 2400, leap days, before 1970),
// and the three HTTP-date forms of RFC 9110 §5.6.7.

import Foundation
import Testing
@testable import BaaS

@Suite struct S3DatesTests {
    static func formatter(_ format: String) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = format
        return f
    }

    @Test func formatsMatchDateFormatter() {
        let iso = Self.formatter("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
        let http = Self.formatter("EEE, dd MMM yyyy HH:mm:ss 'GMT'")
        let amz = Self.formatter("yyyyMMdd'T'HHmmss'Z'")
        var instants: [Int64] = [0, -1, 951_782_400, 951_868_799, 4_107_542_400, -2_208_988_800, 1_767_225_600, 253_402_300_799]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2_000 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            instants.append(Int64(x % 13_000_000_000) - 2_208_988_800)  // 1900 ... ~2281
        }
        for s in instants {
            let date = Date(timeIntervalSince1970: Double(s))
            #expect(S3Dates.rfc1123(seconds: s) == http.string(from: date), "\(s)")
            #expect(S3Dates.amz(seconds: s) == amz.string(from: date), "\(s)")
            let micros = s * 1_000_000 + 123_456
            #expect(S3Dates.iso8601(micros: micros) == iso.string(from: Date(timeIntervalSince1970: Double(s) + 0.123)), "\(s)")
            #expect(S3Dates.parseHTTPDate(S3Dates.rfc1123(seconds: s)) == s)
        }
    }

    @Test func parsesTheThreeHTTPDateForms() {
        let t: Int64 = 784_111_777  // Sun, 06 Nov 1994 08:49:37 GMT
        #expect(S3Dates.parseHTTPDate("Sun, 06 Nov 1994 08:49:37 GMT") == t)
        #expect(S3Dates.parseHTTPDate("Sunday, 06-Nov-94 08:49:37 GMT") == t)
        #expect(S3Dates.parseHTTPDate("Sun Nov  6 08:49:37 1994") == t)
        #expect(S3SigV4.httpDateToAmz("Sun, 06 Nov 1994 08:49:37 GMT") == "19941106T084937Z")
        for bad in ["", "Sun, 06 Nov 1994 08:49:37 PST", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
                    "Sun, 06 Nov 1994 25:49:37 GMT", "06 Nov 1994", String(repeating: "9", count: 100)] {
            #expect(S3Dates.parseHTTPDate(bad) == nil, "\(bad)")
        }
    }
}
