// zlib (Debian's zlib1g) for checkpoint payloads.

#if canImport(Glibc)
import Glibc
#endif
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
    /// Bytes of the zlib wrapper around the deflate stream (RFC 1950): a 2-byte header and the
    /// adler32 trailer.
    static let zlibHeaderBytes = 2
    static let zlibTrailerBytes = 4
    /// An output of at least this many bytes is advised to the kernel for transparent huge pages
    /// (`madvise(MADV_HUGEPAGE)` on the whole 2 MiB pages inside it).
    static let hugePageAdviceBytesMin = 4 << 20
    /// The size of an x86-64 transparent huge page: the advice covers whole ones only.
    static let hugePageBytes = 2 << 20

    /// Decompresses to exactly `expectedLength` bytes; anything else is corruption.
    ///
    /// Inflates straight into one array of `expectedLength` bytes: a checkpoint's payload grew
    /// by appending 1 MiB pieces, which copied it once and reallocated it about 10 times, each
    /// time into fresh pages (issue 19: the inflate of a 1 GB payload was page faults and
    /// copies, not zlib). The array is reserved, not touched: memory is used only as real output
    /// arrives, so a declared length the stream does not fill costs address space, not memory.
    /// A declared length beyond this machine's memory is refused before anything is reserved
    /// (such a payload could not be held anyway). A large output is advised for transparent
    /// huge pages: the kernel then maps it 2 MiB at a time instead of 4 KiB.
    ///
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
        let memory = physicalMemoryBytes
        guard expectedLength >= 0, UInt64(expectedLength) <= memory else {
            throw corrupt("it declares \(expectedLength) bytes, more than this machine's memory (\(memory) bytes)")
        }
        var stream = z_stream()
        guard inflateInit2_(&stream, -MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw AeroError(.internalError, "zlib inflateInit2 failed")
        }
        defer { inflateEnd(&stream) }
        let end = input.count - zlibTrailerBytes
        return try input.withUnsafeBufferPointer { inp in
            // At least 1 byte of capacity: zlib wants an output pointer even when there is no room.
            try [UInt8](unsafeUninitializedCapacity: max(expectedLength, 1)) { out, produced in
                adviseHugePages(out)
                var consumed = zlibHeaderBytes
                var rc = Z_OK
                while true {
                    if stream.avail_in == 0 && consumed < end {
                        let feed = min(end - consumed, Int(UInt32.max))
                        stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress! + consumed)
                        stream.avail_in = uInt(feed)
                        consumed += feed
                    }
                    let room = min(expectedLength - produced, Int(UInt32.max))
                    stream.next_out = out.baseAddress! + produced
                    stream.avail_out = uInt(room)
                    rc = inflate(&stream, Z_NO_FLUSH)
                    produced += room - Int(stream.avail_out)
                    if rc == Z_OK { continue }  // progress was made
                    if rc != Z_BUF_ERROR { break }  // the end, or damage: judged below
                    // No progress was possible: with no room left, the stream has more to give
                    // than declared; with room, its input ended early.
                    if room == 0 { throw corrupt("it inflates past the declared \(expectedLength) bytes") }
                    break
                }
                // The stream ends exactly where the trailer begins: nothing is left of the input.
                guard rc == Z_STREAM_END, stream.avail_in == 0, produced == expectedLength else {
                    throw corrupt("zlib \(rc), \(produced) of \(expectedLength) bytes, \(stream.avail_in) bytes left before the trailer")
                }
            }
        }
    }

    /// This machine's memory (`sysconf`, read once), the most a declared payload may inflate to.
    static let physicalMemoryBytes: UInt64 = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageBytes = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageBytes > 0 else { return UInt64(Int.max) }
        let (bytes, overflow) = UInt64(pages).multipliedReportingOverflow(by: UInt64(pageBytes))
        return overflow ? UInt64(Int.max) : bytes
    }()

    /// Advises the whole huge pages inside `buffer` for transparent huge pages. Advice only: the
    /// kernel may ignore it (THP off), and a failure changes nothing but the page size.
    static func adviseHugePages(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        guard buffer.count >= hugePageAdviceBytesMin, let base = buffer.baseAddress else { return }
        let start = (UInt(bitPattern: base) + UInt(hugePageBytes - 1)) & ~UInt(hugePageBytes - 1)
        let end = (UInt(bitPattern: base) + UInt(buffer.count)) & ~UInt(hugePageBytes - 1)
        guard end > start, let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(pointer, Int(end - start), MADV_HUGEPAGE)
    }
}
