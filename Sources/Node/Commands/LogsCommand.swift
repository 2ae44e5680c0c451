// `aerodb logs`: a node's query operation log (requests slower than `slow_query_ms` and requests
// whose query was refused, with their plans), newest first.

import ArgumentParser
import Kernel

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a running node's query log: slow requests (over slow_query_ms) and refused queries, newest first (GET /admin/v1/logs/queries).")

    @OptionGroup var target: AdminTarget
    @Option(help: "Entries to print (1...1000).") var limit: Int = 100
    @Option(help: "Only one kind: slow or refused.") var kind: String?
    @Flag(help: "Print the answer as JSON (every entry with its plans).") var json = false

    func validate() throws {
        guard (1...1_000).contains(limit) else { throw ValidationError("--limit must be 1...1000") }
        if let kind, kind != "slow", kind != "refused" { throw ValidationError("--kind must be slow or refused") }
    }

    func run() async throws {
        let (status, answer) = try await target.call("GET", "/admin/v1/logs/queries?limit=\(limit)" + (kind.map { "&kind=\($0)" } ?? ""))
        guard status == 200 else {
            print("\(answer["code"]?.stringValue ?? "HTTP \(status)"): \(answer["message"]?.stringValue ?? JSON.encodeString(answer))")
            throw ExitCode(1)
        }
        if json {
            print(JSON.encodeString(answer))
            return
        }
        print("slow requests (threshold \(answer["threshold_ms"]?.intValue ?? 0) ms) and refused queries, newest first:")
        if case .array(let entries)? = answer["entries"] {
            for e in entries {
                let ms = e["ms"]?.numberValue.map { String(Int($0)) } ?? "?"
                var line = "\(e["ts"]?.stringValue ?? "")  \(e["kind"]?.stringValue ?? "slow")  \(ms) ms  \(e["status"]?.intValue ?? 0)  \(e["method"]?.stringValue ?? "") \(e["path"]?.stringValue ?? "")  request_id=\(e["request_id"]?.stringValue ?? "")"
                if let code = e["code"]?.stringValue { line += "  \(code): \(e["message"]?.stringValue ?? "")" }
                print(line)
                for plan in e["plans"]?.arrayValue ?? [] {
                    let access = plan["access"]?.stringValue ?? "?"
                    let index = plan["index"]?.stringValue.map { " index \($0)" } ?? ""
                    let bound = plan["rows_examined_bound"]?.intValue.map { " rows_examined_bound \($0)" } ?? ""
                    print("    \(plan["refused"] == .bool(true) ? "refused: " : "")\(plan["collection"]?.stringValue ?? "?") \(access)\(index)\(bound)")
                }
            }
        }
    }
}
