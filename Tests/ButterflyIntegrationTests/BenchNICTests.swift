import Foundation
import Testing

/// BENCH NICs: the daemon plays a prober (`ICMP_SND_LIKE`, echo requests to `dip`/`dmac`) and
/// a responder (`ICMP_RCV_LIKE`) itself, and reports round trips through the API
/// (`nic stats NIC --all`), on one host, across two, and with a real namespace VM pinging
/// the responder.
@Suite(.serialized)
struct BenchNICTests {
    let namespaces = Namespaces()

    func addResponder(_ daemon: Daemon, mac: String, ip: String, vni: Int) throws {
        let add = try daemon.cli(
            "nic add --id r --mac \(mac) --vni \(vni) --ip \(ip) --sg \(openGroup) --type BENCH --btype ICMP_RCV_LIKE"
        )
        try #require(add.status == 0, "\(add)")
    }

    func addProber(_ daemon: Daemon, mac: String, ip: String, vni: Int, to dip: String, _ dmac: String) throws {
        let add = try daemon.cli(
            "nic add --id p --mac \(mac) --vni \(vni) --ip \(ip) --sg \(openGroup) --type BENCH --btype ICMP_SND_LIKE"
                + " --dip \(dip) --dmac \(dmac)"
        )
        try #require(add.status == 0, "\(add)")
    }

    /// `nic stats NIC --all`'s bench lines: counts and the round trips in microseconds.
    func bench(_ daemon: Daemon, _ nic: String) throws -> (sent: Int, replies: Int, rtt: [Double], answered: Int) {
        let counters = try nicCounters(daemon, nic)
        let output = try daemon.cli("nic stats \(nic) --all").stdout
        let line = output.split(separator: "\n").first { $0.hasPrefix("bench rtt min/avg/max: ") } ?? ""
        let rtt = line.dropFirst("bench rtt min/avg/max: ".count).dropLast(" us".count).split(separator: "/")
            .compactMap { Double($0) }
        return (
            counters["bench probes sent", default: -1], counters["bench replies received", default: -1], rtt,
            counters["bench requests answered", default: -1]
        )
    }

    @Test func aProberMeasuresRoundTripsThroughTheFirewallToAResponder() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        try addResponder(daemon, mac: "52:54:00:00:41:02", ip: "203.0.113.2", vni: 41)
        try addProber(
            daemon,
            mac: "52:54:00:00:41:01",
            ip: "203.0.113.1",
            vni: 41,
            to: "203.0.113.2",
            "52:54:00:00:41:02"
        )
        try #require(waitUntil(timeout: 20) { try bench(daemon, "p").replies >= 1_000 })
        let prober = try bench(daemon, "p")
        #expect(prober.sent >= prober.replies && prober.sent <= prober.replies + 1, "\(prober)")
        #expect(
            prober.rtt.count == 3 && prober.rtt[0] > 0 && prober.rtt[0] <= prober.rtt[1]
                && prober.rtt[1] <= prober.rtt[2]
        )
        #expect(try bench(daemon, "r").answered >= prober.replies)
        // Through the firewall both ways: one tracked connection (the gauge is published once a
        // second).
        #expect(try waitUntil(timeout: 5) { try nicCounters(daemon, "p")["connections", default: 0] == 1 })

        // A real VM resolves the responder's address and gets its echo replies.
        let vm = namespaces.prefix + "v"
        let add = try daemon.cli(
            "nic add --id \(vm) --mac 52:54:00:00:41:03 --vni 41 --type TAP"
                + filteredNICArguments(ipv4: "203.0.113.3/24")
        )
        try #require(add.status == 0, "\(add)")
        try namespaces.add("v")
        try namespaces.attach(tap: vm, to: vm, ipv4: "203.0.113.3/24")
        #expect(try namespaces.pings(from: vm, to: "203.0.113.2", count: 3))

        // Deleted, the prober stops.
        #expect(try daemon.cli("nic del p").status == 0)
        let answered = try bench(daemon, "r").answered
        usleep(300_000)
        #expect(try bench(daemon, "r").answered <= answered + 3)
    }

    @Test func acrossTwoHosts() throws {
        let (daemonA, daemonB) = try twoHostDaemons(namespaces)
        try addResponder(daemonB, mac: "52:54:00:00:42:02", ip: "203.0.113.2", vni: 42)
        try addProber(
            daemonA,
            mac: "52:54:00:00:42:01",
            ip: "203.0.113.1",
            vni: 42,
            to: "203.0.113.2",
            "52:54:00:00:42:02"
        )
        try #require(waitUntil(timeout: 20) { try bench(daemonA, "p").replies >= 200 })
        let prober = try bench(daemonA, "p")
        #expect(prober.rtt.count == 3 && prober.rtt[0] > 0, "\(prober)")
    }

    @Test func aProberWithoutADestinationIsRefused() throws {
        let daemon = try Daemon()
        for arguments in [
            "--btype ICMP_SND_LIKE", "--btype ICMP_SND_LIKE --dip 2001:db8::1 --dmac 52:54:00:00:00:09",
            "--btype PING",
        ] {
            let add = try daemon.cli("nic add --id p --mac 52:54:00:00:43:01 --vni 1 --type BENCH " + arguments)
            #expect(add.status == 1 && add.stderr.contains("Bad NIC format"), "\(arguments): \(add)")
        }
        #expect(try daemon.cli("nic list").stdout.isEmpty)
    }
}
