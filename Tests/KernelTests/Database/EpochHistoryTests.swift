// The epoch history of a log (P1, A4): where each epoch begins, extended by the writer and by
// replay, carried in checkpoints (format 2; format 1 read as "unknown before its LSN"), cut with
// the log by rejoin, bounded by `EpochHistory.entriesMax`.

import Foundation
import Testing
@testable import Kernel

@Suite struct EpochHistoryTests {
    typealias Entry = EpochHistory.Entry

    func insert(_ db: Database, _ id: String) async throws -> UInt64 {
        try await db.commit(json(#"{"ops":[{"op":"insert","collection":"items","doc":{"id":"\#(id)","name":"item \#(id)","qty":1}}]}"#)).lsn
    }

    func history(_ db: Database) -> [Entry] { db.snapshot().state.epochHistory.entries }

    @Test("P1/A4: the writer and replay extend the epoch history; it survives checkpoints, reopening, shipping and installing")
    func extendedOnReplayAndKeptAcrossCheckpointsAndReopen() async throws {
        let dir = TemporaryDirectory(), replicaDir = TemporaryDirectory()
        let options = smallOptions(dir)
        let db = try await Database.open(options)  // epoch 1 at LSN 1
        _ = try await db.createCollection(json(DatabaseTests.items))
        _ = try await insert(db, "a")
        let promoted = try await db.advanceEpoch(to: 3)  // epochs need not be consecutive
        _ = try await insert(db, "b")
        let expected = [Entry(epoch: 1, startLSN: 1), Entry(epoch: 3, startLSN: promoted.lsn + 1)]
        #expect(history(db) == expected)
        // A replica fed the records builds the same history by replay.
        var replicaOptions = smallOptions(replicaDir)
        replicaOptions.role = .replica
        let replica = try await Database.open(replicaOptions)
        _ = try replica.applyReplicated(try db.records(from: 1, maxBytes: 1 << 20))
        #expect(await replica.waitApplied(db.durablePosition.lsn, timeout: .seconds(5)))
        #expect(history(replica) == expected)
        // Reopened from a checkpoint (no record before it replayed), and from the WAL after it.
        _ = try await db.checkpoint()
        let fifth = try await db.advanceEpoch(to: 5)
        await db.close()
        let reopened = try await Database.open(options)
        let all = expected + [Entry(epoch: 5, startLSN: fifth.lsn + 1)]
        #expect(history(reopened) == all)
        let checkpointed = try CheckpointFile.decode(try CheckpointFile.encode(reopened.snapshot().state), name: "test")
        #expect(checkpointed.epochHistory.entries == all)
        // A shipped checkpoint carries it to a replica too far behind.
        let shipped = try await reopened.checkpointForShipping()
        try await replica.install(checkpoint: shipped.bytes)
        #expect(history(replica) == all)
        await replica.close()
        await reopened.close()
    }

    @Test("A4: rejoin's truncateHistory cuts the epoch history with the log, checkpoints past the fork included")
    func truncatedWithTheLogOnRejoin() async throws {
        let dir = TemporaryDirectory()
        let options = smallOptions(dir)
        let db = try await Database.open(options)
        _ = try await db.createCollection(json(DatabaseTests.items))
        _ = try await insert(db, "kept")
        let fork = db.durablePosition
        _ = try await db.checkpoint()
        _ = try await db.advanceEpoch(to: 2)
        _ = try await insert(db, "cut")
        _ = try await db.checkpoint()  // holds epoch 2 in its history: removed by the cut
        #expect(history(db).map(\.epoch) == [1, 2])
        await db.close()
        _ = try Database.truncateHistory(options, after: fork)
        let reopened = try await Database.open(options)
        #expect(history(reopened) == [Entry(epoch: 1, startLSN: 1)])
        // The log goes on from the fork: a later epoch starts right after it.
        _ = try await reopened.advanceEpoch(to: 3)
        #expect(history(reopened) == [Entry(epoch: 1, startLSN: 1), Entry(epoch: 3, startLSN: fork.lsn + 1)])
        await reopened.close()
        #expect(EpochHistory(entries: [Entry(epoch: 1, startLSN: 1), Entry(epoch: 2, startLSN: 9)])!.truncated(after: 8).entries
                == [Entry(epoch: 1, startLSN: 1)])
    }

    @Test("P1/A4: the history keeps the last entriesMax epochs; older LSNs become unknown, never wrong")
    func boundedToTheLastEpochs() {
        var history = EpochHistory()
        let total = EpochHistory.entriesMax + 50
        for n in 1...total { history.extend(epoch: UInt64(n), at: UInt64(n) * 10) }  // epoch n from LSN 10n
        #expect(history.entries.count == EpochHistory.entriesMax)
        #expect(history.entries.first == Entry(epoch: 51, startLSN: 510))
        let last = UInt64(total) * 10 + 5
        #expect(history.epoch(at: 509, last: last) == nil)
        #expect(history.epoch(at: 510, last: last) == 51)
        #expect(history.epoch(at: 519, last: last) == 51)
        #expect(history.epoch(at: 520, last: last) == 52)
        #expect(history.epoch(at: last, last: last) == UInt64(total))
        #expect(history.epoch(at: last + 1, last: last) == nil)  // past the log's end
        #expect(history.epoch(at: 0, last: last) == nil)
        // Records of the current epoch, an older epoch or an LSN not past the last start add nothing.
        let before = history
        history.extend(epoch: UInt64(total), at: last)
        history.extend(epoch: 3, at: last + 1)
        #expect(history == before)
        // Invariants of a given history (a checkpoint's): increasing, within range, bounded.
        #expect(EpochHistory(entries: [Entry(epoch: 2, startLSN: 5), Entry(epoch: 2, startLSN: 9)]) == nil)
        #expect(EpochHistory(entries: [Entry(epoch: 2, startLSN: 5), Entry(epoch: 3, startLSN: 5)]) == nil)
        #expect(EpochHistory(entries: [Entry(epoch: 2, startLSN: 0)]) == nil)
        #expect(EpochHistory(entries: Array(repeating: Entry(epoch: 1, startLSN: 1), count: EpochHistory.entriesMax + 1)) == nil)
    }

    /// A checkpoint file of `version` with the given history section (nil: none) before the
    /// collections of `state`, hashed like the real ones.
    func checkpoint(_ state: DatabaseState, version: UInt32, history: [UInt8]?) throws -> [UInt8] {
        let real = try CheckpointFile.encode(state)
        var reader = ByteReader(Array(real[40..<48]))
        let plain = try Compression.decompress(Array(real[CheckpointFile.headerBytes...]), expectedLength: Int(reader.read() as UInt64))
        let collections = Array(plain[(4 + CheckpointFile.historyEntryBytes * state.epochHistory.entries.count)...])
        let compressed = try Compression.compress((history ?? []) + collections)
        var header = ByteWriter()
        header.append(CheckpointFile.magic)
        header.append(version)
        header.append(UInt32(0))
        header.append(state.position.lsn)
        header.append(state.position.checksum)
        header.append(state.epoch)
        header.append(UInt64((history ?? []).count + collections.count))
        header.append(UInt64(compressed.count))
        header.append(XXH64.hash(compressed))
        header.append(XXH64.hash(header.bytes))
        return header.bytes + compressed
    }

    @Test("D2/A4: a format 1 checkpoint is read as history unknown before its LSN; a bad history is corruption")
    func formatOneIsReadAndBadHistoriesAreRefused() async throws {
        let dir = TemporaryDirectory()
        let db = try await Database.open(smallOptions(dir))
        _ = try await db.createCollection(json(DatabaseTests.items))
        _ = try await db.advanceEpoch(to: 4)
        _ = try await insert(db, "x")
        let state = db.snapshot().state
        await db.close()
        let old = try CheckpointFile.decode(try checkpoint(state, version: 1, history: nil), name: "v1")
        #expect(old.epochHistory.entries == [Entry(epoch: 4, startLSN: state.lsn)])
        #expect(old.epochHistory.epoch(at: state.lsn - 1, last: state.lsn) == nil)
        #expect(old.collections.keys.sorted() == ["items"] && old.collections["items"]?.count == 1)
        func section(_ entries: [(UInt64, UInt64)], count: UInt32? = nil) -> [UInt8] {
            var writer = ByteWriter()
            writer.append(count ?? UInt32(entries.count))
            for (epoch, start) in entries { writer.append(epoch); writer.append(start) }
            return writer.bytes
        }
        let sound = try CheckpointFile.decode(try checkpoint(state, version: 2, history: section([(1, 1), (4, 3)])), name: "v2")
        #expect(sound.epochHistory.entries == [Entry(epoch: 1, startLSN: 1), Entry(epoch: 4, startLSN: 3)])
        for bad in [section([(4, 3), (1, 1)]), section([(1, 1), (5, 3)]), section([(1, state.lsn + 1)]),
                    section([(1, 1)], count: 1_000_000), section([(1, 1)], count: 2)] {
            #expect(throws: AeroError.self) { _ = try CheckpointFile.decode(try checkpoint(state, version: 2, history: bad), name: "bad") }
        }
        #expect(throws: AeroError.self) { _ = try CheckpointFile.decode(try checkpoint(state, version: 3, history: section([])), name: "v3") }
    }
}
