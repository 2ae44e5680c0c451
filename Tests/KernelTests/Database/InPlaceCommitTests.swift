// The writer builds each local transaction on its head state in place and hands that state to
// readers only when the WAL takes records for a flush (Writer.swift, "Sealing"). What must hold:
// - C1: a refused transaction leaves nothing in the head, however far it got (its changes are
//   reverted one by one): later commits, the published state and recovery never see any of it,
//   and every index stays exactly derived from the documents;
// - P2: a state readers hold (published, or sealed and waiting for its flush) never changes
//   while later commits change the head in place.

import Foundation
import Synchronization
import Testing
@testable import Kernel

@Suite struct InPlaceCommitTests {
    static let items = #"""
    {"name":"items","fields":{"id":{"type":"text","required":true},"name":{"type":"text","required":true},
     "qty":{"type":"int","nullable":true},"body":{"type":"text","nullable":true}},
     "indexes":[{"fields":["qty"]},{"fields":["name"],"unique":true},{"fields":["body"],"type":"fulltext"}]}
    """#

    /// Refuses a change whose new document has `qty` -1 (as a row-level-security check would),
    /// after the builder applied every change of the transaction.
    struct RefuseMinusOne: ChangeCheck {
        func check(_ change: DocumentChange) throws {
            if change.after?["qty"] == .int(-1) { throw AeroError(.policyViolation, "qty -1 is refused") }
        }
    }

    static func doc(_ id: String, name: String, qty: Int64, body: String) -> Document {
        ["id": .string(id), "name": .string(name), "qty": .int(qty), "body": .string(body)]
    }

    /// The collection's documents by id, from a state.
    static func contents(_ state: DatabaseState) -> [String: Document] {
        var out: [String: Document] = [:]
        for doc in state.collections["items"]!.allDocuments() { out[doc["id"]!.stringValue!] = doc }
        return out
    }

    /// 200 random transactions per seed (600 in all) of 1-6 operations over a model of the
    /// collection; about half end with an operation that fails (duplicate key, unique index,
    /// missing document, a refusing check) after the others were applied to the head. After
    /// every transaction the next commit's state must equal the model: nothing of a refused one
    /// stays, everything of an accepted one does. Then the same after recovery.
    @Test(arguments: [UInt64(1), 2, 3])
    func C1_aRefusedTransactionBuiltInPlaceLeavesNothingInTheHead(seed: UInt64) async throws {
        let dir = TemporaryDirectory()
        var db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.items))
        var rng = SeededRandom(seed: seed)
        var model: [String: Document] = [:]
        var serial = 0
        func fresh() -> String {
            serial += 1
            return "\(serial)"
        }
        var refused = 0
        for round in 0..<200 {
            var ops: [WriteOperation] = []
            var next = model
            for _ in 0..<(1 + rng.next(below: 5)) {
                let existing = next.keys.sorted()
                switch existing.isEmpty ? 0 : rng.next(below: 4) {
                case 0:  // insert
                    let id = "k" + fresh()
                    let d = Self.doc(id, name: "n" + fresh(), qty: Int64(rng.next(below: 50)), body: "word\(rng.next(below: 9)) text")
                    ops.append(.insert(collection: "items", document: d))
                    next[id] = d
                case 1:  // update: a new unique name and qty
                    let id = existing[rng.next(below: existing.count)]
                    let name = "n" + fresh(), qty = Int64(rng.next(below: 50))
                    ops.append(.update(collection: "items", target: .key(.string(id)), set: ["name": .string(name), "qty": .int(qty)]))
                    next[id]!["name"] = .string(name)
                    next[id]!["qty"] = .int(qty)
                case 2:  // delete
                    let id = existing[rng.next(below: existing.count)]
                    ops.append(.delete(collection: "items", target: .key(.string(id))))
                    next[id] = nil
                default:  // upsert of an existing document
                    let id = existing[rng.next(below: existing.count)]
                    let body = "word\(rng.next(below: 9)) again"
                    ops.append(.upsert(collection: "items", document: ["id": .string(id), "body": .string(body)]))
                    next[id]!["body"] = .string(body)
                }
            }
            let failing = rng.next(below: 2) == 0
            if failing {
                let taken = next.values.compactMap { $0["name"]?.stringValue }.sorted()
                switch (next.isEmpty ? 1 : 0) + rng.next(below: 4) {
                case 0:  // the primary key of a document the transaction sees
                    let id = next.keys.sorted()[0]
                    ops.append(.insert(collection: "items", document: Self.doc(id, name: "n" + fresh(), qty: 1, body: "x")))
                case 1:  // a document that does not exist
                    ops.append(.delete(collection: "items", target: .key(.string("missing"))))
                case 2 where !taken.isEmpty:  // a name the unique index holds: refused by the collection's put
                    ops.append(.insert(collection: "items", document: Self.doc("k" + fresh(), name: taken[0], qty: 1, body: "x")))
                default:  // accepted by the builder, refused by the check after every change was applied
                    ops.append(.insert(collection: "items", document: Self.doc("k" + fresh(), name: "n" + fresh(), qty: -1, body: "x")))
                }
            }
            do {
                _ = try await db.commit(ops, check: RefuseMinusOne())
                #expect(!failing, "round \(round): a transaction with a failing operation was accepted")
                model = next
            } catch let error as AeroError {
                #expect(failing, "round \(round): refused: \(error)")
                refused += 1
            }
            // A commit after it, built on the head the refused transaction left: a marker
            // document inserted and deleted (a published state with the model's documents).
            let marker = "m" + fresh()
            _ = try await db.commit([.insert(collection: "items", document: Self.doc(marker, name: marker, qty: 0, body: "marker")),
                                     .delete(collection: "items", target: .key(.string(marker)))])
            let state = db.snapshot().state
            #expect(Self.contents(state) == model, "round \(round)")
            expectConsistent(state.collections["items"]!)
        }
        #expect(refused > 60)
        await db.close()
        db = try await Database.open(smallOptions(dir))
        #expect(Self.contents(db.snapshot().state) == model)
        expectConsistent(db.snapshot().state.collections["items"]!)
        await db.close()
    }

    /// Snapshots each reader of the P2 test keeps (each is compared with what it held when taken,
    /// at the end).
    static let keptMax = 150

    /// 8 writers commit pairs of documents (`-a` and `-b` in one transaction), and every third
    /// transaction fails after placing its pair in the head; meanwhile readers take snapshots
    /// and keep them. Every snapshot holds whole pairs only, and still holds exactly what it held
    /// when it was taken once all the writers are done.
    @Test func P2_statesReadersHoldNeverChangeWhileTheHeadIsChangedInPlace() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(Self.items))
        final class Writing: Sendable { let count = Atomic<Int>(8) }
        let writing = Writing()
        let kept = try await withThrowingTaskGroup(of: [(DatabaseState, [String: Document])].self) { group in
            for w in 0..<8 {
                group.addTask {
                    defer { writing.count.wrappingSubtract(1, ordering: .relaxed) }
                    for i in 0..<150 {
                        let id = "w\(w)-\(i)"
                        var ops: [WriteOperation] = [
                            .insert(collection: "items", document: Self.doc(id + "-a", name: id + "-a", qty: Int64(i), body: "pair")),
                            .insert(collection: "items", document: Self.doc(id + "-b", name: id + "-b", qty: Int64(i), body: "pair")),
                        ]
                        if i % 3 == 2 { ops.append(.delete(collection: "items", target: .key(.string("missing")))) }
                        do {
                            _ = try await db.commit(ops)
                            #expect(i % 3 != 2)
                        } catch {
                            #expect(i % 3 == 2)
                        }
                    }
                    return []
                }
            }
            for _ in 0..<2 {
                group.addTask {
                    // A snapshot every 2 ms, at most `keptMax`: the readers must not keep the
                    // cooperative pool from the writers (or from the suites running beside this one).
                    var kept: [(DatabaseState, [String: Document])] = []
                    while writing.count.load(ordering: .relaxed) > 0 && kept.count < Self.keptMax {
                        let state = db.snapshot().state
                        kept.append((state, Self.contents(state)))
                        try await Task.sleep(for: .milliseconds(2))
                    }
                    return kept
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(!kept.isEmpty)
        for (state, then) in kept {
            let now = Self.contents(state)
            #expect(now == then, "a snapshot at LSN \(state.lsn) changed after it was taken")
            for id in now.keys where id.hasSuffix("-a") {
                #expect(now[String(id.dropLast(2)) + "-b"] != nil, "half a transaction visible at LSN \(state.lsn)")
            }
            #expect(now.count % 2 == 0)
        }
        let last = db.snapshot().state
        #expect(Self.contents(last).count == 8 * 100 * 2)
        expectConsistent(last.collections["items"]!)
        await db.close()
    }
}
