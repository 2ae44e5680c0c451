// Visibility lag of each replica as the primary measures it: the time from the moment the
// primary's sender read a batch of durable records (right after its flush published them) to
// the ACK in which the replica reports it has applied them. Samples per shipped batch; the
// newest `samplesKept` per replica are summarized (p50, p99, max) in status.

import Foundation
import Synchronization

final class LagRecorder: Sendable {
    /// Samples kept per replica: bounds memory; about a minute of batches at 1k batches/s.
    static let samplesKept = 65_536

    private struct Replica {
        /// The session whose batches are in flight (ACKs of another are not counted).
        var session: Int?
        var inFlight: [(lsn: UInt64, sentMicros: Int64)] = []
        var samples: [Double] = []
        var next = 0

        /// One sample per in-flight batch the ACK through `lsn` covers.
        mutating func applied(through lsn: UInt64, atMicros: Int64) {
            var done = 0
            while done < inFlight.count && inFlight[done].lsn <= lsn {
                let millis = Double(atMicros - inFlight[done].sentMicros) / 1000
                if samples.count < LagRecorder.samplesKept { samples.append(millis) } else { samples[next] = millis }
                next = (next + 1) % LagRecorder.samplesKept
                done += 1
            }
            inFlight.removeFirst(done)
        }
    }

    // Every update mutates the dictionary's value in place (`all[node, default:]`, `all[node]!`):
    // a copy taken out and stored back (`var r = all[node]`) made each ACK copy the whole sample
    // ring (up to 512 KiB) on the session's task.
    private let state = Mutex<[String: Replica]>([:])

    func sent(_ node: String, through lsn: UInt64, atMicros: Int64) {
        state.withLock { all in
            if all[node, default: Replica()].inFlight.count < Self.samplesKept {
                all[node, default: Replica()].inFlight.append((lsn, atMicros))
            }
        }
    }

    func applied(_ node: String, session: Int, through lsn: UInt64, atMicros: Int64) {
        state.withLock { all in
            guard all[node]?.session == session else { return }
            all[node]!.applied(through: lsn, atMicros: atMicros)
        }
    }

    /// A new session starts with nothing in flight (what was sent before is not waited for).
    func reset(_ node: String, session: Int) {
        state.withLock { all in
            all[node, default: Replica()].inFlight = []
            all[node, default: Replica()].session = session
        }
    }

    /// p50, p99 and max of the kept samples, in milliseconds; nil before the first sample.
    func summary(_ node: String) -> (p50: Double, p99: Double, max: Double, samples: Int)? {
        let samples = state.withLock { $0[node]?.samples ?? [] }.sorted()
        guard !samples.isEmpty else { return nil }
        func at(_ q: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * q))] }
        return (at(0.50), at(0.99), samples[samples.count - 1], samples.count)
    }
}
