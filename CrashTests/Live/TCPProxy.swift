// TCPProxy — a test-only TCP forwarder that integration tests put between cluster
// nodes to simulate network partitions. Point a node at `proxy.port` instead of its
// peer's real port; bytes are forwarded to `targetHost:targetPort`. `cut()` tears
// down every proxied connection and makes new ones get closed right after accept,
// until `heal()`. `stop()` (also run by deinit) shuts the whole proxy down.
//
// Invariants:
//  * All mutable state lives in `State` and is touched only while holding its one
//    NSCondition (used as the lock).
//  * A proxied connection's two fds are closed exactly once, by the last of its two
//    pump threads to exit, and removed from `live` at that moment. cut()/stop() only
//    shutdown(SHUT_RDWR) fds that are still in `live`, which unblocks the pumps and
//    sends FIN to both peers; then they wait (bounded) until the pumps have closed
//    them. So no thread ever uses an fd number after it was closed and reused.
//  * The listening fd is closed only by the accept thread after accept() fails;
//    stop() unblocks that accept() with shutdown() on the listening fd.
//  * Threads capture `State`, never the TCPProxy, so deinit can run and call stop().
//  * send() uses MSG_NOSIGNAL, so a vanished peer gives EPIPE, never SIGPIPE.
//  * Sockets are CLOEXEC, so spawned node processes don't inherit them.

import Foundation
import Glibc
import Kernel

// @unchecked Sendable is sound: the class's own stored properties are immutable
// (`let`), and all mutable state is inside `State`, guarded by one NSCondition.
public final class TCPProxy: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// The port (on 127.0.0.1) clients should connect to.
    public let port: Int
    private let state: State

    public init(targetHost: String = "127.0.0.1", targetPort: Int) throws {
        let target = try Self.resolve(targetHost, targetPort)
        let fd = socket(AF_INET, Self.streamCloexec, 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0  // let the OS choose a free port
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard Self.withSockaddr(&addr, { bind(fd, $0, len) }) == 0, listen(fd, 64) == 0,
              Self.withSockaddr(&addr, { getsockname(fd, $0, &len) }) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot listen on 127.0.0.1: \(message)")
        }
        port = Int(UInt16(bigEndian: addr.sin_port))
        state = State(listenFd: fd, target: target)
        let state = self.state
        NamedThread.start("tcpproxy-\(port)") { state.acceptLoop() }
    }

    deinit { stop() }

    public var isCut: Bool { state.cond.withLock { state.isCut } }

    /// Partition: close every proxied connection; new ones are closed right after accept.
    /// Returns once the connections' fds are closed (or after 5 s). Idempotent.
    public func cut() {
        state.cond.withLock {
            state.isCut = true
            for conn in state.live.values { conn.shutdownBoth() }
            state.wait(seconds: 5) { state.pending == 0 && state.live.isEmpty }
        }
    }

    /// End the partition: new connections are proxied again.
    public func heal() { state.cond.withLock { state.isCut = false } }

    /// Close the listener and all connections; returns once the accept thread has exited
    /// and all fds are closed (or after 5 s). Idempotent.
    public func stop() {
        state.cond.withLock {
            if !state.stopped {
                state.stopped = true
                if state.listenFd >= 0 { shutdown(state.listenFd, Int32(SHUT_RDWR)) }
                for conn in state.live.values { conn.shutdownBoth() }
            }
            state.wait(seconds: 5) { state.listenFd < 0 && state.pending == 0 && state.live.isEmpty }
        }
    }

    // MARK: - Internals

    fileprivate static let streamCloexec = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

    fileprivate static func withSockaddr<R>(_ addr: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>) -> R) -> R {
        withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
    }

    private static func resolve(_ host: String, _ port: Int) throws -> sockaddr_in {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        defer { if let result { freeaddrinfo(result) } }
        guard rc == 0, let address = result?.pointee.ai_addr else {
            throw Failure(description: "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
    }

    /// One proxied client<->target pair. `pumpsLeft` is only touched under State.cond.
    fileprivate final class Connection: @unchecked Sendable {
        let client: Int32, upstream: Int32
        var pumpsLeft = 2
        init(client: Int32, upstream: Int32) { self.client = client; self.upstream = upstream }
        func shutdownBoth() { shutdown(client, Int32(SHUT_RDWR)); shutdown(upstream, Int32(SHUT_RDWR)) }
    }

    // @unchecked Sendable is sound: every `var` is read/written only while holding `cond`.
    fileprivate final class State: @unchecked Sendable {
        let cond = NSCondition()
        let target: sockaddr_in
        var listenFd: Int32                          // -1 once the accept thread closed it
        var isCut = false, stopped = false
        var pending = 0                              // accepted, target connect in progress
        var live: [ObjectIdentifier: Connection] = [:]

        init(listenFd: Int32, target: sockaddr_in) { self.listenFd = listenFd; self.target = target }

        /// Caller holds `cond`. Waits until `done()` or the timeout.
        func wait(seconds: Double, until done: () -> Bool) {
            let deadline = Date(timeIntervalSinceNow: seconds)
            while !done() && cond.wait(until: deadline) {}
        }

        func acceptLoop() {
            let fd = cond.withLock { listenFd }  // only this thread closes it
            while true {
                let client = accept(fd, nil, nil)  // (accept4 is not exported by Glibc)
                if client < 0 {
                    let err = errno
                    if err == EINTR || err == ECONNABORTED { continue }
                    if cond.withLock({ stopped }) { break }
                    if [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(err) { usleep(50_000); continue }
                    break  // unexpected error: give up rather than spin
                }
                let refuse = cond.withLock { () -> Bool in
                    if isCut || stopped { return true }
                    pending += 1
                    return false
                }
                if refuse { close(client); continue }
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                Thread { self.handle(client) }.start()
            }
            cond.withLock { close(fd); listenFd = -1; cond.broadcast() }
        }

        private func handle(_ client: Int32) {
            var addr = target
            let upstream = socket(AF_INET, TCPProxy.streamCloexec, 0)
            let connected = upstream >= 0 && TCPProxy.withSockaddr(&addr) {
                connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            } == 0
            let conn = cond.withLock { () -> Connection? in
                pending -= 1
                defer { cond.broadcast() }
                guard connected, !isCut, !stopped else {
                    if upstream >= 0 { close(upstream) }
                    close(client)
                    return nil
                }
                let conn = Connection(client: client, upstream: upstream)
                live[ObjectIdentifier(conn)] = conn
                return conn
            }
            guard let conn else { return }
            Self.setNoDelay(client)
            Self.setNoDelay(upstream)
            Thread { self.pump(conn, from: upstream, to: client) }.start()
            pump(conn, from: client, to: upstream)
        }

        private static func setNoDelay(_ fd: Int32) {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }

        /// Copies src -> dst until either side ends, then ends the whole connection.
        private func pump(_ conn: Connection, from src: Int32, to dst: Int32) {
            let size = 64 * 1024
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            copying: while true {
                let n = recv(src, buffer, size, 0)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                var offset = 0
                while offset < n {
                    let w = send(dst, buffer + offset, n - offset, Int32(MSG_NOSIGNAL))
                    if w < 0 && errno == EINTR { continue }
                    if w <= 0 { break copying }
                    offset += w
                }
            }
            cond.withLock {
                conn.shutdownBoth()  // wakes the opposite pump
                conn.pumpsLeft -= 1
                if conn.pumpsLeft == 0 {
                    close(conn.client)
                    close(conn.upstream)
                    live[ObjectIdentifier(conn)] = nil
                    cond.broadcast()
                }
            }
        }
    }
}
