/// Remembers the datagrams whose first fragment the firewall let through, so that their later
/// fragments (which carry no ports) follow the same verdict, and nothing else does.
///
/// A small fixed table (direct-mapped: a colliding datagram replaces the older one). Losing an
/// entry can only drop later fragments, never let one through: a later fragment passes only
/// when its exact datagram identity (NIC zone, direction, addresses, protocol, id) is here and
/// younger than `lifetime` seconds (RFC 791's reassembly timeout order of magnitude). IPv6
/// datagrams are given protocol 0: RFC 8200 §4.5 identifies them without one.
public final class FragmentTable {
    struct Slot {
        var source: UInt128 = 0
        var destination: UInt128 = 0
        var identification: UInt32 = 0
        var zone: UInt32 = 0
        var expires: UInt32 = 0
        var ipProtocol: UInt8 = 0
        var toGuest = false
        var used = false
    }

    let mask: Int
    private let slots: UnsafeMutablePointer<Slot>
    public let lifetime: UInt32 = 30

    public init(size: Int = 4096) {
        precondition(size > 0 && size & (size - 1) == 0, "fragment table size must be a power of two")
        mask = size - 1
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(), count: size)
    }

    deinit { slots.deallocate() }

    @inline(__always)
    private func position(_ zone: UInt32, _ source: UInt128, _ identification: UInt32, _ toGuest: Bool) -> Int {
        var value = UInt64(truncatingIfNeeded: source) ^ UInt64(identification) << 17 ^ UInt64(zone) << 40
        if toGuest { value ^= 0x5555 }
        value = (value ^ (value >> 29)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: value >> 40) & mask
    }

    /// A first fragment passed the firewall.
    public func allow(
        zone: UInt32,
        toGuest: Bool,
        ipProtocol: UInt8,
        source: UInt128,
        destination: UInt128,
        identification: UInt32,
        now: UInt32
    ) {
        slots[position(zone, source, identification, toGuest)] = Slot(
            source: source,
            destination: destination,
            identification: identification,
            zone: zone,
            expires: now &+ lifetime,
            ipProtocol: ipProtocol,
            toGuest: toGuest,
            used: true
        )
    }

    /// True when a later fragment belongs to a datagram whose first fragment passed.
    public func allows(
        zone: UInt32,
        toGuest: Bool,
        ipProtocol: UInt8,
        source: UInt128,
        destination: UInt128,
        identification: UInt32,
        now: UInt32
    ) -> Bool {
        let slot = slots[position(zone, source, identification, toGuest)]
        return slot.used && slot.expires >= now && slot.zone == zone && slot.toGuest == toGuest
            && slot.ipProtocol == ipProtocol && slot.source == source && slot.destination == destination
            && slot.identification == identification
    }
}
