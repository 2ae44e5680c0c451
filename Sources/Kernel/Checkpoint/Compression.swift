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

    /// The most deflate can expand: a 258-byte match costs at least 2 bits, so compressed data
    /// inflates at most about 1032 times. A declared length beyond that is impossible.
    static let expansionMax: UInt64 = 1032
    /// Output produced per inflate step; the result grows only as real output arrives.
    static let inflateChunkBytes = 1 << 20

    /// Decompresses to exactly `expectedLength` bytes; anything else is corruption. Streams: the
    /// memory used follows what the data really inflates to, never a length the file declares.
    static func decompress(_ input: [UInt8], expectedLength: Int) throws -> [UInt8] {
        func corrupt(_ why: String) -> AeroError {
            AeroError(.checkpointCorrupt, "checkpoint payload does not decompress: \(why)", invariant: "D2")
        }
        var stream = z_stream()
        guard inflateInit_(&stream, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw AeroError(.internalError, "zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        output.reserveCapacity(min(expectedLength, inflateChunkBytes))
        var chunk = [UInt8](repeating: 0, count: inflateChunkBytes)
        var rc = Z_OK
        try input.withUnsafeBufferPointer { inp in
            var consumed = 0
            while rc == Z_OK {
                if stream.avail_in == 0 && consumed < inp.count {
                    let feed = min(inp.count - consumed, Int(UInt32.max))
                    stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress! + consumed)
                    stream.avail_in = uInt(feed)
                    consumed += feed
                }
                let produced: Int
                (rc, produced) = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(out.count)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    return (rc, out.count - Int(stream.avail_out))
                }
                guard produced <= expectedLength - output.count else {
                    throw corrupt("it inflates past the declared \(expectedLength) bytes")
                }
                output.append(contentsOf: chunk[0..<produced])
                if rc == Z_BUF_ERROR && produced == 0 && consumed == inp.count { break }  // input ended early
                if rc == Z_BUF_ERROR { rc = Z_OK }
            }
        }
        guard rc == Z_STREAM_END, output.count == expectedLength else {
            throw corrupt("zlib \(rc), \(output.count) of \(expectedLength) bytes")
        }
        return output
    }
}
