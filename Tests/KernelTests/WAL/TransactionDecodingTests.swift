import Testing
@testable import Kernel

/// Recovery's direct decoding of transaction payloads (TransactionRecord.decodeChangesDirectly,
/// issue 19) against the generic one (JSON.parse, then the layout), which is the reference:
/// both must give the same changes, or the direct one must decline (nil) so the generic one
/// decides. AR1: what the writer encodes decodes, with the same depth limit.
@Suite struct TransactionDecodingTests {
    private static func value(_ rng: inout SeededRandom, depth: Int) -> JSONValue {
        switch rng.next(below: depth > 3 ? 6 : 8) {
        case 0: return .null
        case 1: return .bool(rng.next(below: 2) == 0)
        case 2:
            let magnitudes: [Int64] = [0, 1, 9, 10, 99, 12345, Int64.max, Int64.min, Int64.max - 1, Int64.min + 1]
            let m = magnitudes[rng.next(below: magnitudes.count)]
            return .int(rng.next(below: 2) == 0 || m == .min ? m : -m)
        case 3: return .float([0.5, -1.25, 1e300, 3.0, -0.0][rng.next(below: 5)])
        case 4, 5: return .string(text(&rng))
        case 6: return .array((0..<rng.next(below: 4)).map { _ in value(&rng, depth: depth + 1) })
        default: return .object(document(&rng, depth: depth + 1))
        }
    }

    private static func text(_ rng: inout SeededRandom) -> String {
        let pieces = ["x", "é", "\"", "\\", "\n", "\u{1}", "日本", "😀", "plain", String(repeating: "y", count: 40)]
        return (0..<rng.next(below: 5)).map { _ in pieces[rng.next(below: pieces.count)] }.joined()
    }

    private static func document(_ rng: inout SeededRandom, depth: Int) -> Document {
        var doc: Document = [:]
        for _ in 0..<rng.next(below: 5) { doc[text(&rng)] = value(&rng, depth: depth) }
        return doc
    }

    private static func changes(_ rng: inout SeededRandom) -> [DocumentChange] {
        (0..<rng.next(below: 6)).map { i in
            var after: Document? = document(&rng, depth: 1), before: Document? = document(&rng, depth: 1)
            switch rng.next(below: 3) {
            case 0: before = nil
            case 1: after = nil
            default: break
            }
            return DocumentChange(collection: ["items", "c\(i)", "é"][rng.next(below: 3)], key: value(&rng, depth: 5),
                                  before: before, after: after)
        }
    }

    /// The direct result, or the generic outcome when it declines; `nil` for an error.
    private static func both(_ payload: [UInt8]) -> (direct: [DocumentChange]?, generic: [DocumentChange]?) {
        let direct = payload.withUnsafeBufferPointer { TransactionRecord.decodeChangesDirectly($0) }
        let generic = try? TransactionRecord.decodeChangesGenerically(payload, lsn: 7)
        return (direct, generic)
    }

    @Test func writerPayloadsDecodeDirectlyToTheGenericResult() throws {
        var rng = SeededRandom(seed: 19)
        for _ in 0..<2000 {
            let written = Self.changes(&rng)
            let payload = TransactionRecord.encode(written)
            // The writer's incremental encoding is exactly JSON.encode of the layout.
            var layout: [UInt8] = []
            JSON.encode(.object(["changes": .array(written.map { change in
                var fields: [String: JSONValue] = ["c": .string(change.collection), "k": change.key]
                if let after = change.after { fields["a"] = .object(after) }
                if let before = change.before { fields["b"] = .object(before) }
                return .object(fields)
            })]), into: &layout)
            #expect(payload == layout)
            // The writer hands its buffer over without an exact copy only when the spare room
            // is small (records are kept in memory for replication); a payload built change by
            // change and taken is the same layout.
            #expect(payload.capacity - payload.count <= TransactionRecord.Payload.spareBytesMax(payload.count))
            var building = TransactionRecord.Payload()
            for change in written { _ = building.append(change) }
            #expect(building.take() == layout)
            let (direct, generic) = Self.both(payload)
            #expect(direct != nil, "the writer's own layout always takes the direct path")
            #expect(direct == written)
            #expect(generic == written)
            #expect(try TransactionRecord.decodeChanges(payload, lsn: 7) == written)
        }
    }

    /// Other spellings of the same JSON, other layouts, cut and corrupted payloads: whenever the
    /// direct path answers, it answers what the generic path does; when it declines, the public
    /// entry point gives the generic answer (same changes or AERO_WAL_CORRUPT).
    @Test func otherPayloadsDecodeAlikeOrDecline() throws {
        let fixed: [String] = [
            #"{"changes":[]}"#, #" { "changes" : [ ] } "#,
            #"{"changes":[{"a":{"id":1},"c":"t","k":1}]}"#,
            #"{ "changes": [ { "k": 1, "c": "t", "a": { "id": 1 } } ] }"#,
            #"{"changes":[{"a":{"id":1},"c":"t","k":1,"x":2}]}"#,
            #"{"changes":[{"a":{"id":1},"a":{"id":2},"c":"t","k":1}]}"#,
            #"{"changes":[{"\u0061":{"id":1},"c":"t","k":1}]}"#,
            #"{"changes":[{"a":null,"b":{"id":1},"c":"t","k":1}]}"#,
            #"{"changes":[{"a":{"id":1},"c":5,"k":1}]}"#,
            #"{"changes":[{"c":"t","k":1}]}"#, #"{"changes":[{}]}"#, #"{"changes":{}}"#,
            #"{"other":1,"changes":[{"a":{"id":1},"c":"t","k":1}]}"#,
            #"{"changes":[{"a":{"id":1},"c":"t","k":1}],"changes":[]}"#,
            #"{"changes":[{"a":{"id":1},"c":"t","k":1}]} x"#, #"{"changes":[{"a":{"id":1},"c":"t","k":1}"#,
            #"{"changes":[{"a":{"n":-9223372036854775808,"m":9223372036854775808,"z":-0},"c":"t","k":1}]}"#,
        ]
        var payloads = fixed.map { Array($0.utf8) }
        var rng = SeededRandom(seed: 1919)
        for _ in 0..<300 {
            let payload = TransactionRecord.encode(Self.changes(&rng))
            payloads.append(Array(payload[..<rng.next(below: payload.count + 1)]))  // cut
            var flipped = payload
            flipped[rng.next(below: flipped.count)] = [UInt8(ascii: "\""), UInt8(ascii: ","), UInt8(ascii: "}"), 0x20, 0xFF, UInt8(ascii: "9")][rng.next(below: 6)]
            payloads.append(flipped)
        }
        var declined = 0
        for payload in payloads {
            let (direct, generic) = Self.both(payload)
            if let direct { #expect(direct == generic, "\(String(decoding: payload, as: UTF8.self))") } else { declined += 1 }
            let public_ = try? TransactionRecord.decodeChanges(payload, lsn: 7)
            #expect(public_ == generic)
        }
        #expect(declined > 0 && declined < payloads.count)
    }

    @Test func integersParseAsBeforeAtTheEdges() throws {
        #expect(try JSON.parse("-9223372036854775808") == .int(.min))
        #expect(try JSON.parse("9223372036854775807") == .int(.max))
        #expect(try JSON.parse("9223372036854775808") == .float(9223372036854775808))
        #expect(try JSON.parse("-9223372036854775809") == .float(-9223372036854775809))
        #expect(try JSON.parse("-0") == .int(0))
        #expect(try JSON.parse("0") == .int(0))
        #expect(try JSON.parse("123456789012") == .int(123456789012))
        #expect(try JSON.parse("-42") == .int(-42))
        #expect(try JSON.parse("99999999999999999999999") == .float(1e23))
    }
}
