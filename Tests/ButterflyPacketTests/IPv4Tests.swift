import ButterflyPacket
import Testing

@Suite struct IPv4Tests {
    /// A UDP header with a known checksum: 192.168.0.1 → 192.168.0.199, total length 0x73, DF,
    /// TTL 64, checksum 0xB861.
    let known: [UInt8] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xB8, 0x61,
        0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7,
    ]

    @Test func writeMatchesKnownChecksum() {
        let header = buildFrame { data in
            IPv4.write(
                data,
                totalLength: 0x73,
                protocol: IPProtocol.udp,
                source: ipv4("192.168.0.1"),
                destination: ipv4("192.168.0.199"),
                ttl: 64,
                dontFragment: true,
                identification: 0
            )
        }
        #expect(header == known)
        #expect(referenceChecksum(header) == 0)
    }

    @Test func verifyKnownChecksum() {
        var padded = known
        padded += [UInt8](repeating: 0, count: 0x73 - 20)
        withGuardedBytes(padded) { data, _ in #expect(IPv4.verifyChecksum(data, headerLength: 20)) }
        var corrupted = padded
        corrupted[8] = 0x3F  // TTL changed, checksum not
        withGuardedBytes(corrupted) { data, _ in #expect(!IPv4.verifyChecksum(data, headerLength: 20)) }
        withGuardedBytes(corrupted) { data, _ in
            IPv4.setChecksum(data, headerLength: 20)
            #expect(IPv4.verifyChecksum(data, headerLength: 20))
            #expect(referenceChecksum(bytes(data, 20)) == 0)
        }
    }

    @Test func parseFields() throws {
        let packet = known + [UInt8](repeating: 0, count: 0x73 - 20) + [0xEE, 0xEE]  // link padding
        let header = try #require(withGuardedBytes(packet) { IPv4.parse($0, length: $1) })
        #expect(header.headerLength == 20)
        #expect(header.totalLength == 0x73)
        #expect(header.payloadLength == 0x73 - 20)
        #expect(header.protocol == IPProtocol.udp)
        #expect(header.ttl == 64)
        #expect(header.source == 0xC0A8_0001)
        #expect(header.destination == 0xC0A8_00C7)
        #expect(!header.isFragment)
        #expect(!header.hasOptions)
    }

    @Test func buildParseRoundTrip() throws {
        let source = ipv4("198.51.100.1")
        #expect(source == 0xC633_6401)
        let packet = buildFrame { data in
            let length = IPv4.write(
                data,
                totalLength: 28,
                protocol: IPProtocol.tcp,
                source: source,
                destination: ipv4("203.0.113.9"),
                ttl: 17,
                dontFragment: false,
                identification: 0x1234,
                typeOfService: 0xB8
            )
            return length + 8
        }
        let header = try #require(withGuardedBytes(packet) { IPv4.parse($0, length: $1) })
        #expect(
            header
                == IPv4.Header(
                    headerLength: 20,
                    totalLength: 28,
                    protocol: 6,
                    ttl: 17,
                    typeOfService: 0xB8,
                    source: 0xC633_6401,
                    destination: 0xCB00_7109,
                    isFragment: false,
                    hasOptions: false
                )
        )
        #expect(Array(packet[4..<8]) == [0x12, 0x34, 0x00, 0x00])
        #expect(referenceChecksum(Array(packet[0..<20])) == 0)
    }

    @Test func truncatedAtEveryLength() {
        let packet = buildFrame { data in
            IPv4.write(data, totalLength: 28, protocol: 17, source: 1, destination: 2) + 8
        }
        for length in 0..<packet.count {
            withGuardedBytes(packet, count: length) { data, length in
                #expect(IPv4.parse(data, length: length) == nil)
            }
        }
        withGuardedBytes(packet) { data, length in #expect(IPv4.parse(data, length: length) != nil) }
    }

    @Test func malformedHeadersRejected() {
        let base = buildFrame { data in IPv4.write(data, totalLength: 40, protocol: 17, source: 1, destination: 2) + 20
        }
        var version6 = base
        version6[0] = 0x65
        var shortIHL = base
        shortIHL[0] = 0x44
        var totalBelowHeader = base
        totalBelowHeader[0] = 0x46  // IHL 24 bytes
        totalBelowHeader[2] = 0
        totalBelowHeader[3] = 20
        var totalBeyondData = base
        totalBeyondData[3] = 41
        for bad in [version6, shortIHL, totalBelowHeader, totalBeyondData] {
            withGuardedBytes(bad) { data, length in #expect(IPv4.parse(data, length: length) == nil) }
        }
    }

    @Test func optionsReported() throws {
        let packet = buildFrame { data in
            IPv4.write(data, totalLength: 32, protocol: 2, source: 1, destination: 2, ttl: 1, routerAlert: true) + 8
        }
        #expect(packet[0] == 0x46)
        #expect(Array(packet[20..<24]) == [0x94, 0x04, 0x00, 0x00])
        #expect(referenceChecksum(Array(packet[0..<24])) == 0)
        let header = try #require(withGuardedBytes(packet) { IPv4.parse($0, length: $1) })
        #expect(header.hasOptions)
        #expect(header.headerLength == 24)
        #expect(header.payloadLength == 8)
        withGuardedBytes(packet) { data, _ in #expect(IPv4.verifyChecksum(data, headerLength: 24)) }
    }

    @Test func fragmentsReported() {
        let base = buildFrame { data in IPv4.write(data, totalLength: 28, protocol: 17, source: 1, destination: 2) + 8 }
        // (flags/offset field, is a fragment)
        let cases: [(UInt16, Bool)] = [
            (0x4000, false),  // DF only
            (0x0000, false),
            (0x2000, true),  // MF, offset 0: first fragment
            (0x0001, true),  // last fragment, offset 8
            (0x20B9, true),  // MF and offset
        ]
        for (field, expected) in cases {
            var packet = base
            packet[6] = UInt8(field >> 8)
            packet[7] = UInt8(field & 0xFF)
            let header = withGuardedBytes(packet) { IPv4.parse($0, length: $1) }
            #expect(header?.isFragment == expected, "flags \(field)")
        }
    }

    @Test func pseudoHeaderSumMatchesBytes() {
        let source = ipv4("192.0.2.1")
        let destination = ipv4("198.51.100.200")
        let sum = IPv4.pseudoHeaderSum(source: source, destination: destination, protocol: 17, length: 1234)
        let pseudo = octets(source) + octets(destination) + [0, 17] + be16(1234)
        #expect(InternetChecksum.finish(sum) == referenceChecksum(pseudo))
    }

    @Test func multicastRange() {
        #expect(IPv4.isMulticast(ipv4("224.0.0.1")))
        #expect(IPv4.isMulticast(ipv4("239.255.255.255")))
        #expect(!IPv4.isMulticast(ipv4("240.0.0.1")))
        #expect(!IPv4.isMulticast(ipv4("223.255.255.255")))
        #expect(IPv4.allRouters == ipv4("224.0.0.2"))
        #expect(IPv4.allSystems == ipv4("224.0.0.1"))
    }
}
