// Broadcast and presence between the members of a cluster (docs/REALTIME.md "Cluster", RT4).
//
// Transport: HTTP between members, `POST /realtime/v1/internal/relay` on each member's HTTP
// port, not the replication connection: broadcast and presence flow between every pair of
// members in both directions (replication is primary -> replica only, and its frames are the
// WAL's), they are not durable (nothing to log), and a slow or dead member must cost only its
// own link. One sender task per other member drains that member's bounded queue.
//
// Request body (JSON), one batch from `origin` to one member:
//   {"origin": node id, "incarnation": random id of the origin's process start,
//    "seq": Int (+1 per batch on this origin->member link), "sent_micros": Int,
//    "snapshot"?: [{"topic","private","conn":Int,"key","meta":{..}}],  // the origin's presences
//    "messages": [{"kind":"broadcast","topic","private","event","payload"}
//               | {"kind":"track","topic","private","conn","key","meta"}
//               | {"kind":"untrack","topic","private","conn"}]}
// Header `X-AeroDB-Relay-MAC`: hex HMAC-SHA256 of the body bytes under
// SecretDomain.realtimeRelay (the cluster's JWT secret, its own domain). A batch whose
// `sent_micros` is more than `relayClockSkewSecondsMax` away from the receiver's clock is refused.
// Answer: 200 {"snapshot_needed": Bool}.
//
// Invariants:
// - A member's presences on another member are exactly what the last snapshot plus the
//   messages after it, in `seq` order, say. A receiver that sees a new incarnation or a gap in
//   `seq` ignores that origin's presence messages (broadcasts still pass) and answers
//   `snapshot_needed`; the sender then builds its snapshot first and takes its queue after, so
//   snapshot + queued messages applied in order give the origin's state at send time.
// - A batch fits `relayBodyBytesMax` by construction: this node's presences (the snapshot) are
//   bounded by `presencesPerNodeMax` and `presenceBytesPerNodeMax` at `track`, and a batch's
//   messages by `relayMessageBytesMax`. A receiver refuses a snapshot over `presencesPerNodeMax`
//   whole (never applies part of one).
// - An incarnation is `<random>@<start micros>`: a receiver remembers the newest one per member
//   (kept after the member's presences are swept) and refuses batches of an earlier one
//   (replayed or delayed, `relayClockSkewSecondsMax` only bounds their age), and ignores a
//   batch whose `seq` it has seen.
// - Queues are bounded (`relayQueueMessagesMax`): past it a broadcast is dropped and counted,
//   a presence message is dropped and the next batch carries a snapshot. A failed request drops
//   the batch (broadcasts are at most once) and forces a snapshot.
// - A member that does not answer costs only its own sender (`relayRequestMillis` per attempt).
// - A member not heard from for `peerPresenceTimeoutSeconds` (heartbeat batches every
//   `relayHeartbeatMillis` even when idle) has its presences dropped, with presence_diff leaves
//   to the local members.

import AsyncHTTPClient
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Kernel
import Logging
import NIOCore
import Synchronization

/// Where the other members are (wired by the Node module from the cluster config).
public struct RealtimePeers: Sendable {
    public let nodeID: String
    /// HTTP HOST:PORT of every other member.
    public let others: [String]

    public init(nodeID: String, others: [String]) {
        self.nodeID = nodeID
        self.others = others
    }

    public static let alone = RealtimePeers(nodeID: "", others: [])
}

/// The queue and sequence of one origin -> member link.
final class RelayLink: Sendable {
    let address: String

    private struct State {
        var queue: [(message: JSONValue, bytes: Int)] = []
        var needSnapshot = true
        var seq: Int64 = 0
        var droppedBroadcasts = 0
        var wake: CheckedContinuation<Void, Never>?
        var failing = false
    }

    private let state = Mutex(State())

    init(address: String) { self.address = address }

    func enqueue(_ message: JSONValue) {
        let bytes = JSON.encode(message).count
        let wake = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.queue.count < RealtimeLimits.relayQueueMessagesMax else {
                if message["kind"]?.stringValue == "broadcast" { s.droppedBroadcasts += 1 } else { s.needSnapshot = true }
                return nil
            }
            s.queue.append((message, bytes))
            defer { s.wake = nil }
            return s.wake
        }
        wake?.resume()
    }

    var needsSnapshot: Bool { state.withLock { $0.needSnapshot } }

    /// The next batch's messages (at most `relayBatchMessagesMax` and `relayMessageBytesMax`
    /// bytes, or one bigger message alone) and sequence number.
    func take() -> (messages: [JSONValue], seq: Int64, dropped: Int) {
        state.withLock { s in
            var n = 0, bytes = 0
            while n < min(s.queue.count, RealtimeLimits.relayBatchMessagesMax)
                    && (n == 0 || bytes + s.queue[n].bytes <= RealtimeLimits.relayMessageBytesMax) {
                bytes += s.queue[n].bytes
                n += 1
            }
            let out = s.queue.prefix(n).map(\.message)
            s.queue.removeFirst(n)
            s.seq += 1
            defer { s.droppedBroadcasts = 0 }
            return (out, s.seq, s.droppedBroadcasts)
        }
    }

    /// The batch was answered: a snapshot it carried is in; the member may ask for one.
    func delivered(carriedSnapshot: Bool, snapshotNeeded: Bool) -> Bool {
        state.withLock { s in
            if carriedSnapshot { s.needSnapshot = false }
            if snapshotNeeded { s.needSnapshot = true }
            defer { s.failing = false }
            return s.failing
        }
    }

    /// The batch was lost (member down or slow): its presences must be resent as a snapshot;
    /// returns whether this is the first failure of a streak (logged once).
    func failed() -> Bool {
        state.withLock { s in
            s.needSnapshot = true
            s.queue.removeAll { $0.message["kind"]?.stringValue != "broadcast" }
            defer { s.failing = true }
            return !s.failing
        }
    }

    var hasMessages: Bool { state.withLock { !$0.queue.isEmpty } }

    /// Waits until a message is queued or `millis` pass (or the task is cancelled).
    func wait(millis: Int64) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let now = state.withLock { s -> Bool in
                            if !s.queue.isEmpty || Task.isCancelled { return true }
                            s.wake?.resume()
                            s.wake = c
                            return false
                        }
                        if now { c.resume() }
                    }
                } onCancel: {
                    let w = state.withLock { s in defer { s.wake = nil }; return s.wake }
                    w?.resume()
                }
            }
            group.addTask { try? await Task.sleep(for: .milliseconds(millis)) }
            await group.next()
            group.cancelAll()
        }
    }
}

enum RealtimeRelay {
    static let macHeader = HTTPField.Name("X-AeroDB-Relay-MAC")!
    static let path = "/realtime/v1/internal/relay"

    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .milliseconds(RealtimeLimits.relayRequestMillis)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        MemberHTTPS.apply(to: &configuration)  // cluster TLS: HTTPS trusting the cluster CA (TLS1)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    static func mac(_ body: [UInt8], secret: [UInt8]) -> String {
        HMAC<SHA256>.authenticationCode(for: body, using: SecretDomain.realtimeRelay.key(secret))
            .map { String(format: "%02x", $0) }.joined()
    }

    static func validMAC(_ header: String?, _ body: [UInt8], secret: [UInt8]) -> Bool {
        // Decoded byte by byte from UTF-8 (a header's characters may be multi-byte: stepping by
        // characters through a 64-byte header could run past its end).
        guard let header, header.utf8.count == 64 else { return false }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        let text = Array(header.utf8)
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: text.count, by: 2) {
            guard let high = nibble(text[i]), let low = nibble(text[i + 1]) else { return false }
            bytes.append(high << 4 | low)
        }
        return HMAC<SHA256>.isValidAuthenticationCode(bytes, authenticating: body, using: SecretDomain.realtimeRelay.key(secret))
    }

    /// One link's sender: a batch as soon as messages wait, a heartbeat batch otherwise.
    static func runSender(_ link: RelayLink, service: RealtimeService) async {
        while !Task.isCancelled {
            if !link.hasMessages { await link.wait(millis: RealtimeLimits.relayHeartbeatMillis) }
            if Task.isCancelled { return }
            // Snapshot first, queue after: snapshot + later messages = the state at send time.
            let snapshot = link.needsSnapshot ? service.localPresenceSnapshot() : nil
            let (messages, seq, dropped) = link.take()
            var body: [String: JSONValue] = [
                "origin": .string(service.peers.nodeID), "incarnation": .string(service.incarnation),
                "seq": .int(seq), "sent_micros": .int(service.keys.clock.nowMicros()), "messages": .array(messages),
            ]
            if let snapshot { body["snapshot"] = snapshot }
            if dropped > 0 {
                service.logger.warning("realtime relay queue full: broadcasts dropped", metadata: ["peer": "\(link.address)", "dropped": "\(dropped)"])
            }
            do {
                let bytes = JSON.encode(.object(body))
                // Cannot happen: local presences are bounded by presenceBytesPerNodeMax and a batch's
                // messages by relayMessageBytesMax, so the two fit relayBodyBytesMax together.
                guard bytes.count <= RealtimeLimits.relayBodyBytesMax else {
                    throw AeroError(.realtimeLimit, "a relay batch of \(bytes.count) bytes is over \(RealtimeLimits.relayBodyBytesMax)")
                }
                var request = HTTPClientRequest(url: MemberHTTPS.url(link.address, path))
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.headers.add(name: macHeader.rawName, value: mac(bytes, secret: service.keys.secret))
                request.body = .bytes(ByteBuffer(bytes: bytes))
                let response = try await client.execute(request, timeout: .milliseconds(RealtimeLimits.relayRequestMillis))
                let answer = try await response.body.collect(upTo: 4_096)
                guard response.status == .ok else {
                    throw AeroError(.realtimeInvalid, "relay answered \(response.status.code): \(String(buffer: answer).prefix(200))")
                }
                let needed = (try? JSON.parse(Array(answer.readableBytesView)))?["snapshot_needed"]?.boolValue ?? false
                if link.delivered(carriedSnapshot: snapshot != nil, snapshotNeeded: needed) {
                    service.logger.info("realtime relay to a member works again", metadata: ["peer": "\(link.address)"])
                }
            } catch {
                if Task.isCancelled { return }
                if link.failed() {
                    service.logger.warning("realtime relay to a member failed: its broadcasts are dropped until it answers",
                                           metadata: ["peer": "\(link.address)", "error": "\(AeroError.wrap(error).message)"])
                }
                try? await Task.sleep(for: .milliseconds(RealtimeLimits.relayRetryMillis))
            }
        }
    }

    /// `POST /realtime/v1/internal/relay`.
    static func receive(_ request: Request, service: RealtimeService) async -> Response {
        do {
            var request = request
            let buffer: ByteBuffer
            do { buffer = try await request.collectBody(upTo: RealtimeLimits.relayBodyBytesMax) } catch {
                throw AeroError(.realtimeLimit, "a relay batch is at most \(RealtimeLimits.relayBodyBytesMax) bytes")
            }
            let bytes = Array(buffer.readableBytesView)
            guard validMAC(request.headers[macHeader], bytes, secret: service.keys.secret) else {
                throw AeroError(.unauthorized, "the relay batch is not signed by a member of this cluster")
            }
            let batch = try JSON.parse(bytes)
            guard let origin = batch["origin"]?.stringValue, let incarnation = batch["incarnation"]?.stringValue,
                  case .int(let seq)? = batch["seq"], case .int(let sent)? = batch["sent_micros"],
                  let messages = batch["messages"]?.arrayValue else {
                throw RealtimeFrame.invalid("a relay batch has origin, incarnation, seq, sent_micros and messages")
            }
            let skew = service.keys.clock.nowMicros().subtractingReportingOverflow(sent).partialValue.magnitude
            guard skew <= UInt64(RealtimeLimits.relayClockSkewSecondsMax) * 1_000_000 else {
                throw AeroError(.unauthorized, "the relay batch is \(skew / 1_000_000) s away from this node's clock")
            }
            guard origin != service.peers.nodeID else { throw RealtimeFrame.invalid("a relay batch from this node itself") }
            let needed = try service.applyRelay(origin: origin, incarnation: incarnation, seq: seq,
                                                snapshot: batch["snapshot"]?.arrayValue, messages: messages)
            return HTTPJSON.response(.object(["snapshot_needed": .bool(needed)]))
        } catch {
            return HTTPErrors.response(error)
        }
    }
}
