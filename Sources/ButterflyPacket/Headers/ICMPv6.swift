// ICMPv6 (RFC 4443 §2.1, checksum §2.3 with the RFC 8200 §8.1 pseudo-header), Neighbor
// Solicitation / Advertisement (RFC 4861 §4.3, §4.4), link-layer address options (RFC 4861
// §4.6.1), message validation (RFC 4861 §7.1.1, §7.1.2), answering a solicitation (§7.2.4),
// and MLDv1 (RFC 2710 §3, Router Alert option RFC 2711 §2.1).
//
// Every ICMPv6 message:
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Type      |     Code      |          Checksum             |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Neighbor Solicitation (135) / Advertisement (136):
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |R|S|O|                     Reserved (NS: all 32 bits)          |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                   Target Address (128 bits)                   |  8
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |   Options …                                                     24
//
// Source (1) / Target (2) Link-Layer Address option for Ethernet (length in units of 8 octets):
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Type      |  Length = 1   |   MAC address (6 octets) …    |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// MLDv1 Query (130) / Report (131) / Done (132):
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Maximum Response Delay    |          Reserved             |  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                   Multicast Address (128 bits)                |  8
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   24 bytes
//
// MLD messages travel with a link-local source, hop limit 1, and a Hop-by-Hop Options header
// holding Router Alert (type 5, length 2, value 0 = MLD) padded with PadN to 8 bytes.

/// ICMPv6 checksums and Neighbor Discovery (address resolution only).
public enum ICMPv6 {
    @inlinable public static var destinationUnreachable: UInt8 { 1 }
    @inlinable public static var packetTooBig: UInt8 { 2 }
    @inlinable public static var echoRequest: UInt8 { 128 }
    @inlinable public static var echoReply: UInt8 { 129 }
    @inlinable public static var multicastListenerQuery: UInt8 { 130 }
    @inlinable public static var multicastListenerReport: UInt8 { 131 }
    @inlinable public static var multicastListenerDone: UInt8 { 132 }
    @inlinable public static var routerSolicitation: UInt8 { 133 }
    @inlinable public static var routerAdvertisement: UInt8 { 134 }
    @inlinable public static var neighborSolicitation: UInt8 { 135 }
    @inlinable public static var neighborAdvertisement: UInt8 { 136 }
    @inlinable public static var redirect: UInt8 { 137 }
    @inlinable public static var multicastListenerReportV2: UInt8 { 143 }

    @inlinable public static var sourceLinkLayerAddressOption: UInt8 { 1 }
    @inlinable public static var targetLinkLayerAddressOption: UInt8 { 2 }

    /// NS / NA without options.
    @inlinable public static var neighborMessageLength: Int { 24 }
    /// Ethernet + IPv6 + NS/NA + one link-layer address option.
    @inlinable public static var neighborFrameLength: Int { 86 }

    /// A Neighbor Solicitation or Advertisement.
    public struct NeighborMessage: Equatable, Sendable {
        /// 135 (solicitation) or 136 (advertisement).
        public var type: UInt8
        public var target: IPv6Address
        /// The Source (NS) or Target (NA) Link-Layer Address option, if present.
        public var linkLayerAddress: UInt64?
        /// NA flags; false in an NS.
        public var isRouter: Bool
        public var isSolicited: Bool
        public var isOverride: Bool

        @inlinable
        public init(
            type: UInt8,
            target: IPv6Address,
            linkLayerAddress: UInt64?,
            isRouter: Bool,
            isSolicited: Bool,
            isOverride: Bool
        ) {
            self.type = type
            self.target = target
            self.linkLayerAddress = linkLayerAddress
            self.isRouter = isRouter
            self.isSolicited = isSolicited
            self.isOverride = isOverride
        }

        @inlinable public var isSolicitation: Bool { type == 135 }
    }

    /// A validated NS/NA and the IPv6 header it came in.
    public struct NeighborPacket: Equatable, Sendable {
        public var ip: IPv6.Header
        public var message: NeighborMessage

        @inlinable
        public init(ip: IPv6.Header, message: NeighborMessage) {
            self.ip = ip
            self.message = message
        }
    }

    // MARK: Checksum

    /// The checksum of the `length`-byte message at `message`, its checksum field taken as
    /// zero whatever it holds.
    @inlinable
    public static func checksum(
        _ message: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) -> UInt16 {
        let pseudo = IPv6.pseudoHeaderSum(
            source: source,
            destination: destination,
            upperLayerLength: length,
            nextHeader: IPProtocol.icmpv6
        )
        var sum = InternetChecksum.add(message, length: 2, to: pseudo)
        sum = InternetChecksum.add(message + 4, length: length &- 4, to: sum)
        return InternetChecksum.finish(sum)
    }

    /// Computes and stores the checksum.
    @inlinable
    public static func setChecksum(
        _ message: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) {
        message.storeBigEndian16(checksum(message, length: length, source: source, destination: destination), at: 2)
    }

    /// True when the stored checksum is right.
    @inlinable
    public static func verifyChecksum(
        _ message: UnsafeMutableRawPointer,
        length: Int,
        source: IPv6Address,
        destination: IPv6Address
    ) -> Bool {
        guard length >= 4 else { return false }
        let pseudo = IPv6.pseudoHeaderSum(
            source: source,
            destination: destination,
            upperLayerLength: length,
            nextHeader: IPProtocol.icmpv6
        )
        return InternetChecksum.finish(InternetChecksum.add(message, length: length, to: pseudo)) == 0
    }

    // MARK: Neighbor Discovery

    /// The NS/NA at `message` (`length` = the ICMPv6 message length), or `nil` unless the type
    /// is 135/136, the code 0, the message at least 24 bytes, the target not multicast, and
    /// every option has a non-zero length that fits (RFC 4861 §7.1.1, §7.1.2). Does not check
    /// the checksum or the IPv6 header; `parseNeighborPacket` does.
    @inlinable
    public static func parseNeighborMessage(_ message: UnsafeMutableRawPointer, length: Int) -> NeighborMessage? {
        guard length >= neighborMessageLength else { return nil }
        let type = message.loadByte(at: 0)
        guard type == neighborSolicitation || type == neighborAdvertisement, message.loadByte(at: 1) == 0 else {
            return nil
        }
        let target = message.loadIPv6Address(at: 8)
        guard !target.isMulticast else { return nil }
        let wanted = type == neighborSolicitation ? sourceLinkLayerAddressOption : targetLinkLayerAddressOption
        var linkLayerAddress: UInt64? = nil
        var offset = neighborMessageLength
        while offset < length {
            guard offset &+ 2 <= length else { return nil }
            let optionLength = Int(message.loadByte(at: offset &+ 1)) &* 8
            guard optionLength > 0, offset &+ optionLength <= length else { return nil }
            if linkLayerAddress == nil && message.loadByte(at: offset) == wanted {
                linkLayerAddress = message.loadMAC(at: offset &+ 2)
            }
            offset &+= optionLength
        }
        let flags = type == neighborAdvertisement ? message.loadByte(at: 4) : 0
        return NeighborMessage(
            type: type,
            target: target,
            linkLayerAddress: linkLayerAddress,
            isRouter: flags & 0x80 != 0,
            isSolicited: flags & 0x40 != 0,
            isOverride: flags & 0x20 != 0
        )
    }

    /// A fully validated NS/NA from the IPv6 packet at `packet` (after the Ethernet header):
    /// next header 58 right after the fixed header, hop limit 255, checksum, the message rules
    /// of `parseNeighborMessage`, and RFC 4861 §7.1: an NS from :: goes to a solicited-node
    /// address and has no source link-layer option; an NA to a multicast address is not
    /// solicited.
    @inlinable
    public static func parseNeighborPacket(_ packet: UnsafeMutableRawPointer, length: Int) -> NeighborPacket? {
        guard let ip = IPv6.parse(packet, length: length), ip.nextHeader == IPProtocol.icmpv6, ip.hopLimit == 255
        else { return nil }
        let icmp = packet + IPv6.headerLength
        guard let message = parseNeighborMessage(icmp, length: ip.payloadLength),
            verifyChecksum(icmp, length: ip.payloadLength, source: ip.source, destination: ip.destination)
        else { return nil }
        if message.isSolicitation {
            if ip.source.isUnspecified {
                guard ip.destination.isSolicitedNodeMulticast, message.linkLayerAddress == nil else { return nil }
            }
        } else if ip.destination.isMulticast {
            guard !message.isSolicited else { return nil }
        }
        return NeighborPacket(ip: ip, message: message)
    }

    /// Writes Ethernet + IPv6 (hop limit 255) + NS/NA (+ one link-layer option) with checksum.
    @inlinable
    static func writeNeighborFrame(
        _ frame: UnsafeMutableRawPointer,
        type: UInt8,
        flags: UInt32,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: IPv6Address,
        destination: IPv6Address,
        target: IPv6Address,
        optionType: UInt8,
        includeOption: Bool
    ) -> Int {
        let icmpLength = includeOption ? neighborMessageLength &+ 8 : neighborMessageLength
        Ethernet.write(frame, destination: destinationMAC, source: sourceMAC, etherType: EtherType.ipv6)
        _ = IPv6.write(
            frame + Ethernet.headerLength,
            payloadLength: icmpLength,
            nextHeader: IPProtocol.icmpv6,
            hopLimit: 255,
            source: source,
            destination: destination
        )
        let icmp = frame + (Ethernet.headerLength &+ IPv6.headerLength)
        icmp.storeByte(type, at: 0)
        icmp.storeByte(0, at: 1)
        icmp.storeBigEndian16(0, at: 2)
        icmp.storeBigEndian32(flags, at: 4)
        icmp.storeIPv6Address(target, at: 8)
        if includeOption {
            icmp.storeByte(optionType, at: 24)
            icmp.storeByte(1, at: 25)
            icmp.storeMAC(sourceMAC, at: 26)
        }
        setChecksum(icmp, length: icmpLength, source: source, destination: destination)
        return Ethernet.headerLength &+ IPv6.headerLength &+ icmpLength
    }

    /// A complete Neighbor Advertisement frame with a Target Link-Layer Address option carrying
    /// `sourceMAC` (86 bytes). Returns the frame length.
    @inlinable
    public static func buildNeighborAdvertisement(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: IPv6Address,
        destination: IPv6Address,
        target: IPv6Address,
        isRouter: Bool = false,
        isSolicited: Bool,
        isOverride: Bool = true
    ) -> Int {
        var flags: UInt32 = 0
        if isRouter { flags |= 0x8000_0000 }
        if isSolicited { flags |= 0x4000_0000 }
        if isOverride { flags |= 0x2000_0000 }
        return writeNeighborFrame(
            frame,
            type: neighborAdvertisement,
            flags: flags,
            sourceMAC: sourceMAC,
            destinationMAC: destinationMAC,
            source: source,
            destination: destination,
            target: target,
            optionType: targetLinkLayerAddressOption,
            includeOption: true
        )
    }

    /// The advertisement answering `solicitation` for our own address (RFC 4861 §7.2.4): from
    /// the target address; to the soliciting node (at its Source Link-Layer Address option, else
    /// `requesterMAC`, the Ethernet source of the NS) with S set, or — when the NS came from ::
    /// (duplicate address detection) — to ff02::1 with S clear. O is set. Returns 86.
    @inlinable
    public static func buildNeighborAdvertisement(
        into frame: UnsafeMutableRawPointer,
        answering solicitation: NeighborPacket,
        requesterMAC: UInt64,
        ourMAC: UInt64,
        isRouter: Bool = false
    ) -> Int {
        let fromUnspecified = solicitation.ip.source.isUnspecified
        let destination = fromUnspecified ? IPv6Address.allNodes : solicitation.ip.source
        var destinationMAC = requesterMAC
        if fromUnspecified {
            destinationMAC = Ethernet.ipv6MulticastMAC(IPv6Address.allNodes)
        } else if let advertised = solicitation.message.linkLayerAddress {
            destinationMAC = advertised
        }
        return buildNeighborAdvertisement(
            into: frame,
            sourceMAC: ourMAC,
            destinationMAC: destinationMAC,
            source: solicitation.message.target,
            destination: destination,
            target: solicitation.message.target,
            isRouter: isRouter,
            isSolicited: !fromUnspecified,
            isOverride: true
        )
    }

    /// A Neighbor Solicitation for address resolution: to the solicited-node multicast address
    /// of `target` (ff02::1:ffXX:XXXX) at 33:33:ff:XX:XX:XX, with a Source Link-Layer Address
    /// option (86 bytes). Returns the frame length.
    @inlinable
    public static func buildNeighborSolicitation(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        source: IPv6Address,
        target: IPv6Address
    ) -> Int {
        let destination = IPv6Address.solicitedNode(for: target)
        return buildNeighborSolicitation(
            into: frame,
            sourceMAC: sourceMAC,
            destinationMAC: Ethernet.ipv6MulticastMAC(destination),
            source: source,
            destination: destination,
            target: target
        )
    }

    /// A Neighbor Solicitation to any destination (unicast for reachability confirmation).
    /// The Source Link-Layer Address option is included unless `source` is :: (RFC 4861
    /// §4.3), giving 86 or 78 bytes. Returns the frame length.
    @inlinable
    public static func buildNeighborSolicitation(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: IPv6Address,
        destination: IPv6Address,
        target: IPv6Address
    ) -> Int {
        writeNeighborFrame(
            frame,
            type: neighborSolicitation,
            flags: 0,
            sourceMAC: sourceMAC,
            destinationMAC: destinationMAC,
            source: source,
            destination: destination,
            target: target,
            optionType: sourceLinkLayerAddressOption,
            includeOption: !source.isUnspecified
        )
    }
}

/// Multicast Listener Discovery version 1 (RFC 2710): what a host sends to join and leave a
/// group, and recognising a router's query (MLDv1 or MLDv2 general / group-specific).
public enum MLD {
    /// MLDv1 message.
    @inlinable public static var messageLength: Int { 24 }
    /// Ethernet + IPv6 + Hop-by-Hop (Router Alert) + MLDv1 message.
    @inlinable public static var frameLength: Int { 86 }

    /// A Multicast Listener Query.
    public struct Query: Equatable, Sendable {
        /// :: for a general query, else the group asked about.
        public var group: IPv6Address
        /// Milliseconds (MLDv2's exponential Maximum Response Code decoded, RFC 3810 §5.1.3).
        public var maximumResponseDelay: UInt32
        /// Message of 28 bytes or more (RFC 3810 §8.1).
        public var isVersion2: Bool

        @inlinable
        public init(group: IPv6Address, maximumResponseDelay: UInt32, isVersion2: Bool) {
            self.group = group
            self.maximumResponseDelay = maximumResponseDelay
            self.isVersion2 = isVersion2
        }

        @inlinable public var isGeneral: Bool { group.isUnspecified }
    }

    /// A Multicast Listener Report for `group`, sent to the group (86 bytes). `source` must be
    /// the sender's link-local address. Returns the frame length.
    @inlinable
    public static func buildReport(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        source: IPv6Address,
        group: IPv6Address
    ) -> Int {
        writeMessage(
            frame,
            type: ICMPv6.multicastListenerReport,
            sourceMAC: sourceMAC,
            source: source,
            destination: group,
            group: group
        )
    }

    /// A Multicast Listener Done for `group`, sent to ff02::2 (86 bytes). Returns the frame length.
    @inlinable
    public static func buildDone(
        into frame: UnsafeMutableRawPointer,
        sourceMAC: UInt64,
        source: IPv6Address,
        group: IPv6Address
    ) -> Int {
        writeMessage(
            frame,
            type: ICMPv6.multicastListenerDone,
            sourceMAC: sourceMAC,
            source: source,
            destination: IPv6Address.allRouters,
            group: group
        )
    }

    @inlinable
    static func writeMessage(
        _ frame: UnsafeMutableRawPointer,
        type: UInt8,
        sourceMAC: UInt64,
        source: IPv6Address,
        destination: IPv6Address,
        group: IPv6Address
    ) -> Int {
        Ethernet.write(
            frame,
            destination: Ethernet.ipv6MulticastMAC(destination),
            source: sourceMAC,
            etherType: EtherType.ipv6
        )
        _ = IPv6.write(
            frame + Ethernet.headerLength,
            payloadLength: 8 &+ messageLength,
            nextHeader: IPProtocol.hopByHop,
            hopLimit: 1,
            source: source,
            destination: destination
        )
        // Hop-by-Hop Options: next header ICMPv6, length 0 (8 bytes), Router Alert (5, 2, MLD = 0),
        // PadN (1, 0).
        let hopByHop = frame + (Ethernet.headerLength &+ IPv6.headerLength)
        hopByHop.storeBigEndian32(UInt32(IPProtocol.icmpv6) << 24 | 0x0000_0502, at: 0)
        hopByHop.storeBigEndian32(0x0000_0100, at: 4)
        let message = hopByHop + 8
        message.storeByte(type, at: 0)
        message.storeByte(0, at: 1)
        message.storeBigEndian16(0, at: 2)
        message.storeBigEndian32(0, at: 4)
        message.storeIPv6Address(group, at: 8)
        ICMPv6.setChecksum(message, length: messageLength, source: source, destination: destination)
        return frameLength
    }

    /// The Multicast Listener Query in the IPv6 packet at `packet` (after the Ethernet header),
    /// or `nil` unless it has a link-local source, hop limit 1, ICMPv6 type 130 after any
    /// Hop-by-Hop / Destination Options headers, at least 24 bytes and a correct checksum
    /// (RFC 2710 §3, §5).
    @inlinable
    public static func parseQuery(_ packet: UnsafeMutableRawPointer, length: Int) -> Query? {
        guard let ip = IPv6.parse(packet, length: length), ip.hopLimit == 1, ip.source.isLinkLocalUnicast,
            let upper = IPv6.upperLayer(packet, header: ip), upper.nextHeader == IPProtocol.icmpv6
        else { return nil }
        let messageLength = ip.totalLength &- upper.offset
        let message = packet + upper.offset
        guard messageLength >= Self.messageLength,
            message.loadByte(at: 0) == ICMPv6.multicastListenerQuery,
            ICMPv6.verifyChecksum(message, length: messageLength, source: ip.source, destination: ip.destination)
        else { return nil }
        let isVersion2 = messageLength >= 28
        let code = UInt32(message.loadBigEndian16(at: 4))
        var delay = code
        if isVersion2 && code >= 0x8000 {
            delay = ((code & 0x0FFF) | 0x1000) << (((code >> 12) & 0x7) &+ 3)
        }
        return Query(group: message.loadIPv6Address(at: 8), maximumResponseDelay: delay, isVersion2: isVersion2)
    }
}
