// Errors a person reads at the terminal: one sentence each, with the stable AERO_ code.
// - A port the node must listen on that another process holds: AERO_PORT_IN_USE "port N is in
//   use", checked before anything is opened (and mapped from a bind failure, should the port be
//   taken in between).
// - Network errors of the CLI's HTTP calls (NIO and AsyncHTTPClient errors print as nested
//   dumps): "cannot reach URL: connection refused", from the errno or the client's error kind.

import ArgumentParser
import AsyncHTTPClient
import Foundation
import Kernel
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

enum CLIErrors {
    /// Runs a command's body: an AeroError is printed as `AERO_CODE: message` and the command
    /// exits 1 (other errors go to ArgumentParser as they are).
    static func exitOnAeroError(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let error as AeroError {
            print("\(error.code.rawValue): \(error.message)")
            throw ExitCode(1)
        }
    }

    /// Throws AERO_PORT_IN_USE when a listener holds `address` (IPv4 literal hosts; other hosts
    /// are left to the bind itself). `what` names the port for the message ("HTTP").
    static func requireFree(_ address: HostPort, _ what: String) throws {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = in_port_t(UInt16(address.port).bigEndian)
        let host = address.host == "localhost" ? "127.0.0.1" : address.host
        guard inet_pton(AF_INET, host, &sin.sin_addr) == 1 else { return }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        // As the node's listeners do: a port in TIME_WAIT is not "in use".
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound != 0 else { return }
        let code = Glibc.errno
        if code == EADDRINUSE { throw portInUse(address, what) }
        throw AeroError(.configInvalid, "cannot listen on \(address.host):\(address.port) (\(what)): \(String(cString: strerror(code)).lowercased())")
    }

    static func portInUse(_ address: HostPort, _ what: String) -> AeroError {
        AeroError(.portInUse, "port \(address.port) is in use (\(what) address \(address.host):\(address.port)): another process listens there; stop it (`ss -ltnp 'sport = :\(address.port)'` names it) or choose another port")
    }

    /// A bind failure of the HTTP server as AERO_PORT_IN_USE; other errors unchanged.
    static func bindFailure(_ error: any Error, _ address: HostPort, _ what: String) -> any Error {
        errnoCode(of: error) == EADDRINUSE ? portInUse(address, what) : error
    }

    /// What went wrong on the network, as a short phrase ("connection refused").
    static func networkPhrase(_ error: any Error) -> String {
        if let client = error as? HTTPClientError {
            if client == .connectTimeout { return "no connection within the connect timeout" }
            if client == .deadlineExceeded || client == .readTimeout { return "no answer in time" }
            if client == .remoteConnectionClosed { return "the connection closed before an answer" }
            if client == .invalidURL || client == .emptyHost || client == .emptyScheme { return "the URL is not an http:// or https:// URL" }
        }
        if let code = errnoCode(of: error) { return String(cString: strerror(code)).lowercased() }
        return "\(type(of: error))"
    }

    /// A network error of the CLI's own calls as one sentence; any other error unchanged.
    static func readable(_ error: any Error) -> any Error {
        guard error is HTTPClientError || error is IOError || error is ChannelError || errnoCode(of: error) != nil else { return error }
        return AeroError(.primaryUnavailable, "cannot reach the node: \(networkPhrase(error))")
    }

    /// The errno an error carries (NIO's IOError, or an `(errno: N)` in a wrapped error's text).
    static func errnoCode(of error: any Error) -> Int32? {
        if let io = error as? IOError { return io.errnoCode }
        let text = String(describing: error)
        guard let range = text.range(of: "errno: ") else { return nil }
        return Int32(text[range.upperBound...].prefix(while: \.isNumber))
    }
}

extension CLIErrors {
    /// `aerodb start`: the HTTP port, and in a cluster this node's replication port, are free.
    static func requireNodePortsFree(_ config: NodeConfig, http: HostPort) throws {
        try requireFree(http, "HTTP")
        if config.members.count > 1, let me = config.members.first(where: { $0.nodeID == config.nodeID }) {
            try requireFree(HostPort(host: me.replication.host, port: me.replication.port), "replication")
        }
    }
}

import ArgumentParser

extension AeroDBCommand {
    /// ArgumentParser's entry point, with network errors of any command turned into one
    /// sentence with its code (AsyncHTTPClient and NIO errors print as nested dumps).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: CLIErrors.readable(error))
        }
    }
}
