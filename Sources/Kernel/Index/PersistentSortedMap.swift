// A persistent (copy-on-write) B+tree: the storage of every collection and index (MVCC by value).
//
// Invariants:
// - A snapshot is an O(1) copy of the struct. A mutation copies only the nodes on the path it
//   touches that are shared (`isKnownUniquelyReferenced`), so older copies never change.
// - A node is mutated only while uniquely referenced, i.e. by the one map value being mutated;
//   nodes reachable from more than one map are never written. That is why nodes are Sendable.
// - Leaves hold sorted unique keys with their values; an internal node with n children holds
//   n - 1 separators, child i holding keys k with separators[i-1] <= k < separators[i].
// - Every node knows how many entries its subtree holds, so ranks and range counts are O(log n).
// - Non-root nodes hold at least half of the maximum (rebalanced on removal).

/// Bound of a key range.
public enum RangeBound<Key: Comparable & Sendable>: Sendable {
    case inclusive(Key)
    case exclusive(Key)

    var key: Key {
        switch self {
        case .inclusive(let k), .exclusive(let k): return k
        }
    }
}

enum BTreeLimits {
    /// Entries per leaf: large enough for shallow trees (4 levels hold ~16M entries), small
    /// enough that copying one node on write stays cheap.
    static let leafMax = 64
    static let leafMin = leafMax / 2
    /// Children per internal node.
    static let childrenMax = 64
    static let childrenMin = childrenMax / 2
}

final class BTreeNode<Key: Comparable & Sendable, Value: Sendable>: @unchecked Sendable {
    // @unchecked: mutated only while uniquely referenced by the map value being mutated (see top).
    var keys: [Key]
    /// Leaf only: values parallel to `keys`.
    var values: [Value]
    /// Internal only: `keys.count + 1` children. Empty for leaves.
    var children: [BTreeNode]
    /// Entries in this subtree.
    var count: Int

    init(keys: [Key], values: [Value], children: [BTreeNode], count: Int) {
        self.keys = keys
        self.values = values
        self.children = children
        self.count = count
    }

    var isLeaf: Bool { children.isEmpty }

    func copy() -> BTreeNode { BTreeNode(keys: keys, values: values, children: children, count: count) }

    /// First index whose key is >= `key`.
    @inline(__always)
    func lowerBound(_ key: Key) -> Int { Self.bound(keys, key, past: false) }

    /// First index whose key is > `key`.
    @inline(__always)
    func upperBound(_ key: Key) -> Int { Self.bound(keys, key, past: true) }

    /// First index whose key is >= `key` (`past`: > `key`). The search takes the keys as an array
    /// value, not through the node: the class's stored property would otherwise be read (a
    /// dynamic exclusivity check) at every probe.
    @inline(__always)
    static func bound(_ keys: [Key], _ key: Key, past: Bool) -> Int {
        keys.withUnsafeBufferPointer { keys in
            var low = 0, high = keys.count
            while low < high {
                let mid = (low + high) >> 1
                if past ? !(key < keys[mid]) : keys[mid] < key { low = mid + 1 } else { high = mid }
            }
            return low
        }
    }

    var isUnderfull: Bool {
        isLeaf ? keys.count < BTreeLimits.leafMin : children.count < BTreeLimits.childrenMin
    }

    func makeChildUnique(_ i: Int) {
        if !isKnownUniquelyReferenced(&children[i]) { children[i] = children[i].copy() }
    }

    func recount() { count = isLeaf ? keys.count : children.reduce(0) { $0 + $1.count } }

    // MARK: Insert

    /// Inserts or replaces. Returns the replaced value (nil when added) and a new right sibling
    /// with its first key when this node overflowed.
    func insert(_ key: Key, _ value: Value) -> (old: Value?, split: (Key, BTreeNode)?) {
        if isLeaf {
            let i = lowerBound(key)
            if i < keys.count && !(key < keys[i]) {
                let old = values[i]
                values[i] = value
                return (old, nil)
            }
            keys.insert(key, at: i)
            values.insert(value, at: i)
            count += 1
            return (nil, keys.count > BTreeLimits.leafMax ? splitLeaf() : nil)
        }
        let i = upperBound(key)
        makeChildUnique(i)
        let (old, split) = children[i].insert(key, value)
        if old == nil { count += 1 }
        if let (separator, right) = split {
            keys.insert(separator, at: i)
            children.insert(right, at: i + 1)
            if children.count > BTreeLimits.childrenMax { return (old, splitInternal()) }
        }
        return (old, nil)
    }

    private func splitLeaf() -> (Key, BTreeNode) {
        let mid = keys.count / 2
        let right = BTreeNode(keys: Array(keys[mid...]), values: Array(values[mid...]), children: [],
                              count: keys.count - mid)
        keys.removeSubrange(mid...)
        values.removeSubrange(mid...)
        count = keys.count
        return (right.keys[0], right)
    }

    private func splitInternal() -> (Key, BTreeNode) {
        let mid = children.count / 2
        let separator = keys[mid - 1]
        let right = BTreeNode(keys: Array(keys[mid...]), values: [], children: Array(children[mid...]), count: 0)
        right.recount()
        keys.removeSubrange((mid - 1)...)
        children.removeSubrange(mid...)
        recount()
        return (separator, right)
    }

    // MARK: Remove

    /// Removes `key` (which the caller checked is present, so no shared node is copied in vain).
    func remove(_ key: Key) -> Value? {
        if isLeaf {
            let i = lowerBound(key)
            guard i < keys.count && !(key < keys[i]) else { return nil }
            keys.remove(at: i)
            count -= 1
            return values.remove(at: i)
        }
        let i = upperBound(key)
        makeChildUnique(i)
        guard let old = children[i].remove(key) else { return nil }
        count -= 1
        if children[i].isUnderfull && children.count > 1 { rebalance(i) }
        return old
    }

    /// Merges child `i` with a sibling, or evens them out when both together are too large.
    private func rebalance(_ i: Int) {
        let l = i > 0 ? i - 1 : i
        let r = l + 1
        makeChildUnique(l)
        makeChildUnique(r)
        let left = children[l], right = children[r]
        if left.isLeaf {
            if left.keys.count + right.keys.count <= BTreeLimits.leafMax {
                left.keys += right.keys
                left.values += right.values
                left.count = left.keys.count
                keys.remove(at: l)
                children.remove(at: r)
                return
            }
            let allKeys = left.keys + right.keys, allValues = left.values + right.values
            let h = allKeys.count / 2
            left.keys = Array(allKeys[..<h]); left.values = Array(allValues[..<h])
            right.keys = Array(allKeys[h...]); right.values = Array(allValues[h...])
            left.count = left.keys.count; right.count = right.keys.count
            keys[l] = right.keys[0]
            return
        }
        let separator = keys[l]
        if left.children.count + right.children.count <= BTreeLimits.childrenMax {
            left.keys += [separator] + right.keys
            left.children += right.children
            left.count += right.count
            keys.remove(at: l)
            children.remove(at: r)
            return
        }
        let allKeys = left.keys + [separator] + right.keys, allChildren = left.children + right.children
        let h = allChildren.count / 2
        left.children = Array(allChildren[..<h]); left.keys = Array(allKeys[..<(h - 1)])
        right.children = Array(allChildren[h...]); right.keys = Array(allKeys[h...])
        keys[l] = allKeys[h - 1]
        left.recount(); right.recount()
    }
}

public struct PersistentSortedMap<Key: Comparable & Sendable, Value: Sendable>: Sendable {
    typealias Node = BTreeNode<Key, Value>
    var root: Node?

    public init() {}

    /// Builds the tree bottom-up in O(n) from entries sorted by strictly increasing key.
    public init(sortedUniqueEntries entries: [(key: Key, value: Value)]) {
        precondition(zip(entries, entries.dropFirst()).allSatisfy { $0.key < $1.key },
                     "PersistentSortedMap(sortedUniqueEntries:) needs strictly increasing keys")
        guard !entries.isEmpty else { return }
        var level: [(minKey: Key, node: Node)] = Self.groups(entries.count, BTreeLimits.leafMax).map { range in
            let slice = entries[range]
            return (slice.first!.key, Node(keys: slice.map(\.key), values: slice.map(\.value), children: [],
                                           count: slice.count))
        }
        while level.count > 1 {
            level = Self.groups(level.count, BTreeLimits.childrenMax).map { range in
                let slice = level[range]
                let node = Node(keys: slice.dropFirst().map(\.minKey), values: [], children: slice.map(\.node),
                                count: slice.reduce(0) { $0 + $1.node.count })
                return (slice.first!.minKey, node)
            }
        }
        root = level[0].node
    }

    /// Splits 0..<n into ceil(n / max) nearly equal ranges: each at most `max` and, when there is
    /// more than one, at least `max / 2`, so bulk-built nodes satisfy the fill invariant.
    private static func groups(_ n: Int, _ max: Int) -> [Range<Int>] {
        let g = (n + max - 1) / max
        return (0..<g).map { k in (k * n / g)..<((k + 1) * n / g) }
    }

    public var count: Int { root?.count ?? 0 }
    public var isEmpty: Bool { count == 0 }

    public func value(forKey key: Key) -> Value? {
        guard var node = root else { return nil }
        while true {
            let keys = node.keys
            let children = node.children
            if children.isEmpty {
                let i = Node.bound(keys, key, past: false)
                return i < keys.count && !(key < keys[i]) ? node.values[i] : nil
            }
            node = children[Node.bound(keys, key, past: true)]
        }
    }

    public subscript(key: Key) -> Value? { value(forKey: key) }

    public func contains(_ key: Key) -> Bool { value(forKey: key) != nil }

    /// Inserts or replaces; returns the replaced value.
    @discardableResult
    public mutating func insert(_ value: Value, forKey key: Key) -> Value? {
        guard root != nil else {
            root = Node(keys: [key], values: [value], children: [], count: 1)
            return nil
        }
        if !isKnownUniquelyReferenced(&root!) { root = root!.copy() }
        let node = root!
        let (old, split) = node.insert(key, value)
        if let (separator, right) = split {
            root = Node(keys: [separator], values: [], children: [node, right], count: node.count + right.count)
        }
        return old
    }

    /// Removes a key; returns its value. Absent keys copy nothing.
    @discardableResult
    public mutating func remove(_ key: Key) -> Value? {
        guard root != nil, contains(key) else { return nil }
        if !isKnownUniquelyReferenced(&root!) { root = root!.copy() }
        let node = root!
        let old = node.remove(key)
        if node.isLeaf {
            if node.keys.isEmpty { root = nil }
        } else if node.children.count == 1 {
            root = node.children[0]
        }
        return old
    }

    // MARK: Ranks and ranges

    /// Entries with key < `key` (or <= when `orEqual`).
    public func countBefore(_ key: Key, orEqual: Bool) -> Int {
        guard var node = root else { return 0 }
        var total = 0
        while !node.isLeaf {
            let i = node.upperBound(key)
            for c in node.children[..<i] { total += c.count }
            node = node.children[i]
        }
        return total + (orEqual ? node.upperBound(key) : node.lowerBound(key))
    }

    /// Entries between the bounds (nil = unbounded); 0 for an inverted range.
    public func count(from lower: RangeBound<Key>?, to upper: RangeBound<Key>?) -> Int {
        let start: Int
        switch lower {
        case nil: start = 0
        case .inclusive(let k)?: start = countBefore(k, orEqual: false)
        case .exclusive(let k)?: start = countBefore(k, orEqual: true)
        }
        let end: Int
        switch upper {
        case nil: end = count
        case .inclusive(let k)?: end = countBefore(k, orEqual: true)
        case .exclusive(let k)?: end = countBefore(k, orEqual: false)
        }
        return Swift.max(0, end - start)
    }

    /// Entries in key order between the bounds; `reverse` walks from the upper bound down.
    public func entries(from lower: RangeBound<Key>? = nil, to upper: RangeBound<Key>? = nil,
                        reverse: Bool = false) -> Cursor {
        Cursor(root: root, lower: lower, upper: upper, reverse: reverse)
    }

    /// An iterator over a key range: a path of (internal node, child index) plus a leaf position.
    public struct Cursor: IteratorProtocol, Sequence, Sendable {
        private var path: [(node: Node, index: Int)] = []
        private var leaf: Node?
        private var position = 0
        private let lower: RangeBound<Key>?
        private let upper: RangeBound<Key>?
        private let reverse: Bool

        init(root: Node?, lower: RangeBound<Key>?, upper: RangeBound<Key>?, reverse: Bool) {
            self.lower = lower
            self.upper = upper
            self.reverse = reverse
            guard var node = root else { return }
            let start = reverse ? upper : lower
            while !node.isLeaf {
                let i: Int
                switch start {
                case nil: i = reverse ? node.children.count - 1 : 0
                case .exclusive(let k)? where reverse: i = node.lowerBound(k)
                case let bound?: i = node.upperBound(bound.key)
                }
                path.append((node, i))
                node = node.children[i]
            }
            leaf = node
            switch start {
            case nil: position = reverse ? node.keys.count - 1 : 0
            case .inclusive(let k)?: position = reverse ? node.upperBound(k) - 1 : node.lowerBound(k)
            case .exclusive(let k)?: position = reverse ? node.lowerBound(k) - 1 : node.upperBound(k)
            }
        }

        public mutating func next() -> (key: Key, value: Value)? {
            while let node = leaf {
                guard position >= 0 && position < node.keys.count else {
                    reverse ? stepBack() : stepForward()
                    continue
                }
                let key = node.keys[position]
                guard !isPastEnd(key) else { leaf = nil; return nil }
                let value = node.values[position]
                position += reverse ? -1 : 1
                return (key, value)
            }
            return nil
        }

        private func isPastEnd(_ key: Key) -> Bool {
            switch reverse ? lower : upper {
            case nil: return false
            case .inclusive(let k)?: return reverse ? key < k : k < key
            case .exclusive(let k)?: return reverse ? !(k < key) : !(key < k)
            }
        }

        private mutating func stepForward() {
            while let last = path.last, last.index + 1 >= last.node.children.count { path.removeLast() }
            guard !path.isEmpty else { leaf = nil; return }
            path[path.count - 1].index += 1
            var node = path[path.count - 1].node.children[path[path.count - 1].index]
            while !node.isLeaf {
                path.append((node, 0))
                node = node.children[0]
            }
            leaf = node
            position = 0
        }

        private mutating func stepBack() {
            while let last = path.last, last.index == 0 { path.removeLast() }
            guard !path.isEmpty else { leaf = nil; return }
            path[path.count - 1].index -= 1
            var node = path[path.count - 1].node.children[path[path.count - 1].index]
            while !node.isLeaf {
                path.append((node, node.children.count - 1))
                node = node.children[node.children.count - 1]
            }
            leaf = node
            position = node.keys.count - 1
        }
    }
}

extension PersistentSortedMap: Sequence {
    public func makeIterator() -> Cursor { entries() }
}
