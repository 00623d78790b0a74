import Foundation
import Testing

/// Anti-spoofing against real guests (docs/DATAPLANE.md "Anti-spoofing"): TAP NICs of one
/// daemon moved into VM namespaces. A hostile VM crafts frames with raw packet sockets
/// (tests/tools/hostile_guest.py); its neighbours' caches and routes must stay clean and its NIC
/// must count each drop. Honest VMs must still reach each other, link-local addresses included.
@Suite(.serialized)
struct AntiSpoofTests {
    let daemon: Daemon
    let namespaces = Namespaces()
    static let tool = VXLANTests.tools + "/hostile_guest.py"
    /// The drop reasons anti-spoofing counts (an honest guest must cause none of them).
    static let reasons: Set<String> = [
        "spoofed-source-mac", "rarp", "spoofed-arp", "spoofed-neighbor-advertisement", "malformed-ip", "vlan-tagged",
        "spoofed-source-ip", "spoofed-neighbor-solicitation", "router-advertisement", "dhcp-server",
    ]

    init() throws {
        for tool in ["ip", "ping", "python3"] {
            guard try runProcess("/bin/sh", ["-c", "command -v \(tool)"]).status == 0 else {
                throw HarnessError("\(tool) is required by the anti-spoofing tests (scripts/setup installs it)")
            }
        }
        daemon = try Daemon()
        // Every NIC is in a group that lets all IP in, so these tests keep passing once the
        // firewall denies inbound IP by default.
        for line in [
            "sg add open", "sg rule add open --ip-proto all --cidr 0.0.0.0/0",
            "sg rule add open --ip-proto all --cidr ::/0",
        ] {
            let result = try daemon.cli(line)
            try #require(result.status == 0, "\(line): \(result)")
        }
    }

    /// A TAP NIC `<prefix><suffix>` owning `addresses` (with prefix lengths), moved into its
    /// own namespace, where the addresses are configured (IPv6 ones without duplicate address
    /// detection; the link-local address goes through it).
    func vm(_ suffix: String, mac: String, addresses: [String], antiSpoof: Bool) throws -> String {
        let name = namespaces.prefix + suffix
        let ips = addresses.map { "--ip " + $0.prefix { $0 != "/" } }.joined(separator: " ")
        let add = try daemon.cli(
            "nic add --id \(name) --mac \(mac) --vni 70 --type TAP --sg open \(ips)"
                + (antiSpoof ? " --enable-antispoof" : "")
        )
        try #require(add.status == 0, "\(add)")
        try namespaces.add(suffix)
        try sh("ip link set \(name) netns \(name)")
        // A host that takes router advertisements as any host does, forwarding or not.
        try sh("ip netns exec \(name) sysctl -qw net.ipv6.conf.\(name).accept_ra=2")
        try sh("ip -n \(name) link set \(name) up")
        for address in addresses {
            try sh("ip -n \(name) addr add \(address) dev \(name)" + (address.contains(":") ? " nodad" : ""))
        }
        return name
    }

    /// `drop <reason>: N` lines of `nic stats --all` for the anti-spoofing reasons.
    func antiSpoofDrops(_ nic: String) throws -> [String: Int] {
        var drops: [String: Int] = [:]
        for line in try daemon.cli("nic stats \(nic) --all").stdout.split(separator: "\n") where line.hasPrefix("drop ")
        {
            let parts = line.dropFirst(5).split(separator: ":")
            guard parts.count == 2, Self.reasons.contains(String(parts[0])) else { continue }
            drops[String(parts[0])] = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? -1
        }
        return drops
    }

    /// The victim's neighbour entry for `address` (empty if none).
    func neighbour(_ vm: String, _ address: String) throws -> String {
        try namespaces.exec(vm, "ip neigh show \(address) dev \(vm)").stdout
    }

    /// Polls `condition` every 20 ms until it holds; throws when `timeout` seconds pass first.
    func waitUntil(_ what: String, timeout: TimeInterval, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition() {
            guard Date() < deadline else { throw HarnessError("timed out after \(timeout) s waiting until \(what)") }
            usleep(20_000)
        }
    }

    @Test func hostileGuestPoisonsNoNeighbourAndEachFrameIsCounted() throws {
        let hostileMAC = "52:54:00:00:0a:02"
        let otherMAC = "52:54:00:00:0a:03"
        let victim = try vm(
            "v",
            mac: "52:54:00:00:0a:01",
            addresses: ["198.51.100.41/24", "2001:db8:a::41/64"],
            antiSpoof: false
        )
        let hostile = try vm(
            "h",
            mac: hostileMAC,
            addresses: ["198.51.100.42/24", "2001:db8:a::42/64"],
            antiSpoof: true
        )
        let other = try vm(
            "o",
            mac: otherMAC,
            addresses: ["198.51.100.43/24", "2001:db8:a::43/64", "2001:db8:a::44/64"],
            antiSpoof: true
        )
        // The victim knows the other VM: entries a poisoning would overwrite.
        for address in ["198.51.100.43", "2001:db8:a::43", "2001:db8:a::44"] {
            #expect(try namespaces.pings(from: victim, to: address, count: 1))
            #expect(try neighbour(victim, address).contains(otherMAC), "\(address) not resolved before the attack")
        }

        let directory = daemon.directory.path
        let config = directory + "/hostile.json"
        let settings: [String: Any] = [
            "hostile_mac": hostileMAC, "hostile_ipv4": "198.51.100.42",
            "victim_ipv4": "198.51.100.41", "victim_ipv6": "2001:db8:a::41",
            "other_ipv4": "198.51.100.43", "other_ipv6": "2001:db8:a::43", "other_ipv6_tagged": "2001:db8:a::44",
            "other_link_local": "fe80::5054:ff:fe00:a03", "count": 2, "marker": namespaces.prefix,
        ]
        try JSONSerialization.data(withJSONObject: settings).write(to: URL(fileURLWithPath: config))

        // The victim listens; the hostile VM sends its frames, then an honest marker: once the
        // marker reached the victim, every frame sent before it has been judged.
        let ready = directory + "/capture.ready"
        let capture = try ChildProcess(
            "/usr/sbin/ip",
            ["netns", "exec", victim, "python3", Self.tool, "capture", victim, config, ready, "20"]
        )
        try waitUntil("the victim's capture listens", timeout: 10) {
            FileManager.default.fileExists(atPath: ready) || !capture.isRunning
        }
        let attack = try namespaces.exec(hostile, "python3 \(Self.tool) attack \(hostile) \(config)")
        try #require(attack.status == 0, "\(attack)")
        let status = capture.wait(timeout: 30)
        let report = try? JSONSerialization.jsonObject(with: Data(capture.stdout.utf8)) as? [String: Any]
        #expect(status == 0, "the marker did not reach the victim: \(capture.stdout) \(capture.stderr)")
        #expect(report?["marker"] as? Bool == true, "\(capture.stdout)")
        let arrived = report?["arrived"] as? [String: Int] ?? ["(no report)": 1]
        #expect(arrived.isEmpty, "hostile frames reached the victim: \(arrived)")

        for (address, attack) in [
            ("198.51.100.43", "ARP in an 802.1Q tag"),
            ("2001:db8:a::43", "neighbour advertisement behind a Destination Options header"),
            ("2001:db8:a::44", "neighbour advertisement in an 802.1Q tag"),
            ("fe80::5054:ff:fe00:a03", "neighbour solicitation from another VM's address"),
        ] {
            let entry = try neighbour(victim, address)
            #expect(!entry.contains(hostileMAC), "\(attack) poisoned the victim: \(entry)")
        }
        let routes = try namespaces.exec(victim, "ip -6 route show dev \(victim)").stdout
        #expect(!routes.contains("default"), "the router advertisement gave the victim a default route: \(routes)")
        #expect(!routes.contains("2001:db8:bad"), "the router advertisement gave the victim a prefix: \(routes)")

        let expected = [
            "spoofed-neighbor-advertisement": 2,  // behind Destination Options
            "spoofed-source-ip": 2,  // solicitation from the other VM's link-local address
            "router-advertisement": 2,
            "vlan-tagged": 4,  // ARP and neighbour advertisement
            "dhcp-server": 2,
        ]
        var drops: [String: Int] = [:]
        try? waitUntil("the hostile NIC counts its drops", timeout: 5) {
            drops = try antiSpoofDrops(hostile)
            return drops == expected
        }
        let stats = try daemon.cli("nic stats \(hostile) --all").stdout
        #expect(drops == expected, "\(stats)")
        // The honest guests' own traffic (ARP, neighbour discovery, DAD, MLD, pings) passed.
        #expect(try antiSpoofDrops(victim).isEmpty)
        #expect(try antiSpoofDrops(other).isEmpty)
    }

    @Test func honestGuestsReachEachOtherOnLinkLocalAddresses() throws {
        let a = try vm(
            "la",
            mac: "52:54:00:00:0b:01",
            addresses: ["198.51.100.51/24", "2001:db8:b::51/64"],
            antiSpoof: true
        )
        let b = try vm(
            "lb",
            mac: "52:54:00:00:0b:02",
            addresses: ["198.51.100.52/24", "2001:db8:b::52/64"],
            antiSpoof: true
        )
        // Link-local addresses come up after duplicate address detection (solicitations from ::).
        for vm in [a, b] {
            try waitUntil("\(vm)'s link-local address leaves duplicate address detection", timeout: 15) {
                let addresses = try namespaces.exec(vm, "ip -6 addr show dev \(vm) scope link").stdout
                return addresses.contains("fe80::") && !addresses.contains("tentative")
            }
        }
        #expect(try namespaces.pings(from: a, to: "fe80::5054:ff:fe00:b02%\(a)"))
        #expect(try namespaces.pings(from: b, to: "fe80::5054:ff:fe00:b01%\(b)"))
        #expect(try namespaces.pings(from: a, to: "2001:db8:b::52"))
        #expect(try namespaces.pings(from: b, to: "198.51.100.51"))
        for vm in [a, b] {
            let stats = try daemon.cli("nic stats \(vm) --all").stdout
            #expect(try antiSpoofDrops(vm).isEmpty, "\(stats)")
        }
    }
}
