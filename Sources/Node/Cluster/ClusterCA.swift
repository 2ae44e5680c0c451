// The cluster CA of `aerodb cluster init --tls` and the member certificates it signs (issue 18
// part 6, invariant TLS1; docs/OPERATIONS.md "TLS in a cluster").
//
// Files (PEM):
//   DIR/cluster-ca/ca.pem        the CA certificate (self-signed, P-256, CA:TRUE pathlen 0)
//   DIR/cluster-ca/ca-key.pem    its private key, mode 0600 in a 0700 directory. It is in no member
//                                directory: keep it offline; `aerodb cluster cert` needs it only
//                                to issue or replace a member certificate.
//   NODE/tls/ca.pem              the CA certificate (or a bundle during a CA rotation)
//   NODE/tls/node.pem            the member's certificate: CN = node id, SANs = the hosts its
//                                peers and clients dial (IP or DNS), serverAuth + clientAuth
//   NODE/tls/node-key.pem        its P-256 private key, mode 0600
// aerodb.json: "tls": {"cert_file": "tls/node.pem", "key_file": "tls/node-key.pem", "ca_file": "tls/ca.pem"}
//
// Invariants: a key file is created with mode 0600 (open(2) with O_EXCL on a temporary name,
// then renamed over the old file: never readable by others, not even for a moment); a member
// certificate is checked against the CA's key before it is written.

import Crypto
import Foundation
import BaaS
import Kernel
import SwiftASN1
import X509

enum ClusterTLSLimits {
    /// Lifetime of the cluster CA (days): ten years; replacing it means a rotation on every member.
    static let caValidityDays = 3_650
    /// Lifetime of a member certificate (days): two years; `aerodb cluster cert` replaces one.
    static let memberValidityDays = 730
    /// A certificate is valid from this long before it was issued (seconds): clocks of members
    /// differ a little.
    static let notBeforeSkewSeconds = 300
    /// `aerodb start` warns when its certificate expires within this many days.
    static let expiryWarningDays = 30
}

struct ClusterCA {
    static let directoryName = "cluster-ca"
    static let certificateFile = "ca.pem"
    static let keyFile = "ca-key.pem"
    /// Where a member keeps its TLS files, and their names (relative to the node directory).
    static let memberTLS = TLSFiles(certFile: "tls/node.pem", keyFile: "tls/node-key.pem", caFile: "tls/ca.pem")

    let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// A new CA for the cluster `clusterID`.
    static func create(clusterID: String, now: Date = Date()) throws -> ClusterCA {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("AeroDB cluster \(clusterID)")
            CommonName("AeroDB cluster CA")
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-Double(ClusterTLSLimits.notBeforeSkewSeconds)),
            notValidAfter: now.addingTimeInterval(Double(ClusterTLSLimits.caValidityDays) * 86_400),
            issuer: name, subject: name,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return ClusterCA(certificate: certificate, key: key)
    }

    /// Reads `directory`/ca.pem and ca-key.pem (AERO_CONFIG_INVALID naming what is missing).
    static func load(directory: String) throws -> ClusterCA {
        let certPath = directory + "/" + certificateFile, keyPath = directory + "/" + keyFile
        guard let certData = FileManager.default.contents(atPath: certPath),
              let keyData = FileManager.default.contents(atPath: keyPath) else {
            throw AeroError(.configInvalid, "\(directory) holds no \(certificateFile) and \(keyFile) (the cluster CA written by `aerodb cluster init --tls`)")
        }
        do {
            let certificate = try Certificate(pemEncoded: String(decoding: certData, as: UTF8.self))
            let key = try P256.Signing.PrivateKey(pemRepresentation: String(decoding: keyData, as: UTF8.self))
            guard certificate.publicKey == Certificate.PublicKey(key.publicKey) else {
                throw AeroError(.configInvalid, "\(keyPath) is not the key of \(certPath)")
            }
            return ClusterCA(certificate: certificate, key: key)
        } catch let error as AeroError {
            throw error
        } catch {
            throw AeroError(.configInvalid, "\(directory): the CA certificate or key does not parse (\(error))")
        }
    }

    /// Writes the CA into `directory` (0700), its key with mode 0600.
    func write(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try Self.writeFile(directory + "/" + Self.certificateFile, try certificate.serializeAsPEM().pemString + "\n", mode: 0o644)
        try Self.writeFile(directory + "/" + Self.keyFile, key.pemRepresentation + "\n", mode: 0o600)
    }

    /// A member certificate for `nodeID`, valid for `hosts` (IP addresses or DNS names), and its key.
    func issue(nodeID: String, hosts: [String], now: Date = Date()) throws -> (certificate: Certificate, key: P256.Signing.PrivateKey) {
        let memberKey = P256.Signing.PrivateKey()
        let names = try Self.subjectAlternativeNames(hosts)
        let subject = try DistinguishedName {
            OrganizationName("AeroDB cluster member")
            CommonName(nodeID)
        }
        let publicKey = Certificate.PublicKey(memberKey.publicKey)
        let notAfter = min(now.addingTimeInterval(Double(ClusterTLSLimits.memberValidityDays) * 86_400), certificate.notValidAfter)
        let member = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-Double(ClusterTLSLimits.notBeforeSkewSeconds)), notValidAfter: notAfter,
            issuer: certificate.subject, subject: subject,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names)
                SubjectKeyIdentifier(hash: publicKey)
                AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        // Checked before it is written: signed by this CA's key.
        guard certificate.publicKey.isValidSignature(member.signature, for: member) else {
            throw AeroError(.internalError, "the certificate issued for \(nodeID) does not verify with the CA key")
        }
        return (member, memberKey)
    }

    /// Writes `nodeDirectory`/tls: the CA certificate, a new certificate for `nodeID` valid for
    /// `hosts`, and its key (0600). Replaces the files that are there (rotation).
    func writeMember(nodeDirectory: String, nodeID: String, hosts: [String]) throws -> Certificate {
        let (member, memberKey) = try issue(nodeID: nodeID, hosts: hosts)
        let files = Self.memberTLS
        try FileManager.default.createDirectory(atPath: nodeDirectory + "/tls", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        // The CA file may be a bundle (a CA rotation: old and new CA trusted together): this CA is
        // added when missing, the others are kept.
        let caPath = nodeDirectory + "/" + files.caFile!
        let caPEM = try certificate.serializeAsPEM().pemString
        let bundle = FileManager.default.contents(atPath: caPath).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if !bundle.contains(caPEM) {
            try Self.writeFile(caPath, (bundle.isEmpty || bundle.hasSuffix("\n") ? bundle : bundle + "\n") + caPEM + "\n", mode: 0o644)
        }
        try Self.writeFile(nodeDirectory + "/" + files.keyFile, memberKey.pemRepresentation + "\n", mode: 0o600)
        try Self.writeFile(nodeDirectory + "/" + files.certFile, try member.serializeAsPEM().pemString + "\n", mode: 0o644)
        return member
    }

    /// One SAN per distinct host: an IPv4/IPv6 address as an IP SAN, anything else as a DNS name.
    static func subjectAlternativeNames(_ hosts: [String]) throws -> [GeneralName] {
        var seen = Set<String>(), names: [GeneralName] = []
        for raw in hosts {
            let host = raw.hasPrefix("[") && raw.hasSuffix("]") ? String(raw.dropFirst().dropLast()) : raw
            guard !host.isEmpty, seen.insert(host.lowercased()).inserted else { continue }
            if let bytes = ipBytes(host) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
            } else {
                guard host.utf8.count <= 253, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "*") }) else {
                    throw AeroError(.configInvalid, "\"\(host)\" is neither an IP address nor a DNS name")
                }
                names.append(.dnsName(host))
            }
        }
        guard !names.isEmpty else { throw AeroError(.configInvalid, "a member certificate needs at least one host") }
        return names
    }

    /// The address bytes of an IPv4 or IPv6 literal, nil for a name.
    static func ipBytes(_ host: String) -> [UInt8]? {
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// Writes `text` to `path` with `mode` from its creation: a temporary file opened with
    /// O_EXCL and that mode, flushed, renamed over `path`.
    static func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else { throw AeroError(.ioError, "cannot create \(temporary): errno \(errno)") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, fchmodPath(temporary, mode), rename(temporary, path) == 0 else {
            unlink(temporary)
            throw AeroError(.ioError, "cannot write \(path): errno \(errno)")
        }
    }

    /// chmod (open(2)'s mode is masked by the umask; the key's must be exactly `mode`).
    private static func fchmodPath(_ path: String, _ mode: mode_t) -> Bool { chmod(path, mode) == 0 }

    /// Days until `certificate` expires (negative once expired).
    static func daysLeft(_ certificate: Certificate, now: Date = Date()) -> Int {
        Int(certificate.notValidAfter.timeIntervalSince(now) / 86_400)
    }
}
