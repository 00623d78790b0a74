import ButterflyPacket
import Testing

@Suite struct FlowHashTests {
    /// Ethernet + IPv4 + UDP/TCP header (+ payload).
    func ipv4Frame(
        sourcePort: UInt16 = 40000,
        destinationPort: UInt16 = 80,
        protocol proto: UInt8 = IPProtocol.udp,
        source: UInt32 = 0x0A00_0001,
        destination: UInt32 = 0x0A00_0002,
        sourceMAC: UInt64 = macA,
        fragment: UInt16 = 0,
        payload: [UInt8] = [1, 2, 3, 4]
    ) -> [UInt8] {
        buildFrame { data in
            Ethernet.write(data, destination: macB, source: sourceMAC, etherType: EtherType.ipv4)
            _ = IPv4.write(
                data + 14,
                totalLength: 28 + payload.count,
                protocol: proto,
                source: source,
                destination: destination
            )
            data.storeBigEndian16(fragment, at: 14 + 6)
            UDP.write(data + 34, sourcePort: sourcePort, destinationPort: destinationPort, length: 8 + payload.count)
            for (index, byte) in payload.enumerated() { data.storeByte(byte, at: 42 + index) }
            return 42 + payload.count
        }
    }

    func ipv6Frame(sourcePort: UInt16 = 40000, destinationPort: UInt16 = 443, hopByHop: Bool = false) -> [UInt8] {
        buildFrame { data in
            Ethernet.write(data, destination: macB, source: macA, etherType: EtherType.ipv6)
            let extra = hopByHop ? 8 : 0
            _ = IPv6.write(
                data + 14,
                payloadLength: extra + 8,
                nextHeader: hopByHop ? 0 : IPProtocol.tcp,
                hopLimit: 64,
                source: ipv6("2001:db8::1"),
                destination: ipv6("2001:db8::2")
            )
            if hopByHop {
                for (index, byte) in [IPProtocol.tcp, 0, 1, 4, 0, 0, 0, 0].enumerated() {
                    data.storeByte(byte, at: 54 + index)
                }
            }
            data.storeBigEndian16(sourcePort, at: 54 + extra)
            data.storeBigEndian16(destinationPort, at: 56 + extra)
            data.storeBigEndian32(0xDEAD_BEEF, at: 58 + extra)
            return 62 + extra
        }
    }

    func hash(_ frame: [UInt8], count: Int? = nil) -> UInt32 {
        withGuardedBytes(frame, count: count) { FlowHash.hash($0, length: $1) }
    }

    @Test func stable() {
        let frame = ipv4Frame()
        #expect(hash(frame) == hash(frame))
        // Another buffer, same bytes.
        let pool = PacketPool(capacity: 16)
        let packet = makePacket(pool, frame)
        #expect(FlowHash.hash(pool.data(packet), length: frame.count) == hash(frame))
        // Payload beyond the ports does not matter.
        #expect(hash(ipv4Frame(payload: [9, 9, 9, 9, 9])) == hash(frame))
    }

    @Test func portsAddressesAndMACsMatter() {
        let base = hash(ipv4Frame())
        #expect(hash(ipv4Frame(sourcePort: 40001)) != base)
        #expect(hash(ipv4Frame(destinationPort: 81)) != base)
        #expect(hash(ipv4Frame(sourcePort: 80, destinationPort: 40000)) != base)
        #expect(hash(ipv4Frame(protocol: IPProtocol.tcp)) != base)
        #expect(hash(ipv4Frame(source: 0x0A00_0003)) != base)
        #expect(hash(ipv4Frame(destination: 0x0A00_0004)) != base)
        #expect(hash(ipv4Frame(sourceMAC: macB)) != base)

        let v6 = hash(ipv6Frame())
        #expect(hash(ipv6Frame(sourcePort: 40001)) != v6)
        #expect(hash(ipv6Frame(destinationPort: 444)) != v6)
        #expect(v6 != base)
        // Ports are found after a Hop-by-Hop header too.
        #expect(hash(ipv6Frame(hopByHop: true)) != hash(ipv6Frame(sourcePort: 1, hopByHop: true)))
    }

    @Test func manyFlowsSpreadOut() {
        var hashes = Set<UInt32>()
        var ports = Set<UInt16>()
        for port in 0..<2000 {
            let value = hash(ipv4Frame(sourcePort: UInt16(20000 + port)))
            hashes.insert(value)
            ports.insert(FlowHash.vxlanSourcePort(value))
        }
        #expect(hashes.count == 2000)
        #expect(ports.count > 1800)  // 2000 draws from 16384 ports: ~1880 distinct expected
    }

    @Test func fragmentsIgnorePorts() {
        // Every fragment of a datagram must hash alike, although only the first carries ports.
        let first = hash(ipv4Frame(sourcePort: 1, fragment: 0x2000))
        let later = hash(ipv4Frame(sourcePort: 2, fragment: 0x00B9))
        #expect(first == later)
        #expect(first != hash(ipv4Frame(sourcePort: 1)))
    }

    @Test func vlanTaggedFrames() {
        var tagged = ipv4Frame()
        tagged.insert(contentsOf: [0x81, 0x00, 0x00, 0x64], at: 12)
        var otherVLAN = tagged
        otherVLAN[15] = 0x65
        var otherPort = tagged
        otherPort[18 + 20] = 0x12
        #expect(hash(tagged) != hash(otherVLAN))
        #expect(hash(tagged) != hash(otherPort))
    }

    @Test func truncatedFramesDoNotCrash() {
        for frame in [ipv4Frame(), ipv6Frame(), ipv6Frame(hopByHop: true)] {
            var values = Set<UInt32>()
            for length in 0...frame.count { values.insert(hash(frame, count: length)) }
            #expect(values.count > 3)
        }
    }

    @Test func sourcePortRange() {
        var samples: [UInt32] = [0, 1, 0x3FFF, 0x4000, 0xC000, 0xFFFF, 0x1_0000, 0xFFFF_FFFF, 0x8000_0000]
        var state: UInt32 = 12345
        for _ in 0..<100_000 {
            state = state &* 1_664_525 &+ 1_013_904_223
            samples.append(state)
        }
        var seen = Set<UInt16>()
        for sample in samples {
            let port = FlowHash.vxlanSourcePort(sample)
            #expect((49152...65535).contains(port))
            seen.insert(port)
        }
        #expect(seen.contains(49152))
        #expect(seen.contains(65535))
        #expect(seen.count > 16000)
    }
}
