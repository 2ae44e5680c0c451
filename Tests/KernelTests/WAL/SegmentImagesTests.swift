import Foundation
import Testing
@testable import Kernel

/// The segment reader of recovery (SegmentImages, WALRecovery.swift): real files are read with
/// O_DIRECT and the next listed segment is read ahead on a thread. R1 needs the scan to see
/// exactly the bytes of each file, as a buffered read returns them.
@Suite struct SegmentImagesTests {
    /// Files 1...n of sizes that are and are not block multiples, with distinct bytes.
    func writeSegments(_ dir: TemporaryDirectory, sizes: [Int], seed: UInt64) throws -> [UInt64: [UInt8]] {
        var rng = SeededRandom(seed: seed)
        var contents: [UInt64: [UInt8]] = [:]
        for (i, size) in sizes.enumerated() {
            let index = UInt64(i + 1)
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            try Data(bytes).write(to: URL(fileURLWithPath: Path.join(dir.path, WALFormat.segmentName(index))))
            contents[index] = bytes
        }
        return contents
    }

    @Test func R1_directReadsAndReadAheadGiveEachFileSBytesInAnyOrderOfRequests() throws {
        let dir = TemporaryDirectory()
        let block = directAlignmentBytes
        let sizes = [8 * block, 3 * block + 100, 1, block - 1, 5 * block, 2 * block, block + 7]
        var contents = try writeSegments(dir, sizes: sizes, seed: 19)
        // Bytes written buffered and never synced (dirty in the page cache) are what a direct read
        // returns too: the kernel writes the range back first.
        let dirty = Path.join(dir.path, WALFormat.segmentName(5))
        let handle = try POSIXFileSystem().open(dirty, create: false)
        let patch = [UInt8](repeating: 0xA5, count: 3000)
        try handle.write(patch, at: 1000)
        handle.close()
        contents[5]!.replaceSubrange(1000..<4000, with: patch)

        let listed = Array(contents.keys).sorted()
        // In order, as the scan reads (each one's header check holds the next one before the release).
        let images = SegmentImages(fileSystem: POSIXFileSystem(), directory: dir.path, listed: listed)
        for index in listed {
            #expect(Array(try images.bytes(index)) == contents[index]!, "segment \(index) in order")
            if index < listed.last! {
                #expect(Array(try images.bytes(index + 1)) == contents[index + 1]!, "segment \(index + 1) as the next one")
            }
            images.release(index)
        }
        #expect(images.deallocate() <= 2, "the scan's two buffers, read-ahead included")
        // Out of order: a read-ahead of a segment the scan does not ask for next is set aside.
        let jumping = SegmentImages(fileSystem: POSIXFileSystem(), directory: dir.path, listed: listed)
        for index: UInt64 in [1, 3, 2, 7, 4, 4, 6, 5, 1] {
            #expect(Array(try jumping.bytes(index)) == contents[index]!, "segment \(index) out of order")
            jumping.release(index)
        }
        jumping.deallocate()
    }

    @Test func R1_aListedFileThatCannotBeReadFailsOnlyWhenTheScanAsksForIt() throws {
        let dir = TemporaryDirectory()
        let contents = try writeSegments(dir, sizes: [3 * directAlignmentBytes, 2 * directAlignmentBytes], seed: 7)
        // Segment 2 is listed, but gone by the time it is read ahead: the scan that stops after
        // segment 1 never sees an error; one that asks for 2 gets the file system's own error.
        try FileManager.default.removeItem(atPath: Path.join(dir.path, WALFormat.segmentName(2)))
        let images = SegmentImages(fileSystem: POSIXFileSystem(), directory: dir.path, listed: [1, 2])
        #expect(Array(try images.bytes(1)) == contents[1]!)
        images.deallocate()
        let asking = SegmentImages(fileSystem: POSIXFileSystem(), directory: dir.path, listed: [1, 2])
        #expect(Array(try asking.bytes(1)) == contents[1]!)
        #expect(throws: (any Error).self) { try asking.bytes(2) }
        asking.release(1)
        asking.deallocate()
    }
}
