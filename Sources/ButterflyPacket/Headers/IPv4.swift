// IPv4 header (RFC 791 §3.1); Router Alert option (RFC 2113 §2.1).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version|  IHL  |Type of Service|          Total Length         |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |         Identification        |0|D|M|     Fragment Offset     |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  Time to Live |    Protocol   |         Header Checksum       |  8
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                       Source Address                          | 12
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Destination Address                        | 16
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Options (IHL > 5)          |    Padding    | 20
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// IHL counts 32-bit words (5…15). D = don't fragment, M = more fragments. The header checksum is
// the Internet checksum of the header alone. Router Alert option: 0x94 0x04 0x00 0x00.
// Addresses are UInt32 holding the numeric value (198.51.100.1 = 0xC633_6401).

/// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers").
public enum IPProtocol {
    @inlinable public static var hopByHop: UInt8 { 0 }
    @inlinable public static var icmp: UInt8 { 1 }
    @inlinable public static var igmp: UInt8 { 2 }
    @inlinable public static var tcp: UInt8 { 6 }
    @inlinable public static var udp: UInt8 { 17 }
    @inlinable public static var routing: UInt8 { 43 }
    @inlinable public static var fragment: UInt8 { 44 }
    @inlinable public static var icmpv6: UInt8 { 58 }
    @inlinable public static var noNextHeader: UInt8 { 59 }
    @inlinable public static var destinationOptions: UInt8 { 60 }
    @inlinable public static var sctp: UInt8 { 132 }
}

/// IPv4 header parsing and building. Pointers address the first byte of the IPv4 header.
public enum IPv4 {
    /// Header without options (IHL 5).
    @inlinable public static var minimumHeaderLength: Int { 20 }
    /// Header with the 4-byte Router Alert option (IHL 6).
    @inlinable public static var routerAlertHeaderLength: Int { 24 }
    /// 224.0.0.1
    @inlinable public static var allSystems: UInt32 { 0xE000_0001 }
    /// 224.0.0.2
    @inlinable public static var allRouters: UInt32 { 0xE000_0002 }

    /// What the data plane needs from a validated IPv4 header.
    public struct Header: Equatable, Sendable {
        /// IHL × 4: 20…60.
        public var headerLength: Int
        /// Header + payload, as the header states; never more than the bytes available.
        public var totalLength: Int
        public var `protocol`: UInt8
        public var ttl: UInt8
        public var typeOfService: UInt8
        public var source: UInt32
        public var destination: UInt32
        /// MF set or a non-zero fragment offset: a piece of a larger datagram.
        public var isFragment: Bool
        /// IHL > 5.
        public var hasOptions: Bool

        @inlinable
        public init(
            headerLength: Int,
            totalLength: Int,
            protocol: UInt8,
            ttl: UInt8,
            typeOfService: UInt8,
            source: UInt32,
            destination: UInt32,
            isFragment: Bool,
            hasOptions: Bool
        ) {
            self.headerLength = headerLength
            self.totalLength = totalLength
            self.protocol = `protocol`
            self.ttl = ttl
            self.typeOfService = typeOfService
            self.source = source
            self.destination = destination
            self.isFragment = isFragment
            self.hasOptions = hasOptions
        }

        /// Bytes after the header.
        @inlinable public var payloadLength: Int { totalLength &- headerLength }
    }

    /// The header at `packet`, or `nil` when fewer than 20 bytes are available, the version is
    /// not 4, IHL < 5, or the total length is below the header length or beyond `length`. The
    /// checksum is not checked here (see `verifyChecksum`).
    @inlinable
    public static func parse(_ packet: UnsafeMutableRawPointer, length: Int) -> Header? {
        guard length >= minimumHeaderLength else { return nil }
        let versionAndIHL = packet.loadByte(at: 0)
        guard versionAndIHL >> 4 == 4 else { return nil }
        let headerLength = Int(versionAndIHL & 0x0F) &* 4
        guard headerLength >= minimumHeaderLength else { return nil }
        let totalLength = Int(packet.loadBigEndian16(at: 2))
        guard totalLength >= headerLength, totalLength <= length else { return nil }
        let fragment = packet.loadBigEndian16(at: 6)
        return Header(
            headerLength: headerLength,
            totalLength: totalLength,
            protocol: packet.loadByte(at: 9),
            ttl: packet.loadByte(at: 8),
            typeOfService: packet.loadByte(at: 1),
            source: packet.loadBigEndian32(at: 12),
            destination: packet.loadBigEndian32(at: 16),
            isFragment: fragment & 0x3FFF != 0,
            hasOptions: headerLength > minimumHeaderLength
        )
    }

    /// True when the header checksum over `headerLength` bytes is correct.
    @inlinable
    public static func verifyChecksum(_ packet: UnsafeMutableRawPointer, headerLength: Int) -> Bool {
        InternetChecksum.compute(packet, length: headerLength) == 0
    }

    /// Recomputes and stores the header checksum.
    @inlinable
    public static func setChecksum(_ packet: UnsafeMutableRawPointer, headerLength: Int) {
        packet.storeBigEndian16(0, at: 10)
        packet.storeBigEndian16(InternetChecksum.compute(packet, length: headerLength), at: 10)
    }

    /// Writes a header with checksum: IHL 5, or IHL 6 with a Router Alert option when
    /// `routerAlert` is set. `totalLength` includes this header. Returns the header length.
    @inlinable
    public static func write(
        _ packet: UnsafeMutableRawPointer,
        totalLength: Int,
        protocol proto: UInt8,
        source: UInt32,
        destination: UInt32,
        ttl: UInt8 = 64,
        dontFragment: Bool = true,
        identification: UInt16 = 0,
        typeOfService: UInt8 = 0,
        routerAlert: Bool = false
    ) -> Int {
        let headerLength = routerAlert ? routerAlertHeaderLength : minimumHeaderLength
        packet.storeByte(routerAlert ? 0x46 : 0x45, at: 0)
        packet.storeByte(typeOfService, at: 1)
        packet.storeBigEndian16(UInt16(truncatingIfNeeded: totalLength), at: 2)
        packet.storeBigEndian16(identification, at: 4)
        packet.storeBigEndian16(dontFragment ? 0x4000 : 0, at: 6)
        packet.storeByte(ttl, at: 8)
        packet.storeByte(proto, at: 9)
        packet.storeBigEndian16(0, at: 10)
        packet.storeBigEndian32(source, at: 12)
        packet.storeBigEndian32(destination, at: 16)
        if routerAlert { packet.storeBigEndian32(0x9404_0000, at: 20) }
        // The checksum from the field values, not by reading back the bytes just stored: wide
        // loads over fresh narrow stores wait for them to drain (store forwarding), which made
        // this sum a tenth of the encapsulation path's time.
        var sum = UInt32(routerAlert ? 0x46 : 0x45) << 8 | UInt32(typeOfService)
        sum &+= UInt32(UInt16(truncatingIfNeeded: totalLength)) &+ UInt32(identification)
        sum &+= (dontFragment ? 0x4000 : 0) &+ (UInt32(ttl) << 8 | UInt32(proto))
        sum &+= source >> 16 &+ (source & 0xFFFF) &+ destination >> 16 &+ (destination & 0xFFFF)
        if routerAlert { sum &+= 0x9404 }
        packet.storeBigEndian16(InternetChecksum.finish(sum), at: 10)
        return headerLength
    }

    /// 224.0.0.0/4.
    @inlinable
    public static func isMulticast(_ address: UInt32) -> Bool { address >> 28 == 0xE }

    /// The unfolded sum of the TCP/UDP pseudo-header (RFC 768): source, destination, zero,
    /// protocol, and the upper-layer length. Feed it to `InternetChecksum.add(_:length:to:)`.
    @inlinable
    public static func pseudoHeaderSum(
        source: UInt32,
        destination: UInt32,
        protocol proto: UInt8,
        length: Int
    ) -> UInt32 {
        (source >> 16) &+ (source & 0xFFFF) &+ (destination >> 16) &+ (destination & 0xFFFF)
            &+ UInt32(proto) &+ UInt32(truncatingIfNeeded: length & 0xFFFF)
    }
}
