import ButterflyPacket
import Testing

@Suite struct IGMPTests {
    let host = ipv4("192.0.2.7")
    let group = ipv4("239.1.2.3")

    @Test func membershipReport() throws {
        let frame = buildFrame { IGMP.buildReport(into: $0, sourceMAC: macA, source: host, group: group) }
        #expect(frame.count == IGMP.frameLength)
        #expect(Array(frame[0..<14]) == [0x01, 0x00, 0x5E, 0x01, 0x02, 0x03] + octets(mac: macA) + [0x08, 0x00])
        let ip = Array(frame[14..<38])
        #expect(ip[0] == 0x46)
        #expect(Array(ip[2..<4]) == [0, 32])
        #expect(ip[8] == 1)  // TTL
        #expect(ip[9] == 2)  // IGMP
        #expect(Array(ip[12..<20]) == octets(host) + octets(group))
        #expect(Array(ip[20..<24]) == [0x94, 0x04, 0x00, 0x00])  // Router Alert
        #expect(referenceChecksum(ip) == 0)
        // 0x1600 + 0xEF01 + 0x0203 = 0x10704 → 0x0705 → checksum 0xF8FA.
        #expect(Array(frame[38..<46]) == [0x16, 0, 0xF8, 0xFA, 239, 1, 2, 3])

        let header = try #require(withGuardedBytes(frame) { IPv4.parse($0 + 14, length: $1 - 14) })
        #expect(header.hasOptions && header.protocol == IPProtocol.igmp && header.payloadLength == 8)
        let message = withGuardedBytes(frame) { data, _ in IGMP.parse(data + 38, length: 8) }
        #expect(message == IGMP.Message(type: IGMP.membershipReportV2, maximumResponseTime: 0, group: group))
    }

    @Test func leaveGroup() {
        let frame = buildFrame { IGMP.buildLeave(into: $0, sourceMAC: macA, source: host, group: group) }
        #expect(Array(frame[0..<6]) == [0x01, 0x00, 0x5E, 0x00, 0x00, 0x02])
        #expect(Array(frame[30..<34]) == octets(ipv4("224.0.0.2")))
        #expect(referenceChecksum(Array(frame[14..<38])) == 0)
        #expect(frame[38] == 0x17)
        #expect(Array(frame[42..<46]) == octets(group))
        #expect(referenceChecksum(Array(frame[38..<46])) == 0)
    }

    /// An IPv4 packet (no Ethernet) carrying an IGMP query.
    func query(maximumResponseTime: UInt8, group: UInt32, extra: [UInt8] = [], fixChecksum: Bool = true) -> [UInt8] {
        buildFrame { data in
            let headerLength = IPv4.write(
                data,
                totalLength: 24 + 8 + extra.count,
                protocol: IPProtocol.igmp,
                source: ipv4("192.0.2.254"),
                destination: group == 0 ? IPv4.allSystems : group,
                ttl: 1,
                routerAlert: true
            )
            let message = data + headerLength
            message.storeByte(IGMP.membershipQuery, at: 0)
            message.storeByte(maximumResponseTime, at: 1)
            message.storeBigEndian16(0, at: 2)
            message.storeBigEndian32(group, at: 4)
            for (index, byte) in extra.enumerated() { message.storeByte(byte, at: 8 + index) }
            if fixChecksum {
                message.storeBigEndian16(InternetChecksum.compute(message, length: 8 + extra.count), at: 2)
            }
            return headerLength + 8 + extra.count
        }
    }

    func parseQuery(_ packet: [UInt8], count: Int? = nil) -> IGMP.Query? {
        withGuardedBytes(packet, count: count) { IGMP.parseQuery($0, length: $1) }
    }

    @Test func queriesRecognised() {
        let general = parseQuery(query(maximumResponseTime: 100, group: 0))
        #expect(general == IGMP.Query(group: 0, maximumResponseTime: 100, version: 2))
        #expect(general?.isGeneral == true)

        let specific = parseQuery(query(maximumResponseTime: 10, group: group))
        #expect(specific?.group == group)
        #expect(specific?.isGeneral == false)

        #expect(parseQuery(query(maximumResponseTime: 0, group: 0))?.version == 1)

        // IGMPv3 query (12+ bytes), exponential code 0x91: mant 1, exp 1 → 0x11 << 4.
        let v3 = parseQuery(query(maximumResponseTime: 0x91, group: 0, extra: [0, 0, 0, 0]))
        #expect(v3 == IGMP.Query(group: 0, maximumResponseTime: 0x11 << 4, version: 3))
    }

    @Test func nonQueriesRejected() {
        #expect(parseQuery(query(maximumResponseTime: 100, group: 0, fixChecksum: false)) == nil)
        let report = buildFrame { IGMP.buildReport(into: $0, sourceMAC: macA, source: host, group: group) }
        #expect(parseQuery(Array(report[14...])) == nil)

        var notIGMP = query(maximumResponseTime: 100, group: 0)
        notIGMP[9] = 17
        withGuardedBytes(notIGMP) { data, _ in
            IPv4.setChecksum(data, headerLength: 24)
            notIGMP = bytes(data, notIGMP.count)
        }
        #expect(parseQuery(notIGMP) == nil)

        var badIPChecksum = query(maximumResponseTime: 100, group: 0)
        badIPChecksum[8] = 2
        #expect(parseQuery(badIPChecksum) == nil)

        var fragment = query(maximumResponseTime: 100, group: 0)
        fragment[6] = 0x20
        withGuardedBytes(fragment) { data, _ in
            IPv4.setChecksum(data, headerLength: 24)
            fragment = bytes(data, fragment.count)
        }
        #expect(parseQuery(fragment) == nil)
    }

    @Test func truncatedAtEveryLength() {
        let packet = query(maximumResponseTime: 100, group: group)
        for length in 0..<packet.count {
            #expect(parseQuery(packet, count: length) == nil, "length \(length)")
        }
        #expect(parseQuery(packet) != nil)
        let message = Array(packet[24...])
        for length in 0..<IGMP.messageLength {
            withGuardedBytes(message, count: length) { data, length in
                #expect(IGMP.parse(data, length: length) == nil)
            }
        }
    }
}
