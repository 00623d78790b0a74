import CButterflyLinux

/// Why the data plane dropped a packet. Each reason is declared once and becomes a counter,
/// per NIC and global (VPP-style); `name` is what `nic_stats` and the DOT graph show.
public enum DropReason: Int, CaseIterable, Sendable {
    case truncated
    case oversize
    case spoofedSourceMAC
    case rarp
    case spoofedARP
    case spoofedNeighborAdvertisement
    case hairpin
    case noBuffer
    case transmitFailed
    case unknownVNI
    case notVXLAN
    case badVXLANFlags
    case ipOptionsOrFragment
    case notForThisVTEP
    case unresolvedNeighbor
    case underlayOther
    /// A trace file could not be opened (counted once per attempt, not per packet).
    case traceUnavailable
    /// Dropped by the port before the engine saw it: truncated by the ring, larger than a
    /// buffer, a refused offload (super-frame), no free buffer. Copied from the port's own
    /// counter once a second.
    case portReceive
    /// Dropped by the kernel before the underlay port: its receive ring was full (the worker
    /// fell behind), or a frame the virtio-net header cannot describe (a GSO type other than
    /// TCP or UDP). Read from the socket once a second. For a tap NIC: guest frames that
    /// overflowed the tap's queue toward the daemon (the interface's `tx_dropped`), written by
    /// the control plane when it reads the NIC's counters (the worker never counts it there).
    case kernelReceive
    /// An IP header, extension header or upper-layer header whose lengths do not hold up.
    case malformedIP
    /// A guest sent an 802.1Q / 802.1ad tagged frame (guests are untagged ports).
    case vlanTagged
    /// An IP packet from a guest whose source is not one of the NIC's addresses.
    case spoofedSourceIP
    /// A neighbour solicitation for or from an address that is not the NIC's.
    case spoofedNeighborSolicitation
    /// A router advertisement or redirect sent by a guest.
    case routerAdvertisement
    /// A DHCP or DHCPv6 server reply sent by a guest.
    case dhcpServer
    /// Toward a NIC: no rule of its security groups allows it and no connection expects it.
    case noRuleInbound
    /// From a NIC: its outbound rules do not allow the destination.
    case notAllowedOutbound
    /// A TCP segment that does not fit the connection's state (e.g. an ACK opening nothing).
    case invalidTCPState
    /// A new connection found the connection table full of established entries.
    case conntrackFull
    /// A non-first fragment whose first fragment was not allowed (or never seen).
    case fragment
    /// vhost-user: a descriptor chain that broke the ring rules (outside guest memory, a loop,
    /// the wrong direction, longer than a buffer); the chain went back to the guest empty.
    /// Copied from the port once a second.
    case guestDescriptor
    /// vhost-user: a front-end dropped for breaking the protocol (a malformed message, wrong
    /// descriptors, a bad memory table or ring); counted per connection, written by the
    /// control plane when it reads the NIC's counters.
    case vhostProtocol

    public var name: String {
        switch self {
        case .truncated: "truncated"
        case .oversize: "oversize"
        case .spoofedSourceMAC: "spoofed-source-mac"
        case .rarp: "rarp"
        case .spoofedARP: "spoofed-arp"
        case .spoofedNeighborAdvertisement: "spoofed-neighbor-advertisement"
        case .hairpin: "hairpin"
        case .noBuffer: "no-buffer"
        case .transmitFailed: "transmit-failed"
        case .unknownVNI: "unknown-vni"
        case .notVXLAN: "not-vxlan"
        case .badVXLANFlags: "bad-vxlan-flags"
        case .ipOptionsOrFragment: "ip-options-or-fragment"
        case .notForThisVTEP: "not-for-this-vtep"
        case .unresolvedNeighbor: "unresolved-neighbor"
        case .underlayOther: "underlay-other"
        case .traceUnavailable: "trace-unavailable"
        case .portReceive: "port-receive"
        case .kernelReceive: "kernel-receive"
        case .malformedIP: "malformed-ip"
        case .vlanTagged: "vlan-tagged"
        case .spoofedSourceIP: "spoofed-source-ip"
        case .spoofedNeighborSolicitation: "spoofed-neighbor-solicitation"
        case .routerAdvertisement: "router-advertisement"
        case .dhcpServer: "dhcp-server"
        case .noRuleInbound: "no-rule-inbound"
        case .notAllowedOutbound: "not-allowed-outbound"
        case .invalidTCPState: "invalid-tcp-state"
        case .conntrackFull: "conntrack-full"
        case .fragment: "fragment"
        case .guestDescriptor: "guest-descriptor"
        case .vhostProtocol: "vhost-protocol"
        }
    }
}

/// Counters written by one worker and read by the control plane at any time: plain slots
/// updated with relaxed atomic load/store (one writer), so reads never tear and the packet
/// path pays no locked instruction.
///
/// ```
///  slot: 0 inPackets │ 1 inBytes │ 2 outPackets │ 3 outBytes │ 4… one per DropReason │
///        connections │ evictions
/// ```
public final class CounterBlock: @unchecked Sendable {
    // Safe: slots are only touched through relaxed atomic helpers.
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>
    static let slotCount = 4 + DropReason.allCases.count + 2
    /// The gauge after the drop counters: tracked connections.
    static let connectionsSlot = 4 + DropReason.allCases.count
    /// Then (global block) connections evicted to make room in a full table.
    static let evictionsSlot = connectionsSlot + 1

    public init() {
        slots = .allocate(capacity: Self.slotCount)
        slots.initialize(repeating: 0, count: Self.slotCount)
    }

    deinit { slots.deallocate() }

    /// Traffic received from the guest (or the underlay, for the global block).
    @inlinable
    public func countIn(bytes: Int) {
        cbutterfly_counter_add(slots, 1)
        cbutterfly_counter_add(slots + 1, UInt64(bytes))
    }

    /// Traffic delivered to the guest (or sent to the underlay).
    @inlinable
    public func countOut(bytes: Int) {
        cbutterfly_counter_add(slots + 2, 1)
        cbutterfly_counter_add(slots + 3, UInt64(bytes))
    }

    @inlinable
    public func countDrop(_ reason: DropReason, packets: Int = 1) {
        cbutterfly_counter_add(slots + 4 + reason.rawValue, UInt64(packets))
    }

    /// The counter slots, for the packet path to count through without holding the block
    /// (the block must outlive every use: the worker's slot owns it).
    var rawSlots: UnsafeMutablePointer<UInt64> { slots }

    @inline(__always)
    static func countOut(_ slots: UnsafeMutablePointer<UInt64>, bytes: Int) {
        cbutterfly_counter_add(slots + 2, 1)
        cbutterfly_counter_add(slots + 3, UInt64(bytes))
    }

    @inline(__always)
    static func countDrop(_ slots: UnsafeMutablePointer<UInt64>, _ reason: DropReason) {
        cbutterfly_counter_add(slots + 4 + reason.rawValue, 1)
    }

    /// Sets a drop counter kept elsewhere (a port's own, the kernel's) to its current total.
    public func setDrops(_ reason: DropReason, to total: UInt64) {
        cbutterfly_counter_store(slots + 4 + reason.rawValue, total)
    }

    /// A consistent-enough snapshot for the API (each value is exact; they are read one by one).
    public var snapshot: NICCounters {
        var drops: [(reason: String, packets: UInt64)] = []
        for reason in DropReason.allCases {
            let value = cbutterfly_counter_load(slots + 4 + reason.rawValue)
            if value > 0 { drops.append((reason.name, value)) }
        }
        return NICCounters(
            inBytes: cbutterfly_counter_load(slots + 1),
            inPackets: cbutterfly_counter_load(slots),
            outBytes: cbutterfly_counter_load(slots + 3),
            outPackets: cbutterfly_counter_load(slots + 2),
            drops: drops,
            connections: cbutterfly_counter_load(slots + Self.connectionsSlot),
            evictions: cbutterfly_counter_load(slots + Self.evictionsSlot)
        )
    }

    /// Connections evicted from the full table so far (global block; set once a second).
    public func setEvictions(_ value: UInt64) {
        cbutterfly_counter_store(slots + Self.evictionsSlot, value)
    }

    /// Tracked connections (a gauge the worker sets once a second).
    public func setConnections(_ value: UInt64) {
        cbutterfly_counter_store(slots + Self.connectionsSlot, value)
    }

    public var connections: UInt64 { cbutterfly_counter_load(slots + Self.connectionsSlot) }

    public func drops(_ reason: DropReason) -> UInt64 { cbutterfly_counter_load(slots + 4 + reason.rawValue) }
}
