// The lag probe's reader (`ClusterBench.visibilityProbe`): HTTP/1.1 GETs over one kept-alive
// loopback connection with blocking socket calls, on the probe's own thread. PostgreSQL's side of
// the row polls its standby the same way (psycopg, a blocking socket, its own process); reading
// through the bench's async HTTP client instead put the bench process's cooperative pool, busy
// with the 32 paced writers, between every answer and the probe.
//
// Wire: the request is `GET <path> HTTP/1.1`, `Host`, `apikey`; the answer must be HTTP/1.1 with
// a `Content-Length` (a node answers a REST GET so) of at most `bodyBytesMax`. Anything else (a
// chunked answer, a closed connection, a malformed head, no answer within `timeoutSeconds`) is an
// error naming what was read: the probe fails rather than measure something else.

import Foundation
import Glibc

final class ProbeReader {
    /// Longest answer head and body accepted (a probe reads one short row).
    static let headBytesMax = 16 << 10
    static let bodyBytesMax = 1 << 20
    /// Longest wait for one answer (SO_RCVTIMEO / SO_SNDTIMEO).
    static let timeoutSeconds = 5
    private static let headEnd: [UInt8] = Array("\r\n\r\n".utf8)

    private let fd: Int32
    private let host: String
    private let key: String
    private var buffer: [UInt8] = []

    /// `address`: "127.0.0.1:port".
    init(address: String, key: String) throws {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw CommandFailure("the probe's address \(address) is not host:port")
        }
        let ip = String(address[..<colon])
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CommandFailure("the probe could not open a socket: errno \(errno)") }
        var timeout = timeval(tv_sec: Self.timeoutSeconds, tv_usec: 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, ip, &sin.sin_addr) == 1 else {
            close(fd)
            throw CommandFailure("the probe's host \(ip) is not an IPv4 address")
        }
        let connected = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let e = errno
            close(fd)
            throw CommandFailure("the probe could not connect to \(address): errno \(e)")
        }
        self.fd = fd
        host = address
        self.key = key
    }

    deinit { close(fd) }

    /// GET `path`; the status and the body.
    func get(_ path: String) throws -> (status: Int, body: [UInt8]) {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\napikey: \(key)\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CommandFailure("the probe's request to \(host) failed: errno \(errno)") }
            sent += n
        }
        let headEnd = try readUntilHeadEnd()
        let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
        buffer.removeFirst(headEnd + 4)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, statusParts[0] == "HTTP/1.1", let status = Int(statusParts[1]) else {
            throw CommandFailure("the probe read a malformed answer head from \(host): \(head.prefix(200))")
        }
        var length: Int?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-length" { length = Int(value) }
            if name == "transfer-encoding" { throw CommandFailure("the probe got a \(value) answer from \(host); it reads Content-Length answers only") }
        }
        guard let length, (0...Self.bodyBytesMax).contains(length) else {
            throw CommandFailure("the probe's answer from \(host) has no Content-Length of at most \(Self.bodyBytesMax): \(head.prefix(200))")
        }
        while buffer.count < length { try receive() }
        let body = Array(buffer[..<length])
        buffer.removeFirst(length)
        return (status, body)
    }

    /// The offset of "\r\n\r\n" in `buffer`, receiving until it is there.
    private func readUntilHeadEnd() throws -> Int {
        while true {
            if let end = buffer.firstRange(of: Self.headEnd) { return end.lowerBound }
            guard buffer.count <= Self.headBytesMax else {
                throw CommandFailure("the probe's answer head from \(host) is longer than \(Self.headBytesMax) bytes")
            }
            try receive()
        }
    }

    private func receive() throws {
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw CommandFailure("the probe got no answer from \(host) within \(Self.timeoutSeconds) s")
            }
            guard n > 0 else { throw CommandFailure("\(host) closed the probe's connection (errno \(n < 0 ? errno : 0))") }
            buffer.append(contentsOf: chunk[..<n])
            return
        }
    }
}
