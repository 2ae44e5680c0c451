// PostgREST-shaped errors: `{"code","message","details","hint"}`, all strings or null, with the
// statuses the Supabase clients expect (supabase-wire §3.3). Kernel errors map by code.

import HTTPTypes
import Hummingbird
import Kernel

enum RESTError {
    static func parse(_ message: String) -> AeroError { AeroError(.queryInvalid, message) }

    static func unknownColumn(_ column: String, _ collection: String) -> AeroError {
        AeroError(.unknownField, "column \(collection).\(column) does not exist")
    }

    static func invalidValue(_ text: String, _ column: String, _ type: FieldType) -> AeroError {
        AeroError(.typeMismatch, "invalid input syntax for type \(type): \"\(text)\" (column \(column))")
    }

    /// The PostgREST code and HTTP status for a kernel error.
    static func postgrest(_ code: AeroError.Code) -> (String, HTTPResponse.Status) {
        switch code {
        case .collectionNotFound: return ("PGRST205", .notFound)
        case .unknownField: return ("42703", .badRequest)
        case .typeMismatch: return ("22P02", .badRequest)
        case .duplicateKey: return ("23505", .conflict)
        case .referenceViolation: return ("23503", .conflict)
        case .schemaViolation: return ("23502", .badRequest)
        case .queryInvalid, .requestInvalid, .jsonInvalid, .queryUnbounded: return ("PGRST100", .badRequest)
        case .unauthorized: return ("PGRST301", .unauthorized)
        case .forbidden, .policyViolation: return ("42501", .forbidden)
        case .documentNotFound, .notFound: return ("PGRST116", .notFound)
        // AERO_QUERY_BUDGET (400) and every other code keep their AeroDB code: PostgREST has none like them.
        default: return (code.rawValue, HTTPErrors.status(of: code))
        }
    }

    static func response(_ error: any Error) -> Response {
        if let failure = error as? PostgRESTFailure {
            return response(code: failure.code, message: failure.message, details: failure.details, hint: failure.hint,
                            status: HTTPResponse.Status(code: Int(failure.status)))
        }
        let aero = AeroError.wrap(error)
        SlowLog.noteRefusal(aero)  // a refused query is an entry of the query log (Ops/SlowLog.swift)
        let (code, status) = postgrest(aero.code)
        let hint = aero.code == .queryBudget ? RequestBudget.hint : nil
        return response(code: code, message: aero.message, details: aero.code.rawValue, hint: hint, status: status)
    }

    static func response(code: String, message: String, details: String?, hint: String? = nil,
                         status: HTTPResponse.Status) -> Response {
        HTTPJSON.response(.object(["code": .string(code), "message": .string(message),
                                   "details": details.map(JSONValue.string) ?? .null,
                                   "hint": hint.map(JSONValue.string) ?? .null]), status: status)
    }
}
