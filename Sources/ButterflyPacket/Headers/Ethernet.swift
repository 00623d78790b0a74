// Ethernet II (DIX) framing: the Length/Type field used as a type (IEEE 802.3 §3.2.6), as IPv4
// (RFC 894) and IPv6 (RFC 2464 §3) use it. Multicast mappings: RFC 1112 §6.4 (IPv4) and
// RFC 2464 §7 (IPv6).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |              destination MAC (octets 0-3)                     |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   | destination MAC (octets 4-5)  |   source MAC (octets 0-1)     |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                source MAC (octets 2-5)                        |  8
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |           EtherType           |  payload …                       12
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The least significant bit of the first octet is the individual/group bit: 1 = multicast
// (broadcast included). MAC addresses are the low 48 bits of a UInt64, first octet highest.

/// EtherType values the data plane dispatches on.
public enum EtherType {
    @inlinable public static var ipv4: UInt16 { 0x0800 }
    @inlinable public static var arp: UInt16 { 0x0806 }
    @inlinable public static var rarp: UInt16 { 0x8035 }
    @inlinable public static var ipv6: UInt16 { 0x86DD }
    /// IEEE 802.1Q tag protocol identifier: a 2-byte tag control field and the real EtherType follow.
    @inlinable public static var vlan: UInt16 { 0x8100 }
}

/// Ethernet II header access. Pointers address the first byte of the frame.
public enum Ethernet {
    @inlinable public static var headerLength: Int { 14 }
    /// Shortest frame on the wire without its FCS (64 − 4); the driver pads shorter ones.
    @inlinable public static var minimumFrameLength: Int { 60 }
    @inlinable public static var broadcast: UInt64 { 0xFFFF_FFFF_FFFF }

    /// The three fields of an Ethernet II header.
    public struct Header: Equatable, Sendable {
        public var destination: UInt64
        public var source: UInt64
        public var etherType: UInt16

        @inlinable
        public init(destination: UInt64, source: UInt64, etherType: UInt16) {
            self.destination = destination
            self.source = source
            self.etherType = etherType
        }
    }

    /// The header, or `nil` when the frame is shorter than 14 bytes.
    @inlinable
    public static func parse(_ frame: UnsafeMutableRawPointer, length: Int) -> Header? {
        guard length >= headerLength else { return nil }
        return Header(
            destination: frame.loadMAC(at: 0),
            source: frame.loadMAC(at: 6),
            etherType: frame.loadBigEndian16(at: 12)
        )
    }

    /// Destination MAC. Unchecked: the caller knows the frame holds at least 14 bytes.
    @inlinable
    public static func destination(_ frame: UnsafeMutableRawPointer) -> UInt64 { frame.loadMAC(at: 0) }

    /// Source MAC. Unchecked: the caller knows the frame holds at least 14 bytes.
    @inlinable
    public static func source(_ frame: UnsafeMutableRawPointer) -> UInt64 { frame.loadMAC(at: 6) }

    /// EtherType. Unchecked: the caller knows the frame holds at least 14 bytes.
    @inlinable
    public static func etherType(_ frame: UnsafeMutableRawPointer) -> UInt16 { frame.loadBigEndian16(at: 12) }

    /// Writes the 14-byte header at `frame`.
    @inlinable
    public static func write(
        _ frame: UnsafeMutableRawPointer,
        destination: UInt64,
        source: UInt64,
        etherType: UInt16
    ) {
        frame.storeMAC(destination, at: 0)
        frame.storeMAC(source, at: 6)
        frame.storeBigEndian16(etherType, at: 12)
    }

    /// True for group addresses (the I/G bit of the first octet), broadcast included.
    @inlinable
    public static func isMulticast(_ mac: UInt64) -> Bool { mac & 0x0100_0000_0000 != 0 }

    @inlinable
    public static func isBroadcast(_ mac: UInt64) -> Bool { mac & 0xFFFF_FFFF_FFFF == 0xFFFF_FFFF_FFFF }

    /// The MAC an IPv4 multicast group maps to: 01:00:5e and the group's low 23 bits (RFC 1112 §6.4).
    @inlinable
    public static func ipv4MulticastMAC(_ group: UInt32) -> UInt64 {
        0x0100_5E00_0000 | UInt64(group & 0x007F_FFFF)
    }

    /// The MAC an IPv6 multicast address maps to: 33:33 and the address's low 32 bits (RFC 2464 §7).
    @inlinable
    public static func ipv6MulticastMAC(_ group: IPv6Address) -> UInt64 {
        0x3333_0000_0000 | (group.low & 0xFFFF_FFFF)
    }
}
