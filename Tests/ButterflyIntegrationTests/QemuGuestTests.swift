import Foundation
import Testing

/// Real virtual machines on vhost-user NICs (QEMU under TCG, TESTBED.md): two guests ping and
/// move TCP through the daemon, a guest reboot reconnects, a guest on one host reaches a TAP
/// namespace on another over VXLAN, and in client mode the daemon is killed and restarted
/// under a running guest whose traffic resumes.
@Suite(.serialized)
struct QemuGuestTests {
    let namespaces = Namespaces()

    /// Adds a vhost-user NIC with the open group; returns its socket path.
    func vhostNIC(_ daemon: Daemon, _ id: String, mac: String, vni: Int, ip: String, client: Bool = false) throws
        -> String
    {
        let type = client ? "VHOST_USER_CLIENT" : "VHOST_USER_SERVER"
        let add = try daemon.cli(
            "nic add --id \(id) --mac \(mac) --vni \(vni) --type \(type) --ip \(ip) --sg \(openGroup)"
        )
        try #require(add.status == 0, "\(add)")
        return add.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A TAP NIC moved into a namespace of its own, as a VM that answers pings.
    func tapVM(_ daemon: Daemon, _ suffix: String, mac: String, vni: Int, ip: String) throws -> String {
        let name = namespaces.prefix + suffix
        let add = try daemon.cli(
            "nic add --id \(name) --mac \(mac) --vni \(vni) --type TAP --ip \(ip) --sg \(openGroup)"
        )
        try #require(add.status == 0, "\(add)")
        if !namespaces.names.contains(name) { try namespaces.add(suffix) }
        try namespaces.attach(tap: name, to: name, ipv4: ip + "/24")
        return name
    }

    /// One guest listening for TCP and one sending it `bytes`, each on its vhost-user socket
    /// with its MAC and address (/24); each is the other's peer.
    func tcpGuests(
        listener: (path: String, mac: String, ip: String),
        sender: (path: String, mac: String, ip: String),
        bytes: Int,
        mtu: Int? = nil
    ) throws -> (listener: QemuGuest, sender: QemuGuest) {
        let listening = try QemuGuest(
            path: listener.path,
            mac: listener.mac,
            ip: listener.ip + "/24",
            peer: sender.ip,
            script: "listen",
            mtu: mtu
        )
        let sending = try QemuGuest(
            path: sender.path,
            mac: sender.mac,
            ip: sender.ip + "/24",
            peer: listener.ip,
            script: "send",
            extra: "bf.bytes=\(bytes)",
            mtu: mtu
        )
        return (listening, sending)
    }

    @Test func twoGuestsPingAndMoveTCP() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        let one = try vhostNIC(daemon, "vm1", mac: "52:54:00:00:11:01", vni: 11, ip: "203.0.113.1")
        let two = try vhostNIC(daemon, "vm2", mac: "52:54:00:00:11:02", vni: 11, ip: "203.0.113.2")
        let bytes = 4 << 20
        let (listener, sender) = try tcpGuests(
            listener: (one, "52:54:00:00:11:01", "203.0.113.1"),
            sender: (two, "52:54:00:00:11:02", "203.0.113.2"),
            bytes: bytes
        )
        #expect(sender.waitFor("BF-PING-OK", timeout: 120), "\(sender.output)")
        let received = listener.waitFor("BF-TCP-RECEIVED", timeout: 180)
        let counters1 = try nicCounters(daemon, "vm1")
        let counters2 = try nicCounters(daemon, "vm2")
        #expect(received, "\(listener.output.suffix(1500))\nvm1 \(counters1)\nvm2 \(counters2)")
        #expect(listener.output.contains("BF-TCP-RECEIVED \(bytes)"), "\(listener.output)")
        #expect(sender.waitFor("BF-TCP-SENT", timeout: 30), "\(sender.output)")
        // The daemon saw the guests' frames pass its filters, none refused.
        let counters = try nicCounters(daemon, "vm2")
        #expect(counters["in packets", default: 0] > bytes / 1500, "\(counters)")
        #expect(counters["drop guest-descriptor", default: 0] == 0 && counters["drop vhost-protocol", default: 0] == 0)
    }

    @Test func aRebootedGuestGetsItsNICBack() throws {
        let daemon = try Daemon()
        try createOpenGroup(on: daemon)
        let path = try vhostNIC(daemon, "vm", mac: "52:54:00:00:12:01", vni: 12, ip: "203.0.113.1")
        _ = try tapVM(daemon, "peer", mac: "52:54:00:00:12:02", vni: 12, ip: "203.0.113.2")
        // Every boot pings, then reboots: the second success is after a reset of the device.
        let guest = try QemuGuest(
            path: path,
            mac: "52:54:00:00:12:01",
            ip: "203.0.113.1/24",
            peer: "203.0.113.2",
            script: "ping",
            extra: "bf.then=reboot"
        )
        #expect(guest.waitFor("BF-PING-OK", times: 2, timeout: 240), "\(guest.output)")
        #expect(!guest.output.contains("BF-PING-FAIL"), "\(guest.output)")
    }

    /// Bulk TCP between guests on two hosts, on underlays of MTU 1500, 2000 and 9000: each
    /// guest's MTU (QEMU's host_mtu) is what the daemon carries there (1450; 1950 and 8950,
    /// frames longer than a small buffer in large ones), with the guests' TSO and the daemon's
    /// merged frames towards them (HOST_TSO, GUEST_TSO).
    @Test(arguments: [1500, 2000, 9000]) func bulkTCPBetweenGuestsOnTwoHosts(underlayMTU: Int) throws {
        let (daemonA, daemonB) = try twoHostDaemons(namespaces, underlayMTU: underlayMTU)
        let mtu = underlayMTU - 50
        let one = try vhostNIC(daemonA, "vm1", mac: "52:54:00:00:15:01", vni: 15, ip: "203.0.113.1")
        let two = try vhostNIC(daemonB, "vm2", mac: "52:54:00:00:15:02", vni: 15, ip: "203.0.113.2")
        let bytes = 8 << 20
        let (listener, sender) = try tcpGuests(
            listener: (two, "52:54:00:00:15:02", "203.0.113.2"),
            sender: (one, "52:54:00:00:15:01", "203.0.113.1"),
            bytes: bytes,
            mtu: mtu
        )
        #expect(listener.waitFor("BF-TCP-RECEIVED", timeout: 180), "\(listener.output.suffix(1000))")
        #expect(listener.output.contains("BF-TCP-RECEIVED \(bytes)"), "\(listener.output.suffix(1000))")
        #expect(sender.waitFor("BF-TCP-SENT", timeout: 30), "\(sender.output.suffix(1000))")
        let counters = try nicCounters(daemonA, "vm1")
        #expect(counters["drop port-receive", default: 0] == 0, "\(counters)")
        if mtu > 1450 {
            // The larger MTU was used: fewer frames than 1,410-byte segments would need.
            #expect(counters["in packets", default: 0] < bytes / 1410, "\(counters)")
        }
    }

    /// A guest MTU the daemon cannot carry (QEMU's host_mtu 1500 over a 1500-byte underlay:
    /// VXLAN needs 50 bytes) is refused when QEMU announces it, and the daemon says why,
    /// instead of full-size frames vanishing later.
    @Test func aGuestMTUTooLargeForTheUnderlayIsRefused() throws {
        let (daemonA, _) = try twoHostDaemons(namespaces)
        let path = try vhostNIC(daemonA, "vm", mac: "52:54:00:00:16:01", vni: 16, ip: "203.0.113.1")
        let guest = try QemuGuest(
            path: path,
            mac: "52:54:00:00:16:01",
            ip: "203.0.113.1/24",
            peer: "203.0.113.2",
            script: "idle",
            mtu: 1500
        )
        _ = guest.waitFor("BF-READY", timeout: 60)
        #expect(daemonA.stop() == 0)
        #expect(
            daemonA.stderr.contains("refused guest MTU 1500: the daemon carries at most 1450"),
            "\(daemonA.stderr)"
        )
    }

    @Test func aGuestOnOneHostReachesATapNamespaceOnAnother() throws {
        let (daemonA, daemonB) = try twoHostDaemons(namespaces)
        let path = try vhostNIC(daemonA, "vm", mac: "52:54:00:00:13:01", vni: 13, ip: "203.0.113.1")
        let add = try daemonB.cli(
            "nic add --id \(namespaces.prefix)v --mac 52:54:00:00:13:02 --vni 13 --type TAP --ip 203.0.113.2 --sg \(openGroup)"
        )
        try #require(add.status == 0, "\(add)")
        let vm = try namespaces.add("v")
        try sh("ip -n \(namespaces.prefix)hb link set \(vm) netns \(vm)")
        try sh("ip -n \(vm) link set \(vm) up")
        try sh("ip -n \(vm) addr add 203.0.113.2/24 dev \(vm)")
        let guest = try QemuGuest(
            path: path,
            mac: "52:54:00:00:13:01",
            ip: "203.0.113.1/24",
            peer: "203.0.113.2",
            script: "ping",
            extra: "bf.then=stay"
        )
        #expect(guest.waitFor("BF-PING-OK", timeout: 180), "\(guest.output)")
        // And back: the namespace reaches the guest.
        #expect(try namespaces.pings(from: vm, to: "203.0.113.1"))
    }

    @Test func clientModeGuestTrafficResumesAfterTheDaemonIsKilled() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/state"
        var daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        try createOpenGroup(on: daemon)
        let path = directory.path + "/qemu-vhost-vm"
        // QEMU listens (server=on, wait=off); the daemon's NIC connects to it.
        let guest = try QemuGuest(
            path: path,
            mac: "52:54:00:00:14:01",
            ip: "203.0.113.1/24",
            peer: "203.0.113.2",
            script: "pong",
            server: true
        )
        try #require(waitUntil(timeout: 30) { FileManager.default.fileExists(atPath: path) }, "\(guest.output)")
        #expect(try vhostNIC(daemon, "vm", mac: "52:54:00:00:14:01", vni: 14, ip: "203.0.113.1", client: true) == path)
        let peer = try tapVM(daemon, "peer", mac: "52:54:00:00:14:02", vni: 14, ip: "203.0.113.2")
        try #require(guest.waitFor("BF-PONG", times: 3, timeout: 180), "\(guest.output)")

        // Killed outright; restarted from its state file, it connects to the same QEMU again.
        kill(daemon.child.pid, SIGKILL)
        daemon.child.wait(timeout: 10)
        let before = guest.count("BF-PONG")
        daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        // The peer's tap was re-created by the restart, in the daemon's namespace: move it again
        // (once the killed daemon's tap has left the peer's namespace: the kernel unregisters it
        // a moment after the process died).
        var moved: ProcessResult?
        _ = waitUntil(timeout: 10) {
            moved = try? run("/usr/sbin/ip", ["link", "set", peer, "netns", peer])
            return moved?.status == 0
        }
        try #require(moved?.status == 0, "\(String(describing: moved))")
        try sh("ip -n \(peer) link set \(peer) up")
        try sh("ip -n \(peer) addr add 203.0.113.2/24 dev \(peer)")
        #expect(guest.waitFor("BF-PONG", times: before + 3, timeout: 120), "\(guest.output.suffix(2000))")
        #expect(guest.process.isRunning, "the guest kept running")
        #expect(daemon.stop() == 0)
    }
}
