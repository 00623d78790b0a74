import ButterflyPacket
import Testing

@Suite struct VXLANTests {
    let underlayMAC: UInt64 = 0x0A00_0000_0001
    let gatewayMAC: UInt64 = 0x0A00_0000_00FE
    let source4 = ipv4("192.0.2.10")
    let destination4 = ipv4("198.51.100.20")
    let source6 = ipv6("2001:db8::10")
    let destination6 = ipv6("2001:db8:1::20")

    /// An inner frame: Ethernet + IPv4 + UDP + payload, `size` bytes.
    func innerFrame(size: Int = 120) -> [UInt8] {
        var frame = octets(mac: 0x5200_0000_0002) + octets(mac: 0x5200_0000_0001) + [0x08, 0x00]
        frame += [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0] + octets(ipv4("10.0.0.1")) + octets(ipv4("10.0.0.2"))
        while frame.count < size { frame.append(UInt8(truncatingIfNeeded: frame.count &* 37)) }
        return Array(frame.prefix(size))
    }

    @Test func headerRoundTrip() {
        let header = buildFrame { data in
            VXLAN.write(data, vni: 0x12_3456)
            return VXLAN.headerLength
        }
        #expect(header == [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0])
        withGuardedBytes(header) { data, length in #expect(VXLAN.parseVNI(data, length: length) == 0x12_3456) }
        var reservedSet = header
        reservedSet[1] = 0xFF
        reservedSet[7] = 0xFF
        reservedSet[0] = 0xF8  // reserved flag bits are ignored on receipt
        withGuardedBytes(reservedSet) { data, length in #expect(VXLAN.parseVNI(data, length: length) == 0x12_3456) }
        for length in 0..<header.count {
            withGuardedBytes(header, count: length) { data, length in
                #expect(VXLAN.parseVNI(data, length: length) == nil)
            }
        }
    }

    @Test func headerWithoutIFlagRejected() {
        withGuardedBytes([0xF7, 0, 0, 0, 0, 0, 1, 0]) { data, length in
            #expect(VXLAN.parseVNI(data, length: length) == nil)
        }
    }

    @Test func constants() {
        #expect(VXLAN.udpPort == 4789)
        #expect(VXLAN.headerLength == 8)
        #expect(VXLAN.flagI == 0x08)
        #expect(VXLAN.ipv4Overhead == 14 + 20 + 8 + 8)
        #expect(VXLAN.ipv6Overhead == 14 + 40 + 8 + 8)
    }

    @Test func ipv4EncapsulationThenDecapsulation() throws {
        let pool = PacketPool(capacity: 16)
        let inner = innerFrame()
        var packet = makePacket(pool, inner)
        let ok = VXLANEncapsulation.encapsulateIPv4(
            &packet,
            pool: pool,
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: source4,
            destination: destination4,
            sourcePort: 54321,
            vni: 0xAB_CDEF
        )
        #expect(ok)
        #expect(Int(packet.length) == inner.count + 50)
        #expect(Int(packet.offset) == PacketPool.headroom - 50)
        let outer = bytes(pool.data(packet), Int(packet.length))

        // Outer headers, byte by byte.
        #expect(Array(outer[0..<14]) == octets(mac: gatewayMAC) + octets(mac: underlayMAC) + [0x08, 0x00])
        let ip = Array(outer[14..<34])
        #expect(ip[0] == 0x45)
        #expect(Array(ip[2..<4]) == be16(inner.count + 36))
        #expect(Array(ip[6..<8]) == [0x40, 0x00])  // DF
        #expect(ip[8] == 64)
        #expect(ip[9] == 17)
        #expect(Array(ip[12..<20]) == octets(source4) + octets(destination4))
        #expect(referenceChecksum(ip) == 0)
        #expect(Array(outer[34..<42]) == be16(54321) + be16(4789) + be16(inner.count + 16) + [0, 0])
        #expect(Array(outer[42..<50]) == [0x08, 0, 0, 0, 0xAB, 0xCD, 0xEF, 0])
        #expect(Array(outer[50...]) == inner)

        let result = withGuardedBytes(outer) { VXLANDecapsulation.parse($0, length: $1) }
        guard case .frame(let decapsulated) = result else {
            Issue.record("not decapsulated: \(result)")
            return
        }
        #expect(decapsulated.outerSourceMAC == underlayMAC)
        #expect(decapsulated.outerDestinationMAC == gatewayMAC)
        #expect(decapsulated.outerSource == .v4(source4))
        #expect(decapsulated.outerDestination == .v4(destination4))
        #expect(decapsulated.sourcePort == 54321)
        #expect(decapsulated.destinationPort == 4789)
        #expect(decapsulated.vni == 0xAB_CDEF)
        #expect(decapsulated.innerOffset == 50)
        #expect(decapsulated.innerLength == inner.count)

        // In place on the packet.
        let inPlace = VXLANDecapsulation.decapsulate(&packet, pool: pool)
        #expect(inPlace == result)
        #expect(packet.vni == 0xAB_CDEF)
        #expect(Int(packet.offset) == PacketPool.headroom)
        #expect(bytes(pool.data(packet), Int(packet.length)) == inner)
    }

    @Test func ipv6EncapsulationThenDecapsulation() throws {
        let pool = PacketPool(capacity: 16)
        let inner = innerFrame(size: 333)
        var packet = makePacket(pool, inner)
        let tunnel = VXLANEncapsulation(
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: .v6(source6),
            destination: .v6(destination6)
        )
        #expect(tunnel.overhead == 70)
        #expect(tunnel.encapsulate(&packet, pool: pool, vni: 7, sourcePort: 60000))
        #expect(Int(packet.length) == inner.count + 70)
        let outer = bytes(pool.data(packet), Int(packet.length))

        #expect(Array(outer[0..<14]) == octets(mac: gatewayMAC) + octets(mac: underlayMAC) + [0x86, 0xDD])
        let ip = Array(outer[14..<54])
        #expect(Array(ip[0..<8]) == [0x60, 0, 0, 0] + be16(inner.count + 16) + [17, 64])
        #expect(Array(ip[8..<40]) == octets(source6) + octets(destination6))
        let udp = Array(outer[54...])
        #expect(Array(udp[0..<6]) == be16(60000) + be16(4789) + be16(inner.count + 16))
        #expect(udp[6] != 0 || udp[7] != 0)
        // Independent check of the mandatory UDP checksum over the whole datagram.
        #expect(
            referenceChecksum(ipv6PseudoHeader(source6, destination6, length: udp.count, nextHeader: 17) + udp) == 0
        )
        withGuardedBytes(udp) { data, length in
            #expect(UDP.verifyIPv6Checksum(data, length: length, source: source6, destination: destination6))
        }
        #expect(Array(outer[62..<70]) == [0x08, 0, 0, 0, 0, 0, 7, 0])

        let result = withGuardedBytes(outer) { VXLANDecapsulation.parse($0, length: $1) }
        let expected = VXLANDecapsulated(
            outerDestinationMAC: gatewayMAC,
            outerSourceMAC: underlayMAC,
            outerSource: .v6(source6),
            outerDestination: .v6(destination6),
            sourcePort: 60000,
            destinationPort: 4789,
            vni: 7,
            innerOffset: 70,
            innerLength: inner.count
        )
        #expect(result == .frame(expected))

        #expect(VXLANDecapsulation.decapsulate(&packet, pool: pool) == .frame(expected))
        #expect(packet.vni == 7)
        #expect(bytes(pool.data(packet), Int(packet.length)) == inner)
    }

    @Test func structMatchesStaticIPv4() {
        let pool = PacketPool(capacity: 16)
        let inner = innerFrame()
        var first = makePacket(pool, inner)
        var second = makePacket(pool, inner)
        let tunnel = VXLANEncapsulation(
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: .v4(source4),
            destination: .v4(destination4)
        )
        #expect(tunnel.overhead == 50)
        #expect(tunnel.encapsulate(&first, pool: pool, vni: 99, sourcePort: 50000))
        #expect(
            VXLANEncapsulation.encapsulateIPv4(
                &second,
                pool: pool,
                sourceMAC: underlayMAC,
                destinationMAC: gatewayMAC,
                source: source4,
                destination: destination4,
                sourcePort: 50000,
                vni: 99
            )
        )
        #expect(bytes(pool.data(first), Int(first.length)) == bytes(pool.data(second), Int(second.length)))
    }

    @Test func encapsulationRefusals() {
        let pool = PacketPool(capacity: 16)
        let inner = innerFrame()
        var packet = makePacket(pool, inner)
        packet.offset = 49  // one byte short of the IPv4 overhead
        let before = packet
        let v4 = VXLANEncapsulation(
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: .v4(source4),
            destination: .v4(destination4)
        )
        #expect(!v4.encapsulate(&packet, pool: pool, vni: 1, sourcePort: 50000))
        #expect(packet.offset == before.offset && packet.length == before.length)

        packet.offset = 69
        let v6 = VXLANEncapsulation(
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: .v6(source6),
            destination: .v6(destination6)
        )
        #expect(!v6.encapsulate(&packet, pool: pool, vni: 1, sourcePort: 50000))
        #expect(packet.offset == 69 && packet.length == before.length)
        packet.offset = 70
        #expect(v6.encapsulate(&packet, pool: pool, vni: 1, sourcePort: 50000))
        #expect(packet.offset == 0)

        var fresh = makePacket(pool, inner)
        let mixed = VXLANEncapsulation(
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: .v4(source4),
            destination: .v6(destination6)
        )
        #expect(!mixed.encapsulate(&fresh, pool: pool, vni: 1, sourcePort: 50000))
        #expect(!v4.encapsulate(&fresh, pool: pool, vni: 0x100_0000, sourcePort: 50000))
        #expect(Int(fresh.length) == inner.count)
    }

    func encapsulatedIPv4(inner: [UInt8], vni: UInt32 = 42) -> [UInt8] {
        let pool = PacketPool(capacity: 16)
        var packet = makePacket(pool, inner)
        let ok = VXLANEncapsulation.encapsulateIPv4(
            &packet,
            pool: pool,
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: source4,
            destination: destination4,
            sourcePort: 50001,
            vni: vni
        )
        precondition(ok)
        return bytes(pool.data(packet), Int(packet.length))
    }

    func encapsulatedIPv6(inner: [UInt8]) -> [UInt8] {
        let pool = PacketPool(capacity: 16)
        var packet = makePacket(pool, inner)
        let ok = VXLANEncapsulation.encapsulateIPv6(
            &packet,
            pool: pool,
            sourceMAC: underlayMAC,
            destinationMAC: gatewayMAC,
            source: source6,
            destination: destination6,
            sourcePort: 50001,
            vni: 42
        )
        precondition(ok)
        return bytes(pool.data(packet), Int(packet.length))
    }

    func decapsulate(_ frame: [UInt8], count: Int? = nil, port: UInt16 = 4789) -> VXLANDecapsulationResult {
        withGuardedBytes(frame, count: count) { VXLANDecapsulation.parse($0, length: $1, port: port) }
    }

    @Test func truncatedAtEveryLength() {
        for frame in [encapsulatedIPv4(inner: innerFrame(size: 60)), encapsulatedIPv6(inner: innerFrame(size: 60))] {
            for length in 0..<frame.count {
                #expect(decapsulate(frame, count: length) == .drop(.truncated), "length \(length)")
            }
            if case .frame = decapsulate(frame) {} else { Issue.record("full frame rejected") }
        }
    }

    @Test func linkPaddingIsNotPartOfTheInnerFrame() {
        let inner = innerFrame(size: 14)
        let padded = encapsulatedIPv4(inner: inner) + [0, 0, 0, 0]
        guard case .frame(let decapsulated) = decapsulate(padded) else {
            Issue.record("rejected")
            return
        }
        #expect(decapsulated.innerLength == 14)
    }

    @Test func badFlagsRejected() {
        for var frame in [encapsulatedIPv4(inner: innerFrame()), encapsulatedIPv6(inner: innerFrame())] {
            let flags = frame[12] == 0x08 ? 42 : 62
            frame[flags] = 0x00
            #expect(decapsulate(frame) == .drop(.badVXLANFlags))
            frame[flags] = 0xF7
            #expect(decapsulate(frame) == .drop(.badVXLANFlags))
        }
    }

    @Test func otherPortsAndProtocols() {
        let frame4 = encapsulatedIPv4(inner: innerFrame())
        #expect(decapsulate(frame4, port: 8472) == .drop(.notVXLANPort))
        var otherPort = frame4
        otherPort[37] = 0x00  // destination port 0x1200
        #expect(decapsulate(otherPort) == .drop(.notVXLANPort))
        if case .frame = decapsulate(frame4, port: 4789) {} else { Issue.record("rejected") }

        // TCP instead of UDP (fix the header checksum so that the protocol is what is judged).
        var tcp = frame4
        tcp[23] = 6
        withGuardedBytes(tcp) { data, _ in
            IPv4.setChecksum(data + 14, headerLength: 20)
            tcp = bytes(data, tcp.count)
        }
        #expect(decapsulate(tcp) == .drop(.notUDP))

        var v6 = encapsulatedIPv6(inner: innerFrame())
        v6[20] = 58
        #expect(decapsulate(v6) == .drop(.notUDP))

        // ARP is not IP; neither is a bad version.
        let arp = buildFrame { ARP.buildRequest(into: $0, senderMAC: 1, senderIP: 2, targetIP: 3) }
        #expect(decapsulate(arp) == .drop(.notIP))
        var version = frame4
        version[14] = 0x65
        #expect(decapsulate(version) == .drop(.notIP))
        var version6 = encapsulatedIPv6(inner: innerFrame())
        version6[14] = 0x45
        #expect(decapsulate(version6) == .drop(.notIP))
    }

    @Test func ipv4OptionsAndFragmentsRejected() {
        let frame = encapsulatedIPv4(inner: innerFrame())
        var options = frame
        options[14] = 0x46
        #expect(decapsulate(options) == .drop(.ipOptionsOrFragment))

        for field: UInt16 in [0x2000, 0x0010, 0x6000] {
            var fragment = frame
            fragment[20] = UInt8(field >> 8)
            fragment[21] = UInt8(field & 0xFF)
            withGuardedBytes(fragment) { data, _ in
                IPv4.setChecksum(data + 14, headerLength: 20)
                fragment = bytes(data, fragment.count)
            }
            #expect(decapsulate(fragment) == .drop(.ipOptionsOrFragment))
        }
    }

    @Test func badIPv4ChecksumRejected() {
        var frame = encapsulatedIPv4(inner: innerFrame())
        frame[22] = 63  // TTL
        #expect(decapsulate(frame) == .drop(.badIPChecksum))
    }

    @Test func shortInnerFrameRejected() {
        for inner in [[UInt8](), [1, 2, 3], innerFrame(size: 13)] {
            #expect(decapsulate(encapsulatedIPv4(inner: inner)) == .drop(.truncatedInner))
            #expect(decapsulate(encapsulatedIPv6(inner: inner)) == .drop(.truncatedInner))
        }
    }

    @Test func udpLengthBeyondIPPayloadRejected() {
        var frame = encapsulatedIPv4(inner: innerFrame())
        let udpLength = Int(frame[38]) << 8 | Int(frame[39])
        frame[38] = UInt8((udpLength + 1) >> 8)
        frame[39] = UInt8((udpLength + 1) & 0xFF)
        #expect(decapsulate(frame) == .drop(.truncated))
    }

    @Test func dropReasonsAreDistinctCounters() {
        #expect(VXLANDropReason.allCases.count == 8)
        #expect(Set(VXLANDropReason.allCases.map(\.rawValue)).count == 8)
    }
}
