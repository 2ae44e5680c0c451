// Schema enforcement on every write (S1): type checks, normalization, defaults.
//
// Normal forms (what is stored, and what index comparisons see):
// - int: `.int`; float: `.float` (an integer literal given for a float field becomes `.float`,
//   which is widening, not coercion of kind); text/bool: as given.
// - uuid: lowercase 8-4-4-4-12 hex.
// - timestamp: UTC ISO 8601 `YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00` with trailing fraction zeros
//   removed; this form sorts correctly as bytes. Accepted input: a date, or date and time with
//   `T` or a space, optional fraction (up to 6 digits kept), and `Z`, `±HH:MM`, `±HHMM` or no zone (UTC).
// - array<T>: every element normalized as T; elements may not be null.
// A string is never turned into a number or the reverse: that would be silent coercion.

public enum FieldValidator {
    public static func normalize(_ value: JSONValue, as type: FieldType, field: String) throws -> JSONValue {
        switch (type, value) {
        case (.text, .string), (.int, .int), (.float, .float), (.bool, .bool), (.json, _):
            return value
        case (.float, .int(let i)):
            return .float(Double(i))
        case (.uuid, .string(let s)):
            guard let u = normalizeUUID(s) else { throw violation(field, "\"\(s)\" is not a uuid") }
            return .string(u)
        case (.timestamp, .string(let s)):
            guard let t = Timestamp.parse(s) else { throw violation(field, "\"\(s)\" is not an ISO 8601 timestamp") }
            return .string(Timestamp.format(t))
        case (.array(let element), .array(let items)):
            return .array(try items.map { item in
                guard !item.isNull else { throw violation(field, "array elements may not be null") }
                return try normalize(item, as: element, field: field)
            })
        default:
            throw violation(field, "expected \(type), got \(value.kindName)")
        }
    }

    static func violation(_ field: String, _ message: String) -> AeroError {
        AeroError(.schemaViolation, "field \(field): \(message)", invariant: "S1")
    }

    /// Validates a complete document for insert: every declared field present (from the input,
    /// a default, or null when nullable), nothing undeclared, every value in normal form.
    public static func validateNew(_ input: Document, schema: CollectionSchema,
                                   clock: any KernelClock) throws -> Document {
        try rejectUndeclared(input, schema: schema)
        var out: Document = [:]
        out.reserveCapacity(schema.fields.count)
        for (name, field) in schema.fields {
            if let given = input[name] {
                out[name] = try checked(given, field: field, name: name)
            } else if let def = field.defaultValue {
                out[name] = try normalize(resolve(def, clock: clock), as: field.type, field: name)
            } else if field.required || !field.nullable {
                throw violation(name, "is required")
            } else {
                out[name] = .null
            }
        }
        return out
    }

    /// Applies `changes` to an existing valid document (update): the primary key may not change.
    public static func validateUpdate(_ existing: Document, changes: Document,
                                      schema: CollectionSchema) throws -> Document {
        try rejectUndeclared(changes, schema: schema)
        var out = existing
        for (name, value) in changes {
            let field = schema.fields[name]!
            let normalized = try checked(value, field: field, name: name)
            if name == schema.primaryKey && normalized != existing[name] {
                throw violation(name, "the primary key cannot be changed")
            }
            out[name] = normalized
        }
        return out
    }

    private static func checked(_ value: JSONValue, field: FieldSchema, name: String) throws -> JSONValue {
        if value.isNull {
            guard field.nullable else { throw violation(name, "may not be null") }
            return .null
        }
        return try normalize(value, as: field.type, field: name)
    }

    private static func rejectUndeclared(_ input: Document, schema: CollectionSchema) throws {
        for key in input.keys where schema.fields[key] == nil {
            throw AeroError(.schemaViolation, "field \(key) is not declared in collection \(schema.name)", invariant: "S1")
        }
    }

    static func resolve(_ def: DefaultValue, clock: any KernelClock) -> JSONValue {
        switch def {
        case .now: return .string(Timestamp.format(clock.nowMicros()))
        case .randomUUID: return .string(randomUUID())
        case .literal(let v): return v
        }
    }

    public static func randomUUID() -> String {
        var rng = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        return uuidDashed(Array(hex.utf8))
    }

    static func normalizeUUID(_ s: String) -> String? {
        let hex = s.utf8.filter { $0 != UInt8(ascii: "-") }.map { b -> UInt8 in
            (b >= 65 && b <= 70) ? b + 32 : b
        }
        guard hex.count == 32, hex.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        let dashes = s.utf8.enumerated().filter { $0.element == UInt8(ascii: "-") }.map(\.offset)
        guard dashes.isEmpty || dashes == [8, 13, 18, 23] else { return nil }
        return uuidDashed(hex)
    }

    private static func uuidDashed(_ hex: [UInt8]) -> String {
        var out: [UInt8] = []
        for (i, b) in hex.enumerated() {
            if i == 8 || i == 12 || i == 16 || i == 20 { out.append(UInt8(ascii: "-")) }
            out.append(b)
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// Timestamps as microseconds since the Unix epoch (UTC), and their normal text form.
public enum Timestamp {
    public static func format(_ micros: TimestampMicros) -> String {
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let fraction = micros - seconds * 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (y, m, d) = civilFromDays(days)
        var text = "\(String(y).leftPadded(to: 4))-\(String(m).leftPadded(to: 2))-\(String(d).leftPadded(to: 2))"
        text += "T\(String(secondOfDay / 3600).leftPadded(to: 2)):\(String(secondOfDay / 60 % 60).leftPadded(to: 2))"
        text += ":\(String(secondOfDay % 60).leftPadded(to: 2))"
        if fraction > 0 {
            var digits = String(fraction).leftPadded(to: 6)
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text + "+00:00"
    }

    /// Parses the accepted input forms; nil when malformed or out of range (years 1-9999).
    public static func parse(_ text: String) -> TimestampMicros? {
        var scanner = DigitScanner(Array(text.utf8))
        guard let year = scanner.number(4), scanner.take("-"), let month = scanner.number(2), scanner.take("-"),
              let day = scanner.number(2), year >= 1, (1...12).contains(month),
              (1...daysIn(month: month, year: year)).contains(day) else { return nil }
        var micros = daysFromCivil(year, month, day) * 86_400_000_000
        if scanner.atEnd { return micros }
        guard scanner.take("T") || scanner.take(" ") || scanner.take("t"),
              let hour = scanner.number(2), scanner.take(":"), let minute = scanner.number(2),
              hour < 24, minute < 60 else { return nil }
        var second: Int64 = 0
        if scanner.take(":") {
            guard let s = scanner.number(2), s < 60 else { return nil }
            second = s
        }
        micros += (hour * 3600 + minute * 60 + second) * 1_000_000
        if scanner.take(".") {
            guard let (value, digits) = scanner.digitRun(), digits > 0 else { return nil }
            var fraction = value
            var count = digits
            while count > 6 { fraction /= 10; count -= 1 }
            while count < 6 { fraction *= 10; count += 1 }
            micros += fraction
        }
        guard let offset = scanner.zoneOffsetMinutes(), scanner.atEnd else { return nil }
        return micros - offset * 60_000_000
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// (year, month, day) of a count of days since 1970-01-01 (civil_from_days;
    /// any Int64 day in the proleptic Gregorian calendar). Shared with S3Dates.
    public static func civilFromDays(_ z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}

struct DigitScanner {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { position == bytes.count }

    mutating func take(_ c: Unicode.Scalar) -> Bool {
        guard position < bytes.count, bytes[position] == UInt8(ascii: c) else { return false }
        position += 1
        return true
    }

    mutating func number(_ width: Int) -> Int64? {
        guard position + width <= bytes.count else { return nil }
        var v: Int64 = 0
        for i in 0..<width {
            let b = bytes[position + i]
            guard b >= 48 && b <= 57 else { return nil }
            v = v * 10 + Int64(b - 48)
        }
        position += width
        return v
    }

    mutating func digitRun() -> (Int64, Int)? {
        var v: Int64 = 0
        var n = 0
        while position < bytes.count, bytes[position] >= 48, bytes[position] <= 57 {
            if n < 18 {  // digits past the 18th cannot matter at microsecond precision
                v = v * 10 + Int64(bytes[position] - 48)
                n += 1
            }
            position += 1
        }
        return (v, n)
    }

    /// `Z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (UTC).
    mutating func zoneOffsetMinutes() -> Int64? {
        if atEnd { return 0 }
        if take("Z") || take("z") { return 0 }
        let sign: Int64
        if take("+") { sign = 1 } else if take("-") { sign = -1 } else { return nil }
        guard let hours = number(2), hours < 24 else { return nil }
        _ = take(":")
        let minutes = atEnd ? 0 : number(2)
        guard let minutes, minutes < 60 else { return nil }
        return sign * (hours * 60 + minutes)
    }
}
