import ButterflyPacket
import Testing

@Suite struct ICMPv6Tests {
    let ours = ipv6("2001:db8::1")
    let peer = ipv6("2001:db8::2")

    func parseFrame(_ frame: [UInt8], count: Int? = nil) -> ICMPv6.NeighborPacket? {
        withGuardedBytes(frame, count: count) { data, length in
            ICMPv6.parseNeighborPacket(data + Ethernet.headerLength, length: length - Ethernet.headerLength)
        }
    }

    /// Recomputes the checksum of `frame`'s ICMPv6 message (which starts at `offset`) with
    /// the test's own code: the sum over pseudo-header + message must be 0.
    func checksumHolds(_ frame: [UInt8], offset: Int = 54) -> Bool {
        let source = withGuardedBytes(frame) { data, _ in data.loadIPv6Address(at: 22) }
        let destination = withGuardedBytes(frame) { data, _ in data.loadIPv6Address(at: 38) }
        let message = Array(frame[offset...])
        return referenceChecksum(ipv6PseudoHeader(source, destination, length: message.count, nextHeader: 58) + message)
            == 0
    }

    @Test func solicitationForAddressResolution() throws {
        let frame = buildFrame {
            ICMPv6.buildNeighborSolicitation(into: $0, sourceMAC: macA, source: ours, target: peer)
        }
        #expect(frame.count == ICMPv6.neighborFrameLength)
        #expect(Array(frame[0..<14]) == [0x33, 0x33, 0xFF, 0x00, 0x00, 0x02] + octets(mac: macA) + [0x86, 0xDD])
        #expect(Array(frame[14..<22]) == [0x60, 0, 0, 0, 0, 32, 58, 255])
        #expect(Array(frame[38..<54]) == octets(ipv6("ff02::1:ff00:2")))
        #expect(Array(frame[54..<62]) == [135, 0, 0x1C, 0x27, 0, 0, 0, 0])  // checksum computed independently
        #expect(Array(frame[62..<78]) == octets(peer))
        #expect(Array(frame[78..<86]) == [1, 1] + octets(mac: macA))
        #expect(checksumHolds(frame))

        let packet = try #require(parseFrame(frame))
        #expect(packet.message.isSolicitation)
        #expect(packet.message.target == peer)
        #expect(packet.message.linkLayerAddress == macA)
        #expect(packet.ip.source == ours)
        #expect(packet.ip.destination == IPv6Address.solicitedNode(for: peer))
    }

    @Test func advertisementAnsweringSolicitation() throws {
        // The peer asks for our address; we answer.
        let solicitation = buildFrame {
            ICMPv6.buildNeighborSolicitation(into: $0, sourceMAC: macB, source: peer, target: ours)
        }
        let ns = try #require(parseFrame(solicitation))
        let frame = buildFrame {
            ICMPv6.buildNeighborAdvertisement(into: $0, answering: ns, requesterMAC: 0x0EEE_EEEE_EEEE, ourMAC: macA)
        }
        #expect(frame.count == 86)
        // To the MAC in the solicitation's option, not the Ethernet source passed in.
        #expect(Array(frame[0..<14]) == octets(mac: macB) + octets(mac: macA) + [0x86, 0xDD])
        #expect(Array(frame[22..<38]) == octets(ours))
        #expect(Array(frame[38..<54]) == octets(peer))
        // Known checksum, computed independently for this exact message.
        #expect(Array(frame[54..<62]) == [136, 0, 0x8A, 0x73, 0x60, 0, 0, 0])
        #expect(Array(frame[62..<78]) == octets(ours))
        #expect(Array(frame[78..<86]) == [2, 1] + octets(mac: macA))
        #expect(checksumHolds(frame))
        withGuardedBytes(frame) { data, _ in
            #expect(ICMPv6.verifyChecksum(data + 54, length: 32, source: ours, destination: peer))
            #expect(ICMPv6.checksum(data + 54, length: 32, source: ours, destination: peer) == 0x8A73)
            #expect(!ICMPv6.verifyChecksum(data + 54, length: 32, source: ours, destination: ipv6("2001:db8::3")))
        }

        let na = try #require(parseFrame(frame))
        #expect(
            na.message
                == ICMPv6.NeighborMessage(
                    type: 136,
                    target: ours,
                    linkLayerAddress: macA,
                    isRouter: false,
                    isSolicited: true,
                    isOverride: true
                )
        )
    }

    @Test func advertisementFallsBackToEthernetSource() throws {
        let solicitation = buildFrame {
            ICMPv6.buildNeighborSolicitation(
                into: $0,
                sourceMAC: macB,
                destinationMAC: macA,
                source: peer,
                destination: ours,
                target: ours
            )
        }
        // Strip the option: a unicast NS may come without one.
        var stripped = Array(solicitation[0..<78])
        stripped[19] = 24
        withGuardedBytes(stripped) { data, _ in
            ICMPv6.setChecksum(data + 54, length: 24, source: peer, destination: ours)
            stripped = bytes(data, 78)
        }
        let ns = try #require(parseFrame(stripped))
        #expect(ns.message.linkLayerAddress == nil)
        let frame = buildFrame {
            ICMPv6.buildNeighborAdvertisement(into: $0, answering: ns, requesterMAC: macB, ourMAC: macA)
        }
        #expect(Array(frame[0..<6]) == octets(mac: macB))
    }

    @Test func duplicateAddressDetection() throws {
        let probe = buildFrame {
            ICMPv6.buildNeighborSolicitation(into: $0, sourceMAC: macB, source: .unspecified, target: ours)
        }
        #expect(probe.count == 78)  // no source link-layer option from ::
        #expect(checksumHolds(probe))
        let ns = try #require(parseFrame(probe))
        let frame = buildFrame {
            ICMPv6.buildNeighborAdvertisement(into: $0, answering: ns, requesterMAC: macB, ourMAC: macA)
        }
        #expect(Array(frame[0..<6]) == [0x33, 0x33, 0, 0, 0, 1])
        #expect(Array(frame[38..<54]) == octets(IPv6Address.allNodes))
        let na = try #require(parseFrame(frame))
        #expect(!na.message.isSolicited)
        #expect(na.message.isOverride)
    }

    @Test func invalidNeighborMessagesRejected() {
        let good = buildFrame {
            ICMPv6.buildNeighborSolicitation(into: $0, sourceMAC: macA, source: ours, target: peer)
        }
        #expect(parseFrame(good) != nil)

        func mutated(_ change: (inout [UInt8]) -> Void, fixChecksum: Bool = true) -> [UInt8] {
            var frame = good
            change(&frame)
            if fixChecksum {
                withGuardedBytes(frame) { data, _ in
                    let source = data.loadIPv6Address(at: 22)
                    let destination = data.loadIPv6Address(at: 38)
                    ICMPv6.setChecksum(data + 54, length: frame.count - 54, source: source, destination: destination)
                    frame = bytes(data, frame.count)
                }
            }
            return frame
        }
        let cases: [[UInt8]] = [
            mutated({ $0[21] = 254 }),  // hop limit
            mutated({ $0[55] = 1 }),  // code
            mutated({ $0[62] = 0xFF }),  // multicast target
            mutated({ $0[79] = 0 }),  // zero-length option
            mutated({ $0[79] = 2 }),  // option longer than the message
            mutated({ $0[54] = 128 }),  // echo request
            mutated({ $0[20] = 17 }),  // not ICMPv6
            mutated({ $0[70] ^= 1 }, fixChecksum: false),  // checksum
            // NS from :: must go to a solicited-node address without a source link-layer option.
            mutated({ for index in 22..<38 { $0[index] = 0 } }),
            // NA to a multicast address must not have S set.
            mutated({
                $0[54] = 136
                $0[58] = 0x40
                $0[78] = 2
            }),
        ]
        for (index, frame) in cases.enumerated() {
            #expect(parseFrame(frame) == nil, "case \(index)")
        }
    }

    @Test func truncatedAtEveryLength() {
        let frame = buildFrame {
            ICMPv6.buildNeighborAdvertisement(
                into: $0,
                sourceMAC: macA,
                destinationMAC: macB,
                source: ours,
                destination: peer,
                target: ours,
                isSolicited: true
            )
        }
        for length in Ethernet.headerLength..<frame.count {
            #expect(parseFrame(frame, count: length) == nil, "length \(length)")
        }
        #expect(parseFrame(frame) != nil)
        let message = Array(frame[54...])
        for length in 0..<ICMPv6.neighborMessageLength {
            withGuardedBytes(message, count: length) { data, length in
                #expect(ICMPv6.parseNeighborMessage(data, length: length) == nil)
            }
        }
        // Cut inside the option.
        for length in 25..<32 {
            withGuardedBytes(message, count: length) { data, length in
                #expect(ICMPv6.parseNeighborMessage(data, length: length) == nil)
            }
        }
        withGuardedBytes(message, count: 24) { data, length in
            #expect(ICMPv6.parseNeighborMessage(data, length: length)?.linkLayerAddress == nil)
        }
    }

    @Test func flagsParsed() throws {
        let frame = buildFrame {
            ICMPv6.buildNeighborAdvertisement(
                into: $0,
                sourceMAC: macA,
                destinationMAC: macB,
                source: ours,
                destination: peer,
                target: ours,
                isRouter: true,
                isSolicited: false,
                isOverride: false
            )
        }
        #expect(frame[58] == 0x80)
        let na = try #require(parseFrame(frame))
        #expect(na.message.isRouter && !na.message.isSolicited && !na.message.isOverride)
    }

    // MARK: MLD

    let linkLocal = ipv6("fe80::1")
    let group = ipv6("ff0e::1234")

    @Test func listenerReport() {
        let frame = buildFrame { MLD.buildReport(into: $0, sourceMAC: macA, source: linkLocal, group: group) }
        #expect(frame.count == MLD.frameLength)
        #expect(Array(frame[0..<14]) == [0x33, 0x33, 0, 0, 0x12, 0x34] + octets(mac: macA) + [0x86, 0xDD])
        #expect(Array(frame[14..<22]) == [0x60, 0, 0, 0, 0, 32, 0, 1])  // hop-by-hop next, hop limit 1
        #expect(Array(frame[22..<38]) == octets(linkLocal))
        #expect(Array(frame[38..<54]) == octets(group))
        #expect(Array(frame[54..<62]) == [58, 0, 5, 2, 0, 0, 1, 0])  // Router Alert (MLD) + PadN
        #expect(Array(frame[62..<70]) == [131, 0, 0x5B, 0xA5, 0, 0, 0, 0])  // independent checksum
        #expect(Array(frame[70..<86]) == octets(group))
        #expect(checksumHolds(frame, offset: 62))
    }

    @Test func listenerDone() {
        let frame = buildFrame { MLD.buildDone(into: $0, sourceMAC: macA, source: linkLocal, group: group) }
        #expect(Array(frame[0..<6]) == [0x33, 0x33, 0, 0, 0, 2])
        #expect(Array(frame[38..<54]) == octets(IPv6Address.allRouters))
        #expect(frame[62] == 132)
        #expect(Array(frame[70..<86]) == octets(group))
        #expect(checksumHolds(frame, offset: 62))
    }

    /// A query built from a report: type 130, to ff02::1, with the given delay and group.
    func query(delay: UInt16, group: IPv6Address, extra: [UInt8] = []) -> [UInt8] {
        var frame = buildFrame { MLD.buildReport(into: $0, sourceMAC: macB, source: linkLocal, group: group) } + extra
        frame[19] = UInt8(32 + extra.count)
        frame[62] = 130
        frame[66] = UInt8(delay >> 8)
        frame[67] = UInt8(delay & 0xFF)
        withGuardedBytes(frame) { data, length in
            data.storeIPv6Address(.allNodes, at: 38)
            ICMPv6.setChecksum(data + 62, length: length - 62, source: linkLocal, destination: .allNodes)
            frame = bytes(data, length)
        }
        return frame
    }

    func parseQuery(_ frame: [UInt8], count: Int? = nil) -> MLD.Query? {
        withGuardedBytes(frame, count: count) { data, length in MLD.parseQuery(data + 14, length: length - 14) }
    }

    @Test func queriesRecognised() {
        let general = parseQuery(query(delay: 10000, group: .unspecified))
        #expect(general == MLD.Query(group: .unspecified, maximumResponseDelay: 10000, isVersion2: false))
        #expect(general?.isGeneral == true)

        let specific = parseQuery(query(delay: 1000, group: group))
        #expect(specific?.group == group)
        #expect(specific?.isGeneral == false)

        // MLDv2 (28 bytes or more) with an exponential code: mant 0x234, exp 1 → 0x1234 << 4.
        let v2 = parseQuery(query(delay: 0x9234, group: .unspecified, extra: [0, 0, 0, 0]))
        #expect(v2 == MLD.Query(group: .unspecified, maximumResponseDelay: 0x1234 << 4, isVersion2: true))

        // Reports are not queries.
        let report = buildFrame { MLD.buildReport(into: $0, sourceMAC: macA, source: linkLocal, group: group) }
        #expect(parseQuery(report) == nil)
    }

    @Test func invalidQueriesRejected() {
        var hopLimit = query(delay: 100, group: .unspecified)
        hopLimit[21] = 2
        #expect(parseQuery(hopLimit) == nil)

        var globalSource = query(delay: 100, group: .unspecified)
        globalSource[22] = 0x20
        globalSource[23] = 0x01  // checksum is now wrong as well; fix it to test the source rule alone
        withGuardedBytes(globalSource) { data, length in
            ICMPv6.setChecksum(
                data + 62,
                length: length - 62,
                source: data.loadIPv6Address(at: 22),
                destination: .allNodes
            )
            globalSource = bytes(data, length)
        }
        #expect(parseQuery(globalSource) == nil)

        var badChecksum = query(delay: 100, group: .unspecified)
        badChecksum[80] ^= 0x10
        #expect(parseQuery(badChecksum) == nil)

        let frame = query(delay: 100, group: group)
        for length in 14..<frame.count {
            #expect(parseQuery(frame, count: length) == nil, "length \(length)")
        }
        #expect(parseQuery(frame) != nil)
    }
}
