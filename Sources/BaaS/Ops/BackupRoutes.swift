// The admin routes `aerodb backup` reads a running node through (service_role key). Both are
// GETs: they change nothing a client can see (a base may cost a new checkpoint) and are never
// forwarded, so a replica serves its own log and a backup never loads the primary.
//
//   GET /admin/v1/backup/base            the base (Kernel/Backup/Backup.swift): the checkpoint
//                                        file's bytes (empty for the origin), with
//                                        X-AeroDB-Backup-Base-LSN, -Base-Checksum (hex), -Base-Epoch
//                                        and X-AeroDB-Durable-LSN (where the backup will end)
//   GET /admin/v1/backup/wal?after=N     durable records after LSN N, framed as in a backup chunk
//                                        (4-byte little-endian length, the record's WAL bytes), at
//                                        most BackupLimits.walPageBytesMax of payload; an empty
//                                        body when N is the durable LSN; 410
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
                headers[durableHeader] = String(database.durablePosition.lsn)
                headers[nodeHeader] = nodeID
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: base.bytes)))
            } catch {
                return HTTPErrors.response(error)
            }
        }
        group.get("wal") { request, _ in
            do {
                try keys.requireServiceRole(request)
                guard let text = request.uri.queryParameters.get("after"), let after = UInt64(text), after < KernelLimits.lsnMax else {
                    throw AeroError(.requestInvalid, "after must be an LSN (0...\(KernelLimits.lsnMax - 1))")
                }
                let durable = database.durablePosition.lsn
                var body: [UInt8] = []
                if after < durable {
                    for record in try database.records(from: after + 1, maxBytes: BackupLimits.walPageBytesMax) where record.lsn <= durable {
                        BackupFrames.append(record, to: &body)
                    }
                }
                var headers: HTTPFields = [.contentType: "application/octet-stream"]
                headers[durableHeader] = String(durable)
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
            } catch {
                return HTTPErrors.response(error)
            }
        }
    }
}
