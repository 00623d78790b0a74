import ButterflyDataplane
import Testing

@testable import ButterflyControl

private let host = HostConfig(
    vtepAddress: IPAddress("198.51.100.1"),
    socketDirectory: "/run/sockets",
    nicMTU: 1500,
    offloads: true
)

private func reconciler(traceByDefault: Bool = false) -> Reconciler {
    Reconciler(host: host, traceByDefault: traceByDefault, traceDirectory: "/var/trace", processID: 4242)
}

private func nic(
    _ id: String,
    kind: NICKind = .vhostUserServer,
    packetTrace: Bool? = nil,
    packetTracePath: String? = nil
) -> NIC {
    NIC(
        id: id,
        mac: MACAddress("52:54:00:00:00:01")!,
        vni: 7,
        ips: [IPAddress("10.0.0.1")!],
        securityGroups: ["sg"],
        ipAntiSpoof: true,
        sniffTargetNICID: "other",
        bypassFiltering: false,
        kind: kind,
        packetTrace: packetTrace,
        packetTracePath: packetTracePath
    )
}

@Suite struct ReconcilerTests {
    @Test func startsEmptyAtVersionZero() {
        let r = reconciler()
        #expect(r.snapshot.version == 0)
        #expect(r.snapshot.host == host)
        #expect(r.snapshot.nics.isEmpty)
        #expect(r.snapshot.securityGroups.isEmpty)
    }

    @Test func nicAddAndRemove() throws {
        var r = reconciler()
        var model = Model()
        let change = try model.addNIC(nic("n1"))
        let added = r.apply(change, from: model)
        #expect(added)
        #expect(r.snapshot.version == 1)
        var config = try #require(r.snapshot.nics["n1"])
        #expect(config.firewall != nil, "the NIC's groups are compiled")
        config.firewall = nil
        #expect(
            config
                == NICConfig(
                    id: "n1",
                    mac: MACAddress("52:54:00:00:00:01")!,
                    vni: 7,
                    ips: [IPAddress("10.0.0.1")!],
                    kind: .vhostUserServer,
                    path: "/run/sockets/qemu-vhost-n1",
                    ipAntiSpoof: true,
                    bypassFiltering: false,
                    securityGroups: ["sg"],
                    packetTracePath: nil,
                    sniffTarget: "other"
                )
        )

        let removed = r.apply(model.deleteNIC(id: "n1"), from: model)
        #expect(removed)
        #expect(r.snapshot.version == 2)
        #expect(r.snapshot.nics["n1"] == nil)
        #expect(r.snapshot.nics.isEmpty)
    }

    @Test func noneDoesNotBumpTheVersion() throws {
        var r = reconciler()
        var model = Model()
        r.apply(try model.addNIC(nic("n1")), from: model)
        let before = r.snapshot
        let appliedNone = r.apply(.none, from: model)
        #expect(!appliedNone)
        #expect(r.snapshot.version == before.version)
        #expect(r.snapshot.nics.count == 1)
        // A model no-op produces .none.
        let appliedNoOp = r.apply(model.deleteNIC(id: "ghost"), from: model)
        #expect(!appliedNoOp)
        #expect(r.snapshot.version == 1)
    }

    @Test func eachChangeBumpsByOne() throws {
        var r = reconciler()
        var model = Model()
        for index in 1...5 {
            r.apply(try model.addNIC(nic("n\(index)")), from: model)
            #expect(r.snapshot.version == UInt64(index))
        }
        #expect(r.snapshot.nics.count == 5)
    }

    @Test func updatesAreReflected() throws {
        var r = reconciler()
        var model = Model()
        r.apply(try model.addNIC(nic("n1")), from: model)
        r.apply(try model.updateNIC(id: "n1", Model.NICUpdate(ips: [IPAddress("10.0.0.9")!], vni: 99)), from: model)
        #expect(r.snapshot.nics["n1"]?.ips == [IPAddress("10.0.0.9")!])
        #expect(r.snapshot.nics["n1"]?.vni == 99)
        #expect(r.snapshot.version == 2)
    }

    @Test func paths() {
        let r = reconciler()
        #expect(r.path(for: nic("vm-1")) == "/run/sockets/qemu-vhost-vm-1")
        #expect(r.path(for: nic("vm-2", kind: .vhostUserClient)) == "/run/sockets/qemu-vhost-vm-2")
        #expect(r.path(for: nic("tap7", kind: .tap)) == "tap7")
        #expect(r.path(for: nic("b", kind: .bench)) == "")
    }

    @Test func snapshotPathMatchesKind() throws {
        var r = reconciler()
        var model = Model()
        r.apply(try model.addNIC(nic("tap7", kind: .tap)), from: model)
        #expect(r.snapshot.nics["tap7"]?.path == "tap7")
        #expect(r.snapshot.nics["tap7"]?.kind == .tap)
    }

    @Test func tracePathDefaultsWhenTracingByDefault() {
        let r = reconciler(traceByDefault: true)
        #expect(r.tracePath(for: nic("n1")) == "/var/trace/butterfly-4242-n1.pcap")
        #expect(r.tracePath(for: nic("n1", packetTrace: true)) == "/var/trace/butterfly-4242-n1.pcap")
        #expect(r.tracePath(for: nic("n1", packetTrace: false)) == nil)
        #expect(r.tracePath(for: nic("n1", packetTrace: false, packetTracePath: "/x.pcap")) == nil)
        #expect(r.tracePath(for: nic("n1", packetTracePath: "/explicit.pcap")) == "/explicit.pcap")
    }

    @Test func tracePathWhenNotTracingByDefault() {
        let r = reconciler(traceByDefault: false)
        #expect(r.tracePath(for: nic("n1")) == nil)
        #expect(r.tracePath(for: nic("n1", packetTrace: true)) == "/var/trace/butterfly-4242-n1.pcap")
        #expect(r.tracePath(for: nic("n1", packetTrace: true, packetTracePath: "/explicit.pcap")) == "/explicit.pcap")
    }

    @Test func defaultTracePathIsPerProcessAndNIC() {
        #expect(reconciler().defaultTracePath(forNICID: "n1") == "/var/trace/butterfly-4242-n1.pcap")
        #expect(reconciler(traceByDefault: true).defaultTracePath(forNICID: "x") == "/var/trace/butterfly-4242-x.pcap")
    }

    @Test func snapshotCarriesTracePath() throws {
        var r = reconciler(traceByDefault: true)
        var model = Model()
        r.apply(try model.addNIC(nic("n1")), from: model)
        #expect(r.snapshot.nics["n1"]?.packetTracePath == "/var/trace/butterfly-4242-n1.pcap")
        r.apply(try model.updateNIC(id: "n1", Model.NICUpdate(packetTrace: false)), from: model)
        #expect(r.snapshot.nics["n1"]?.packetTracePath == nil)
    }

    @Test func securityGroupChangesAreReflected() throws {
        var r = reconciler()
        var model = Model()
        let rule = FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 22...22,
            peer: .cidr(IPAddress("0.0.0.0")!, prefixLength: 0)
        )
        let second = FirewallRule(
            direction: .outbound,
            ipProtocol: nil,
            ports: nil,
            peer: .members(ofSecurityGroup: "sg")
        )
        let created = r.apply(model.addRule(rule, toSecurityGroup: "sg"), from: model)
        #expect(created)
        #expect(r.snapshot.securityGroups["sg"] == SecurityGroupConfig(id: "sg", rules: [rule], members: []))

        r.apply(model.addMember(IPAddress("10.0.0.1")!, toSecurityGroup: "sg"), from: model)
        r.apply(model.addMember(IPAddress("2001:db8::1")!, toSecurityGroup: "sg"), from: model)
        r.apply(model.addRule(second, toSecurityGroup: "sg"), from: model)
        #expect(
            r.snapshot.securityGroups["sg"]
                == SecurityGroupConfig(
                    id: "sg",
                    rules: [rule, second],
                    members: [IPAddress("10.0.0.1")!, IPAddress("2001:db8::1")!]
                )
        )
        #expect(r.snapshot.version == 4)

        r.apply(model.deleteRule(rule, fromSecurityGroup: "sg"), from: model)
        #expect(r.snapshot.securityGroups["sg"]?.rules == [second])

        r.apply(model.deleteSecurityGroup(id: "sg"), from: model)
        #expect(r.snapshot.securityGroups["sg"] == nil)
        #expect(r.snapshot.version == 6)
    }

    /// A change reaches exactly the NICs it affects (what the worker adopts): a group's rules
    /// the NICs carrying it, a group's members the NICs whose groups' rules name it, a NIC's
    /// own change that NIC; nothing else is recompiled.
    @Test func aChangeNamesExactlyTheNICsItAffects() throws {
        var r = reconciler()
        var model = Model()
        func add(_ id: String, groups: [String]) throws {
            var card = nic(id)
            card.securityGroups = groups
            r.apply(try model.addNIC(card), from: model)
            #expect(r.changedNICs == [id])
        }
        try add("a", groups: ["web"])
        try add("b", groups: ["db"])
        try add("c", groups: [])
        try add("d", groups: ["web", "db"])
        let fromAdmins = FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 22...22,
            peer: .members(ofSecurityGroup: "admins")
        )
        let open = FirewallRule(
            direction: .inbound,
            ipProtocol: nil,
            ports: nil,
            peer: .cidr(IPAddress("0.0.0.0")!, prefixLength: 0)
        )

        r.apply(model.addRule(fromAdmins, toSecurityGroup: "web"), from: model)
        #expect(r.changedNICs == ["a", "d"], "the NICs carrying web")
        r.apply(model.addRule(open, toSecurityGroup: "db"), from: model)
        #expect(r.changedNICs == ["b", "d"])
        // admins is carried by no NIC; web's rules name its members.
        r.apply(model.addMember(IPAddress("10.9.9.9")!, toSecurityGroup: "admins"), from: model)
        #expect(r.changedNICs == ["a", "d"], "the NICs whose groups' rules name admins")
        r.apply(model.addRule(open, toSecurityGroup: "lonely"), from: model)
        #expect(r.changedNICs.isEmpty, "a group nobody carries or names reaches no NIC")
        // A NIC's own change (its addresses) reaches that NIC only.
        r.apply(try model.updateNIC(id: "c", Model.NICUpdate(ips: [IPAddress("10.0.0.3")!])), from: model)
        #expect(r.changedNICs == ["c"])
        // Once web no longer names admins, admins' members reach nobody.
        r.apply(model.deleteRule(fromAdmins, fromSecurityGroup: "web"), from: model)
        #expect(r.changedNICs == ["a", "d"])
        r.apply(model.addMember(IPAddress("10.9.9.8")!, toSecurityGroup: "admins"), from: model)
        #expect(r.changedNICs.isEmpty)
    }

    /// A rule added to a group reaches its NICs' matchers without compiling the group again
    /// (`RuleMatcher.adding`); whatever the path, every NIC's policy is what compiling its
    /// groups from scratch gives, after every change.
    @Test func policiesAfterAddedRulesEqualACompileFromScratch() throws {
        var r = reconciler()
        var model = Model()
        for (id, groups) in [("a", ["web"]), ("b", ["web", "db"]), ("c", ["db"]), ("d", ["admins"])] {
            var card = nic(id)
            card.securityGroups = groups
            r.apply(try model.addNIC(card), from: model)
        }
        func check(_ step: String) {
            for id in ["a", "b", "c", "d"] {
                let config = r.snapshot.nics[id]!
                let scratch = FirewallPolicy.compile(config, groups: r.snapshot.securityGroups, generation: 0)
                #expect(config.firewall!.describe() == scratch.describe(), "\(step): NIC \(id)")
            }
        }
        var generator = SystemRandomNumberGenerator()
        for step in 0..<120 {
            let group = ["web", "db", "admins"].randomElement(using: &generator)!
            let peer: FirewallRule.Peer =
                Int.random(in: 0..<4, using: &generator) == 0
                ? .members(ofSecurityGroup: ["web", "db", "admins"].randomElement(using: &generator)!)
                : .cidr(
                    IPAddress.v4(UInt32.random(in: 0xC633_6400...0xC633_64FF, using: &generator)),
                    prefixLength: UInt8.random(in: 24...32, using: &generator)
                )
            let port = UInt16.random(in: 1...400, using: &generator)
            let rule = FirewallRule(
                direction: Bool.random(using: &generator) ? .inbound : .outbound,
                ipProtocol: [nil, 6, 17, 1, 132].randomElement(using: &generator)!,
                ports: port...(port + UInt16.random(in: 0...30, using: &generator)),
                peer: peer
            )
            switch Int.random(in: 0..<10, using: &generator) {
            case 0:
                r.apply(
                    model.addMember(
                        IPAddress.v4(UInt32.random(in: 0xCB00_7100...0xCB00_71FF, using: &generator)),
                        toSecurityGroup: group
                    ),
                    from: model
                )
            case 1:
                if let victim = model.securityGroups[group]?.rules.elements.randomElement(using: &generator) {
                    r.apply(model.deleteRule(victim, fromSecurityGroup: group), from: model)
                }
            default:
                r.apply(model.addRule(rule, toSecurityGroup: group), from: model)
            }
            check("step \(step)")
        }
    }

    @Test func oldSnapshotsAreUnaffected() throws {
        var r = reconciler()
        var model = Model()
        r.apply(try model.addNIC(nic("n1")), from: model)
        let old = r.snapshot
        r.apply(model.deleteNIC(id: "n1"), from: model)
        r.apply(try model.addNIC(nic("n2")), from: model)
        #expect(old.version == 1)
        #expect(old.nics["n1"] != nil)
        #expect(old.nics["n2"] == nil)
    }
}
