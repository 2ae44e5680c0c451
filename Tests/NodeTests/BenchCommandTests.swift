// `aerodb bench` refuses numbers outside their named ranges (BenchCommand.Ranges) with a clear
// message and a non-zero exit, before it creates anything; `--promotions 0` was a trap.

import Foundation
import Testing

@Suite struct BenchCommandTests {
    @Test(arguments: [
        (["--writers", "0"], "--writers must be in 1...4096, not 0"),
        (["--writers=-3"], "--writers must be in 1...4096, not -3"),
        (["--promotions=-1"], "--promotions must be in 0...1000, not -1"),
        (["--seconds", "nan"], "--seconds must be in 0.1...3600.0, not nan"),
        (["--seconds", "0"], "--seconds must be in 0.1...3600.0, not 0.0"),
        (["--documents", "0"], "--documents must be in 1...100000000, not 0"),
        (["--port-base", "80"], "--port-base must be in 1024...65432, not 80"),
        (["--clients", "100000"], "--clients must be in 1...1024, not 100000"),
        (["--argon2-iterations", "0"], "--argon2-iterations must be in 1...16, not 0"),
    ])
    func numbersOutsideTheirRangesAreRefused(arguments: [String], message: String) async throws {
        let dir = NSTemporaryDirectory() + "aerodb-bench-refused-\(UUID().uuidString)"
        let (status, output) = try await runProgram(Binaries.path("aerodb"), ["bench", "--dir", dir] + arguments)
        #expect(status != 0)
        #expect(output.contains(message), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: dir), "nothing created")
    }
}
