// A closure stored as the generic value of a `Mutex` (`Mutex<(() -> T)?>`, or through a closure
// typealias) is reabstracted on every inout access: each `withLock` wraps it in one more thunk,
// so every call walks a chain as long as the number of accesses so far. That made a primary's CPU
// per commit grow with its commit count (CommitModeSetting, CM1) and a metrics scrape grow with the
// scrapes before it (NodeMetrics). Closures are kept in a final class box instead. This test keeps
// the pattern out of Sources.

import Foundation
import Testing

@Suite struct ClosureInMutexTests {
    static var sources: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources").path
    }

    @Test func noMutexHoldsAClosureDirectly() throws {
        var files: [(path: String, text: String)] = []
        let enumerator = try #require(FileManager.default.enumerator(atPath: Self.sources))
        for case let relative as String in enumerator where relative.hasSuffix(".swift") {
            files.append((relative, try String(contentsOfFile: Self.sources + "/" + relative, encoding: .utf8)))
        }
        #expect(files.count > 100, "Sources/ was not found from \(#filePath)")
        // Closure typealiases anywhere in Sources.
        let alias = try Regex(#"typealias\s+(\w+)\s*=\s*[^\n]*->"#)
        var closureNames: Set<String> = []
        for file in files {
            for match in file.text.matches(of: alias) {
                if let name = match.output[1].substring { closureNames.insert(String(name)) }
            }
        }
        #expect(closureNames.contains("Reader"), "the typealias scan found nothing")
        let direct = try Regex(#"Mutex<[^>\n]*->"#)
        var offenders: [String] = []
        for file in files {
            for (number, line) in file.text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where line.contains("Mutex<") && !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                let viaAlias = closureNames.contains { line.contains("Mutex<\($0)>") || line.contains("Mutex<\($0)?>") }
                if line.contains(direct) || viaAlias { offenders.append("\(file.path):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))") }
            }
        }
        #expect(offenders.isEmpty, "box the closure in a final class: \(offenders)")
    }
}
