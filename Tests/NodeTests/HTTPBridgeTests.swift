// The node's HTTP/1 request loop (Sources/BaaS/HTTP/HTTPBridge.swift, HTTP1 in docs/INVARIANTS.md)
// on a real node over raw sockets: requests sent together are answered one at a time in their
// order; `Connection: close` and a request the decoder refuses end the connection after their
// answer; a body the handler did not read is skipped and the next request answered; an upload
// larger than the node's memory growth bound streams through with bounded memory.

import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import Kernel

@Suite struct HTTPBridgeTests {
    /// Requests written in one go (a pipelining client): four answers, in order (HEAD's without
    /// its body), then the close the last one asked for.
    @Test func HTTP1_pipelinedRequestsAreAnsweredInOrderAndConnectionCloseEndsTheConnection() async throws {
        let node = try await TestNode()
        try await node.start()
        let connection = try RawConnection(port: node.port)
        try connection.send("GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /no/such/route HTTP/1.1\r\nHost: a\r\n\r\n"
                            + "HEAD /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let got = connection.readUntilClosed(seconds: 10)
        #expect(got.closed, "the connection closes after the answer to `Connection: close`: \(got)")
        #expect(Self.statuses(got.text) == ["200 OK", "404 Not Found", "405 Method Not Allowed", "200 OK"], "\(got)")
        #expect(got.text.components(separatedBy: "{\"status\":\"ready\"}").count == 3, "two GET bodies, none for HEAD: \(got)")
        #expect(got.text.components(separatedBy: "\r\nDate: ").count == 5, "every answer carries Date: \(got)")
        #expect(got.text.components(separatedBy: "\r\nX-Request-Id: ").count == 5, "\(got)")
    }

    /// A request the HTTP decoder refuses, after one it answered: 400, then the close.
    @Test func HTTP1_aMalformedRequestGets400AndTheConnectionCloses() async throws {
        let node = try await TestNode()
        try await node.start()
        let connection = try RawConnection(port: node.port)
        try connection.send("GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        try await Task.sleep(for: .milliseconds(200))
        try connection.send("NOT AN HTTP REQUEST\r\n\r\n")
        let got = connection.readUntilClosed(seconds: 10)
        #expect(got.text.hasPrefix("HTTP/1.1 200 OK"), "\(got)")
        #expect(got.text.contains("HTTP/1.1 400 Bad Request"), "\(got)")
        #expect(got.closed, "\(got)")
    }

    /// A POST answered without its body being read (401: no key): the body's bytes are skipped,
    /// not taken for the next request, which is answered.
    @Test func HTTP1_aBodyTheHandlerDidNotReadIsSkippedAndTheNextRequestAnswered() async throws {
        let node = try await TestNode()
        try await node.start()
        let connection = try RawConnection(port: node.port)
        let body = String(repeating: "GET /ready HTTP/1.1\r\n\r\n", count: 4_000)  // ~90 KB that would parse as requests
        try connection.send("POST /rest/v1/items HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n")
        try connection.send(body)
        try connection.send("GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let got = connection.readUntilClosed(seconds: 10)
        #expect(Self.statuses(got.text) == ["401 Unauthorized", "200 OK"], "\(got)")
        #expect(got.closed, "\(got)")
    }

    /// An upload streams to its handler: a 96 MiB object uploaded through /storage/v1 grows the
    /// node's resident memory by far less than its size (the loop buffers at most
    /// `HTTPBridgeHandler.bodyBufferedMax` parts), and downloads byte-identical.
    @Test func HTTP1_anUploadStreamsThroughWithBoundedMemory() async throws {
        let node = try await TestNode()
        try await node.start()
        let pid = try #require(node.process?.processIdentifier)
        let bucket = try await node.request("POST", "/storage/v1/bucket", .object(["name": .string("big"), "id": .string("big")]), key: node.serviceKey)
        #expect(bucket.status == 200, "\(bucket)")
        let before = Self.residentKiB(pid)
        let chunk = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) })
        let chunks = 96
        let connection = try RawConnection(port: node.port)
        try connection.send("POST /storage/v1/object/big/blob.bin HTTP/1.1\r\nHost: a\r\napikey: \(node.serviceKey)\r\n"
                            + "Authorization: Bearer \(node.serviceKey)\r\nContent-Type: application/octet-stream\r\n"
                            + "Content-Length: \(chunk.count * chunks)\r\nConnection: close\r\n\r\n")
        var peak = before
        for i in 0..<chunks {
            try connection.send(bytes: chunk)
            if i % 16 == 0 { peak = max(peak, Self.residentKiB(pid)) }
        }
        let got = connection.readUntilClosed(seconds: 60)
        peak = max(peak, Self.residentKiB(pid))
        #expect(got.text.hasPrefix("HTTP/1.1 200 OK"), "\(got)")
        #expect(peak - before < 48 * 1024, "resident memory grew \(peak - before) KiB for a \(chunks) MiB upload")
        let download = try RawConnection(port: node.port)
        try download.send("GET /storage/v1/object/big/blob.bin HTTP/1.1\r\nHost: a\r\napikey: \(node.serviceKey)\r\n"
                          + "Authorization: Bearer \(node.serviceKey)\r\nConnection: close\r\n\r\n")
        let answer = download.readUntilClosed(seconds: 60)
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        let headEnd = try #require((0..<min(answer.bytes.count, 4096)).first { Array(answer.bytes[$0..<min($0 + 4, answer.bytes.count)]) == separator })
        let content = answer.bytes[(headEnd + 4)...]
        #expect(content.count == chunk.count * chunks, "downloaded \(content.count) bytes")
        #expect(content.elementsEqual((0..<chunks).lazy.flatMap { _ in chunk }), "the download is the upload")
    }

    /// The status lines of the answers in `text`, in order (an answer's head may follow the
    /// previous answer's body on the same line).
    static func statuses(_ text: String) -> [String] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { $0.components(separatedBy: "\r\n")[0] }
    }

    static func residentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
}
