import ButterflyDataplane
import ButterflyPacket
import HashTreeCollections

/// A real `Worker`, configured only through its public API (`publish`, `underlay`) and driven
/// with `runOnce()` on the calling thread, with synthetic ports in place of tap / AF_PACKET.
///
/// ```
///  local:  guest A rx ─► anti-spoof ─► switch (VNI 1) ─► guest B tx
///  encap:  guest A rx ─► anti-spoof ─► switch ─► VXLAN encap ─► underlay tx
///  decap:  underlay rx ─► decap ─► switch ─► guest A tx
/// ```
/// A run injects 250 frames into the source port and calls `runOnce()`, four times; the sink
/// counts what arrives. Counters of drops are checked after the warm-up.
class ChainFixture {
    let worker: Worker
    let host: HostConfig
    var config: DataplaneConfig
    var attachments: TreeDictionary<String, NICAttachment> = [:]
    /// Firewall on every NIC (100 rules, 100,000 tracked connections), or bypass_filtering.
    let firewall: Bool
    static let rules = 100
    static let trackedConnections = 100_000

    init(vtep: UInt32?, firewall: Bool) {
        self.firewall = firewall
        host = HostConfig(
            vtepAddress: vtep.map { .v4($0) },
            socketDirectory: "/tmp",
            nicMTU: nil,
            offloads: false
        )
        worker = Worker(settings: Worker.Settings(), host: host)
        config = DataplaneConfig(host: host)
    }

    func attach(id: String, mac: UInt64, ip: UInt32, port: SyntheticPort) {
        var nic = Addresses.nic(id: id, mac: mac, ip: ip)
        if firewall {
            nic.firewall = FirewallFixtures.policy(rules: Self.rules, for: nic)
        } else {
            nic.bypassFiltering = true
        }
        config.nics[id] = nic
        attachments[id] = NICAttachment(nicID: id, port: port)
    }

    /// Publishes the configuration and lets the worker adopt it; with the firewall on, fills
    /// the connection table (in the first NIC's zone) to its benchmark size.
    func publish() {
        config.version += 1
        worker.publish(DataplaneUpdate(config: config, attachments: attachments))
        worker.runOnce()
        precondition(worker.adoptedVersion == config.version, "worker did not adopt the configuration")
        if firewall, let (slot, zone) = worker.trackingZone(ofNIC: "bench-a"), worker.connections.count == 0 {
            FirewallFixtures.fill(
                worker.connections,
                count: Self.trackedConnections,
                slot: slot,
                zone: zone,
                local: Addresses.guestAIP,
                generation: config.nics["bench-a"]!.firewall!.generation
            )
        }
    }

    /// Injects one run's frames into `source`, a batch per worker pass.
    @inline(__always)
    func drive(_ source: SyntheticPort) {
        for _ in 0..<Scenarios.batchesPerRun {
            source.inject(Scenarios.batchSize)
            worker.runOnce()
        }
    }

    /// Traps if any NIC or the global block counted a drop.
    func checkNoDrops(_ what: String) {
        for (id, attachment) in attachments {
            let drops = attachment.counters.snapshot.drops
            precondition(drops.isEmpty, "\(what): NIC \(id) dropped \(drops)")
        }
        let drops = worker.globalCounters.snapshot.drops
        precondition(drops.isEmpty, "\(what): global drops \(drops)")
    }

    static func udpFrame(size: FrameSize, from source: UInt64, to destination: UInt64, flow: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: size.rawValue) { buffer, count in
            count = BenchFrames.udp(
                into: UnsafeMutableRawPointer(buffer.baseAddress!),
                length: size.rawValue,
                sourceMAC: source,
                destinationMAC: destination,
                source: source == Addresses.guestA ? Addresses.guestAIP : Addresses.guestBIP,
                destination: Addresses.remoteGuestIP,
                sourcePort: 40_000 &+ UInt16(flow)
            )
        }
    }

    /// A frame the remote VTEP sends: remote guest → guest A, in VNI 1.
    static func inboundVXLANFrame(size: FrameSize) -> [UInt8] {
        let scratch = PacketPool(capacity: 1)
        return [UInt8](unsafeUninitializedCapacity: PacketPool.maximumFrame) { buffer, count in
            count = BenchFrames.vxlan(
                into: UnsafeMutableRawPointer(buffer.baseAddress!),
                pool: scratch,
                innerLength: size.rawValue,
                innerSourceMAC: Addresses.remoteGuest,
                innerDestinationMAC: Addresses.guestA,
                tunnel: Addresses.inboundTunnel,
                vni: Addresses.vni
            )
        }
    }

    /// Guest frames of 4 flows (different UDP source ports), as templates.
    static func flows(size: FrameSize, from source: UInt64, to destination: UInt64) -> [[UInt8]] {
        (0..<4).map { udpFrame(size: size, from: source, to: destination, flow: $0) }
    }
}

/// Two NICs in one VNI: A sends to B.
final class LocalChain: ChainFixture, Scenario {
    let guestA: SyntheticPort
    let guestB: SyntheticPort

    init(size: FrameSize, firewall: Bool) {
        guestA = SyntheticPort(
            name: "guest-a",
            frames: Self.flows(size: size, from: Addresses.guestA, to: Addresses.guestB)
        )
        guestB = SyntheticPort(
            name: "guest-b",
            frames: [Self.udpFrame(size: size, from: Addresses.guestB, to: Addresses.guestA, flow: 0)]
        )
        super.init(vtep: nil, firewall: firewall)
        attach(id: "bench-a", mac: Addresses.guestA, ip: Addresses.guestAIP, port: guestA)
        attach(id: "bench-b", mac: Addresses.guestB, ip: Addresses.guestBIP, port: guestB)
        publish()
        // B speaks once, so the switch knows where B is (otherwise A's frames are flooded).
        guestB.inject(1)
        worker.runOnce()
        precondition(guestA.transmittedFrames == 1, "B's first frame did not reach A")
        guestB.inspectTransmit = { frame, length in
            precondition(length == size.rawValue && frame.loadMAC(at: 0) == Addresses.guestB, "B got a wrong frame")
        }
        drive(guestA)
        guestB.inspectTransmit = nil
        checkNoDrops(firewall ? "chain-local" : "chain-local-bypass")
    }

    func run() -> Int {
        let before = guestB.transmittedFrames
        drive(guestA)
        return guestB.transmittedFrames &- before
    }
}

/// One NIC and the VXLAN underlay: A sends to a guest behind the remote VTEP, learned from a
/// VXLAN frame the remote VTEP sent first (as in the real exchange: the remote MAC and the
/// VTEP's next-hop MAC are learned from the network, not configured).
final class EncapChain: ChainFixture, Scenario {
    let guestA: SyntheticPort
    let network: SyntheticPort

    init(size: FrameSize, firewall: Bool) {
        guestA = SyntheticPort(
            name: "guest-a",
            frames: Self.flows(size: size, from: Addresses.guestA, to: Addresses.remoteGuest)
        )
        network = SyntheticPort(name: "underlay", frames: [Self.inboundVXLANFrame(size: .small)])
        super.init(vtep: Addresses.localVTEP, firewall: firewall)
        worker.underlay = VXLANUnderlay(
            port: network,
            localMAC: Addresses.localVTEPMAC,
            settings: VXLANUnderlay.Settings(
                vtep: .v4(Addresses.localVTEP),
                prefixLength: 24,
                gateway: nil,
                peers: []
            )
        )
        attach(id: "bench-a", mac: Addresses.guestA, ip: Addresses.guestAIP, port: guestA)
        publish()
        // The remote VTEP speaks first: its guest's MAC is learned as remote, its own MAC as
        // the next hop of 10.0.0.2.
        network.inject(1)
        worker.runOnce()
        precondition(guestA.transmittedFrames == 1, "the remote guest's frame did not reach A")
        network.resetCounts()
        let expectedLength = size.rawValue + VXLAN.ipv4Overhead
        network.inspectTransmit = { frame, length in
            let valid =
                length == expectedLength && frame.loadMAC(at: 0) == Addresses.remoteVTEPMAC
                && frame.loadBigEndian32(at: 30) == Addresses.remoteVTEP
                && frame.loadBigEndian16(at: 36) == VXLAN.udpPort
            precondition(valid, "the underlay got a wrong frame")
        }
        drive(guestA)
        precondition(network.transmittedFrames == Scenarios.packetsPerRun, "encap chain lost frames")
        network.inspectTransmit = nil
        checkNoDrops(firewall ? "chain-encap" : "chain-encap-bypass")
    }

    func run() -> Int {
        let before = network.transmittedFrames
        drive(guestA)
        return network.transmittedFrames &- before
    }
}

/// One NIC and the VXLAN underlay: the remote VTEP sends to A.
final class DecapChain: ChainFixture, Scenario {
    let guestA: SyntheticPort
    let network: SyntheticPort

    init(size: FrameSize, firewall: Bool) {
        guestA = SyntheticPort(
            name: "guest-a",
            frames: [Self.udpFrame(size: .small, from: Addresses.guestA, to: Addresses.remoteGuest, flow: 0)]
        )
        network = SyntheticPort(name: "underlay", frames: [Self.inboundVXLANFrame(size: size)])
        super.init(vtep: Addresses.localVTEP, firewall: firewall)
        worker.underlay = VXLANUnderlay(
            port: network,
            localMAC: Addresses.localVTEPMAC,
            settings: VXLANUnderlay.Settings(
                vtep: .v4(Addresses.localVTEP),
                prefixLength: 24,
                gateway: nil,
                peers: []
            )
        )
        attach(id: "bench-a", mac: Addresses.guestA, ip: Addresses.guestAIP, port: guestA)
        publish()
        // A speaks once so the switch knows it (its frame is flooded to the VNI's group).
        guestA.inject(1)
        worker.runOnce()
        guestA.inspectTransmit = { frame, length in
            precondition(length == size.rawValue && frame.loadMAC(at: 0) == Addresses.guestA, "A got a wrong frame")
        }
        drive(network)
        precondition(guestA.transmittedFrames == Scenarios.packetsPerRun, "decap chain lost frames")
        guestA.inspectTransmit = nil
        checkNoDrops(firewall ? "chain-decap" : "chain-decap-bypass")
    }

    func run() -> Int {
        let before = guestA.transmittedFrames
        drive(network)
        return guestA.transmittedFrames &- before
    }
}
