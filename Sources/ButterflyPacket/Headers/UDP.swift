// UDP header (RFC 768). Checksum over IPv4 is optional (0 = none; RFC 7348 §5 lets VXLAN send
// 0); over IPv6 it is mandatory and covers the pseudo-header of RFC 8200 §8.1. A computed
// checksum of 0 is sent as 0xFFFF (RFC 768, RFC 8200 §8.1).
//
//    0      7 8     15 16    23 24    31
//   +--------+--------+--------+--------+
//   |   Source Port   |Destination Port |  0
//   +--------+--------+--------+--------+
//   |     Length      |    Checksum     |  4
//   +--------+--------+--------+--------+
//   |          data octets ...             8
//   +---------------- ...
//
// Length counts header + data (at least 8).

/// UDP header parsing and building. Pointers address the first byte of the UDP header.
public enum UDP {
    @inlinable public static var headerLength: Int { 8 }

    public struct Header: Equatable, Sendable {
        public var sourcePort: UInt16
        public var destinationPort: UInt16
        /// Header + data, as the header states (8…available).
        public var length: Int
        public var checksum: UInt16

        @inlinable
        public init(sourcePort: UInt16, destinationPort: UInt16, length: Int, checksum: UInt16) {
            self.sourcePort = sourcePort
            self.destinationPort = destinationPort
            self.length = length
            self.checksum = checksum
        }
    }

    /// The header at `datagram`, or `nil` when fewer than 8 bytes are available or the length
    /// field is below 8 or beyond `available` (the IP payload length).
    @inlinable
    public static func parse(_ datagram: UnsafeMutableRawPointer, length available: Int) -> Header? {
        guard available >= headerLength else { return nil }
        let length = Int(datagram.loadBigEndian16(at: 4))
        guard length >= headerLength, length <= available else { return nil }
        return Header(
            sourcePort: datagram.loadBigEndian16(at: 0),
            destinationPort: datagram.loadBigEndian16(at: 2),
            length: length,
            checksum: datagram.loadBigEndian16(at: 6)
        )
    }

    /// Writes the 8-byte header. `length` includes the header.
    @inlinable
    public static func write(
        _ datagram: UnsafeMutableRawPointer,
        sourcePort: UInt16,
        destinationPort: UInt16,
        length: Int,
        checksum: UInt16 = 0
    ) {
        datagram.storeBigEndian16(sourcePort, at: 0)
        datagram.storeBigEndian16(destinationPort, at: 2)
        datagram.storeBigEndian16(UInt16(truncatingIfNeeded: length), at: 4)
        datagram.storeBigEndian16(checksum, at: 6)
    }

    /// The checksum field value for the `length`-byte datagram with the given pseudo-header
    /// sum, treating the checksum field as zero whatever it holds; 0 becomes 0xFFFF.
    @inlinable
    static func checksum(_ datagram: UnsafeMutableRawPointer, length: Int, pseudoHeaderSum: UInt32) -> UInt16 {
        // Bytes 0..<6 and 8..<length: both pieces start at even offsets, so the words line up.
        var sum = InternetChecksum.add(datagram, length: 6, to: pseudoHeaderSum)
        sum = InternetChecksum.add(datagram + 8, length: length &- 8, to: sum)
        let value = InternetChecksum.finish(sum)
        return value == 0 ? 0xFFFF : value
    }

    /// The checksum of a UDP datagram over IPv6 (RFC 8200 §8.1). `length` is the whole datagram.
    @inlinable
    public static func ipv6Checksum(
        _ datagram: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) -> UInt16 {
        let pseudo = IPv6.pseudoHeaderSum(
            source: source,
            destination: destination,
            upperLayerLength: length,
            nextHeader: IPProtocol.udp
        )
        return checksum(datagram, length: length, pseudoHeaderSum: pseudo)
    }

    /// Computes and stores the IPv6 checksum.
    @inlinable
    public static func setIPv6Checksum(
        _ datagram: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) {
        datagram.storeBigEndian16(
            ipv6Checksum(datagram, length: length, source: source, destination: destination),
            at: 6
        )
    }

    /// True when the stored IPv6 checksum is right. A zero checksum is invalid over IPv6
    /// (RFC 8200 §8.1); tunnel endpoints that accept it (RFC 6935) check for 0 first.
    @inlinable
    public static func verifyIPv6Checksum(
        _ datagram: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) -> Bool {
        guard length >= headerLength, datagram.loadBigEndian16(at: 6) != 0 else { return false }
        let pseudo = IPv6.pseudoHeaderSum(
            source: source,
            destination: destination,
            upperLayerLength: length,
            nextHeader: IPProtocol.udp
        )
        return InternetChecksum.finish(InternetChecksum.add(datagram, length: length, to: pseudo)) == 0
    }

    /// The checksum of a UDP datagram over IPv4 (RFC 768), for when one is wanted.
    @inlinable
    public static func ipv4Checksum(
        _ datagram: UnsafeMutableRawPointer,
        length: Int,
        source: UInt32,
        destination: UInt32
    ) -> UInt16 {
        let pseudo = IPv4.pseudoHeaderSum(
            source: source,
            destination: destination,
            protocol: IPProtocol.udp,
            length: length
        )
        return checksum(datagram, length: length, pseudoHeaderSum: pseudo)
    }

    /// True when the IPv4 checksum is 0 (not used) or right.
    @inlinable
    public static func verifyIPv4Checksum(
        _ datagram: UnsafeMutableRawPointer,
        length: Int,
        source: UInt32,
        destination: UInt32
    ) -> Bool {
        guard length >= headerLength else { return false }
        if datagram.loadBigEndian16(at: 6) == 0 { return true }
        let pseudo = IPv4.pseudoHeaderSum(
            source: source,
            destination: destination,
            protocol: IPProtocol.udp,
            length: length
        )
        return InternetChecksum.finish(InternetChecksum.add(datagram, length: length, to: pseudo)) == 0
    }
}
