// One error shape everywhere: a stable code `AERO_<AREA>_<NAME>`, a message for humans and,
// where relevant, the guarantee (SPEC §7) it protects. Front ends map codes to their wire shapes;
// `docs/ERRORS.md` lists every code. Codes are part of the public contract: never rename one.

public struct AeroError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Code
    public let message: String
    /// The SPEC §7 guarantee this error protects (for example "D2"), when there is one.
    public let invariant: String?

    public init(_ code: Code, _ message: String, invariant: String? = nil) {
        self.code = code
        self.message = message
        self.invariant = invariant
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public enum Code: String, Sendable, CaseIterable {
        // Input
        case jsonInvalid = "AERO_JSON_INVALID"
        case requestInvalid = "AERO_REQUEST_INVALID"
        // Schema (S1)
        case schemaInvalid = "AERO_SCHEMA_INVALID"
        case schemaViolation = "AERO_SCHEMA_VIOLATION"
        case collectionNotFound = "AERO_COLLECTION_NOT_FOUND"
        case collectionExists = "AERO_COLLECTION_EXISTS"
        case indexExists = "AERO_INDEX_EXISTS"
        case indexNotFound = "AERO_INDEX_NOT_FOUND"
        // Transactions (C1)
        case documentNotFound = "AERO_DOCUMENT_NOT_FOUND"
        case duplicateKey = "AERO_UNIQUE_VIOLATION"
        case referenceViolation = "AERO_REFERENCE_VIOLATION"
        case transactionTooLarge = "AERO_TRANSACTION_TOO_LARGE"
        case documentTooLarge = "AERO_DOCUMENT_TOO_LARGE"
        case memoryLimit = "AERO_MEMORY_LIMIT"
        // Queries (Q1, T1)
        case queryInvalid = "AERO_QUERY_INVALID"
        case queryUnbounded = "AERO_QUERY_UNBOUNDED"
        case typeMismatch = "AERO_QUERY_TYPE_MISMATCH"
        case unknownField = "AERO_QUERY_UNKNOWN_FIELD"
        /// One request's queries together would pass its budget (rows, queries, response bytes).
        case queryBudget = "AERO_QUERY_BUDGET"
        // WAL and storage (D1, D2, F1, R2)
        case walCorrupt = "AERO_WAL_CORRUPT"
        case walFlushFailed = "AERO_WAL_FLUSH_FAILED"
        case walClosed = "AERO_WAL_CLOSED"
        case storageFull = "AERO_STORAGE_FULL"
        case ioError = "AERO_IO_ERROR"
        case checkpointCorrupt = "AERO_CHECKPOINT_CORRUPT"
        case dataDirectoryInvalid = "AERO_DATA_DIRECTORY_INVALID"
        case lsnUnavailable = "AERO_WAL_LSN_UNAVAILABLE"
        // Node
        case unauthorized = "AERO_AUTH_UNAUTHORIZED"
        case forbidden = "AERO_AUTH_FORBIDDEN"
        /// A write's new (or old) row fails the collection's row-level-security policy.
        case policyViolation = "AERO_POLICY_VIOLATION"
        case notFound = "AERO_NOT_FOUND"
        /// A known HTTP path asked with a method it does not serve (405 with `Allow`).
        case methodNotAllowed = "AERO_METHOD_NOT_ALLOWED"
        case configInvalid = "AERO_CONFIG_INVALID"
        /// A port this node must listen on is taken by another process (`aerodb start`).
        case portInUse = "AERO_PORT_IN_USE"
        case notPrimary = "AERO_NOT_PRIMARY"
        case authorityCorrupt = "AERO_AUTHORITY_CORRUPT"
        // Replication and authority (P1, A1-A4)
        case replicationDiverged = "AERO_REPL_DIVERGED"
        case replicationRefused = "AERO_REPL_REFUSED"
        case commitInDoubt = "AERO_COMMIT_IN_DOUBT"
        case replicaBehind = "AERO_REPLICA_BEHIND"
        case primaryUnavailable = "AERO_PRIMARY_UNAVAILABLE"
        /// A cluster TLS handshake failed: a member's certificate is not signed by the cluster CA,
        /// does not name its host, or it spoke plain TCP/HTTP to a TLS port (TLS1).
        case clusterTLS = "AERO_CLUSTER_TLS"
        case epochStale = "AERO_EPOCH_STALE"
        case promotionRefused = "AERO_PROMOTION_REFUSED"
        case internalError = "AERO_INTERNAL"
        // Functions (docs/FUNCTIONS.md)
        case functionNotFound = "AERO_FUNCTION_NOT_FOUND"
        case functionInvalid = "AERO_FUNCTION_INVALID"
        case functionFailed = "AERO_FUNCTION_FAILED"
        case functionLimit = "AERO_FUNCTION_LIMIT"
        // Realtime (docs/REALTIME.md)
        case realtimeInvalid = "AERO_REALTIME_INVALID"
        case realtimeLimit = "AERO_REALTIME_LIMIT"
        // Backup and restore (docs/OPERATIONS.md)
        case backupCorrupt = "AERO_BACKUP_CORRUPT"
        case backupIncomplete = "AERO_BACKUP_INCOMPLETE"
        case backupTargetUnavailable = "AERO_BACKUP_TARGET_UNAVAILABLE"
        case backupBusy = "AERO_BACKUP_BUSY"
    }
}

extension AeroError {
    /// Wraps any error as an AeroError; AeroErrors pass through unchanged.
    public static func wrap(_ error: any Error) -> AeroError {
        if let e = error as? AeroError { return e }
        return AeroError(.internalError, "\(error)")
    }
}
