import ButterflyDataplane
import HashTreeCollections
import Testing

/// A NIC's security groups compiled into its inbound and outbound matchers.
@Suite struct FirewallPolicyTests {
    static func nic(groups: [String], ips: [String] = ["10.0.0.5"], mac: UInt64 = 0x5254_0012_3456) -> NICConfig {
        NICConfig(
            id: "n",
            mac: MACAddress(value: mac),
            vni: 1,
            ips: ips.map { IPAddress($0)! },
            kind: .bench,
            path: "",
            ipAntiSpoof: false,
            bypassFiltering: false,
            securityGroups: groups,
            packetTracePath: nil,
            sniffTarget: nil
        )
    }

    static func inbound(_ ipProtocol: UInt8?, _ ports: ClosedRange<UInt16>?, _ peer: FirewallRule.Peer) -> FirewallRule
    {
        FirewallRule(direction: .inbound, ipProtocol: ipProtocol, ports: ports, peer: peer)
    }

    static func outbound(_ ipProtocol: UInt8?, _ ports: ClosedRange<UInt16>?, _ peer: FirewallRule.Peer) -> FirewallRule
    {
        FirewallRule(direction: .outbound, ipProtocol: ipProtocol, ports: ports, peer: peer)
    }

    static func cidr(_ text: String) -> FirewallRule.Peer {
        let (address, length) = prefix(text)
        return .cidr(address, prefixLength: UInt8(length))
    }

    static func group(_ id: String, _ rules: [FirewallRule], members: [String] = []) -> SecurityGroupConfig {
        SecurityGroupConfig(id: id, rules: rules, members: Set(members.map { IPAddress($0)! }))
    }

    static func groups(_ list: SecurityGroupConfig...) -> TreeDictionary<String, SecurityGroupConfig> {
        var result: TreeDictionary<String, SecurityGroupConfig> = [:]
        for group in list { result[group.id] = group }
        return result
    }

    @Test func groupsAddUpAndUnknownIDsAreIgnored() {
        let groups = Self.groups(
            Self.group("ssh", [Self.inbound(6, 22...22, Self.cidr("10.0.0.0/8"))]),
            Self.group("web", [Self.inbound(6, 80...80, Self.cidr("0.0.0.0/0"))])
        )
        let policy = FirewallPolicy.compile(
            Self.nic(groups: ["ssh", "nope", "web", "ssh"]),
            groups: groups,
            generation: 7
        )
        #expect(policy.generation == 7)
        #expect(policy.inbound.ruleCount == 2, "a group listed twice counts once")
        #expect(policy.inbound.allows(ipProtocol: 6, port: 22, peer: peer("10.1.1.1")))
        #expect(!policy.inbound.allows(ipProtocol: 6, port: 22, peer: peer("192.0.2.1")))
        #expect(policy.inbound.allows(ipProtocol: 6, port: 80, peer: peer("192.0.2.1")))
        #expect(policy.outbound == nil, "no outbound rule: any destination")
        let none = FirewallPolicy.compile(Self.nic(groups: ["nope"]), groups: groups, generation: 8)
        #expect(none.inbound.isEmpty)
        #expect(none.outbound == nil)
    }

    @Test func membersOfAGroupArePeers() {
        let groups = Self.groups(
            Self.group("db", [Self.inbound(6, 5432...5432, .members(ofSecurityGroup: "app"))]),
            Self.group("app", [], members: ["10.0.0.7", "10.0.0.9", "2001:db8::7", "::ffff:10.0.0.8"])
        )
        let policy = FirewallPolicy.compile(Self.nic(groups: ["db"]), groups: groups, generation: 1)
        for member in ["10.0.0.7", "10.0.0.9", "2001:db8::7"] {
            #expect(policy.inbound.allows(ipProtocol: 6, port: 5432, peer: peer(member)), "\(member)")
        }
        // An IPv4-mapped member admits nobody: IPv4 members are given as IPv4.
        for stranger in ["10.0.0.8", "10.0.0.6", "2001:db8::8"] {
            #expect(!policy.inbound.allows(ipProtocol: 6, port: 5432, peer: peer(stranger)), "\(stranger)")
        }
        // A member of the NIC's own group is a peer only when a rule names that group.
        #expect(!policy.inbound.allows(ipProtocol: 6, port: 22, peer: peer("10.0.0.7")))
    }

    @Test func aGroupReferencedAsMembersBeforeItExistsAdmitsNobodyUntilItDoes() {
        let rules = [Self.inbound(nil, nil, .members(ofSecurityGroup: "later"))]
        let before = FirewallPolicy.compile(
            Self.nic(groups: ["g"]),
            groups: Self.groups(Self.group("g", rules)),
            generation: 1
        )
        #expect(before.inbound.ruleCount == 1)
        #expect(!before.inbound.allows(ipProtocol: 6, port: 22, peer: peer("10.0.0.7")))
        let after = FirewallPolicy.compile(
            Self.nic(groups: ["g"]),
            groups: Self.groups(Self.group("g", rules), Self.group("later", [], members: ["10.0.0.7"])),
            generation: 2
        )
        #expect(after.inbound.allows(ipProtocol: 6, port: 22, peer: peer("10.0.0.7")))
        #expect(!after.inbound.allows(ipProtocol: 6, port: 22, peer: peer("10.0.0.8")))
    }

    @Test func outboundRulesAreSeparate() {
        let groups = Self.groups(
            Self.group(
                "g",
                [
                    Self.inbound(6, 22...22, Self.cidr("10.0.0.0/8")),
                    Self.outbound(6, 443...443, Self.cidr("192.0.2.0/24")),
                    Self.outbound(17, 53...53, Self.cidr("2001:db8::53/128")),
                ]
            )
        )
        let policy = FirewallPolicy.compile(Self.nic(groups: ["g"]), groups: groups, generation: 1)
        #expect(policy.inbound.ruleCount == 1)
        #expect(policy.outbound?.ruleCount == 2)
        #expect(!policy.inbound.allows(ipProtocol: 6, port: 443, peer: peer("192.0.2.1")))
        #expect(policy.outbound?.allows(ipProtocol: 6, port: 443, peer: peer("192.0.2.1")) == true)
        #expect(policy.outbound?.allows(ipProtocol: 6, port: 22, peer: peer("10.0.0.1")) == false)
        #expect(policy.outbound?.allows(ipProtocol: 17, port: 53, peer: peer("2001:db8::53")) == true)
        #expect(
            policy.describe() == [
                "inbound (1 rules):",
                "  allow tcp port 22 from 10.0.0.0/8",
                "outbound (2 rules):",
                "  allow tcp port 443 to 192.0.2.0/24",
                "  allow udp port 53 to 2001:db8::53/128",
            ]
        )
        let inboundOnly = FirewallPolicy.compile(
            Self.nic(groups: ["g"]),
            groups: Self.groups(Self.group("g", [Self.inbound(6, 22...22, Self.cidr("10.0.0.0/8"))])),
            generation: 2
        )
        #expect(inboundOnly.describe().last == "outbound: any destination")
    }

    @Test func anOutboundRuleToAnEmptyGroupBlocksEverythingOut() {
        // The NIC has outbound rules, so it may reach only what they allow: nobody yet.
        let groups = Self.groups(Self.group("g", [Self.outbound(nil, nil, .members(ofSecurityGroup: "none"))]))
        let policy = FirewallPolicy.compile(Self.nic(groups: ["g"]), groups: groups, generation: 1)
        #expect(policy.outbound != nil)
        #expect(policy.outbound?.allows(ipProtocol: 6, port: 80, peer: peer("192.0.2.1")) == false)
    }

    @Test func portCarryingRulesWithoutPortsCoverEveryPort() {
        let groups = Self.groups(
            Self.group(
                "g",
                [Self.inbound(132, nil, Self.cidr("10.0.0.0/8")), Self.inbound(1, nil, Self.cidr("10.0.0.0/8"))]
            )
        )
        let policy = FirewallPolicy.compile(Self.nic(groups: ["g"]), groups: groups, generation: 1)
        for port: UInt16 in [0, 2905, 65535] {
            #expect(policy.inbound.allows(ipProtocol: 132, port: port, peer: peer("10.0.0.1")))
        }
        #expect(policy.inbound.allows(ipProtocol: 1, port: 0, peer: peer("10.0.0.1")))
        #expect(!policy.inbound.allows(ipProtocol: 6, port: 0, peer: peer("10.0.0.1")))
    }

    @Test func ownAddressesIncludeTheEUI64LinkLocal() {
        // RFC 4291 §2.5.1 and appendix A: 52:54:00:12:34:56 ─► fe80::5054:ff:fe12:3456.
        let policy = FirewallPolicy.compile(
            Self.nic(groups: [], ips: ["10.0.0.5", "2001:db8::5"], mac: 0x5254_0012_3456),
            groups: [:],
            generation: 1
        )
        #expect(policy.ownAddresses.count == 3)
        #expect(policy.owns(peer("10.0.0.5")))
        #expect(policy.owns(peer("2001:db8::5")))
        #expect(policy.owns(peer("fe80::5054:ff:fe12:3456")))
        #expect(!policy.owns(peer("10.0.0.6")))
        #expect(!policy.owns(peer("fe80::5254:ff:fe12:3456")), "the universal/local bit is flipped")
        // A locally administered MAC (bit set) gets the bit cleared.
        let local = FirewallPolicy.ownAddresses(of: Self.nic(groups: [], ips: [], mac: 0x0200_0000_0001))
        #expect(local == [peer("fe80::ff:fe00:1")])
        let universal = FirewallPolicy.ownAddresses(of: Self.nic(groups: [], ips: [], mac: 0xFCFF_FFFF_FFFF))
        #expect(universal == [peer("fe80::feff:ffff:feff:ffff")])
    }

    @Test func everyCompilationIsADistinctPolicy() {
        let groups = Self.groups(Self.group("g", [Self.inbound(6, 22...22, Self.cidr("10.0.0.0/8"))]))
        let first = FirewallPolicy.compile(Self.nic(groups: ["g"]), groups: groups, generation: 1)
        let second = FirewallPolicy.compile(Self.nic(groups: ["g"]), groups: groups, generation: 2)
        #expect(first == first)
        #expect(first != second, "equal rules, still another compilation")
        #expect(FirewallPolicy.empty.inbound.isEmpty && FirewallPolicy.empty.outbound == nil)
    }
}
