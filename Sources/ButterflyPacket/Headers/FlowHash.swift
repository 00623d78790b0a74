// Flow hash of an Ethernet frame, for the VXLAN UDP source port (RFC 7348 §5: "it is
// recommended that the UDP source port number be calculated using a hash of fields from the
// inner packet", in the dynamic range 49152-65535) and for spreading flows.
//
// Fields hashed, each read only when the frame is long enough to hold it:
//
//   Ethernet     [dst MAC 6][src MAC 6][(802.1Q: 0x8100, TCI 2)][EtherType 2]   VLAN ID if tagged
//   IPv4         source, destination, protocol                     RFC 791 §3.1
//   IPv6         source, destination, upper-layer protocol         RFC 8200 §3, §4
//                (after Hop-by-Hop / Routing / Destination Options headers)
//   TCP/UDP/SCTP [source port 2][destination port 2] — the first 4 bytes of all three
//                (RFC 9293 §3.1, RFC 768, RFC 9260 §3.1); not for IP fragments, so every
//                fragment of a datagram hashes alike
//
// Each 64-bit word is folded into the state with a multiply and xor-shift; a final avalanche
// spreads every input bit over the 32 result bits. Deterministic across runs and hosts.

/// A fast 32-bit hash of a frame's L2/L3/L4 flow tuple.
public enum FlowHash {
    @inlinable static var seed: UInt64 { 0x6A09_E667_F3BC_C909 }

    @inlinable
    static func combine(_ state: UInt64, _ word: UInt64) -> UInt64 {
        let mixed = (state ^ word) &* 0x9FB2_1C65_1E98_DF25
        return mixed ^ (mixed >> 29)
    }

    @inlinable
    static func finish(_ state: UInt64) -> UInt32 {
        var value = state
        value ^= value >> 32
        value &*= 0xD6E8_FEB8_6659_FD93
        value ^= value >> 32
        value &*= 0xD6E8_FEB8_6659_FD93
        value ^= value >> 32
        return UInt32(truncatingIfNeeded: value)
    }

    @inlinable
    static func hasPorts(_ proto: UInt8) -> Bool {
        proto == IPProtocol.tcp || proto == IPProtocol.udp || proto == IPProtocol.sctp
    }

    /// The hash of the frame at `frame` (`length` bytes). Frames shorter than an Ethernet
    /// header all hash alike.
    @inlinable
    public static func hash(_ frame: UnsafeMutableRawPointer, length: Int) -> UInt32 {
        guard length >= Ethernet.headerLength else { return finish(seed) }
        var etherType = frame.loadBigEndian16(at: 12)
        var state = combine(seed, frame.loadMAC(at: 0) << 16 | UInt64(etherType))
        var sourceWord = frame.loadMAC(at: 6) << 16
        var l3 = Ethernet.headerLength
        if etherType == EtherType.vlan && length >= 18 {
            sourceWord |= UInt64(frame.loadBigEndian16(at: 14) & 0x0FFF)
            etherType = frame.loadBigEndian16(at: 16)
            l3 = 18
        }
        state = combine(state, sourceWord)
        let ip = frame + l3
        let available = length &- l3
        if etherType == EtherType.ipv4 && available >= IPv4.minimumHeaderLength && ip.loadByte(at: 0) >> 4 == 4 {
            let headerLength = Int(ip.loadByte(at: 0) & 0x0F) &* 4
            let proto = ip.loadByte(at: 9)
            state = combine(state, UInt64(ip.loadBigEndian32(at: 12)) << 32 | UInt64(ip.loadBigEndian32(at: 16)))
            var ports: UInt64 = 0
            if headerLength >= IPv4.minimumHeaderLength && ip.loadBigEndian16(at: 6) & 0x3FFF == 0
                && hasPorts(proto) && headerLength &+ 4 <= available
            {
                ports = UInt64(ip.loadBigEndian32(at: headerLength))
            }
            state = combine(state, UInt64(proto) << 32 | ports)
        } else if etherType == EtherType.ipv6 && available >= IPv6.headerLength && ip.loadByte(at: 0) >> 4 == 6 {
            let source = ip.loadIPv6Address(at: 8)
            let destination = ip.loadIPv6Address(at: 24)
            state = combine(state, source.high)
            state = combine(state, source.low)
            state = combine(state, destination.high)
            state = combine(state, destination.low)
            // Walk extension headers within the bytes present (the payload length may lie).
            var next = ip.loadByte(at: 6)
            var offset = IPv6.headerLength
            var remaining = IPv6.maximumExtensionHeaders
            while remaining > 0 && offset &+ 8 <= available
                && (next == IPProtocol.hopByHop || next == IPProtocol.routing
                    || next == IPProtocol.destinationOptions)
            {
                remaining &-= 1
                let nextOffset = offset &+ (Int(ip.loadByte(at: offset &+ 1)) &+ 1) &* 8
                next = ip.loadByte(at: offset)
                offset = nextOffset
            }
            var ports: UInt64 = 0
            if hasPorts(next) && offset &+ 4 <= available { ports = UInt64(ip.loadBigEndian32(at: offset)) }
            state = combine(state, UInt64(next) << 32 | ports)
        }
        return finish(state)
    }

    /// A VXLAN UDP source port from a flow hash: always in 49152...65535 (RFC 7348 §5).
    @inlinable
    public static func vxlanSourcePort(_ hash: UInt32) -> UInt16 {
        0xC000 | (UInt16(truncatingIfNeeded: hash ^ (hash >> 16)) & 0x3FFF)
    }
}
