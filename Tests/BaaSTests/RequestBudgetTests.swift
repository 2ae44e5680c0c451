import Foundation
import Testing
import Kernel
@testable import BaaS

/// The request budget (RESTLimits.swift, Q1 for a whole request): queries are planned with the
/// remaining rows as their scan bound and refused before they run; queries and response bytes
/// are counted; a query past the node's own bound keeps its AERO_QUERY_UNBOUNDED advice.
@Suite struct RequestBudgetTests {
    private func database(rows: Int) async throws -> (Database, String) {
        let directory = NSTemporaryDirectory() + "aerodb-budget-\(UUID().uuidString)"
        var options = KernelOptions(dataDirectory: directory)
        options.walSegmentBytes = 1 << 20
        options.checkpointEveryWALBytes = 0
        options.query.scanRowsMax = 500
        let db = try await Database.open(options)
        _ = try await db.createCollection(try JSON.parse(#"{"name":"fc","fields":{"id":{"type":"int"},"n":{"type":"int"}}}"#))
        _ = try await db.commit((0..<rows).map { .insert(collection: "fc", document: ["id": .int(Int64($0)), "n": .int(Int64($0 % 7))]) })
        return (db, directory)
    }

    private func budgetCode(_ body: () throws -> Void) -> AeroError.Code? {
        do { try body(); return nil } catch let error as AeroError { return error.code } catch { return .internalError }
    }

    @Test func rowsAreChargedAndAQueryThatCouldOverrunIsRefusedBeforeItRuns() async throws {
        let (db, directory) = try await database(rows: 80)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let snapshot = db.snapshot()
        let budget = RequestBudget(options: db.options.query, rowsVisitedMax: 0)  // raised to scan_rows_max (500)
        #expect(budget.rowsVisitedMax == 500)
        let scan = Query(collection: "fc", filter: .compare(field: "n", op: .eq, value: .int(3)))
        for _ in 0..<6 { _ = try budget.query(scan, on: snapshot) }  // 6 full scans of 80 rows
        #expect(budget.rowsVisited == 480 && budget.subQueries == 6)
        #expect(budgetCode { _ = try budget.query(scan, on: snapshot) } == .queryBudget)
        #expect(budget.rowsVisited == 480)  // refused at planning: nothing more was examined
        #expect(budget.rowsVisited <= budget.rowsVisitedMax)
        await db.close()
    }

    @Test func queriesAndResponseBytesAreCounted() async throws {
        let (db, directory) = try await database(rows: 3)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let snapshot = db.snapshot()
        let budget = RequestBudget(options: db.options.query, subQueriesMax: 3, responseBytesMax: 100)
        _ = try budget.document("fc", key: .int(1), on: snapshot)
        _ = try budget.query(Query(collection: "fc"), on: snapshot)
        _ = try budget.document("fc", key: .int(2), on: snapshot)
        #expect(budgetCode { _ = try budget.document("fc", key: .int(0), on: snapshot) } == .queryBudget)
        #expect(budgetCode { _ = try budget.query(Query(collection: "fc"), on: snapshot) } == .queryBudget)
        try budget.chargeBytes(100)
        #expect(budgetCode { try budget.chargeBytes(1) } == .queryBudget)
        #expect(budgetCode { try budget.chargeBytes(Int.max) } == .queryBudget)  // saturating, never a trap
        await db.close()
    }

    @Test func aQueryPastTheNodesOwnBoundKeepsItsAdvice() async throws {
        let (db, directory) = try await database(rows: 600)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let snapshot = db.snapshot()
        let budget = RequestBudget(options: db.options.query, rowsVisitedMax: 1_000)
        _ = try budget.query(Query(collection: "fc", filter: .compare(field: "id", op: .eq, value: .int(1))), on: snapshot)
        let scan = Query(collection: "fc", filter: .compare(field: "n", op: .eq, value: .int(3)))
        #expect(budgetCode { _ = try budget.query(scan, on: snapshot) } == .queryUnbounded)
        await db.close()
    }
}
