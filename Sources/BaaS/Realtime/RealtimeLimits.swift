// Every bound of the realtime front end (docs/LIMITS.md "Realtime"). Unit last, reason beside.

public enum RealtimeLimits {
    /// Open WebSocket connections per node: past it the upgrade is refused (503).
    public static let connectionsPerNodeMax = 20_000
    /// Joined channels per connection (Supabase's default max_channels_per_client is 100).
    public static let channelsPerConnectionMax = 100
    /// Largest frame or message read from a client (a bigger one closes the socket with 1009).
    public static let messageBytesMax = 1 << 20
    /// Largest presence state (`track` payload, encoded JSON).
    public static let presencePayloadBytesMax = 8 << 10
    /// Largest topic name (after `realtime:`).
    public static let topicBytesMax = 256
    /// postgres_changes bindings per channel.
    public static let bindingsPerChannelMax = 32
    /// Joins per second on one node (token bucket, burst of the same size); past it the join
    /// is answered `ClientJoinRateLimitReached` (the Python client then waits 30 s).
    public static let joinsPerSecondMax = 500
    /// Frames per second one connection may send (token bucket, burst of the same size);
    /// past it frames are answered with an error and dropped; twice over, the socket closes.
    public static let framesPerSecondPerConnectionMax = 1_000
    /// Frames waiting to be written to one connection. Events (postgres_changes, broadcast,
    /// presence) are dropped when this many wait (see docs/REALTIME.md "Backpressure").
    public static let outboundEventsMax = 1_024
    /// Headroom for replies and system messages above `outboundEventsMax`; past it the client
    /// is not reading at all and the socket closes (1008).
    public static let outboundControlHeadroom = 64
    /// First read buffer of a realtime connection (NIO's default is 2,048; it adapts between 64
    /// bytes and 64 KiB with the reads). Idle subscribers send about a heartbeat per 25 s.
    public static let readBufferInitialBytes = 512
    /// A connection that sends nothing (not even a heartbeat, every 25 s by default) for this
    /// long is closed.
    public static let idleTimeoutSeconds: Int64 = 60
    /// Once a connection's outbox closes (the client's close frame, the idle timeout, a limit,
    /// shutdown), its socket is closed within this long even if the client never answers the
    /// close frame or never reads what is queued (RealtimeChannelHandler).
    public static let closeHandshakeSeconds: Int64 = 5
    /// Records pulled from the change stream per step (the node's shared reader, or one
    /// catching-up subscription).
    public static let changesPerPull = 256
    /// Frames the shared reader gathers for one subscriber within one transaction before it
    /// hands that subscriber to its own catch-up pump (bounds the reader's memory per change).
    public static let fanoutFramesPerTransactionMax = 512
    /// Presences (keys) per topic on one node; past it `track` is answered with an error.
    public static let presencesPerTopicMax = 10_000

    // Cluster relay of broadcast and presence (RealtimeRelay, docs/REALTIME.md "Cluster").
    /// Messages waiting for one other member; past it broadcasts are dropped (counted, logged)
    /// and presence is resent as a snapshot.
    public static let relayQueueMessagesMax = 10_000
    /// Messages per relay request.
    public static let relayBatchMessagesMax = 1_000
    /// Largest relay request body (a snapshot of many presences is the big one).
    public static let relayBodyBytesMax = 16 << 20
    /// Presences tracked on one node, all topics: a relay snapshot carries them all, so this is
    /// also the most one snapshot may hold (a bigger one is refused whole).
    public static let presencesPerNodeMax = 200_000
    /// Bytes of this node's presences as a relay snapshot encodes them: past it `track` is
    /// refused, so a snapshot plus `relayMessageBytesMax` always fits `relayBodyBytesMax`.
    public static let presenceBytesPerNodeMax = 6 << 20
    /// Bytes of messages (broadcasts, presence changes) in one relay batch; a single bigger
    /// message (at most `messageBytesMax`) goes alone.
    public static let relayMessageBytesMax = 8 << 20
    /// A relay request (connect included) that takes longer fails: the batch is dropped.
    public static let relayRequestMillis: Int64 = 2_000
    /// Pause after a failed relay request before the next attempt to that member.
    public static let relayRetryMillis: Int64 = 500
    /// An idle link still sends an empty batch this often (the member's liveness).
    public static let relayHeartbeatMillis: Int64 = 1_000
    /// A member not heard from for this long has its presences dropped (leaves sent).
    public static let peerPresenceTimeoutSeconds: Int64 = 5
    /// Relay batches older or newer than this (by the receiver's clock) are refused (replays).
    public static let relayClockSkewSecondsMax: Int64 = 60
    /// Distinct members whose presences one node keeps.
    public static let relayOriginsMax = 64
}
