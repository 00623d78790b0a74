import ButterflyPacket
import ButterflyTestSupport
import Testing

/// `FrameHeaders.walk`: tags, IPv4 options and fragments, IPv6 extension chains and fragments,
/// upper-layer fields, and bounds (every frame is read from the end of a page, so a read past
/// its length crashes the test).
@Suite struct FrameHeadersTests {
    typealias F = TestFrame
    static let guestMAC: UInt64 = 0x5254_0000_0001
    static let v4a = F.ipv4("203.0.113.1")
    static let v4b = F.ipv4("203.0.113.2")
    static let v6a = F.ipv6("2001:db8::1")
    static let v6b = F.ipv6("2001:db8::2")

    func walk(_ frame: [UInt8]) -> FrameHeaders {
        F.withGuarded(frame) { FrameHeaders.walk($0, length: $1) }
    }

    static func ipv4Frame(
        tags: [F.Tag] = [],
        options: [UInt8] = [],
        flagsAndOffset: UInt16 = 0,
        protocol: UInt8 = IPProtocol.udp,
        _ payload: [UInt8]
    ) -> [UInt8] {
        F.ethernet(
            from: guestMAC,
            tags: tags,
            type: 0x0800,
            F.ipv4(
                from: v4a,
                to: v4b,
                protocol: `protocol`,
                options: options,
                identification: 0xBEEF,
                flagsAndOffset: flagsAndOffset,
                payload
            )
        )
    }

    static func ipv6Frame(
        tags: [F.Tag] = [],
        extensions: [F.Extension] = [],
        next: UInt8,
        _ payload: [UInt8]
    ) -> [UInt8] {
        F.ethernet(
            from: guestMAC,
            tags: tags,
            type: 0x86DD,
            F.ipv6(from: v6a, to: v6b, extensions: extensions, next: next, payload)
        )
    }

    // MARK: Link layer

    @Test func untaggedIPv4UDP() {
        let frame = Self.ipv4Frame(F.udp(from: 5000, to: 53, [1, 2, 3]))
        let headers = walk(frame)
        #expect(headers.etherType == 0x0800)
        #expect(headers.vlanTags == 0)
        #expect(headers.network == .ipv4)
        #expect(headers.isIP)
        #expect(headers.networkOffset == 14)
        #expect(headers.source == FrameHeaders.ipv4Mapped | UInt128(Self.v4a))
        #expect(headers.destination == FrameHeaders.ipv4Mapped | UInt128(Self.v4b))
        #expect(headers.ipProtocol == IPProtocol.udp)
        #expect(headers.transportOffset == 34)
        #expect(headers.networkEnd == frame.count)
        #expect(headers.fragment == .none)
        #expect(headers.sourcePort == 5000)
        #expect(headers.destinationPort == 53)
    }

    @Test func ethernetPaddingIsNotPayload() {
        let frame = Self.ipv4Frame(F.udp(from: 1, to: 2)) + [UInt8](repeating: 0xAA, count: 18)
        let headers = walk(frame)
        #expect(headers.network == .ipv4)
        #expect(headers.networkEnd == 14 + 28)
    }

    @Test(arguments: [
        [F.Tag(vlan: 0)],
        [F.Tag(vlan: 100, priority: 5)],
        [F.Tag(type: 0x88A8, vlan: 10), F.Tag(vlan: 20)],
        [F.Tag(type: 0x88A8), F.Tag(), F.Tag(), F.Tag()],
    ])
    func tagsAreWalkedThrough(tags: [F.Tag]) {
        let frame = Self.ipv6Frame(tags: tags, next: IPProtocol.tcp, F.tcp(from: 40000, to: 22, flags: 0x02))
        let headers = walk(frame)
        #expect(headers.vlanTags == UInt8(tags.count))
        #expect(headers.etherType == 0x86DD)
        #expect(headers.network == .ipv6)
        #expect(headers.networkOffset == 14 + 4 * tags.count)
        #expect(headers.transportOffset == 14 + 4 * tags.count + 40)
        #expect(headers.destinationPort == 22)
        #expect(headers.tcpFlags == FrameHeaders.TCPFlag.syn)
    }

    @Test func moreThanFourTagsAreMalformedAndStillCountAsTagged() {
        let tags = [F.Tag](repeating: F.Tag(), count: 5)
        let headers = walk(Self.ipv4Frame(tags: tags, F.udp(from: 1, to: 2)))
        #expect(headers.network == .malformed)
        #expect(headers.vlanTags == 5)
        #expect(headers.etherType == 0x8100)
    }

    @Test func aTagCutShortIsMalformedAndStillCountsAsTagged() {
        // Type 0x8100 in the last two bytes: no room for the tag control and inner type.
        for extra in 0..<4 {
            let frame =
                F.bytes(mac: F.broadcast) + F.bytes(mac: Self.guestMAC) + [0x81, 0x00]
                + [UInt8](repeating: 0, count: extra)
            let headers = walk(frame)
            #expect(headers.network == .malformed, "\(extra) bytes after the tag type")
            #expect(headers.vlanTags == 1)
            #expect(headers.etherType == 0x8100)
        }
    }

    @Test func arpIsOtherWithItsOffset() {
        let arp = F.arp(operation: 1, senderMAC: Self.guestMAC, senderIP: Self.v4a, targetIP: Self.v4b)
        let plain = walk(F.ethernet(from: Self.guestMAC, type: 0x0806, arp))
        #expect(plain.network == .other)
        #expect(!plain.isIP)
        #expect(plain.etherType == 0x0806)
        #expect(plain.networkOffset == 14)
        #expect(plain.transportOffset == 0)
        let tagged = walk(F.ethernet(from: Self.guestMAC, tags: [F.Tag()], type: 0x0806, arp))
        #expect(tagged.network == .other)
        #expect(tagged.vlanTags == 1)
        #expect(tagged.networkOffset == 18)
    }

    @Test func aBareEthernetHeaderIsOther() {
        let headers = walk(F.ethernet(from: Self.guestMAC, type: 0x88CC, []))
        #expect(headers.network == .other)
        #expect(headers.etherType == 0x88CC)
    }

    // MARK: IPv4

    @Test(arguments: [4, 8, 20, 40])
    func ipv4OptionsMoveTheTransportHeader(optionBytes: Int) {
        // NOP options (type 1) ending with End of Option List (type 0).
        let options = [UInt8](repeating: 1, count: optionBytes - 1) + [0]
        let frame = Self.ipv4Frame(
            options: options,
            protocol: IPProtocol.tcp,
            F.tcp(from: 443, to: 50000, flags: 0x12)
        )
        let headers = walk(frame)
        #expect(headers.network == .ipv4)
        #expect(headers.transportOffset == 34 + optionBytes)
        #expect(headers.sourcePort == 443)
        #expect(headers.destinationPort == 50000)
        #expect(headers.tcpFlags == FrameHeaders.TCPFlag.syn | FrameHeaders.TCPFlag.ack)
    }

    @Test func ipv4HeadersThatDoNotHoldUpAreMalformed() {
        let udp = F.udp(from: 1, to: 2, [0, 0, 0, 0])
        func frame(_ ip: [UInt8]) -> [UInt8] { F.ethernet(from: Self.guestMAC, type: 0x0800, ip) }
        let cases: [(String, [UInt8])] = [
            ("version 6 in an IPv4 frame", frame(F.ipv4(from: 1, to: 2, protocol: 17, version: 6, udp))),
            ("header length below 20", frame(F.ipv4(from: 1, to: 2, protocol: 17, headerWords: 4, udp))),
            ("header longer than the packet", frame(F.ipv4(from: 1, to: 2, protocol: 17, headerWords: 15, udp))),
            ("total length below the header", frame(F.ipv4(from: 1, to: 2, protocol: 17, totalLength: 19, udp))),
            ("total length beyond the frame", frame(F.ipv4(from: 1, to: 2, protocol: 17, totalLength: 100, udp))),
            ("header cut", Array(frame(F.ipv4(from: 1, to: 2, protocol: 17, udp)).prefix(14 + 19))),
            ("UDP header cut", frame(F.ipv4(from: 1, to: 2, protocol: 17, [0, 1, 0, 2]))),
            (
                "TCP header cut",
                frame(F.ipv4(from: 1, to: 2, protocol: 6, Array(F.tcp(from: 1, to: 2, flags: 2)[0..<19])))
            ),
            ("SCTP header cut", frame(F.ipv4(from: 1, to: 2, protocol: 132, [UInt8](repeating: 0, count: 15)))),
            ("ICMP header cut", frame(F.ipv4(from: 1, to: 2, protocol: 1, [8, 0, 0, 0]))),
        ]
        for (name, bytes) in cases {
            #expect(walk(bytes).network == .malformed, "\(name)")
        }
    }

    @Test func ipv4FirstFragmentCarriesPorts() {
        // MF set, offset 0.
        let headers = walk(
            Self.ipv4Frame(flagsAndOffset: 0x2000, F.udp(from: 68, to: 67, [UInt8](repeating: 0, count: 32)))
        )
        #expect(headers.network == .ipv4)
        #expect(headers.fragment == .first)
        #expect(headers.fragmentID == 0xBEEF)
        #expect(headers.transportOffset == 34)
        #expect(headers.sourcePort == 68)
        #expect(headers.destinationPort == 67)
    }

    @Test func ipv4LaterFragmentHasNoTransportHeader() {
        // Offset 185 × 8 = 1480, last fragment (MF clear); the payload looks like UDP but is not.
        for flags: UInt16 in [0x0000 | 185, 0x2000 | 185] {
            let headers = walk(Self.ipv4Frame(flagsAndOffset: flags, F.udp(from: 67, to: 68, [1, 2, 3])))
            #expect(headers.network == .ipv4)
            #expect(headers.fragment == .later)
            #expect(headers.fragmentID == 0xBEEF)
            #expect(headers.ipProtocol == IPProtocol.udp)
            #expect(headers.transportOffset == 0)
            #expect(headers.sourcePort == 0 && headers.destinationPort == 0)
        }
    }

    @Test func dontFragmentAloneIsAWholeDatagram() {
        let headers = walk(Self.ipv4Frame(flagsAndOffset: 0x4000, F.udp(from: 1, to: 2)))
        #expect(headers.fragment == .none)
        #expect(headers.transportOffset == 34)
    }

    @Test func tinyFirstFragmentsAreMalformed() {
        // RFC 1858 §3: the ports or flags would only arrive in the second fragment.
        let tcp = Self.ipv4Frame(
            flagsAndOffset: 0x2000,
            protocol: IPProtocol.tcp,
            Array(F.tcp(from: 1, to: 22, flags: 2)[0..<8])
        )
        #expect(walk(tcp).network == .malformed)
        let udp = Self.ipv4Frame(flagsAndOffset: 0x2000, [0, 68, 0, 67])
        #expect(walk(udp).network == .malformed)
        let icmp = Self.ipv4Frame(flagsAndOffset: 0x2000, protocol: IPProtocol.icmp, [8, 0, 0, 0])
        #expect(walk(icmp).network == .malformed)
        // Just long enough is fine.
        let whole = Self.ipv4Frame(flagsAndOffset: 0x2000, protocol: IPProtocol.tcp, F.tcp(from: 1, to: 22, flags: 2))
        #expect(walk(whole).network == .ipv4)
        #expect(walk(whole).fragment == .first)
    }

    @Test func aTCPFragmentAtOffsetEightIsMalformed() {
        // RFC 1858 §4: it would overwrite the flags the first fragment showed.
        let overlapping = Self.ipv4Frame(
            flagsAndOffset: 0x2000 | 1,
            protocol: IPProtocol.tcp,
            [0, 0, 0, 0, 0x50, 0x02]
        )
        #expect(walk(overlapping).network == .malformed)
        let udp = Self.ipv4Frame(flagsAndOffset: 1, protocol: IPProtocol.udp, [0, 0, 0, 0])
        #expect(walk(udp).network == .ipv4, "only TCP carries flags there")
        let further = Self.ipv4Frame(flagsAndOffset: 2, protocol: IPProtocol.tcp, [0, 0, 0, 0])
        #expect(walk(further).network == .ipv4)
        #expect(walk(further).fragment == .later)
    }

    @Test func upperLayerFields() {
        let sctp = walk(Self.ipv4Frame(protocol: IPProtocol.sctp, F.sctp(from: 3868, to: 3869, chunk: 1)))
        #expect(sctp.sourcePort == 3868 && sctp.destinationPort == 3869)
        #expect(sctp.tcpFlags == 1, "INIT")
        let echo = walk(Self.ipv4Frame(protocol: IPProtocol.icmp, F.icmp(type: 8, [0xAB, 0xCD, 0, 7])))
        #expect(echo.icmpType == 8 && echo.icmpCode == 0)
        #expect(echo.sourcePort == 0xABCD && echo.destinationPort == 0xABCD)
        let unreachable = walk(Self.ipv4Frame(protocol: IPProtocol.icmp, F.icmp(type: 3, code: 4)))
        #expect(unreachable.icmpType == 3 && unreachable.icmpCode == 4)
        let gre = walk(Self.ipv4Frame(protocol: 47, [0, 0, 0x08, 0x00]))
        #expect(gre.network == .ipv4 && gre.ipProtocol == 47 && gre.transportOffset == 34)
    }

    // MARK: IPv6

    @Test func plainIPv6ICMPv6() {
        let frame = Self.ipv6Frame(next: IPProtocol.icmpv6, F.icmp(type: 128, [0, 9, 0, 1]))
        let headers = walk(frame)
        #expect(headers.network == .ipv6)
        #expect(headers.source == Self.v6a)
        #expect(headers.destination == Self.v6b)
        #expect(headers.ipProtocol == IPProtocol.icmpv6)
        #expect(headers.transportOffset == 54)
        #expect(headers.networkEnd == frame.count)
        #expect(headers.icmpType == 128)
        #expect(headers.sourcePort == 9)
    }

    @Test func extensionChainsAreWalkedToTheUpperLayer() {
        let chains: [[F.Extension]] = [
            [.hopByHop()],
            [.destinationOptions(length: 24)],
            [.hopByHop(), .routing, .destinationOptions()],
            [.hopByHop(length: 16), .destinationOptions(), .routing, .destinationOptions(length: 32)],
            [.destinationOptions(), .fragment(offset: 0, more: false)],
        ]
        for chain in chains {
            let frame = Self.ipv6Frame(extensions: chain, next: IPProtocol.udp, F.udp(from: 546, to: 547, [7]))
            let headers = walk(frame)
            let chainLength = frame.count - 54 - 9
            #expect(headers.network == .ipv6, "\(chain)")
            #expect(headers.ipProtocol == IPProtocol.udp)
            #expect(headers.transportOffset == 54 + chainLength, "\(chain)")
            #expect(headers.sourcePort == 546 && headers.destinationPort == 547)
            #expect(headers.fragment == .none, "an atomic fragment is whole")
        }
    }

    @Test func extensionHeadersAreBoundedInNumber() {
        let limit = IPv6.maximumExtensionHeaders
        let most = [F.Extension](repeating: .destinationOptions(), count: limit)
        #expect(walk(Self.ipv6Frame(extensions: most, next: 59, [])).network == .ipv6)
        let tooMany = [F.Extension](repeating: .destinationOptions(), count: limit + 1)
        #expect(walk(Self.ipv6Frame(extensions: tooMany, next: 59, [])).network == .malformed)
    }

    @Test func hopByHopOnlyFirst() {
        let late = Self.ipv6Frame(extensions: [.destinationOptions(), .hopByHop()], next: 59, [])
        #expect(walk(late).network == .malformed)
    }

    @Test func ipv6HeadersThatDoNotHoldUpAreMalformed() {
        let icmp = F.icmp(type: 128)
        func frame(_ ip: [UInt8]) -> [UInt8] { F.ethernet(from: Self.guestMAC, type: 0x86DD, ip) }
        let whole = frame(
            F.ipv6(from: Self.v6a, to: Self.v6b, extensions: [.destinationOptions(length: 16)], next: 58, icmp)
        )
        // The Destination Options header claims 16 bytes; shrink the payload length into it.
        let cutChain = frame(
            F.ipv6(
                from: Self.v6a,
                to: Self.v6b,
                extensions: [.destinationOptions(length: 16)],
                next: 58,
                payloadLength: 12,
                icmp
            )
        )
        let cases: [(String, [UInt8])] = [
            ("version 4 in an IPv6 frame", frame(F.ipv6(from: 1, to: 2, next: 58, version: 4, icmp))),
            ("payload length beyond the frame", frame(F.ipv6(from: 1, to: 2, next: 58, payloadLength: 9, icmp))),
            ("fixed header cut", Array(whole.prefix(14 + 39))),
            ("extension header past the payload", cutChain),
            ("fixed header cut in the frame", Array(whole.prefix(14 + 40 + 4))),
            (
                "extension header cut by the payload length",
                frame(F.ipv6(from: 1, to: 2, extensions: [.destinationOptions()], next: 58, payloadLength: 4, icmp))
            ),
            ("ICMPv6 header cut", frame(F.ipv6(from: 1, to: 2, next: 58, [128, 0, 0, 0]))),
            ("UDP header cut", frame(F.ipv6(from: 1, to: 2, next: 17, [0, 1, 0, 2, 0, 8]))),
            (
                "two Fragment headers",
                frame(
                    F.ipv6(
                        from: 1,
                        to: 2,
                        extensions: [.fragment(offset: 0, more: false), .fragment(offset: 0, more: true)],
                        next: 58,
                        icmp
                    )
                )
            ),
        ]
        for (name, bytes) in cases {
            #expect(walk(bytes).network == .malformed, "\(name)")
        }
    }

    @Test func ipv6FirstFragmentCarriesTheUpperLayer() {
        let frame = Self.ipv6Frame(
            extensions: [.hopByHop(), .fragment(offset: 0, more: true, identification: 0xCAFE_F00D)],
            next: IPProtocol.udp,
            F.udp(from: 547, to: 546, [UInt8](repeating: 0, count: 40))
        )
        let headers = walk(frame)
        #expect(headers.network == .ipv6)
        #expect(headers.fragment == .first)
        #expect(headers.fragmentID == 0xCAFE_F00D)
        #expect(headers.transportOffset == 54 + 16)
        #expect(headers.sourcePort == 547 && headers.destinationPort == 546)
    }

    @Test func ipv6LaterFragmentHasNoTransportHeader() {
        for more in [false, true] {
            let frame = Self.ipv6Frame(
                extensions: [.fragment(offset: 181, more: more, identification: 7)],
                next: IPProtocol.icmpv6,
                F.neighborAdvertisement(target: Self.v6b)
            )
            let headers = walk(frame)
            #expect(headers.network == .ipv6)
            #expect(headers.fragment == .later)
            #expect(headers.fragmentID == 7)
            #expect(headers.ipProtocol == IPProtocol.icmpv6)
            #expect(headers.transportOffset == 0)
            #expect(headers.icmpType == 0)
        }
    }

    @Test func ipv6FirstFragmentsMustHoldTheWholeChainAndUpperHeader() {
        // RFC 7112: the first fragment carries every header up to the upper-layer one.
        let chainCut = F.ethernet(
            from: Self.guestMAC,
            type: 0x86DD,
            F.ipv6(
                from: Self.v6a,
                to: Self.v6b,
                extensions: [.fragment(offset: 0, more: true), .destinationOptions(length: 64)],
                next: 58,
                payloadLength: 8 + 16,
                [UInt8](repeating: 0, count: 64)
            )
        )
        #expect(walk(chainCut).network == .malformed)
        let tiny = Self.ipv6Frame(extensions: [.fragment(offset: 0, more: true)], next: 58, [136, 0, 0, 0])
        #expect(walk(tiny).network == .malformed)
        let tinyTCP = Self.ipv6Frame(
            extensions: [.fragment(offset: 0, more: true)],
            next: IPProtocol.tcp,
            Array(F.tcp(from: 1, to: 2, flags: 2)[0..<16])
        )
        #expect(walk(tinyTCP).network == .malformed)
    }

    @Test func anIPv6TCPFragmentAtOffsetEightIsMalformed() {
        let frame = Self.ipv6Frame(extensions: [.fragment(offset: 1, more: true)], next: IPProtocol.tcp, [0x50, 0x02])
        #expect(walk(frame).network == .malformed)
        let udp = Self.ipv6Frame(extensions: [.fragment(offset: 1, more: true)], next: IPProtocol.udp, [0, 0])
        #expect(walk(udp).network == .ipv6)
    }

    // MARK: Bounds

    /// Every cut of a valid frame inside its IP datagram is malformed, and no cut reads past
    /// the frame's end.
    @Test func everyTruncationIsMalformedAndStaysInBounds() {
        let frames = [
            Self.ipv4Frame(tags: [F.Tag()], options: [1, 1, 1, 0], F.udp(from: 1, to: 2, [1, 2, 3, 4])),
            Self.ipv4Frame(protocol: IPProtocol.tcp, F.tcp(from: 1, to: 2, flags: 2)),
            Self.ipv6Frame(
                tags: [F.Tag(type: 0x88A8), F.Tag()],
                extensions: [.hopByHop(), .routing, .fragment(offset: 0, more: true), .destinationOptions()],
                next: IPProtocol.tcp,
                F.tcp(from: 1, to: 2, flags: 2)
            ),
            Self.ipv6Frame(next: IPProtocol.icmpv6, F.neighborSolicitation(target: Self.v6b)),
        ]
        for frame in frames {
            let whole = walk(frame)
            #expect(whole.network == .ipv4 || whole.network == .ipv6)
            for length in 14..<frame.count {
                let headers = walk(Array(frame.prefix(length)))
                #expect(headers.network == .malformed, "cut at \(length) of \(frame.count)")
            }
        }
    }

    /// Random bytes behind each interesting type: no read past the end, and the offsets the
    /// walk reports always lie inside the frame.
    @Test func randomFramesStayInBounds() {
        var generator = SplitMix(seed: 0x5EED)
        let types: [[UInt8]] = [[0x08, 0x00], [0x86, 0xDD], [0x81, 0x00], [0x88, 0xA8], [0x08, 0x06]]
        for round in 0..<20_000 {
            let length = 14 + Int(generator.next() % 120)
            var frame = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let type = types[round % types.count]
            frame[12] = type[0]
            frame[13] = type[1]
            // Make valid-looking IP headers common enough to get past the first checks.
            if type == [0x08, 0x00], length > 18 {
                frame[14] = 0x45
                frame[16] = 0
                frame[17] = UInt8(max(0, length - 14 - Int(generator.next() % 8)))
            } else if type == [0x86, 0xDD], length > 54 {
                frame[14] = 0x60
                frame[18] = 0
                frame[19] = UInt8(length - 54)
                frame[20] = [0, 43, 44, 60, 6, 17, 58][Int(generator.next() % 7)]
            }
            let headers = walk(frame)
            #expect(headers.networkOffset <= length)
            if headers.isIP {
                #expect(headers.networkEnd <= length)
                #expect(headers.transportOffset == 0 || headers.transportOffset <= headers.networkEnd)
                #expect(headers.transportOffset == 0 || headers.transportOffset >= headers.networkOffset + 20)
            }
        }
    }
}

/// A small deterministic generator (SplitMix64), so a failing random case replays.
struct SplitMix {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}
