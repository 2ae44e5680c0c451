// Seeded workloads for the disk harness: inserts, updates, deletes, multi-operation
// transactions, schema changes (add/drop index, create collection), checkpoints and enough
// volume to roll WAL segments over. The same seed gives the same steps, and (with a manual
// clock and explicit keys) the same resolved effects, so a reference run predicts every state.

import Kernel

struct Workload {
    enum Step {
        case schema(JSONValue)
        case addIndex(String, JSONValue)
        case dropIndex(String, String)
        case commit(JSONValue)
        case checkpoint

        /// One line for a printed history.
        var summary: String {
            switch self {
            case .schema(let s): return "create collection \(JSON.encodeString(s).prefix(160))"
            case .addIndex(let c, let index): return "add index on \(c): \(JSON.encodeString(index))"
            case .dropIndex(let c, let name): return "drop index \(name) on \(c)"
            case .commit(let tx): return "commit \(JSON.encodeString(tx).prefix(200))"
            case .checkpoint: return "checkpoint"
            }
        }

        /// Runs the step; returns the LSN it made durable.
        func run(on db: Database) async throws -> UInt64 {
            switch self {
            case .schema(let s): return try await db.createCollection(s).lsn
            case .addIndex(let c, let index): return try await db.addIndex(collection: c, index).lsn
            case .dropIndex(let c, let name): return try await db.dropIndex(collection: c, name: name)
            case .commit(let tx): return try await db.commit(tx).lsn
            case .checkpoint: return try await db.checkpoint()
            }
        }
    }

    let steps: [Step]

    init(steps: [Step]) { self.steps = steps }

    init(seed: UInt64, operations: Int) {
        var random = SeededRandom(seed: seed)
        var steps: [Step] = [
            .schema(Self.parse(#"{"name":"owners","fields":{"id":{"type":"text"},"name":{"type":"text"}}}"#)),
            .schema(Self.parse(#"{"name":"items","fields":{"id":{"type":"text"},"qty":{"type":"int","nullable":true},"body":{"type":"text"},"owner":{"type":"text","nullable":true,"references":{"collection":"owners","on_delete":"set_null"}}},"indexes":[{"fields":["qty"]},{"name":"items_body_unique","fields":["body"],"unique":true}]}"#)),
            .commit(Self.parse(#"{"ops":[{"op":"insert","collection":"owners","doc":{"id":"o1","name":"first"}},{"op":"insert","collection":"owners","doc":{"id":"o2","name":"second"}}]}"#)),
        ]
        for i in 0..<operations {
            steps.append(Self.step(i, random: &random))
        }
        self.steps = steps
    }

    private static func step(_ i: Int, random: inout SeededRandom) -> Step {
        let key = "k\(random.next(below: 64))"
        let padding = String(repeating: "p", count: random.next(below: 600))
        switch random.next(below: 20) {
        case 0: return .checkpoint
        case 1: return .addIndex("items", parse(#"{"name":"items_owner","fields":["owner"]}"#))
        case 2: return .dropIndex("items", "items_owner")
        case 3...4:
            return .commit(parse(#"{"ops":[{"op":"delete","collection":"items","key":"\#(key)"}]}"#))
        case 5...7:
            return .commit(parse(#"{"ops":[{"op":"update","collection":"items","key":"\#(key)","set":{"qty":\#(i),"owner":"o\#(1 + random.next(below: 2))"}}]}"#))
        case 8...10:
            let other = "k\(random.next(below: 64))"
            return .commit(parse(#"{"ops":[{"op":"upsert","collection":"items","doc":{"id":"\#(key)","qty":\#(i),"body":"b\#(i)\#(padding)"}},{"op":"upsert","collection":"items","doc":{"id":"\#(other)","qty":null,"body":"c\#(i)"}},{"op":"delete","collection":"items","filter":{"qty":{"$lt":\#(i / 2)}}}]}"#))
        default:
            return .commit(parse(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(key)-\#(i)","qty":\#(random.next(below: 1000)),"body":"d\#(i)\#(padding)","owner":"o1"}}]}"#))
        }
    }

    static func parse(_ text: String) -> JSONValue {
        do { return try JSON.parse(text) } catch { preconditionFailure("workload JSON is malformed: \(text)") }
    }
}
