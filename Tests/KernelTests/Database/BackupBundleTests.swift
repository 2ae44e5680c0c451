// B3: a one-file backup (BackupBundle) unpacks to exactly the directory that was packed, and any
// damage (a flipped byte anywhere, a cut, bytes after the trailer, a path that leaves the
// directory) is refused with the directory removed. End to end (aerodb backup --out X.aerobackup,
// backup verify, restore): NodeTests/BackupRestoreTests.

import Foundation
import Testing
@testable import Kernel

@Suite struct BackupBundleTests {
    static func files(_ dir: String) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        let fm = FileManager.default
        for name in try fm.subpathsOfDirectory(atPath: dir) {
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: dir + "/" + name, isDirectory: &isDir), !isDir.boolValue { out[name] = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))) }
        }
        return out
    }

    func sample(_ tmp: TemporaryDirectory) throws -> String {
        let dir = tmp.path + "/backup"
        try FileManager.default.createDirectory(atPath: dir + "/blobs", withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        let big = (0..<(BackupBundle.chunkBytes * 2 + 12_345)).map { i in i % 7 == 0 ? UInt8.random(in: 0...255, using: &rng) : UInt8(i % 251) }
        try Data(Array("{\"format\":2}".utf8)).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
        try Data(big).write(to: URL(fileURLWithPath: dir + "/wal-000001.records"))
        try Data().write(to: URL(fileURLWithPath: dir + "/base.ckpt"))
        try Data(Array("blob bytes".utf8)).write(to: URL(fileURLWithPath: dir + "/blobs/" + String(repeating: "ab", count: 32)))
        return dir
    }

    @Test func aBundleUnpacksToTheDirectoryItPacked() throws {
        let tmp = TemporaryDirectory()
        let dir = try sample(tmp)
        let file = tmp.path + "/b.aerobackup"
        try BackupBundle.pack(directory: dir, into: file)
        #expect(!FileManager.default.fileExists(atPath: file + ".partial"))
        try BackupBundle.unpack(file, into: tmp.path + "/out")
        #expect(try Self.files(tmp.path + "/out") == Self.files(dir))
        // Compressed: the repetitive WAL file shrinks.
        let size = try FileManager.default.attributesOfItem(atPath: file)[.size] as! Int
        let packed = try Self.files(dir).values.reduce(0) { $0 + $1.count }
        #expect(size < packed)
    }

    @Test func anyDamageIsRefusedAndLeavesNoDirectory() throws {
        let tmp = TemporaryDirectory()
        let dir = try sample(tmp)
        let file = tmp.path + "/b.aerobackup"
        try BackupBundle.pack(directory: dir, into: file)
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        func refused(_ bytes: [UInt8], _ what: String) throws {
            let damaged = tmp.path + "/damaged.aerobackup"
            try Data(bytes).write(to: URL(fileURLWithPath: damaged))
            let out = tmp.path + "/out-damaged"
            #expect(throws: AeroError.self, "\(what)") { try BackupBundle.unpack(damaged, into: out) }
            #expect(!FileManager.default.fileExists(atPath: out), "\(what): the directory stays")
        }
        // A flipped bit at spread positions: header, names, lengths, hashes, zlib bytes, trailer.
        for position in stride(from: 0, to: good.count, by: max(1, good.count / 97)) + [good.count - 1, good.count - 9, 9, 13] {
            var bytes = good
            bytes[position] ^= 0x10
            try refused(bytes, "bit flipped at \(position)")
        }
        try refused(Array(good.prefix(good.count - 1)), "cut by one byte")
        try refused(Array(good.prefix(good.count / 2)), "cut in half")
        try refused(good + [0], "a byte after the trailer")
        // A name that would leave the directory (same length as "manifest.json": "../../x.json!").
        var escape = good
        let name = Array("manifest.json".utf8)
        let at = (0...(good.count - name.count)).first { Array(good[$0..<($0 + name.count)]) == name }!
        escape.replaceSubrange(at..<(at + name.count), with: Array("../etc/passw".utf8) + [0x64])
        try refused(escape, "a path with ..")
    }
}
