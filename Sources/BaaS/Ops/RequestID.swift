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
//   runs (the task-local below, read by the node's log handler; other handlers get it in the
//   request logger's metadata: FrontMiddleware), and in AeroDB's own error bodies
//   `{"code","message","request_id"}`. PostgREST and GoTrue error bodies have fixed fields the
//   official clients read; the id is only in their `X-Request-Id` header.

#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Synchronization

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
        var (low, high) = randomBytes.withLock { $0.take() }
        return String(unsafeUninitializedCapacity: 32) { out in
            for i in 0..<16 {
                out[i] = hexDigits[Int(low & 0xF)]
                out[16 + i] = hexDigits[Int(high & 0xF)]
                low >>= 4
                high >>= 4
            }
            return 32
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The system's random bytes (`arc4random_buf`: the kernel's `getrandom`), drawn
    /// `RandomBytes.poolBytes` at a time: one system call per 256 fresh ids, not two per id
    /// (issue 19: `getrandom` was 2% of a GET by key's CPU). Each id's bytes are used once.
    private static let randomBytes = Mutex(RandomBytes())

    struct RandomBytes {
        /// Bytes drawn per refill (256 ids).
        static let poolBytes = 4_096
        private var pool = [UInt8](repeating: 0, count: poolBytes)
        private var next = poolBytes

        /// The next 16 unused bytes (a refill when the pool is spent).
        mutating func take() -> (UInt64, UInt64) {
            if next + 16 > pool.count {
                pool.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, $0.count) }
                next = 0
            }
            let at = next
            next += 16
            return pool.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: at, as: UInt64.self), raw.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self))
            }
        }
    }
}
