// The storage blobs a backup must carry (B4, Kernel/Backup/Backup.swift): every blob an object
// row of `_storage_objects` names. Pending TUS uploads are files under blobs/resumable, not rows,
// and are not backed up (an unfinished upload is not an object); function modules are kernel
// rows (FunctionStore) and travel with the WAL and checkpoint.

import Kernel

public enum BackupBlobs {
    /// sha256 -> size of every blob an object row names in `database`'s current state, read in
    /// pages of `StorageLimits.pageRows` rows in key order.
    public static func referenced(_ database: Database) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        var after: String?
        while true {
            let filter: Filter? = after.map { .compare(field: "id", op: .gt, value: .string($0)) }
            let page = try database.snapshot().rowsIfPresent(Query(collection: StorageCollections.objects, filter: filter,
                                                                   order: [Sort(field: "id")], limit: StorageLimits.pageRows))
            for row in page {
                guard let sha = row["sha256"]?.stringValue, let size = row["size"]?.intValue else { continue }
                out[sha] = size
            }
            guard page.count == StorageLimits.pageRows, let last = page.last?["id"]?.stringValue else { break }
            after = last
        }
        return out
    }
}
