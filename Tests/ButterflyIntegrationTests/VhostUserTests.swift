import Foundation
import Testing

/// vhost-user NICs against a real front-end: DPDK testpmd with `virtio_user` (TESTBED.md), a
/// generator on one NIC and a sink on another, the daemon's counters against what testpmd
/// itself counted. Server mode (the daemon listens), client mode (testpmd listens, the daemon
/// connects and reconnects), two hosts over VXLAN, several queue pairs.
@Suite(.serialized)
struct VhostUserTests {
    let namespaces = Namespaces()

    /// One end of the traffic: a vhost-user NIC's socket and the MAC and address its front-end
    /// uses (the NIC's own).
    struct End {
        let path: String
        let mac: String
        let ip: String
    }

    @Test func generatorToSinkCountsMatchAndOtherVNIsSeeNothing() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        let a = try addNIC(daemon, "a", mac: "52:54:00:00:01:01", vni: 7, ip: "198.51.100.1")
        let b = try addNIC(daemon, "b", mac: "52:54:00:00:01:02", vni: 7, ip: "198.51.100.2")
        _ = try addNIC(daemon, "c", mac: "52:54:00:00:01:03", vni: 8, ip: "198.51.100.2")
        #expect(a.path == daemon.directory.path + "/qemu-vhost-a")
        #expect(Self.isSocket(a.path) && Self.isSocket(b.path))

        let sink = try self.sink(at: b)
        let generator = try self.generator(from: a, to: b)
        let (sent, received) = try run(generator, into: sink, daemon: daemon, nic: "b", frames: 20_000)
        let fromGenerator = try nicCounters(daemon, "a")
        // What the daemon took from the generator: no more than it sent, all of it switched.
        #expect(fromGenerator["in packets", default: 0] <= sent.tx)
        #expect(fromGenerator["in packets", default: -1] == received.switched)
        #expect(fromGenerator["dropped", default: 0] == 0, "\(fromGenerator)")
        // The NIC of another VNI got nothing, not even attempts.
        #expect(try nicCounters(daemon, "c")["out packets", default: -1] == 0)
    }

    @Test func serverModeReconnectsAndReAddRecreatesTheSocket() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        let a = try addNIC(daemon, "a", mac: "52:54:00:00:02:01", vni: 3, ip: "198.51.100.1")
        let b = try addNIC(daemon, "b", mac: "52:54:00:00:02:02", vni: 3, ip: "198.51.100.2")
        let sink = try self.sink(at: b)
        // The same VM three times: it stops, comes back, comes back again.
        var delivered = 0
        for round in 1...3 {
            let generator = try self.generator(from: a, to: b)
            let target = delivered + 5_000
            #expect(
                try waitUntil(timeout: 30) { try nicCounters(daemon, "b")["out packets", default: 0] >= target },
                "round \(round)"
            )
            _ = try generator.stop()
            delivered = try nicCounters(daemon, "b")["out packets", default: 0]
        }
        _ = try sink.stop()

        // Deleted: the socket goes; re-added: a new one, and a front-end works on it.
        #expect(try daemon.cli("nic del b").status == 0)
        #expect(!FileManager.default.fileExists(atPath: b.path))
        #expect(try addNIC(daemon, "b", mac: b.mac, vni: 3, ip: b.ip).path == b.path)
        #expect(Self.isSocket(b.path))
        let again = try self.sink(at: b)
        _ = try run(self.generator(from: a, to: b), into: again, daemon: daemon, nic: "b", frames: 5_000)
    }

    @Test func clientModeReconnectsAfterTheDaemonIsKilled() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/state"
        var daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        try createOpenGroup(on: daemon)
        let a = End(path: directory.path + "/qemu-vhost-a", mac: "52:54:00:00:03:01", ip: "198.51.100.1")
        let b = End(path: directory.path + "/qemu-vhost-b", mac: "52:54:00:00:03:02", ip: "198.51.100.2")
        // The front-ends listen (QEMU's `server=on`); the daemon connects to them.
        let sink = try self.sink(at: b, server: true)
        let generator = try self.generator(from: a, to: b, server: true)
        #expect(try addNIC(daemon, "a", mac: a.mac, vni: 4, ip: a.ip, client: true).path == a.path)
        #expect(try addNIC(daemon, "b", mac: b.mac, vni: 4, ip: b.ip, client: true).path == b.path)
        try sink.waitUntilForwarding()
        try generator.waitUntilForwarding()
        try #require(waitUntil(timeout: 30) { try nicCounters(daemon, "b")["out packets", default: 0] >= 5_000 })

        // Killed outright, restarted from its state file: both NICs come back and connect to
        // the same, untouched front-ends, and the traffic resumes.
        kill(daemon.child.pid, SIGKILL)
        daemon.child.wait(timeout: 10)
        daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try daemon.cli("nic list").stdout == "a\nb\n")
        let (sent, _) = try run(generator, into: sink, daemon: daemon, nic: "b", frames: 5_000, restarted: true)
        #expect(sent.tx > 0)
        #expect(daemon.stop() == 0)
    }

    @Test func severalQueuePairs() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        // Many flows come from many source addresses (testpmd's multi-flow varies the source):
        // the generator's NIC does not filter.
        let a = try addNIC(daemon, "a", mac: "52:54:00:00:04:01", vni: 5, ip: "198.51.100.1", bypass: true)
        let b = try addNIC(daemon, "b", mac: "52:54:00:00:04:02", vni: 5, ip: "198.51.100.2")
        let sink = try self.sink(at: b, queues: 2)
        let generator = try self.generator(from: a, to: b, queues: 2, flows: true)
        let (sent, received) = try run(generator, into: sink, daemon: daemon, nic: "b", frames: 20_000)
        #expect(try nicCounters(daemon, "a")["in packets", default: 0] <= sent.tx)
        // Both of the generator's queues were served, and both of the sink's were filled.
        #expect(sent.perQueueTX.count == 2 && sent.perQueueTX.allSatisfy { $0 > 0 }, "\(sent)")
        #expect(received.perQueueRX.count == 2 && received.perQueueRX.allSatisfy { $0 > 0 }, "\(received)")
    }

    @Test func acrossTwoHostsOverVXLAN() throws {
        let (daemonA, daemonB) = try twoHostDaemons(namespaces)
        let a = try addNIC(daemonA, "a", mac: "52:54:00:00:05:01", vni: 900, ip: "203.0.113.1")
        let b = try addNIC(daemonB, "b", mac: "52:54:00:00:05:02", vni: 900, ip: "203.0.113.2")
        let sink = try self.sink(at: b)
        let (sent, _) = try run(self.generator(from: a, to: b), into: sink, daemon: daemonB, nic: "b", frames: 10_000)
        #expect(try nicCounters(daemonA, "a")["in packets", default: 0] <= sent.tx)
    }

    // MARK: Helpers

    /// Adds a vhost-user NIC with one address and the open group.
    func addNIC(
        _ daemon: Daemon,
        _ id: String,
        mac: String,
        vni: Int,
        ip: String,
        client: Bool = false,
        bypass: Bool = false
    ) throws -> End {
        let type = client ? "VHOST_USER_CLIENT" : "VHOST_USER_SERVER"
        let add = try daemon.cli(
            "nic add --id \(id) --mac \(mac) --vni \(vni) --type \(type) --ip \(ip) --sg \(openGroup)"
                + (bypass ? " --bypass-filtering" : "")
        )
        try #require(add.status == 0, "\(add)")
        return End(path: add.stdout.trimmingCharacters(in: .whitespacesAndNewlines), mac: mac, ip: ip)
    }

    func sink(at end: End, queues: Int = 1, server: Bool = false) throws -> Testpmd {
        try Testpmd(
            prefix: namespaces.prefix + "s",
            path: end.path,
            mac: end.mac,
            queues: queues,
            server: server,
            forwarding: ["--forward-mode=rxonly"]
        )
    }

    /// A generator on `from` sending UDP to `to` (`flows`: many flows, from many sources).
    func generator(from: End, to: End, queues: Int = 1, server: Bool = false, flows: Bool = false) throws -> Testpmd {
        try Testpmd(
            prefix: namespaces.prefix + "g",
            path: from.path,
            mac: from.mac,
            queues: queues,
            server: server,
            forwarding: ["--forward-mode=txonly", "--eth-peer=0,\(to.mac)", "--tx-ip=\(from.ip),\(to.ip)"]
                + (flows ? ["--txonly-multi-flow"] : [])
        )
    }

    /// Runs `generator` until the daemon sent `frames` more to `nic`, stops it, lets the sink
    /// settle and stops it. Checks that every frame the daemon put in the sink's ring, testpmd
    /// counted (the rest the daemon counted as transmit-failed: the sink's ring was full).
    /// `restarted`: the sink also counted what an earlier daemon delivered, which this one's
    /// counters do not hold.
    func run(
        _ generator: Testpmd,
        into sink: Testpmd,
        daemon: Daemon,
        nic: String,
        frames: Int,
        restarted: Bool = false
    ) throws -> (sent: Testpmd.Totals, received: Testpmd.Totals) {
        let start = try nicCounters(daemon, nic)["out packets", default: 0]
        try #require(
            waitUntil(timeout: 30) { try nicCounters(daemon, nic)["out packets", default: 0] >= start + frames },
            "the daemon did not deliver \(frames) frames to \(nic)"
        )
        let sent = try generator.stop()
        var received = try Self.settledSink(sink, daemon: daemon, nic: nic)
        let counters = try nicCounters(daemon, nic)
        received.switched = counters["out packets", default: -1]
        #expect(received.rx > 0)
        let delivered = received.switched - counters["drop transmit-failed", default: 0]
        #expect(restarted ? received.rx > delivered : received.rx == delivered, "\(counters)")
        return (sent, received)
    }

    static func isSocket(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFSOCK
    }

    /// Waits until the daemon stopped sending to `nic` for a moment, then stops the sink.
    static func settledSink(_ sink: Testpmd, daemon: Daemon, nic: String) throws -> Testpmd.Totals {
        var last = -1
        _ = try waitUntil(timeout: 20) {
            let now = try nicCounters(daemon, nic)["out packets", default: 0]
            defer { last = now }
            usleep(300_000)
            return now == last
        }
        usleep(500_000)
        return try sink.stop()
    }
}

/// A DPDK testpmd with one `virtio_user` port: a real vhost-user front-end (TESTBED.md). Its
/// output goes to a file, so readiness (forwarding started) can be seen while it runs.
final class Testpmd {
    let process: ChildProcess
    let output: String
    let directory = TemporaryDirectory()

    struct Totals: CustomStringConvertible {
        var rx = 0
        var tx = 0
        var perQueueRX: [Int] = []
        var perQueueTX: [Int] = []
        /// For a sink: what the daemon counted as sent to its NIC (`out packets`).
        var switched = 0
        var description: String { "rx \(rx) tx \(tx) per queue rx \(perQueueRX) tx \(perQueueTX)" }
    }

    /// `mode`: txonly (generator), rxonly (sink). `server`: testpmd listens on `path` (the
    /// daemon's NIC is then VHOST_USER_CLIENT).
    init(prefix: String, path: String, mac: String, queues: Int, server: Bool, forwarding: [String]) throws {
        try requireTool("dpdk-testpmd")
        output = directory.path + "/testpmd.log"
        var device = "net_virtio_user0,path=\(path),queues=\(queues),mac=\(mac)"
        if server { device += ",server=1" }
        let arguments =
            [
                "dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci", "--file-prefix=\(prefix)", "-l", "0,1",
                "--vdev", device, "--", "--total-num-mbufs=8192", "--auto-start", "--stats-period", "1",
                "--rxq=\(queues)", "--txq=\(queues)",
            ] + forwarding
        // exec: the shell becomes testpmd, whose pid we signal.
        let command = "exec " + arguments.map { "'\($0)'" }.joined(separator: " ") + " > \(output) 2>&1"
        process = try ChildProcess("/bin/sh", ["-c", command])
        // A listening testpmd (server) starts forwarding once the daemon connected.
        if !server { try waitUntilForwarding() }
    }

    /// Returns once testpmd forwards (it prints its first statistics).
    func waitUntilForwarding() throws {
        let started = waitUntil(timeout: 30) {
            !process.isRunning
                || ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains(
                    "Port statistics"
                )
        }
        guard started, process.isRunning else {
            let log = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            if process.isRunning { kill(process.pid, SIGKILL) }
            throw HarnessError("testpmd did not start forwarding: \(log.suffix(3000))")
        }
    }

    deinit {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            process.wait(timeout: 10)
        }
    }

    /// Stops testpmd (SIGINT, as at its prompt) and returns what it counted.
    func stop() throws -> Totals {
        kill(process.pid, SIGINT)
        process.wait(timeout: 30)
        let log = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard let accumulated = log.range(of: "Accumulated forward statistics") else {
            throw HarnessError("testpmd printed no totals: \(log.suffix(3000))")
        }
        var totals = Totals()
        let tail = log[accumulated.upperBound...]
        totals.rx = Self.value(after: "RX-packets:", in: tail) ?? 0
        totals.tx = Self.value(after: "TX-packets:", in: tail) ?? 0
        // Per-stream lines before the totals: "RX-packets: N  TX-packets: M  TX-dropped: K" per
        // queue, under "Forward Stats for RX Port= 0/Queue= q".
        for block in log[..<accumulated.lowerBound].components(separatedBy: "Forward Stats for RX Port=").dropFirst() {
            let packets = Self.value(after: "RX-packets:", in: Substring(block)) ?? 0
            let sent = Self.value(after: "TX-packets:", in: Substring(block)) ?? 0
            totals.perQueueRX.append(packets)
            totals.perQueueTX.append(sent)
        }
        return totals
    }

    private static func value(after label: String, in text: Substring) -> Int? {
        guard let range = text.range(of: label) else { return nil }
        let digits = text[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
        return Int(digits)
    }
}
