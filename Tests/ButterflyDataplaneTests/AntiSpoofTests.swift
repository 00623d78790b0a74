import ButterflyDataplane
import ButterflyPacket
import ButterflyTestSupport
import HashTreeCollections
import Testing

/// `AntiSpoof.check` on frames a guest may send and on the frames a hostile guest tried
/// (docs/DATAPLANE.md "Anti-spoofing"), each read from the end of a page so that a check
/// reading past the frame crashes the test.
@Suite struct AntiSpoofTests {
    typealias F = TestFrame
    static let mac: UInt64 = 0x5254_0000_0A01
    static let otherMAC: UInt64 = 0x5254_0000_0B02
    static let ip = F.ipv4("203.0.113.10")
    static let otherIP = F.ipv4("203.0.113.20")
    static let ip6 = F.ipv6("2001:db8::10")
    static let otherIP6 = F.ipv6("2001:db8::20")
    /// fe80::5054:ff:fe00:a01, this NIC's EUI-64 link-local.
    static let linkLocal = F.ipv6("fe80::5054:ff:fe00:a01")
    static let otherLinkLocal = F.ipv6("fe80::5054:ff:fe00:b02")
    static let allNodes = F.ipv6("ff02::1")
    static let allRouters = F.ipv6("ff02::2")

    static let strict = AntiSpoof.Policy(mac: mac, ips: [.v4(ip), v6(ip6)], ipAntiSpoof: true)
    static let lenient = AntiSpoof.Policy(mac: mac, ips: [.v4(ip), v6(ip6)], ipAntiSpoof: false)
    static let noAddress = AntiSpoof.Policy(mac: mac, ips: [], ipAntiSpoof: true)

    static func v6(_ value: UInt128) -> IPAddress {
        .v6(high: UInt64(truncatingIfNeeded: value >> 64), low: UInt64(truncatingIfNeeded: value))
    }

    func check(_ frame: [UInt8], _ policy: AntiSpoof.Policy = strict) -> DropReason? {
        F.withGuarded(frame) { data, length in
            AntiSpoof.check(data, length: length, headers: FrameHeaders.walk(data, length: length), policy: policy)
        }
    }

    // MARK: Frame builders (from this NIC's MAC unless told otherwise)

    static func ipv4(
        from source: UInt32 = ip,
        to destination: UInt32 = otherIP,
        protocol: UInt8 = IPProtocol.udp,
        flagsAndOffset: UInt16 = 0,
        tags: [F.Tag] = [],
        _ payload: [UInt8]
    ) -> [UInt8] {
        F.ethernet(
            from: mac,
            tags: tags,
            type: 0x0800,
            F.ipv4(from: source, to: destination, protocol: `protocol`, flagsAndOffset: flagsAndOffset, payload)
        )
    }

    static func ipv6(
        from source: UInt128 = ip6,
        to destination: UInt128 = otherIP6,
        extensions: [F.Extension] = [],
        next: UInt8 = IPProtocol.icmpv6,
        tags: [F.Tag] = [],
        ethernetSource: UInt64 = mac,
        _ payload: [UInt8]
    ) -> [UInt8] {
        F.ethernet(
            from: ethernetSource,
            tags: tags,
            type: 0x86DD,
            F.ipv6(from: source, to: destination, extensions: extensions, next: next, payload)
        )
    }

    static func arp(
        senderMAC: UInt64 = mac,
        senderIP: UInt32 = ip,
        tags: [F.Tag] = [],
        hardwareType: UInt16 = 1,
        protocolLength: UInt8 = 4
    ) -> [UInt8] {
        F.ethernet(
            from: mac,
            tags: tags,
            type: 0x0806,
            F.arp(
                operation: 2,
                senderMAC: senderMAC,
                senderIP: senderIP,
                targetMAC: otherMAC,
                targetIP: otherIP,
                hardwareType: hardwareType,
                protocolLength: protocolLength
            )
        )
    }

    /// Neighbour advertisement of `target` with a target link-layer option naming `advertised`.
    static func advertisement(
        of target: UInt128,
        advertised: UInt64 = mac,
        from source: UInt128 = ip6,
        extensions: [F.Extension] = [],
        tags: [F.Tag] = []
    ) -> [UInt8] {
        ipv6(
            from: source,
            to: allNodes,
            extensions: extensions,
            tags: tags,
            F.neighborAdvertisement(target: target, options: F.linkLayerOption(2, advertised))
        )
    }

    static func solicitation(
        from source: UInt128 = ip6,
        for target: UInt128 = otherIP6,
        advertised: UInt64? = mac,
        extensions: [F.Extension] = []
    ) -> [UInt8] {
        ipv6(
            from: source,
            to: F.ipv6("ff02::1:ff00:20"),
            extensions: extensions,
            F.neighborSolicitation(target: target, options: advertised.map { F.linkLayerOption(1, $0) } ?? [])
        )
    }

    // MARK: Hostile frames of issue 7 item 7

    @Test func spoofedAdvertisementBehindDestinationOptionsIsDropped() {
        let frame = Self.advertisement(
            of: Self.otherIP6,
            advertised: Self.mac,
            from: Self.linkLocal,
            extensions: [.destinationOptions()]
        )
        #expect(check(frame) == .spoofedNeighborAdvertisement)
        let deeper = Self.advertisement(
            of: Self.otherIP6,
            extensions: [.hopByHop(), .destinationOptions(length: 16), .routing, .destinationOptions()]
        )
        #expect(check(deeper) == .spoofedNeighborAdvertisement)
    }

    @Test func solicitationFromAnotherVMsAddressIsDropped() {
        #expect(check(Self.solicitation(from: Self.otherIP6, for: Self.ip6)) == .spoofedSourceIP)
        #expect(check(Self.solicitation(from: Self.otherLinkLocal, for: Self.ip6)) == .spoofedSourceIP)
        #expect(check(Self.solicitation(from: Self.otherIP6, for: Self.ip6), Self.lenient) == .spoofedSourceIP)
    }

    @Test func routerAdvertisementsAndRedirectsAreDropped() {
        let advertisement = Self.ipv6(from: Self.linkLocal, to: Self.allNodes, F.routerAdvertisement())
        #expect(check(advertisement) == .routerAdvertisement)
        #expect(check(advertisement, Self.lenient) == .routerAdvertisement)
        let hidden = Self.ipv6(
            from: Self.linkLocal,
            to: Self.allNodes,
            extensions: [.destinationOptions()],
            F.routerAdvertisement()
        )
        #expect(check(hidden, Self.lenient) == .routerAdvertisement)
        let redirect = Self.ipv6(
            from: Self.linkLocal,
            to: Self.otherLinkLocal,
            F.redirect(target: Self.linkLocal, destination: F.ipv6("2001:db8:ffff::1"))
        )
        #expect(check(redirect, Self.lenient) == .routerAdvertisement)
    }

    @Test func taggedFramesAreDropped() {
        let priorityTag = [F.Tag(vlan: 0)]
        #expect(check(Self.arp(senderIP: Self.otherIP, tags: priorityTag)) == .vlanTagged)
        #expect(check(Self.arp(tags: priorityTag)) == .vlanTagged, "even an honest ARP")
        #expect(check(Self.advertisement(of: Self.otherIP6, tags: priorityTag)) == .vlanTagged)
        #expect(check(Self.advertisement(of: Self.otherIP6, tags: priorityTag), Self.lenient) == .vlanTagged)
        #expect(check(Self.ipv4(tags: [F.Tag(vlan: 42)], F.udp(from: 1, to: 2))) == .vlanTagged)
        #expect(
            check(Self.ipv4(tags: [F.Tag(type: 0x88A8, vlan: 7), F.Tag(vlan: 8)], F.udp(from: 1, to: 2))) == .vlanTagged
        )
        let cut = F.bytes(mac: F.broadcast) + F.bytes(mac: Self.mac) + [0x81, 0x00, 0x00]
        #expect(check(cut) == .vlanTagged)
        let tooDeep = Self.ipv4(tags: [F.Tag](repeating: F.Tag(), count: 6), F.udp(from: 1, to: 2))
        #expect(check(tooDeep) == .vlanTagged)
        let rarp = F.ethernet(from: Self.mac, tags: priorityTag, type: 0x8035, [UInt8](repeating: 0, count: 28))
        #expect(check(rarp) == .vlanTagged)
    }

    @Test func dhcpServerRepliesAreDropped() {
        #expect(check(Self.ipv4(to: 0xFFFF_FFFF, F.udp(from: 67, to: 68, [2]))) == .dhcpServer)
        #expect(check(Self.ipv4(to: 0xFFFF_FFFF, F.udp(from: 67, to: 68, [2])), Self.lenient) == .dhcpServer)
        let firstFragment = Self.ipv4(flagsAndOffset: 0x2000, F.udp(from: 67, to: 68, [2]))
        #expect(check(firstFragment) == .dhcpServer)
        let dhcpv6 = Self.ipv6(
            from: Self.linkLocal,
            to: Self.otherLinkLocal,
            next: IPProtocol.udp,
            F.udp(from: 547, to: 546)
        )
        #expect(check(dhcpv6) == .dhcpServer)
        let hidden = Self.ipv6(
            from: Self.linkLocal,
            to: Self.otherLinkLocal,
            extensions: [.destinationOptions()],
            next: IPProtocol.udp,
            F.udp(from: 547, to: 546)
        )
        #expect(check(hidden) == .dhcpServer)
        // A relay agent (67 → 67) and clients are fine.
        #expect(check(Self.ipv4(F.udp(from: 67, to: 67))) == nil)
        #expect(check(Self.ipv4(F.udp(from: 68, to: 67))) == nil)
        #expect(
            check(Self.ipv6(from: Self.linkLocal, to: F.ipv6("ff02::1:2"), next: 17, F.udp(from: 546, to: 547))) == nil
        )
    }

    @Test func ownLinkLocalAddressIsAccepted() {
        // The reverse defect: an honest guest's link-local neighbour discovery used to be dropped.
        #expect(AntiSpoof.linkLocal(mac: Self.mac) == Self.linkLocal)
        let answer = Self.ipv6(
            from: Self.linkLocal,
            to: Self.otherLinkLocal,
            F.neighborAdvertisement(target: Self.linkLocal, flags: 0x60, options: F.linkLayerOption(2, Self.mac))
        )
        #expect(check(answer) == nil)
        #expect(check(Self.solicitation(from: Self.linkLocal, for: Self.otherLinkLocal)) == nil)
        let echo = Self.ipv6(from: Self.linkLocal, to: Self.otherLinkLocal, F.icmp(type: 128))
        #expect(check(echo) == nil)
        #expect(check(echo, Self.noAddress) == nil, "a NIC without addresses still has its link-local")
    }

    @Test func linkLocalFollowsRFC4291AppendixA() {
        // The universal/local bit flips (0x02 of the first octet), ff:fe goes in the middle.
        #expect(AntiSpoof.linkLocal(mac: 0x0000_5E00_5301) == F.ipv6("fe80::200:5eff:fe00:5301"))
        #expect(AntiSpoof.linkLocal(mac: 0x0200_0000_0001) == F.ipv6("fe80::ff:fe00:1"))
        #expect(AntiSpoof.linkLocal(mac: 0xFFFF_FFFF_FFFF) == F.ipv6("fe80::fdff:ffff:feff:ffff"))
    }

    // MARK: Source MAC, RARP, malformed

    @Test func sourceMACMustBeTheNICs() {
        let frame = Self.ipv6(ethernetSource: Self.otherMAC, F.icmp(type: 128))
        #expect(check(frame) == .spoofedSourceMAC)
        #expect(check(frame, Self.lenient) == .spoofedSourceMAC)
        let taggedToo = F.ethernet(from: Self.otherMAC, tags: [F.Tag()], type: 0x0800, [])
        #expect(check(taggedToo) == .spoofedSourceMAC, "the MAC is judged first")
    }

    @Test func rarpIsAlwaysDropped() {
        let rarp = F.ethernet(from: Self.mac, type: 0x8035, [UInt8](repeating: 0, count: 28))
        #expect(check(rarp) == .rarp)
        #expect(check(rarp, Self.lenient) == .rarp)
    }

    @Test func malformedIPIsDropped() {
        let longer = F.ethernet(
            from: Self.mac,
            type: 0x0800,
            F.ipv4(from: Self.ip, to: 1, protocol: 17, totalLength: 90, F.udp(from: 1, to: 2))
        )
        #expect(check(longer) == .malformedIP)
        let tinyFragment = Self.ipv6(extensions: [.fragment(offset: 0, more: true)], [136, 0, 0, 0])
        #expect(check(tinyFragment, Self.lenient) == .malformedIP)
        let cutChain = Array(
            Self.ipv6(extensions: [.destinationOptions(length: 16)], F.icmp(type: 128)).prefix(14 + 40 + 8)
        )
        #expect(check(cutChain) == .malformedIP)
        // Other Ethernet types are not IP and pass (LLDP, say).
        #expect(check(F.ethernet(from: Self.mac, type: 0x88CC, [0, 0])) == nil)
    }

    // MARK: IP source lock

    @Test func ipv4SourceMustBeTheNICs() {
        #expect(check(Self.ipv4(F.udp(from: 5000, to: 53))) == nil)
        #expect(check(Self.ipv4(protocol: IPProtocol.tcp, F.tcp(from: 40000, to: 22, flags: 2))) == nil)
        #expect(check(Self.ipv4(from: Self.otherIP, F.udp(from: 5000, to: 53))) == .spoofedSourceIP)
        #expect(check(Self.ipv4(from: Self.otherIP, F.udp(from: 5000, to: 53)), Self.lenient) == .spoofedSourceIP)
        #expect(check(Self.ipv4(from: Self.ip, F.udp(from: 5000, to: 53)), Self.noAddress) == .spoofedSourceIP)
        // Later fragments carry the source too.
        #expect(check(Self.ipv4(flagsAndOffset: 100, [0, 0, 0, 0])) == nil)
        #expect(check(Self.ipv4(from: Self.otherIP, flagsAndOffset: 100, [0, 0, 0, 0])) == .spoofedSourceIP)
    }

    @Test func dhcpClientMayUseTheUnspecifiedSource() {
        let discover = Self.ipv4(from: 0, to: 0xFFFF_FFFF, F.udp(from: 68, to: 67, [1]))
        #expect(check(discover) == nil)
        #expect(check(discover, Self.noAddress) == nil, "a NIC without an address can only do DHCP")
        #expect(check(Self.ipv4(from: 0, to: 0xFFFF_FFFF, F.udp(from: 68, to: 53))) == .spoofedSourceIP)
        #expect(check(Self.ipv4(from: 0, to: 0xFFFF_FFFF, F.udp(from: 67, to: 68))) == .spoofedSourceIP)
        #expect(
            check(Self.ipv4(from: 0, to: 0xFFFF_FFFF, protocol: IPProtocol.tcp, F.tcp(from: 68, to: 67, flags: 2)))
                == .spoofedSourceIP
        )
        let fragment = Self.ipv4(from: 0, to: 0xFFFF_FFFF, flagsAndOffset: 0x2000, F.udp(from: 68, to: 67, [1]))
        #expect(check(fragment) == .spoofedSourceIP)
    }

    @Test func ipv6SourceMustBeTheNICsOrItsLinkLocal() {
        #expect(check(Self.ipv6(F.icmp(type: 128))) == nil)
        #expect(check(Self.ipv6(from: Self.otherIP6, F.icmp(type: 128))) == .spoofedSourceIP)
        #expect(check(Self.ipv6(from: Self.otherLinkLocal, F.icmp(type: 128))) == .spoofedSourceIP)
        #expect(check(Self.ipv6(from: Self.ip6, F.icmp(type: 128)), Self.noAddress) == .spoofedSourceIP)
        let laterFragment = Self.ipv6(from: Self.otherIP6, extensions: [.fragment(offset: 20, more: false)], [0])
        #expect(check(laterFragment) == .spoofedSourceIP)
    }

    @Test func unspecifiedSourceOnlyForDuplicateAddressDetectionAndMLDReports() {
        let probe = Self.solicitation(from: 0, for: Self.ip6, advertised: nil)
        #expect(check(probe) == nil)
        #expect(check(probe, Self.noAddress) == nil)
        let mld2 = Self.ipv6(
            from: 0,
            to: F.ipv6("ff02::16"),
            extensions: [.hopByHop()],
            F.multicastListenerReport(version: 2)
        )
        #expect(check(mld2) == nil)
        let mld1 = Self.ipv6(
            from: 0,
            to: F.ipv6("ff02::1:ff00:10"),
            extensions: [.hopByHop()],
            F.multicastListenerReport(version: 1)
        )
        #expect(check(mld1) == nil)
        for message in [
            F.icmp(type: 128), F.icmp(type: 133, [0, 0, 0, 0]), F.neighborAdvertisement(target: Self.ip6),
            F.icmp(type: 132, [UInt8](repeating: 0, count: 20)),
        ] {
            #expect(check(Self.ipv6(from: 0, to: Self.allNodes, message)) == .spoofedSourceIP)
        }
        #expect(
            check(Self.ipv6(from: 0, to: Self.allNodes, next: IPProtocol.udp, F.udp(from: 546, to: 547)))
                == .spoofedSourceIP
        )
    }

    // MARK: ip_anti_spoof: ARP

    @Test func arpMustNameTheNICsMACAndAddress() {
        #expect(check(Self.arp()) == nil)
        #expect(check(Self.arp(senderIP: Self.otherIP)) == .spoofedARP)
        #expect(check(Self.arp(senderMAC: Self.otherMAC)) == .spoofedARP)
        #expect(check(Self.arp(senderIP: 0)) == .spoofedARP)
        #expect(check(Self.arp(), Self.noAddress) == .spoofedARP)
        #expect(check(Self.arp(hardwareType: 6)) == .spoofedARP)
        #expect(check(Self.arp(protocolLength: 16)) == .spoofedARP)
        #expect(check(Array(Self.arp().prefix(14 + 27))) == .spoofedARP)
        // Without ip_anti_spoof, only the Ethernet source is judged (BUTTERFLY-COMPAT.md §7).
        #expect(check(Self.arp(senderIP: Self.otherIP), Self.lenient) == nil)
    }

    // MARK: ip_anti_spoof: neighbour discovery

    @Test func advertisementMustBeForTheNICsAddressWithItsMAC() {
        #expect(check(Self.advertisement(of: Self.ip6)) == nil)
        #expect(check(Self.advertisement(of: Self.linkLocal, from: Self.linkLocal)) == nil)
        #expect(check(Self.advertisement(of: Self.otherIP6)) == .spoofedNeighborAdvertisement)
        #expect(check(Self.advertisement(of: Self.otherLinkLocal)) == .spoofedNeighborAdvertisement)
        #expect(check(Self.advertisement(of: Self.ip6, advertised: Self.otherMAC)) == .spoofedNeighborAdvertisement)
        // A source link-layer option has no business in an advertisement; it is judged alike.
        let sourceOption = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: F.linkLayerOption(1, Self.otherMAC))
        )
        #expect(check(sourceOption) == .spoofedNeighborAdvertisement)
        // Without a link-layer option, or with other options around it.
        #expect(check(Self.ipv6(to: Self.allNodes, F.neighborAdvertisement(target: Self.ip6))) == nil)
        let nonce: [UInt8] = [14, 1, 1, 2, 3, 4, 5, 6]  // RFC 3971 nonce option, 8 bytes
        let mixed = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: nonce + F.linkLayerOption(2, Self.mac) + nonce)
        )
        #expect(check(mixed) == nil)
        let mixedSpoof = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: nonce + F.linkLayerOption(2, Self.otherMAC))
        )
        #expect(check(mixedSpoof) == .spoofedNeighborAdvertisement)
        // Without ip_anti_spoof, the contents are not judged (the source still is).
        #expect(check(Self.advertisement(of: Self.otherIP6, advertised: Self.otherMAC), Self.lenient) == nil)
    }

    @Test func advertisementsThatCannotBeCheckedAreDropped() {
        let zeroLength = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: [2, 0] + F.bytes(mac: Self.mac))
        )
        #expect(check(zeroLength) == .spoofedNeighborAdvertisement)
        let overrun = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: [2, 2] + F.bytes(mac: Self.mac))
        )
        #expect(check(overrun) == .spoofedNeighborAdvertisement)
        let partial = Self.ipv6(
            to: Self.allNodes,
            F.neighborAdvertisement(target: Self.ip6, options: [2, 1, 0x52, 0x54])
        )
        #expect(check(partial) == .spoofedNeighborAdvertisement)
        let short = Self.ipv6(to: Self.allNodes, F.icmp(type: 136, [0x20, 0, 0, 0] + [UInt8](repeating: 0, count: 8)))
        #expect(check(short) == .spoofedNeighborAdvertisement)
        // RFC 6980: fragmented, its target link-layer option could hide in a later fragment.
        let fragmented = Self.ipv6(
            to: Self.allNodes,
            extensions: [.fragment(offset: 0, more: true)],
            F.neighborAdvertisement(target: Self.ip6, options: F.linkLayerOption(2, Self.mac))
        )
        #expect(check(fragmented) == .spoofedNeighborAdvertisement)
        // Ethernet padding after the message is not an option.
        let padded = Self.advertisement(of: Self.ip6) + [0xFF, 0xFF, 0xFF, 0xFF]
        #expect(check(padded) == nil)
    }

    @Test func solicitationMustCarryTheNICsMAC() {
        #expect(check(Self.solicitation()) == nil)
        #expect(check(Self.solicitation(advertised: nil)) == nil)
        #expect(check(Self.solicitation(advertised: Self.otherMAC)) == .spoofedNeighborSolicitation)
        #expect(check(Self.solicitation(advertised: Self.otherMAC), Self.lenient) == nil)
        #expect(
            check(Self.solicitation(advertised: Self.otherMAC, extensions: [.destinationOptions()]))
                == .spoofedNeighborSolicitation
        )
        let fragmented = Self.solicitation(extensions: [.fragment(offset: 0, more: true)])
        #expect(check(fragmented) == .spoofedNeighborSolicitation)
        let short = Self.ipv6(to: Self.allNodes, F.icmp(type: 135, [0, 0, 0, 0, 0xFE, 0x80, 0, 0]))
        #expect(check(short) == .spoofedNeighborSolicitation)
    }

    // MARK: Many addresses

    @Test func manyAddressesAreFoundByBisection() {
        let v4 = (1...40).map { F.ipv4("198.51.100.\($0 * 3)") }
        let v6 = (1...40).map { F.ipv6("2001:db8:1::\(String($0 * 5, radix: 16))") }
        let policy = AntiSpoof.Policy(mac: Self.mac, ips: v4.map { .v4($0) } + v6.map(Self.v6), ipAntiSpoof: true)
        #expect(policy.ipv4.count == 40)
        #expect(policy.ipv6.count == 41, "with the link-local")
        for address in v4 {
            #expect(check(Self.ipv4(from: address, F.udp(from: 1, to: 2)), policy) == nil)
            #expect(check(Self.ipv4(from: address + 1, F.udp(from: 1, to: 2)), policy) == .spoofedSourceIP)
            #expect(check(Self.arp(senderIP: address), policy) == nil)
        }
        for address in v6 {
            #expect(check(Self.advertisement(of: address, from: address), policy) == nil)
            #expect(check(Self.ipv6(from: address + 1, F.icmp(type: 128)), policy) == .spoofedSourceIP)
        }
        #expect(check(Self.ipv6(from: Self.linkLocal, F.icmp(type: 128)), policy) == nil)
    }

    @Test func addressSetInlineAndSorted() {
        for count in 0...9 {
            let members = (0..<count).map { UInt128($0) * 1000 + 7 }
            let set = AddressSet(members + members.reversed())
            #expect(set.count == count, "duplicates count once")
            for member in members {
                #expect(set.contains(member))
                #expect(!set.contains(member + 1))
                #expect(!set.contains(member - 1))
            }
            #expect(!set.contains(0))
            #expect(!set.contains(UInt128.max))
        }
        // An IPv4 set never answers for the IPv4-compatible IPv6 value: the families are apart.
        let policy = AntiSpoof.Policy(mac: Self.mac, ips: [.v4(Self.ip)], ipAntiSpoof: true)
        #expect(check(Self.ipv6(from: UInt128(Self.ip), F.icmp(type: 128)), policy) == .spoofedSourceIP)
    }

    // MARK: Through the worker

    /// `Worker.fromGuest` walks each frame and drops what anti-spoofing refuses, per NIC, unless
    /// the NIC bypasses filtering.
    @Test func theWorkerDropsAndCountsUnlessFilteringIsBypassed() {
        let host = HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false)
        let worker = Worker(host: host)
        var config = DataplaneConfig(host: host)
        var attachments: TreeDictionary<String, NICAttachment> = [:]
        var ports: [String: MemoryPort] = [:]
        for (id, mac, bypass) in [
            ("hostile", Self.mac, false), ("victim", Self.otherMAC, false), ("router", 0x5254_0000_0C03, true),
        ] {
            ports[id] = MemoryPort(id)
            config.nics[id] = NICConfig(
                id: id,
                mac: MACAddress(value: mac),
                vni: 5,
                ips: id == "hostile" ? [.v4(Self.ip), Self.v6(Self.ip6)] : [],
                kind: .bench,
                path: "",
                ipAntiSpoof: true,
                bypassFiltering: bypass,
                securityGroups: [],
                packetTracePath: nil,
                sniffTarget: nil
            )
            attachments[id] = NICAttachment(nicID: id, port: ports[id]!)
        }
        config.version = 1
        worker.publish(DataplaneUpdate(config: config, attachments: attachments))
        worker.runOnce()

        ports["hostile"]!.incoming = [
            Self.advertisement(of: Self.otherIP6, extensions: [.destinationOptions()]),
            Self.ipv6(from: Self.linkLocal, to: Self.allNodes, F.routerAdvertisement()),
            Self.arp(tags: [F.Tag()]),
            Self.advertisement(of: Self.ip6),
        ]
        worker.runOnce()
        #expect(ports["victim"]!.sent.count == 1, "only the honest advertisement")
        let drops = Dictionary(
            uniqueKeysWithValues: attachments["hostile"]!.counters.snapshot.drops.map { ($0.reason, $0.packets) }
        )
        #expect(drops == ["spoofed-neighbor-advertisement": 1, "router-advertisement": 1, "vlan-tagged": 1])

        // A NIC with bypass_filtering is not checked at all.
        let routerMAC: UInt64 = 0x5254_0000_0C03
        ports["router"]!.incoming = [
            Self.ipv6(
                from: AntiSpoof.linkLocal(mac: routerMAC),
                to: Self.allNodes,
                ethernetSource: routerMAC,
                F.routerAdvertisement()
            )
        ]
        worker.runOnce()
        #expect(ports["victim"]!.sent.count == 2)
        #expect(attachments["router"]!.counters.snapshot.drops.isEmpty)
    }
}
