// fuzz-modules: Kernel
// fuzz-options: -max_len=20000
//
// WAL records (Sources/Kernel/WAL/WALFormat.swift) and their payloads
// (Sources/Kernel/MVCC/TransactionRecord.swift). Input byte 0 picks what the rest is:
//   0 mod 3: raw bytes of a segment: record decode at every aligned offset, the shipped-record
//            decoder, the segment header and recovery's later-batch scan;
//   1 mod 3: byte 1 is a record type, the rest its payload: the harness frames it as a valid
//            record (right checksum, next LSN), decodes it back (must equal) and replays it on a
//            small database state (decode or AERO_* error, never a trap);
//   2 mod 3: a JSON document as a client would send it: if the write path's check
//            (TransactionRecord.checkStorable) accepts it, the transaction record holding it as
//            an insert and as an update must decode to the same changes ("acknowledged implies
//            replayable", issue 12 item 3).

@testable import Kernel

private let state: DatabaseState = {
    do {
        let schema = try CollectionSchema.parse(try JSON.parse("""
            {"name":"items","primary_key":"id","fields":{"id":{"type":"int"},"name":{"type":"text","nullable":true},
             "doc":{"type":"json","nullable":true}},"indexes":[{"fields":["name"],"unique":true}]}
            """))
        let data = try CollectionData(schema: schema, documents: [
            ["id": .int(1), "name": .string("one"), "doc": .null], ["id": .int(2), "name": .string("two"), "doc": .array([])],
        ])
        return DatabaseState(position: LogPosition(lsn: 7, checksum: 0xfeed), epoch: 1, collections: ["items": data])
    } catch {
        fatalError("fixture: \(error)")
    }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ data: UnsafePointer<UInt8>, _ size: Int) {
    guard size >= 1 else { return }
    let rest = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 3 {
    case 0: raw(rest)
    case 1: framed(rest)
    default: document(rest)
    }
}

private func raw(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            if case .record(let record, let recordSize) = WALFormat.decodeRecord(buffer, at: offset) {
                precondition(recordSize >= WALFormat.recordHeaderBytes + record.payload.count, "record size too small")
            }
            offset += WALFormat.alignmentBytes
        }
        _ = WALFormat.decodeSegmentHeader(buffer)
    }
    expectAero { _ = try WALRecord.decode(bytes) }
    _ = WALScan.laterBatch(bytes, from: 0, after: 0)
}

private func framed(_ bytes: [UInt8]) {
    guard let typeByte = bytes.first, let type = RecordType(rawValue: typeByte) else { return }
    let payload = Array(bytes.dropFirst())
    let lsn = state.position.lsn + 1
    let (encoded, checksum) = WALFormat.encodeRecord(type: type, lsn: lsn, epoch: 2, batchStart: lsn, timestampMicros: 1,
                                                     previousChecksum: state.position.checksum, payload: payload)
    let record: WALRecord
    do {
        record = try WALRecord.decode(encoded)
    } catch {
        fatalError("a freshly encoded record does not decode: \(error)")
    }
    precondition(record.checksum == checksum && record.payload == payload && record.type == type, "record round trip")
    var copy = state
    expectAero { try copy.replay(record) }
    if type == .transaction, let changes = try? TransactionRecord.decodeChanges(payload, lsn: lsn) {
        let again = TransactionRecord.encode(changes)
        guard let decoded = try? TransactionRecord.decodeChanges(again, lsn: lsn) else {
            fatalError("re-encoded changes do not decode")
        }
        precondition(decoded == changes, "changes round trip")
    }
    if type == .schema, let change = try? TransactionRecord.decodeSchemaChange(payload, lsn: lsn) {
        guard let decoded = try? TransactionRecord.decodeSchemaChange(TransactionRecord.encode(change), lsn: lsn) else {
            fatalError("a re-encoded schema change does not decode")
        }
        precondition(decoded == change, "schema change round trip")
    }
}

private func document(_ bytes: [UInt8]) {
    guard case .object(var doc)? = try? JSON.parse(bytes) else { return }
    doc["id"] = .int(3)
    do {
        try TransactionRecord.checkStorable(doc, collection: "items")
    } catch {
        return  // refused before anything is logged: nothing to replay
    }
    let changes = [DocumentChange(collection: "items", key: .int(3), before: nil, after: doc),
                   DocumentChange(collection: "items", key: .int(3), before: doc, after: doc)]
    let payload = TransactionRecord.encode(changes)
    do {
        let decoded = try TransactionRecord.decodeChanges(payload, lsn: 1)
        precondition(decoded == changes, "an acknowledged document changes in the record")
    } catch {
        fatalError("acknowledged implies replayable: a document the write path accepts does not decode from its record: \(error)")
    }
}

private func expectAero(_ body: () throws -> Void) {
    do {
        try body()
    } catch is AeroError {
    } catch {
        fatalError("threw a non-AeroError: \(error)")
    }
}
