import Foundation
import Testing
import Kernel
@testable import BaaS

/// OBS1: the request ring (RequestRing.swift) is bounded in records and bytes, cuts long text on a
/// character boundary, and keeps queries exactly as the stdout request log redacts them.
@Suite struct RequestRingTests {
    private func record(_ ring: RequestRing, _ i: Int, path: String? = nil, query: String = "", status: Int = 200) {
        ring.record(micros: Int64(i), requestID: "id\(i)", method: "GET", path: path ?? "/rest/v1/t\(i)", query: query, status: status, millis: 1.5)
    }

    @Test func OBS1_theRingKeepsTheNewestEntriesMaxRecords() {
        let ring = RequestRing()
        for i in 0..<(RequestRing.entriesMax + 500) { record(ring, i) }
        let usage = ring.usage
        #expect(usage.count == RequestRing.entriesMax)
        #expect(usage.recorded == Int64(RequestRing.entriesMax + 500))
        var all = RequestRing.Filter()
        all.limit = RequestRing.entriesMax
        let kept = ring.records(all)
        #expect(kept.count == RequestRing.entriesMax)
        #expect(kept.first?.path == "/rest/v1/t\(RequestRing.entriesMax + 499)")  // newest first
        #expect(kept.last?.path == "/rest/v1/t500")  // the 500 oldest were dropped
        #expect(ring.records().count == RequestRing.listLimitDefault)
    }

    @Test func OBS1_theRingIsBoundedInBytesWhateverThePaths() {
        let ring = RequestRing()
        let longPath = "/storage/v1/object/b/" + String(repeating: "x", count: 5_000)
        let longQuery = "select=" + String(repeating: "y", count: 5_000)
        for i in 0..<RequestRing.entriesMax { record(ring, i, path: longPath + "\(i)", query: longQuery) }
        let usage = ring.usage
        #expect(usage.bytes <= RequestRing.bytesMax)
        #expect(usage.count < RequestRing.entriesMax)  // the byte bound evicted first
        var all = RequestRing.Filter()
        all.limit = RequestRing.entriesMax
        let kept = ring.records(all)
        #expect(kept.count == usage.count)
        #expect(kept.allSatisfy { $0.path.utf8.count <= RequestRing.pathBytesMax && $0.path.hasSuffix("...") })
        #expect(kept.allSatisfy { $0.query.utf8.count <= RequestRing.queryBytesMax && $0.query.hasSuffix("...") })
        // The sum the ring keeps is the sum of what it holds.
        #expect(kept.reduce(0) { $0 + $1.bytes } == usage.bytes)
    }

    @Test func longTextIsCutOnACharacterBoundary() {
        let ring = RequestRing()
        record(ring, 1, path: "/" + String(repeating: "é", count: 600))  // 2 bytes each
        let path = ring.records().first!.path
        #expect(path.utf8.count <= RequestRing.pathBytesMax)
        #expect(path.hasSuffix("..."))
        #expect(!path.contains("\u{FFFD}"))
        #expect(path.dropFirst().dropLast(3).allSatisfy { $0 == "é" })
    }

    @Test func OBS1_queriesAreRedactedAsTheStdoutLogWritesThem() {
        // Whole query: email links, the realtime socket, an OAuth callback.
        #expect(RequestRedaction.query(path: "/auth/v1/verify", query: "token=abc&type=signup") == "(redacted)")
        #expect(RequestRedaction.query(path: "/realtime/v1/websocket", query: "apikey=eyJ.k.s&vsn=1.0.0") == "(redacted)")
        #expect(RequestRedaction.query(path: "/auth/v1/callback", query: "code=c0de&state=s") == "(redacted)")
        // Secret parameters anywhere, whatever their case or percent-encoding; the rest as sent.
        #expect(RequestRedaction.query(path: "/storage/v1/object/sign/b/a.png", query: "token=eyJ.secret") == "token=(redacted)")
        #expect(RequestRedaction.query(path: "/rest/v1/t", query: "select=*&apikey=KEY&id=eq.1") == "select=*&apikey=(redacted)&id=eq.1")
        #expect(RequestRedaction.query(path: "/rest/v1/t", query: "api%6Bey=KEY") == "api%6Bey=(redacted)")
        #expect(RequestRedaction.query(path: "/x", query: "X-Amz-Credential=AK%2F20260101&X-Amz-Signature=abc&X-Amz-Expires=60")
                == "X-Amz-Credential=(redacted)&X-Amz-Signature=(redacted)&X-Amz-Expires=60")
        #expect(RequestRedaction.query(path: "/rest/v1/t", query: "Access_Token=t&refresh_token=r") == "Access_Token=(redacted)&refresh_token=(redacted)")
        #expect(RequestRedaction.query(path: "/rest/v1/t", query: "select=id,token&order=id") == "select=id,token&order=id")
        #expect(RequestRedaction.query(path: "/rest/v1/t", query: nil) == "")
        // What the ring keeps is what the log line holds (FrontMiddleware passes the redacted query).
        let ring = RequestRing()
        let q = RequestRedaction.query(path: "/storage/v1/object/sign/b/a.png", query: "token=SECRET-TOKEN&download=")
        record(ring, 1, path: "/storage/v1/object/sign/b/a.png", query: q)
        #expect(!ring.records().contains { $0.query.contains("SECRET-TOKEN") })
    }

    @Test func filtersAreRangedAndMatch() throws {
        let ring = RequestRing()
        record(ring, 1, path: "/rest/v1/a", status: 200)
        record(ring, 2, path: "/rest/v1/b", status: 404)
        record(ring, 3, path: "/auth/v1/token", status: 400)
        record(ring, 4, path: "/rest/v1/a", status: 201)
        func paths(_ limit: String?, _ status: String?, _ prefix: String?) throws -> [String] {
            ring.records(try RequestRing.Filter.parse(limit: limit, status: status, pathPrefix: prefix)).map(\.path)
        }
        #expect(try paths(nil, "404", nil) == ["/rest/v1/b"])
        #expect(try paths(nil, "4xx", nil) == ["/auth/v1/token", "/rest/v1/b"])
        #expect(try paths(nil, "2xx", "/rest/v1/a") == ["/rest/v1/a", "/rest/v1/a"])
        #expect(try paths("1", nil, "/rest/") == ["/rest/v1/a"])
        for (limit, status, prefix) in [("0", nil, nil), ("1001", nil, nil), ("-1", nil, nil), ("9223372036854775808", nil, nil),
                                        (nil, "99", nil), (nil, "600", nil), (nil, "6xx", nil), (nil, "xx", nil), (nil, "4XX", nil),
                                        (nil, nil, "rest"), (nil, nil, "/" + String(repeating: "a", count: RequestRing.pathBytesMax))] as [(String?, String?, String?)] {
            #expect(throws: AeroError.self) { _ = try RequestRing.Filter.parse(limit: limit, status: status, pathPrefix: prefix) }
        }
    }
}
