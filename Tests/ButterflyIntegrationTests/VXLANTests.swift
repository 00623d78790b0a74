import Foundation
import Testing

/// Hosts as network namespaces, each running its own butterflyd on an underlay veth it owns,
/// VMs as namespaces holding the daemons' taps: VXLAN across hosts, VNI isolation, IPv6
/// underlay, routed underlay with head-end replication, and the wire format seen by tcpdump.
@Suite(.serialized)
struct VXLANTests {
    let namespaces = Namespaces()

    /// A host namespace with a daemon whose underlay is `interface` at `vtep`.
    struct Host {
        let name: String
        let daemon: Daemon
    }

    func host(_ suffix: String, interface: String, vtep: String, extra: [String] = []) throws -> Host {
        let name = namespaces.prefix + suffix
        let daemon = try Daemon(
            extraArguments: ["-i", vtep, "--underlay-if", interface] + extra,
            namespace: name
        )
        try createOpenGroup(on: daemon)
        return Host(name: name, daemon: daemon)
    }

    /// A VM: a TAP NIC on `host` owning the given addresses (anti-spoofing locks a guest's
    /// source addresses to its NIC's), moved into its own namespace.
    @discardableResult
    func vm(_ suffix: String, on host: Host, mac: String, vni: Int, ipv4: String, ipv6: String? = nil) throws -> String
    {
        let name = namespaces.prefix + suffix
        let add = try host.daemon.cli(
            "nic add --id \(name) --mac \(mac) --vni \(vni) --type TAP" + filteredNICArguments(ipv4: ipv4, ipv6: ipv6)
        )
        try #require(add.status == 0, "\(add)")
        try namespaces.add(suffix)
        try sh("ip -n \(host.name) link set \(name) netns \(name)")
        try sh("ip -n \(name) link set \(name) up")
        try sh("ip -n \(name) addr add \(ipv4) dev \(name)")
        if let ipv6 { try sh("ip -n \(name) addr add \(ipv6) dev \(name) nodad") }
        return name
    }

    /// Two hosts joined by a veth pair `<prefix>ua` ↔ `<prefix>ub` (`twoHostDaemons`).
    func twoHosts(
        vtepA: String,
        vtepB: String,
        extra: [String] = [],
        extraA: [String] = [],
        underlayMTU: Int? = nil
    ) throws -> (Host, Host) {
        let (a, b) = try twoHostDaemons(
            namespaces,
            underlayMTU: underlayMTU,
            vtepA: vtepA,
            vtepB: vtepB,
            extra: extra,
            extraA: extraA
        )
        return (Host(name: namespaces.prefix + "ha", daemon: a), Host(name: namespaces.prefix + "hb", daemon: b))
    }

    @Test func twoHostsOneVNIPingTCPUDPBothWays() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        let vm1 = try vm(
            "v1",
            on: hostA,
            mac: "52:54:00:10:00:01",
            vni: 100,
            ipv4: "203.0.113.1/24",
            ipv6: "2001:db8:100::1/64"
        )
        let vm2 = try vm(
            "v2",
            on: hostB,
            mac: "52:54:00:10:00:02",
            vni: 100,
            ipv4: "203.0.113.2/24",
            ipv6: "2001:db8:100::2/64"
        )
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2", count: 5))
        #expect(try namespaces.pings(from: vm2, to: "203.0.113.1"))
        #expect(try namespaces.pings(from: vm1, to: "2001:db8:100::2"))
        #expect(try namespaces.pings(from: vm2, to: "2001:db8:100::1"))

        let tcpServer = try namespaces.echoServer(in: vm2, "TCP-LISTEN:7100,reuseaddr")
        let echo = try namespaces.exec(
            vm1,
            "head -c 200000 /dev/zero | tr '\\\\0' x | socat -T 5 - TCP:203.0.113.2:7100 | wc -c"
        )
        #expect(echo.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "200000", "\(echo)")
        let udpServer = try namespaces.echoServer(in: vm1, "UDP-RECVFROM:7101")
        let reply = try namespaces.exec(vm2, "echo butterfly-udp | socat -T 3 - UDP:203.0.113.1:7101")
        #expect(reply.stdout == "butterfly-udp\n", "\(reply)")
        withExtendedLifetime((tcpServer, udpServer)) {}
    }

    @Test func fourVMsTwoVNIsOnlySameVNIReach() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        let red1 = try vm("r1", on: hostA, mac: "52:54:00:20:00:01", vni: 200, ipv4: "203.0.113.1/24")
        let blue1 = try vm("b1", on: hostA, mac: "52:54:00:20:00:02", vni: 201, ipv4: "203.0.113.2/24")
        let red2 = try vm("r2", on: hostB, mac: "52:54:00:20:00:03", vni: 200, ipv4: "203.0.113.3/24")
        let blue2 = try vm("b2", on: hostB, mac: "52:54:00:20:00:04", vni: 201, ipv4: "203.0.113.4/24")
        #expect(try namespaces.pings(from: red1, to: "203.0.113.3"))
        #expect(try namespaces.pings(from: blue2, to: "203.0.113.2"))
        #expect(try namespaces.isolated(from: red1, to: "203.0.113.4"))
        #expect(try namespaces.isolated(from: red2, to: "203.0.113.2"))
        #expect(try namespaces.isolated(from: blue1, to: "203.0.113.1"))
        // Broadcasts: an ARP request from red1 reaches red2 only.
        let arp = try namespaces.exec(red1, "arping -c 2 -w 3 -I \(red1) 203.0.113.4")
        #expect(!arp.stdout.contains("Unicast reply"), "\(arp)")
        _ = blue1
    }

    @Test func ipv6Underlay() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "2001:db8:ff::1/64", vtepB: "2001:db8:ff::2/64")
        let vm1 = try vm("v1", on: hostA, mac: "52:54:00:30:00:01", vni: 300, ipv4: "203.0.113.1/24")
        let vm2 = try vm("v2", on: hostB, mac: "52:54:00:30:00:02", vni: 300, ipv4: "203.0.113.2/24")
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2", count: 5))
        #expect(try namespaces.pings(from: vm2, to: "203.0.113.1"))
        // Bulk TCP: USO super-frames over IPv6 (the receiving daemon computes each datagram's
        // UDP checksum, mandatory over IPv6); every byte must arrive.
        try transferIntact(from: vm1, to: vm2, address: "203.0.113.2", bytes: 20_000_000)
    }

    /// Moves `bytes` pseudo-random bytes over one TCP connection from `sender` to `address`
    /// in `receiver` (tests/tools/tcp_transfer.py) and expects both ends to report the same
    /// byte count and SHA-256.
    func transferIntact(from sender: String, to receiver: String, address: String, bytes: Int) throws {
        try requireTool("python3")
        let server = try ChildProcess(
            "/usr/sbin/ip",
            ["netns", "exec", receiver, "python3", "\(Self.tools)/tcp_transfer.py", "receive", address, "7500"]
        )
        usleep(500_000)
        let client = try namespaces.exec(
            sender,
            "python3 \(Self.tools)/tcp_transfer.py send \(address) 7500 \(bytes)",
            timeout: 60
        )
        #expect(server.wait(timeout: 30) == 0)
        let sent = client.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let received = server.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last
            .map(String.init)
        #expect(sent.hasPrefix("\(bytes) "), "\(client)")
        #expect(received == sent, "\(sender) → \(address): sent \(sent), received \(received ?? "nothing")")
    }

    @Test func wireFormatIsVXLAN() throws {
        let traces = TemporaryDirectory()
        let (hostA, hostB) = try twoHosts(
            vtepA: "198.51.100.1/24",
            vtepB: "198.51.100.2/24",
            extraA: ["-t", "--trace-path", traces.path]
        )
        let vm1 = try vm("v1", on: hostA, mac: "52:54:00:40:00:01", vni: 4242, ipv4: "203.0.113.1/24")
        _ = try vm("v2", on: hostB, mac: "52:54:00:40:00:02", vni: 4242, ipv4: "203.0.113.2/24")
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2"))
        // Unicast to host B only: the VMs' own IPv6 chatter (MLD reports at link-up) goes to
        // the VNI's multicast group and, under load, used to fill the capture's four packets
        // before the pings did.
        try requireTool("tcpdump")
        let capture = try ChildProcess(
            "/usr/sbin/ip",
            [
                "netns", "exec", hostB.name, "tcpdump", "-n", "-c", "4", "-i", namespaces.prefix + "ub",
                "udp port 4789 and dst host 198.51.100.2",
            ]
        )
        usleep(800_000)
        _ = try namespaces.exec(vm1, "ping -c 4 -i 0.2 -W 1 203.0.113.2")
        #expect(capture.wait(timeout: 10) == 0)
        let text = capture.stdout
        #expect(text.contains("198.51.100.1."), "\(text)")
        #expect(text.contains("> 198.51.100.2.4789: VXLAN"), "\(text)")
        #expect(text.contains("vni 4242"), "\(text)")
        #expect(text.contains("203.0.113.1 > 203.0.113.2: ICMP echo request"), "\(text)")

        // Host A's main trace (-t) holds the underlay traffic, readable by tcpdump.
        let main = "\(traces.path)/butterfly-\(hostA.daemon.child.pid)-main.pcap"
        let read = try runProcess("/usr/bin/tcpdump", ["-n", "-r", main])
        #expect(read.stdout.contains("VXLAN, flags [I] (0x08), vni 4242"), "\(read)")
    }

    @Test func threeHostsOnOneSegmentAnyToAny() throws {
        let bridge = try namespaces.add("sw")
        try sh("ip -n \(bridge) link add br0 type bridge")
        try sh("ip -n \(bridge) link set br0 type bridge mcast_snooping 0")
        try sh("ip -n \(bridge) link set br0 up")
        var hosts: [Host] = []
        var vms: [String] = []
        for index in 1...3 {
            let name = try namespaces.add("h\(index)")
            let inside = namespaces.prefix + "u\(index)"
            let outside = namespaces.prefix + "s\(index)"
            try sh("ip link add \(inside) netns \(name) type veth peer name \(outside) netns \(bridge)")
            try sh("ip -n \(bridge) link set \(outside) master br0 up")
            try sh("ip -n \(name) link set \(inside) up")
            let host = try self.host("h\(index)", interface: inside, vtep: "198.51.100.\(index)/24")
            hosts.append(host)
            vms.append(
                try vm("v\(index)", on: host, mac: "52:54:00:50:00:0\(index)", vni: 500, ipv4: "203.0.113.\(index)/24")
            )
        }
        for from in 0..<3 {
            for to in 0..<3 where to != from {
                #expect(
                    try namespaces.pings(from: vms[from], to: "203.0.113.\(to + 1)", count: 2),
                    "vm\(from + 1) → vm\(to + 1)"
                )
            }
        }
    }

    @Test func routedUnderlayWithHeadEndReplication() throws {
        let router = try namespaces.add("rt")
        try sh("ip netns exec \(router) sysctl -q -w net.ipv4.ip_forward=1")
        var hosts: [Host] = []
        let subnets = [
            ("198.51.100.1", "198.51.100.126", "198.51.100.3"), ("198.51.100.129", "198.51.100.254", "198.51.100.130"),
        ]
        for (index, subnet) in subnets.enumerated() {
            let name = try namespaces.add("h\(index)")
            let inside = namespaces.prefix + "u\(index)"
            let outside = namespaces.prefix + "r\(index)"
            try sh("ip link add \(inside) netns \(name) type veth peer name \(outside) netns \(router)")
            try sh("ip -n \(router) addr add \(subnet.1)/25 dev \(outside)")
            try sh("ip -n \(router) link set \(outside) up")
            try sh("ip -n \(name) link set \(inside) up")
            _ = subnet.2
            hosts.append(
                try self.host(
                    "h\(index)",
                    interface: inside,
                    vtep: "\(subnet.0)/25",
                    extra: ["--underlay-gw", subnet.1, "--vtep-peer", subnets[1 - index].0]
                )
            )
        }
        let vm1 = try vm("v1", on: hosts[0], mac: "52:54:00:60:00:01", vni: 600, ipv4: "203.0.113.1/24")
        let vm2 = try vm("v2", on: hosts[1], mac: "52:54:00:60:00:02", vni: 600, ipv4: "203.0.113.2/24")
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2", count: 5))
        #expect(try namespaces.pings(from: vm2, to: "203.0.113.1"))
    }

    @Test func badUnderlayFramesAreDroppedAndCountedNeverDelivered() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        let vm1 = try vm("v1", on: hostA, mac: "52:54:00:70:00:01", vni: 700, ipv4: "203.0.113.1/24")
        let vm2 = try vm("v2", on: hostB, mac: "52:54:00:70:00:02", vni: 700, ipv4: "203.0.113.2/24")
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2"))
        let link = try sh("ip -n \(hostB.name) -o link show \(namespaces.prefix)ub").stdout
        let mac = try #require(link.range(of: "link/ether ").map { String(link[$0.upperBound...].prefix(17)) })
        // Watch VM 2's side: none of the hostile frames' inner broadcast may reach it.
        try requireTool("tcpdump")
        let capture = try ChildProcess(
            "/usr/sbin/ip",
            [
                "netns", "exec", vm2, "timeout", "-s", "KILL", "3", "tcpdump", "-n", "-c", "1", "-i", vm2,
                "ether src 02:00:00:00:00:01",
            ]
        )
        usleep(500_000)
        // Seeing nothing proves something only if tcpdump is watching.
        guard capture.isRunning else { throw HarnessError("tcpdump in \(vm2) did not start: \(capture.stderr)") }
        func underlayDrops() throws -> [String: Int] {
            var drops: [String: Int] = [:]
            let status = try hostB.daemon.cli("status").stdout
            for piece in status.components(separatedBy: "\\ndrop ").dropFirst() {
                let fields = piece.split(separator: ":", maxSplits: 1)
                let count =
                    fields.count == 2
                    ? Int(fields[1].prefix { $0 == " " || $0.isNumber }.trimmingCharacters(in: .whitespaces)) : nil
                if let count { drops[String(fields[0])] = count }
            }
            return drops
        }
        let before = try underlayDrops()
        let sent = try namespaces.exec(
            hostA.name,
            "python3 \(Self.tools)/hostile_underlay.py \(namespaces.prefix)ua \(mac) 198.51.100.1 198.51.100.2 700"
        )
        #expect(sent.status == 0, "\(sent)")
        // A frame longer than any packet buffer (the link's MTU raised for it): refused by the
        // port itself, counted as port-receive within a second.
        try sh("ip -n \(hostA.name) link set \(namespaces.prefix)ua mtu 12000")
        try sh("ip -n \(hostB.name) link set \(namespaces.prefix)ub mtu 12000")
        let jumbo =
            "\(mac.replacingOccurrences(of: ":", with: ""))020000000001" + "0800"
            + String(repeating: "45", count: 11000)
        let big = try namespaces.exec(hostA.name, "python3 \(Self.tools)/send_frame.py \(namespaces.prefix)ua \(jumbo)")
        #expect(big.status == 0, "\(big)")
        // Port counters are published once a second: wait for them (deadline), not a fixed time.
        var after = try underlayDrops()
        _ = try waitUntil(timeout: 5) {
            after = try underlayDrops()
            return (after["port-receive"] ?? 0) - (before["port-receive"] ?? 0) >= 2
                && (after["bad-vxlan-flags"] ?? 0) - (before["bad-vxlan-flags"] ?? 0) >= 101
        }
        // At least the hostile frames (the link's own IPv6 chatter may add to not-vxlan).
        for (reason, count) in [
            // A super-frame of 100 bad datagrams is cut into 100 drops; one with a bad outer
            // IPv4 header checksum, and the jumbo frame, are refused by the port.
            ("truncated", 2), ("bad-vxlan-flags", 101), ("unknown-vni", 1), ("ip-options-or-fragment", 2),
            ("not-for-this-vtep", 1), ("not-vxlan", 3), ("port-receive", 2),
        ] {
            #expect((after[reason] ?? 0) - (before[reason] ?? 0) >= count, "\(reason): \(before) → \(after)")
        }
        capture.wait(timeout: 10)
        #expect(!capture.stdout.contains("02:00:00:00:00:01"), "\(capture.stdout)")
        // The daemon keeps serving and forwarding.
        #expect(hostB.daemon.isRunning)
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2"))
    }

    /// Bulk TCP with the taps' offloads on (docs/OFFLOADS.md): the guests hand over and receive
    /// super-frames, the daemons cut and merge them. Every byte must arrive intact, across
    /// hosts (IPv4 and IPv6 inside) and between two VMs of one host; and the offloads must
    /// really be in use: far fewer frames cross each tap than MTU-sized segments.
    /// Found as a new user: on an underlay of MTU 2000 or 9000 the taps got MTU 1950 or 8950,
    /// every frame over a packet buffer (~1,856 bytes) was dropped, and bulk TCP stalled. Jumbo
    /// frames now travel in large packet buffers (docs/JUMBO.md): guests get the underlay's MTU
    /// less VXLAN's 50 bytes, a full-size datagram crosses unfragmented both ways, and bulk TCP
    /// keeps every byte. An underlay allowing more than 9,000 (16,000 here) gives 9,000, with a
    /// warning.
    @Test(arguments: [2000, 9000, 16000]) func aJumboUnderlayGivesGuestsAnMTUTheDaemonCarries(underlayMTU: Int) throws {
        let (hostA, hostB) = try twoHosts(
            vtepA: "198.51.100.1/24",
            vtepB: "198.51.100.2/24",
            underlayMTU: underlayMTU
        )
        let mtu = min(underlayMTU - 50, 9000)
        let vm1 = try vm("v1", on: hostA, mac: "52:54:00:51:00:01", vni: 510, ipv4: "203.0.113.1/24")
        let vm2 = try vm("v2", on: hostB, mac: "52:54:00:51:00:02", vni: 510, ipv4: "203.0.113.2/24")
        for vm in [vm1, vm2] {
            let link = try namespaces.exec(vm, "cat /sys/class/net/\(vm)/mtu").stdout
            #expect(link.trimmingCharacters(in: .whitespacesAndNewlines) == "\(mtu)", "\(vm): MTU \(link)")
        }
        // The largest datagram the MTU allows, DF set, both ways (ping -M do fails rather than
        // fragment).
        for (from, to) in [(vm1, "203.0.113.2"), (vm2, "203.0.113.1")] {
            let ping = try namespaces.exec(from, "ping -c 2 -W 2 -M do -s \(mtu - 28) \(to)")
            #expect(ping.status == 0 && ping.stdout.contains("\(mtu - 20) bytes from"), "\(ping)")
        }
        try transferIntact(from: vm1, to: vm2, address: "203.0.113.2", bytes: 10_000_000)
        try transferIntact(from: vm2, to: vm1, address: "203.0.113.1", bytes: 10_000_000)
        #expect(hostA.daemon.stop() == 0)
        #expect(
            hostA.daemon.stderr.contains("guest NICs get MTU") == (underlayMTU > 9050),
            "\(hostA.daemon.stderr)"
        )
    }

    @Test func bulkTCPKeepsEveryByteWithOffloads() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        let vm1 = try vm(
            "v1",
            on: hostA,
            mac: "52:54:00:50:00:01",
            vni: 500,
            ipv4: "203.0.113.1/24",
            ipv6: "2001:db8:500::1/64"
        )
        let vm2 = try vm(
            "v2",
            on: hostB,
            mac: "52:54:00:50:00:02",
            vni: 500,
            ipv4: "203.0.113.2/24",
            ipv6: "2001:db8:500::2/64"
        )
        let vm3 = try vm("v3", on: hostA, mac: "52:54:00:50:00:03", vni: 500, ipv4: "203.0.113.3/24")
        let features = try namespaces.exec(vm1, "ethtool -k \(vm1)")
        #expect(features.stdout.contains("tcp-segmentation-offload: on"), "\(features)")

        func counter(_ vm: String, _ name: String) throws -> Int {
            Int(
                try namespaces.exec(vm, "cat /sys/class/net/\(vm)/statistics/\(name)").stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            ) ?? -1
        }
        let size = 30_000_000
        for (sender, receiver, address) in [
            (vm1, vm2, "203.0.113.2"), (vm2, vm1, "2001:db8:500::1"), (vm1, vm3, "203.0.113.3"),
        ] {
            let sentFramesBefore = try counter(sender, "tx_packets")
            let receivedFramesBefore = try counter(receiver, "rx_packets")
            try transferIntact(from: sender, to: receiver, address: address, bytes: size)
            // At least size / 1448 segments of payload went each way; with TSO and merging the
            // taps carried far fewer (and larger) frames.
            let segments = size / 1448
            let sentFrames = try counter(sender, "tx_packets") - sentFramesBefore
            let receivedFrames = try counter(receiver, "rx_packets") - receivedFramesBefore
            #expect(sentFrames < segments / 2, "\(sender) sent \(sentFrames) frames for \(segments) segments")
            #expect(
                receivedFrames < segments / 2,
                "\(receiver) received \(receivedFrames) frames for \(segments) segments"
            )
        }
    }

    /// tests/tools, found from this source file's location.
    static let tools = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("tests/tools").path

    @Test func twoHundredNICsOnOneDaemonHundredInOneVNI() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        for index in 0..<200 {
            let id = namespaces.prefix + "n\(index)"
            let mac = String(format: "52:54:00:80:%02x:%02x", index / 256, index % 256)
            // The two that go into VMs own the addresses they will use.
            let ip = [0: " --ip 203.0.113.10", 99: " --ip 203.0.113.11"][index] ?? ""
            let add = try hostA.daemon.cli(
                "nic add --id \(id) --mac \(mac) --vni \(index < 100 ? 800 : 801) --type TAP\(ip)"
            )
            try #require(add.status == 0, "\(add)")
        }
        #expect(try hostA.daemon.cli("nic list").stdout.split(separator: "\n").count == 200)
        // Two of the hundred NICs of VNI 800, moved into VMs, talk to a VM on the other host.
        for (index, address) in [(0, "203.0.113.10/24"), (99, "203.0.113.11/24")] {
            let id = namespaces.prefix + "n\(index)"
            try namespaces.add("n\(index)")
            try sh("ip -n \(hostA.name) link set \(id) netns \(id)")
            try sh("ip -n \(id) link set \(id) up")
            try sh("ip -n \(id) addr add \(address) dev \(id)")
            let update = try hostA.daemon.cli(
                "nic update --id \(id) --ip \(address.split(separator: "/")[0]) --sg open"
            )
            try #require(update.status == 0, "\(update)")
        }
        let remote = try vm("r", on: hostB, mac: "52:54:00:81:00:01", vni: 800, ipv4: "203.0.113.20/24")
        #expect(try namespaces.pings(from: remote, to: "203.0.113.10"))
        #expect(try namespaces.pings(from: remote, to: "203.0.113.11"))
        #expect(try namespaces.pings(from: namespaces.prefix + "n0", to: "203.0.113.11"))
    }

    @Test func iperf3TCPAndUDPAcrossHosts() throws {
        let (hostA, hostB) = try twoHosts(vtepA: "198.51.100.1/24", vtepB: "198.51.100.2/24")
        let vm1 = try vm("v1", on: hostA, mac: "52:54:00:90:00:01", vni: 900, ipv4: "203.0.113.1/24")
        let vm2 = try vm("v2", on: hostB, mac: "52:54:00:90:00:02", vni: 900, ipv4: "203.0.113.2/24")
        #expect(try namespaces.pings(from: vm1, to: "203.0.113.2"))
        try requireTool("iperf3")
        let server = try ChildProcess("/usr/sbin/ip", ["netns", "exec", vm2, "iperf3", "-s", "-p", "5201"])
        defer {
            kill(server.pid, SIGKILL)
            server.wait(timeout: 5)
        }
        usleep(500_000)
        let tcp = try namespaces.exec(vm1, "iperf3 -c 203.0.113.2 -p 5201 -t 3 -J", timeout: 30)
        #expect(tcp.status == 0, "\(tcp)")
        #expect(tcp.stdout.contains("\"sum_received\""), "\(tcp.stdout.suffix(500))")
        let udp = try namespaces.exec(vm1, "iperf3 -c 203.0.113.2 -p 5201 -u -b 20M -t 3 -J", timeout: 30)
        #expect(udp.status == 0, "\(udp)")
        #expect(!udp.stdout.contains("\"error\""), "\(udp.stdout.suffix(500))")
    }
}
