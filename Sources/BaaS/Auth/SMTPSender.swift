// Mail delivery over SMTP (RFC 5321) when `auth.smtp` is configured. The outbox collection is
// the durable queue: a message is inserted in the same transaction as the code it carries; after
// the commit the primary delivers it and deletes the row. A delivery that fails leaves the row
// (GET /admin/v1/outbox shows it) and logs the SMTP answer. Without `auth.smtp` the rows stay:
// that is the dev outbox.
//
// Dialogue: 220 greeting, EHLO, [AUTH PLAIN], MAIL FROM, RCPT TO, DATA (dot-stuffed, CRLF), QUIT.
// Plain TCP only: TLS (STARTTLS or implicit) is not built yet, so point it at a relay on this
// host or a trusted network (docs/AUTH.md); credentials are refused unless the host is loopback.
// Every read and write has `timeoutSeconds`; a reply line is at most `replyBytesMax` bytes.

import Foundation
import Kernel
#if canImport(Glibc)
import Glibc
#endif

public struct SMTPSettings: Sendable {
    public var host: String
    public var port: Int = 25
    public var sender: String
    public var user: String?
    public var password: String?
    /// Set when the stored password does not open (SettingsSecrets): delivery fails with this
    /// message (AERO_CONFIG_INVALID; the mail stays in the outbox) instead of a wrong AUTH.
    public var passwordUnreadable: String?
    public var timeoutSeconds = 10
    public static let timeoutSecondsRange: ClosedRange<Int64> = 1...120
    /// A TCP port.
    public static let portRange: ClosedRange<Int64> = 1...65_535

    static func parse(_ json: JSONValue) throws -> SMTPSettings {
        guard case .object(let o) = json, case .string(let host)? = o["host"], case .string(let sender)? = o["sender"] else {
            throw AuthSettings.invalid("auth.smtp is {\"host\",\"port\"?,\"sender\",\"user\"?,\"password\"?,\"timeout_seconds\"?}")
        }
        var s = SMTPSettings(host: host, sender: sender)
        for (key, value) in o {
            switch (key, value) {
            case ("host", _), ("sender", _): continue
            case ("port", .int(let p)) where portRange.contains(p): s.port = Int(p)
            case ("user", .string(let u)): s.user = u
            case ("password", .string(let p)): s.password = p
            case ("timeout_seconds", .int(let t)) where timeoutSecondsRange.contains(t): s.timeoutSeconds = Int(t)
            default: throw AuthSettings.invalid("auth.smtp.\(key) is unknown or out of range")
            }
        }
        guard !sender.contains(where: { $0.isNewline || $0 == "<" || $0 == ">" }) else { throw AuthSettings.invalid("auth.smtp.sender is not an address") }
        if s.user != nil, !["127.0.0.1", "localhost", "::1"].contains(host) {
            throw AuthSettings.invalid("auth.smtp: credentials over plain TCP are refused for a non-loopback host (TLS is not built yet); use a local relay")
        }
        return s
    }
}

struct SMTPSender: Sendable {
    static let replyBytesMax = 4_096
    let settings: SMTPSettings

    /// Delivers one message; throws with the server's answer when it refuses.
    func send(_ message: MailMessage) throws {
        if let problem = settings.passwordUnreadable { throw AeroError(.configInvalid, problem) }
        let connection = try SMTPConnection(host: settings.host, port: settings.port, timeoutSeconds: settings.timeoutSeconds)
        defer { connection.close() }
        try connection.expect([220])
        try connection.command("EHLO aerodb", expect: [250])
        if let user = settings.user, let password = settings.password {
            let token = Data(([0] + Array(user.utf8) + [0] + Array(password.utf8))).base64EncodedString()
            try connection.command("AUTH PLAIN \(token)", expect: [235])
        }
        try connection.command("MAIL FROM:<\(settings.sender)>", expect: [250])
        try connection.command("RCPT TO:<\(message.to)>", expect: [250, 251])
        try connection.command("DATA", expect: [354])
        try connection.write(Self.data(message, from: settings.sender))
        try connection.expect([250])
        try? connection.command("QUIT", expect: [221])
    }

    /// Headers and body with CRLF line ends and leading dots doubled, ending in CRLF.CRLF.
    static func data(_ message: MailMessage, from sender: String) -> String {
        let headers = ["From: \(sender)", "To: \(message.to)", "Subject: \(message.subject)", "MIME-Version: 1.0",
                       "Content-Type: text/plain; charset=utf-8", "X-AeroDB-Mail-Type: \(message.type)"]
        let body = message.body.components(separatedBy: .newlines).map { $0.hasPrefix(".") ? "." + $0 : $0 }
        return (headers + [""] + body).joined(separator: "\r\n") + "\r\n.\r\n"
    }
}

/// One blocking TCP connection with timeouts (run off the async executors).
final class SMTPConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []

    init(host: String, port: Int, timeoutSeconds: Int) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw AeroError(.ioError, "SMTP host \(host) does not resolve")
        }
        defer { freeaddrinfo(result) }
        fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { throw AeroError(.ioError, "SMTP: socket() failed (errno \(errno))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        // Without the timeouts a silent server would hold a blocking-pool thread forever.
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0,
              setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw AeroError(.ioError, "SMTP: cannot set socket timeouts (errno \(code))")
        }
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw AeroError(.ioError, "SMTP: cannot connect to \(host):\(port) (errno \(code))")
        }
    }

    func close() { Glibc.close(fd) }

    func write(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw AeroError(.ioError, "SMTP: send failed (errno \(errno))") }
            bytes = bytes.dropFirst(n)
        }
    }

    func command(_ line: String, expect codes: [Int]) throws {
        try write(line + "\r\n")
        try expect(codes, after: line.hasPrefix("AUTH") ? "AUTH PLAIN" : line)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    func expect(_ codes: [Int], after command: String = "connect") throws {
        var line = try readLine()
        var text = line
        while line.count > 3, Array(line)[3] == "-" {
            line = try readLine()
            text += " " + line
        }
        guard let code = Int(line.prefix(3)), codes.contains(code) else {
            throw AeroError(.ioError, "SMTP server answered \"\(text)\" to \(command)")
        }
    }

    private func readLine() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<end], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeFirst(end + 1)
                return line
            }
            guard buffer.count < SMTPSender.replyBytesMax else { throw AeroError(.ioError, "SMTP: reply line too long") }
            var chunk = [UInt8](repeating: 0, count: 1_024)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw AeroError(.ioError, "SMTP: connection closed or timed out while reading a reply") }
            buffer += chunk.prefix(n)
        }
    }
}
