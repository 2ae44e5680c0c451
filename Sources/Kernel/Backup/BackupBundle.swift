// One-file backups: a backup directory (Backup.swift) packed into one compressed, checksummed
// file, and unpacked back before `backup verify` or `restore` read it (docs/OPERATIONS.md).
//
// Byte layout (little endian):
//   header   0  8  magic "AEROBKP1"
//            8  4  format version (1)
//   entry    0  1  kind 1 (a file)
//            1  2  name length N (1...nameBytesMax)
//            3  N  relative path, UTF-8: parts of [A-Za-z0-9._-], not "." or "..", joined by "/",
//                  at most pathDepthMax parts
//            then chunks: 4 raw length R (0...chunkBytes; 0 ends the file)
//                         4 compressed length C (1...compressedChunkBytesMax; absent when R = 0)
//                         8 XXH64 of the R raw bytes (absent when R = 0)
//                         C zlib bytes inflating to exactly R bytes
//   trailer  0  1  kind 2
//            1  4  entry count
//            5  8  XXH64 of every byte before this field (header, entries, kind byte, count)
// Invariants (B3): unpacking writes into a new directory and succeeds only if every chunk
// inflates to its length and hash, every name is a plain relative path met once, and the trailer
// matches every byte before it; otherwise the directory is removed and nothing is restored from
// it. Nothing after the trailer is allowed. Packing writes to a temporary name, fsyncs, renames.

import Foundation

public enum BackupBundle {
    static let magic = Array("AEROBKP1".utf8)
    static let version: UInt32 = 1
    /// Raw bytes per chunk (1 MiB): bounds the memory of packing and unpacking.
    public static let chunkBytes = 1 << 20
    /// zlib never expands 1 MiB beyond this (compressBound plus slack): a larger declared
    /// compressed length is corruption, refused before anything is allocated.
    static let compressedChunkBytesMax = chunkBytes + chunkBytes / 1000 + 64
    /// Longest relative path of a packed file (bytes).
    public static let nameBytesMax = 255
    /// Deepest relative path (parts): a backup holds files and one level of folders.
    public static let pathDepthMax = 2
    /// Files in one bundle.
    public static let entriesMax = 10_000_000

    static func corrupt(_ why: String) -> AeroError {
        AeroError(.backupCorrupt, "the backup file is damaged or not a backup file: \(why)", invariant: "B3")
    }

    /// Whether `path` (as `aerodb backup --out` got it) names a one-file backup.
    public static func isBundlePath(_ path: String) -> Bool { path.hasSuffix(".aerobackup") }

    /// The backup directory `path` names: itself when it is a directory, else the one-file
    /// backup unpacked (and checked, B3) into `scratch`.
    public static func directory(of path: String, unpackingInto scratch: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw AeroError(.notFound, "no backup at \(path)") }
        if isDir.boolValue { return path }
        try unpack(path, into: scratch)
        return scratch
    }

    // MARK: Pack

    /// Packs every file of `directory` (one folder level deep) into `file`, written to a
    /// temporary name, fsynced and renamed into place.
    public static func pack(directory: String, into file: String) throws {
        let fm = FileManager.default
        var names: [String] = []
        for top in try fm.contentsOfDirectory(atPath: directory).sorted() {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: directory + "/" + top, isDirectory: &isDir), isDir.boolValue {
                for inner in try fm.contentsOfDirectory(atPath: directory + "/" + top).sorted() { names.append(top + "/" + inner) }
            } else {
                names.append(top)
            }
        }
        let temp = file + ".partial"
        guard fm.createFile(atPath: temp, contents: nil) else { throw AeroError(.ioError, "cannot create \(temp)") }
        do {
            let out = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: temp))
            defer { try? out.close() }
            var sink = Sink(out: out)
            try sink.write(magic)
            try sink.write(le(version))
            for name in names {
                try checkName(name)
                let bytes = Array(name.utf8)
                try sink.write([1] + le(UInt16(bytes.count)) + bytes)
                let input = try Foundation.FileHandle(forReadingFrom: URL(fileURLWithPath: directory + "/" + name))
                defer { try? input.close() }
                while let chunk = try input.read(upToCount: chunkBytes), !chunk.isEmpty {
                    let raw = [UInt8](chunk)
                    let compressed = try Compression.compress(raw)
                    try sink.write(le(UInt32(raw.count)) + le(UInt32(compressed.count)) + le(XXH64.hash(raw)) + compressed)
                }
                try sink.write(le(UInt32(0)))
            }
            try sink.write([2] + le(UInt32(names.count)))
            let total = sink.hash.finish()
            try out.write(contentsOf: le(total))
            try out.synchronize()
            try fm.moveItem(atPath: temp, toPath: file)
            try POSIXFileSystem().syncDirectory(Path.parent(of: file))
        } catch {
            try? fm.removeItem(atPath: temp)
            throw error
        }
    }

    // MARK: Unpack

    /// Unpacks `file` into `directory` (created; must not exist). On any damage the directory
    /// is removed and the error names what was wrong (B3).
    public static func unpack(_ file: String, into directory: String) throws {
        let fm = FileManager.default
        guard let input = Foundation.FileHandle(forReadingAtPath: file) else { throw AeroError(.notFound, "no backup file \(file)") }
        defer { try? input.close() }
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: false)
        do {
            var source = Source { count in [UInt8](try input.read(upToCount: count) ?? Data()) }
            try read(&source) { name in
                let path = directory + "/" + name
                if name.contains("/") {
                    try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                }
                guard fm.createFile(atPath: path, contents: nil), let out = Foundation.FileHandle(forWritingAtPath: path) else {
                    throw AeroError(.ioError, "cannot create \(path)")
                }
                return out
            }
        } catch {
            try? fm.removeItem(atPath: directory)
            throw error
        }
    }

    /// Reads a bundle from `source`, handing each file's bytes to the handle `open` returns
    /// (closed after the file's last chunk). The fuzz target calls this with an in-memory source.
    static func read(_ source: inout Source, open: (String) throws -> Foundation.FileHandle?) throws {
        guard try source.take(8) == magic else { throw corrupt("it does not start with AEROBKP1") }
        let v = try source.u32()
        guard v == version else { throw corrupt("format version \(v), this aerodb reads \(version)") }
        var seen = Set<String>()
        while true {
            let kind = try source.take(1)[0]
            if kind == 2 { break }
            guard kind == 1 else { throw corrupt("entry kind \(kind)") }
            guard seen.count < entriesMax else { throw corrupt("more than \(entriesMax) files") }
            let length = Int(try source.u16())
            guard length >= 1, length <= nameBytesMax else { throw corrupt("a name of \(length) bytes") }
            guard let name = String(validating: try source.take(length), as: UTF8.self) else { throw corrupt("a name that is not UTF-8") }
            try checkName(name)
            guard seen.insert(name).inserted else { throw corrupt("\(name) packed twice") }
            let out = try open(name)
            defer { try? out?.close() }
            while true {
                let rawLength = Int(try source.u32())
                if rawLength == 0 { break }
                guard rawLength <= chunkBytes else { throw corrupt("a chunk of \(rawLength) bytes in \(name)") }
                let compressedLength = Int(try source.u32())
                guard compressedLength >= 1, compressedLength <= compressedChunkBytesMax else {
                    throw corrupt("a compressed chunk of \(compressedLength) bytes in \(name)")
                }
                let expected = try source.u64()
                let raw: [UInt8]
                do {
                    raw = try Compression.decompress(try source.take(compressedLength), expectedLength: rawLength)
                } catch {
                    throw corrupt("a chunk of \(name) does not inflate")
                }
                guard XXH64.hash(raw) == expected else { throw corrupt("a chunk of \(name) fails its checksum") }
                try out?.write(contentsOf: raw)
            }
            try out?.synchronize()
        }
        let count = try source.u32()
        guard count == UInt32(seen.count) else { throw corrupt("the trailer counts \(count) files, the file holds \(seen.count)") }
        let computed = source.hash.finish()
        guard try source.u64() == computed else { throw corrupt("the trailer checksum does not match") }
        guard try source.atEnd() else { throw corrupt("bytes after the trailer") }
    }

    /// A plain relative path: parts of [A-Za-z0-9._-], never "." or "..", at most pathDepthMax.
    static func checkName(_ name: String) throws {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.count <= pathDepthMax, name.utf8.count <= nameBytesMax,
              parts.allSatisfy({ part in
                  !part.isEmpty && part != "." && part != ".."
                      && part.utf8.allSatisfy { $0 == 0x2E || $0 == 0x2D || $0 == 0x5F || (0x30...0x39).contains($0)
                          || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) }
              })
        else { throw corrupt("\(name.debugDescription) is not a plain relative path") }
    }

    // MARK: Bytes

    struct Sink {
        let out: Foundation.FileHandle
        var hash = XXH64.Streaming()
        mutating func write(_ bytes: [UInt8]) throws {
            bytes.withUnsafeBytes { hash.update($0) }
            try out.write(contentsOf: bytes)
        }
    }

    /// Bytes read in order; everything taken is hashed (up to the trailer's checksum field).
    struct Source {
        let next: (Int) throws -> [UInt8]
        var hash = XXH64.Streaming()
        var pending: [UInt8] = []
        var hashing = true

        init(_ next: @escaping (Int) throws -> [UInt8]) { self.next = next }

        mutating func take(_ count: Int) throws -> [UInt8] {
            var out = pending
            pending = []
            while out.count < count {
                let more = try next(count - out.count)
                guard !more.isEmpty else { throw BackupBundle.corrupt("it ends early") }
                out += more
            }
            if out.count > count {
                pending = Array(out[count...])
                out.removeLast(out.count - count)
            }
            if hashing { out.withUnsafeBytes { hash.update($0) } }
            return out
        }

        mutating func u16() throws -> UInt16 { let b = try take(2); return UInt16(b[0]) | UInt16(b[1]) << 8 }
        mutating func u32() throws -> UInt32 { try take(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
        /// The trailer's checksum field is not part of what it covers.
        mutating func u64() throws -> UInt64 { try take(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        mutating func atEnd() throws -> Bool {
            guard pending.isEmpty else { return false }
            return try next(1).isEmpty
        }
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}
