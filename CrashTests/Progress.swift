// Progress lines of the crash harness (issue 13 part 4): one line per workload, kill or round
// with its counts, on standard error, so a long run shows where it is while the summary lines
// on standard output stay what CI and docs/CRASH_TESTING.md read.

import Foundation

enum Progress {
    static func line(_ text: String) {
        FileHandle.standardError.write(Data(("progress: " + text + "\n").utf8))
    }
}
