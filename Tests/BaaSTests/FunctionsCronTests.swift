import Foundation
import Kernel
import Logging
import Testing
import WAT
@testable import BaaS

/// Cron schedules: the 5-field syntax, due slots with bounded catch-up, and the durable slot
/// claim that makes a slot fire at most once (docs/FUNCTIONS.md "Cron").
@Suite struct FunctionsCronTests {
    /// Minutes since the epoch of a UTC date.
    static func slot(_ y: Int, _ mo: Int, _ d: Int, _ h: Int, _ mi: Int) -> Int64 {
        let date = CronSchedule.calendar.date(from: DateComponents(year: y, month: mo, day: d, hour: h, minute: mi))!
        return Int64(date.timeIntervalSince1970) / 60
    }

    @Test func fieldsParseAndMatch() throws {
        let every5 = try CronSchedule("*/5 * * * *")
        #expect(every5.matches(slot: Self.slot(2026, 12, 4, 3, 10)))
        #expect(!every5.matches(slot: Self.slot(2026, 12, 4, 3, 11)))
        let weekdays9 = try CronSchedule("0 9 * * 1-5")
        #expect(weekdays9.matches(slot: Self.slot(2026, 12, 4, 9, 0)))   // a Friday
        #expect(!weekdays9.matches(slot: Self.slot(2026, 12, 5, 9, 0)))  // Saturday
        let sunday = try CronSchedule("30 2 * * 7")
        #expect(sunday.matches(slot: Self.slot(2026, 12, 6, 2, 30)))
        // Both day fields restricted: either matches (Vixie cron).
        let either = try CronSchedule("0 0 1 * 1")
        #expect(either.matches(slot: Self.slot(2026, 12, 1, 0, 0)))  // the 1st (a Tuesday)
        #expect(either.matches(slot: Self.slot(2026, 12, 7, 0, 0)))  // a Monday
        #expect(!either.matches(slot: Self.slot(2026, 12, 8, 0, 0)))
        let list = try CronSchedule("5,10-20/5 * * * *")
        #expect([5, 10, 15, 20].allSatisfy { list.matches(slot: Self.slot(2026, 1, 1, 0, $0)) })
        #expect(!list.matches(slot: Self.slot(2026, 1, 1, 0, 25)))
        for bad in ["", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                    "*/0 * * * *", "5-1 * * * *", "MON * * * *", "@hourly", "1,,2 * * * *", "-1 * * * *",
                    String(repeating: "1,", count: 200) + "1 * * * *"] {
            #expect(throws: AeroError.self, "\(bad)") { try CronSchedule(bad) }
        }
    }

    @Test func dueSlotsCatchUpABoundedNumber() throws {
        let everyMinute = try CronSchedule("* * * * *")
        let now = Self.slot(2026, 12, 4, 3, 0)
        #expect(everyMinute.due(after: now - 1, through: now).slots == [now])
        #expect(everyMinute.due(after: now, through: now).slots.isEmpty)
        let (slots, skipped) = everyMinute.due(after: now - 100, through: now)
        #expect(slots == Array((now - 9)...now) && skipped == 90)
        #expect(everyMinute.due(after: Int64.min, through: now).slots.count == CronSchedule.catchUpSlotsMax)
    }

    /// A slot is claimed once: a second claim from the same previous slot (another primary, a
    /// retry) fails, so the invocation happens at most once per slot.
    @Test func slotClaimsAreConditional() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-cron-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        try await SystemCollections.ensure([FunctionCron.schema], in: db)
        #expect(await FunctionCron.claim(db, "job", previous: nil, slot: 10))
        #expect(await !FunctionCron.claim(db, "job", previous: nil, slot: 10))
        #expect(await FunctionCron.claim(db, "job", previous: 10, slot: 11))
        #expect(await !FunctionCron.claim(db, "job", previous: 10, slot: 11))
        #expect(try db.snapshot().document(FunctionCron.collection, key: .string("job"))?["last_slot"] == .int(11))
        await db.close()
    }

    /// A scheduled function fires once for the current slot, and a second pass in the same
    /// minute fires nothing.
    @Test func tickFiresOncePerSlot() async throws {
        let dir = NSTemporaryDirectory() + "aerodb-cron-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try await Database.open(KernelOptions(dataDirectory: dir))
        let keys = KeyChecker(secret: Array(repeating: 7, count: 32), clock: SystemClock(), database: db)
        let service = FunctionService(database: db, keys: keys, logger: Logger(label: "test"))
        let wasm = try wat2wasm("""
          (module (import "aerodb" "log" (func $log (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (data (i32.const 0) "tick")
            (func (export "handle") (result i32) (drop (call $log (i32.const 1) (i32.const 0) (i32.const 4))) (i32.const 0)))
        """)
        _ = try await service.deploy(.object(["name": .string("job"), "module": .string(Data(wasm).base64EncodedString()),
                                              "schedule": .string("* * * * *")]))
        let now = Self.slot(2026, 12, 4, 3, 0)
        await FunctionCron.tick(service, now: now)
        await FunctionCron.tick(service, now: now)
        #expect(service.logs.recent("job", limit: 50).filter { $0.line.message == "tick" }.count == 1)
        await FunctionCron.tick(service, now: now + 2)  // two more slots
        #expect(service.logs.recent("job", limit: 50).filter { $0.line.message == "tick" }.count == 3)
        await db.close()
    }
}
