import ButterflyPacket

/// The two frame sizes every benchmark runs with, as lengths of the frame in the buffer (no FCS):
///
/// ```
///  small  60 B = 64 B on the wire with the 4-byte FCS: the minimum Ethernet frame, worst case in pps
///  large 1514 B = 14 B Ethernet + a 1500 B IPv4 packet (the usual MTU), 1518 B on the wire
/// ```
public enum FrameSize: Int, CaseIterable, Sendable {
    case small = 60
    case large = 1514

    /// The name in tables and benchmark names: the minimum frame on the wire ("64B"), and an
    /// MTU-sized IP packet ("1500B").
    public var label: String {
        switch self {
        case .small: "64B"
        case .large: "1500B"
        }
    }
}

/// Builders of the synthetic frames the benchmarks feed: IPv4/UDP guest frames and VXLAN
/// underlay frames carrying them. They use ButterflyPacket's own writers, so every checksum and
/// length field is what the nodes expect from a real peer.
public enum BenchFrames {
    /// A guest's IPv4/UDP frame of exactly `length` bytes (≥ 42) at `frame`; the UDP payload is
    /// zero-filled. Returns `length`.
    @discardableResult
    public static func udp(
        into frame: UnsafeMutableRawPointer,
        length: Int,
        sourceMAC: UInt64,
        destinationMAC: UInt64,
        source: UInt32,
        destination: UInt32,
        sourcePort: UInt16 = 40_000,
        destinationPort: UInt16 = 5001
    ) -> Int {
        precondition(length >= 42 && length <= PacketPool.maximumFrame)
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        Ethernet.write(frame, destination: destinationMAC, source: sourceMAC, etherType: EtherType.ipv4)
        let ipLength = length - Ethernet.headerLength
        _ = IPv4.write(
            frame + 14,
            totalLength: ipLength,
            protocol: IPProtocol.udp,
            source: source,
            destination: destination
        )
        UDP.write(
            frame + 34,
            sourcePort: sourcePort,
            destinationPort: destinationPort,
            length: ipLength - IPv4.minimumHeaderLength,
            checksum: 0
        )
        return length
    }

    /// A VXLAN frame from a remote VTEP over IPv4 at `frame`: outer headers (50 B) and an inner
    /// IPv4/UDP frame of `innerLength` bytes from `innerSourceMAC` to `innerDestinationMAC`.
    /// Built in the headroom of a scratch packet of `pool`, then copied out. Returns the length.
    @discardableResult
    public static func vxlan(
        into frame: UnsafeMutableRawPointer,
        pool: PacketPool,
        innerLength: Int,
        innerSourceMAC: UInt64,
        innerDestinationMAC: UInt64,
        tunnel: VXLANEncapsulation,
        vni: UInt32
    ) -> Int {
        guard var scratch = pool.allocate() else { preconditionFailure("pool empty while building frames") }
        defer { pool.release(scratch) }
        scratch.length = UInt16(
            udp(
                into: pool.data(scratch),
                length: innerLength,
                sourceMAC: innerSourceMAC,
                destinationMAC: innerDestinationMAC,
                source: 0x0A01_0063,
                destination: 0x0A01_000A
            )
        )
        let sourcePort = FlowHash.vxlanSourcePort(FlowHash.hash(pool.data(scratch), length: innerLength))
        precondition(tunnel.encapsulate(&scratch, pool: pool, vni: vni, sourcePort: sourcePort))
        frame.copyMemory(from: pool.data(scratch), byteCount: Int(scratch.length))
        return Int(scratch.length)
    }
}
