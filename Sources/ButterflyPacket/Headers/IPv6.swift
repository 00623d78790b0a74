// IPv6 fixed header (RFC 8200 §3), extension header chaining (RFC 8200 §4), upper-layer
// checksum pseudo-header (RFC 8200 §8.1), solicited-node multicast addresses (RFC 4291 §2.7.1).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version| Traffic Class |           Flow Label                  |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |         Payload Length        |  Next Header  |   Hop Limit   |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                                                               |
//   +                    Source Address (128 bits)                  +  8
//   |                                                               |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                                                               |
//   +                 Destination Address (128 bits)                + 24
//   |                                                               |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   40 bytes
//
// Pseudo-header for upper-layer checksums (RFC 8200 §8.1): source, destination, 32-bit
// upper-layer length, three zero bytes, next header.

/// An IPv6 address as two 64-bit halves holding the address's numeric value
/// (2001:db8::1 = high 0x2001_0DB8_0000_0000, low 1).
public struct IPv6Address: Hashable, Sendable {
    public var high: UInt64
    public var low: UInt64

    @inlinable
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// ::
    @inlinable public static var unspecified: IPv6Address { IPv6Address(high: 0, low: 0) }
    /// ff02::1, all nodes on the link.
    @inlinable public static var allNodes: IPv6Address { IPv6Address(high: 0xFF02_0000_0000_0000, low: 1) }
    /// ff02::2, all routers on the link (MLDv1 Done goes there).
    @inlinable public static var allRouters: IPv6Address { IPv6Address(high: 0xFF02_0000_0000_0000, low: 2) }

    @inlinable public var isUnspecified: Bool { high == 0 && low == 0 }
    /// ff00::/8.
    @inlinable public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10.
    @inlinable public var isLinkLocalUnicast: Bool { high >> 54 == 0x3FA }
    /// ff02::1:ff00:0/104.
    @inlinable public var isSolicitedNodeMulticast: Bool {
        high == 0xFF02_0000_0000_0000 && low & 0xFFFF_FFFF_FF00_0000 == 0x0000_0001_FF00_0000
    }

    /// ff02::1:ffXX:XXXX, XX:XXXX being the low 24 bits of `address` (RFC 4291 §2.7.1).
    @inlinable
    public static func solicitedNode(for address: IPv6Address) -> IPv6Address {
        IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (address.low & 0x00FF_FFFF))
    }

    /// The unfolded Internet-checksum sum of the address's eight 16-bit words.
    @inlinable
    public var checksumSum: UInt32 {
        Self.wordSum(high) &+ Self.wordSum(low)
    }

    @inlinable
    static func wordSum(_ value: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: value >> 48) &+ UInt32(truncatingIfNeeded: (value >> 32) & 0xFFFF)
            &+ UInt32(truncatingIfNeeded: (value >> 16) & 0xFFFF) &+ UInt32(truncatingIfNeeded: value & 0xFFFF)
    }
}

extension UnsafeMutableRawPointer {
    /// The 16-byte IPv6 address at `offset` (unaligned, network order).
    @inlinable
    public func loadIPv6Address(at offset: Int) -> IPv6Address {
        IPv6Address(
            high: UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
            low: UInt64(bigEndian: loadUnaligned(fromByteOffset: offset &+ 8, as: UInt64.self))
        )
    }

    @inlinable
    public func storeIPv6Address(_ address: IPv6Address, at offset: Int) {
        storeBytes(of: address.high.bigEndian, toByteOffset: offset, as: UInt64.self)
        storeBytes(of: address.low.bigEndian, toByteOffset: offset &+ 8, as: UInt64.self)
    }
}

/// IPv6 fixed-header parsing and building. Pointers address the first byte of the IPv6 header.
public enum IPv6 {
    @inlinable public static var headerLength: Int { 40 }
    /// Extension headers `upperLayer` walks before giving up.
    @inlinable public static var maximumExtensionHeaders: Int { 8 }

    /// The fixed header's fields.
    public struct Header: Equatable, Sendable {
        /// Bytes after the fixed header (extension headers included).
        public var payloadLength: Int
        public var nextHeader: UInt8
        public var hopLimit: UInt8
        public var trafficClass: UInt8
        public var flowLabel: UInt32
        public var source: IPv6Address
        public var destination: IPv6Address

        @inlinable
        public init(
            payloadLength: Int,
            nextHeader: UInt8,
            hopLimit: UInt8,
            trafficClass: UInt8,
            flowLabel: UInt32,
            source: IPv6Address,
            destination: IPv6Address
        ) {
            self.payloadLength = payloadLength
            self.nextHeader = nextHeader
            self.hopLimit = hopLimit
            self.trafficClass = trafficClass
            self.flowLabel = flowLabel
            self.source = source
            self.destination = destination
        }

        /// Fixed header + payload.
        @inlinable public var totalLength: Int { 40 &+ payloadLength }
    }

    /// The fixed header at `packet`, or `nil` when fewer than 40 bytes are available, the
    /// version is not 6, or the payload length runs beyond `length`. Jumbograms (payload
    /// length 0 with a Jumbo option) are not supported: the payload is taken as empty.
    @inlinable
    public static func parse(_ packet: UnsafeMutableRawPointer, length: Int) -> Header? {
        guard length >= headerLength else { return nil }
        let first = packet.loadBigEndian32(at: 0)
        guard first >> 28 == 6 else { return nil }
        let payloadLength = Int(packet.loadBigEndian16(at: 4))
        guard headerLength &+ payloadLength <= length else { return nil }
        return Header(
            payloadLength: payloadLength,
            nextHeader: packet.loadByte(at: 6),
            hopLimit: packet.loadByte(at: 7),
            trafficClass: UInt8(truncatingIfNeeded: first >> 20),
            flowLabel: first & 0x000F_FFFF,
            source: packet.loadIPv6Address(at: 8),
            destination: packet.loadIPv6Address(at: 24)
        )
    }

    /// Writes the 40-byte fixed header. Returns 40.
    @inlinable
    public static func write(
        _ packet: UnsafeMutableRawPointer,
        payloadLength: Int,
        nextHeader: UInt8,
        hopLimit: UInt8,
        source: IPv6Address,
        destination: IPv6Address,
        trafficClass: UInt8 = 0,
        flowLabel: UInt32 = 0
    ) -> Int {
        packet.storeBigEndian32(0x6000_0000 | UInt32(trafficClass) << 20 | (flowLabel & 0x000F_FFFF), at: 0)
        packet.storeBigEndian16(UInt16(truncatingIfNeeded: payloadLength), at: 4)
        packet.storeByte(nextHeader, at: 6)
        packet.storeByte(hopLimit, at: 7)
        packet.storeIPv6Address(source, at: 8)
        packet.storeIPv6Address(destination, at: 24)
        return headerLength
    }

    /// Skips Hop-by-Hop, Routing and Destination Options headers (RFC 8200 §4.3-4.6) after the
    /// fixed header of `header`'s packet. Returns the first other next-header value (a Fragment
    /// header, 44, is returned as such) and its offset from the start of the IPv6 header, or
    /// `nil` when an extension header runs past the payload or there are more than
    /// `maximumExtensionHeaders`.
    @inlinable
    public static func upperLayer(_ packet: UnsafeMutableRawPointer, header: Header) -> (
        nextHeader: UInt8, offset: Int
    )? {
        let end = headerLength &+ header.payloadLength
        var next = header.nextHeader
        var offset = headerLength
        var remaining = maximumExtensionHeaders
        while next == IPProtocol.hopByHop || next == IPProtocol.routing || next == IPProtocol.destinationOptions {
            guard remaining > 0, offset &+ 8 <= end else { return nil }
            remaining &-= 1
            let extensionLength = (Int(packet.loadByte(at: offset &+ 1)) &+ 1) &* 8
            guard offset &+ extensionLength <= end else { return nil }
            next = packet.loadByte(at: offset)
            offset &+= extensionLength
        }
        return (next, offset)
    }

    /// The unfolded sum of the upper-layer pseudo-header (RFC 8200 §8.1). Feed it to
    /// `InternetChecksum.add(_:length:to:)` with the upper-layer message.
    @inlinable
    public static func pseudoHeaderSum(
        source: IPv6Address,
        destination: IPv6Address,
        upperLayerLength: Int,
        nextHeader: UInt8
    ) -> UInt32 {
        let length = UInt32(truncatingIfNeeded: upperLayerLength)
        return source.checksumSum &+ destination.checksumSum &+ (length >> 16) &+ (length & 0xFFFF)
            &+ UInt32(nextHeader)
    }
}
