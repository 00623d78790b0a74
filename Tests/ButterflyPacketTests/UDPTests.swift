import ButterflyPacket
import Testing

@Suite struct UDPTests {
    let payload = Array("hello vxlan!".utf8)
    let source6 = ipv6("2001:db8::1")
    let destination6 = ipv6("2001:db8::2")

    func datagram(checksum: UInt16 = 0) -> [UInt8] {
        buildFrame { data in
            UDP.write(data, sourcePort: 50000, destinationPort: 4789, length: 8 + payload.count, checksum: checksum)
            for (index, byte) in payload.enumerated() { data.storeByte(byte, at: 8 + index) }
            return 8 + payload.count
        }
    }

    @Test func writeParseRoundTrip() throws {
        let bytes = datagram(checksum: 0xBEEF)
        #expect(Array(bytes[0..<8]) == [0xC3, 0x50, 0x12, 0xB5, 0x00, 20, 0xBE, 0xEF])
        let header = try #require(withGuardedBytes(bytes) { UDP.parse($0, length: $1) })
        #expect(header == UDP.Header(sourcePort: 50000, destinationPort: 4789, length: 20, checksum: 0xBEEF))
    }

    @Test func truncatedAtEveryLength() {
        let bytes = datagram()
        for length in 0..<bytes.count {
            withGuardedBytes(bytes, count: length) { data, length in
                #expect(UDP.parse(data, length: length) == nil)
            }
        }
    }

    @Test func lengthFieldBelowHeaderRejected() {
        var bytes = datagram()
        bytes[5] = 7
        withGuardedBytes(bytes) { data, length in #expect(UDP.parse(data, length: length) == nil) }
        bytes[5] = 8
        withGuardedBytes(bytes) { data, length in #expect(UDP.parse(data, length: length)?.length == 8) }
    }

    @Test func ipv6ChecksumKnownValue() {
        withGuardedBytes(datagram(checksum: 0x1234)) { data, length in
            // Computed independently (pseudo-header + datagram, checksum field zero).
            #expect(UDP.ipv6Checksum(data, length: length, source: source6, destination: destination6) == 0x395E)
            #expect(!UDP.verifyIPv6Checksum(data, length: length, source: source6, destination: destination6))
            UDP.setIPv6Checksum(data, length: length, source: source6, destination: destination6)
            #expect(data.loadBigEndian16(at: 6) == 0x395E)
            #expect(UDP.verifyIPv6Checksum(data, length: length, source: source6, destination: destination6))
            #expect(!UDP.verifyIPv6Checksum(data, length: length, source: destination6, destination: ipv6("::1")))
            let all = ipv6PseudoHeader(source6, destination6, length: length, nextHeader: 17) + bytes(data, length)
            #expect(referenceChecksum(all) == 0)
        }
    }

    @Test func ipv6ZeroChecksumIsSentAsAllOnes() {
        // With the first payload word zero the checksum is c = ~S. Putting c in that word makes
        // the sum S + ~S = 0xFFFF, whose complement 0 must go out as 0xFFFF (RFC 8200 §8.1).
        var crafted = datagram()
        crafted[8] = 0
        crafted[9] = 0
        let withZeroWord = withGuardedBytes(crafted) { data, length in
            UDP.ipv6Checksum(data, length: length, source: source6, destination: destination6)
        }
        crafted[8] = UInt8(withZeroWord >> 8)
        crafted[9] = UInt8(withZeroWord & 0xFF)
        withGuardedBytes(crafted) { data, length in
            #expect(UDP.ipv6Checksum(data, length: length, source: source6, destination: destination6) == 0xFFFF)
            UDP.setIPv6Checksum(data, length: length, source: source6, destination: destination6)
            #expect(UDP.verifyIPv6Checksum(data, length: length, source: source6, destination: destination6))
            let all = ipv6PseudoHeader(source6, destination6, length: length, nextHeader: 17) + bytes(data, length)
            #expect(referenceChecksum(all) == 0)
        }
    }

    @Test func ipv6ZeroChecksumInvalid() {
        withGuardedBytes(datagram(checksum: 0)) { data, length in
            #expect(!UDP.verifyIPv6Checksum(data, length: length, source: source6, destination: destination6))
        }
    }

    @Test func ipv4Checksum() {
        let source = ipv4("192.0.2.1")
        let destination = ipv4("198.51.100.1")
        withGuardedBytes(datagram()) { data, length in
            #expect(UDP.verifyIPv4Checksum(data, length: length, source: source, destination: destination))
            let value = UDP.ipv4Checksum(data, length: length, source: source, destination: destination)
            #expect(value == 0xA89C)
            data.storeBigEndian16(value, at: 6)
            #expect(UDP.verifyIPv4Checksum(data, length: length, source: source, destination: destination))
            data.storeBigEndian16(value &+ 1, at: 6)
            #expect(!UDP.verifyIPv4Checksum(data, length: length, source: source, destination: destination))
        }
    }
}
