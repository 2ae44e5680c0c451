import Testing
@testable import Kernel

@Suite struct JSONTests {
    @Test func parsesEveryKindAndKeepsIntsApartFromFloats() throws {
        let v = try JSON.parse(#"{"a":1,"b":1.0,"c":-2.5e3,"d":"x\"\u00e9\n","e":[true,false,null],"f":{}}"#)
        #expect(v["a"] == .int(1))
        #expect(v["b"] == .float(1.0))
        #expect(v["c"] == .float(-2500))
        #expect(v["d"] == .string("x\"é\n"))
        #expect(v["e"] == .array([.bool(true), .bool(false), .null]))
        #expect(v["f"] == .object([:]))
    }

    @Test func encodingIsDeterministicAndRoundTrips() throws {
        let text = #"{"z":1,"a":[1.5,"\u0001",{"k":null}],"m":2.0}"#
        let v = try JSON.parse(text)
        let encoded = JSON.encodeString(v)
        #expect(encoded == #"{"a":[1.5,"\u0001",{"k":null}],"m":2.0,"z":1}"#)
        #expect(try JSON.parse(encoded) == v)
    }

    /// Object keys come out in UTF-8 byte order whatever the dictionary's order, at every size
    /// (the encoder sorts field positions in a temporary buffer, on the stack for small objects
    /// and on the heap past it): the reference joins each field's own encoding in keys sorted
    /// by their bytes.
    @Test func objectKeysAreInByteOrderAtEverySize() throws {
        var rng = SeededRandom(seed: 32)
        let pieces = ["a", "B", "é", "z", "日", "😀", "\"", "0", "aa", ""]
        for size in [0, 1, 2, 3, 17, 64, 65, 200, 3000] {
            var object: [String: JSONValue] = [:]
            while object.count < size {
                let key = (0..<(1 + rng.next(below: 4))).map { _ in pieces[rng.next(below: pieces.count)] }.joined()
                    + String(rng.next(below: size * 4 + 1))
                object[key] = rng.next(below: 2) == 0 ? .int(Int64(rng.next(below: 1000))) : .object(["in": .string(key)])
            }
            let keys = object.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            let reference = "{" + keys.map { JSON.encodeString(.string($0)) + ":" + JSON.encodeString(object[$0]!) }
                .joined(separator: ",") + "}"
            #expect(JSON.encodeString(.object(object)) == reference, "\(size) fields")
        }
    }

    @Test func surrogatePairs() throws {
        #expect(try JSON.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":}", "01", "1.", "-", "\"abc", "tru", "{\"a\":1,\"a\":2}", "[1] x",
        "\"\\ud800\"", "\"\\x\"", "1e999", "{\"a\" 1}", "\"\u{01}\"",
    ])
    func refusesMalformedInput(_ text: String) {
        #expect(throws: AeroError.self) { try JSON.parse(text) }
    }

    @Test func refusesDeepNestingWithoutCrashing() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: AeroError.self) { try JSON.parse(deep) }
    }

    @Test func hugeIntegersBecomeFloatsOnlyWhenTheyOverflow() throws {
        #expect(try JSON.parse("9223372036854775807") == .int(Int64.max))
        #expect(try JSON.parse("9223372036854775808") == .float(9223372036854775808.0))
    }

    @Test func totalOrderAcrossKinds() {
        let ordered: [JSONValue] = [.null, .bool(false), .bool(true), .int(-1), .float(0.5), .int(1), .string("A"),
                                    .string("a"), .array([]), .array([.int(1)]), .object([:])]
        for (i, a) in ordered.enumerated() {
            for (j, b) in ordered.enumerated() {
                #expect(JSONValue.compare(a, b) == (i < j ? -1 : (i == j ? 0 : 1)), "\(a) vs \(b)")
            }
        }
        #expect(JSONValue.compare(.int(1), .float(1.0)) == 0)
    }

    /// Index keys compare strings by their UTF-8 bytes (unsigned, a prefix first) on both sides of
    /// the short-key byte loop, and `OrderedValue`'s same-kind shortcuts give the general order.
    @Test func keyOrderIsTheUTF8ByteOrderAndTheShortcutsAgreeWithTheGeneralOrder() {
        var strings: [String] = ["", "a", "b", "é", "\u{7F}", "\u{80}", "\u{FFFF}", "\u{10FFFF}"]
        for length in [1, 7, 15, 16, 17, 31, 40] {
            let stem = String(repeating: "k", count: length - 1)
            strings += [stem, stem + "a", stem + "b", stem + "é", stem + "\u{7F}", "a" + stem]
        }
        for x in strings {
            for y in strings {
                let bytes = Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8)) ? -1 : (Array(x.utf8) == Array(y.utf8) ? 0 : 1)
                #expect(JSONValue.compareUTF8(x, y) == bytes, "\(x.debugDescription) vs \(y.debugDescription)")
            }
        }
        let values: [JSONValue] = strings.map { .string($0) } + [.int(.min), .int(-1), .int(0), .int(1), .int(.max), .float(-0.5),
                                                                  .float(1.0), .float(.infinity), .float(.nan), .null, .bool(true),
                                                                  .array([.string("a")]), .object(["a": .int(1)])]
        for a in values {
            for b in values {
                #expect((OrderedValue(a) < OrderedValue(b)) == (JSONValue.compare(a, b) < 0), "\(a) vs \(b)")
            }
        }
    }

    /// The 8-bytes-at-a-time scan finds every byte that needs escaping, at every offset.
    @Test func stringsEscapeAndParseAtEveryOffsetOfTheWordScan() throws {
        for special in ["\"", "\\", "\n", "\u{01}", "\u{1F}", "é"] {
            for offset in 0..<20 {
                let text = String(repeating: "a", count: offset) + special + String(repeating: "b", count: 19 - offset)
                let encoded = JSON.encode(.string(text))
                #expect(try JSON.parse(encoded) == .string(text), "\(special) at \(offset)")
                let plain = encoded.dropFirst().dropLast()
                let expectedEscapes = special == "é" ? 0 : 1
                #expect(plain.filter { $0 == 0x5C }.count == expectedEscapes + (special == "\\" ? 1 : 0), "\(special) at \(offset)")
            }
        }
        let raw = Array("abcdefgh\u{01}ijk".utf8) + [0x22]
        #expect(throws: AeroError.self) { try JSON.parse([0x22] + raw) }  // a raw control character is refused
    }
}
