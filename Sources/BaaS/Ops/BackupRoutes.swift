// The admin routes `aerodb backup` reads a running node through (service_role key). Both are
// GETs: they change nothing a client can see (a base may cost a new checkpoint) and are never
// forwarded, so a replica serves its own log and a backup never loads the primary.
//
//   GET /admin/v1/backup/base            the base (Kernel/Backup/Backup.swift): the checkpoint
//                                        file's bytes (empty for the origin), with
//                                        X-AeroDB-Backup-Base-LSN, -Base-Checksum (hex), -Base-Epoch
//                                        X-AeroDB-Durable-LSN (where the backup will end) and
//                                        X-AeroDB-Backup-Hold (B5: the WAL after the base is kept
//                                        until it is read through the end, or for
//                                        BackupLimits.holdIdleSeconds without a read); 429
//                                        AERO_BACKUP_BUSY past BackupLimits.holdsMax backups
//   GET /admin/v1/backup/wal?after=N[&hold=H]
//                                        durable records after LSN N, framed as in a backup chunk
//                                        (4-byte little-endian length, the record's WAL bytes), at
//                                        most BackupLimits.walPageBytesMax of payload; an empty
//                                        body when N is the durable LSN; moves hold H to N+1 and
//                                        releases it once a page reaches the backup's end; 410
//                                        AERO_WAL_LSN_UNAVAILABLE when N+1 was recycled

import HTTPTypes
import Hummingbird
import Kernel

public enum BackupRoutes {
    static let baseLSNHeader = HTTPField.Name("X-AeroDB-Backup-Base-LSN")!
    static let baseChecksumHeader = HTTPField.Name("X-AeroDB-Backup-Base-Checksum")!
    static let baseEpochHeader = HTTPField.Name("X-AeroDB-Backup-Base-Epoch")!
    static let durableHeader = HTTPField.Name("X-AeroDB-Durable-LSN")!
    static let nodeHeader = HTTPField.Name("X-AeroDB-Node")!
    static let holdHeader = HTTPField.Name("X-AeroDB-Backup-Hold")!

    public static func register(on router: Router<AeroRequestContext>, database: Database, keys: KeyChecker, nodeID: String) {
        let group = router.group("admin/v1/backup")
        group.get("base") { request, _ in
            do {
                try keys.requireServiceRole(request)
                let base = try await database.backupBase()
                var headers: HTTPFields = [.contentType: "application/octet-stream"]
                headers[baseLSNHeader] = String(base.position.lsn)
                headers[baseChecksumHeader] = String(base.position.checksum, radix: 16)
                headers[baseEpochHeader] = String(base.epoch)
                headers[durableHeader] = String(base.end)
                headers[holdHeader] = String(base.hold)
                headers[nodeHeader] = nodeID
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: base.bytes)))
            } catch {
                return HTTPErrors.response(error)
            }
        }
        group.get("wal") { request, _ in
            do {
                try keys.requireServiceRole(request)
                guard let after = try number(request, "after", "an LSN") else {
                    throw AeroError(.requestInvalid, "after must be an LSN (0...\(KernelLimits.lsnMax - 1))")
                }
                let hold = try number(request, "hold", "the X-AeroDB-Backup-Hold of the base answer")
                let durable = database.durablePosition.lsn
                var body: [UInt8] = []
                for record in try database.backupRecords(after: after, hold: hold, through: durable) {
                    BackupFrames.append(record, to: &body)
                }
                var headers: HTTPFields = [.contentType: "application/octet-stream"]
                headers[durableHeader] = String(durable)
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
            } catch {
                return HTTPErrors.response(error)
            }
        }
    }

    /// An optional query parameter that must be a number below KernelLimits.lsnMax when present.
    private static func number(_ request: Request, _ name: String, _ what: String) throws -> UInt64? {
        guard let text = request.uri.queryParameters.get(name) else { return nil }
        guard let value = UInt64(text), value < KernelLimits.lsnMax else {
            throw AeroError(.requestInvalid, "\(name) must be \(what) (0...\(KernelLimits.lsnMax - 1))")
        }
        return value
    }
}
