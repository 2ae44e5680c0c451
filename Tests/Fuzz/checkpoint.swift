// fuzz-modules: Kernel
// fuzz-options: -max_len=20000
//
// Checkpoint files (Sources/Kernel/Checkpoint/CheckpointFile.swift, Compression.swift). A
// damaged or crafted file is reported AERO_CHECKPOINT_CORRUPT (or another AERO_* error), never
// a trap or an allocation the file merely declares. Input byte 0 picks what the rest is:
//   0 mod 3: a whole file, as read from disk;
//   1 mod 3: header fields (LSN, checksum, epoch, plain length, 24+8 bytes) and a compressed
//            payload; the harness writes magic, version and both checksums, so the declared
//            integers (lengths up to 2^64-1) reach the decoder;
//   2 mod 3: the uncompressed payload (JSON lines); the harness builds a valid format 1 file
//            around it (format 1 has no epoch history before the lines, so the input is all
//            JSON lines; formats 0 and 1 above reach the format 2 history decoder).
//            A state that loads must encode again (as format 2), and load again to the same bytes.
// Byte 0 = 0xBB: the rest is a one-file backup (Sources/Kernel/Backup/BackupBundle.swift, B3),
//            read from memory with nothing written: AERO_BACKUP_CORRUPT or a whole read.

@testable import Kernel

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ data: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 1 else { return }
    let rest = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] == 0xBB { return bundle(rest) }
    switch data[0] % 3 {
    case 0:
        load(rest)
    case 1:
        guard rest.count >= 32 else { return }
        load(file(fields: Array(rest[0..<32]), compressed: Array(rest[32...])))
    default:
        guard let compressed = try? Compression.compress(rest) else { fatalError("zlib refuses to compress") }
        var fields = [UInt8](repeating: 0, count: 24)
        withUnsafeBytes(of: UInt64(rest.count).littleEndian) { fields += $0 }
        if let state = load(file(fields: fields, compressed: compressed, version: CheckpointFile.versionWithoutHistory)) { roundTrip(state) }
    }
}

/// magic, version, reserved, then `fields` (LSN, checksum, epoch, plain length), the compressed
/// length, both hashes and the payload: a file whose checksums are right whatever it declares.
private func file(fields: [UInt8], compressed: [UInt8], version: UInt32 = CheckpointFile.version) -> [UInt8] {
    var header = CheckpointFile.magic
    withUnsafeBytes(of: version.littleEndian) { header += $0 }
    header += [0, 0, 0, 0]
    header += fields
    withUnsafeBytes(of: UInt64(compressed.count).littleEndian) { header += $0 }
    withUnsafeBytes(of: XXH64.hash(compressed).littleEndian) { header += $0 }
    withUnsafeBytes(of: XXH64.hash(header).littleEndian) { header += $0 }
    precondition(header.count == CheckpointFile.headerBytes, "harness header layout")
    return header + compressed
}

@discardableResult
private func load(_ bytes: [UInt8]) -> DatabaseState? {
    do {
        return try CheckpointFile.decode(bytes, name: "fuzz.ckpt")
    } catch is AeroError {
        return nil
    } catch {
        fatalError("CheckpointFile.decode threw a non-AeroError: \(error)")
    }
}

private func roundTrip(_ state: DatabaseState) {
    do {
        let first = try CheckpointFile.encode(state)
        let second = try CheckpointFile.encode(try CheckpointFile.decode(first, name: "again.ckpt"))
        precondition(first == second, "a loaded checkpoint does not re-encode to the same bytes")
    } catch {
        fatalError("a loaded checkpoint does not encode and load again: \(error)")
    }
}

private func bundle(_ bytes: [UInt8]) {
    var offset = 0
    var source = BackupBundle.Source { count in
        let n = min(count, bytes.count - offset)
        defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }
    do {
        try BackupBundle.read(&source) { _ in nil }
    } catch is AeroError {
        return
    } catch {
        fatalError("BackupBundle.read threw a non-AeroError: \(error)")
    }
}
