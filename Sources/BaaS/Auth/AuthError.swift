// GoTrue's error shapes (supabase-wire §2.5). With `X-Supabase-Api-Version` on the request the
// answer echoes the header and carries `{"code":"<error_code>","message":"..."}`; without it the
// legacy `{"code":<status>,"error_code":"...","msg":"..."}`. The client reads `code` only with the
// header and `error_code` otherwise, so both always name the same GoTrue error code.

import HTTPTypes
import Hummingbird
import Kernel

struct AuthFailure: Error {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    var extra: [String: JSONValue] = [:]

    static func badRequest(_ code: String, _ message: String) -> AuthFailure { AuthFailure(status: .badRequest, code: code, message: message) }
    static func unprocessable(_ code: String, _ message: String) -> AuthFailure {
        AuthFailure(status: .unprocessableContent, code: code, message: message)
    }
    static func forbidden(_ code: String, _ message: String) -> AuthFailure { AuthFailure(status: .forbidden, code: code, message: message) }
    static func notFound(_ code: String, _ message: String) -> AuthFailure { AuthFailure(status: .notFound, code: code, message: message) }
    static let invalidCredentials = badRequest("invalid_credentials", "Invalid login credentials")
    static let otpExpired = forbidden("otp_expired", "Token has expired or is invalid")
    static let userNotFound = notFound("user_not_found", "User not found")
    static func validation(_ message: String) -> AuthFailure { badRequest("validation_failed", message) }
    static func rateLimited(_ code: String) -> AuthFailure {
        AuthFailure(status: .tooManyRequests, code: code,
                    message: code == "over_email_send_rate_limit" ? "Email rate limit exceeded" : "Request rate limit reached")
    }
}

enum AuthErrorResponse {
    static let versionHeader = HTTPField.Name("X-Supabase-Api-Version")!
    /// `Retry-After` of a 429 (the budgets' windows are minutes long).
    static let retryAfterSeconds = 60

    static func response(_ error: any Error, request: Request) -> Response {
        let failure = (error as? AuthFailure) ?? translate(AeroError.wrap(error))
        var body = failure.extra
        if request.headers[versionHeader] != nil {
            body["code"] = .string(failure.code)
            body["message"] = .string(failure.message)
        } else {
            body["code"] = .int(Int64(failure.status.code))
            body["error_code"] = .string(failure.code)
            body["msg"] = .string(failure.message)
        }
        var response = HTTPJSON.response(.object(body), status: failure.status)
        if let version = request.headers[versionHeader] { response.headers[versionHeader] = version }
        if failure.status == .tooManyRequests { response.headers[.retryAfter] = String(retryAfterSeconds) }
        return response
    }

    /// Kernel and cluster errors in GoTrue's shape; the status stays the kernel's (a 503 on a
    /// fenced primary is retryable for the client).
    static func translate(_ error: AeroError) -> AuthFailure {
        let status = HTTPErrors.status(of: error.code)
        let code: String
        switch error.code {
        case .unauthorized: code = "bad_jwt"
        case .forbidden: code = "not_admin"
        case .jsonInvalid, .requestInvalid: code = "validation_failed"
        default: code = status.code >= 500 ? "unexpected_failure" : "validation_failed"
        }
        return AuthFailure(status: status, code: code, message: error.message)
    }
}
