// A streaming multipart/form-data parser (RFC 7578) for uploads: bytes go through it chunk by
// chunk and file bytes come out as they arrive, so an upload is never held whole in memory.
//
// Byte layout: `--B\r\n` headers `\r\n\r\n` body `\r\n--B\r\n` headers ... `\r\n--B--`.
// The parser prepends `\r\n` to the input so the first delimiter looks like every other one.
// Invariants: `pending` never holds more than one input chunk plus the delimiter length (body
// state) or `multipartHeaderBytesMax` (header state); a body or header that ends before the
// closing delimiter is an error (a cut upload never becomes an object).

struct MultipartParser {
    enum Event: Equatable {
        case part(name: String, filename: String?, contentType: String?)
        case data([UInt8])
    }

    enum State { case preamble, headers, body, afterDelimiter, done }

    private(set) var state = State.preamble
    private var pending: [UInt8] = [13, 10]
    private let delimiter: [UInt8]

    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
    }

    /// The boundary parameter of a multipart/form-data content type.
    static func boundary(of contentType: String) -> String? {
        let parts = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.first?.lowercased() == "multipart/form-data" else { return nil }
        for p in parts.dropFirst() where p.lowercased().hasPrefix("boundary=") {
            var b = String(p.dropFirst("boundary=".count))
            if b.hasPrefix("\""), b.hasSuffix("\""), b.count >= 2 { b = String(b.dropFirst().dropLast()) }
            guard !b.isEmpty, b.utf8.count <= 70 else { return nil }
            return b
        }
        return nil
    }

    mutating func feed(_ bytes: some Collection<UInt8>) throws -> [Event] {
        guard state != .done else { return [] }  // an epilogue after the close is ignored
        pending.append(contentsOf: bytes)
        var events: [Event] = []
        while true {
            switch state {
            case .preamble, .body:
                if let i = Self.find(delimiter, in: pending) {
                    if state == .body, i > 0 { events.append(.data(Array(pending[0..<i]))) }
                    pending.removeFirst(i + delimiter.count)
                    state = .afterDelimiter
                    continue
                }
                let keep = delimiter.count - 1
                if pending.count > keep {
                    if state == .body { events.append(.data(Array(pending[0..<(pending.count - keep)]))) }
                    pending.removeFirst(pending.count - keep)
                }
                return events
            case .afterDelimiter:
                guard pending.count >= 2 else { return events }
                if pending[0] == 45, pending[1] == 45 { state = .done; pending = []; return events }
                guard pending[0] == 13, pending[1] == 10 else { throw StorageError.invalid("malformed multipart body (after a boundary)") }
                pending.removeFirst(2)
                state = .headers
            case .headers:
                guard let end = Self.find([13, 10, 13, 10], in: pending) ?? (pending.starts(with: [13, 10]) ? -2 : nil) else {
                    if pending.count > StorageLimits.multipartHeaderBytesMax { throw StorageError.invalid("multipart part headers too long") }
                    return events
                }
                let headerBytes = end < 0 ? [] : Array(pending[0..<end])
                pending.removeFirst(end < 0 ? 2 : end + 4)
                events.append(try Self.part(headerBytes))
                state = .body
            case .done:
                return events
            }
        }
    }

    /// The body ended: anything but a closed multipart is an error.
    func finish() throws {
        guard state == .done else { throw StorageError.invalid("the multipart body ended before its closing boundary") }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count, let first = needle.first else { return nil }
        var i = 0
        let last = haystack.count - needle.count
        return haystack.withUnsafeBufferPointer { h in
            while i <= last {
                if h[i] == first {
                    var j = 1
                    while j < needle.count && h[i + j] == needle[j] { j += 1 }
                    if j == needle.count { return i }
                }
                i += 1
            }
            return nil
        }
    }

    static func part(_ headerBytes: [UInt8]) throws -> Event {
        guard let text = String(validating: headerBytes, as: UTF8.self) else { throw StorageError.invalid("multipart headers are not UTF-8") }
        var name: String?
        var filename: String?
        var contentType: String?
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: true) {
            guard let colon = line.firstIndex(of: ":") else { throw StorageError.invalid("malformed multipart header") }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if key == "content-type" { contentType = value }
            if key == "content-disposition" {
                name = parameter("name", value)
                filename = parameter("filename", value)
            }
        }
        guard let name else { throw StorageError.invalid("a multipart part has no name") }
        return .part(name: name, filename: filename, contentType: contentType)
    }

    /// `name="x"` in a Content-Disposition value (quoted or token form).
    static func parameter(_ key: String, _ value: String) -> String? {
        for piece in value.split(separator: ";").dropFirst() {
            let p = piece.trimmingCharacters(in: .whitespaces)
            guard let eq = p.firstIndex(of: "="), p[..<eq].lowercased() == key else { continue }
            var v = String(p[p.index(after: eq)...])
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v.unescapingQuotesAndBackslashes()
        }
        return nil
    }
}

import Foundation
