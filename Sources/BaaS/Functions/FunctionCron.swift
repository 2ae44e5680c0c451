// Cron schedules of functions (docs/FUNCTIONS.md "Cron").
//
// Syntax: five fields, `minute hour day-of-month month day-of-week`, in UTC. Each field is `*`,
// `N`, `A-B`, a `,` list of those, each optionally `/step` (`*/5`, `10-50/10`). Ranges: minute
// 0-59, hour 0-23, day 1-31, month 1-12, day-of-week 0-6 (0 and 7 are Sunday). As in Vixie
// cron, when both day fields are restricted a day matches if either matches. No names
// (`MON`, `JAN`), no `@hourly`: refused with the field named. The parser is iterative (no
// recursion) and a field is at most `fieldBytesMax` bytes.
//
// Slots: a schedule fires at most once per matching minute (a slot, counted in minutes since the
// Unix epoch). The last fired slot of each function is a document of `_function_cron`
// (replicated); the primary's scheduler claims a slot by a conditional update of that document
// (last_slot = previous -> slot) and invokes only if the commit succeeded. So a slot fires at most
// once across the cluster: a deposed primary cannot commit (A1), and a new primary continues from
// the replicated last slot, catching up the slots it missed (at most `catchUpSlotsMax`, the older
// ones are logged as skipped). The claim is committed before the invocation: a slot whose
// invocation fails or whose primary dies mid-run is not retried (at most once, logged).

import Foundation
import Kernel
import Logging

public struct CronSchedule: Sendable, Equatable {
    /// Longest field text.
    static let fieldBytesMax = 256
    /// Missed slots fired after a pause (a restart, a promotion); older ones are skipped and logged.
    public static let catchUpSlotsMax = 10
    /// Minutes scanned back when looking for missed slots (one day).
    static let lookBackMinutesMax: Int64 = 1_440

    let minutes: UInt64
    let hours: UInt64
    let days: UInt64
    let months: UInt64
    let weekdays: UInt64
    let daysRestricted: Bool
    let weekdaysRestricted: Bool
    public let text: String

    public init(_ text: String) throws {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 5 else {
            throw AeroError(.functionInvalid, "a schedule has 5 fields (minute hour day-of-month month day-of-week), not \(fields.count)")
        }
        self.text = fields.joined(separator: " ")
        minutes = try Self.field(fields[0], "minute", 0...59)
        hours = try Self.field(fields[1], "hour", 0...23)
        days = try Self.field(fields[2], "day-of-month", 1...31)
        months = try Self.field(fields[3], "month", 1...12)
        var dow = try Self.field(fields[4], "day-of-week", 0...7)
        if dow & (1 << 7) != 0 { dow = (dow | 1) & ~(1 << 7) }  // 7 is Sunday
        weekdays = dow
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    private static func field(_ text: Substring, _ name: String, _ range: ClosedRange<Int>) throws -> UInt64 {
        guard text.utf8.count <= fieldBytesMax else { throw AeroError(.functionInvalid, "schedule field \(name) is too long") }
        var bits: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            var step = 1
            if parts.count == 2 {
                guard let s = Int(parts[1]), s >= 1, s <= range.upperBound else {
                    throw AeroError(.functionInvalid, "schedule field \(name): step \(parts[1].prefix(20)) must be 1...\(range.upperBound)")
                }
                step = s
            }
            let base = parts[0]
            var low = range.lowerBound, high = range.upperBound
            if base != "*" {
                let bounds = base.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                guard let a = Int(bounds[0]), range.contains(a) else {
                    throw AeroError(.functionInvalid, "schedule field \(name): \(base.prefix(20)) is not a number in \(range.lowerBound)...\(range.upperBound)")
                }
                low = a
                high = a
                if bounds.count == 2 {
                    guard let b = Int(bounds[1]), range.contains(b), b >= a else {
                        throw AeroError(.functionInvalid, "schedule field \(name): range \(base.prefix(20)) must be A-B with A <= B in \(range.lowerBound)...\(range.upperBound)")
                    }
                    high = b
                } else if parts.count == 2 {
                    high = range.upperBound  // `5/15` = from 5 every 15
                }
            }
            var v = low
            while v <= high {
                bits |= 1 << UInt64(v)
                v += step
            }
        }
        return bits
    }

    /// Whether the minute `slot` (minutes since the Unix epoch, UTC) matches.
    public func matches(slot: Int64) -> Bool {
        let c = Self.calendar.dateComponents([.minute, .hour, .day, .month, .weekday],
                                             from: Date(timeIntervalSince1970: Double(slot) * 60))
        guard let minute = c.minute, let hour = c.hour, let day = c.day, let month = c.month, let weekday = c.weekday else { return false }
        guard minutes & (1 << UInt64(minute)) != 0, hours & (1 << UInt64(hour)) != 0, months & (1 << UInt64(month)) != 0 else { return false }
        let dayOK = days & (1 << UInt64(day)) != 0
        let weekdayOK = weekdays & (1 << UInt64(weekday - 1)) != 0  // Foundation: 1 = Sunday
        if daysRestricted && weekdaysRestricted { return dayOK || weekdayOK }
        return dayOK && weekdayOK
    }

    /// The slots to fire now: matching minutes in (last, now], the newest `catchUpSlotsMax`, and
    /// how many older matching minutes were skipped.
    public func due(after last: Int64, through now: Int64) -> (slots: [Int64], skipped: Int) {
        guard now > last else { return ([], 0) }
        let from = max(last &+ 1, now &- Self.lookBackMinutesMax)
        var found: [Int64] = []
        var slot = from
        while slot <= now {
            if matches(slot: slot) { found.append(slot) }
            slot += 1
        }
        let kept = Array(found.suffix(Self.catchUpSlotsMax))
        return (kept, found.count - kept.count)
    }

    static let calendar: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    public static func slot(ofSeconds seconds: Int64) -> Int64 { seconds >= 0 ? seconds / 60 : (seconds - 59) / 60 }
}

/// Runs the cron schedules of deployed functions while this node is the primary.
public enum FunctionCron {
    static let collection = "_function_cron"
    static let schema: JSONValue = AuthCollections.schema(collection, key: "name", [
        "name": AuthCollections.field("text", nullable: false), "last_slot": AuthCollections.field("int", nullable: false),
        "updated_at": AuthCollections.created,
    ], [])
    /// How often the scheduler looks at the clock (a slot is one minute).
    public static let tickMillis = 1_000

    public static func start(service: FunctionService, isPrimary: @escaping @Sendable () -> Bool,
                             nowSeconds: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) -> Task<Void, Never> {
        Task.detached {
            while !Task.isCancelled {
                if isPrimary() { await tick(service, now: CronSchedule.slot(ofSeconds: nowSeconds())) }
                try? await Task.sleep(for: .milliseconds(tickMillis))
            }
        }
    }

    /// One pass: for every scheduled function, claim and fire its due slots.
    static func tick(_ service: FunctionService, now: Int64) async {
        let snapshot = service.database.snapshot()
        guard let scheduled = try? FunctionStore.list(snapshot).filter({ $0.version.schedule != nil }), !scheduled.isEmpty else { return }
        do {
            try await SystemCollections.ensure([schema], in: service.database)
        } catch {
            service.logger.warning("cron: cannot create \(collection)", metadata: ["error": "\(error)"])
            return
        }
        for (_, v) in scheduled {
            guard let text = v.schedule, let schedule = try? CronSchedule(text) else { continue }
            let row: Document? = (try? service.database.snapshot().document(collection, key: .string(v.name))) ?? nil
            let last: Int64
            if let row, case .int(let n)? = row["last_slot"] { last = n } else { last = now - 1 }
            let (slots, skipped) = schedule.due(after: last, through: now)
            if skipped > 0 {
                service.logs.append(v.name, version: v.version, [FunctionLogLine(level: "warn", message: "cron: \(skipped) missed slots skipped (at most \(CronSchedule.catchUpSlotsMax) are caught up)")], dropped: 0)
            }
            var previous: Int64? = row == nil ? nil : last
            for slot in slots {
                guard await claim(service.database, v.name, previous: previous, slot: slot) else { break }
                previous = slot
                await fire(service, v.name, slot: slot)
            }
        }
    }

    /// Conditional update last_slot: previous -> slot (an insert when there is no row yet).
    /// False when another primary or an earlier pass claimed it, or this node cannot write.
    static func claim(_ database: Database, _ name: String, previous: Int64?, slot: Int64) async -> Bool {
        do {
            if let previous {
                let filter = Filter.and([.compare(field: "name", op: .eq, value: .string(name)),
                                         .compare(field: "last_slot", op: .eq, value: .int(previous))])
                let result = try await database.commit([.update(collection: collection, target: .matching(filter),
                                                                set: ["last_slot": .int(slot)])])
                return result.changes.contains { $0.collection == collection }
            }
            _ = try await database.commit([.insert(collection: collection, document: ["name": .string(name), "last_slot": .int(slot)])])
            return true
        } catch {
            return false
        }
    }

    static func fire(_ service: FunctionService, _ name: String, slot: Int64) async {
        guard let (v, compiled) = try? service.load(name) else { return }
        let iso = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(slot) * 60))
        let body = JSON.encode(.object(["slot": .int(slot), "scheduled_at": .string(iso), "schedule": .string(v.schedule ?? "")]))
        let request = FunctionRequest(method: "POST", path: "", headers: [("x-aerodb-cron-slot", String(slot)), ("content-type", "application/json")],
                                      body: body, caller: Caller(role: "service_role", claims: .object(["role": .string("service_role")])))
        do {
            let out = try await service.invoke(v, compiled, request, data: service.dataAccess(request.caller))
            service.logs.append(name, version: v.version, [FunctionLogLine(level: "info", message: "cron: slot \(iso) answered \(out.status)")], dropped: 0)
        } catch {
            // service.invoke logged the failure; the slot stays claimed (at most once).
        }
    }
}
