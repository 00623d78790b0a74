import ButterflyPacket
import Testing

@Suite struct IPv6Tests {
    let source = ipv6("2001:db8::1")
    let destination = ipv6("2001:db8:ffff::abcd:2")

    @Test func addressLayout() {
        #expect(source == IPv6Address(high: 0x2001_0DB8_0000_0000, low: 1))
        #expect(IPv6Address.allNodes == ipv6("ff02::1"))
        #expect(IPv6Address.allRouters == ipv6("ff02::2"))
        #expect(IPv6Address.unspecified.isUnspecified)
        #expect(ipv6("ff02::16").isMulticast)
        #expect(!source.isMulticast)
        #expect(ipv6("fe80::1").isLinkLocalUnicast)
        #expect(ipv6("febf::1").isLinkLocalUnicast)
        #expect(!ipv6("fec0::1").isLinkLocalUnicast)
        #expect(IPv6Address.solicitedNode(for: ipv6("2001:db8::12:3456:789a")) == ipv6("ff02::1:ff56:789a"))
        #expect(ipv6("ff02::1:ff56:789a").isSolicitedNodeMulticast)
        #expect(!ipv6("ff02::1:fe56:789a").isSolicitedNodeMulticast)
        #expect(!ipv6("ff02::1").isSolicitedNodeMulticast)
    }

    @Test func addressLoadStore() {
        let frame = buildFrame { data in
            data.storeIPv6Address(destination, at: 3)
            return 19
        }
        #expect(Array(frame[3...]) == octets(destination))
        withGuardedBytes(frame) { data, _ in #expect(data.loadIPv6Address(at: 3) == destination) }
    }

    @Test func writeParseRoundTrip() throws {
        let packet = buildFrame { data in
            IPv6.write(
                data,
                payloadLength: 12,
                nextHeader: IPProtocol.udp,
                hopLimit: 33,
                source: source,
                destination: destination,
                trafficClass: 0xAB,
                flowLabel: 0xC_DEF1
            ) + 12
        }
        #expect(Array(packet[0..<8]) == [0x6A, 0xBC, 0xDE, 0xF1, 0x00, 0x0C, 17, 33])
        #expect(Array(packet[8..<24]) == octets(source))
        #expect(Array(packet[24..<40]) == octets(destination))
        let header = try #require(withGuardedBytes(packet) { IPv6.parse($0, length: $1) })
        #expect(
            header
                == IPv6.Header(
                    payloadLength: 12,
                    nextHeader: 17,
                    hopLimit: 33,
                    trafficClass: 0xAB,
                    flowLabel: 0xC_DEF1,
                    source: source,
                    destination: destination
                )
        )
        #expect(header.totalLength == 52)
    }

    @Test func truncatedAtEveryLength() {
        let packet = buildFrame { data in
            IPv6.write(data, payloadLength: 8, nextHeader: 17, hopLimit: 64, source: source, destination: destination)
                + 8
        }
        for length in 0..<packet.count {
            withGuardedBytes(packet, count: length) { data, length in
                #expect(IPv6.parse(data, length: length) == nil)
            }
        }
        withGuardedBytes(packet) { data, length in #expect(IPv6.parse(data, length: length) != nil) }
    }

    @Test func wrongVersionRejected() {
        var packet = buildFrame { data in
            IPv6.write(data, payloadLength: 0, nextHeader: 59, hopLimit: 64, source: source, destination: destination)
        }
        packet[0] = 0x45
        withGuardedBytes(packet) { data, length in #expect(IPv6.parse(data, length: length) == nil) }
    }

    @Test func extensionHeadersSkipped() throws {
        // Hop-by-Hop (8 bytes) → Destination Options (16 bytes) → UDP.
        let packet = buildFrame { data in
            _ = IPv6.write(
                data,
                payloadLength: 32,
                nextHeader: 0,
                hopLimit: 1,
                source: source,
                destination: destination
            )
            let extensions: [UInt8] = [60, 0, 5, 2, 0, 0, 1, 0] + [17, 1] + [UInt8](repeating: 0, count: 14)
            for (index, byte) in extensions.enumerated() { data.storeByte(byte, at: 40 + index) }
            return 72
        }
        let header = try #require(withGuardedBytes(packet) { IPv6.parse($0, length: $1) })
        let upper = withGuardedBytes(packet) { data, _ in IPv6.upperLayer(data, header: header) }
        #expect(upper?.nextHeader == 17)
        #expect(upper?.offset == 64)

        // An extension header claiming more than the payload holds.
        var broken = packet
        broken[49] = 4
        let brokenHeader = try #require(withGuardedBytes(broken) { IPv6.parse($0, length: $1) })
        #expect(withGuardedBytes(broken) { data, _ in IPv6.upperLayer(data, header: brokenHeader) } == nil)
    }

    @Test func pseudoHeaderSumMatchesBytes() {
        let sum = IPv6.pseudoHeaderSum(
            source: source,
            destination: destination,
            upperLayerLength: 70_000,
            nextHeader: 58
        )
        let pseudo = octets(source) + octets(destination) + [0, 1, 0x11, 0x70, 0, 0, 0, 58]
        #expect(InternetChecksum.finish(sum) == referenceChecksum(pseudo))
    }
}
