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
    /// A real `Worker`, two NICs in one VNI: guest rx → anti-spoof → switch → guest tx.
    case chainLocal = "chain-local"
    /// A real `Worker` with a `VXLANUnderlay`: guest rx → anti-spoof → switch → encap → underlay tx.
    case chainEncap = "chain-encap"
    /// A real `Worker` with a `VXLANUnderlay`: underlay rx → decap → switch → guest tx.
    case chainDecap = "chain-decap"
    /// `TCPSegmenter`: a guest's TSO super-frames cut into 1,448-byte segments (1500 B only).
    case segment = "tso-segment"
    /// `TCPCoalescer`: in-order segments merged back for the receiving guest (1500 B only).
    case merge = "gro-merge"

    /// Offload stages work on full-sized TCP segments only.
    public func runs(at size: FrameSize) -> Bool {
        switch self {
        case .segment, .merge: size == .large
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
            case .chainLocal: LocalChain(size: size)
            case .chainEncap: EncapChain(size: size)
            case .chainDecap: DecapChain(size: size)
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
