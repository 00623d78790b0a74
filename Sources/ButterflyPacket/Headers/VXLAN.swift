// VXLAN (RFC 7348 §5): an Ethernet frame carried in UDP (destination port 4789) over IPv4 or
// IPv6, behind an 8-byte header naming its 24-bit network (VNI).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |R|R|R|R|I|R|R|R|            Reserved                           |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                VXLAN Network Identifier (VNI) |   Reserved    |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The I flag must be 1; reserved bits are sent as 0 and ignored on receipt. A whole packet on
// the underlay:
//
//   [outer Ethernet 14][outer IPv4 20 | IPv6 40][UDP 8][VXLAN 8][inner Ethernet frame …]
//
// Outer IPv4: TTL 64, DF set (VTEPs must not fragment, RFC 7348 §4.3), UDP checksum 0.
// Outer IPv6: hop limit 64, UDP checksum computed over the whole datagram (RFC 8200 §8.1).
// UDP source port: a hash of the inner frame, in the dynamic range (see `FlowHash`).

/// The VXLAN header.
public enum VXLAN {
    /// IANA-assigned destination port.
    @inlinable public static var udpPort: UInt16 { 4789 }
    @inlinable public static var headerLength: Int { 8 }
    /// The I flag in the first octet: the VNI is valid.
    @inlinable public static var flagI: UInt8 { 0x08 }
    @inlinable public static var maximumVNI: UInt32 { 0x00FF_FFFF }
    /// Outer Ethernet + IPv4 + UDP + VXLAN.
    @inlinable public static var ipv4Overhead: Int { 50 }
    /// Outer Ethernet + IPv6 + UDP + VXLAN.
    @inlinable public static var ipv6Overhead: Int { 70 }

    /// The VNI at `header`, or `nil` when fewer than 8 bytes are available or the I flag is clear.
    @inlinable
    public static func parseVNI(_ header: UnsafeMutableRawPointer, length: Int) -> UInt32? {
        guard length >= headerLength, header.loadByte(at: 0) & flagI != 0 else { return nil }
        return header.loadBigEndian32(at: 4) >> 8
    }

    /// Writes the 8-byte header: I flag, reserved zero, the low 24 bits of `vni`.
    @inlinable
    public static func write(_ header: UnsafeMutableRawPointer, vni: UInt32) {
        header.storeBigEndian32(UInt32(flagI) << 24, at: 0)
        header.storeBigEndian32((vni & maximumVNI) << 8, at: 4)
    }
}

/// An outer (underlay) IP address: a tunnel endpoint.
public enum UnderlayAddress: Hashable, Sendable {
    case v4(UInt32)
    case v6(IPv6Address)
}

/// Prepends outer Ethernet + IP + UDP + VXLAN headers in the headroom of a packet that holds an
/// inner Ethernet frame. The struct keeps one tunnel's constant part (MACs and addresses);
/// the static functions take everything as parameters.
public struct VXLANEncapsulation: Equatable, Sendable {
    public var sourceMAC: UInt64
    public var destinationMAC: UInt64
    /// Must be the same family as `destination`.
    public var source: UnderlayAddress
    public var destination: UnderlayAddress
    public var destinationPort: UInt16

    @inlinable
    public init(
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: UnderlayAddress,
        destination: UnderlayAddress,
        destinationPort: UInt16 = VXLAN.udpPort
    ) {
        self.sourceMAC = sourceMAC
        self.destinationMAC = destinationMAC
        self.source = source
        self.destination = destination
        self.destinationPort = destinationPort
    }

    /// Bytes this tunnel prepends (50 for IPv4, 70 for IPv6).
    @inlinable
    public var overhead: Int {
        if case .v4 = destination { return VXLAN.ipv4Overhead }
        return VXLAN.ipv6Overhead
    }

    /// Encapsulates `packet` in place. False (packet unchanged) when the headroom is too small,
    /// the VNI exceeds 24 bits, the result would exceed 65535 bytes, or the two addresses are
    /// of different families.
    @inlinable
    public func encapsulate(_ packet: inout Packet, pool: PacketPool, vni: UInt32, sourcePort: UInt16) -> Bool {
        switch (source, destination) {
        case (.v4(let sourceIP), .v4(let destinationIP)):
            return Self.encapsulateIPv4(
                &packet,
                pool: pool,
                sourceMAC: sourceMAC,
                destinationMAC: destinationMAC,
                source: sourceIP,
                destination: destinationIP,
                sourcePort: sourcePort,
                vni: vni,
                destinationPort: destinationPort
            )
        case (.v6(let sourceIP), .v6(let destinationIP)):
            return Self.encapsulateIPv6(
                &packet,
                pool: pool,
                sourceMAC: sourceMAC,
                destinationMAC: destinationMAC,
                source: sourceIP,
                destination: destinationIP,
                sourcePort: sourcePort,
                vni: vni,
                destinationPort: destinationPort
            )
        default:
            return false
        }
    }

    /// Prepends Ethernet + IPv4 (TTL 64, DF, checksum) + UDP (checksum 0) + VXLAN (50 bytes).
    @inlinable
    public static func encapsulateIPv4(
        _ packet: inout Packet,
        pool: PacketPool,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: UInt32,
        destination: UInt32,
        sourcePort: UInt16,
        vni: UInt32,
        destinationPort: UInt16 = VXLAN.udpPort
    ) -> Bool {
        let inner = Int(packet.length)
        guard vni <= VXLAN.maximumVNI, inner &+ VXLAN.ipv4Overhead <= 0xFFFF,
            packet.prepend(VXLAN.ipv4Overhead)
        else { return false }
        let frame = pool.data(packet)
        Ethernet.write(frame, destination: destinationMAC, source: sourceMAC, etherType: EtherType.ipv4)
        _ = IPv4.write(
            frame + 14,
            totalLength: inner &+ 36,
            protocol: IPProtocol.udp,
            source: source,
            destination: destination,
            ttl: 64,
            dontFragment: true
        )
        UDP.write(
            frame + 34,
            sourcePort: sourcePort,
            destinationPort: destinationPort,
            length: inner &+ 16,
            checksum: 0
        )
        VXLAN.write(frame + 42, vni: vni)
        return true
    }

    /// Prepends Ethernet + IPv6 (hop limit 64) + UDP (checksum over the whole datagram) +
    /// VXLAN (70 bytes).
    @inlinable
    public static func encapsulateIPv6(
        _ packet: inout Packet,
        pool: PacketPool,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: IPv6Address,
        destination: IPv6Address,
        sourcePort: UInt16,
        vni: UInt32,
        destinationPort: UInt16 = VXLAN.udpPort
    ) -> Bool {
        let inner = Int(packet.length)
        guard vni <= VXLAN.maximumVNI, inner &+ VXLAN.ipv6Overhead <= 0xFFFF,
            packet.prepend(VXLAN.ipv6Overhead)
        else { return false }
        let frame = pool.data(packet)
        let udpLength = inner &+ 16
        Ethernet.write(frame, destination: destinationMAC, source: sourceMAC, etherType: EtherType.ipv6)
        _ = IPv6.write(
            frame + 14,
            payloadLength: udpLength,
            nextHeader: IPProtocol.udp,
            hopLimit: 64,
            source: source,
            destination: destination
        )
        UDP.write(frame + 54, sourcePort: sourcePort, destinationPort: destinationPort, length: udpLength, checksum: 0)
        VXLAN.write(frame + 62, vni: vni)
        UDP.setIPv6Checksum(frame + 54, length: udpLength, source: source, destination: destination)
        return true
    }
}

/// Why an underlay frame was not accepted as VXLAN: one counter per case.
public enum VXLANDropReason: UInt8, CaseIterable, Sendable {
    /// The outer headers (Ethernet, IP, UDP, VXLAN) do not fit, or a length field is inconsistent.
    case truncated
    /// Neither IPv4 nor IPv6, or a bad version / IHL.
    case notIP
    /// The outer IPv4 header checksum is wrong.
    case badIPChecksum
    /// Outer IPv4 with options, or a fragment (VTEPs neither send nor reassemble those).
    case ipOptionsOrFragment
    /// Not UDP (including IPv6 with extension headers before UDP).
    case notUDP
    /// UDP, but not to the VXLAN port.
    case notVXLANPort
    /// The VXLAN I flag is clear.
    case badVXLANFlags
    /// The inner frame is shorter than an Ethernet header.
    case truncatedInner
}

/// What decapsulation learned from the outer headers.
public struct VXLANDecapsulated: Equatable, Sendable {
    public var outerDestinationMAC: UInt64
    public var outerSourceMAC: UInt64
    public var outerSource: UnderlayAddress
    public var outerDestination: UnderlayAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var vni: UInt32
    /// Offset of the inner Ethernet frame from the start of the outer frame.
    public var innerOffset: Int
    /// Length of the inner frame (bounded by the UDP length, so link padding is dropped).
    public var innerLength: Int

    @inlinable
    public init(
        outerDestinationMAC: UInt64,
        outerSourceMAC: UInt64,
        outerSource: UnderlayAddress,
        outerDestination: UnderlayAddress,
        sourcePort: UInt16,
        destinationPort: UInt16,
        vni: UInt32,
        innerOffset: Int,
        innerLength: Int
    ) {
        self.outerDestinationMAC = outerDestinationMAC
        self.outerSourceMAC = outerSourceMAC
        self.outerSource = outerSource
        self.outerDestination = outerDestination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.vni = vni
        self.innerOffset = innerOffset
        self.innerLength = innerLength
    }
}

public enum VXLANDecapsulationResult: Equatable, Sendable {
    case frame(VXLANDecapsulated)
    case drop(VXLANDropReason)
}

/// Recognises VXLAN frames received on the underlay.
///
/// Checks the outer IPv4 header checksum. Does not check the UDP checksum (0 over IPv4 is
/// normal; over IPv6 a caller that wants it calls `UDP.verifyIPv6Checksum`, unless the NIC
/// already validated it), nor whether the outer destination is this VTEP (the caller's policy).
public enum VXLANDecapsulation {
    /// Parses the outer headers of the underlay frame at `frame`.
    @inlinable
    public static func parse(
        _ frame: UnsafeMutableRawPointer,
        length: Int,
        port: UInt16 = VXLAN.udpPort
    ) -> VXLANDecapsulationResult {
        guard length >= Ethernet.headerLength else { return .drop(.truncated) }
        let etherType = frame.loadBigEndian16(at: 12)
        let udpOffset: Int
        let end: Int
        let outerSource: UnderlayAddress
        let outerDestination: UnderlayAddress
        if etherType == EtherType.ipv4 {
            guard length >= 14 + 20 else { return .drop(.truncated) }
            let ip = frame + 14
            let versionAndIHL = ip.loadByte(at: 0)
            guard versionAndIHL >> 4 == 4, versionAndIHL & 0x0F >= 5 else { return .drop(.notIP) }
            guard versionAndIHL & 0x0F == 5 else { return .drop(.ipOptionsOrFragment) }
            let totalLength = Int(ip.loadBigEndian16(at: 2))
            guard totalLength >= 20, 14 &+ totalLength <= length else { return .drop(.truncated) }
            guard InternetChecksum.compute(ip, length: 20) == 0 else { return .drop(.badIPChecksum) }
            guard ip.loadBigEndian16(at: 6) & 0x3FFF == 0 else { return .drop(.ipOptionsOrFragment) }
            guard ip.loadByte(at: 9) == IPProtocol.udp else { return .drop(.notUDP) }
            outerSource = .v4(ip.loadBigEndian32(at: 12))
            outerDestination = .v4(ip.loadBigEndian32(at: 16))
            udpOffset = 34
            end = 14 &+ totalLength
        } else if etherType == EtherType.ipv6 {
            guard length >= 14 + 40 else { return .drop(.truncated) }
            let ip = frame + 14
            guard ip.loadByte(at: 0) >> 4 == 6 else { return .drop(.notIP) }
            let payloadLength = Int(ip.loadBigEndian16(at: 4))
            guard 54 &+ payloadLength <= length else { return .drop(.truncated) }
            guard ip.loadByte(at: 6) == IPProtocol.udp else { return .drop(.notUDP) }
            outerSource = .v6(ip.loadIPv6Address(at: 8))
            outerDestination = .v6(ip.loadIPv6Address(at: 24))
            udpOffset = 54
            end = 54 &+ payloadLength
        } else {
            return .drop(.notIP)
        }
        guard udpOffset &+ 8 <= end else { return .drop(.truncated) }
        let udp = frame + udpOffset
        let udpLength = Int(udp.loadBigEndian16(at: 4))
        guard udpLength >= 8, udpOffset &+ udpLength <= end else { return .drop(.truncated) }
        let destinationPort = udp.loadBigEndian16(at: 2)
        guard destinationPort == port else { return .drop(.notVXLANPort) }
        guard udpLength >= 16 else { return .drop(.truncated) }
        let header = udp + 8
        guard header.loadByte(at: 0) & VXLAN.flagI != 0 else { return .drop(.badVXLANFlags) }
        let innerLength = udpLength &- 16
        guard innerLength >= Ethernet.headerLength else { return .drop(.truncatedInner) }
        return .frame(
            VXLANDecapsulated(
                outerDestinationMAC: frame.loadMAC(at: 0),
                outerSourceMAC: frame.loadMAC(at: 6),
                outerSource: outerSource,
                outerDestination: outerDestination,
                sourcePort: udp.loadBigEndian16(at: 0),
                destinationPort: destinationPort,
                vni: header.loadBigEndian32(at: 4) >> 8,
                innerOffset: udpOffset &+ 16,
                innerLength: innerLength
            )
        )
    }

    /// Parses `packet` and, when it is VXLAN, strips the outer headers in place: the packet
    /// then holds exactly the inner frame and `packet.vni` is set. On a drop it is unchanged.
    @inlinable
    public static func decapsulate(
        _ packet: inout Packet,
        pool: PacketPool,
        port: UInt16 = VXLAN.udpPort
    ) -> VXLANDecapsulationResult {
        let result = parse(pool.data(packet), length: Int(packet.length), port: port)
        if case .frame(let decapsulated) = result {
            _ = packet.removeFront(decapsulated.innerOffset)
            packet.length = UInt16(truncatingIfNeeded: decapsulated.innerLength)
            packet.vni = decapsulated.vni
        }
        return result
    }
}
