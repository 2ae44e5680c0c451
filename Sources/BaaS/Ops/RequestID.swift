// Request ids (docs/OPERATIONS.md "Request ids").
//
// - A client's `X-Request-Id` is kept when it is 1...`RequestID.bytesMax` bytes of
//   [A-Za-z0-9._:-] (what log pipelines and proxies generate: UUIDs, ULIDs, hex); anything else
//   (empty, longer, other bytes) is replaced by a fresh id, never truncated or echoed raw, so a
//   client cannot put control characters or unbounded text into the node's logs.
// - A fresh id is 16 random bytes in hex (32 characters).
// - The id is set on the request before any other middleware runs, so write forwarding (which
//   copies the request's headers) carries it to the primary, whose log lines then name it too.
// - It is echoed on every answer, is `request_id` in every log line written while the request
//   runs (the task-local below, read by the node's log handler; and the request logger's
//   metadata), and in AeroDB's own error bodies `{"code","message","request_id"}`. PostgREST
//   and GoTrue error bodies have fixed fields the official clients read; the id is only in
//   their `X-Request-Id` header.

import HTTPTypes

public enum RequestID {
    public static let header = HTTPField.Name("X-Request-Id")!
    /// Longest client-supplied id kept (longer ones are replaced): a UUID is 36, a W3C trace
    /// parent 55; 128 leaves room for prefixed ids without letting a client grow every log line.
    public static let bytesMax = 128

    /// The id of the request this task serves (nil outside a request): held by the request's
    /// one task-local binding (`SlowLog.notes`, bound by FrontMiddleware), not a binding of its own.
    public static var current: String? { SlowLog.notes?.requestID }

    /// The client's id when acceptable, else nil.
    public static func accept(_ value: String?) -> String? {
        guard let value, !value.isEmpty, value.utf8.count <= bytesMax else { return nil }
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return nil
            }
        }
        return value
    }

    /// 16 random bytes, lowercase hex.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(32)
        for _ in 0..<2 {
            var word = generator.next() as UInt64
            for _ in 0..<16 {
                out.append(digits[Int(word & 0xF)])
                word >>= 4
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
