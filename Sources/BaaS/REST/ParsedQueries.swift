// A bounded memory of parsed query strings (issue 19): the supabase clients send the same few
// query texts over and over (`select=*&id=eq.<key>` differs only by its key), and parsing one
// (form decoding, then each filter typed against the collection's schema) was 3% of a REST GET
// by key (perf). `PostgRESTQuery.parse` is a pure function of the raw query text and the
// collection's schema, so a hit answers exactly what parsing would.
//
// What it keeps: (collection, raw query) -> the schema it was parsed against and the parsed
// query. A hit needs the same schema (`==`, which is cheap for the same stored schema: Swift's
// collections compare their storage's identity first); a changed schema (a field added, an index
// dropped) parses again and replaces the entry. A query that fails to parse is never kept (its
// error is thrown again by parsing).
// Bound: two generations of at most `entriesMax` entries each; when the current one is full it
// becomes the previous one and the older is dropped (texts in use survive by being found in the
// previous generation and copied forward). A query text longer than `queryBytesMax` is parsed
// every time, never kept.

import Kernel
import Synchronization

final class ParsedQueries: Sendable {
    /// Entries per generation (two generations: at most twice this many parsed queries in memory).
    static let entriesMax = 512  // entries
    /// A longer query text is parsed every time, never kept (memory per entry bounded).
    static let queryBytesMax = 1_024  // bytes

    struct Key: Hashable, Sendable {
        let collection: String
        let query: String
    }

    private struct Entry: Sendable {
        let schema: CollectionSchema
        let parsed: PostgRESTQuery
    }

    private struct Generations {
        var current: [Key: Entry] = [:]
        var previous: [Key: Entry] = [:]
    }

    private let state = Mutex(Generations())

    /// The node's (RESTAPI's reads and writes).
    static let shared = ParsedQueries()

    /// `PostgRESTQuery.parse(raw, schema:)`, from memory when this text was parsed against this
    /// schema before.
    func parse(_ raw: String?, schema: CollectionSchema) throws -> PostgRESTQuery {
        guard let raw, raw.utf8.count <= Self.queryBytesMax else { return try PostgRESTQuery.parse(raw, schema: schema) }
        let key = Key(collection: schema.name, query: raw)
        let known = state.withLock { g -> Entry? in
            if let hit = g.current[key] { return hit }
            guard let old = g.previous[key] else { return nil }
            Self.insert(key, old, into: &g)
            return old
        }
        if let known, known.schema == schema { return known.parsed }
        let parsed = try PostgRESTQuery.parse(raw, schema: schema)
        let entry = Entry(schema: schema, parsed: parsed)
        state.withLock { Self.insert(key, entry, into: &$0) }
        return parsed
    }

    private static func insert(_ key: Key, _ entry: Entry, into g: inout Generations) {
        if g.current.count >= entriesMax, g.current[key] == nil {
            g.previous = g.current
            g.current = [:]
        }
        g.current[key] = entry
    }

    /// Whether this text of `collection` is held (tests).
    func holds(_ raw: String, collection: String) -> Bool {
        let key = Key(collection: collection, query: raw)
        return state.withLock { $0.current[key] != nil || $0.previous[key] != nil }
    }

    /// Parsed queries held (tests).
    var count: Int { state.withLock { $0.current.count + $0.previous.count } }
}
