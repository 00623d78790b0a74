import ButterflyDataplane
import ButterflyPacket
import HashTreeCollections
import Testing

/// An in-memory NIC port: frames queued by the test come out of `receive`, frames the worker
/// transmits are kept as bytes.
final class MemoryPort: PacketPort {
    let name: String
    var fileDescriptor: Int32 { -1 }
    var portDrops: PortDropCounters { PortDropCounters() }
    var incoming: [[UInt8]] = []
    var sent: [[UInt8]] = []

    init(_ name: String) { self.name = name }

    func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        var taken = 0
        while !incoming.isEmpty, !batch.isFull, var packet = pool.allocate() {
            let frame = incoming.removeFirst()
            pool.data(packet).copyMemory(from: frame, byteCount: frame.count)
            packet.length = UInt16(frame.count)
            batch.append(packet)
            taken += 1
        }
        return taken
    }

    func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        for index in 0..<batch.count {
            let packet = batch[index]
            sent.append(Array(UnsafeRawBufferPointer(start: pool.data(packet), count: Int(packet.length))))
        }
        let count = batch.count
        batch.releaseAll(to: pool)
        return count
    }
}

/// A real `Worker` in local mode driven with `runOnce()`: switching within a VNI, isolation
/// between VNIs, flooding never back to the source, anti-spoofing drops counted per NIC.
@Suite struct WorkerTests {
    let worker = Worker(host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false))
    var config = DataplaneConfig(
        host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false)
    )
    var attachments: TreeDictionary<String, NICAttachment> = [:]
    var ports: [String: MemoryPort] = [:]

    static let macs: [String: UInt64] = ["a": 0x5254_0000_000A, "b": 0x5254_0000_000B, "c": 0x5254_0000_000C]
    static let ips: [String: UInt32] = ["a": 0xCB00_710A, "b": 0xCB00_710B, "c": 0xCB00_710C]  // 203.0.113.x

    init() {
        // The switch is under test here, not the firewall: every NIC lets everything in.
        let open = SecurityGroupConfig(
            id: "open",
            rules: [
                FirewallRule(direction: .inbound, ipProtocol: nil, ports: nil, peer: .cidr(.v4(0), prefixLength: 0))
            ],
            members: []
        )
        for (id, vni) in [("a", UInt32(10)), ("b", 10), ("c", 11)] {
            let port = MemoryPort(id)
            ports[id] = port
            config.nics[id] = NICConfig(
                id: id,
                mac: MACAddress(value: Self.macs[id]!),
                vni: vni,
                ips: [.v4(Self.ips[id]!)],
                kind: .bench,
                path: "",
                ipAntiSpoof: true,
                bypassFiltering: false,
                securityGroups: ["open"],
                packetTracePath: nil,
                sniffTarget: nil
            )
            config.nics[id]!.firewall = FirewallPolicy.compile(
                config.nics[id]!,
                groups: ["open": open],
                generation: 1
            )
            attachments[id] = NICAttachment(nicID: id, port: port)
        }
        config.version = 1
        worker.publish(DataplaneUpdate(config: config, attachments: attachments))
        worker.runOnce()
    }

    /// An Ethernet + IPv4 + UDP frame (checksums do not matter to the switch).
    static func frame(from source: UInt64, to destination: UInt64, sourceIP: UInt32, payload: UInt8 = 0) -> [UInt8] {
        func mac(_ value: UInt64) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * $0)) } }
        func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }
        var bytes = mac(destination) + mac(source) + [0x08, 0x00]
        bytes += [0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0] + be32(sourceIP) + be32(0xCB00_71FF)
        bytes += [0x13, 0x88, 0x13, 0x89, 0, 9, 0, 0, payload]
        return bytes + [UInt8](repeating: 0, count: 60 - bytes.count)
    }

    func send(_ id: String, to destination: UInt64, payload: UInt8 = 0, spoofedMAC: UInt64? = nil) {
        ports[id]!.incoming.append(
            Self.frame(from: spoofedMAC ?? Self.macs[id]!, to: destination, sourceIP: Self.ips[id]!, payload: payload)
        )
        worker.runOnce()
    }

    func drops(_ id: String) -> [String: UInt64] {
        Dictionary(uniqueKeysWithValues: attachments[id]!.counters.snapshot.drops.map { ($0.reason, $0.packets) })
    }

    @Test func broadcastReachesTheVNIButNotItsSourceNorOtherVNIs() {
        send("a", to: 0xFFFF_FFFF_FFFF, payload: 1)
        #expect(ports["b"]!.sent.map { $0[42] } == [1])
        #expect(ports["a"]!.sent.isEmpty, "never back to the source")
        #expect(ports["c"]!.sent.isEmpty, "another VNI")
    }

    @Test func learnedDestinationsGetUnicastOnly() {
        send("b", to: 0xFFFF_FFFF_FFFF, payload: 1)  // b speaks: its MAC is learned
        send("a", to: Self.macs["b"]!, payload: 2)
        #expect(ports["b"]!.sent.map { $0[42] } == [2])
        #expect(ports["a"]!.sent.map { $0[42] } == [1])
        // An unknown unicast floods within the VNI only.
        send("a", to: 0x5254_0000_00EE, payload: 3)
        #expect(ports["b"]!.sent.map { $0[42] } == [2, 3])
        #expect(ports["c"]!.sent.isEmpty)
        let counters = attachments["a"]!.counters.snapshot
        #expect(counters.inPackets == 2)
        #expect(counters.outPackets == 1)
    }

    @Test func aMACFromAnotherVNIIsNotReachable() {
        send("c", to: 0xFFFF_FFFF_FFFF, payload: 1)  // c (VNI 11) is learned in VNI 11 only
        send("a", to: Self.macs["c"]!, payload: 2)
        #expect(ports["c"]!.sent.isEmpty)
        #expect(ports["b"]!.sent.map { $0[42] } == [2], "unknown in VNI 10: flooded there")
    }

    @Test func spoofedSourceMACIsDroppedAndCounted() {
        send("a", to: 0xFFFF_FFFF_FFFF, payload: 1, spoofedMAC: 0x5254_0000_0066)
        #expect(ports["b"]!.sent.isEmpty)
        #expect(drops("a")["spoofed-source-mac"] == 1)
        #expect(drops("b").isEmpty)
    }
}
