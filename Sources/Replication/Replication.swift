// Replication: WAL shipping, replica follower, authority marker, epochs, promotion (SPEC §4).
// Not built yet: issue #3 ("Three-node cluster") owns this module. Until it lands a node runs
// as a single primary, and `aerodb status` reports the role `primary` with epoch 1.
import Kernel

public enum ReplicationModule {
    /// The module's build state, reported by `aerodb status` so nobody mistakes it for working replication.
    public static let available = false
}
