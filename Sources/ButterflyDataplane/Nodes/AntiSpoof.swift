import ButterflyPacket

/// Anti-spoofing of the frames a guest sends (BUTTERFLY-COMPAT.md §7, hardened; docs/DATAPLANE.md
/// "Anti-spoofing"). Skipped for a NIC with `bypass_filtering`; everything else is checked on
/// every frame, in this order, the first failure naming the drop:
///
/// ```
///  source MAC ≠ NIC's ─────────────────────────────────────────────► spoofed-source-mac
///  any 802.1Q / 802.1ad tag ───────────────────────────────────────► vlan-tagged
///  IP whose headers do not hold up (FrameHeaders says malformed) ──► malformed-ip
///  RARP ───────────────────────────────────────────────────────────► rarp
///  IPv4 source ∉ NIC's IPv4s, unless DHCP client 0.0.0.0:68 → :67 ─► spoofed-source-ip
///  IPv6 source ∉ NIC's IPv6s + EUI-64 link-local, unless :: for a
///       neighbour solicitation (DAD) or an MLD report ────────────► spoofed-source-ip
///  ICMPv6 router advertisement (134) or redirect (137) ────────────► router-advertisement
///  UDP 67 → 68 (DHCP) or 547 → 546 (DHCPv6) server reply ──────────► dhcp-server
///  with ip_anti_spoof only:
///    ARP not Ethernet/IPv4, sender MAC ≠ NIC's, sender IP ∉ IPv4s ─► spoofed-arp
///    neighbour advertisement: target ∉ IPv6s + link-local, a
///       link-layer option ≠ NIC's MAC, fragmented or cut short ───► spoofed-neighbor-advertisement
///    neighbour solicitation: a link-layer option ≠ NIC's MAC,
///       fragmented or cut short ──────────────────────────────────► spoofed-neighbor-solicitation
/// ```
///
/// The caller walks the headers once (`FrameHeaders.walk`, which sees through tags, IPv6
/// extension headers and fragments, so neighbour discovery is found wherever it sits) and hands
/// the result here and to the firewall. `Policy` is prepared once per configuration change.
/// Per packet: no allocation, no hashing; address lookups are an inline compare of up to four
/// addresses, or a bisection for NICs with more (`AddressSet`).
public enum AntiSpoof {
    /// The NIC facts the checks need, prepared once per configuration (not per packet).
    public struct Policy: Sendable {
        public let mac: UInt64
        /// The NIC's `ip_anti_spoof`: ARP and neighbour discovery contents are checked too.
        public let ipAntiSpoof: Bool
        public let ipv4: AddressSet
        /// The NIC's IPv6 addresses and the link-local address derived from its MAC.
        public let ipv6: AddressSet

        public init(mac: UInt64, ips: [IPAddress], ipAntiSpoof: Bool) {
            self.mac = mac
            self.ipAntiSpoof = ipAntiSpoof
            ipv4 = AddressSet(
                ips.compactMap { if case .v4(let value) = $0 { FrameHeaders.ipv4Mapped | UInt128(value) } else { nil } }
            )
            let ipv6Addresses = ips.compactMap { address -> UInt128? in
                guard case .v6(let high, let low) = address else { return nil }
                return UInt128(high) << 64 | UInt128(low)
            }
            ipv6 = AddressSet(ipv6Addresses + [AntiSpoof.linkLocal(mac: mac)])
        }

        public init(_ nic: NICConfig) {
            self.init(mac: nic.mac.value, ips: nic.ips, ipAntiSpoof: nic.ipAntiSpoof)
        }
    }

    /// fe80::/64 with the modified EUI-64 interface identifier of `mac` (RFC 4291 §2.5.1 and
    /// appendix A: insert ff:fe between the two halves, flip the universal/local bit), the
    /// link-local address a guest forms by stateless autoconfiguration (RFC 4862 §5.3).
    public static func linkLocal(mac: UInt64) -> UInt128 {
        let upper = (mac >> 24) ^ 0x02_0000
        let lower = mac & 0xFF_FFFF
        let interfaceID = upper << 40 | 0xFF_FE00_0000 | lower
        return UInt128(0xFE80_0000_0000_0000) << 64 | UInt128(interfaceID)
    }

    /// `nil` to pass the frame at `data` (`length` bytes, at least 14; `headers` its walk),
    /// or the reason to drop it.
    ///
    /// Always inlined, like `FrameHeaders.walk`, so the walk's result is read where it was
    /// built: passed to a call, it would be copied right after the walk's last stores, and
    /// that copy stalls on store forwarding (see `FrameHeaders.walk`).
    @inlinable @inline(always)
    public static func check(
        _ data: UnsafeMutableRawPointer,
        length: Int,
        headers: FrameHeaders,
        policy: Policy
    ) -> DropReason? {
        guard data.loadMAC(at: 6) == policy.mac else { return .spoofedSourceMAC }
        guard headers.vlanTags == 0 else { return .vlanTagged }
        switch headers.network {
        case .ipv4:
            return checkIPv4(headers, policy)
        case .ipv6:
            return checkIPv6(data, headers, policy)
        case .malformed:
            return .malformedIP
        case .other:
            if headers.etherType == EtherType.rarp { return .rarp }
            if headers.etherType == EtherType.arp && policy.ipAntiSpoof {
                return checkARP(data, length: length, at: headers.networkOffset, policy)
            }
            return nil
        }
    }

    @inlinable @inline(always)
    static func checkIPv4(_ headers: FrameHeaders, _ policy: Policy) -> DropReason? {
        let isUDP = headers.ipProtocol == IPProtocol.udp
        guard policy.ipv4.contains(headers.source) else {
            // RFC 2131 §4.1: a client that has no address yet sends from 0.0.0.0, port 68 to 67,
            // in one unfragmented datagram.
            let isDHCPClient =
                headers.source == FrameHeaders.ipv4Mapped && isUDP && headers.fragment == .none
                && headers.sourcePort == 68
                && headers.destinationPort == 67
            return isDHCPClient ? nil : .spoofedSourceIP
        }
        // A later fragment reports no ports; the first fragment carried them and was judged.
        if isUDP && headers.sourcePort == 67 && headers.destinationPort == 68 { return .dhcpServer }
        return nil
    }

    @inlinable @inline(always)
    static func checkIPv6(_ data: UnsafeMutableRawPointer, _ headers: FrameHeaders, _ policy: Policy) -> DropReason? {
        // 0 (no ICMPv6 type) for anything else, including a later fragment of an ICMPv6 message.
        let type: UInt8 =
            headers.ipProtocol == IPProtocol.icmpv6 && headers.transportOffset != 0 ? headers.icmpType : 0
        if !policy.ipv6.contains(headers.source) {
            // The unspecified source is for a node that has no address yet: duplicate address
            // detection (RFC 4862 §5.4.2) and the MLD reports that go with it (RFC 3590 §4).
            guard headers.source == 0,
                type == ICMPv6.neighborSolicitation || type == ICMPv6.multicastListenerReport
                    || type == ICMPv6.multicastListenerReportV2
            else { return .spoofedSourceIP }
        }
        switch type {
        case ICMPv6.routerAdvertisement, ICMPv6.redirect:
            return .routerAdvertisement
        case ICMPv6.neighborAdvertisement where policy.ipAntiSpoof:
            return checkNeighborMessage(
                data,
                at: headers.transportOffset,
                end: headers.networkEnd,
                fragmented: headers.fragment != .none,
                policy,
                reason: .spoofedNeighborAdvertisement
            )
        case ICMPv6.neighborSolicitation where policy.ipAntiSpoof:
            return checkNeighborMessage(
                data,
                at: headers.transportOffset,
                end: headers.networkEnd,
                fragmented: headers.fragment != .none,
                policy,
                reason: .spoofedNeighborSolicitation
            )
        default:
            break
        }
        if headers.ipProtocol == IPProtocol.udp && headers.sourcePort == 547 && headers.destinationPort == 546 {
            return .dhcpServer
        }
        return nil
    }

    /// A neighbour solicitation or advertisement at `message` (RFC 4861 §4.3, §4.4): type,
    /// code, checksum, 4 bytes of flags/reserved, the 16-byte target at 8, options from 24 to
    /// `end`. `reason` says which. (Given offsets, not the walk: no copy of it on the way.)
    @usableFromInline
    static func checkNeighborMessage(
        _ data: UnsafeMutableRawPointer,
        at message: Int,
        end: Int,
        fragmented: Bool,
        _ policy: Policy,
        reason: DropReason
    ) -> DropReason? {
        // RFC 6980 §5: neighbour discovery is never fragmented (its options would be out of
        // sight in a later fragment), and a message cut short cannot be checked.
        guard !fragmented, message &+ ICMPv6.neighborMessageLength <= end else { return reason }
        if reason == .spoofedNeighborAdvertisement {
            guard policy.ipv6.contains(data.loadBigEndian128(at: message &+ 8)) else { return reason }
        }
        // RFC 4861 §4.6: options in units of 8 bytes, none of length 0, all inside the message.
        // Any link-layer address option, source (1) or target (2), must name the NIC's MAC.
        var option = message &+ ICMPv6.neighborMessageLength
        while option < end {
            guard option &+ 8 <= end else { return reason }
            let size = Int(data.loadByte(at: option &+ 1)) &* 8
            guard size != 0, option &+ size <= end else { return reason }
            let type = data.loadByte(at: option)
            if type == ICMPv6.sourceLinkLayerAddressOption || type == ICMPv6.targetLinkLayerAddressOption,
                data.loadMAC(at: option &+ 2) != policy.mac
            {
                return reason
            }
            option &+= size
        }
        return nil
    }

    /// RFC 826 for Ethernet and IPv4: hardware type 1, protocol 0x0800, lengths 6 and 4, the
    /// sender's MAC at 8 and IPv4 address at 14 (receivers ignore any other kind).
    @inlinable @inline(always)
    static func checkARP(_ data: UnsafeMutableRawPointer, length: Int, at arp: Int, _ policy: Policy) -> DropReason? {
        guard arp &+ ARP.length <= length, data.loadBigEndian32(at: arp) == 0x0001_0800,
            data.loadBigEndian16(at: arp &+ 4) == 0x0604, data.loadMAC(at: arp &+ 8) == policy.mac,
            policy.ipv4.contains(FrameHeaders.ipv4Mapped | UInt128(data.loadBigEndian32(at: arp &+ 14)))
        else { return .spoofedARP }
        return nil
    }
}
