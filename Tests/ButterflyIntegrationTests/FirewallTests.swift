import Foundation
import Testing

/// The stateful firewall (security groups, COMPAT §7) with real packets between VM namespaces.
///
/// ```
///  ns a ── tap a ──┐                                      ┌── tap b ── ns b
///                  │  butterflyd: a's outbound filter ──► │
///  ns c ── tap c ──┘  switch ──► b's inbound filter ──────┘   each VM runs fw_traffic.py serve:
///                                                            TCP, UDP, SCTP echo on 7000, 7001
/// ```
///
/// A check sends real packets and looks for the answer: "reaches" means the echo came back,
/// "blocked" means nothing came back at all (no reset, no ICMP error). Only the firewall blocks
/// anything here, so until it exists every blocking check fails: these tests specify it.
@Suite(.serialized)
struct FirewallTests {
    let lab: FirewallLab

    init() throws {
        lab = try FirewallLab()
    }

    static let anyIPv4 = "--cidr 0.0.0.0/0"
    static let anyIPv6 = "--cidr ::/0"

    @Test func defaultDenyBlocksEveryProtocolButARPAndNeighbourDiscoveryPass() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2")
        try lab.expect(
            from: a,
            blocked: Probe.every(b.v4) + Probe.every(b.v6!) + [.tcp(b.v4, 7001), .udp(b.v4, 7001), .sctp(b.v4, 7001)],
            "b has no security group"
        )
        try lab.expect(from: b, blocked: Probe.every(a.v4) + [.icmp(a.v6!)], "a has no security group")
        try lab.expectCounter(b, "drop no-rule-inbound", "what b was sent")
        try lab.expectCounter(a, "drop no-rule-inbound", "what a was sent")

        // Address resolution is not IP: it always passes.
        let arp = try lab.exec(a, "arping -c 1 -w 3 -I \(a.name) \(b.v4)")
        #expect(arp.stdout.contains("Unicast reply from \(b.v4)"), "ARP a → b: \(arp)")
        let neighbour = try lab.exec(a, "ip -6 neigh show \(b.v6!) dev \(a.name)")
        #expect(neighbour.stdout.contains("lladdr \(b.mac)"), "a resolved b's IPv6 address: \(neighbour)")
    }

    @Test func fullOpenRuleAndGroupsThatDoNotExistYet() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["open"])
        try lab.expect(from: a, blocked: [.icmp(b.v4), .tcp(b.v4)], "b's group 'open' does not exist: ignored")

        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv4)")
        let everyPort = [Probe.tcp(b.v4, 7001), .udp(b.v4, 7001), .sctp(b.v4, 7001)]
        try lab.expect(
            from: a,
            reaches: Probe.every(b.v4) + everyPort,
            blocked: [.icmp(b.v6!), .tcp(b.v6!)],
            "all protocols from 0.0.0.0/0 (IPv4 only)"
        )
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv6)")
        try lab.expect(from: a, reaches: Probe.every(b.v6!), "all protocols from ::/0")
        try lab.expect(from: b, blocked: [.icmp(a.v4), .tcp(a.v4)], "b's rules open nothing on a")

        // Deleted, the group's id stays on b and is ignored; recreated empty, it opens nothing.
        try lab.cli("sg del open")
        try lab.expect(from: a, blocked: [.icmp(b.v4), .tcp(b.v4), .icmp(b.v6!)], "group deleted")
        try lab.cli("sg rule add open --ip-proto icmp \(Self.anyIPv4)")
        try lab.expect(from: a, reaches: [.icmp(b.v4)], blocked: [.tcp(b.v4)], "group recreated with ICMP only")
    }

    @Test func portRulesOpenOnlyTheirProtocolPortsAndSources() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["g"])
        let c = try lab.vm("c", "198.51.100.3")

        try lab.cli("sg rule add g --ip-proto tcp --port 7000 \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: [.tcp(b.v4)],
            blocked: [.tcp(b.v4, 7001), .udp(b.v4), .udp(b.v4, 7001), .sctp(b.v4), .icmp(b.v4)],
            "TCP 7000 only"
        )
        try lab.cli("sg rule del g --ip-proto tcp --port 7000 \(Self.anyIPv4)")
        try lab.cli("sg rule add g --ip-proto udp --port-start 7000 --port-end 7001 \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: [.udp(b.v4), .udp(b.v4, 7001)],
            blocked: [.tcp(b.v4), .tcp(b.v4, 7001), .sctp(b.v4), .icmp(b.v4)],
            "UDP 7000-7001 only"
        )
        try lab.cli("sg rule del g --ip-proto udp --port-start 7000 --port-end 7001 \(Self.anyIPv4)")
        try lab.cli("sg rule add g --ip-proto sctp --port 7001 \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: [.sctp(b.v4, 7001)],
            blocked: [.sctp(b.v4), .udp(b.v4, 7001), .tcp(b.v4, 7001), .icmp(b.v4)],
            "SCTP 7001 only"
        )
        try lab.cli("sg rule del g --ip-proto sctp --port 7001 \(Self.anyIPv4)")
        try lab.cli("sg rule add g --ip-proto icmp \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: [.icmp(b.v4)],
            blocked: [.tcp(b.v4), .udp(b.v4), .sctp(b.v4), .icmp(b.v6!)],
            "ICMP only (not ICMPv6)"
        )
        try lab.cli("sg rule del g --ip-proto icmp \(Self.anyIPv4)")

        // Sources: numeric protocols, a /32 and a /31.
        try lab.cli("sg rule add g --ip-proto 6 --port 7001 --cidr \(c.v4)/32")
        try lab.cli("sg rule add g --ip-proto 132 --cidr 198.51.100.0/31")
        try lab.expect(from: c, reaches: [.tcp(b.v4, 7001)], blocked: [.tcp(b.v4), .sctp(b.v4)], "TCP 7001 from c")
        try lab.expect(
            from: a,
            reaches: [.sctp(b.v4), .sctp(b.v4, 7001)],
            blocked: [.tcp(b.v4, 7001)],
            "SCTP, every port, from 198.51.100.0/31"
        )
    }

    @Test func memberRulesFollowTheMembership() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["web"])
        let c = try lab.vm("c", "198.51.100.3")
        try lab.cli("sg rule add web --ip-proto tcp --port 7000 --sg-members admins")
        try lab.expect(from: a, blocked: [.tcp(b.v4)], "group admins does not exist")

        try lab.cli("sg member add admins \(a.v4)")
        try lab.expect(from: a, reaches: [.tcp(b.v4)], blocked: [.tcp(b.v4, 7001), .udp(b.v4)], "a is a member")
        try lab.expect(from: c, blocked: [.tcp(b.v4)], "c is not a member")
        try lab.cli("sg member add admins \(c.v4)")
        try lab.expect(from: c, reaches: [.tcp(b.v4)], "c is a member")
        try lab.cli("sg member del admins \(a.v4)")
        try lab.expect(from: a, blocked: [.tcp(b.v4)], "a no longer a member")
        try lab.expect(from: c, reaches: [.tcp(b.v4)], "c still a member")
        try lab.cli("sg member add admins \(a.v6!)")
        try lab.expect(from: a, reaches: [.tcp(b.v6!)], blocked: [.tcp(b.v4)], "a's IPv6 address is a member")

        try lab.cli("sg del admins")
        try lab.expect(from: a, blocked: [.tcp(b.v6!)], "group admins deleted")
        try lab.expect(from: c, blocked: [.tcp(b.v4)], "group admins deleted")
    }

    @Test func rulesOfSeveralGroupsAddUp() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["tcp-in", "udp-in"])
        try lab.cli("sg rule add tcp-in --ip-proto tcp --port 7000 \(Self.anyIPv4)")
        try lab.cli("sg rule add udp-in --ip-proto udp --port 7000 \(Self.anyIPv4)")
        try lab.cli("sg rule add icmp-in --ip-proto icmp \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: [.tcp(b.v4), .udp(b.v4)],
            blocked: [.icmp(b.v4), .sctp(b.v4)],
            "groups tcp-in + udp-in"
        )
        try lab.cli("nic sg add \(b.name) icmp-in")
        try lab.expect(from: a, reaches: [.tcp(b.v4), .udp(b.v4), .icmp(b.v4)], "+ icmp-in")
        try lab.cli("nic sg del \(b.name) tcp-in")
        try lab.expect(from: a, reaches: [.udp(b.v4), .icmp(b.v4)], blocked: [.tcp(b.v4)], "- tcp-in")
        try lab.cli("nic sg set \(b.name) tcp-in")
        try lab.expect(from: a, reaches: [.tcp(b.v4)], blocked: [.udp(b.v4), .icmp(b.v4)], "set to tcp-in")
        try lab.cli("nic update --id \(b.name) --sg udp-in --sg icmp-in")
        try lab.expect(from: a, reaches: [.udp(b.v4), .icmp(b.v4)], blocked: [.tcp(b.v4)], "nic update --sg")
        try lab.cli("nic sg set \(b.name)")
        try lab.expect(from: a, blocked: [.tcp(b.v4), .udp(b.v4), .icmp(b.v4)], "no group left")
    }

    /// `sg_add` of an existing id replaces the whole group, rules and members. The CLI's
    /// `sg add` sends an `sg_add` with the id alone, so on an existing group it empties it.
    @Test func sgAddReplacesTheWholeGroup() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["web"])
        let c = try lab.vm("c", "198.51.100.3")
        try lab.cli("sg rule add web --ip-proto tcp --port 7000 \(Self.anyIPv4)")
        try lab.cli("sg rule add web --ip-proto icmp --sg-members ops")
        try lab.cli("sg member add ops \(a.v4)")
        try lab.expect(from: a, reaches: [.tcp(b.v4), .icmp(b.v4)], blocked: [.udp(b.v4)], "before sg_add")

        let request = lab.scratch.path + "/replace.txt"
        try """
        messages { revision: 0 message_0 { request { sg_add { id: "web"
          rule { direction: INBOUND protocol: 17 port_start: 7000 port_end: 7000 cidr { address: "0.0.0.0" mask_size: 0 } }
          rule { direction: INBOUND protocol: 1 security_group: "ops" } } } } }
        messages { revision: 0 message_0 { request { sg_add { id: "ops" member: "\(c.v4)" } } } }
        """.write(toFile: request, atomically: true, encoding: .utf8)
        try lab.cli(["request", request])
        #expect(try lab.local.daemon.cli("sg rule list web").stdout.split(separator: "\n").count == 2)
        #expect(try lab.local.daemon.cli("sg member list ops").stdout == "\(c.v4)\n")
        try lab.expect(from: a, reaches: [.udp(b.v4)], blocked: [.tcp(b.v4), .icmp(b.v4)], "web and ops replaced")
        try lab.expect(from: c, reaches: [.udp(b.v4), .icmp(b.v4)], blocked: [.tcp(b.v4)], "web and ops replaced")

        try lab.cli("sg add web")
        let rules = try lab.local.daemon.cli("sg rule list web")
        #expect(rules.status == 0 && rules.stdout.isEmpty, "butterfly sg add on an existing group empties it: \(rules)")
        try lab.expect(from: c, blocked: [.udp(b.v4), .icmp(b.v4)], "web replaced by an empty group")
    }

    /// Live changes reach flows already running: a ping stops being answered within a second
    /// of its rule going (deleted by hash, then by options) and resumes when the rule is back,
    /// while a TCP session whose rule stays is never cut.
    @Test func deletingTheRuleStopsARunningPingAtOnceAndReAddingResumesIt() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["ping"])
        let icmp = "--ip-proto icmp \(Self.anyIPv4)"
        try lab.cli("sg rule add ping \(icmp)")
        try lab.cli("sg rule add ping --ip-proto tcp --port 7000 \(Self.anyIPv4)")
        let stop = lab.scratch.path + "/session.stop"
        let session = try lab.start(in: a, ["python3", FirewallLab.tool, "session", b.v4, "7000", "120", stop])
        let ping = try lab.ping(from: a, to: b.v4)
        ping.expectReply(after: Date().timeIntervalSince1970, "rule in place")
        try lab.expectCounter(a, "connections", "a's ping and TCP session are tracked")
        try lab.expectCounter(b, "connections", "b's ping and TCP session are tracked")

        let hash = try lab.ruleHash("ping", matching: ["IP protocol: 1 ", "cidr: 0.0.0.0/0"])
        ping.expectSilence(after: try lab.cli("sg rule del ping \(hash)"), "rule deleted by its hash")
        try lab.expectCounter(b, "drop no-rule-inbound", "echo requests b no longer accepts")
        ping.expectReply(after: try lab.cli("sg rule add ping \(icmp)"), "rule added back")
        ping.expectSilence(after: try lab.cli("sg rule del ping \(icmp)"), "rule deleted by its options")
        ping.expectReply(after: try lab.cli("sg rule add ping \(icmp)"), "rule added back again")

        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        let result = session.finish(timeout: 10)
        let gap = result.stdout.split(separator: " ").last.flatMap { Double($0.trimmingCharacters(in: .newlines)) }
        #expect(result.status == 0 && (gap ?? 99) < 1, "the TCP session (rule kept) was disturbed: \(result)")
    }

    @Test func statefulAccessIsOneWay() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["server"])
        let c = try lab.vm("c", "198.51.100.3", groups: ["open"])
        for proto in ["tcp --port 7000", "udp --port 7000", "sctp --port 7000", "icmp"] {
            try lab.cli("sg rule add server --ip-proto \(proto) --cidr \(a.v4)/32")
        }
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv4)")
        try lab.expect(from: a, reaches: Probe.every(b.v4), "a opens to b; replies come back to a without a rule")
        try lab.expect(from: b, blocked: Probe.every(a.v4), "b cannot open to a")
        try lab.expect(from: c, blocked: Probe.every(b.v4), "c is outside b's rules")

        // b may now only open ICMP toward c: replies of what its rules let in still go out.
        try lab.cli("sg rule add server --dir out --ip-proto icmp --cidr \(c.v4)/32")
        try lab.expect(from: a, reaches: Probe.every(b.v4), "replies of allowed flows pass b's outbound rules")
        try lab.expect(from: b, reaches: [.icmp(c.v4)], blocked: [.tcp(c.v4), .udp(c.v4)], "b's outbound rule")
        try lab.expect(from: b, blocked: [.icmp(a.v4), .tcp(a.v4)], "b still cannot open to a")
    }

    /// `nic firewall` shows the compiled rules; `nic export` (nic_export) the tracked
    /// connections of a live TCP session from both NICs' sides.
    @Test func effectiveRulesAndExportedConnections() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["server"])
        try lab.cli("sg rule add server --ip-proto tcp --port 7000 --cidr \(a.v4)/32")
        try lab.cli("sg rule add server --ip-proto icmp \(Self.anyIPv4)")
        let rules = try lab.local.daemon.cli("nic firewall \(b.name)").stdout
        #expect(rules.contains("allow tcp port 7000 from \(a.v4)/32"), "\(rules)")
        #expect(rules.contains("allow icmp from 0.0.0.0/0"), "\(rules)")
        #expect(rules.contains("outbound: any destination"), "\(rules)")

        // A TCP session a → b held open while both sides are exported.
        let session = try lab.start(in: a, ["sh", "-c", "sleep 20 | socat - TCP:\(b.v4):7000"])
        withExtendedLifetime(session) {}
        var exported = ("", "")
        let seen = waitUntil(timeout: 10) {
            exported = (
                (try? lab.local.daemon.cli("nic export \(a.name)").stdout) ?? "",
                (try? lab.local.daemon.cli("nic export \(b.name)").stdout) ?? ""
            )
            return exported.0.contains("established") && exported.1.contains("established")
        }
        #expect(seen, "no established TCP connection exported: a: \(exported.0) b: \(exported.1)")
        #expect(exported.0.contains("tcp \(a.v4):"), "\(exported.0)")
        #expect(exported.0.contains("<-> \(b.v4):7000 established opened-by guest"), "\(exported.0)")
        #expect(exported.1.contains("tcp \(b.v4):7000 <-> \(a.v4):"), "\(exported.1)")
        #expect(exported.1.contains("established opened-by peer"), "\(exported.1)")
    }

    @Test func outboundRulesRestrictDestinations() throws {
        let a = try lab.vm("a", "198.51.100.1", groups: ["egress"])
        let b = try lab.vm("b", "198.51.100.2", groups: ["open"])
        let c = try lab.vm("c", "198.51.100.3", groups: ["open"])
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv4)")
        try lab.cli("sg rule add egress --ip-proto icmp --cidr \(c.v4)/32")
        try lab.expect(
            from: a,
            reaches: Probe.every(b.v4) + Probe.every(c.v4),
            "no outbound rule: a may reach anything"
        )

        try lab.cli("sg rule add egress --dir out --ip-proto tcp --port 7000 --cidr \(b.v4)/32")
        try lab.cli("sg rule add egress --dir out --ip-proto icmp --cidr \(c.v4)/32")
        try lab.expect(
            from: a,
            reaches: [.tcp(b.v4), .icmp(c.v4)],
            blocked: [.tcp(b.v4, 7001), .udp(b.v4), .icmp(b.v4), .sctp(b.v4), .tcp(c.v4), .udp(c.v4), .sctp(c.v4)],
            "outbound: TCP 7000 to b, ICMP to c"
        )
        try lab.expectCounter(a, "drop not-allowed-outbound", "what a may not send")
        try lab.cli("sg rule add egress --dir out --ip-proto udp --port 7000 --sg-members destinations")
        try lab.cli("sg member add destinations \(c.v4)")
        try lab.expect(
            from: a,
            reaches: [.udp(c.v4)],
            blocked: [.udp(b.v4), .udp(c.v4, 7001)],
            "+ UDP 7000 to members"
        )
        // Outbound rules open nothing inbound: c's ICMP is allowed by an inbound rule, b's is not.
        try lab.expect(from: b, blocked: [.icmp(a.v4), .tcp(a.v4)], "inbound to a")
        try lab.expect(from: c, reaches: [.icmp(a.v4)], "inbound to a")

        try lab.cli("sg add egress")
        try lab.expect(from: a, reaches: Probe.every(b.v4), "egress emptied: a may reach anything again")
    }

    @Test func guestsSendOnlyFromTheirNICsAddressesAndNICUpdateMovesThem() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["open"])
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv4)")
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv6)")
        // The guest gives itself addresses its NIC does not have.
        let other4 = "198.51.100.77"
        let other6 = "2001:db8::77"
        try sh("ip -n \(a.name) addr add \(other4)/24 dev \(a.name)")
        try sh("ip -n \(a.name) addr add \(other6)/64 dev \(a.name) nodad")
        try lab.expect(
            from: a,
            reaches: [.icmp(b.v4, from: a.v4), .tcp(b.v4, from: a.v4), .icmp(b.v6!, from: a.v6!)],
            blocked: [
                .icmp(b.v4, from: other4), .tcp(b.v4, from: other4), .udp(b.v4, from: other4),
                .sctp(b.v4, from: other4), .icmp(b.v6!, from: other6), .tcp(b.v6!, from: other6),
            ],
            "sources a's NIC does not have"
        )
        try lab.expectCounter(a, "drop spoofed-source-ip", "what a sent from foreign addresses")

        try lab.cli("nic update --id \(a.name) --ip \(other4) --ip \(a.v6!)")
        try lab.expect(
            from: a,
            reaches: [.icmp(b.v4, from: other4), .tcp(b.v4, from: other4), .icmp(b.v6!, from: a.v6!)],
            blocked: [.icmp(b.v4, from: a.v4), .tcp(b.v4, from: a.v4), .icmp(b.v6!, from: other6)],
            "nic update --ip moved a's IPv4 address"
        )

        let bare = try lab.vm("n", "198.51.100.4", nicIPs: [])
        try lab.expect(from: bare, blocked: [.icmp(b.v4), .tcp(b.v4), .udp(b.v4)], "a NIC without IP sends only DHCP")
    }

    /// DHCP from a server whose NIC bypasses filtering (busybox udhcpd) to a VM whose NIC has
    /// the address it leases and whose interface has none; the same server on an ordinary NIC
    /// leases nothing. Router advertisements likewise pass only from the bypassing NIC.
    @Test func dhcpAndRouterAdvertisementsOnlyFromABypassingNIC() throws {
        let server = try lab.vm("s", "198.51.100.1", bypass: true)
        let rogue = try lab.vm("r", "198.51.100.3", groups: ["dhcp-server"])
        let client = try lab.vm("d", "198.51.100.50", addressed: false)
        // b lets ICMPv6 in, so what decides about the advertisements is their senders' side.
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["icmpv6-in"])
        try lab.cli("sg rule add dhcp-server --ip-proto udp --port 67 \(Self.anyIPv4)")
        try lab.cli("sg rule add icmpv6-in --ip-proto icmpv6 \(Self.anyIPv6)")

        let rogueServer = try lab.dhcpServer(in: rogue, leasing: "198.51.100.60", to: client)
        let refused = try lab.dhcpClient(client, discoveries: 2)
        let rogueLease = try lab.exec(client, "ip -4 addr show dev \(client.name)").stdout
        #expect(refused.status != 0, "a guest's DHCP server leased an address: \(refused)")
        #expect(!rogueLease.contains("inet "), "a guest's DHCP server leased an address: \(rogueLease)")
        _ = rogueServer.finish(signal: SIGKILL, timeout: 5)
        try sh("ip -n \(client.name) addr flush dev \(client.name) scope global")

        let dhcpServer = try lab.dhcpServer(in: server, leasing: client.v4, to: client)
        let lease = try lab.dhcpClient(client, discoveries: 4)
        #expect(lease.status == 0, "no lease from the bypassing server: \(lease)")
        let addresses = try lab.exec(client, "ip -4 addr show dev \(client.name)").stdout
        #expect(addresses.contains("inet \(client.v4)/24"), "\(addresses)")
        try lab.expect(from: client, reaches: [.icmp(server.v4), .tcp(server.v4)], "from the leased address")
        _ = dhcpServer.finish(signal: SIGKILL, timeout: 5)

        // The guest's advertisement goes first: once the bypassing one arrived, the first one
        // would have been processed too, had it passed.
        #expect(try lab.exec(rogue, "python3 \(FirewallLab.tool) ra \(rogue.name) 2001:db8:77::").status == 0)
        #expect(try lab.exec(server, "python3 \(FirewallLab.tool) ra \(server.name) 2001:db8:78::").status == 0)
        let fromServer = try waitUntil(timeout: 5) {
            try lab.exec(b, "ip -6 addr show dev \(b.name)").stdout.contains("inet6 2001:db8:78:")
        }
        let addresses6 = try lab.exec(b, "ip -6 addr show dev \(b.name)").stdout
        #expect(fromServer, "the bypassing NIC's router advertisement: \(addresses6)")
        #expect(!addresses6.contains("2001:db8:77:"), "a guest's router advertisement got through: \(addresses6)")
    }

    @Test func ipv6RulesICMPv6AndLinkLocal() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", "2001:db8::2", groups: ["v6"])
        try lab.expect(from: a, blocked: [.icmp(b.v6!), .tcp(b.v6!)], "no rule")
        try lab.expectPing(from: a, to: b.linkLocal, answered: false, "link-local, no rule")

        try lab.cli("sg rule add v6 --ip-proto icmpv6 \(Self.anyIPv6)")
        try lab.expect(
            from: a,
            reaches: [.icmp(b.v6!)],
            blocked: [.icmp(b.v4), .tcp(b.v6!), .udp(b.v6!)],
            "ICMPv6 from ::/0"
        )
        try lab.expectPing(from: a, to: b.linkLocal, answered: true, "link-local, ICMPv6 from ::/0")
        try lab.expectPing(from: b, to: a.linkLocal, answered: false, "link-local to a, no rule")

        try lab.cli("sg rule del v6 --ip-proto icmpv6 \(Self.anyIPv6)")
        try lab.cli("sg rule add v6 --ip-proto 58 --cidr \(a.v6!)/128")
        try lab.expect(from: a, reaches: [.icmp(b.v6!)], "ICMPv6 (58) from a's address")
        try lab.expectPing(from: a, to: b.linkLocal, answered: false, "link-local source outside the /128")

        try lab.cli("sg rule add v6 --ip-proto tcp --port 7000 --cidr 2001:db8::/64")
        try lab.cli("sg rule add v6 --ip-proto udp --port 7001 --sg-members v6-peers")
        try lab.cli("sg member add v6-peers \(a.v6!)")
        try lab.cli("sg rule add v6 --ip-proto sctp --port 7000 \(Self.anyIPv6)")
        try lab.expect(
            from: a,
            reaches: [.tcp(b.v6!), .udp(b.v6!, 7001), .sctp(b.v6!)],
            blocked: [.tcp(b.v6!, 7001), .udp(b.v6!), .sctp(b.v6!, 7001), .tcp(b.v4), .udp(b.v4, 7001)],
            "IPv6 port, member and SCTP rules"
        )

        // Duplicate address detection: b's solicitation (from ::) reaches a, a's advertisement
        // comes back, and b gives the address up.
        try sh("ip netns exec \(b.name) sysctl -qw net.ipv6.conf.\(b.name).accept_dad=1")
        try sh("ip -n \(b.name) addr add \(a.v6!)/64 dev \(b.name)")
        let detected = try waitUntil(timeout: 5) {
            try lab.exec(b, "ip -6 addr show dev \(b.name)").stdout.contains("dadfailed")
        }
        #expect(detected, "b did not detect that a owns \(a.v6!)")
    }

    @Test func bypassFilteringReceivesEverythingAndSendsFromAnySource() throws {
        let a = try lab.vm("a", "198.51.100.1", "2001:db8::1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["open"])
        let p = try lab.vm("p", "198.51.100.9", "2001:db8::9", nicIPs: [], bypass: true)
        try lab.cli("sg rule add open --ip-proto all \(Self.anyIPv4)")
        try lab.expect(
            from: a,
            reaches: Probe.every(p.v4) + Probe.every(p.v6!) + [.tcp(p.v4, 7001), .udp(p.v4, 7001)],
            "p has no group and no IP but bypasses filtering"
        )
        let foreign = "198.51.100.99"
        try sh("ip -n \(p.name) addr add \(foreign)/24 dev \(p.name)")
        try lab.expect(
            from: p,
            reaches: [.icmp(b.v4), .tcp(b.v4), .icmp(b.v4, from: foreign), .udp(b.v4, from: foreign)],
            "p sends from any source"
        )
        try lab.expect(from: p, blocked: [.icmp(a.v4), .tcp(a.v4)], "a's own inbound filter still applies")
    }

    @Test func twentyRuleAndMemberCyclesUnderTrafficEndInTheFinalState() throws {
        let a = try lab.vm("a", "198.51.100.1")
        let b = try lab.vm("b", "198.51.100.2", groups: ["churn"])
        let icmp = "--ip-proto icmp \(Self.anyIPv4)"
        try lab.cli("sg rule add churn \(icmp)")
        try lab.cli("sg rule add churn --ip-proto udp --port 7000 --sg-members peers")
        try lab.cli("sg member add peers \(a.v4)")
        try lab.expect(from: a, reaches: [.icmp(b.v4), .udp(b.v4)], blocked: [.tcp(b.v4)], "before the churn")

        let stop = lab.scratch.path + "/stream.stop"
        let stream = try lab.start(in: a, ["python3", FirewallLab.tool, "stream", b.v4, "7000", "120", "500", stop])
        let flood = try lab.start(in: a, ["ping", "-q", "-i", "0.005", "-w", "120", b.v4])
        for _ in 0..<20 {
            try lab.cli("sg rule del churn \(icmp) + sg member del peers \(a.v4) + nic sg del \(b.name) churn")
            try lab.cli("nic sg add \(b.name) churn + sg rule add churn \(icmp) + sg member add peers \(a.v4)")
        }
        try lab.cli("sg rule del churn \(icmp) + sg member del peers \(a.v4)")

        #expect(lab.local.daemon.isRunning)
        #expect(try lab.local.daemon.cli("status").status == 0)
        try lab.expect(from: a, blocked: [.icmp(b.v4), .udp(b.v4), .tcp(b.v4)], "final state: rule and member gone")
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        let streamed = stream.finish(timeout: 10)
        let pinged = flood.finish(signal: SIGINT, timeout: 10)
        #expect(streamed.stdout.hasPrefix("sent ") && !streamed.stdout.hasSuffix(" echoed 0\n"), "\(streamed)")
        #expect(pinged.stdout.contains("packets transmitted"), "\(pinged)")

        try lab.cli("sg rule add churn \(icmp)")
        try lab.expect(from: a, reaches: [.icmp(b.v4)], blocked: [.udp(b.v4)], "ICMP rule back, member still gone")
    }

    @Test func acrossHostsTheReceivingNICsInboundFilterApplies() throws {
        let (hostA, hostB) = try lab.twoHosts()
        let v1 = try lab.vm("v1", "203.0.113.1", on: hostA)
        let v2 = try lab.vm("v2", "203.0.113.2", groups: ["web"], on: hostB)
        try lab.cli("sg rule add web --ip-proto tcp --port 7000 --cidr \(v1.v4)/32", on: hostB)
        try lab.expect(
            from: v1,
            reaches: [.tcp(v2.v4)],
            blocked: [.tcp(v2.v4, 7001), .udp(v2.v4), .sctp(v2.v4), .icmp(v2.v4)],
            "v2's group on host B"
        )
        try lab.expect(from: v2, blocked: [.tcp(v1.v4), .icmp(v1.v4)], "v1 on host A has no group")
        try lab.expectCounter(v2, "drop no-rule-inbound", "what v2 was sent over VXLAN")

        try lab.cli("sg rule add web --ip-proto icmp --cidr 203.0.113.0/24", on: hostB)
        let ping = try lab.ping(from: v1, to: v2.v4)
        ping.expectReply(after: Date().timeIntervalSince1970, "ICMP rule on host B")
        let hash = try lab.ruleHash("web", matching: ["IP protocol: 1 "], on: hostB)
        ping.expectSilence(after: try lab.cli("sg rule del web \(hash)", on: hostB), "ICMP rule deleted")
    }
}

/// One probe of tests/tools/fw_traffic.py: an echo over TCP, UDP or SCTP to a port, or an
/// ICMP/ICMPv6 echo, optionally from a chosen source address.
struct Probe: CustomStringConvertible {
    enum Kind: String {
        case tcp, udp, sctp, icmp
    }

    let kind: Kind
    let address: String
    var port = 0
    var source: String?

    static func tcp(_ address: String, _ port: Int = 7000, from source: String? = nil) -> Probe {
        Probe(kind: .tcp, address: address, port: port, source: source)
    }

    static func udp(_ address: String, _ port: Int = 7000, from source: String? = nil) -> Probe {
        Probe(kind: .udp, address: address, port: port, source: source)
    }

    static func sctp(_ address: String, _ port: Int = 7000, from source: String? = nil) -> Probe {
        Probe(kind: .sctp, address: address, port: port, source: source)
    }

    static func icmp(_ address: String, from source: String? = nil) -> Probe {
        Probe(kind: .icmp, address: address, source: source)
    }

    /// TCP, UDP and SCTP to port 7000, and an ICMP echo.
    static func every(_ address: String) -> [Probe] {
        [.tcp(address), .udp(address), .sctp(address), .icmp(address)]
    }

    func target(timeout: Double) -> String {
        "\(kind),\(address),\(port),\(timeout)" + (source.map { ",\($0)" } ?? "")
    }

    var description: String {
        (kind == .icmp ? "icmp \(address)" : "\(kind) \(address) port \(port)") + (source.map { " from \($0)" } ?? "")
    }
}

/// A firewall test bench: a daemon (two more for the cross-host case) whose TAP NICs are moved
/// into VM namespaces, each VM running the echo server of tests/tools/fw_traffic.py, and the
/// checks the tests share. Every process it starts is stopped by its pid, and its namespaces
/// deleted, when it goes.
final class FirewallLab {
    /// A daemon, inside a host namespace or (`namespace` nil) in the test's own.
    struct Host {
        let daemon: Daemon
        let namespace: String?
    }

    /// A VM: namespace `name` holding the tap of NIC `name`, with its addresses.
    struct VM {
        let name: String
        let label: String
        let host: Host
        let mac: String
        let v4: String
        let v6: String?

        /// The link-local address the kernel derives from the MAC (EUI-64).
        var linkLocal: String {
            var bytes = mac.split(separator: ":").map { UInt8($0, radix: 16)! }
            bytes[0] ^= 0x02
            bytes.insert(contentsOf: [0xff, 0xfe], at: 3)
            let groups = stride(from: 0, to: 8, by: 2).map {
                String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16)
            }
            return "fe80::" + groups.joined(separator: ":")
        }
    }

    static let tool = VXLANTests.tools + "/fw_traffic.py"
    /// A probe that must be answered gets this long; answers here take well under a millisecond.
    static let reachWait = 3.0
    /// How long a probe that must be blocked listens for an answer.
    static let blockedWait = 1.0

    let namespaces = Namespaces()
    let scratch = TemporaryDirectory()
    let local: Host
    private var macCounter = 0
    private var processes: [LabProcess] = []

    init() throws {
        local = Host(daemon: try Daemon(), namespace: nil)
    }

    deinit {
        // Processes inside the namespaces go first.
        processes.removeAll()
    }

    /// Runs `butterfly LINE` against `host` (the local daemon by default), failing the test
    /// when it fails; returns the time it returned (Unix seconds).
    @discardableResult
    func cli(_ line: String, on host: Host? = nil) throws -> TimeInterval {
        try cli(line.split(separator: " ").map(String.init), on: host)
    }

    @discardableResult
    func cli(_ arguments: [String], on host: Host? = nil) throws -> TimeInterval {
        let result = try (host ?? local).daemon.cli(arguments)
        guard result.status == 0 else {
            throw HarnessError("butterfly \(arguments.joined(separator: " ")) failed: \(result)")
        }
        return Date().timeIntervalSince1970
    }

    /// Two hosts `<prefix>ha` and `<prefix>hb` joined by an underlay veth, each with a daemon
    /// owning its end (VTEPs 198.51.100.1 and .2).
    func twoHosts() throws -> (Host, Host) {
        var hosts: [Host] = []
        let underlay = ["ua", "ub"].map { namespaces.prefix + $0 }
        let names = try ["ha", "hb"].map { try namespaces.add($0) }
        try sh("ip link add \(underlay[0]) netns \(names[0]) type veth peer name \(underlay[1]) netns \(names[1])")
        for index in 0..<2 {
            try sh("ip -n \(names[index]) link set \(underlay[index]) up")
            let daemon = try Daemon(
                extraArguments: ["-i", "198.51.100.\(index + 1)/24", "--underlay-if", underlay[index]],
                namespace: names[index]
            )
            hosts.append(Host(daemon: daemon, namespace: names[index]))
        }
        return (hosts[0], hosts[1])
    }

    /// Adds TAP NIC `<prefix><label>` (VNI 77; IPs `nicIPs`, by default the VM's addresses;
    /// security groups `groups`) on `host`, moves it into its own namespace, gives the
    /// interface the addresses (unless `addressed` is false) and starts the echo server there.
    @discardableResult
    func vm(
        _ label: String,
        _ v4: String,
        _ v6: String? = nil,
        groups: [String] = [],
        nicIPs: [String]? = nil,
        bypass: Bool = false,
        addressed: Bool = true,
        on host: Host? = nil
    ) throws -> VM {
        let host = host ?? local
        let name = namespaces.prefix + label
        macCounter += 1
        let mac = String(format: "52:54:00:f0:00:%02x", macCounter)
        var line = "nic add --id \(name) --mac \(mac) --vni 77 --type TAP"
        for ip in nicIPs ?? [v4] + [v6].compactMap({ $0 }) { line += " --ip \(ip)" }
        for group in groups { line += " --sg \(group)" }
        if bypass { line += " --bypass-filtering" }
        try cli(line, on: host)
        try namespaces.add(label)
        // Without duplicate address detection, link-local and autoconfigured addresses are
        // usable at once. Set before the tap arrives: a moved interface takes the defaults.
        try sh("ip netns exec \(name) sysctl -qw net.ipv6.conf.default.accept_dad=0")
        try sh("ip \(host.namespace.map { "-n \($0) " } ?? "")link set \(name) netns \(name)")
        try sh("ip -n \(name) link set \(name) up")
        if addressed {
            try sh("ip -n \(name) addr add \(v4)/24 dev \(name)")
            if let v6 { try sh("ip -n \(name) addr add \(v6)/64 dev \(name) nodad") }
        }
        let vm = VM(name: name, label: label, host: host, mac: mac, v4: v4, v6: v6)
        let ready = scratch.path + "/\(label).ready"
        let ports = ["tcp", "udp", "sctp"].flatMap { proto in ["7000", "7001"].map { "\(proto):\($0)" } }
        let server = try start(in: vm, ["python3", Self.tool, "serve", ready, "600"] + ports)
        guard waitUntil(timeout: 10, { FileManager.default.fileExists(atPath: ready) }) else {
            throw HarnessError("echo server in \(name) not ready: \(server.finish(timeout: 1))")
        }
        return vm
    }

    /// Starts `arguments` inside `vm`'s namespace; it is killed by its pid when the lab goes.
    func start(in vm: VM, _ arguments: [String]) throws -> LabProcess {
        let process = LabProcess(try ChildProcess("/usr/sbin/ip", ["netns", "exec", vm.name] + arguments))
        processes.append(process)
        return process
    }

    func exec(_ vm: VM, _ command: String, timeout: TimeInterval = 30) throws -> ProcessResult {
        try namespaces.exec(vm.name, command, timeout: timeout)
    }

    /// Sends every probe from `vm` at once and expects an echo back for each of `reaches`
    /// and no answer at all for each of `blocked`; each mismatch is an issue naming `step`.
    func expect(
        from vm: VM,
        reaches: [Probe] = [],
        blocked: [Probe] = [],
        _ step: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let probes = reaches.map { ($0, true) } + blocked.map { ($0, false) }
        let targets = probes.map { $0.0.target(timeout: $0.1 ? Self.reachWait : Self.blockedWait) }
        let result = try exec(vm, "python3 \(Self.tool) probe \(targets.joined(separator: " "))")
        let lines = result.stdout.split(separator: "\n")
        guard result.status == 0, lines.count == probes.count else {
            Issue.record("\(step): the probes from \(vm.label) did not run: \(result)", sourceLocation: sourceLocation)
            return
        }
        for ((probe, shouldReach), line) in zip(probes, lines) {
            let outcome = line.split(separator: " ").last.map(String.init) ?? ""
            if shouldReach {
                #expect(
                    outcome == "ok",
                    "\(step): \(vm.label) → \(probe) must be answered, got \(outcome)",
                    sourceLocation: sourceLocation
                )
            } else {
                #expect(
                    outcome == "blocked",
                    "\(step): \(vm.label) → \(probe) must get no answer, got \(outcome)",
                    sourceLocation: sourceLocation
                )
            }
        }
    }

    /// Runs `ping` from `vm` (a link-local `address` goes out of `vm`'s interface) and expects
    /// each of 3 echoes answered or, when `answered` is false, none of 2.
    func expectPing(
        from vm: VM,
        to address: String,
        answered: Bool,
        _ step: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let family = address.contains(":") ? "-6" : "-4"
        let target = address.hasPrefix("fe80:") ? "\(address)%\(vm.name)" : address
        if answered {
            let result = try exec(vm, "ping \(family) -n -c 3 -i 0.2 -W 1 \(target)")
            #expect(
                result.status == 0 && result.stdout.contains(" 0% packet loss"),
                "\(step): ping \(vm.label) → \(target) must be answered: \(result)",
                sourceLocation: sourceLocation
            )
        } else {
            let result = try exec(vm, "ping \(family) -n -c 2 -i 0.2 -W 1 \(target)")
            #expect(
                result.stdout.contains(" 0 received"),
                "\(step): ping \(vm.label) → \(target) must get no answer: \(result)",
                sourceLocation: sourceLocation
            )
        }
    }

    /// Expects `name` (`drop <reason>`, `connections`) of `nic stats VM --all` to reach
    /// `minimum` within 2 s.
    func expectCounter(
        _ vm: VM,
        _ name: String,
        atLeast minimum: Int = 1,
        _ step: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        var counters: [String: Int] = [:]
        let reached = try waitUntil(timeout: 2) {
            counters = try nicCounters(vm.host.daemon, vm.name)
            return counters[name] ?? 0 >= minimum
        }
        #expect(
            reached,
            "\(step): \(vm.label) must count \(name) ≥ \(minimum); nic stats --all: \(counters)",
            sourceLocation: sourceLocation
        )
    }

    /// The hash `sg rule list GROUP` prints for the one rule whose line holds every fragment.
    func ruleHash(_ group: String, matching fragments: [String], on host: Host? = nil) throws -> String {
        let list = try (host ?? local).daemon.cli("sg rule list \(group)")
        let lines = list.stdout.split(separator: "\n").filter { line in fragments.allSatisfy { line.contains($0) } }
        guard lines.count == 1, let hash = lines[0].split(separator: " ").first else {
            throw HarnessError("no single rule of \(group) matches \(fragments): \(list)")
        }
        return String(hash)
    }

    /// `ping -D` every 100 ms from `vm` to `address`, in the background.
    func ping(from vm: VM, to address: String) throws -> RunningPing {
        let output = scratch.path + "/ping-\(vm.label)-\(address).txt"
        let command = "exec ping -D -n -i 0.1 -w 120 \(address) > \(output) 2>&1"
        return RunningPing(process: try start(in: vm, ["sh", "-c", command]), output: output)
    }

    /// busybox udhcpd on `vm`'s interface, leasing `address` to `client`'s MAC; ready when
    /// it listens on UDP 67.
    func dhcpServer(in vm: VM, leasing address: String, to client: VM) throws -> LabProcess {
        let base = scratch.path + "/udhcpd-\(vm.label)"
        _ = FileManager.default.createFile(atPath: base + ".leases", contents: nil)
        try """
        interface \(vm.name)
        start \(address)
        end \(address)
        static_lease \(client.mac) \(address)
        lease_file \(base).leases
        pidfile \(base).pid
        option subnet 255.255.255.0
        option lease 600

        """.write(toFile: base + ".conf", atomically: true, encoding: .utf8)
        let server = try start(in: vm, ["busybox", "udhcpd", "-f", base + ".conf"])
        guard try waitUntil(timeout: 5, { try exec(vm, "ss -Hlun sport = :67").stdout.contains(":67") }) else {
            throw HarnessError("udhcpd in \(vm.name) does not listen: \(server.finish(timeout: 1))")
        }
        return server
    }

    /// busybox udhcpc on `vm`'s interface: up to `discoveries` discoveries a second apart; on a
    /// lease, its script puts the address on the interface. Exit status 0 = leased.
    func dhcpClient(_ vm: VM, discoveries: Int) throws -> ProcessResult {
        let script = scratch.path + "/udhcpc.script"
        try """
        #!/bin/sh
        # udhcpc passes the lease in the environment.
        [ "$1" = bound ] && ip addr add "$ip/${mask:-24}" dev "$interface"
        exit 0

        """.write(toFile: script, atomically: true, encoding: .utf8)
        try sh("chmod 755 \(script)")
        return try exec(vm, "busybox udhcpc -f -q -n -i \(vm.name) -t \(discoveries) -T 1 -s \(script)")
    }
}

/// A process the lab started; killed by its pid when released if it still runs.
final class LabProcess {
    let process: ChildProcess

    init(_ process: ChildProcess) {
        self.process = process
    }

    /// Sends `signal` (unless the process already exited), waits for the exit and returns
    /// what it printed.
    func finish(signal: Int32? = nil, timeout: TimeInterval) -> ProcessResult {
        if let signal, process.isRunning { kill(process.pid, signal) }
        let status = process.wait(timeout: timeout)
        return ProcessResult(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    deinit {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            process.wait(timeout: 5)
        }
    }
}

/// A background `ping -D`: ping stamps each reply with its arrival time, so a test can tell
/// when replies stopped or came back.
final class RunningPing {
    let process: LabProcess
    let output: String

    init(process: LabProcess, output: String) {
        self.process = process
        self.output = output
    }

    /// Arrival times (Unix seconds) of the replies so far.
    func replies() -> [TimeInterval] {
        guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("["), line.contains(" bytes from "), let end = line.firstIndex(of: "]") else {
                return nil
            }
            return TimeInterval(line[line.index(after: line.startIndex)..<end])
        }
    }

    /// Expects a reply that arrived after `time` within 3 s.
    func expectReply(after time: TimeInterval, _ step: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let answered = waitUntil(timeout: 3) { replies().contains { $0 > time } }
        #expect(answered, "\(step): the running ping got no reply within 3 s", sourceLocation: sourceLocation)
    }

    /// Expects no reply later than a second after `time`, watching until 1.8 s after it.
    func expectSilence(after time: TimeInterval, _ step: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var late: [TimeInterval] = []
        _ = waitUntil(timeout: time + 1.8 - Date().timeIntervalSince1970) {
            late = replies().filter { $0 > time + 1 }
            return !late.isEmpty
        }
        #expect(
            late.isEmpty,
            "\(step): the running ping was still answered more than 1 s after the change",
            sourceLocation: sourceLocation
        )
    }
}
