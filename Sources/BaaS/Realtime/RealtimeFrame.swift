// Phoenix channel frames of `/realtime/v1/websocket` (supabase-wire §5), both serializers.
//
// vsn 1.0.0, text frames, one JSON object each:
//   {"event": str, "payload": object, "topic": str, "ref": str|null, "join_ref": str|null}
// vsn 2.0.0, text frames, one JSON array each (both directions):
//   [join_ref, ref, topic, event, payload]
// vsn 2.0.0, binary frames from the client, kind 3 (userBroadcastPush):
//   byte 0 = 3, bytes 1..6 = len(join_ref), len(ref), len(topic), len(event), len(meta),
//   encoding (0 binary, 1 JSON); then join_ref, ref, topic, event, meta, payload bytes.
//   It stands for a `broadcast` push with payload {"type":"broadcast","event":event,"payload":P}.
//   Only JSON payloads (encoding 1) are accepted; binary ones are answered with an error.
//
// Invariants: a frame is parsed only from at most RealtimeLimits.messageBytesMax bytes, with
// the kernel's depth-limited JSON parser; refs and topics are bounded strings; anything else
// is an `AERO_REALTIME_INVALID` error, never a trap.

import Kernel

enum RealtimeVersion: Sendable {
    case v1, v2

    init?(_ text: String?) {
        switch text {
        case nil, "1.0.0": self = .v1
        case "2.0.0": self = .v2
        default: return nil
        }
    }
}

struct RealtimeFrame: Sendable {
    var joinRef: String?
    var ref: String?
    var topic: String
    var event: String
    var payload: JSONValue

    static let refBytesMax = 64

    // MARK: Parse

    static func parse(text: String, _ version: RealtimeVersion) throws -> RealtimeFrame {
        let value: JSONValue
        do { value = try JSON.parse(text) } catch { throw invalid("malformed JSON frame") }
        switch (version, value) {
        case (.v1, .object(let o)):
            return try make(joinRef: o["join_ref"], ref: o["ref"], topic: o["topic"], event: o["event"], payload: o["payload"])
        case (.v2, .array(let a)) where a.count == 5:
            return try make(joinRef: a[0], ref: a[1], topic: a[2], event: a[3], payload: a[4])
        case (.v1, _):
            throw invalid("a vsn 1.0.0 frame is a JSON object {event, payload, topic, ref, join_ref}")
        case (.v2, _):
            throw invalid("a vsn 2.0.0 frame is a JSON array [join_ref, ref, topic, event, payload]")
        }
    }

    static func parse(binary bytes: [UInt8], _ version: RealtimeVersion) throws -> RealtimeFrame {
        guard version == .v2 else { throw invalid("binary frames need vsn 2.0.0") }
        guard bytes.count >= 7, bytes[0] == 3 else { throw invalid("the only binary frame a client may send is kind 3 (broadcast push)") }
        let lengths = bytes[1...5].map(Int.init)
        let encoding = bytes[6]
        var offset = 7
        var parts: [[UInt8]] = []
        for length in lengths {
            guard bytes.count - offset >= length else { throw invalid("binary frame shorter than its header says") }
            parts.append(Array(bytes[offset..<offset + length]))
            offset += length
        }
        guard encoding == 1 else { throw invalid("binary broadcast payloads are not supported; send JSON (encoding 1)") }
        let payload: JSONValue
        do { payload = try JSON.parse(Array(bytes[offset...])) } catch { throw invalid("binary broadcast payload is not JSON") }
        func text(_ b: [UInt8]) -> JSONValue { b.isEmpty ? .null : .string(String(decoding: b, as: UTF8.self)) }
        return try make(joinRef: text(parts[0]), ref: text(parts[1]), topic: text(parts[2]), event: .string("broadcast"),
                        payload: .object(["type": .string("broadcast"), "event": text(parts[3]), "payload": payload]))
    }

    private static func make(joinRef: JSONValue?, ref: JSONValue?, topic: JSONValue?, event: JSONValue?,
                             payload: JSONValue?) throws -> RealtimeFrame {
        guard case .string(let topic)? = topic, topic.utf8.count <= RealtimeLimits.topicBytesMax + 16 else {
            throw invalid("frame topic must be a string of at most \(RealtimeLimits.topicBytesMax) bytes")
        }
        guard case .string(let event)? = event, event.utf8.count <= 64 else { throw invalid("frame event must be a short string") }
        return RealtimeFrame(joinRef: try refText(joinRef), ref: try refText(ref), topic: topic, event: event,
                             payload: payload ?? .object([:]))
    }

    private static func refText(_ value: JSONValue?) throws -> String? {
        switch value {
        case nil, .null?: return nil
        case .string(let s)? where s.utf8.count <= refBytesMax: return s
        case .int(let i)?: return String(i)
        default: throw invalid("ref and join_ref are strings of at most \(refBytesMax) bytes, or null")
        }
    }

    static func invalid(_ message: String) -> AeroError { AeroError(.realtimeInvalid, message) }

    // MARK: Encode

    func encoded(_ version: RealtimeVersion) -> String {
        func optional(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        switch version {
        case .v1:
            return JSON.encodeString(.object(["event": .string(event), "payload": payload, "topic": .string(topic),
                                              "ref": optional(ref), "join_ref": optional(joinRef)]))
        case .v2:
            return JSON.encodeString(.array([optional(joinRef), optional(ref), .string(topic), .string(event), payload]))
        }
    }

    /// A postgres_changes frame around an already encoded `data` object (ChangeFanout encodes
    /// it once per change and wraps it per subscriber): the same JSON `encoded` gives.
    static func changeText(_ version: RealtimeVersion, topic: String, ids: [Int64], data: String) -> String {
        String(decoding: changeHead(version, topic: topic) + Array(data.utf8) + changeTail(version, topic: topic, ids: ids),
               as: UTF8.self)
    }

    /// The bytes of a postgres_changes frame before its `data` object: the same for every change
    /// of one subscription (ChangeSubscription keeps them).
    static func changeHead(_ version: RealtimeVersion, topic: String) -> [UInt8] {
        var out: [UInt8] = []
        switch version {
        case .v1:
            out.append(contentsOf: #"{"event":"postgres_changes","join_ref":null,"payload":{"data":"#.utf8)
        case .v2:
            out.append(contentsOf: "[null,null,".utf8)
            JSON.encodeString(topic, into: &out)
            out.append(contentsOf: #","postgres_changes",{"data":"#.utf8)
        }
        return out
    }

    /// The bytes after the `data` object: the matching binding ids, then (vsn 1.0.0) the topic.
    static func changeTail(_ version: RealtimeVersion, topic: String, ids: [Int64]) -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: #","ids":["#.utf8)
        for (i, id) in ids.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: String(id).utf8)
        }
        out.append(contentsOf: "]}".utf8)
        switch version {
        case .v1:
            out.append(contentsOf: #","ref":null,"topic":"#.utf8)
            JSON.encodeString(topic, into: &out)
            out.append(UInt8(ascii: "}"))
        case .v2:
            out.append(UInt8(ascii: "]"))
        }
        return out
    }

    static func reply(_ to: RealtimeFrame, ok: Bool, _ response: JSONValue = .object([:])) -> RealtimeFrame {
        RealtimeFrame(joinRef: to.joinRef, ref: to.ref, topic: to.topic, event: "phx_reply",
                      payload: .object(["status": .string(ok ? "ok" : "error"), "response": response]))
    }

    static func errorReply(_ to: RealtimeFrame, _ error: AeroError) -> RealtimeFrame {
        reply(to, ok: false, .object(["reason": .string(error.message), "code": .string(error.code.rawValue)]))
    }

    /// A `system` message (Python: `{channel, extension, message, status}`; extra keys ignored).
    static func system(topic: String, extension ext: String, ok: Bool, _ message: String,
                       extra: [String: JSONValue] = [:]) -> RealtimeFrame {
        var payload: [String: JSONValue] = ["channel": .string(channelName(topic)), "extension": .string(ext),
                                            "message": .string(message), "status": .string(ok ? "ok" : "error")]
        payload.merge(extra) { a, _ in a }
        return RealtimeFrame(joinRef: nil, ref: nil, topic: topic, event: "system", payload: .object(payload))
    }

    static func channelName(_ topic: String) -> String {
        topic.hasPrefix("realtime:") ? String(topic.dropFirst("realtime:".count)) : topic
    }
}
