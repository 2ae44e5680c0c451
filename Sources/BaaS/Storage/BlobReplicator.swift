// Bytes between nodes (docs/STORAGE.md "Cluster"). The primary ships: after an upload's blob is
// durable locally and before its metadata commits, the primary PUTs the blob to every other
// member (`PUT /storage/v1/internal/blob/<sha256>`, service_role key of the cluster secret) and
// waits for `copiesRequired` of them to answer that it is durable there (`sync`: 1, `all`:
// every peer, `async`: none waited for). So in `sync` mode an acknowledged upload's bytes are
// durable on two nodes, and its metadata reaches a replica (through the WAL) after its bytes.
// A member that missed a push (down, behind, bootstrapped from a checkpoint) fetches missing
// blobs (`GET /storage/v1/internal/blob/<sha256>`) from the primary first, then from the other
// members: on a download miss, and in a background pass over the object rows (`catchUp`, on
// every member). The other members matter when the member that missed a push is promoted
// before its catch-up: in `sync` mode only one replica needed the copy, and as the primary it
// has no primary to ask (ST8). Until it has a blob it never lists the object
// (StorageService.list checks the blob file). The WAL protocol is unchanged.

import AsyncHTTPClient
import Foundation
import Kernel
import Logging
import NIOCore
import NIOHTTP1

/// Where the other members are (wired by the Node module from the cluster config).
public struct StoragePeers: Sendable {
    /// HTTP HOST:PORT of every other member.
    public let others: @Sendable () -> [String]
    /// nil when this node is the primary.
    public let primary: @Sendable () -> String?
    /// Replica copies an upload waits for before its metadata commits.
    public let copiesRequired: @Sendable () -> Int

    public init(others: @escaping @Sendable () -> [String], primary: @escaping @Sendable () -> String?,
                copiesRequired: @escaping @Sendable () -> Int) {
        self.others = others
        self.primary = primary
        self.copiesRequired = copiesRequired
    }

    public static let alone = StoragePeers(others: { [] }, primary: { nil }, copiesRequired: { 0 })
}

/// A blob's bytes as an async sequence of chunks (downloads and pushes).
struct BlobChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reader: BlobReader
    let start: Int64
    let end: Int64  // exclusive

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: BlobReader
        var offset: Int64
        let end: Int64
        mutating func next() async throws -> ByteBuffer? {
            guard offset < end else { return nil }
            let count = Int(Swift.min(Int64(StorageLimits.chunkBytes), end - offset))
            let bytes = try reader.read(at: offset, count: count)
            guard !bytes.isEmpty else { throw AeroError(.ioError, "a blob ended early (\(offset) of \(end) bytes)") }
            offset += Int64(bytes.count)
            return ByteBuffer(bytes: bytes)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(reader: reader, offset: start, end: end) }
}

struct BlobReplicator: Sendable {
    let blobs: BlobStore
    let peers: StoragePeers
    let secret: [UInt8]
    let clock: any KernelClock
    let logger: Logger

    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(1)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        MemberHTTPS.apply(to: &configuration)  // cluster TLS: HTTPS trusting the cluster CA (TLS1)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    var serviceKey: String { APIKeys.make(role: "service_role", secret: secret, nowSeconds: clock.nowMicros() / 1_000_000) }

    /// Pushes a durable blob to the other members; throws unless `copiesRequired` stored it.
    func push(_ sha256: String) async throws {
        let targets = peers.others()
        let needed = Swift.min(peers.copiesRequired(), targets.count)
        guard !targets.isEmpty else { return }
        let key = serviceKey
        let stored = await withTaskGroup(of: Bool.self) { group in
            for target in targets {
                group.addTask {
                    do {
                        try await pushOne(sha256, to: target, key: key)
                        return true
                    } catch {
                        logger.warning("blob push failed", metadata: ["peer": "\(target)", "sha256": "\(sha256)", "error": "\(error)"])
                        return false
                    }
                }
            }
            // Wait only for the copies needed; the rest finish in the background of this group.
            var ok = 0, done = 0
            for await result in group {
                done += 1
                if result { ok += 1 }
                if ok >= needed && needed > 0 { break }
            }
            if ok < needed { return ok }
            // async mode (needed == 0) waits for nothing beyond this point either
            return ok
        }
        guard stored >= needed else {
            throw StorageError.replicaBlob("the object's bytes are durable on this node but only \(stored) of the \(needed) replica copies the commit mode needs were made; nothing was committed, retry")
        }
    }

    func pushOne(_ sha256: String, to target: String, key: String) async throws {
        guard let reader = try blobs.reader(sha256) else { throw AeroError(.notFound, "blob \(sha256) vanished") }
        let size = reader.size
        var request = HTTPClientRequest(url: MemberHTTPS.url(target, "/storage/v1/internal/blob/\(sha256)"))
        request.method = .PUT
        request.headers.add(name: "Authorization", value: "Bearer \(key)")
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.body = .stream(BlobChunks(reader: reader, start: 0, end: size), length: .known(size))
        let response = try await Self.client.execute(request, timeout: .seconds(StorageLimits.peerTransferTimeoutSeconds))
        _ = try await response.body.collect(upTo: 64 << 10)
        guard response.status == .ok else { throw AeroError(.ioError, "peer \(target) answered \(response.status.code)") }
    }

    /// Fetches a blob into the local store (a miss): from the primary, then from each other
    /// member (ST8). False when no member could send it; a member that fails is logged and the
    /// next one asked.
    func fetch(_ sha256: String) async throws -> Bool {
        guard BlobStore.isHash(sha256) else { return false }
        let primary = peers.primary()
        let sources = (primary.map { [$0] } ?? []) + peers.others().filter { $0 != primary }
        for source in sources {
            do {
                if try await fetch(sha256, from: source) { return true }
            } catch {
                logger.warning("blob fetch failed", metadata: ["peer": "\(source)", "sha256": "\(sha256)", "error": "\(error)"])
            }
        }
        return false
    }

    /// One member's copy; false when it does not hold the blob.
    private func fetch(_ sha256: String, from source: String) async throws -> Bool {
        var request = HTTPClientRequest(url: MemberHTTPS.url(source, "/storage/v1/internal/blob/\(sha256)"))
        request.headers.add(name: "Authorization", value: "Bearer \(serviceKey)")
        let response = try await Self.client.execute(request, timeout: .seconds(StorageLimits.peerTransferTimeoutSeconds))
        guard response.status == .ok else {
            _ = try? await response.body.collect(upTo: 64 << 10)
            return false
        }
        let writer = try blobs.writer(limitBytes: Int64.max)
        for try await chunk in response.body {
            try chunk.withUnsafeReadableBytes { try writer.write($0) }
        }
        let (stored, _) = try writer.finish()
        guard stored == sha256 else {
            throw AeroError(.ioError, "member \(source) sent bytes hashing to \(stored) for blob \(sha256)")
        }
        return true
    }
}
