import Testing
@testable import Kernel

/// The reference model: a sorted array of (key, value).
private struct Reference {
    var entries: [(key: Int, value: Int)] = []

    func index(_ key: Int) -> (Int, Bool) {
        var lo = 0, hi = entries.count
        while lo < hi { let mid = (lo + hi) / 2; if entries[mid].key < key { lo = mid + 1 } else { hi = mid } }
        return (lo, lo < entries.count && entries[lo].key == key)
    }

    mutating func insert(_ key: Int, _ value: Int) -> Int? {
        let (i, found) = index(key)
        if found { let old = entries[i].value; entries[i].value = value; return old }
        entries.insert((key, value), at: i)
        return nil
    }

    mutating func remove(_ key: Int) -> Int? {
        let (i, found) = index(key)
        return found ? entries.remove(at: i).value : nil
    }

    func range(_ lower: RangeBound<Int>?, _ upper: RangeBound<Int>?) -> [(key: Int, value: Int)] {
        entries.filter { e in
            let okLow: Bool
            switch lower {
            case nil: okLow = true
            case .inclusive(let k)?: okLow = e.key >= k
            case .exclusive(let k)?: okLow = e.key > k
            }
            let okHigh: Bool
            switch upper {
            case nil: okHigh = true
            case .inclusive(let k)?: okHigh = e.key <= k
            case .exclusive(let k)?: okHigh = e.key < k
            }
            return okLow && okHigh
        }
    }
}

private func contents(_ map: PersistentSortedMap<Int, Int>) -> [Int] { map.map { $0.key * 1_000_003 + $0.value } }
private func contents(_ ref: Reference) -> [Int] { ref.entries.map { $0.key * 1_000_003 + $0.value } }

/// Checks B+tree structure: sorted keys, separators bound children, counts, fill, equal depth.
private func checkStructure(_ node: BTreeNode<Int, Int>, isRoot: Bool, lower: Int?, upper: Int?) -> Int {
    for k in node.keys {
        if let lower { #expect(k >= lower) }
        if let upper { #expect(k < upper) }
    }
    #expect(zip(node.keys, node.keys.dropFirst()).allSatisfy { $0 < $1 })
    if node.isLeaf {
        #expect(node.count == node.keys.count)
        #expect(node.values.count == node.keys.count)
        if !isRoot { #expect(node.keys.count >= BTreeLimits.leafMin && node.keys.count <= BTreeLimits.leafMax) }
        return 1
    }
    #expect(node.children.count == node.keys.count + 1)
    if !isRoot { #expect(node.children.count >= BTreeLimits.childrenMin) }
    #expect(node.children.count <= BTreeLimits.childrenMax)
    #expect(node.count == node.children.reduce(0) { $0 + $1.count })
    var depths = Set<Int>()
    for (i, child) in node.children.enumerated() {
        let lo = i == 0 ? lower : node.keys[i - 1]
        let hi = i == node.keys.count ? upper : node.keys[i]
        depths.insert(checkStructure(child, isRoot: false, lower: lo, upper: hi))
    }
    #expect(depths.count == 1)
    return (depths.first ?? 0) + 1
}

private func randomBound(_ rng: inout SeededRandom, _ keySpace: Int) -> RangeBound<Int>? {
    switch Int.random(in: 0..<3, using: &rng) {
    case 0: return nil
    case 1: return .inclusive(Int.random(in: -5..<(keySpace + 5), using: &rng))
    default: return .exclusive(Int.random(in: -5..<(keySpace + 5), using: &rng))
    }
}

@Suite struct PersistentSortedMapTests {
    @Test(arguments: [(UInt64(1), 300), (UInt64(2), 5_000), (UInt64(3), 20_000)])
    func randomOperationsMatchReferenceAndSnapshotsNeverChange(seed: UInt64, keySpace: Int) {
        var rng = SeededRandom(seed: seed)
        var map = PersistentSortedMap<Int, Int>()
        var ref = Reference()
        var snapshots: [(map: PersistentSortedMap<Int, Int>, expected: [Int])] = []
        let operations = 40_000
        for step in 0..<operations {
            let key = Int.random(in: 0..<keySpace, using: &rng)
            // Bias towards inserts for the first half, removes for the second, to grow and shrink.
            let insertBias = step < operations / 2 ? 7 : 3
            if Int.random(in: 0..<10, using: &rng) < insertBias {
                let value = Int.random(in: 0..<1_000, using: &rng)
                #expect(map.insert(value, forKey: key) == ref.insert(key, value))
            } else {
                #expect(map.remove(key) == ref.remove(key))
            }
            if step % 4_000 == 0 { snapshots.append((map, contents(ref))) }
            if step % 997 == 0 {
                #expect(map.count == ref.entries.count)
                let probe = Int.random(in: 0..<keySpace, using: &rng)
                #expect(map[probe] == ref.entries.first { $0.key == probe }?.value)
                let lower = randomBound(&rng, keySpace), upper = randomBound(&rng, keySpace)
                let expected = ref.range(lower, upper)
                let forward = Array(map.entries(from: lower, to: upper))
                #expect(forward.map(\.key) == expected.map(\.key))
                let backward = Array(map.entries(from: lower, to: upper, reverse: true))
                #expect(backward.map(\.key) == expected.reversed().map(\.key))
                #expect(map.count(from: lower, to: upper) == expected.count)
            }
        }
        #expect(contents(map) == contents(ref))
        if let root = map.root { _ = checkStructure(root, isRoot: true, lower: nil, upper: nil) }
        for snapshot in snapshots {
            #expect(contents(snapshot.map) == snapshot.expected)
            #expect(snapshot.map.count == snapshot.expected.count)
        }
    }

    @Test func bulkBuildMatchesInsertsAndStaysValidUnderMutation() {
        for n in [0, 1, 63, 64, 65, 2_000, 70_000] {
            let entries = (0..<n).map { (key: $0 * 2, value: $0) }
            var map = PersistentSortedMap(sortedUniqueEntries: entries)
            #expect(map.count == n)
            #expect(Array(map).map(\.key) == entries.map(\.key))
            if let root = map.root { _ = checkStructure(root, isRoot: true, lower: nil, upper: nil) }
            let before = map
            for k in stride(from: 0, to: n * 2, by: 3) { map.insert(-1, forKey: k) }
            for k in stride(from: 0, to: n * 2, by: 4) { map.remove(k) }
            if let root = map.root { _ = checkStructure(root, isRoot: true, lower: nil, upper: nil) }
            #expect(Array(before).map(\.key) == entries.map(\.key))
            #expect(before.count == n)
        }
    }

    @Test func removingEverythingEmptiesTheTree() {
        var map = PersistentSortedMap<Int, Int>()
        for k in 0..<5_000 { map.insert(k, forKey: k) }
        let full = map
        for k in (0..<5_000).reversed() { #expect(map.remove(k) == k) }
        #expect(map.isEmpty)
        #expect(map.root == nil)
        #expect(map.remove(3) == nil)
        #expect(full.count == 5_000)
        #expect(Array(full.entries(from: .exclusive(4_997))).map(\.key) == [4_998, 4_999])
    }

    @Test func invertedRangeIsEmpty() {
        let map = PersistentSortedMap(sortedUniqueEntries: (0..<100).map { (key: $0, value: $0) })
        #expect(Array(map.entries(from: .inclusive(50), to: .inclusive(10))).isEmpty)
        #expect(Array(map.entries(from: .inclusive(50), to: .inclusive(10), reverse: true)).isEmpty)
        #expect(map.count(from: .inclusive(50), to: .inclusive(10)) == 0)
        #expect(map.count(from: .exclusive(10), to: .exclusive(11)) == 0)
    }

    @Test func snapshotsAreSafeToReadFromOtherTasks() async {
        var map = PersistentSortedMap(sortedUniqueEntries: (0..<10_000).map { (key: $0, value: $0) })
        let snapshot = map
        await withTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask { snapshot.reduce(0) { $0 + $1.value } }
            }
            for k in 0..<10_000 { map.insert(-k, forKey: k) }
            for await sum in group { #expect(sum == (0..<10_000).reduce(0, +)) }
        }
        #expect(map[5] == -5)
        #expect(snapshot[5] == 5)
    }
}
