// The blobs of a backup (B4, Kernel/Backup/Backup.swift): `aerodb backup` copies every blob the
// backup's end state references into <backup>/blobs/<sha256> (from a running node over
// `GET /storage/v1/internal/blob/<sha256>` with the service_role key, or from a stopped node's
// data/blobs), hashing the bytes as they are written; `aerodb restore` and `aerodb backup verify`
// install them into a data directory's BlobStore, which re-hashes them (ST2).
// A blob the node removed while the backup ran (its object deleted or replaced after the
// backup's end LSN, then collected) fails the backup with AERO_BACKUP_INCOMPLETE: never a
// backup that silently lacks an object's bytes.

import AsyncHTTPClient
import Crypto
import Foundation
import Kernel
import NIOCore

public enum BackupBlobFiles {
    /// Bytes read from a blob file per call (and the most one chunk held in memory).
    static let copyChunkBytes = 1 << 20
    /// How long fetching one blob from a node may take.
    static let requestTimeoutSeconds: Int64 = 600

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The blobs referenced at the end of the backup in `backup`: restores it into a scratch
    /// directory (the kernel restore checks B1 again) and reads the object rows there.
    public static func referenced(backup: String) async throws -> [String: Int64] {
        let scratch = NSTemporaryDirectory() + "aerodb-backup-blobs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        _ = try await Database.restore(backup: backup, into: KernelOptions(dataDirectory: scratch), target: .end)
        return try await referenced(dataDirectory: scratch)
    }

    public static func referenced(dataDirectory: String) async throws -> [String: Int64] {
        let database = try await Database.open(KernelOptions(dataDirectory: dataDirectory))
        do {
            let list = try BackupBlobs.referenced(database)
            await database.close()
            return list
        } catch {
            await database.close()
            throw error
        }
    }

    /// Writes `<backup>/blobs/<sha>` from `chunks` (temp file, fsync, rename), checking size and
    /// SHA-256 against the name before the rename.
    static func store(sha: String, size: Int64, into backup: String,
                      chunks: (_ write: ([UInt8]) throws -> Void) async throws -> Void) async throws {
        let folder = backup + "/" + BackupLimits.blobDirectory
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let temp = folder + "/" + sha + ".part"
        guard FileManager.default.createFile(atPath: temp, contents: nil), let handle = FileHandle(forWritingAtPath: temp) else {
            throw AeroError(.internalError, "cannot create \(temp)")
        }
        var hasher = SHA256()
        var written: Int64 = 0
        do {
            try await chunks { bytes in
                hasher.update(data: bytes)
                written += Int64(bytes.count)
                try handle.write(contentsOf: bytes)
            }
            try handle.synchronize()
            try handle.close()
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: temp)
            throw error
        }
        let got = hex(hasher.finalize())
        guard got == sha, written == size else {
            try? FileManager.default.removeItem(atPath: temp)
            throw AeroError(.backupCorrupt, "blob \(sha) arrived as \(written) bytes hashing to \(got) (its object row says \(size) bytes)", invariant: "B4")
        }
        guard rename(temp, folder + "/" + sha) == 0 else { throw AeroError(.internalError, "cannot rename \(temp): errno \(errno)") }
    }

    /// Streams a local file in `copyChunkBytes` pieces.
    /// Replaces the pending manifest of `out` with the final one listing `blobs` (B4).
    public static func complete(_ manifest: BackupManifest, blobs: [String: Int64], out: String) throws -> BackupManifest {
        // The blob files' names are durable before the manifest lists them.
        if !blobs.isEmpty { try syncDirectory(out + "/" + BackupLimits.blobDirectory) }
        var manifest = manifest
        manifest.blobs = blobs.sorted { $0.key < $1.key }.map { BackupManifest.Blob(sha256: $0.key, bytes: $0.value) }
        manifest.blobsPending = false
        try manifest.write(into: out)
        return manifest
    }

    /// fsync of a directory (its entries: renames into it are durable once this returns).
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw AeroError(.internalError, "cannot open \(path): errno \(errno)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw AeroError(.internalError, "cannot fsync \(path): errno \(errno)") }
    }

    static func readFile(_ path: String, _ write: ([UInt8]) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AeroError(.backupIncomplete, "\(path) is missing", invariant: "B4")
        }
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: copyChunkBytes), !data.isEmpty { try write(Array(data)) }
    }

    /// Copies every referenced blob from a stopped node's data directory.
    public static func copyOffline(_ blobs: [String: Int64], dataDirectory: String, into backup: String) async throws {
        for (sha, size) in blobs.sorted(by: { $0.key < $1.key }) {
            let path = dataDirectory + "/blobs/" + sha.prefix(2) + "/" + sha
            guard FileManager.default.fileExists(atPath: path) else {
                throw AeroError(.backupIncomplete, "blob \(sha), which an object row names, is missing from \(dataDirectory)/blobs", invariant: "B4")
            }
            try await store(sha: sha, size: size, into: backup) { write in try readFile(path, write) }
        }
    }

    /// Copies every referenced blob from a running node (`GET /storage/v1/internal/blob/<sha>`).
    public static func copyOnline(_ blobs: [String: Int64], url: String, key: String, into backup: String) async throws {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        for (sha, size) in blobs.sorted(by: { $0.key < $1.key }) {
            var request = HTTPClientRequest(url: base + "/storage/v1/internal/blob/" + sha)
            request.headers.add(name: "apikey", value: key)
            request.headers.add(name: "Authorization", value: "Bearer " + key)
            let response: HTTPClientResponse
            do {
                response = try await HTTPClient.shared.execute(request, timeout: .seconds(Self.requestTimeoutSeconds))
            } catch {
                throw AeroError(.primaryUnavailable, "cannot read blob \(sha) from \(base): \(error)")
            }
            if response.status == .notFound {
                throw AeroError(.backupIncomplete, "blob \(sha), which an object row names at the backup's end LSN, is no longer on the node (its object was deleted or replaced during the backup and the blob collected): take the backup again", invariant: "B4")
            }
            guard response.status == .ok else {
                let body = try? await response.body.collect(upTo: 64 << 10)
                throw AeroError(.internalError, "blob \(sha): the node answered \(response.status.code): \(body.map { String(buffer: $0) } ?? "")")
            }
            try await store(sha: sha, size: size, into: backup) { write in
                for try await buffer in response.body { try write(Array(buffer.readableBytesView)) }
            }
        }
    }

    /// Installs the blobs of a format-2 backup into `dataDirectory`'s BlobStore (which hashes
    /// them again) and checks that every blob an object row names there is present (B4).
    /// Returns (blobs installed, object blobs missing: only possible below the backup's end).
    public static func install(backup: String, manifest: BackupManifest, dataDirectory: String) async throws -> (installed: Int, missing: Int) {
        guard let list = manifest.blobs else { return (0, 0) }
        let store = try BlobStore(dataDirectory: dataDirectory)
        for blob in list {
            let writer = try store.writer(limitBytes: Int64.max)
            do {
                try readFile(backup + "/" + BackupLimits.blobDirectory + "/" + blob.sha256) { try writer.write($0) }
            } catch {
                writer.abort()
                throw error
            }
            let (sha, size) = try writer.finish()
            guard sha == blob.sha256, size == blob.bytes else {
                throw AeroError(.backupCorrupt, "\(backup)/blobs/\(blob.sha256) holds \(size) bytes hashing to \(sha) (the manifest says \(blob.bytes) bytes)", invariant: "B4")
            }
        }
        let referenced = try await referenced(dataDirectory: dataDirectory)
        let missing = referenced.keys.filter { !store.exists($0) }.count
        return (list.count, missing)
    }
}
