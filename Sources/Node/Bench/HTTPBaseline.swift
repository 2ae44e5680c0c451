// `aerodb bench --workload http-baseline`: a bare Hummingbird route that answers fixed JSON bytes
// (those a node answered to REST GET by key, captured by scripts/wrk/run-rest.sh) to any GET under
// /rest/v1, without a database, a key check or any middleware. It is the bench's own ceiling of
// the HTTP stack on this machine, measured in the same run as the node (RATIO rest_get
// aerodb/hummingbird_baseline); it is never part of a node's request path.
// Serves on 127.0.0.1:<port-base> until SIGTERM/SIGINT or --seconds have passed (a bench helper
// must never outlive its run).

import ArgumentParser
import Foundation
import Hummingbird
import NIOCore

enum HTTPBaseline {
    /// A body file larger than this is not a REST answer of one row: refused.
    static let bodyBytesMax = 1 << 20  // 1 MiB

    static func serve(port: Int, bodyFile: String?, seconds: Double) async throws {
        guard let bodyFile else { throw ValidationError("http-baseline needs --body-file (the JSON to answer)") }
        guard (1...65535).contains(port) else { throw ValidationError("--port-base \(port) is not a port") }
        guard seconds > 0, seconds <= 86_400 else { throw ValidationError("--seconds must be in (0, 86400]") }
        let data = try Data(contentsOf: URL(fileURLWithPath: bodyFile))
        guard data.count <= bodyBytesMax else { throw ValidationError("\(bodyFile) is larger than \(bodyBytesMax) bytes") }
        let body = ByteBuffer(bytes: data)
        let router = Router()
        router.get("/rest/v1/**") { _, _ -> Response in
            Response(status: .ok,
                     headers: [.contentType: "application/json; charset=utf-8", .init("Content-Range")!: "0-0/*"],
                     body: .init(byteBuffer: body))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
        FileHandle.standardError.write(Data("http-baseline: serving \(data.count) bytes on 127.0.0.1:\(port) for at most \(seconds) s\n".utf8))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            group.addTask { try await Task.sleep(for: .seconds(seconds)) }
            _ = try await group.next()  // the server stopped (signal) or the time is up
            group.cancelAll()
        }
    }
}
