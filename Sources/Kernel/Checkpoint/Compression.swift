// zlib (Debian's zlib1g) for checkpoint payloads.

import CZlib

enum Compression {
    /// zlib level 1: checkpoints are written often and read at every start; speed beats ratio.
    static let level: Int32 = 1

    static func compress(_ input: [UInt8]) throws -> [UInt8] {
        var outputLength = compressBound(uLong(input.count))
        var output = [UInt8](repeating: 0, count: Int(outputLength))
        let rc = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inp in
                compress2(out.baseAddress, &outputLength, inp.baseAddress, uLong(inp.count), level)
            }
        }
        guard rc == Z_OK else { throw AeroError(.internalError, "zlib compress2 failed with \(rc)") }
        output.removeLast(output.count - Int(outputLength))
        return output
    }

    /// Decompresses to exactly `expectedLength` bytes; anything else is corruption.
    static func decompress(_ input: [UInt8], expectedLength: Int) throws -> [UInt8] {
        var outputLength = uLongf(expectedLength)
        var output = [UInt8](repeating: 0, count: max(expectedLength, 1))
        let rc = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inp in
                uncompress(out.baseAddress, &outputLength, inp.baseAddress, uLong(inp.count))
            }
        }
        guard rc == Z_OK, Int(outputLength) == expectedLength else {
            throw AeroError(.checkpointCorrupt, "checkpoint payload does not decompress (zlib \(rc))", invariant: "D2")
        }
        output.removeLast(output.count - expectedLength)
        return output
    }
}
