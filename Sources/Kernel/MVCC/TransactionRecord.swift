// The payloads of WAL records written by the Database, and their decoding.
//
// Layout: JSON text (the kernel's own deterministic encoder), one object per record.
//   transaction (RecordType.transaction): {"changes":[{"c":"items","k":<key>,"b":<before>|absent,"a":<after>|absent}, ...]}
//     - `a` absent = the document was deleted; `b` absent = it did not exist before.
//     - Changes are the resolved effects of the transaction (defaults, now(), cascades applied),
//       so replay is deterministic and never consults the clock or re-runs validation (R1).
//   schema (RecordType.schema): {"create":<schema>} | {"replace":<schema>} | {"drop":"<name>"}
//     | {"add_field":{"collection":..,"name":..,"field":<field>,"fill":<value>}}
//     | {"drop_field":{"collection":..,"name":..}}
//   epoch (RecordType.epoch): {"epoch":N}
// Invariants: one record = one atomic transaction (C1); a record that fails to decode after its
// checksum passed is a bug or corruption and stops recovery with AERO_WAL_CORRUPT (D2).
//
// Acknowledged implies replayable (AR1 in docs/INVARIANTS.md): the decoder is
// `JSON.parse`, bounded by `KernelLimits.jsonDepthMax`; the layouts above wrap a document in
// `framing.document` levels and a field default in `framing.fieldDefault` levels, both at most
// `KernelLimits.recordFramingDepth`. The write path refuses any document (`checkStorable`) or
// default (`CollectionSchema.parseField`) deeper than `documentDepthMax = jsonDepthMax -
// recordFramingDepth`, so every payload the writer logs decodes. Checkpoint lines frame values
// no deeper (CheckpointFile). Tests: TransactionRecordTests.

/// One document's change inside a committed transaction.
public struct DocumentChange: Sendable, Equatable {
    public let collection: String
    public let key: JSONValue
    public let before: Document?
    public let after: Document?

    public init(collection: String, key: JSONValue, before: Document?, after: Document?) {
        precondition(before != nil || after != nil, "a change has a before or an after image")
        self.collection = collection
        self.key = key
        self.before = before
        self.after = after
    }

    public enum Kind: String, Sendable { case insert, update, delete }

    public var kind: Kind { before == nil ? .insert : (after == nil ? .delete : .update) }
}

/// A schema change carried by a schema record.
public enum SchemaChange: Sendable, Equatable {
    case create(CollectionSchema)
    case replace(CollectionSchema)
    case drop(String)
    /// Adds a field; existing documents get `fill` (its default, resolved once, or null).
    case addField(collection: String, name: String, field: FieldSchema, fill: JSONValue)
    case dropField(collection: String, name: String)
}

/// A committed transaction as the change stream delivers it (replication and realtime feed on it).
public struct CommittedTransaction: Sendable {
    public let lsn: UInt64
    public let epoch: UInt64
    public let timestampMicros: Int64
    public let changes: [DocumentChange]
    public let schemaChange: SchemaChange?
}

enum TransactionRecord {
    /// Levels of framing around stored values in these payloads (see the layout above):
    /// `{"changes":[{"a":DOC}]}` puts a document under 3 levels; `{"create":{"fields":{"f":
    /// {"default":V}}}}` (and a checkpoint's schema line) puts a default under 4.
    static let framing = (document: 3, fieldDefault: 4)

    /// The write path's check of a document before it joins a record: at most
    /// `documentDepthMax` deep, so the record it goes into decodes (checked before encoding,
    /// which recurses); its size is checked on the encoding (`checkSize`).
    /// Also refuses a float that is NaN or infinite (a value a front end computed, never one
    /// parsed from JSON): JSON has no such number, the encoder writes `null`, so replay would
    /// load another document than the one acknowledged.
    static func checkDepth(_ document: Document, collection: String) throws {
        let depth = JSONValue.object(document).nestingDepth(cappedAt: KernelLimits.documentDepthMax + 1)
        guard depth <= KernelLimits.documentDepthMax else {
            throw AeroError(.documentTooLarge, "\(collection): a document may nest at most \(KernelLimits.documentDepthMax) levels deep (the document itself is one level); this one nests deeper")
        }
        guard allFloatsFinite(.object(document)) else {
            throw AeroError(.schemaViolation, "\(collection): a document holds a float that is NaN or infinite, which JSON cannot represent", invariant: "S1")
        }
    }

    /// Depth-bounded by the check above (called only on values at most documentDepthMax deep).
    private static func allFloatsFinite(_ value: JSONValue) -> Bool {
        switch value {
        case .float(let d): return d.isFinite
        case .array(let items): return items.allSatisfy(allFloatsFinite)
        case .object(let fields): return fields.values.allSatisfy(allFloatsFinite)
        default: return true
        }
    }

    /// Both checks of one document on its own (what the write path applies to each after image).
    static func checkStorable(_ document: Document, collection: String) throws {
        try checkDepth(document, collection: collection)
        try checkSize(documentBytes: JSON.encode(.object(document)).count, payloadBytes: 0, collection: collection)
    }

    static func checkSize(documentBytes: Int, payloadBytes: Int, collection: String) throws {
        guard documentBytes <= KernelLimits.documentBytesMax else {
            throw AeroError(.documentTooLarge, "\(collection): a document is limited to \(KernelLimits.documentBytesMax) bytes encoded")
        }
        guard payloadBytes <= KernelLimits.transactionBytesMax else {
            throw AeroError(.transactionTooLarge, "a transaction record is limited to \(KernelLimits.transactionBytesMax) bytes")
        }
    }

    static func encode(_ changes: [DocumentChange]) -> [UInt8] {
        var payload = Payload()
        for change in changes { _ = payload.append(change) }
        return payload.take()
    }

    /// A transaction payload built one change at a time, as the writer records them: its size
    /// is known after every change (so a transaction is refused as soon as it passes
    /// `transactionBytesMax`, not after all its work), and nothing is encoded twice. The bytes
    /// are exactly `JSON.encode` of the layout above (keys in UTF-8 order: a, b, c, k).
    struct Payload {
        static let prefix = Array(#"{"changes":["#.utf8), suffix = Array("]}".utf8)
        /// The prefix, then the changes so far. Each change first makes room for its estimated
        /// size (`estimatedBytes`), growing the buffer at least twofold when it must grow, so a
        /// one-change transaction is encoded into one allocation sized for it (a fixed start of
        /// 1 KiB grew once, to 2 KiB, for a 1 KiB document, and was then copied again to its
        /// exact size).
        private var encoded: [UInt8] = Payload.prefix
        private var count = 0

        var byteCount: Int { encoded.count + Self.suffix.count }

        /// The payload, ending the building: the buffer itself when its spare capacity is at
        /// most `spareBytesMax` (records are kept for replication and recovery, so a large
        /// spare is not), else a copy of its exact size.
        mutating func take() -> [UInt8] {
            encoded += Self.suffix
            let taken = encoded
            encoded = []
            guard taken.capacity - taken.count > Self.spareBytesMax(taken.count) else { return taken }
            var exact: [UInt8] = []
            exact.reserveCapacity(taken.count)
            exact += taken
            return exact
        }

        /// Spare capacity a taken payload may keep: an eighth of its bytes plus 64.
        static func spareBytesMax(_ bytes: Int) -> Int { bytes / 8 + 64 }

        /// Room asked for a change before it is encoded: `CollectionData.bytes(of:)` (roughly
        /// the encoded size) of its images and key, its framing, a sixteenth more and 32 bytes.
        /// An underestimate (long numbers, escapes) only costs a growth, never a wrong byte.
        static func estimatedBytes(_ change: DocumentChange) -> Int {
            var bytes = 32 + change.collection.utf8.count + CollectionData.bytes(of: change.key)
            if let after = change.after { bytes += 6 + CollectionData.bytes(of: .object(after)) }
            if let before = change.before { bytes += 6 + CollectionData.bytes(of: .object(before)) }
            return bytes + bytes / 16
        }

        private mutating func reserve(_ change: DocumentChange) {
            let needed = encoded.count + Self.estimatedBytes(change) + Self.suffix.count
            guard encoded.capacity < needed else { return }
            encoded.reserveCapacity(count == 0 ? needed : max(needed, 2 * encoded.capacity))
        }

        /// Appends a change; returns the encoded size of its after image (0 when deleted).
        mutating func append(_ change: DocumentChange) -> Int {
            reserve(change)
            if count > 0 { encoded.append(UInt8(ascii: ",")) }
            count += 1
            encoded.append(UInt8(ascii: "{"))
            var afterBytes = 0
            if let after = change.after {
                encoded.append(contentsOf: #""a":"#.utf8)
                let start = encoded.count
                JSON.encode(.object(after), into: &encoded)
                afterBytes = encoded.count - start
                encoded.append(UInt8(ascii: ","))
            }
            if let before = change.before {
                encoded.append(contentsOf: #""b":"#.utf8)
                JSON.encode(.object(before), into: &encoded)
                encoded.append(UInt8(ascii: ","))
            }
            encoded.append(contentsOf: #""c":"#.utf8)
            JSON.encodeString(change.collection, into: &encoded)
            encoded.append(contentsOf: #","k":"#.utf8)
            JSON.encode(change.key, into: &encoded)
            encoded.append(UInt8(ascii: "}"))
            return afterBytes
        }
    }

    static func decodeChanges(_ payload: [UInt8], lsn: UInt64) throws -> [DocumentChange] {
        if let changes = payload.withUnsafeBufferPointer({ decodeChangesDirectly($0) }) { return changes }
        return try decodeChangesGenerically(payload, lsn: lsn)
    }

    /// The general decoding (the reference): `JSON.parse`, then the layout read from the tree.
    static func decodeChangesGenerically(_ payload: [UInt8], lsn: UInt64) throws -> [DocumentChange] {
        guard case .array(let items)? = try parse(payload, lsn: lsn)["changes"] else { throw corrupt(lsn) }
        return try items.map { item in
            guard case .string(let c)? = item["c"], let k = item["k"] else { throw corrupt(lsn) }
            let before = item["b"]?.objectValue, after = item["a"]?.objectValue
            guard before != nil || after != nil else { throw corrupt(lsn) }
            return DocumentChange(collection: c, key: k, before: before, after: after)
        }
    }

    /// The transaction layout read straight off the bytes with the same parser (recovery's hot
    /// path, issue 19): no tree of the whole payload, no dictionary per change. Returns nil for
    /// anything but that layout exactly (a root key other than "changes", a change key other
    /// than a, b, c or k or one spelled with escapes, a repeated key, an `a` or `b` that is not an
    /// object, a missing `c`, `k` or image, invalid JSON); the caller then decodes generically,
    /// which is authoritative, so both give the same changes or the same error. Values are
    /// parsed at the depth the generic parse reaches them (document at 3), so the depth limit
    /// (AR1) is the same. TransactionRecordTests compares both on random and malformed payloads.
    static func decodeChangesDirectly(_ buffer: UnsafeBufferPointer<UInt8>) -> [DocumentChange]? {
        var p = JSONParser(buffer)
        func take(_ byte: UInt8) -> Bool {
            p.skipWhitespace()
            guard p.position < buffer.count, buffer[p.position] == byte else { return false }
            p.position += 1
            return true
        }
        /// A one-letter key without escapes ("a"), returned as its byte.
        func shortKey() -> UInt8? {
            p.skipWhitespace()
            let i = p.position
            guard i + 2 < buffer.count, buffer[i] == 0x22, buffer[i + 2] == 0x22 else { return nil }
            p.position += 3
            return buffer[i + 1]
        }
        guard take(UInt8(ascii: "{")) else { return nil }
        p.skipWhitespace()
        guard p.position < buffer.count, buffer[p.position] == 0x22, (try? p.parseString()) == "changes",
              take(UInt8(ascii: ":")), take(UInt8(ascii: "[")) else { return nil }
        var changes: [DocumentChange] = []
        if !take(UInt8(ascii: "]")) {
            while true {
                guard take(UInt8(ascii: "{")) else { return nil }
                var after: Document?, before: Document?, collection: String?, key: JSONValue?
                while true {
                    guard let name = shortKey(), take(UInt8(ascii: ":")) else { return nil }
                    p.skipWhitespace()
                    guard let value = try? p.parseValue(depth: 3) else { return nil }
                    switch name {
                    case UInt8(ascii: "a"):
                        guard after == nil, case .object(let doc) = value else { return nil }
                        after = doc
                    case UInt8(ascii: "b"):
                        guard before == nil, case .object(let doc) = value else { return nil }
                        before = doc
                    case UInt8(ascii: "c"):
                        guard collection == nil, case .string(let name) = value else { return nil }
                        collection = name
                    case UInt8(ascii: "k"):
                        guard key == nil else { return nil }
                        key = value
                    default:
                        return nil
                    }
                    if take(UInt8(ascii: ",")) { continue }
                    if take(UInt8(ascii: "}")) { break }
                    return nil
                }
                guard let collection, let key, before != nil || after != nil else { return nil }
                changes.append(DocumentChange(collection: collection, key: key, before: before, after: after))
                if take(UInt8(ascii: ",")) { continue }
                if take(UInt8(ascii: "]")) { break }
                return nil
            }
        }
        guard take(UInt8(ascii: "}")) else { return nil }
        p.skipWhitespace()
        return p.position == buffer.count ? changes : nil
    }

    static func encode(_ change: SchemaChange) -> [UInt8] {
        switch change {
        case .create(let s): return JSON.encode(.object(["create": s.json]))
        case .replace(let s): return JSON.encode(.object(["replace": s.json]))
        case .drop(let name): return JSON.encode(.object(["drop": .string(name)]))
        case .addField(let c, let name, let field, let fill):
            return JSON.encode(.object(["add_field": .object(["collection": .string(c), "name": .string(name),
                                                              "field": field.json, "fill": fill])]))
        case .dropField(let c, let name):
            return JSON.encode(.object(["drop_field": .object(["collection": .string(c), "name": .string(name)])]))
        }
    }

    static func decodeSchemaChange(_ payload: [UInt8], lsn: UInt64) throws -> SchemaChange {
        let root = try parse(payload, lsn: lsn)
        if let s = root["create"] { return .create(try CollectionSchema.parse(s)) }
        if let s = root["replace"] { return .replace(try CollectionSchema.parse(s)) }
        if case .string(let name)? = root["drop"] { return .drop(name) }
        if let add = root["add_field"], case .string(let c)? = add["collection"], case .string(let name)? = add["name"],
           let field = add["field"], let fill = add["fill"] {
            return .addField(collection: c, name: name, field: try CollectionSchema.parseField(name, field, isPrimaryKey: false),
                             fill: fill)
        }
        if let drop = root["drop_field"], case .string(let c)? = drop["collection"], case .string(let name)? = drop["name"] {
            return .dropField(collection: c, name: name)
        }
        throw corrupt(lsn)
    }

    static func encodeEpoch(_ epoch: UInt64) -> [UInt8] {
        JSON.encode(.object(["epoch": .int(Int64(epoch))]))
    }

    private static func parse(_ payload: [UInt8], lsn: UInt64) throws -> JSONValue {
        do {
            return try JSON.parse(payload)
        } catch {
            throw corrupt(lsn, because: "\(error)")
        }
    }

    static func corrupt(_ lsn: UInt64, because reason: String? = nil) -> AeroError {
        AeroError(.walCorrupt, "record at LSN \(lsn) passed its checksum but its payload does not decode"
                  + (reason.map { " (\($0))" } ?? ""), invariant: "D2")
    }
}
