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
    /// Bytes of the zlib wrapper around the deflate stream (RFC 1950): a 2-byte header and the
    /// adler32 trailer.
    static let zlibHeaderBytes = 2
    static let zlibTrailerBytes = 4

    /// Decompresses to exactly `expectedLength` bytes; anything else is corruption. Streams: the
    /// memory used follows what the data really inflates to, never a length the file declares.
    /// Inflates the raw deflate stream inside the zlib wrapper: the wrapper's header is checked,
    /// its adler32 trailer is not, because every caller checks an XXH64 of its own over the same
    /// bytes (a checkpoint's compressed payload before this, a backup chunk's plain bytes after),
    /// and adler32 took about a fifth of a checkpoint's inflate samples (issue 19).
    static func decompress(_ input: [UInt8], expectedLength: Int) throws -> [UInt8] {
        func corrupt(_ why: String) -> AeroError {
            AeroError(.checkpointCorrupt, "checkpoint payload does not decompress: \(why)", invariant: "D2")
        }
        // RFC 1950: CM 8 (deflate), a window of at most 32 KiB, no preset dictionary, FCHECK.
        guard input.count >= zlibHeaderBytes + zlibTrailerBytes, input[0] & 0x0F == 8, input[0] >> 4 <= 7,
              input[1] & 0x20 == 0, (UInt16(input[0]) << 8 | UInt16(input[1])) % 31 == 0 else {
            throw corrupt("not a zlib stream")
        }
        var stream = z_stream()
        guard inflateInit2_(&stream, -MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw AeroError(.internalError, "zlib inflateInit2 failed")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        output.reserveCapacity(min(expectedLength, inflateChunkBytes))
        var chunk = [UInt8](repeating: 0, count: inflateChunkBytes)
        var rc = Z_OK
        let end = input.count - zlibTrailerBytes
        try input.withUnsafeBufferPointer { inp in
            var consumed = zlibHeaderBytes
            while rc == Z_OK {
                if stream.avail_in == 0 && consumed < end {
                    let feed = min(end - consumed, Int(UInt32.max))
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
                if rc == Z_BUF_ERROR && produced == 0 && consumed == end { break }  // input ended early
                if rc == Z_BUF_ERROR { rc = Z_OK }
            }
        }
        // The stream ends exactly where the trailer begins: nothing is left of the input.
        guard rc == Z_STREAM_END, stream.avail_in == 0, output.count == expectedLength else {
            throw corrupt("zlib \(rc), \(output.count) of \(expectedLength) bytes, \(stream.avail_in) bytes left before the trailer")
        }
        return output
    }
}
