// JSONValue: the value model of every document, filter and index key.
//
// Invariants:
// - Integers and floats are distinct cases: `1` parses as `.int(1)`, `1.0` as `.float(1.0)`.
//   Comparison treats them as numbers (1 == 1.0 for ordering), equality for documents does not.
// - Objects keep their keys in a dictionary; encoding sorts keys so output is deterministic.
// - The total order used by indexes and `order` is:
//   null < bool (false < true) < number < string (UTF-8 bytes) < array (lexicographic) < object.

#if canImport(Glibc)
import Glibc
#endif

public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case float(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

public typealias Document = [String: JSONValue]

extension JSONValue {
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    public var intValue: Int64? { if case .int(let i) = self { return i } else { return nil } }

    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }

    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }

    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }

    /// A number as Double, for numeric comparison across int and float.
    public var numberValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .float(let d): return d
        default: return nil
        }
    }

    /// A short name of the JSON kind, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "text"
        case .array: return "array"
        case .object: return "object"
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// Nesting levels as the parser counts them (a scalar or an empty container is 1, like
    /// `KernelLimits.jsonDepthMax`), but never more than `cap`: the walk stops `cap` levels down,
    /// so a value built deeper than any limit costs no more (and no more stack) than the limit.
    public func nestingDepth(cappedAt cap: Int) -> Int {
        guard cap > 1 else { return min(cap, 1) }
        var deepest = 0
        switch self {
        case .array(let items):
            for item in items where deepest < cap - 1 { deepest = max(deepest, item.nestingDepth(cappedAt: cap - 1)) }
        case .object(let fields):
            for value in fields.values where deepest < cap - 1 { deepest = max(deepest, value.nestingDepth(cappedAt: cap - 1)) }
        default:
            return 1
        }
        return 1 + deepest
    }
}

// MARK: - Total order

extension JSONValue {
    private var rank: Int {
        switch self {
        case .null: return 0
        case .bool: return 1
        case .int, .float: return 2
        case .string: return 3
        case .array: return 4
        case .object: return 5
        }
    }

    /// Three-way comparison in the documented total order. Returns -1, 0 or 1.
    public static func compare(_ a: JSONValue, _ b: JSONValue) -> Int {
        switch (a, b) {
        case (.null, .null): return 0
        case (.bool(let x), .bool(let y)): return x == y ? 0 : (x ? 1 : -1)
        case (.int(let x), .int(let y)): return x == y ? 0 : (x < y ? -1 : 1)
        case (.string(let x), .string(let y)): return compareUTF8(x, y)
        case (.int, .float), (.float, .int), (.float, .float):
            return compareNumbers(a, b)
        case (.array(let x), .array(let y)):
            for (l, r) in zip(x, y) {
                let c = compare(l, r)
                if c != 0 { return c }
            }
            return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
        case (.object(let x), .object(let y)):
            return compareObjects(x, y)
        default:
            let ra = a.rank, rb = b.rank
            return ra == rb ? 0 : (ra < rb ? -1 : 1)
        }
    }

    private static func compareNumbers(_ a: JSONValue, _ b: JSONValue) -> Int {
        // Exact comparison when both are integers is handled above; here one side is a float.
        let x = a.numberValue!, y = b.numberValue!
        if x.isNaN || y.isNaN { return x.isNaN == y.isNaN ? 0 : (x.isNaN ? 1 : -1) }
        return x == y ? 0 : (x < y ? -1 : 1)
    }

    private static func compareObjects(_ x: [String: JSONValue], _ y: [String: JSONValue]) -> Int {
        let kx = x.keys.sorted(by: { compareUTF8($0, $1) < 0 })
        let ky = y.keys.sorted(by: { compareUTF8($0, $1) < 0 })
        for (l, r) in zip(kx, ky) {
            let c = compareUTF8(l, r)
            if c != 0 { return c }
            let v = compare(x[l]!, y[r]!)
            if v != 0 { return v }
        }
        return kx.count == ky.count ? 0 : (kx.count < ky.count ? -1 : 1)
    }

    /// Byte-wise UTF-8 comparison: stable across platforms and locales.
    public static func compareUTF8(_ a: String, _ b: String) -> Int {
        // Native Swift strings are contiguous UTF-8: compare with memcmp, the hot path of every
        // index lookup. Bridged or lazily decoded strings fall back to iterating bytes.
        if let result = a.utf8.withContiguousStorageIfAvailable({ x in
            b.utf8.withContiguousStorageIfAvailable { y in compareBytes(x, y) }
        }), let result { return result }
        var ia = a.utf8.makeIterator(), ib = b.utf8.makeIterator()
        while true {
            switch (ia.next(), ib.next()) {
            case (nil, nil): return 0
            case (nil, _): return -1
            case (_, nil): return 1
            case (let x?, let y?): if x != y { return x < y ? -1 : 1 }
            }
        }
    }

    /// Common lengths up to this are compared byte by byte (primary keys are mostly short).
    private static var shortCompareBytes: Int { 16 }

    private static func compareBytes(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Int {
        let common = min(x.count, y.count)
        if common <= shortCompareBytes {  // short keys: a byte loop costs less than the call to memcmp
            for i in 0..<common where x[i] != y[i] { return x[i] < y[i] ? -1 : 1 }
        } else {
            let c = memcmp(x.baseAddress!, y.baseAddress!, common)
            if c != 0 { return c < 0 ? -1 : 1 }
        }
        return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
    }
}

/// A JSONValue wrapper with `Comparable` in the total order; used as index and sort keys.
public struct OrderedValue: Comparable, Hashable, Sendable {
    public let value: JSONValue
    public init(_ value: JSONValue) { self.value = value }
    public static func < (a: OrderedValue, b: OrderedValue) -> Bool {
        // Keys of one collection are nearly always of one kind: two strings or two integers are
        // compared without going through the general order's pair of values.
        switch a.value {
        case .string(let x): if case .string(let y) = b.value { return JSONValue.compareUTF8(x, y) < 0 }
        case .int(let x): if case .int(let y) = b.value { return x < y }
        default: break
        }
        return JSONValue.compare(a.value, b.value) < 0
    }
    public static func == (a: OrderedValue, b: OrderedValue) -> Bool { JSONValue.compare(a.value, b.value) == 0 }
    public func hash(into hasher: inout Hasher) {
        // Numbers hash by their Double value so that 1 and 1.0 (equal in the order) hash alike.
        switch value {
        case .int(let i): hasher.combine(Double(i))
        case .float(let d): hasher.combine(d)
        default: hasher.combine(value)
        }
    }
}
