import ButterflyDataplane
import ButterflyPacket

/// A batch of frames sitting in a pool, as a node receives it from a port: 250 buffers written
/// once at setup. A stage run walks the batch four times (1,000 packets), so the headers are in
/// cache as they are in the worker, where the port has just copied the frame.
final class FrameBatch {
    let pool: PacketPool
    let batch: PacketBatch

    /// `build(index, frame)` writes frame `index` and returns its length.
    init(count: Int = Scenarios.batchSize, build: (Int, UnsafeMutableRawPointer, PacketPool) -> Int) {
        pool = PacketPool(capacity: count + 8)
        batch = PacketBatch()
        for index in 0..<count {
            guard var packet = pool.allocate() else { preconditionFailure("pool too small") }
            packet.length = UInt16(build(index, pool.data(packet), pool))
            batch.append(packet)
        }
    }
}

/// Addresses shared by the fixtures.
enum Addresses {
    static let guestA: UInt64 = 0x5254_0000_000A
    static let guestB: UInt64 = 0x5254_0000_000B
    /// A guest behind the remote VTEP.
    static let remoteGuest: UInt64 = 0x5254_0000_0099
    static let guestAIP: UInt32 = 0x0A01_000A  // 10.1.0.10
    static let guestBIP: UInt32 = 0x0A01_000B  // 10.1.0.11
    static let remoteGuestIP: UInt32 = 0x0A01_0063  // 10.1.0.99
    static let localVTEPMAC: UInt64 = 0x0200_0000_0001
    static let remoteVTEPMAC: UInt64 = 0x0200_0000_0002
    static let localVTEP: UInt32 = 0x0A00_0001  // 10.0.0.1
    static let remoteVTEP: UInt32 = 0x0A00_0002  // 10.0.0.2
    static let vni: UInt32 = 1

    /// The tunnel from the remote VTEP to us (frames the underlay receives).
    static let inboundTunnel = VXLANEncapsulation(
        sourceMAC: remoteVTEPMAC,
        destinationMAC: localVTEPMAC,
        source: .v4(remoteVTEP),
        destination: .v4(localVTEP)
    )

    static func nic(id: String, mac: UInt64, ip: UInt32) -> NICConfig {
        NICConfig(
            id: id,
            mac: MACAddress(value: mac),
            vni: vni,
            ips: [.v4(ip)],
            kind: .bench,
            path: "",
            ipAntiSpoof: true,
            bypassFiltering: false,
            securityGroups: [],
            packetTracePath: nil,
            sniffTarget: nil
        )
    }
}

/// Ethernet + IPv4 + UDP parsing, as a classifier does before any node looks at L3/L4.
final class ParseStage: Scenario {
    let frames: FrameBatch
    private(set) var digest = 0

    init(size: FrameSize) {
        frames = FrameBatch { index, frame, _ in
            BenchFrames.udp(
                into: frame,
                length: size.rawValue,
                sourceMAC: Addresses.guestA,
                destinationMAC: Addresses.guestB,
                source: Addresses.guestAIP,
                destination: Addresses.guestBIP &+ UInt32(index),
                sourcePort: 40_000 &+ UInt16(index)
            )
        }
    }

    func run() -> Int {
        let pool = frames.pool
        let batch = frames.batch
        var parsed = 0
        var sum = 0
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                let packet = batch[index]
                let data = pool.data(packet)
                let length = Int(packet.length)
                guard let ethernet = Ethernet.parse(data, length: length), ethernet.etherType == EtherType.ipv4,
                    let ip = IPv4.parse(data + Ethernet.headerLength, length: length &- Ethernet.headerLength),
                    ip.protocol == IPProtocol.udp, !ip.isFragment,
                    let udp = UDP.parse(data + (Ethernet.headerLength &+ ip.headerLength), length: ip.payloadLength)
                else { continue }
                parsed &+= 1
                sum &+= Int(udp.sourcePort) &+ Int(ip.destination) &+ Int(truncatingIfNeeded: ethernet.destination)
            }
        }
        digest = sum
        return parsed
    }
}

/// `FrameHeaders.walk` + `AntiSpoof.check` of a NIC with ip_anti_spoof on (as `Worker.fromGuest`
/// does them), on frames it may send.
final class AntiSpoofStage: Scenario {
    let frames: FrameBatch
    let policy: AntiSpoof.Policy

    init(size: FrameSize) {
        policy = AntiSpoof.Policy(Addresses.nic(id: "a", mac: Addresses.guestA, ip: Addresses.guestAIP))
        frames = FrameBatch { index, frame, _ in
            BenchFrames.udp(
                into: frame,
                length: size.rawValue,
                sourceMAC: Addresses.guestA,
                destinationMAC: Addresses.guestB,
                source: Addresses.guestAIP,
                destination: Addresses.guestBIP,
                sourcePort: 40_000 &+ UInt16(index)
            )
        }
    }

    func run() -> Int {
        let pool = frames.pool
        let batch = frames.batch
        var passed = 0
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                let packet = batch[index]
                let data = pool.data(packet)
                let length = Int(packet.length)
                let headers = FrameHeaders.walk(data, length: length)
                if AntiSpoof.check(data, length: length, headers: headers, policy: policy) == nil {
                    passed &+= 1
                }
            }
        }
        return passed
    }
}

/// The switch's per-packet work as `Worker.fromGuest` does it: learn the source MAC at the
/// ingress slot, look up the destination. The table (grown to hold them: worker tables start
/// at 48 entries and grow on demand) knows 1,000 MACs; the batch's sources and destinations
/// are 500 different ones of them.
final class SwitchStage: Scenario {
    static let knownMACs = 1000
    static let ingressSlot: Int32 = 3
    static let now: UInt32 = 1000
    let frames: FrameBatch
    var table: MACTable

    static func mac(_ index: Int) -> UInt64 { 0x5254_0100_0000 | UInt64(index) }

    init(size: FrameSize) {
        table = MACTable(capacity: Self.knownMACs)
        for index in 0..<Self.knownMACs {
            table.learn(Self.mac(index), location: Int32(index % 8), now: Self.now)
        }
        frames = FrameBatch { index, frame, _ in
            // Sources are MACs 0, 4, 8, …; destinations 2, 6, 10, … (never a source, so their
            // location stays what the table was filled with).
            BenchFrames.udp(
                into: frame,
                length: size.rawValue,
                sourceMAC: Self.mac(index &* 4 % Self.knownMACs),
                destinationMAC: Self.mac((index &* 4 &+ 2) % Self.knownMACs),
                source: Addresses.guestAIP,
                destination: Addresses.guestBIP
            )
        }
    }

    deinit { table.deallocate() }

    func run() -> Int {
        let pool = frames.pool
        let batch = frames.batch
        let ageLimit = Worker.Settings().macAgeSeconds
        var hits = 0
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                let data = pool.data(batch[index])
                let source = data.loadMAC(at: 6)
                if source & (1 << 40) == 0 {
                    table.learn(source, location: Self.ingressSlot, now: Self.now)
                }
                let destination = data.loadMAC(at: 0)
                let location =
                    destination & (1 << 40) == 0 ? table.lookup(destination, now: Self.now, ageLimit: ageLimit) : -1
                if location >= 0 { hits &+= 1 }
            }
        }
        return hits
    }
}

/// What `VXLANUnderlay` does per frame to a remote VTEP: flow hash → UDP source port, then
/// prepend outer Ethernet + IPv4 + UDP + VXLAN in the headroom. Each run encapsulates copies
/// of the same handles, so the inner frames stay as built.
final class EncapStage: Scenario {
    let frames: FrameBatch
    let tunnel = VXLANEncapsulation(
        sourceMAC: Addresses.localVTEPMAC,
        destinationMAC: Addresses.remoteVTEPMAC,
        source: .v4(Addresses.localVTEP),
        destination: .v4(Addresses.remoteVTEP)
    )
    private(set) var digest = 0

    init(size: FrameSize) {
        frames = FrameBatch { index, frame, _ in
            BenchFrames.udp(
                into: frame,
                length: size.rawValue,
                sourceMAC: Addresses.guestA,
                destinationMAC: Addresses.remoteGuest,
                source: Addresses.guestAIP,
                destination: Addresses.remoteGuestIP,
                sourcePort: 40_000 &+ UInt16(index)
            )
        }
    }

    func run() -> Int {
        let pool = frames.pool
        let batch = frames.batch
        var encapsulated = 0
        var sum = 0
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                var packet = batch[index]
                let hash = FlowHash.hash(pool.data(packet), length: Int(packet.length))
                let sourcePort = FlowHash.vxlanSourcePort(hash)
                if tunnel.encapsulate(&packet, pool: pool, vni: Addresses.vni, sourcePort: sourcePort) {
                    encapsulated &+= 1
                    sum &+= Int(packet.length)
                }
            }
        }
        digest = sum
        return encapsulated
    }
}

/// `VXLANDecapsulation.decapsulate` of frames from the remote VTEP (outer IPv4 checksum
/// verified); only the handle changes, so the same frames serve every run.
final class DecapStage: Scenario {
    let frames: FrameBatch
    private(set) var digest = 0

    init(size: FrameSize) {
        frames = FrameBatch(count: Scenarios.batchSize) { _, frame, pool in
            BenchFrames.vxlan(
                into: frame,
                pool: pool,
                innerLength: size.rawValue,
                innerSourceMAC: Addresses.remoteGuest,
                innerDestinationMAC: Addresses.guestA,
                tunnel: Addresses.inboundTunnel,
                vni: Addresses.vni
            )
        }
    }

    func run() -> Int {
        let pool = frames.pool
        let batch = frames.batch
        var decapsulated = 0
        var sum = 0
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                var packet = batch[index]
                if case .frame(let outer) = VXLANDecapsulation.decapsulate(&packet, pool: pool) {
                    decapsulated &+= 1
                    sum &+= Int(outer.vni) &+ Int(packet.length)
                }
            }
        }
        digest = sum
        return decapsulated
    }
}
