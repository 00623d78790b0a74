/// One walk over a guest or network frame's headers, shared by anti-spoofing and the firewall:
/// through 802.1Q/802.1ad tags, the IPv4 header or IPv6 and its extension headers, to the
/// upper-layer header and the fields a filter needs.
///
/// ```
///  ┌──────────┬─────────────┬──────────────────┬──────────────────────┬───────────────────┐
///  │ Ethernet │ tags (0..n) │ IPv4 (+options)  │                      │ TCP/UDP/SCTP/ICMP │
///  │ dst src  │ 8100 / 88a8 │ IPv6 ─► HBH ─► RH ─► DST ─► FRAG ─► ... │ ports, flags, type│
///  └──────────┴─────────────┴──────────────────┴──────────────────────┴───────────────────┘
///  etherType = the type after the tags   networkOffset   transportOffset (0: not present)
/// ```
///
/// Nothing is trusted: every offset is checked against the frame's length, the IP header's own
/// length fields bound the payload, extension headers are bounded in number
/// (`IPv6.maximumExtensionHeaders`), and a first fragment too short to hold its upper-layer
/// header is `malformed` (the tiny-fragment attack of RFC 1858 cannot slip ports past a rule),
/// and so is a TCP fragment at offset 8 (the overlapping-fragment attack of the same RFC), a
/// second Fragment header or a Hop-by-Hop header anywhere but first (RFC 8200 §4.1, §4.3).
/// Addresses are 128-bit values; IPv4 addresses are IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291
/// §2.5.5.2: the address in the low 32 bits), so one comparison serves both families; an IPv6
/// header carrying an IPv4-mapped address is therefore `malformed`.
public struct FrameHeaders: Sendable {
    public enum Network: UInt8, Sendable {
        /// Not IP (ARP, LLDP, ...): `etherType` says what it is.
        case other
        case ipv4
        case ipv6
        /// IP, but a length or field that does not hold up: drop it.
        case malformed
    }

    public enum Fragment: UInt8, Sendable {
        case none
        /// Offset 0 with more fragments to come: carries the upper-layer header.
        case first
        /// Offset > 0: no upper-layer header; belongs to the datagram its first fragment opened.
        case later
    }

    /// Ethernet type after any VLAN tags.
    public var etherType: UInt16 = 0
    /// 802.1Q / 802.1ad tags seen (a guest must not send any); more than 4, or a tag cut
    /// short, makes the frame `malformed` with `etherType` the tag's type.
    public var vlanTags: UInt8 = 0
    public var network: Network = .other
    /// Offset of the IP header (or ARP payload) from the frame's start.
    public var networkOffset: Int = 14
    public var source: UInt128 = 0
    public var destination: UInt128 = 0
    /// Upper-layer protocol, after IPv6 extension headers. For a later IPv6 fragment: the
    /// Fragment header's next header (the first header of the fragmentable part).
    public var ipProtocol: UInt8 = 0
    /// Offset of the upper-layer header; 0 when the frame carries none (a later fragment).
    public var transportOffset: Int = 0
    /// End of the IP payload (the frame may carry Ethernet padding after it).
    public var networkEnd: Int = 0
    public var fragment: Fragment = .none
    /// IPv4 identification or IPv6 fragment identification.
    public var fragmentID: UInt32 = 0
    /// TCP, UDP and SCTP ports; for ICMP echo the identifier is in both.
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); for SCTP the first chunk's type.
    public var tcpFlags: UInt8 = 0
    /// ICMP / ICMPv6 type and code.
    public var icmpType: UInt8 = 0
    public var icmpCode: UInt8 = 0

    @inlinable public init() {}

    /// `::ffff:0:0`, the block IPv4 addresses are placed in.
    @inlinable public static var ipv4Mapped: UInt128 { 0xFFFF_0000_0000 }

    /// True for an address of `::ffff:0:0/96`, the block IPv4 addresses are placed in.
    @inlinable public static func isIPv4Mapped(_ address: UInt128) -> Bool { address >> 32 == 0xFFFF }

    @inlinable public var isIP: Bool { network == .ipv4 || network == .ipv6 }

    public enum TCPFlag {
        @inlinable public static var fin: UInt8 { 0x01 }
        @inlinable public static var syn: UInt8 { 0x02 }
        @inlinable public static var rst: UInt8 { 0x04 }
        @inlinable public static var ack: UInt8 { 0x10 }
    }

    /// Walks the headers of the frame at `data` (`length` bytes, at least 14).
    ///
    /// Always inlined, and so should be whatever reads the result on the packet path
    /// (`AntiSpoof.check` is): returned or passed through a call, this struct is copied with
    /// wide loads right after the walk's narrow stores, and each such load waits for those
    /// stores to drain (a store-forwarding stall). Measured in the guest path: 8–11 ns more per
    /// frame through calls than inlined (docs/PERFORMANCE.md, "Hardened anti-spoofing").
    @inlinable @inline(always)
    public static func walk(_ data: UnsafeRawPointer, length: Int) -> FrameHeaders {
        var headers = FrameHeaders()
        var offset = 12
        var etherType = data.loadBigEndian16(at: offset)
        // IEEE 802.1Q (0x8100) and 802.1ad (0x88a8) tags: 4 bytes each; walk a few, so that a
        // stack of tags cannot hide what it carries.
        // A tag counts as soon as its type is seen, so that a truncated or too deep stack still
        // says it was tagged (and `etherType` keeps the tag's type).
        while etherType == 0x8100 || etherType == 0x88A8 {
            headers.vlanTags &+= 1
            guard headers.vlanTags <= 4, offset &+ 6 <= length else {
                headers.etherType = etherType
                headers.network = .malformed
                return headers
            }
            offset &+= 4
            etherType = data.loadBigEndian16(at: offset)
        }
        offset &+= 2
        headers.etherType = etherType
        headers.networkOffset = offset
        if etherType == 0x0800 {
            walkIPv4(data, length: length, into: &headers)
        } else if etherType == 0x86DD {
            walkIPv6(data, length: length, into: &headers)
        }
        return headers
    }

    // RFC 791 §3.1.
    @inlinable @inline(always)
    static func walkIPv4(_ data: UnsafeRawPointer, length: Int, into headers: inout FrameHeaders) {
        let ip = headers.networkOffset
        headers.network = .malformed
        guard ip &+ 20 <= length else { return }
        let versionAndLength = data.loadByte(at: ip)
        let headerLength = Int(versionAndLength & 0x0F) &* 4
        let totalLength = Int(data.loadBigEndian16(at: ip &+ 2))
        guard versionAndLength >> 4 == 4, headerLength >= 20, totalLength >= headerLength,
            ip &+ totalLength <= length
        else { return }
        headers.network = .ipv4
        headers.networkEnd = ip &+ totalLength
        headers.source = ipv4Mapped | UInt128(data.loadBigEndian32(at: ip &+ 12))
        headers.destination = ipv4Mapped | UInt128(data.loadBigEndian32(at: ip &+ 16))
        headers.ipProtocol = data.loadByte(at: ip &+ 9)
        let flagsAndOffset = data.loadBigEndian16(at: ip &+ 6)
        if flagsAndOffset & 0x3FFF != 0 {
            headers.fragmentID = UInt32(data.loadBigEndian16(at: ip &+ 4))
            let fragmentOffset = flagsAndOffset & 0x1FFF
            if fragmentOffset != 0 {
                headers.fragment = .later
                if isOverlappingTCPFragment(offsetUnits: fragmentOffset, protocol: headers.ipProtocol) {
                    headers.network = .malformed
                }
                return
            }
            headers.fragment = .first
        }
        walkTransport(data, at: ip &+ headerLength, into: &headers)
    }

    // RFC 8200 §4: extension headers in any order, each bounded by the payload length.
    @inlinable
    static func walkIPv6(_ data: UnsafeRawPointer, length: Int, into headers: inout FrameHeaders) {
        let ip = headers.networkOffset
        headers.network = .malformed
        guard ip &+ 40 <= length, data.loadByte(at: ip) >> 4 == 6 else { return }
        let end = ip &+ 40 &+ Int(data.loadBigEndian16(at: ip &+ 4))
        guard end <= length else { return }
        headers.networkEnd = end
        headers.source = data.loadBigEndian128(at: ip &+ 8)
        headers.destination = data.loadBigEndian128(at: ip &+ 24)
        // RFC 6890 table 20: IPv4-mapped addresses are neither source nor destination on the wire;
        // here they would pass for the IPv4 addresses they map (one space for both families).
        guard !isIPv4Mapped(headers.source) && !isIPv4Mapped(headers.destination) else { return }
        var next = data.loadByte(at: ip &+ 6)
        var offset = ip &+ 40
        var remaining = IPv6.maximumExtensionHeaders
        var sawFragmentHeader = false
        while true {
            switch next {
            case IPProtocol.hopByHop, IPProtocol.routing, IPProtocol.destinationOptions:
                // RFC 8200 §4.3: Hop-by-Hop Options only right after the fixed header.
                guard remaining > 0, offset &+ 8 <= end, next != IPProtocol.hopByHop || offset == ip &+ 40
                else { return }
                let extensionLength = (Int(data.loadByte(at: offset &+ 1)) &+ 1) &* 8
                guard offset &+ extensionLength <= end else { return }
                next = data.loadByte(at: offset)
                offset &+= extensionLength
            case IPProtocol.fragment:
                // RFC 8200 §4.5: next header, reserved, offset (13 bits) + M, identification.
                // One Fragment header per packet (§4.1), atomic or not.
                guard remaining > 0, !sawFragmentHeader, offset &+ 8 <= end else { return }
                sawFragmentHeader = true
                let offsetAndFlag = data.loadBigEndian16(at: offset &+ 2)
                headers.fragmentID = data.loadBigEndian32(at: offset &+ 4)
                next = data.loadByte(at: offset)
                offset &+= 8
                if offsetAndFlag & 0xFFF8 != 0 {
                    // `next` is the first header of the fragmentable part, which is the
                    // upper-layer protocol only when the first fragment has no further
                    // extension headers.
                    headers.fragment = .later
                    headers.ipProtocol = next
                    if !isOverlappingTCPFragment(offsetUnits: offsetAndFlag >> 3, protocol: next) {
                        headers.network = .ipv6
                    }
                    return
                }
                // An atomic fragment (offset 0, M clear: RFC 6946) is a whole datagram.
                if offsetAndFlag & 1 != 0 { headers.fragment = .first }
            default:
                headers.network = .ipv6
                headers.ipProtocol = next
                walkTransport(data, at: offset, into: &headers)
                return
            }
            remaining &-= 1
        }
    }

    /// RFC 1858 §4: a TCP fragment at offset 8 can only serve to rewrite the flags (and the
    /// acknowledgement) its first fragment showed to a filter; no sender needs one.
    @inlinable
    static func isOverlappingTCPFragment(offsetUnits: UInt16, protocol: UInt8) -> Bool {
        offsetUnits == 1 && `protocol` == IPProtocol.tcp
    }

    /// Reads ports, flags or ICMP type at `offset`. A header that does not fit makes the frame
    /// malformed (for a whole datagram and for a first fragment alike).
    @inlinable @inline(always)
    static func walkTransport(_ data: UnsafeRawPointer, at offset: Int, into headers: inout FrameHeaders) {
        let available = headers.networkEnd &- offset
        headers.transportOffset = offset
        switch headers.ipProtocol {
        case IPProtocol.tcp:
            guard available >= 20 else {
                headers.network = .malformed
                return
            }
            headers.sourcePort = data.loadBigEndian16(at: offset)
            headers.destinationPort = data.loadBigEndian16(at: offset &+ 2)
            headers.tcpFlags = data.loadByte(at: offset &+ 13)
        case IPProtocol.udp:
            guard available >= 8 else {
                headers.network = .malformed
                return
            }
            headers.sourcePort = data.loadBigEndian16(at: offset)
            headers.destinationPort = data.loadBigEndian16(at: offset &+ 2)
        case IPProtocol.sctp:
            // RFC 9260 §3: 12-byte common header, then chunks (type first).
            guard available >= 16 else {
                headers.network = .malformed
                return
            }
            headers.sourcePort = data.loadBigEndian16(at: offset)
            headers.destinationPort = data.loadBigEndian16(at: offset &+ 2)
            headers.tcpFlags = data.loadByte(at: offset &+ 12)
        case IPProtocol.icmp, IPProtocol.icmpv6:
            guard available >= 8 else {
                headers.network = .malformed
                return
            }
            headers.icmpType = data.loadByte(at: offset)
            headers.icmpCode = data.loadByte(at: offset &+ 1)
            let identifier = data.loadBigEndian16(at: offset &+ 4)
            headers.sourcePort = identifier
            headers.destinationPort = identifier
        default:
            break
        }
    }
}

extension UnsafeRawPointer {
    @inlinable
    public func loadBigEndian128(at offset: Int) -> UInt128 {
        UInt128(UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))) << 64
            | UInt128(UInt64(bigEndian: loadUnaligned(fromByteOffset: offset &+ 8, as: UInt64.self)))
    }
}

extension UnsafeMutableRawPointer {
    @inlinable
    public func loadBigEndian128(at offset: Int) -> UInt128 { UnsafeRawPointer(self).loadBigEndian128(at: offset) }
}
