// `aerodb logs`: a node's slow log (requests over `slow_query_ms`), newest first.

import ArgumentParser
import Kernel

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a running node's slow log: requests slower than slow_query_ms, newest first (GET /admin/v1/logs/slow).")

    @OptionGroup var target: AdminTarget
    @Option(help: "Entries to print (1...1000).") var limit: Int = 100
    @Flag(help: "Print the answer as JSON.") var json = false

    func run() async throws {
        let (status, answer) = try await target.call("GET", "/admin/v1/logs/slow?limit=\(limit)")
        guard status == 200 else {
            print("\(answer["code"]?.stringValue ?? "HTTP \(status)"): \(answer["message"]?.stringValue ?? JSON.encodeString(answer))")
            throw ExitCode(1)
        }
        if json {
            print(JSON.encodeString(answer))
            return
        }
        print("slow requests (threshold \(answer["threshold_ms"]?.intValue ?? 0) ms), newest first:")
        if case .array(let entries)? = answer["entries"] {
            for e in entries {
                let ms = e["ms"]?.numberValue.map { String(Int($0)) } ?? "?"
                print("\(e["ts"]?.stringValue ?? "")  \(ms) ms  \(e["status"]?.intValue ?? 0)  \(e["method"]?.stringValue ?? "") \(e["path"]?.stringValue ?? "")  request_id=\(e["request_id"]?.stringValue ?? "")")
            }
        }
    }
}
