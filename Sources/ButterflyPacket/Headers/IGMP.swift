// IGMPv2 (RFC 2236 §2): membership reports and leaves a host sends, and recognising a router's
// query (version by RFC 3376 §7.1). Sent with TTL 1 and the IPv4 Router Alert option
// (RFC 2236 §2, RFC 2113 §2.1).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |      Type     | Max Resp Time |           Checksum            |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                         Group Address                         |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   8 bytes
//
// Types: 0x11 Membership Query, 0x16 v2 Membership Report, 0x17 Leave Group (0x12 v1 report,
// 0x22 v3 report). The checksum covers the whole IGMP message (the IP payload). A report goes
// to the group, a leave to 224.0.0.2 (all routers). Max Resp Time is in tenths of a second.
//
// Frame built here: [Ethernet 14][IPv4 + Router Alert 24][IGMP 8] = 46 bytes (the driver pads
// to the 60-byte minimum).

/// IGMPv2 messages.
public enum IGMP {
    @inlinable public static var membershipQuery: UInt8 { 0x11 }
    @inlinable public static var membershipReportV1: UInt8 { 0x12 }
    @inlinable public static var membershipReportV2: UInt8 { 0x16 }
    @inlinable public static var leaveGroup: UInt8 { 0x17 }
    @inlinable public static var membershipReportV3: UInt8 { 0x22 }

    @inlinable public static var messageLength: Int { 8 }
    /// Ethernet + IPv4 with Router Alert + IGMP.
    @inlinable public static var frameLength: Int { 46 }
    /// Type of service Linux uses for IGMP (precedence "internetwork control").
    @inlinable public static var typeOfService: UInt8 { 0xC0 }

    /// The fixed part of any IGMP message.
    public struct Message: Equatable, Sendable {
        public var type: UInt8
        public var maximumResponseTime: UInt8
        public var group: UInt32

        @inlinable
        public init(type: UInt8, maximumResponseTime: UInt8, group: UInt32) {
            self.type = type
            self.maximumResponseTime = maximumResponseTime
            self.group = group
        }
    }

    /// A Membership Query.
    public struct Query: Equatable, Sendable {
        /// 0 for a general query, else the group asked about.
        public var group: UInt32
        /// Tenths of a second (IGMPv3's exponential code decoded, RFC 3376 §4.1.1).
        public var maximumResponseTime: UInt32
        /// 1, 2 or 3 by RFC 3376 §7.1: v1 = 8 bytes with time 0, v2 = 8 bytes, v3 = 12 or more.
        public var version: UInt8

        @inlinable
        public init(group: UInt32, maximumResponseTime: UInt32, version: UInt8) {
            self.group = group
            self.maximumResponseTime = maximumResponseTime
            self.version = version
        }

        @inlinable public var isGeneral: Bool { group == 0 }
    }

    /// The IGMP message at `message` (`length` = the IP payload length), or `nil` when shorter
    /// than 8 bytes or the checksum over `length` bytes is wrong.
    @inlinable
    public static func parse(_ message: UnsafeMutableRawPointer, length: Int) -> Message? {
        guard length >= messageLength, InternetChecksum.compute(message, length: length) == 0 else { return nil }
        return Message(
            type: message.loadByte(at: 0),
            maximumResponseTime: message.loadByte(at: 1),
            group: message.loadBigEndian32(at: 4)
        )
    }

    /// The Membership Query in the IPv4 packet at `packet` (after the Ethernet header), or
    /// `nil` unless it is a valid, unfragmented IPv4 packet of protocol 2 carrying a query
    /// with a correct checksum.
    @inlinable
    public static func parseQuery(_ packet: UnsafeMutableRawPointer, length: Int) -> Query? {
        guard let ip = IPv4.parse(packet, length: length), ip.protocol == IPProtocol.igmp, !ip.isFragment,
            IPv4.verifyChecksum(packet, headerLength: ip.headerLength)
        else { return nil }
        let payloadLength = ip.payloadLength
        guard let message = parse(packet + ip.headerLength, length: payloadLength), message.type == membershipQuery
        else { return nil }
        if payloadLength >= 12 {
            let code = UInt32(message.maximumResponseTime)
            var time = code
            if code >= 0x80 { time = ((code & 0x0F) | 0x10) << (((code >> 4) & 0x7) &+ 3) }
            return Query(group: message.group, maximumResponseTime: time, version: 3)
        }
        return Query(
            group: message.group,
            maximumResponseTime: UInt32(message.maximumResponseTime),
            version: message.maximumResponseTime == 0 ? 1 : 2
        )
    }

    /// A v2 Membership Report for `group`, sent to the group (46 bytes). Returns the frame length.
    @inlinable
    public static func buildReport(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        source: UInt32,
        group: UInt32
    ) -> Int {
        writeFrame(
            frame,
            type: membershipReportV2,
            sourceMAC: sourceMAC,
            source: source,
            destination: group,
            group: group
        )
    }

    /// A Leave Group for `group`, sent to 224.0.0.2 (46 bytes). Returns the frame length.
    @inlinable
    public static func buildLeave(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        source: UInt32,
        group: UInt32
    ) -> Int {
        writeFrame(
            frame,
            type: leaveGroup,
            sourceMAC: sourceMAC,
            source: source,
            destination: IPv4.allRouters,
            group: group
        )
    }

    @inlinable
    static func writeFrame(
        _ frame: UnsafeMutableRawPointer,
        type: UInt8,
        sourceMAC: UInt64,
        source: UInt32,
        destination: UInt32,
        group: UInt32
    ) -> Int {
        Ethernet.write(
            frame,
            destination: Ethernet.ipv4MulticastMAC(destination),
            source: sourceMAC,
            etherType: EtherType.ipv4
        )
        let headerLength = IPv4.write(
            frame + Ethernet.headerLength,
            totalLength: IPv4.routerAlertHeaderLength &+ messageLength,
            protocol: IPProtocol.igmp,
            source: source,
            destination: destination,
            ttl: 1,
            dontFragment: true,
            typeOfService: typeOfService,
            routerAlert: true
        )
        let message = frame + (Ethernet.headerLength &+ headerLength)
        message.storeByte(type, at: 0)
        message.storeByte(0, at: 1)
        message.storeBigEndian16(0, at: 2)
        message.storeBigEndian32(group, at: 4)
        message.storeBigEndian16(InternetChecksum.compute(message, length: messageLength), at: 2)
        return frameLength
    }
}
