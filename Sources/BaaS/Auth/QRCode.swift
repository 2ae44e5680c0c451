// A QR code encoder (ISO/IEC 18004) for the TOTP enrollment URI (AuthMFA): byte mode, error
// correction level M, versions 1-10 (up to 213 bytes: an `otpauth://` URI with an address of
// up to ~150 characters), all eight masks scored by the standard's penalty rules, rendered
// as SVG (one path, 4-module quiet zone), as GoTrue's `totp.qr_code`.
//
// Layout per version V (size 17 + 4V modules): three finder patterns with separators, timing
// patterns on row and column 6, alignment patterns at the version's centres, the dark module at
// (4V + 9, 8), format information (level and mask, BCH(15,5) xor 0x5412) twice, version
// information (BCH(18,6), V >= 7) twice; data and error-correction codewords (Reed-Solomon over
// GF(256), polynomial 0x11D) interleaved by block and placed in the two-column zigzag from the
// bottom right.

enum QRCode {
    /// Per version (index V - 1), level M: error-correction codewords per block and the data
    /// codewords of each block.
    private static let levelM: [(ec: Int, blocks: [Int])] = [
        (10, [16]), (16, [28]), (26, [44]), (18, [32, 32]), (24, [43, 43]),
        (16, [27, 27, 27, 27]), (18, [31, 31, 31, 31]), (22, [38, 38, 39, 39]),
        (22, [36, 36, 36, 37, 37]), (26, [43, 43, 43, 43, 44]),
    ]
    private static let alignment: [[Int]] = [
        [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34], [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50],
    ]
    /// The longest text encoded (bytes): version 10, level M.
    static let bytesMax = 213

    /// The modules (true = dark), row-major, or nil when `text` is longer than `bytesMax`.
    static func matrix(_ text: String) -> [[Bool]]? {
        let data = Array(text.utf8)
        guard let version = (1...10).first(where: { capacity($0) >= data.count }) else { return nil }
        let codewords = encode(data, version: version)
        var best: [[Bool]]?
        var bestScore = Int.max
        for mask in 0..<8 {
            let m = build(version: version, codewords: codewords, mask: mask)
            let score = penalty(m)
            if score < bestScore { (best, bestScore) = (m, score) }
        }
        return best
    }

    /// The SVG GoTrue sends as `qr_code` (the client prefixes `data:image/svg+xml;utf-8,`).
    static func svg(_ text: String) -> String? {
        guard let m = matrix(text) else { return nil }
        let size = m.count + 8
        var path = ""
        for (y, row) in m.enumerated() {
            for (x, dark) in row.enumerated() where dark { path += "M\(x + 4) \(y + 4)h1v1h-1z" }
        }
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(size) \(size)\" shape-rendering=\"crispEdges\">"
            + "<rect width=\"\(size)\" height=\"\(size)\" fill=\"#fff\"/><path fill=\"#000\" d=\"\(path)\"/></svg>"
    }

    static func capacity(_ version: Int) -> Int {
        let dataCodewords = levelM[version - 1].blocks.reduce(0, +)
        let countBits = version < 10 ? 8 : 16
        return (dataCodewords * 8 - 4 - countBits) / 8
    }

    // MARK: Codewords

    static func encode(_ data: [UInt8], version: Int) -> [UInt8] {
        let (ec, blocks) = levelM[version - 1]
        let total = blocks.reduce(0, +)
        var bits: [Bool] = []
        func put(_ value: Int, _ count: Int) { for i in stride(from: count - 1, through: 0, by: -1) { bits.append((value >> i) & 1 == 1) } }
        put(0b0100, 4)
        put(data.count, version < 10 ? 8 : 16)
        for byte in data { put(Int(byte), 8) }
        put(0, min(4, total * 8 - bits.count))
        while bits.count % 8 != 0 { bits.append(false) }
        var bytes: [UInt8] = stride(from: 0, to: bits.count, by: 8).map { i in
            bits[i..<i + 8].reduce(UInt8(0)) { $0 << 1 | ($1 ? 1 : 0) }
        }
        var pad: UInt8 = 0xEC
        while bytes.count < total {
            bytes.append(pad)
            pad = pad == 0xEC ? 0x11 : 0xEC
        }
        var dataBlocks: [[UInt8]] = []
        var offset = 0
        for count in blocks {
            dataBlocks.append(Array(bytes[offset..<offset + count]))
            offset += count
        }
        let ecBlocks = dataBlocks.map { reedSolomon($0, ec) }
        var out: [UInt8] = []
        for i in 0..<(blocks.max() ?? 0) { for block in dataBlocks where i < block.count { out.append(block[i]) } }
        for i in 0..<ec { for block in ecBlocks { out.append(block[i]) } }
        return out
    }

    private static let (exp, log): ([UInt8], [Int]) = {
        var exp = [UInt8](repeating: 0, count: 512), log = [Int](repeating: 0, count: 256)
        var x = 1
        for i in 0..<255 {
            exp[i] = UInt8(x)
            log[x] = i
            x <<= 1
            if x & 0x100 != 0 { x ^= 0x11D }
        }
        for i in 255..<512 { exp[i] = exp[i - 255] }
        return (exp, log)
    }()

    private static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        a == 0 || b == 0 ? 0 : exp[log[Int(a)] + log[Int(b)]]
    }

    static func reedSolomon(_ data: [UInt8], _ degree: Int) -> [UInt8] {
        var generator: [UInt8] = [1]  // product of (x - 2^i), highest power first
        for i in 0..<degree {
            var next = [UInt8](repeating: 0, count: generator.count + 1)
            for (j, c) in generator.enumerated() {
                next[j] ^= c
                next[j + 1] ^= multiply(c, exp[i])
            }
            generator = next
        }
        var remainder = [UInt8](repeating: 0, count: degree)
        for byte in data {
            let factor = byte ^ remainder[0]
            remainder.removeFirst()
            remainder.append(0)
            for j in 0..<degree { remainder[j] ^= multiply(generator[j + 1], factor) }
        }
        return remainder
    }

    // MARK: Matrix

    static func build(version: Int, codewords: [UInt8], mask: Int) -> [[Bool]] {
        let size = 17 + 4 * version
        var dark = [[Bool]](repeating: [Bool](repeating: false, count: size), count: size)
        var fixed = [[Bool]](repeating: [Bool](repeating: false, count: size), count: size)
        func set(_ x: Int, _ y: Int, _ value: Bool) {
            guard x >= 0, y >= 0, x < size, y < size else { return }
            dark[y][x] = value
            fixed[y][x] = true
        }
        for (cx, cy) in [(3, 3), (size - 4, 3), (3, size - 4)] {
            for dy in -4...4 {
                for dx in -4...4 {
                    let d = max(abs(dx), abs(dy))
                    set(cx + dx, cy + dy, d != 2 && d != 4)
                }
            }
        }
        let centres = alignment[version - 1]
        for cy in centres {
            for cx in centres where !fixed[cy][cx] {
                for dy in -2...2 { for dx in -2...2 { set(cx + dx, cy + dy, max(abs(dx), abs(dy)) != 1) } }
            }
        }
        for i in 8..<(size - 8) {
            set(i, 6, i % 2 == 0)
            set(6, i, i % 2 == 0)
        }
        set(8, size - 8, true)  // the dark module
        // Reserve the format areas (written below) and the version areas.
        for i in 0..<9 {
            if !fixed[8][i] { set(i, 8, false) }
            if !fixed[i][8] { set(8, i, false) }
        }
        for i in 0..<8 {
            set(size - 1 - i, 8, false)
            set(8, size - 1 - i, false)
        }
        if version >= 7 {
            let info = bch(version, 6, generator: 0x1F25, bits: 12)
            for i in 0..<18 {
                let bit = (info >> i) & 1 == 1
                set(size - 11 + i % 3, i / 3, bit)
                set(i / 3, size - 11 + i % 3, bit)
            }
        }
        // Data, zigzag from the bottom right, two columns at a time, skipping column 6.
        var bitIndex = 0
        let totalBits = codewords.count * 8
        var right = size - 1
        var upward = true
        while right > 0 {
            if right == 6 { right -= 1 }
            for step in 0..<size {
                let y = upward ? size - 1 - step : step
                for x in [right, right - 1] where !fixed[y][x] {
                    var bit = false
                    if bitIndex < totalBits { bit = (codewords[bitIndex / 8] >> (7 - bitIndex % 8)) & 1 == 1 }
                    bitIndex += 1
                    dark[y][x] = bit != masked(mask, x, y)
                }
            }
            upward.toggle()
            right -= 2
        }
        // Format information: level M (00), the mask.
        let format = bch(mask, 5, generator: 0x537, bits: 10) ^ 0x5412
        func formatBit(_ i: Int) -> Bool { (format >> i) & 1 == 1 }
        for i in 0..<6 { dark[i][8] = formatBit(i) }
        dark[7][8] = formatBit(6)
        dark[8][8] = formatBit(7)
        dark[8][7] = formatBit(8)
        for i in 9..<15 { dark[8][14 - i] = formatBit(i) }
        for i in 0..<8 { dark[8][size - 1 - i] = formatBit(i) }
        for i in 8..<15 { dark[size - 15 + i][8] = formatBit(i) }
        dark[size - 8][8] = true
        return dark
    }

    /// `value` (of `length` bits) followed by its BCH remainder of `bits` bits.
    static func bch(_ value: Int, _ length: Int, generator: Int, bits: Int) -> Int {
        var remainder = value << bits
        let top = bits + length - 1
        for i in stride(from: top, through: bits, by: -1) where (remainder >> i) & 1 == 1 {
            remainder ^= generator << (i - bits)
        }
        return value << bits | remainder
    }

    static func masked(_ mask: Int, _ x: Int, _ y: Int) -> Bool {
        switch mask {
        case 0: return (x + y) % 2 == 0
        case 1: return y % 2 == 0
        case 2: return x % 3 == 0
        case 3: return (x + y) % 3 == 0
        case 4: return (y / 2 + x / 3) % 2 == 0
        case 5: return (x * y) % 2 + (x * y) % 3 == 0
        case 6: return ((x * y) % 2 + (x * y) % 3) % 2 == 0
        default: return ((x + y) % 2 + (x * y) % 3) % 2 == 0
        }
    }

    /// The standard's penalty score (N1 runs, N2 blocks, N3 finder-like patterns, N4 balance).
    static func penalty(_ m: [[Bool]]) -> Int {
        let size = m.count
        var score = 0
        for pass in 0..<2 {
            for a in 0..<size {
                var run = 1
                for b in 1..<size {
                    let (current, previous) = pass == 0 ? (m[a][b], m[a][b - 1]) : (m[b][a], m[b - 1][a])
                    if current == previous {
                        run += 1
                    } else {
                        if run >= 5 { score += run - 2 }
                        run = 1
                    }
                }
                if run >= 5 { score += run - 2 }
                let line = (0..<size).map { pass == 0 ? m[a][$0] : m[$0][a] }
                let pattern: [Bool] = [true, false, true, true, true, false, true]
                for start in 0...(size - 7) where Array(line[start..<start + 7]) == pattern {
                    let before = start >= 4 && !line[(start - 4)..<start].contains(true)
                    let after = start + 11 <= size && !line[(start + 7)..<(start + 11)].contains(true)
                    if before || after { score += 40 }
                }
            }
        }
        for y in 0..<(size - 1) {
            for x in 0..<(size - 1) where m[y][x] == m[y][x + 1] && m[y][x] == m[y + 1][x] && m[y][x] == m[y + 1][x + 1] {
                score += 3
            }
        }
        let darkCount = m.reduce(0) { $0 + $1.filter { $0 }.count }
        let percent = darkCount * 100 / (size * size)
        score += abs(percent - 50) / 5 * 10
        return score
    }
}
