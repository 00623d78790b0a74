import HashTreeCollections
import Testing

@testable import ButterflyDataplane

/// Frames built byte by byte, independently of the header code under test (checksums do not
/// matter to the switch or the firewall).
enum FirewallFrame {
    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(truncatingIfNeeded: value)] }
    static func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
    static func be128(_ value: UInt128) -> [UInt8] {
        (0..<16).map { UInt8(truncatingIfNeeded: value >> (120 - 8 * $0)) }
    }
    static func mac(_ value: UInt64) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * $0)) } }

    static func ethernet(to destination: UInt64, from source: UInt64, type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        let bytes = mac(destination) + mac(source) + be16(type) + payload
        return bytes + [UInt8](repeating: 0, count: max(0, 60 - bytes.count))
    }

    /// RFC 791 §3.1 header without options; `offset` in bytes (a multiple of 8).
    static func ipv4(
        _ source: UInt32,
        _ destination: UInt32,
        _ ipProtocol: UInt8,
        _ payload: [UInt8],
        identification: UInt16 = 0,
        offset: Int = 0,
        more: Bool = false
    ) -> [UInt8] {
        let flagsAndOffset = (more ? 0x2000 : 0) | UInt16(offset / 8)
        return [0x45, 0] + be16(UInt16(20 + payload.count)) + be16(identification) + be16(flagsAndOffset)
            + [64, ipProtocol, 0, 0] + be32(source) + be32(destination) + payload
    }

    /// RFC 8200 §3, with a fragment header (§4.5) when `fragment` is given.
    static func ipv6(
        _ source: UInt128,
        _ destination: UInt128,
        _ nextHeader: UInt8,
        _ payload: [UInt8],
        fragment: (identification: UInt32, offset: Int, more: Bool)? = nil
    ) -> [UInt8] {
        var body = payload
        var next = nextHeader
        if let fragment {
            let offsetAndFlag = UInt16(fragment.offset / 8) << 3 | (fragment.more ? 1 : 0)
            body = [nextHeader, 0] + be16(offsetAndFlag) + be32(fragment.identification) + payload
            next = 44
        }
        return [0x60, 0, 0, 0] + be16(UInt16(body.count)) + [next, 64] + be128(source) + be128(destination) + body
    }

    static func tcp(_ sourcePort: UInt16, _ destinationPort: UInt16, flags: UInt8) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be32(1000) + be32(2000) + [0x50, flags] + be16(0xFFFF) + [
            0, 0, 0, 0,
        ]
    }

    static func udp(_ sourcePort: UInt16, _ destinationPort: UInt16, payload: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
    }

    /// RFC 9260 §3: common header (ports, verification tag, checksum), then one chunk header.
    static func sctp(_ sourcePort: UInt16, _ destinationPort: UInt16, chunk: UInt8) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be32(0x1234_5678) + be32(0) + [chunk, 0] + be16(4)
    }

    /// ICMP or ICMPv6: type, code, checksum, then identifier and sequence (echo) or the unused
    /// word (errors), then `payload`.
    static func icmp(type: UInt8, code: UInt8 = 0, identifier: UInt16 = 0, payload: [UInt8] = []) -> [UInt8] {
        [type, code, 0, 0] + be16(identifier) + be16(1) + payload
    }
}

/// Three NICs in one VNI of a local-mode worker, each with an IPv4 and an IPv6 address, driven
/// synchronously; every NIC starts with no rule (nothing in, anything out).
final class FirewallLab {
    static let host = HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false)
    static let ids = ["a", "b", "c"]
    static let macs: [String: UInt64] = ["a": 0x5254_0000_000A, "b": 0x5254_0000_000B, "c": 0x5254_0000_000C]
    static let v4: [String: UInt32] = ["a": 0xCB00_710A, "b": 0xCB00_710B, "c": 0xCB00_710C]  // 203.0.113.x
    static let v6: [String: UInt128] = [
        "a": peer("2001:db8::a"), "b": peer("2001:db8::b"), "c": peer("2001:db8::c"),
    ]

    let worker: Worker
    var config = DataplaneConfig(host: FirewallLab.host)
    var attachments: TreeDictionary<String, NICAttachment> = [:]
    var ports: [String: MemoryPort] = [:]
    var generation: UInt32 = 1

    init(connectionCapacity: Int = 4096) {
        var settings = Worker.Settings()
        settings.connectionCapacity = connectionCapacity
        worker = Worker(settings: settings, host: Self.host)
        for id in Self.ids {
            let port = MemoryPort(id)
            ports[id] = port
            let v6 = Self.v6[id]!
            config.nics[id] = NICConfig(
                id: id,
                mac: MACAddress(value: Self.macs[id]!),
                vni: 10,
                ips: [.v4(Self.v4[id]!), .v6(high: UInt64(v6 >> 64), low: UInt64(truncatingIfNeeded: v6))],
                kind: .bench,
                path: "",
                ipAntiSpoof: true,
                bypassFiltering: false,
                securityGroups: [],
                packetTracePath: nil,
                sniffTarget: nil
            )
            attachments[id] = NICAttachment(nicID: id, port: port)
        }
        for id in Self.ids { setGroups(id, []) }
        // Gratuitous ARP from everyone: ARP passes every firewall, and the switch learns MACs.
        for id in Self.ids { send(id, arp(id)) }
        for port in ports.values { port.sent.removeAll() }
    }

    /// Gives `id` these groups (compiled as the control plane would, a new generation) and
    /// lets the worker adopt them.
    func setGroups(_ id: String, _ groups: [SecurityGroupConfig]) {
        var table: TreeDictionary<String, SecurityGroupConfig> = [:]
        for group in groups { table[group.id] = group }
        config.nics[id]!.securityGroups = groups.map(\.id)
        config.nics[id]!.firewall = FirewallPolicy.compile(config.nics[id]!, groups: table, generation: generation)
        generation += 1
        publish(changed: [id])
    }

    func publish(changed: [String]?) {
        config.version += 1
        worker.publish(DataplaneUpdate(config: config, attachments: attachments, changedNICs: changed))
        worker.runOnce()
    }

    /// `id`'s guest sends `frame`; the worker runs one pass.
    func send(_ id: String, _ frame: [UInt8]) {
        ports[id]!.incoming.append(frame)
        worker.runOnce()
    }

    /// What `id`'s guest received since the last call.
    func take(_ id: String) -> [[UInt8]] {
        defer { ports[id]!.sent.removeAll() }
        return ports[id]!.sent
    }

    /// Sends `frame` from `from` and tells whether `to` (and only `to`) received it.
    func passes(_ from: String, _ to: String, _ frame: [UInt8]) -> Bool {
        send(from, frame)
        let received = Self.ids.filter { $0 != from }.map { ($0, take($0)) }
        return received.allSatisfy { id, frames in id == to ? frames == [frame] : frames.isEmpty }
    }

    func drops(_ id: String, _ reason: DropReason) -> UInt64 { attachments[id]!.counters.drops(reason) }

    func zone(_ id: String) -> UInt32 { worker.slots[worker.slotByID[id]!]!.zone }

    func tracked(_ id: String) -> [ConnectionEntry] { worker.connections.entries(ofZone: zone(id), now: worker.now) }

    // Frames between the lab's NICs.

    func arp(_ id: String) -> [UInt8] {
        let body =
            [0, 1, 0x08, 0x00, 6, 4, 0, 1] + FirewallFrame.mac(Self.macs[id]!) + FirewallFrame.be32(Self.v4[id]!)
            + [0, 0, 0, 0, 0, 0] + FirewallFrame.be32(Self.v4[id]!)
        return FirewallFrame.ethernet(to: 0xFFFF_FFFF_FFFF, from: Self.macs[id]!, type: 0x0806, body)
    }

    func ip4(_ from: String, _ to: String, _ ipProtocol: UInt8, _ payload: [UInt8], source: UInt32? = nil) -> [UInt8] {
        FirewallFrame.ethernet(
            to: Self.macs[to]!,
            from: Self.macs[from]!,
            type: 0x0800,
            FirewallFrame.ipv4(source ?? Self.v4[from]!, Self.v4[to]!, ipProtocol, payload)
        )
    }

    func ip6(_ from: String, _ to: String, _ nextHeader: UInt8, _ payload: [UInt8]) -> [UInt8] {
        FirewallFrame.ethernet(
            to: Self.macs[to]!,
            from: Self.macs[from]!,
            type: 0x86DD,
            FirewallFrame.ipv6(Self.v6[from]!, Self.v6[to]!, nextHeader, payload)
        )
    }

    func tcp4(_ from: String, _ to: String, _ sourcePort: UInt16, _ destinationPort: UInt16, _ flags: UInt8) -> [UInt8]
    {
        ip4(from, to, 6, FirewallFrame.tcp(sourcePort, destinationPort, flags: flags))
    }

    func tcp6(_ from: String, _ to: String, _ sourcePort: UInt16, _ destinationPort: UInt16, _ flags: UInt8) -> [UInt8]
    {
        ip6(from, to, 6, FirewallFrame.tcp(sourcePort, destinationPort, flags: flags))
    }

    func udp4(_ from: String, _ to: String, _ sourcePort: UInt16, _ destinationPort: UInt16) -> [UInt8] {
        ip4(from, to, 17, FirewallFrame.udp(sourcePort, destinationPort))
    }

    func udp6(_ from: String, _ to: String, _ sourcePort: UInt16, _ destinationPort: UInt16) -> [UInt8] {
        ip6(from, to, 17, FirewallFrame.udp(sourcePort, destinationPort))
    }

    /// A full TCP handshake `from` → `to`; true when every segment got through.
    func handshake4(_ from: String, _ to: String, _ sourcePort: UInt16, _ destinationPort: UInt16) -> Bool {
        passes(from, to, tcp4(from, to, sourcePort, destinationPort, FirewallWorkerTests.syn))
            && passes(
                to,
                from,
                tcp4(to, from, destinationPort, sourcePort, FirewallWorkerTests.syn | FirewallWorkerTests.ack)
            )
            && passes(from, to, tcp4(from, to, sourcePort, destinationPort, FirewallWorkerTests.ack))
    }
}

/// The firewall in a real worker: default deny inbound, stateful replies, ICMP errors,
/// outbound rules, fragments, policy changes, and the connections gauge.
@Suite struct FirewallWorkerTests {
    static let fin: UInt8 = 0x01
    static let syn: UInt8 = 0x02
    static let rst: UInt8 = 0x04
    static let psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10

    let lab = FirewallLab()

    static func group(_ id: String, _ rules: [FirewallRule], members: [IPAddress] = []) -> SecurityGroupConfig {
        SecurityGroupConfig(id: id, rules: rules, members: Set(members))
    }

    static func allow(
        _ ipProtocol: UInt8?,
        _ ports: ClosedRange<UInt16>?,
        from text: String,
        direction: FirewallRule.Direction = .inbound
    ) -> FirewallRule {
        let (address, length) = prefix(text)
        return FirewallRule(
            direction: direction,
            ipProtocol: ipProtocol,
            ports: ports,
            peer: .cidr(address, prefixLength: UInt8(length))
        )
    }

    /// b lets a in: TCP 22, UDP 53 and ICMP over both families, TCP 80 over IPv4.
    func openBToA() {
        lab.setGroups(
            "b",
            [
                Self.group(
                    "from-a",
                    [
                        Self.allow(6, 22...22, from: "203.0.113.10/32"),
                        Self.allow(6, 80...80, from: "203.0.113.10/32"),
                        Self.allow(17, 53...53, from: "203.0.113.10/32"),
                        Self.allow(1, nil, from: "203.0.113.10/32"),
                        Self.allow(6, 22...22, from: "2001:db8::a/128"),
                        Self.allow(17, 53...53, from: "2001:db8::a/128"),
                        Self.allow(58, nil, from: "2001:db8::a/128"),
                    ]
                )
            ]
        )
    }

    @Test func inboundIsDeniedByDefaultAndCountedOnTheReceivingNIC() {
        #expect(!lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        #expect(!lab.passes("a", "b", lab.tcp6("a", "b", 40000, 22, Self.syn)))
        #expect(!lab.passes("a", "b", lab.ip4("a", "b", 47, [0, 0, 0x08, 0])))
        #expect(lab.drops("b", .noRuleInbound) == 3)
        #expect(lab.drops("a", .noRuleInbound) == 0)
        #expect(lab.attachments["a"]!.counters.snapshot.drops.isEmpty, "anything goes out")
    }

    @Test func arpAndNeighbourDiscoveryPass() {
        lab.send("a", lab.arp("a"))
        #expect(lab.take("b") == [lab.arp("a")])
        #expect(lab.take("c") == [lab.arp("a")])
        // A neighbour solicitation for b, to its solicited-node group (RFC 4861 §4.3).
        let solicitation = FirewallFrame.ethernet(
            to: 0x3333_FF00_000B,
            from: FirewallLab.macs["a"]!,
            type: 0x86DD,
            FirewallFrame.ipv6(
                FirewallLab.v6["a"]!,
                peer("ff02::1:ff00:b"),
                58,
                [135, 0, 0, 0, 0, 0, 0, 0] + FirewallFrame.be128(FirewallLab.v6["b"]!)
            )
        )
        lab.send("a", solicitation)
        #expect(lab.take("b") == [solicitation])
        #expect(lab.drops("b", .noRuleInbound) == 0)
    }

    @Test func tcpHandshakeAllowedByTheResponderRuleAndRepliesFlowBack() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.ack | Self.psh)))
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.ack | Self.psh)))
        #expect(lab.tracked("a").map(\.state) == [.established])
        #expect(lab.tracked("a").map(\.origin) == [.fromGuest])
        #expect(lab.tracked("b").map(\.state) == [.established])
        #expect(lab.tracked("b").map(\.origin) == [.toGuest])
        // Close: FIN both ways, last ACK.
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.fin | Self.ack)))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.fin | Self.ack)))
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.ack)))
        #expect(lab.tracked("b").map(\.state) == [.timeWait])
        // The same over IPv6.
        #expect(lab.passes("a", "b", lab.tcp6("a", "b", 40001, 22, Self.syn)))
        #expect(lab.passes("b", "a", lab.tcp6("b", "a", 22, 40001, Self.syn | Self.ack)))
        #expect(lab.passes("a", "b", lab.tcp6("a", "b", 40001, 22, Self.ack)))
        #expect(lab.drops("a", .noRuleInbound) == 0)
        #expect(lab.drops("b", .noRuleInbound) == 0)
    }

    @Test func theResponderCannotOpenToTheOpener() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 5000, 22, Self.syn)))
        #expect(!lab.passes("b", "a", lab.udp4("b", "a", 53, 5000)))
        #expect(lab.drops("a", .noRuleInbound) == 2)
        // Not even on the tracked connection's ports, turned around.
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.syn)))
    }

    @Test func aStrayACKOpensNothing() {
        openBToA()
        // The rule lets the ACK in, but no connection starts: b's answer has no way back.
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.ack)))
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.ack)))
        #expect(lab.drops("a", .noRuleInbound) == 1)
        for flags in [Self.rst, Self.fin | Self.ack, Self.syn | Self.ack, Self.rst | Self.ack] {
            #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, flags)))
        }
        #expect(lab.worker.connections.count == 0)
    }

    @Test func anInvalidSegmentOnATrackedConnectionIsDropped() {
        openBToA()
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.syn)))
        // Data before the SYN+ACK.
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.ack)))
        #expect(lab.drops("b", .invalidTCPState) == 1)
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.syn | Self.ack)))
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.ack)))
        // A SYN inside the established connection.
        #expect(!lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.syn)))
        #expect(lab.drops("a", .invalidTCPState) == 1)
    }

    @Test func aResetConnectionReopensWithANewSYN() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.rst)))
        #expect(lab.tracked("a").map(\.state) == [.closed])
        // Nothing but a new connection after a reset.
        #expect(!lab.passes("a", "b", lab.tcp4("a", "b", 40000, 22, Self.ack)))
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.tracked("b").map(\.state) == [.established])
    }

    @Test func udpRepliesComeBack() {
        openBToA()
        #expect(lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        #expect(lab.tracked("b").map(\.state) == [.unreplied])
        #expect(lab.passes("b", "a", lab.udp4("b", "a", 53, 5000)))
        #expect(lab.tracked("a").map(\.state) == [.replied])
        #expect(lab.tracked("b").map(\.state) == [.replied])
        // Another port of b is not a reply.
        #expect(!lab.passes("b", "a", lab.udp4("b", "a", 54, 5000)))
        // IPv6.
        #expect(lab.passes("a", "b", lab.udp6("a", "b", 5001, 53)))
        #expect(lab.passes("b", "a", lab.udp6("b", "a", 53, 5001)))
        #expect(!lab.passes("b", "a", lab.udp6("b", "a", 53, 5002)))
        // A guest's own UDP flow needs no rule for its replies: c has no rule at all, and its
        // datagram does not get into a, but a's answer gets into c.
        #expect(!lab.passes("c", "a", lab.udp4("c", "a", 7000, 7001)))
        #expect(lab.passes("a", "c", lab.udp4("a", "c", 7001, 7000)))
        #expect(!lab.passes("a", "c", lab.udp4("a", "c", 7002, 7000)))
    }

    @Test func icmpEchoRepliesComeBack() {
        openBToA()
        let request = lab.ip4("a", "b", 1, FirewallFrame.icmp(type: 8, identifier: 77))
        #expect(lab.passes("a", "b", request))
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 0, identifier: 77))))
        #expect(!lab.passes("b", "a", lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 0, identifier: 78))))
        #expect(lab.passes("a", "b", lab.ip6("a", "b", 58, FirewallFrame.icmp(type: 128, identifier: 9))))
        #expect(lab.passes("b", "a", lab.ip6("b", "a", 58, FirewallFrame.icmp(type: 129, identifier: 9))))
        #expect(!lab.passes("b", "a", lab.ip6("b", "a", 58, FirewallFrame.icmp(type: 129, identifier: 10))))
    }

    @Test func anEchoRequestFromThePeerIsNotAReply() {
        // a pings b (a's connection); b's own echo request with the same identifier is not a
        // reply to it, and a has no rule letting pings in.
        openBToA()
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 1, FirewallFrame.icmp(type: 8, identifier: 77))))
        #expect(!lab.passes("b", "a", lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 8, identifier: 77))))
        #expect(lab.drops("a", .noRuleInbound) == 1)
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 0, identifier: 77))))
        #expect(lab.passes("a", "b", lab.ip6("a", "b", 58, FirewallFrame.icmp(type: 128, identifier: 9))))
        #expect(!lab.passes("b", "a", lab.ip6("b", "a", 58, FirewallFrame.icmp(type: 128, identifier: 9))))
    }

    @Test func anICMPErrorQuotingATrackedFlowPasses() {
        openBToA()
        let datagram = FirewallFrame.ipv4(FirewallLab.v4["a"]!, FirewallLab.v4["b"]!, 17, FirewallFrame.udp(5000, 53))
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 17, FirewallFrame.udp(5000, 53))))
        // Port unreachable (RFC 792): the IP header and the first 8 bytes of the datagram.
        let error = lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 3, code: 3, payload: Array(datagram.prefix(28))))
        #expect(lab.passes("b", "a", error))
        // About a flow nobody opened: a has no rule for it.
        let stranger = FirewallFrame.ipv4(FirewallLab.v4["a"]!, FirewallLab.v4["b"]!, 17, FirewallFrame.udp(5001, 53))
        let unrelated = lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 3, code: 3, payload: Array(stranger.prefix(28))))
        #expect(!lab.passes("b", "a", unrelated))
        #expect(lab.drops("a", .noRuleInbound) == 1)
        // ICMPv6 destination unreachable (RFC 4443 §3.1).
        let datagram6 = FirewallFrame.ipv6(FirewallLab.v6["a"]!, FirewallLab.v6["b"]!, 17, FirewallFrame.udp(5000, 53))
        #expect(lab.passes("a", "b", lab.ip6("a", "b", 17, FirewallFrame.udp(5000, 53))))
        let error6 = lab.ip6("b", "a", 58, FirewallFrame.icmp(type: 1, code: 4, payload: Array(datagram6.prefix(48))))
        #expect(lab.passes("b", "a", error6))
        // Time exceeded about a ping (the quoted packet is an echo request).
        let ping = FirewallFrame.ipv4(
            FirewallLab.v4["a"]!,
            FirewallLab.v4["b"]!,
            1,
            FirewallFrame.icmp(type: 8, identifier: 5)
        )
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 1, FirewallFrame.icmp(type: 8, identifier: 5))))
        #expect(
            lab.passes("b", "a", lab.ip4("b", "a", 1, FirewallFrame.icmp(type: 11, payload: Array(ping.prefix(28)))))
        )
    }

    @Test func sctpAndOtherProtocolsAreTrackedToo() {
        lab.setGroups(
            "b",
            [
                Self.group(
                    "from-a",
                    [
                        Self.allow(132, 2905...2905, from: "203.0.113.10/32"),
                        Self.allow(47, nil, from: "203.0.113.10/32"),
                    ]
                )
            ]
        )
        // SCTP is tracked by ports, like UDP: INIT or DATA opens, the answers come back.
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 132, FirewallFrame.sctp(3000, 2905, chunk: 1))))
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 132, FirewallFrame.sctp(2905, 3000, chunk: 2))))
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 132, FirewallFrame.sctp(2905, 3000, chunk: 0))))
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 132, FirewallFrame.sctp(3001, 2905, chunk: 0))))
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 132, FirewallFrame.sctp(2905, 3001, chunk: 0))))
        #expect(!lab.passes("a", "b", lab.ip4("a", "b", 132, FirewallFrame.sctp(3002, 2906, chunk: 1))))
        // ABORT ends the association; an ABORT opens nothing.
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 132, FirewallFrame.sctp(2905, 3000, chunk: 6))))
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 132, FirewallFrame.sctp(3003, 2905, chunk: 6))))
        #expect(!lab.passes("b", "a", lab.ip4("b", "a", 132, FirewallFrame.sctp(2905, 3003, chunk: 0))))
        // (b's DATA toward a's port 3003 opened an entry on b's side; a's side dropped it.)
        let sctp = lab.tracked("b").filter { $0.key.ipProtocol == 132 }
        #expect(sctp.filter { $0.key.remotePort == 3000 }.map(\.state) == [.closed])
        #expect(sctp.filter { $0.key.remotePort == 3001 }.map(\.state) == [.replied])
        // GRE (no ports): the first packet opens, the answer comes back.
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 47, [0, 0, 0x08, 0, 1, 2, 3, 4])))
        #expect(lab.passes("b", "a", lab.ip4("b", "a", 47, [0, 0, 0x08, 0, 5, 6, 7, 8])))
        #expect(!lab.passes("c", "a", lab.ip4("c", "a", 47, [0, 0, 0x08, 0, 5, 6, 7, 8])))
    }

    @Test func outboundRulesRestrictDestinations() {
        openBToA()
        lab.setGroups(
            "a",
            [Self.group("to-b", [Self.allow(6, 22...22, from: "203.0.113.11/32", direction: .outbound)])]
        )
        #expect(lab.handshake4("a", "b", 40000, 22), "allowed out, and the replies come back")
        #expect(!lab.passes("a", "b", lab.tcp4("a", "b", 40001, 80, Self.syn)))
        #expect(!lab.passes("a", "c", lab.tcp4("a", "c", 40002, 22, Self.syn)))
        #expect(!lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        #expect(lab.drops("a", .notAllowedOutbound) == 3)
        #expect(lab.drops("c", .noRuleInbound) == 0, "stopped on the way out")
        // A flow b lets in gets its replies out of b whatever b's outbound rules say.
        lab.setGroups(
            "b",
            [
                Self.group("from-a", [Self.allow(6, 22...22, from: "203.0.113.10/32")]),
                Self.group("to-c", [Self.allow(nil, nil, from: "203.0.113.12/32", direction: .outbound)]),
            ]
        )
        #expect(lab.handshake4("a", "b", 40003, 22))
    }

    @Test func laterFragmentsFollowTheirFirstFragment() {
        openBToA()
        func fragment(_ destinationPort: UInt16, identification: UInt16, offset: Int, more: Bool) -> [UInt8] {
            let payload =
                offset == 0
                ? FirewallFrame.udp(5000, destinationPort, payload: [UInt8](repeating: 7, count: 8)) : [1, 2, 3, 4]
            return FirewallFrame.ethernet(
                to: FirewallLab.macs["b"]!,
                from: FirewallLab.macs["a"]!,
                type: 0x0800,
                FirewallFrame.ipv4(
                    FirewallLab.v4["a"]!,
                    FirewallLab.v4["b"]!,
                    17,
                    payload,
                    identification: identification,
                    offset: offset,
                    more: more
                )
            )
        }
        // Allowed first fragment, then its later fragment.
        #expect(lab.passes("a", "b", fragment(53, identification: 1, offset: 0, more: true)))
        #expect(lab.passes("a", "b", fragment(53, identification: 1, offset: 16, more: false)))
        // A first fragment b refuses: its later fragment passes a (a let the first out) but
        // not b.
        #expect(!lab.passes("a", "b", fragment(54, identification: 2, offset: 0, more: true)))
        #expect(!lab.passes("a", "b", fragment(54, identification: 2, offset: 16, more: false)))
        #expect(lab.drops("b", .noRuleInbound) == 1)
        #expect(lab.drops("b", .fragment) == 1)
        // A later fragment whose first fragment nobody saw.
        #expect(!lab.passes("a", "b", fragment(53, identification: 3, offset: 16, more: false)))
        #expect(lab.drops("a", .fragment) == 1)
        // IPv6: the same through the fragment header.
        func fragment6(identification: UInt32, offset: Int, more: Bool) -> [UInt8] {
            let payload =
                offset == 0 ? FirewallFrame.udp(5000, 53, payload: [UInt8](repeating: 7, count: 8)) : [1, 2, 3, 4]
            return FirewallFrame.ethernet(
                to: FirewallLab.macs["b"]!,
                from: FirewallLab.macs["a"]!,
                type: 0x86DD,
                FirewallFrame.ipv6(
                    FirewallLab.v6["a"]!,
                    FirewallLab.v6["b"]!,
                    17,
                    payload,
                    fragment: (identification, offset, more)
                )
            )
        }
        #expect(lab.passes("a", "b", fragment6(identification: 9, offset: 0, more: true)))
        #expect(lab.passes("a", "b", fragment6(identification: 9, offset: 16, more: false)))
        #expect(!lab.passes("a", "b", fragment6(identification: 10, offset: 16, more: false)))
    }

    @Test func aNewPolicyCutsTheFlowsItNoLongerAllows() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40022, 22))
        #expect(lab.handshake4("a", "b", 40080, 80))
        #expect(lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        #expect(lab.tracked("b").count == 3)
        lab.setGroups(
            "b",
            [
                Self.group(
                    "web-only",
                    [Self.allow(6, 80...80, from: "203.0.113.10/32"), Self.allow(17, 53...53, from: "203.0.113.0/24")]
                )
            ]
        )
        // Established flows are not touched when the policy arrives, only on their next packet.
        #expect(lab.tracked("b").count == 3)
        #expect(!lab.passes("a", "b", lab.tcp4("a", "b", 40022, 22, Self.ack | Self.psh)))
        #expect(lab.drops("b", .noRuleInbound) == 1)
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40080, 80, Self.ack | Self.psh)))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 80, 40080, Self.ack | Self.psh)))
        #expect(lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)), "allowed by another rule now: kept")
        #expect(lab.tracked("b").count == 2)
        #expect(lab.tracked("b").allSatisfy { $0.generation == lab.config.nics["b"]!.firewall!.generation })
        // An equal policy compiled again: nothing is cut.
        lab.setGroups(
            "b",
            [
                Self.group(
                    "web-only",
                    [Self.allow(6, 80...80, from: "203.0.113.10/32"), Self.allow(17, 53...53, from: "203.0.113.0/24")]
                )
            ]
        )
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 40080, 80, Self.ack)))
        #expect(lab.tracked("b").count == 2)
    }

    @Test func aNewOutboundRuleCutsTheGuestsOwnFlows() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40022, 22))
        #expect(lab.handshake4("a", "b", 40080, 80))
        lab.setGroups(
            "a",
            [Self.group("to-b-web", [Self.allow(6, 80...80, from: "203.0.113.11/32", direction: .outbound)])]
        )
        // a's entry for port 22 is cut on b's next reply: a has no rule letting it in.
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 22, 40022, Self.ack)))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 80, 40080, Self.ack)))
        #expect(lab.tracked("a").map(\.key.remotePort) == [80])
    }

    @Test func ipv6FramesWithIPv4MappedAddressesAreNotIPv4() {
        // b lets in TCP 22 from a's IPv4 address; an IPv6 frame from ::ffff:203.0.113.10 must not
        // pass for it (RFC 6890 table 20), nor match a's IPv4 connection.
        lab.setGroups("b", [Self.group("from-a4", [Self.allow(6, 22...22, from: "203.0.113.10/32")])])
        let mappedA = peer("::ffff:203.0.113.10")
        let mappedB = peer("::ffff:203.0.113.11")
        func mapped(_ source: UInt128, _ destination: UInt128, _ payload: [UInt8], next: UInt8 = 6) -> [UInt8] {
            FirewallFrame.ethernet(
                to: FirewallLab.macs["b"]!,
                from: FirewallLab.macs["a"]!,
                type: 0x86DD,
                FirewallFrame.ipv6(source, destination, next, payload)
            )
        }
        #expect(
            !lab.passes("a", "b", mapped(mappedA, FirewallLab.v6["b"]!, FirewallFrame.tcp(40000, 22, flags: Self.syn)))
        )
        #expect(!lab.passes("a", "b", mapped(mappedA, mappedB, FirewallFrame.tcp(40000, 22, flags: Self.syn))))
        // a opened UDP to b over IPv4 (anything goes out); b's IPv6 answer from its mapped
        // address is not that flow's reply.
        #expect(!lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        let fakeReply = FirewallFrame.ethernet(
            to: FirewallLab.macs["a"]!,
            from: FirewallLab.macs["b"]!,
            type: 0x86DD,
            FirewallFrame.ipv6(mappedB, mappedA, 17, FirewallFrame.udp(53, 5000))
        )
        #expect(!lab.passes("b", "a", fakeReply))
        // Nor does an ICMPv6 error quoting an IPv6 packet with those addresses relate to it.
        let quoted = FirewallFrame.ipv6(mappedB, mappedA, 17, FirewallFrame.udp(53, 5000))
        let error = lab.ip6("b", "a", 58, FirewallFrame.icmp(type: 1, code: 4, payload: Array(quoted.prefix(48))))
        #expect(!lab.passes("b", "a", error))
        #expect(lab.worker.connections.count == 1, "a's UDP flow only")
    }

    @Test func theConnectionsGaugeAfterTheSweep() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.passes("a", "b", lab.udp4("a", "b", 5000, 53)))
        #expect(!lab.passes("a", "c", lab.udp4("a", "c", 5000, 53)), "out of a (tracked there), not into c")
        lab.worker.sweep()
        #expect(lab.attachments["a"]!.counters.connections == 3)
        #expect(lab.attachments["b"]!.counters.connections == 2)
        #expect(lab.attachments["c"]!.counters.connections == 0)
        #expect(lab.worker.globalCounters.connections == 5)
        #expect(lab.attachments["a"]!.counters.snapshot.connections == 3)
        // The UDP flows expire first (30 s unreplied), then the TCP ones (5 days established).
        lab.worker.now += 31
        lab.worker.sweep()
        #expect(lab.attachments["a"]!.counters.connections == 1)
        #expect(lab.attachments["b"]!.counters.connections == 1)
        #expect(lab.worker.globalCounters.connections == 2)
        lab.worker.now += 432_000
        lab.worker.sweep()
        #expect(lab.worker.globalCounters.connections == 0)
        #expect(lab.attachments["a"]!.counters.connections == 0)
    }

    @Test func evictionsFromAFullTableReachTheGlobalCounters() {
        let lab = FirewallLab(connectionCapacity: 16)
        // Unanswered UDP openings from a (tracked in a's zone): 40 into a table of 16.
        for port in UInt16(5000)..<5040 { _ = lab.passes("a", "c", lab.udp4("a", "c", port, 53)) }
        #expect(lab.worker.connections.count == 16)
        #expect(lab.worker.connections.evictions == 24)
        lab.worker.sweep()
        #expect(lab.worker.globalCounters.snapshot.evictions == 24)
        #expect(lab.worker.globalCounters.snapshot.connections == 16)
    }

    @Test func aRemovedNICsConnectionsAreCollected() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        lab.config.nics["b"] = nil
        lab.attachments["b"] = nil
        lab.publish(changed: ["b"])
        lab.worker.sweep()
        #expect(lab.worker.globalCounters.connections == 1)
        #expect(lab.attachments["a"]!.counters.connections == 1)
    }

    @Test func aNewNICDoesNotInheritTheConnectionCountOfARemovedOne() {
        // b was busy: more connections than one sweep collects.
        let lab = FirewallLab(connectionCapacity: 65_536)
        let slot = lab.worker.slotByID["b"]!
        for number in 0..<20_000 {
            let key = ConnectionKey(
                zone: lab.zone("b"),
                ipProtocol: 17,
                local: RuleMatcher.key(ipv4: FirewallLab.v4["b"]!),
                remote: RuleMatcher.key(ipv4: 0xC633_6400 | UInt32(number >> 16)),
                localPort: 53,
                remotePort: UInt16(truncatingIfNeeded: number)
            )
            let entry = lab.worker.connections.insert(
                key,
                hash: key.hash,
                slot: slot,
                state: .replied,
                origin: .toGuest,
                generation: 0,
                now: lab.worker.now
            )
            #expect(entry >= 0)
        }
        lab.config.nics["b"] = nil
        lab.publish(changed: ["b"])
        var d = lab.config.nics["c"]!
        d.id = "d"
        d.mac = MACAddress(value: 0x5254_0000_000D)
        d.ips = []
        lab.config.nics["d"] = d
        lab.attachments["d"] = NICAttachment(nicID: "d", port: MemoryPort("d"))
        lab.publish(changed: ["d"])
        lab.worker.sweep()
        #expect(lab.attachments["d"]!.counters.connections == 0)
        #expect(lab.worker.globalCounters.connections > 0, "b's entries are still being collected")
        // Once they are all gone, the slot is as good as new.
        lab.worker.sweep()
        #expect(lab.worker.globalCounters.connections == 0)
    }

    @Test func simultaneousOpenThroughTheWorker() {
        // Both guests send a SYN (RFC 9293 §3.5 figure 7); b's crosses a's, then both answer.
        lab.setGroups("b", [Self.group("from-a", [Self.allow(6, 6000...6000, from: "203.0.113.10/32")])])
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 5000, 6000, Self.syn)))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 6000, 5000, Self.syn)))
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 5000, 6000, Self.syn | Self.ack)))
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 6000, 5000, Self.syn | Self.ack)))
        #expect(lab.passes("a", "b", lab.tcp4("a", "b", 5000, 6000, Self.ack)))
        #expect(lab.tracked("a").map(\.state) == [.established])
        #expect(lab.tracked("b").map(\.state) == [.established])
        #expect(lab.drops("a", .invalidTCPState) + lab.drops("b", .invalidTCPState) == 0)
    }

    @Test func aGuestsConnectionFromAnAddressItNoLongerHasIsCut() {
        openBToA()
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.passes("a", "b", lab.ip6("a", "b", 6, FirewallFrame.tcp(40001, 22, flags: Self.syn))))
        #expect(lab.passes("b", "a", lab.ip6("b", "a", 6, FirewallFrame.tcp(22, 40001, flags: Self.syn | Self.ack))))
        // a keeps its IPv6 address only; its policy is compiled again with the new addresses.
        lab.config.nics["a"]!.ips = [.v6(high: 0x2001_0DB8_0000_0000, low: 0xA)]
        lab.setGroups("a", [])
        #expect(!lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.ack)))
        #expect(lab.passes("b", "a", lab.ip6("b", "a", 6, FirewallFrame.tcp(22, 40001, flags: Self.ack))))
        #expect(lab.tracked("a").count == 1)
    }

    @Test func dhcpServerRepliesAndBypassingNICsNeedNoRule() {
        // A guest's own DHCP server reply is stopped by anti-spoofing (dhcp-server); from a
        // NIC that bypasses filtering (a DHCP service), it reaches a without a rule.
        #expect(!lab.passes("b", "a", lab.udp4("b", "a", 67, 68)))
        #expect(!lab.passes("b", "a", lab.udp4("b", "a", 67, 69)))
        lab.config.nics["c"]!.bypassFiltering = true
        lab.publish(changed: ["c"])
        #expect(lab.passes("c", "a", lab.udp4("c", "a", 67, 68)))
        #expect(!lab.passes("c", "a", lab.udp4("c", "a", 67, 69)))
        #expect(lab.passes("a", "c", lab.tcp4("a", "c", 1, 2, Self.ack)))
        #expect(lab.passes("c", "a", lab.tcp4("c", "a", 2, 1, Self.syn)) == false, "a still filters")
        #expect(lab.tracked("c").isEmpty, "a bypassing NIC tracks nothing")
    }

    @Test func aFullConnectionTableRefusesNewConnections() {
        // Two established connections between local NICs fill four entries (one per side).
        let lab = FirewallLab(connectionCapacity: 4)
        lab.setGroups("b", [Self.group("from-a", [Self.allow(6, 22...22, from: "203.0.113.10/32")])])
        #expect(lab.handshake4("a", "b", 40000, 22))
        #expect(lab.handshake4("a", "b", 40001, 22))
        #expect(!lab.passes("a", "b", lab.tcp4("a", "b", 40002, 22, Self.syn)))
        #expect(lab.drops("a", .conntrackFull) == 1)
        // The established ones go on.
        #expect(lab.passes("b", "a", lab.tcp4("b", "a", 22, 40000, Self.ack)))
        #expect(lab.worker.connections.evictions == 0)
    }

    @Test func anICMPErrorGoesOnlyToWhoSentTheQuotedPacket() {
        // a may reach only b; its error about b's segment may go to b, not elsewhere.
        openBToA()
        lab.setGroups(
            "a",
            [Self.group("to-b", [Self.allow(6, 22...22, from: "203.0.113.11/32", direction: .outbound)])]
        )
        lab.setGroups("c", [Self.group("from-a", [Self.allow(nil, nil, from: "203.0.113.10/32")])])
        #expect(lab.handshake4("a", "b", 40000, 22))
        let segment = FirewallFrame.ipv4(
            FirewallLab.v4["b"]!,
            FirewallLab.v4["a"]!,
            6,
            FirewallFrame.tcp(22, 40000, flags: Self.ack)
        )
        let quote = FirewallFrame.icmp(type: 3, code: 3, payload: Array(segment.prefix(28)))
        #expect(!lab.passes("a", "c", lab.ip4("a", "c", 1, quote)))
        #expect(lab.drops("a", .notAllowedOutbound) == 1)
        #expect(lab.passes("a", "b", lab.ip4("a", "b", 1, quote)))
    }

    @Test func ipv6FragmentsWithExtensionHeadersAfterTheFragmentHeader() {
        // RFC 8200 §4.5: the fragment header names the fragmentable part's first header
        // (destination options here), while the first fragment shows UDP further on.
        openBToA()
        func fragment(offset: Int, more: Bool) -> [UInt8] {
            let options: [UInt8] = [17, 0, 1, 4, 0, 0, 0, 0]  // next UDP, 8 bytes, PadN
            let payload =
                offset == 0
                ? options + FirewallFrame.udp(5000, 53, payload: [UInt8](repeating: 7, count: 8)) : [1, 2, 3, 4]
            return FirewallFrame.ethernet(
                to: FirewallLab.macs["b"]!,
                from: FirewallLab.macs["a"]!,
                type: 0x86DD,
                FirewallFrame.ipv6(
                    FirewallLab.v6["a"]!,
                    FirewallLab.v6["b"]!,
                    60,
                    payload,
                    fragment: (77, offset, more)
                )
            )
        }
        #expect(lab.passes("a", "b", fragment(offset: 0, more: true)))
        #expect(lab.passes("a", "b", fragment(offset: 24, more: false)))
        #expect(lab.drops("a", .fragment) + lab.drops("b", .fragment) == 0)
    }
}
