/// One benchmarked piece of the data plane, ready to run: fixtures are built (and checked) by
/// `make`, so that a run measures only packet work.
///
/// Every run processes exactly `Scenarios.packetsPerRun` packets: four batches of 250, the
/// shape a node sees from a port (a batch holds up to 256). That is 1,000, so ordo-one's
/// `.kilo` scaling factor turns "runs per second" into packets per second and "mallocs per
/// run" into mallocs per packet.
public protocol Scenario: AnyObject {
    /// Processes `Scenarios.packetsPerRun` packets; returns how many took the expected way
    /// (parsed, passed, hit, encapsulated, delivered…).
    func run() -> Int
}

/// What can be benchmarked, in the order of a packet's way through the data plane.
public enum ScenarioKind: String, CaseIterable, Sendable {
    /// Ethernet + IPv4 + UDP header parsing (ButterflyPacket).
    case parse
    /// `FrameHeaders.walk` + `AntiSpoof.check` with ip_anti_spoof on, on valid IPv4/UDP frames.
    case antiSpoof = "anti-spoof"
    /// `MACTable` learn (source) + lookup (destination), 1,000 known MACs.
    case switching = "switch"
    /// `FlowHash` source port + `VXLANEncapsulation.encapsulate`, IPv4 underlay.
    case encap
    /// `VXLANDecapsulation.decapsulate` of IPv4 VXLAN frames.
    case decap
    /// `Firewall.filter` toward a guest, untracked TCP ACKs matched against 1, 100 and 10,000
    /// rules (1,000 tracked connections in the table).
    case firewallRules1 = "fw-rules-1"
    case firewallRules100 = "fw-rules-100"
    case firewallRules10k = "fw-rules-10k"
    /// `Firewall.filter` toward a guest, packets of tracked connections among 1 thousand,
    /// 100 thousand and 1 million (100 rules).
    case firewallConnections1k = "fw-conns-1k"
    case firewallConnections100k = "fw-conns-100k"
    case firewallConnections1M = "fw-conns-1m"
    /// A real `Worker`, two NICs in one VNI, firewall on (100 rules, 100,000 tracked
    /// connections): guest rx → anti-spoof → firewall out → switch → firewall in → guest tx.
    case chainLocal = "chain-local"
    /// A real `Worker` with a `VXLANUnderlay`, firewall on: guest rx → anti-spoof → firewall
    /// out → switch → encap → underlay tx.
    case chainEncap = "chain-encap"
    /// A real `Worker` with a `VXLANUnderlay`, firewall on: underlay rx → decap → switch →
    /// firewall in → guest tx.
    case chainDecap = "chain-decap"
    /// The same three chains with `bypass_filtering` (no anti-spoof, no firewall).
    case chainLocalBypass = "chain-local-bypass"
    case chainEncapBypass = "chain-encap-bypass"
    case chainDecapBypass = "chain-decap-bypass"
    /// `VhostUserPort.receive`: frames a guest made available in its transmitq (one
    /// descriptor each, 12-byte header, VERSION_1 + MRG_RXBUF + EVENT_IDX as testpmd's
    /// virtio_user negotiates) dequeued into pool buffers; the guest is simulated on the same
    /// core, so this is our cost per frame without the cross-core cache traffic.
    case vhostReceive = "vhost-rx"
    /// `VhostUserPort.transmit`: frames enqueued into the receive buffers a guest posted.
    case vhostTransmit = "vhost-tx"
    /// `TCPSegmenter`: a guest's TSO super-frames cut into 1,448-byte segments (1500 B only).
    case segment = "tso-segment"
    /// `TCPCoalescer`: in-order segments merged back for the receiving guest (1500 B only).
    case merge = "gro-merge"

    /// Offload stages work on full-sized TCP segments only.
    public func runs(at size: FrameSize) -> Bool {
        switch self {
        case .segment, .merge: size == .large
        case .firewallRules1, .firewallRules100, .firewallRules10k, .firewallConnections1k,
            .firewallConnections100k, .firewallConnections1M:
            size == .small
        default: true
        }
    }
}

public enum Scenarios {
    public static let packetsPerRun = 1000
    /// Packets per port batch: four batches make one run.
    public static let batchSize = 250
    static let batchesPerRun = packetsPerRun / batchSize

    /// Builds, warms up and checks a scenario; traps with a message if it does not behave (a
    /// benchmark that measures a drop path would be worse than none).
    public static func make(_ kind: ScenarioKind, size: FrameSize) -> any Scenario {
        let scenario: any Scenario =
            switch kind {
            case .parse: ParseStage(size: size)
            case .antiSpoof: AntiSpoofStage(size: size)
            case .switching: SwitchStage(size: size)
            case .encap: EncapStage(size: size)
            case .decap: DecapStage(size: size)
            case .firewallRules1: FirewallStage(size: size, rules: 1, connections: 1000, path: .rules)
            case .firewallRules100: FirewallStage(size: size, rules: 100, connections: 1000, path: .rules)
            case .firewallRules10k: FirewallStage(size: size, rules: 10_000, connections: 1000, path: .rules)
            case .firewallConnections1k:
                FirewallStage(size: size, rules: 100, connections: 1000, path: .connections)
            case .firewallConnections100k:
                FirewallStage(size: size, rules: 100, connections: 100_000, path: .connections)
            case .firewallConnections1M:
                FirewallStage(size: size, rules: 100, connections: 1_000_000, path: .connections)
            case .chainLocal: LocalChain(size: size, firewall: true)
            case .chainEncap: EncapChain(size: size, firewall: true)
            case .chainDecap: DecapChain(size: size, firewall: true)
            case .chainLocalBypass: LocalChain(size: size, firewall: false)
            case .chainEncapBypass: EncapChain(size: size, firewall: false)
            case .chainDecapBypass: DecapChain(size: size, firewall: false)
            case .vhostReceive: VhostStage(size: size, direction: .fromGuest)
            case .vhostTransmit: VhostStage(size: size, direction: .toGuest)
            case .segment: SegmentStage()
            case .merge: MergeStage()
            }
        for _ in 0..<100 {
            let expected = scenario.run()
            precondition(
                expected == packetsPerRun,
                "\(kind.rawValue) \(size.label): \(expected) of \(packetsPerRun) packets took the expected way"
            )
        }
        return scenario
    }
}
