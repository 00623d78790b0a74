import ButterflyDataplane
import Testing

@testable import ButterflyControl

private func mac(_ text: String) -> MACAddress { MACAddress(text)! }
private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

private func tcpRule(_ ports: ClosedRange<UInt16>, from cidr: String = "10.0.0.0", length: UInt8 = 24) -> FirewallRule {
    FirewallRule(direction: .inbound, ipProtocol: 6, ports: ports, peer: .cidr(ip(cidr), prefixLength: length))
}

@Suite struct ModelTests {
    // MARK: NICs

    @Test func addNICStoresIt() throws {
        var model = Model()
        let nic = NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 42, ips: [ip("10.0.0.1")])
        #expect(try model.addNIC(nic) == .nic("n1"))
        #expect(model.nics == ["n1": nic])
    }

    @Test func addNICReplacesTheSameID() throws {
        var model = Model()
        try model.addNIC(NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 1, ips: [ip("10.0.0.1")]))
        let replacement = NIC(id: "n1", mac: mac("52:54:00:00:00:02"), vni: 2)
        #expect(try model.addNIC(replacement) == .nic("n1"))
        #expect(model.nics.count == 1)
        #expect(model.nics["n1"] == replacement)
        #expect(model.nics["n1"]?.ips == [])
    }

    @Test func deleteNICIsIdempotent() throws {
        var model = Model()
        try model.addNIC(NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 1))
        #expect(model.deleteNIC(id: "n1") == .nic("n1"))
        #expect(model.nics.isEmpty)
        #expect(model.deleteNIC(id: "n1") == .none)
        #expect(model.deleteNIC(id: "never") == .none)
    }

    @Test func updateUnknownNICFails() {
        var model = Model()
        #expect(throws: APIError("NIC: ghost not found")) {
            try model.updateNIC(id: "ghost", Model.NICUpdate(ipAntiSpoof: true))
        }
        do {
            try model.updateNIC(id: "ghost", Model.NICUpdate())
            Issue.record("expected a throw")
        } catch {
            #expect(error.description == "NIC: ghost not found")
        }
    }

    @Test func updateNICChangesOnlyWhatIsGiven() throws {
        var model = Model()
        let original = NIC(
            id: "n1",
            mac: mac("52:54:00:00:00:01"),
            vni: 1,
            ips: [ip("10.0.0.1")],
            securityGroups: ["sg-1"],
            ipAntiSpoof: false
        )
        try model.addNIC(original)
        let change = try model.updateNIC(
            id: "n1",
            Model.NICUpdate(ipAntiSpoof: true, ips: [ip("10.0.0.2"), ip("2001:db8::2")], vni: 7)
        )
        #expect(change == .nic("n1"))
        let updated = try #require(model.nics["n1"])
        #expect(updated.ipAntiSpoof)
        #expect(updated.ips == [ip("10.0.0.2"), ip("2001:db8::2")])
        #expect(updated.vni == 7)
        #expect(updated.securityGroups == ["sg-1"])
        #expect(updated.mac == original.mac)
    }

    @Test func updateNICCanClearIPsAndGroups() throws {
        var model = Model()
        try model.addNIC(
            NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 1, ips: [ip("10.0.0.1")], securityGroups: ["sg"])
        )
        try model.updateNIC(id: "n1", Model.NICUpdate(ips: [], securityGroups: []))
        #expect(model.nics["n1"]?.ips == [])
        #expect(model.nics["n1"]?.securityGroups == [])
    }

    @Test func updateWithoutEffectiveChangeIsNone() throws {
        var model = Model()
        let nic = NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 5, ips: [ip("10.0.0.1")], ipAntiSpoof: true)
        try model.addNIC(nic)
        #expect(try model.updateNIC(id: "n1", Model.NICUpdate()) == .none)
        #expect(
            try model.updateNIC(
                id: "n1",
                Model.NICUpdate(ipAntiSpoof: true, ips: [ip("10.0.0.1")], vni: 5, mac: nic.mac)
            ) == .none
        )
        #expect(model.nics["n1"] == nic)
    }

    @Test func updateValidationErrorsAreBadNicUpdate() throws {
        var model = Model()
        let nic = NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 5)
        try model.addNIC(nic)
        do {
            try model.updateNIC(id: "n1", Model.NICUpdate(vni: 1 << 24))
            Issue.record("expected a throw")
        } catch {
            #expect(error.description == "Bad Nic update format")
            #expect(error.detail?.contains("vni") == true)
        }
        #expect(throws: APIError.self) {
            try model.updateNIC(id: "n1", Model.NICUpdate(packetTracePath: ""))
        }
        // A refused update changes nothing.
        #expect(model.nics["n1"] == nic)
    }

    // MARK: NIC validation

    @Test func vniMustFitIn24Bits() throws {
        var model = Model()
        #expect(throws: Never.self) { try model.addNIC(NIC(id: "max", mac: mac("52:54:00:00:00:01"), vni: NIC.maxVNI)) }
        do {
            try NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 1 << 24).validate()
            Issue.record("expected a throw")
        } catch {
            #expect(error.description == "Bad NIC format")
            #expect(error.detail == "vni 16777216 does not fit in 24 bits")
        }
        #expect(throws: APIError.self) {
            try model.addNIC(NIC(id: "n2", mac: mac("52:54:00:00:00:01"), vni: 1 << 24))
        }
        #expect(model.nics["n2"] == nil)
    }

    @Test(arguments: ["", ".", "..", "a/b", "/", "../etc", "nic\u{0}", "nic\n1", "tab\tid", "del\u{7F}"])
    func badIDsAreRejected(_ id: String) {
        do {
            try NIC(id: id, mac: mac("52:54:00:00:00:01"), vni: 1).validate()
            Issue.record("id \(id.debugDescription) should be rejected")
        } catch {
            #expect(error.description == "Bad NIC format")
        }
    }

    @Test func ordinaryIDsAreAccepted() throws {
        for id in ["nic-1", "a", "with space", "é", "x:y", "...", String(repeating: "n", count: 100)] {
            #expect(throws: Never.self) { try NIC(id: id, mac: mac("52:54:00:00:00:01"), vni: 1).validate() }
        }
    }

    @Test func tapIDLength() throws {
        let fifteen = String(repeating: "t", count: 15)
        let sixteen = String(repeating: "t", count: 16)
        #expect(throws: Never.self) {
            try NIC(id: fifteen, mac: mac("52:54:00:00:00:01"), vni: 1, kind: .tap).validate()
        }
        do {
            try NIC(id: sixteen, mac: mac("52:54:00:00:00:01"), vni: 1, kind: .tap).validate()
            Issue.record("expected a throw")
        } catch {
            #expect(error.description == "Bad NIC format")
        }
        // Bytes, not characters: 8 × "é" is 16 bytes.
        #expect(throws: APIError.self) {
            try NIC(id: String(repeating: "é", count: 8), mac: mac("52:54:00:00:00:01"), vni: 1, kind: .tap).validate()
        }
        // The limit applies only to TAP NICs.
        #expect(throws: Never.self) {
            try NIC(id: sixteen, mac: mac("52:54:00:00:00:01"), vni: 1, kind: .vhostUserServer).validate()
        }
    }

    @Test func tapIDMustBeAnInterfaceName() {
        for id in ["tap 0", "tap:0"] {
            #expect(throws: APIError.self) {
                try NIC(id: id, mac: mac("52:54:00:00:00:01"), vni: 1, kind: .tap).validate()
            }
        }
    }

    @Test func packetTracePathMustBeNonEmpty() {
        #expect(throws: APIError.self) {
            try NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, packetTracePath: "").validate()
        }
        #expect(throws: APIError.self) {
            try NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, packetTracePath: "/tmp/a\u{0}b").validate()
        }
        #expect(throws: Never.self) {
            try NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, packetTracePath: "/tmp/a.pcap").validate()
        }
    }

    // MARK: Addresses and references a NIC may not have (issue 8)

    /// The detail of the error `body` throws, after checking its description.
    private func refusal(
        _ description: String,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws(APIError) -> Void
    ) -> String? {
        do {
            try body()
            Issue.record("expected a refusal", sourceLocation: sourceLocation)
            return nil
        } catch {
            #expect(error.description == description, sourceLocation: sourceLocation)
            return error.detail
        }
    }

    @Test(arguments: [
        ("00:00:00:00:00:00", "is all zeros"),
        ("ff:ff:ff:ff:ff:ff", "is the broadcast address"),
        ("01:00:5e:00:00:01", "is a multicast address (group bit set)"),
        ("33:33:ff:00:00:01", "is a multicast address (group bit set)"),
        ("03:00:00:00:00:00", "is a multicast address (group bit set)"),
    ])
    func nicMACMustBeUnicast(_ text: String, _ why: String) throws {
        var model = Model()
        let expected = "mac \(text) \(why); a NIC's mac must be a unicast address"
        #expect(
            refusal("Bad NIC format") { () throws(APIError) in try model.addNIC(NIC(id: "n", mac: mac(text), vni: 1)) }
                == expected
        )
        #expect(model.nics.isEmpty)
        let nic = NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1)
        try model.addNIC(nic)
        #expect(
            refusal("Bad Nic update format") { () throws(APIError) in
                try model.updateNIC(id: "n", Model.NICUpdate(mac: mac(text)))
            } == expected
        )
        #expect(model.nics == ["n": nic])
    }

    @Test func unicastMACsAreAccepted() throws {
        // Locally administered, all bits but the group bit, the lowest non-zero.
        for text in ["02:00:00:00:00:01", "fe:ff:ff:ff:ff:ff", "00:00:00:00:00:01", "52:54:00:12:34:56"] {
            #expect(throws: Never.self) { try NIC(id: "n", mac: mac(text), vni: 1).validate() }
        }
    }

    @Test(arguments: [
        ("0.0.0.0", "is the unspecified address"),
        ("::", "is the unspecified address"),
        ("255.255.255.255", "is the broadcast address"),
        ("224.0.0.1", "is a multicast address"),
        ("239.1.2.3", "is a multicast address"),
        ("ff02::1", "is a multicast address"),
        ("ff0e::101", "is a multicast address"),
        ("127.0.0.1", "is a loopback address"),
        ("127.8.9.10", "is a loopback address"),
        ("::1", "is a loopback address"),
    ])
    func nicAddressesMustBeUnicast(_ text: String, _ why: String) throws {
        var model = Model()
        let expected = "ip \(text) \(why); a NIC's ip must be a unicast address"
        #expect(
            refusal("Bad NIC format") { () throws(APIError) in
                try model.addNIC(NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, ips: [ip("10.0.0.1"), ip(text)]))
            } == expected
        )
        #expect(model.nics.isEmpty)
        let nic = NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, ips: [ip("10.0.0.1")])
        try model.addNIC(nic)
        #expect(
            refusal("Bad Nic update format") { () throws(APIError) in
                try model.updateNIC(id: "n", Model.NICUpdate(ips: [ip(text)]))
            } == expected
        )
        #expect(model.nics == ["n": nic])
    }

    @Test func unicastEdgeAddressesAreAccepted() throws {
        let edges = [
            "10.0.0.0", "0.0.0.1", "126.255.255.255", "128.0.0.0", "192.168.1.255", "223.255.255.255",
            "240.0.0.1", "255.255.255.254", "fe80::1", "2001:db8::", "::2", "::ffff:10.0.0.1", "feff::1",
        ]
        #expect(throws: Never.self) {
            try NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, ips: edges.map(ip)).validate()
        }
    }

    @Test func nicSecurityGroupIDsMustNameSomething() throws {
        var model = Model()
        let base = NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1, securityGroups: ["web"])
        for (group, detail) in [
            ("", #"security group id "" is empty"#),
            ("a\u{0}b", #"security group id "a\0b" contains a NUL character"#),
        ] {
            var nic = base
            nic.securityGroups = ["web", group]
            #expect(refusal("Bad NIC format") { () throws(APIError) in try model.addNIC(nic) } == detail)
        }
        #expect(model.nics.isEmpty)
        try model.addNIC(base)
        #expect(
            refusal("Bad Nic update format") { () throws(APIError) in
                try model.updateNIC(id: "n", Model.NICUpdate(securityGroups: [""]))
            } == #"security group id "" is empty"#
        )
        #expect(model.nics == ["n": base])
        // Free strings otherwise (BUTTERFLY-COMPAT §4).
        #expect(throws: Never.self) {
            try model.updateNIC(id: "n", Model.NICUpdate(securityGroups: [" ", "a/b", "é", "tab\t"]))
        }
    }

    @Test func vhostUserSocketPathMustFitASocketAddress() throws {
        let directory = "/run/butterfly"  // "/run/butterfly/qemu-vhost-": 26 bytes, so ids up to 81
        for kind in [NICKind.vhostUserServer, .vhostUserClient] {
            let longest = NIC(id: String(repeating: "v", count: 81), mac: mac("52:54:00:00:00:01"), vni: 1, kind: kind)
            let path = "\(directory)/qemu-vhost-\(longest.id)"
            #expect(path.utf8.count == NIC.maxSocketPathLength)
            #expect(throws: Never.self) { try longest.validate(path: path) }

            var tooLong = longest
            tooLong.id += "v"
            let detail = refusal("Bad NIC format") { () throws(APIError) in
                try tooLong.validate(path: "\(directory)/qemu-vhost-\(tooLong.id)")
            }
            #expect(
                detail
                    == "the vhost-user socket path would be 108 bytes, more than the 107 a unix socket address "
                    + "holds: with this socket directory a vhost-user NIC id has at most 81 bytes"
            )
            // Bytes, not characters: 41 × "é" is 82 bytes.
            var wide = longest
            wide.id = String(repeating: "é", count: 41)
            #expect(throws: APIError.self) { try wide.validate(path: "\(directory)/qemu-vhost-\(wide.id)") }
        }
        // A directory that leaves no room at all.
        let deep = "/" + String(repeating: "d", count: 100)
        let nic = NIC(id: "n", mac: mac("52:54:00:00:00:01"), vni: 1)
        #expect(
            refusal("Bad NIC format") { () throws(APIError) in try nic.validate(path: "\(deep)/qemu-vhost-n") }?
                .hasSuffix("has at most 0 bytes") == true
        )
        // TAP and BENCH NICs name no socket.
        #expect(throws: Never.self) {
            try NIC(id: "t", mac: mac("52:54:00:00:00:01"), vni: 1, kind: .tap).validate(path: "t")
            try NIC(id: String(repeating: "b", count: 200), mac: mac("52:54:00:00:00:01"), vni: 1, kind: .bench)
                .validate(path: "")
        }
    }

    // MARK: Security groups

    @Test func addRuleCreatesTheGroup() throws {
        var model = Model()
        let rule = tcpRule(22...22)
        #expect(model.addRule(rule, toSecurityGroup: "sg-1") == .securityGroup("sg-1"))
        let group = try #require(model.securityGroups["sg-1"])
        #expect(Array(group.rules) == [rule])
        #expect(group.members.isEmpty)
    }

    @Test func duplicateRuleIsNone() {
        var model = Model()
        model.addRule(tcpRule(22...22), toSecurityGroup: "sg")
        #expect(model.addRule(tcpRule(22...22), toSecurityGroup: "sg") == .none)
        #expect(model.securityGroups["sg"]?.rules.count == 1)
        #expect(model.addRule(tcpRule(22...23), toSecurityGroup: "sg") == .securityGroup("sg"))
        #expect(model.securityGroups["sg"]?.rules.count == 2)
    }

    @Test func rulesKeepTheirInsertionOrder() {
        var model = Model()
        let rules = [tcpRule(80...80), tcpRule(22...22), tcpRule(443...443)]
        for rule in rules { model.addRule(rule, toSecurityGroup: "sg") }
        #expect(model.securityGroups["sg"].map { Array($0.rules) } == rules)
    }

    @Test func rulesChangeInPlaceWhileASnapshotSharesThem() {
        var model = Model()
        let rules = (1...300).map { tcpRule(UInt16($0)...UInt16($0)) }
        for rule in rules { model.addRule(rule, toSecurityGroup: "sg") }
        // What the reconciler hands the data plane: the same storage, not a copy.
        let snapshot = model.securityGroups["sg"]!.rules
        model.deleteRule(rules[10], fromSecurityGroup: "sg")
        model.addRule(rules[10], toSecurityGroup: "sg")  // back, at the end
        model.addRule(tcpRule(9999...9999), toSecurityGroup: "sg")
        #expect(Array(snapshot) == rules, "the snapshot keeps the rules as they were")
        let expected = rules.filter { $0 != rules[10] } + [rules[10], tcpRule(9999...9999)]
        #expect(model.securityGroups["sg"].map { Array($0.rules) } == expected)
        #expect(model.securityGroups["sg"]?.rules == RuleSet(expected))
        #expect(model.securityGroups["sg"]?.rules != RuleSet(rules + [tcpRule(9999...9999)]), "order counts")
    }

    @Test func ruleSetCountsTheGroupsItReferences() {
        var rules = RuleSet()
        let peer = FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 22...22,
            peer: .members(ofSecurityGroup: "web")
        )
        var other = peer
        other.ports = 80...80
        rules.append(peer)
        rules.append(other)
        rules.append(tcpRule(22...22))
        #expect(rules.referencedGroups["web"] == 2)
        rules.remove(peer)
        #expect(rules.referencedGroups["web"] == 1)
        #expect(rules.remove(peer) == nil)
        rules.remove(other)
        #expect(rules.referencedGroups.isEmpty)
        #expect(rules.count == 1)
    }

    @Test func deleteRuleIsAnExactMatch() {
        var model = Model()
        model.addRule(tcpRule(22...22), toSecurityGroup: "sg")
        // Same ports, other prefix length / other direction: not the same rule.
        #expect(model.deleteRule(tcpRule(22...22, length: 16), fromSecurityGroup: "sg") == .none)
        var outbound = tcpRule(22...22)
        outbound.direction = .outbound
        #expect(model.deleteRule(outbound, fromSecurityGroup: "sg") == .none)
        #expect(model.deleteRule(tcpRule(22...23), fromSecurityGroup: "sg") == .none)
        #expect(model.securityGroups["sg"]?.rules.count == 1)
        #expect(model.deleteRule(tcpRule(22...22), fromSecurityGroup: "sg") == .securityGroup("sg"))
        #expect(model.securityGroups["sg"]?.rules.isEmpty == true)
        // The group stays, emptied.
        #expect(model.securityGroups["sg"] != nil)
        #expect(model.deleteRule(tcpRule(22...22), fromSecurityGroup: "sg") == .none)
        #expect(model.deleteRule(tcpRule(22...22), fromSecurityGroup: "missing") == .none)
        #expect(model.securityGroups["missing"] == nil)
    }

    @Test func addMemberCreatesTheGroupAndIgnoresDuplicates() {
        var model = Model()
        #expect(model.addMember(ip("10.0.0.1"), toSecurityGroup: "sg") == .securityGroup("sg"))
        #expect(model.addMember(ip("10.0.0.1"), toSecurityGroup: "sg") == .none)
        #expect(model.addMember(ip("2001:db8::1"), toSecurityGroup: "sg") == .securityGroup("sg"))
        // The same address written differently is a duplicate.
        #expect(model.addMember(ip("2001:0db8:0:0:0:0:0:1"), toSecurityGroup: "sg") == .none)
        #expect(model.securityGroups["sg"].map { Array($0.members) } == [ip("10.0.0.1"), ip("2001:db8::1")])
    }

    @Test func deleteMember() {
        var model = Model()
        model.addMember(ip("10.0.0.1"), toSecurityGroup: "sg")
        #expect(model.deleteMember(ip("10.0.0.2"), fromSecurityGroup: "sg") == .none)
        #expect(model.deleteMember(ip("10.0.0.1"), fromSecurityGroup: "sg") == .securityGroup("sg"))
        #expect(model.securityGroups["sg"]?.members.isEmpty == true)
        #expect(model.deleteMember(ip("10.0.0.1"), fromSecurityGroup: "nope") == .none)
        #expect(model.securityGroups["nope"] == nil)
    }

    @Test func setSecurityGroup() {
        var model = Model()
        let group = SecurityGroup(id: "sg", rules: [tcpRule(22...22)], members: [ip("10.0.0.1")])
        #expect(model.setSecurityGroup(group) == .securityGroup("sg"))
        #expect(model.setSecurityGroup(group) == .none)
        #expect(model.securityGroups["sg"] == group)

        // Replaced whole: rules and members.
        let replacement = SecurityGroup(id: "sg", rules: [], members: [ip("10.0.0.2")])
        #expect(model.setSecurityGroup(replacement) == .securityGroup("sg"))
        #expect(model.securityGroups["sg"] == replacement)
    }

    @Test func deleteSecurityGroup() {
        var model = Model()
        model.setSecurityGroup(SecurityGroup(id: "sg"))
        #expect(model.deleteSecurityGroup(id: "sg") == .securityGroup("sg"))
        #expect(model.securityGroups.isEmpty)
        #expect(model.deleteSecurityGroup(id: "sg") == .none)
    }

    @Test func deletingAGroupLeavesNICsReferencingIt() throws {
        var model = Model()
        try model.addNIC(NIC(id: "n1", mac: mac("52:54:00:00:00:01"), vni: 1, securityGroups: ["sg"]))
        model.setSecurityGroup(SecurityGroup(id: "sg"))
        model.deleteSecurityGroup(id: "sg")
        #expect(model.nics["n1"]?.securityGroups == ["sg"])
    }

    @Test func securityGroupLookup() throws {
        var model = Model()
        #expect(throws: APIError("Security Group not found")) { try model.securityGroup(id: "sg") }
        model.setSecurityGroup(SecurityGroup(id: "sg"))
        #expect(try model.securityGroup(id: "sg").id == "sg")
    }
}
