import Foundation
import Testing
import Kernel
@testable import Replication

@Suite struct AuthorityMarkerTests {
    func store() throws -> (AuthorityStore, String) {
        let dir = NSTemporaryDirectory() + "aerodb-authority-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (AuthorityStore(dataDirectory: dir), dir)
    }

    @Test func createReadAndReplaceOnlyUpwards() throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try store.read() == nil)
        let first = AuthorityMarker(clusterID: "c1", epoch: 1, primary: "n1")
        try store.create(first)
        #expect(try store.read() == first)
        #expect(throws: AeroError.self) { try store.create(first) }
        #expect(throws: AeroError.self) { try store.replace(with: AuthorityMarker(clusterID: "c1", epoch: 1, primary: "n2")) }
        #expect(throws: AeroError.self) { try store.replace(with: AuthorityMarker(clusterID: "other", epoch: 5, primary: "n2")) }
        let second = AuthorityMarker(clusterID: "c1", epoch: 2, primary: "n2")
        try store.replace(with: second)
        #expect(try store.read() == second)
        #expect(try store.read()?.isPrimary("n2") == true)
        #expect(!FileManager.default.fileExists(atPath: dir + "/authority.json.tmp"))
    }

    @Test func aDamagedMarkerIsRefused() throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try store.create(AuthorityMarker(clusterID: "c1", epoch: 3, primary: "n1"))
        let path = dir + "/authority.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"epoch\":3", with: "\"epoch\":4")
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        do {
            _ = try store.read()
            Issue.record("a marker with a wrong checksum was accepted")
        } catch let error as AeroError {
            #expect(error.code == .authorityCorrupt)
        }
    }
}
