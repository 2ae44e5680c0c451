// XXH64 (Yann Collet's xxHash, 64-bit), the checksum of WAL records and checkpoints.
// Verified against the reference vectors in WALFormatTests.

public enum XXH64 {
    private static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    public static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { hash($0, seed: seed) }
    }

    static func hash(_ buffer: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var state = Streaming(seed: seed)
        state.update(buffer)
        return state.finish()
    }

    /// Incremental form: hash a header and a payload without concatenating them.
    struct Streaming {
        private var v1, v2, v3, v4: UInt64
        private let seed: UInt64
        private var buffer = [UInt8]()
        private var total: UInt64 = 0

        init(seed: UInt64 = 0) {
            self.seed = seed
            v1 = seed &+ prime1 &+ prime2
            v2 = seed &+ prime2
            v3 = seed
            v4 = seed &- prime1
            buffer.reserveCapacity(32)
        }

        mutating func update(_ input: UnsafeRawBufferPointer) {
            total &+= UInt64(input.count)
            var offset = 0
            if !buffer.isEmpty {
                let take = min(32 - buffer.count, input.count)
                buffer.append(contentsOf: input[0..<take])
                offset = take
                guard buffer.count == 32 else { return }
                buffer.withUnsafeBytes { consume($0, at: 0) }
                buffer.removeAll(keepingCapacity: true)
            }
            while offset + 32 <= input.count {
                consume(input, at: offset)
                offset += 32
            }
            if offset < input.count { buffer.append(contentsOf: input[offset...]) }
        }

        private mutating func consume(_ p: UnsafeRawBufferPointer, at offset: Int) {
            v1 = XXH64.round(v1, p.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian)
            v2 = XXH64.round(v2, p.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self).littleEndian)
            v3 = XXH64.round(v3, p.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self).littleEndian)
            v4 = XXH64.round(v4, p.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self).littleEndian)
        }

        func finish() -> UInt64 {
            var h: UInt64
            if total >= 32 {
                h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
                h = XXH64.merge(h, v1)
                h = XXH64.merge(h, v2)
                h = XXH64.merge(h, v3)
                h = XXH64.merge(h, v4)
            } else {
                h = seed &+ prime5
            }
            h &+= total
            return buffer.withUnsafeBytes { tail in
                var i = 0
                while i + 8 <= tail.count {
                    let k = XXH64.round(0, tail.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian)
                    h = rotl(h ^ k, 27) &* prime1 &+ prime4
                    i += 8
                }
                if i + 4 <= tail.count {
                    h ^= UInt64(tail.loadUnaligned(fromByteOffset: i, as: UInt32.self).littleEndian) &* prime1
                    h = rotl(h, 23) &* prime2 &+ prime3
                    i += 4
                }
                while i < tail.count {
                    h ^= UInt64(tail[i]) &* prime5
                    h = rotl(h, 11) &* prime1
                    i += 1
                }
                h ^= h >> 33
                h &*= prime2
                h ^= h >> 29
                h &*= prime3
                h ^= h >> 32
                return h
            }
        }
    }

    private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* prime2, 31) &* prime1
    }

    private static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* prime1 &+ prime4
    }
}

@inline(__always)
private func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
