// Keys of secondary indexes: the indexed values in order, then the primary key.
//
// Ordered index entry: [field values..., primary key]. Fulltext entry: [token, primary key].
// Range probes are shorter keys with an `edge`: `.beforeExtensions` sorts before every stored key
// that starts with the probe's values, `.afterExtensions` after all of them. A probe is never equal
// to a stored key, so "all entries whose first fields equal (a, b)" is the range between
// (a, b, before) and (a, b, after), whatever the primary keys are.
//
// Values compare in the JSONValue total order except that null sorts after every other value
// (as in PostgreSQL B-trees): a forward walk then yields SQL's default `ASC NULLS LAST` and a
// backward walk `DESC NULLS FIRST`, so the default orders are served by the index.

struct IndexKey: Comparable, Hashable, Sendable, CustomStringConvertible {
    enum Edge: Int, Sendable { case beforeExtensions, exact, afterExtensions }

    let values: [JSONValue]
    let edge: Edge

    init(_ values: [JSONValue], edge: Edge = .exact) {
        self.values = values
        self.edge = edge
    }

    /// The primary key of a stored entry (its last value).
    var primaryKey: JSONValue { values[values.count - 1] }

    static func compare(_ a: IndexKey, _ b: IndexKey) -> Int {
        for i in 0..<min(a.values.count, b.values.count) {
            let c = compareNullsLast(a.values[i], b.values[i])
            if c != 0 { return c }
        }
        if a.values.count == b.values.count {
            return a.edge == b.edge ? 0 : (a.edge.rawValue < b.edge.rawValue ? -1 : 1)
        }
        // One is a prefix of the other: the shorter one's edge decides.
        if a.values.count < b.values.count { return a.edge == .afterExtensions ? 1 : -1 }
        return b.edge == .afterExtensions ? -1 : 1
    }

    @inline(__always)
    static func compareNullsLast(_ x: JSONValue, _ y: JSONValue) -> Int {
        switch (x.isNull, y.isNull) {
        case (true, true): return 0
        case (true, false): return 1
        case (false, true): return -1
        case (false, false): return JSONValue.compare(x, y)
        }
    }

    static func < (a: IndexKey, b: IndexKey) -> Bool { compare(a, b) < 0 }
    static func == (a: IndexKey, b: IndexKey) -> Bool { compare(a, b) == 0 }

    func hash(into hasher: inout Hasher) {
        for v in values { hasher.combine(OrderedValue(v)) }
        hasher.combine(edge)
    }

    var description: String { "(" + values.map { JSON.encodeString($0) }.joined(separator: ", ") + ")" }
}
