// The operations settings of `aerodb.json` (docs/OPERATIONS.md):
//
//   "slow_query_ms": 1000                    requests slower than this are logged and kept in the
//                                            slow log (0 turns it off); 0...SlowLog.thresholdMillisMax
//   "tls": {"cert_file": "tls/cert.pem",     HTTPS on the HTTP port: a PEM certificate chain and
//           "key_file": "tls/key.pem"}       its PEM private key, relative to the node directory
//                                            or absolute. Absent: plain HTTP (said at start).
//   "tls": {..., "ca_file": "tls/ca.pem"}   cluster TLS (`aerodb cluster init --tls`): the cluster
//                                            CA bundle; mutual TLS on the replication port and
//                                            HTTPS between members (ClusterTLS, invariant TLS1)

import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Kernel

public struct TLSFiles: Sendable, Equatable {
    public var certFile: String
    public var keyFile: String
    /// The cluster CA bundle (PEM): set, the cluster's members authenticate each other with it.
    public var caFile: String?

    public init(certFile: String, keyFile: String, caFile: String? = nil) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.caFile = caFile
    }

    public static func parse(_ value: JSONValue) throws -> TLSFiles {
        guard case .object(let o) = value else { throw AeroError(.configInvalid, "tls must be {\"cert_file\": ..., \"key_file\": ...}") }
        for key in o.keys where key != "cert_file" && key != "key_file" && key != "ca_file" {
            throw AeroError(.configInvalid, "tls: unknown setting \"\(key)\" (cert_file, key_file, ca_file)")
        }
        guard let cert = o["cert_file"]?.stringValue, !cert.isEmpty, let key = o["key_file"]?.stringValue, !key.isEmpty else {
            throw AeroError(.configInvalid, "tls needs cert_file and key_file (PEM files)")
        }
        var caFile: String?
        if let ca = o["ca_file"] {
            guard let path = ca.stringValue, !path.isEmpty else { throw AeroError(.configInvalid, "tls.ca_file must be a file path (PEM)") }
            caFile = path
        }
        return TLSFiles(certFile: cert, keyFile: key, caFile: caFile)
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["cert_file": .string(certFile), "key_file": .string(keyFile)]
        if let caFile { o["ca_file"] = .string(caFile) }
        return .object(o)
    }

    /// `file` relative to the node directory `directory`, or as given when absolute.
    public static func path(_ file: String, in directory: String) -> String { file.hasPrefix("/") ? file : directory + "/" + file }

    /// The HTTP server wrapped in TLS with these files (paths relative to `directory`). Throws
    /// AERO_CONFIG_INVALID naming the file that cannot be read or parsed.
    public func server(_ base: HTTPServerBuilder, directory: String) throws -> HTTPServerBuilder {
        func path(_ p: String) -> String { p.hasPrefix("/") ? p : directory + "/" + p }
        let certificates: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path(certFile))
        } catch {
            throw AeroError(.configInvalid, "tls.cert_file \(path(certFile)): not a readable PEM certificate chain (\(error))")
        }
        do {
            key = try NIOSSLPrivateKey(file: path(keyFile), format: .pem)
        } catch {
            throw AeroError(.configInvalid, "tls.key_file \(path(keyFile)): not a readable PEM private key (\(error))")
        }
        guard !certificates.isEmpty else { throw AeroError(.configInvalid, "tls.cert_file \(path(certFile)) holds no certificate") }
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: certificates.map { .certificate($0) },
                                                                     privateKey: .privateKey(key))
        return try .tls(base, tlsConfiguration: configuration)
    }
}

/// The operations settings kept cluster-wide in `_settings` (Settings/ClusterSettings.swift), so
/// whichever member is primary reads the same value: `archive.directory` (WALArchiver),
/// `backup.schedule` (BackupScheduler).
public enum OpsClusterSettings {
    public static let keys: Set<String> = [WALArchiver.settingKey, BackupScheduler.settingKey]
    /// Longest archive directory path (bytes): PATH_MAX.
    static let pathBytesMax = 4_096

    /// Checks a value before it is stored (AERO_REQUEST_INVALID otherwise).
    static func validate(_ key: String, _ value: JSONValue) throws {
        switch key {
        case WALArchiver.settingKey:
            if value == .null { return }
            guard case .string(let path) = value, path.hasPrefix("/"), path.utf8.count <= pathBytesMax,
                  !path.split(separator: "/").contains("..") else {
                throw AeroError(.requestInvalid, "\(key) is an absolute directory path (at most \(pathBytesMax) bytes, no ..), or null for off")
            }
        case BackupScheduler.settingKey:
            if value != .null { _ = try BackupScheduler.parse(value) }
        default:
            throw AeroError(.requestInvalid, "\(key) is not an operations setting")
        }
    }
}
