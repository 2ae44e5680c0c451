// Where checkpoints live and how the newest usable one is chosen.
//
// Invariants:
// - A checkpoint becomes visible under its final name only after its bytes are durable
//   (temp, fsync, rename, fsync dir): a crash leaves either the old set or the old set plus
//   a complete new file (plus perhaps a stray `.tmp`, which is ignored and removed).
// - Loading tries checkpoints from newest to oldest; a damaged one is reported and skipped,
//   never loaded (D2). The WAL keeps every record after the oldest kept checkpoint, so falling
//   back one checkpoint still replays to the same state.

struct CheckpointStore {
    let fileSystem: any FileSystem
    let directory: String

    struct Loaded {
        let state: DatabaseState
        let file: String
        /// Newer checkpoints that were damaged and skipped, with the reason.
        let skipped: [AeroError]
    }

    func prepare() throws {
        if !fileSystem.exists(directory) {
            try fileSystem.makeDirectory(directory)
            try fileSystem.syncDirectory(Path.parent(of: directory))
        }
        for name in try fileSystem.list(directory) where name.hasSuffix(".tmp") {
            try fileSystem.remove(Path.join(directory, name))
        }
    }

    /// Checkpoint LSNs on disk, newest first.
    func list() throws -> [UInt64] {
        try fileSystem.list(directory).compactMap(CheckpointFile.lsn(fromFileName:)).sorted(by: >)
    }

    func write(_ state: DatabaseState) throws -> String {
        let path = Path.join(directory, CheckpointFile.fileName(lsn: state.position.lsn))
        try fileSystem.writeAtomically(try CheckpointFile.encode(state), to: path)
        return path
    }

    /// The newest valid checkpoint, or nil when there is none at all. Throws when checkpoints
    /// exist but none is valid: starting from nothing would silently lose their data.
    func loadNewest() throws -> Loaded? {
        var skipped: [AeroError] = []
        for lsn in try list() {
            let name = CheckpointFile.fileName(lsn: lsn)
            do {
                let state = try CheckpointFile.decode(try fileSystem.readFile(Path.join(directory, name)), name: name)
                guard state.position.lsn == lsn else {
                    throw AeroError(.checkpointCorrupt, "checkpoint \(name) holds LSN \(state.position.lsn)", invariant: "D2")
                }
                return Loaded(state: state, file: name, skipped: skipped)
            } catch let error as AeroError where error.code == .checkpointCorrupt {
                skipped.append(error)
            }
        }
        if let newest = skipped.first {
            throw AeroError(.checkpointCorrupt, "no valid checkpoint: \(newest.message)", invariant: "D2")
        }
        return nil
    }

    /// Removes all but the newest `KernelLimits.checkpointsKept` checkpoints; returns the LSN
    /// of the oldest one kept (the WAL must keep every record after it).
    func prune() throws -> UInt64? {
        let lsns = try list()
        for lsn in lsns.dropFirst(KernelLimits.checkpointsKept) {
            try fileSystem.remove(Path.join(directory, CheckpointFile.fileName(lsn: lsn)))
        }
        if lsns.count > KernelLimits.checkpointsKept { try fileSystem.syncDirectory(directory) }
        return lsns.prefix(KernelLimits.checkpointsKept).last
    }
}
