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
    /// A connection that sends nothing (not even a heartbeat, every 25 s by default) for this
    /// long is closed.
    public static let idleTimeoutSeconds: Int64 = 60
    /// Records pulled from the change stream per step of one subscription.
    public static let changesPerPull = 256
    /// Presences (keys) per topic on one node; past it `track` is answered with an error.
    public static let presencesPerTopicMax = 10_000
}
