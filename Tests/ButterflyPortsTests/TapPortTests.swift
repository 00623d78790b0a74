import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A real tap in both modes: created by the port, moved into a namespace of the test's own
/// (198.51.100.2/24, IPv6 off, a permanent neighbour 198.51.100.1 at the documentation MAC),
/// where the kernel's stack sends to and answers the port.
@Suite(.serialized)
struct TapPortTests {
    init() throws { try requireRoot(for: "network namespaces and taps") }

    @Test func theHostSideOfATapHasNoIPv6ButAMovedTapDoes() throws {
        let name = "btt6\(getpid() % 100_000)"
        let namespace = "bttn6\(getpid())"
        let port = try TapPort(name: name, mac: MACAddress(value: 0x5254_00AA_0006), mtu: nil)
        let setting = "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6"
        let fd = open(setting, O_RDONLY)
        #expect(fd >= 0)
        var byte: UInt8 = 0
        #expect(read(fd, &byte, 1) == 1 && byte == UInt8(ascii: "1"), "IPv6 off on the host side")
        close(fd)
        try run("ip", "netns", "add", namespace)
        defer { _ = try? run("ip", "netns", "delete", namespace) }
        try run("ip", "link", "set", name, "netns", namespace)
        // In its new namespace the interface gets that namespace's defaults: IPv6 on.
        try run("sh", "-c", "test \"$(ip netns exec \(namespace) cat \(setting))\" = 0")
        _ = port
    }

    @Test(arguments: [false, true]) func framesGoBothWaysInEitherMode(offloads: Bool) throws {
        let tag = offloads ? "o" : "p"
        let namespace = "bttn\(tag)\(getpid())"
        let name = "btt\(tag)\(getpid())"
        let mac = MACAddress(value: 0x5254_00AA_0001)
        try run("ip", "netns", "add", namespace)
        defer { _ = try? run("ip", "netns", "delete", namespace) }
        try run(
            "ip",
            "netns",
            "exec",
            namespace,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1"
        )
        let port = try TapPort(name: name, mac: mac, mtu: 1500, offloads: offloads)
        #expect(port.offloads == offloads)
        try run("ip", "link", "set", name, "netns", namespace)
        try run("ip", "-n", namespace, "link", "set", name, "up")
        try addLabAddresses(namespace: namespace, interface: name)
        let pool = PacketPool(capacity: 64)
        let batch = PacketBatch(capacity: 32)

        // The namespace pings 198.51.100.1: its requests come out of the port, whole.
        _ = try? run(
            ["ip", "netns", "exec", namespace, "ping", "-c", "3", "-i", "0.05", "-W", "1", "198.51.100.1"],
            allowFailure: true
        )
        let requests = collect(from: port, pool: pool, batchCapacity: 32, expecting: 3) { isEchoRequest($0) }
        #expect(requests.count == 3)
        #expect(requests.allSatisfy { loadMAC($0, at: 6) == mac.value && $0.count == 98 })

        // The port sends a request to the namespace, which answers through the port.
        var packet = pool.allocate()!
        packet.length = UInt16(writeEchoRequest(pool.data(packet), to: mac.value, sequence: 9))
        batch.append(packet)
        #expect(port.transmit(batch, pool: pool) == 1)
        let replies = collect(from: port, pool: pool, batchCapacity: 32, expecting: 1) { isEchoReply($0) }
        let replied = replies.count == 1
        #expect(replied, "the namespace's stack accepted the frame and answered")
        #expect(port.portDrops == PortDropCounters())
        #expect(pool.available == 64)
    }
}
