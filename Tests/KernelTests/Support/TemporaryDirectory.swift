import Foundation
@testable import Kernel

/// A fresh directory under /tmp, removed when the test ends.
final class TemporaryDirectory: Sendable {
    let path: String

    init(_ label: String = "aerodb-test") {
        path = NSTemporaryDirectory() + "\(label)-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func json(_ text: String) -> JSONValue {
    do { return try JSON.parse(text) } catch { fatalError("test JSON does not parse: \(text): \(error)") }
}

func smallOptions(_ dir: TemporaryDirectory) -> KernelOptions {
    var options = KernelOptions(dataDirectory: dir.path + "/data")
    options.walSegmentBytes = 256 << 10
    options.checkpointEveryWALBytes = 0
    return options
}
