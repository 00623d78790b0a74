import ButterflyPacket

/// Anti-spoofing of frames a guest sends (BUTTERFLY-COMPAT.md §7).
///
/// - source MAC must be the NIC's MAC (always);
/// - RARP is always dropped;
/// - with `ip_anti_spoof`: ARP must carry the NIC's MAC as sender hardware address and one of
///   the NIC's IPv4 addresses as sender protocol address; an IPv6 neighbour advertisement must
///   advertise one of the NIC's IPv6 addresses with the NIC's MAC as target link-layer address.
///
/// Drop reasons: `spoofed-source-mac`, `rarp`, `spoofed-arp`, `spoofed-neighbor-advertisement`.
/// Input: a guest frame of at least 14 bytes. Output: pass, or the reason to drop.
public enum AntiSpoof {
    static let etherTypeARP: UInt16 = 0x0806
    static let etherTypeRARP: UInt16 = 0x8035
    static let etherTypeIPv6: UInt16 = 0x86DD

    /// The NIC facts the checks need, prepared once per configuration (not per packet).
    public struct Policy {
        public var mac: UInt64
        public var checkIP: Bool
        public var ipv4: [UInt32]
        public var ipv6: [(high: UInt64, low: UInt64)]

        public init(_ nic: NICConfig) {
            mac = nic.mac.value
            checkIP = nic.ipAntiSpoof
            ipv4 = nic.ips.compactMap { if case .v4(let value) = $0 { value } else { nil } }
            ipv6 = nic.ips.compactMap { if case .v6(let high, let low) = $0 { (high, low) } else { nil } }
        }
    }

    public static func check(_ data: UnsafeMutableRawPointer, length: Int, policy: Policy) -> DropReason? {
        guard data.loadMAC(at: 6) == policy.mac else { return .spoofedSourceMAC }
        let etherType = data.loadBigEndian16(at: 12)
        if etherType == etherTypeRARP { return .rarp }
        guard policy.checkIP else { return nil }
        if etherType == etherTypeARP {
            // RFC 826 for Ethernet/IPv4: sender MAC at 8, sender IP at 14 of the ARP payload.
            guard length >= 14 + 28 else { return .spoofedARP }
            guard data.loadMAC(at: 14 + 8) == policy.mac else { return .spoofedARP }
            let sender = data.loadBigEndian32(at: 14 + 14)
            return policy.ipv4.contains(sender) ? nil : .spoofedARP
        }
        if etherType == etherTypeIPv6 && length >= 14 + 40 + 24 && data.loadByte(at: 14 + 6) == 58
            && data.loadByte(at: 14 + 40) == 136
        {
            // RFC 4861 §4.4: target address at 8 of the ICMPv6 message; options follow at 24.
            let icmp = 14 + 40
            let high = UInt64(data.loadBigEndian32(at: icmp + 8)) << 32 | UInt64(data.loadBigEndian32(at: icmp + 12))
            let low = UInt64(data.loadBigEndian32(at: icmp + 16)) << 32 | UInt64(data.loadBigEndian32(at: icmp + 20))
            guard policy.ipv6.contains(where: { $0.high == high && $0.low == low }) else {
                return .spoofedNeighborAdvertisement
            }
            // Target link-layer address option (type 2, length 1 = 8 bytes) must be ours.
            var option = icmp + 24
            while option + 8 <= length {
                let type = data.loadByte(at: option)
                let units = Int(data.loadByte(at: option + 1))
                guard units > 0 else { return .spoofedNeighborAdvertisement }
                if type == 2 && data.loadMAC(at: option + 2) != policy.mac { return .spoofedNeighborAdvertisement }
                option += units * 8
            }
        }
        return nil
    }
}
