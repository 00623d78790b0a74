/// Counters of one NIC as the data plane reports them to the API (`nic_stats`).
public struct NICCounters: Sendable, Equatable {
    /// Bytes / packets received from the guest (guest → network).
    public var inBytes: UInt64
    public var inPackets: UInt64
    /// Bytes / packets delivered to the guest (network → guest).
    public var outBytes: UInt64
    public var outPackets: UInt64
    /// Drops by reason name.
    public var drops: [(reason: String, packets: UInt64)]
    /// Connections tracked by the NIC's firewall (for the global block: by every NIC).
    public var connections: UInt64
    /// Global block: connections evicted so far to make room in a full table (the oldest
    /// unanswered openings go first; an established connection is never evicted).
    public var evictions: UInt64
    /// A BENCH NIC's figures.
    public var bench: BenchFigures?

    public init(
        inBytes: UInt64 = 0,
        inPackets: UInt64 = 0,
        outBytes: UInt64 = 0,
        outPackets: UInt64 = 0,
        drops: [(reason: String, packets: UInt64)] = [],
        connections: UInt64 = 0,
        evictions: UInt64 = 0
    ) {
        self.connections = connections
        self.evictions = evictions
        self.inBytes = inBytes
        self.inPackets = inPackets
        self.outBytes = outBytes
        self.outPackets = outPackets
        self.drops = drops
    }

    public static func == (lhs: NICCounters, rhs: NICCounters) -> Bool {
        lhs.inBytes == rhs.inBytes && lhs.inPackets == rhs.inPackets && lhs.outBytes == rhs.outBytes
            && lhs.outPackets == rhs.outPackets && lhs.connections == rhs.connections && lhs.evictions == rhs.evictions
            && lhs.bench == rhs.bench
            && lhs.drops.elementsEqual(rhs.drops, by: { $0 == $1 })
    }
}

/// What a BENCH NIC measured: probes sent and answered with their round trips (a prober),
/// echo requests answered (a responder).
public struct BenchFigures: Sendable, Equatable {
    public var probesSent: UInt64 = 0
    public var repliesReceived: UInt64 = 0
    public var requestsAnswered: UInt64 = 0
    public var minimumNanoseconds: UInt64 = 0
    public var averageNanoseconds: UInt64 = 0
    public var maximumNanoseconds: UInt64 = 0
    public init() {}
}
