import ButterflyDataplane
import ButterflyPacket
import HashTreeCollections

/// Security groups and tracked connections of the sizes the benchmarks ask for.
enum FirewallFixtures {
    /// The UDP/TCP port the benchmark flows go to (BenchFrames' default destination port).
    static let servicePort: UInt16 = 5001

    /// A group of `count` inbound rules: one allows the benchmark's peers (10.0.0.0/8, every
    /// protocol to `servicePort`), the others are single TCP/UDP ports and ranges from
    /// scattered documentation-range and private prefixes, IPv4 and IPv6, as real groups are.
    static func group(rules count: Int) -> SecurityGroupConfig {
        var rules: [FirewallRule] = [
            FirewallRule(
                direction: .inbound,
                ipProtocol: 17,
                ports: servicePort...servicePort,
                peer: .cidr(.v4(0x0A00_0000), prefixLength: 8)
            ),
            FirewallRule(
                direction: .inbound,
                ipProtocol: 6,
                ports: servicePort...servicePort,
                peer: .cidr(.v4(0x0A00_0000), prefixLength: 8)
            ),
        ]
        var index = 0
        while rules.count < count {
            let port = UInt16(10_000 + index % 50_000)
            let peer: FirewallRule.Peer
            if index % 3 == 0 {
                let high: UInt64 = 0x2001_0DB8_0000_0000 | UInt64(index & 0xFFFF) << 16
                peer = .cidr(.v6(high: high, low: 0), prefixLength: 48)
            } else {
                let network: UInt32 = 0xC633_6400 &+ UInt32(index % 256) << 8
                peer = .cidr(.v4(network), prefixLength: UInt8(24 + index % 9))
            }
            rules.append(
                FirewallRule(
                    direction: .inbound,
                    ipProtocol: index % 2 == 0 ? 6 : 17,
                    ports: index % 5 == 0 ? port...(port &+ 100) : port...port,
                    peer: peer
                )
            )
            index += 1
        }
        return SecurityGroupConfig(id: "bench", rules: rules, members: [])
    }

    static func policy(rules: Int, for nic: NICConfig) -> FirewallPolicy {
        var nic = nic
        nic.securityGroups = ["bench"]
        return FirewallPolicy.compile(nic, groups: ["bench": group(rules: rules)], generation: 7)
    }

    /// Fills `count` replied UDP connections of a NIC's zone with peers in 172.16.0.0/12, so
    /// that the benchmark's own flows are looked up among them.
    static func fill(_ table: ConnectionTable, count: Int, slot: Int, zone: UInt32, local: UInt32, generation: UInt32) {
        for index in 0..<count {
            let key = ConnectionKey(
                zone: zone,
                ipProtocol: 17,
                local: RuleMatcher.key(ipv4: local),
                remote: RuleMatcher.key(ipv4: 0xAC10_0000 | UInt32(index >> 8)),
                localPort: 5001,
                remotePort: UInt16(truncatingIfNeeded: 1024 + index & 0xFF)
            )
            let entry = table.insert(
                key,
                hash: key.hash,
                slot: slot,
                state: .replied,
                origin: .toGuest,
                generation: generation,
                now: Worker.currentSecond()
            )
            precondition(entry >= 0, "connection table full at \(index) of \(count)")
        }
    }
}

/// The firewall node on its own, frames toward a guest (inbound). One batch of 250 frames sits
/// in the pool (hot, as a port just wrote it); before each pass the frames' source address and
/// port are rewritten to the next 250 of 16,000 flows, so lookups spread over the table as real
/// traffic does (the rewrite, two stores per frame, is part of the measured time).
///
/// - `rules`: untracked TCP ACKs (a stray segment passes on its rule and opens nothing): every
///   packet misses the connection table and is matched against the compiled rules.
/// - `connections`: UDP packets of tracked connections: every packet hits the table.
final class FirewallStage: Scenario {
    enum Path { case rules, connections }

    let firewall: Firewall
    let policy: FirewallPolicy
    let frames: FrameBatch
    static let flows = 16_000
    /// Per flow: source address and source port (peers in 10.9.0.0/16).
    let sources: [UInt32]
    let ports: [UInt16]
    private var next = 0
    static let zone: UInt32 = 1

    init(size: FrameSize, rules: Int, connections: Int, path: Path) {
        var capacity = 4096
        while capacity < connections + connections / 4 + 20_000 { capacity <<= 1 }
        firewall = Firewall(connectionCapacity: capacity)
        firewall.now = Worker.currentSecond()
        let nic = Addresses.nic(id: "a", mac: Addresses.guestA, ip: Addresses.guestAIP)
        policy = FirewallFixtures.policy(rules: rules, for: nic)
        FirewallFixtures.fill(
            firewall.connections,
            count: connections,
            slot: 0,
            zone: Self.zone,
            local: Addresses.guestAIP,
            generation: policy.generation
        )
        sources = (0..<Self.flows).map { 0x0A09_0000 | UInt32($0 >> 6) }
        ports = (0..<Self.flows).map { UInt16(30_000 + $0 & 63) }
        frames = FrameBatch { _, frame, _ in
            let length = BenchFrames.udp(
                into: frame,
                length: size.rawValue,
                sourceMAC: Addresses.remoteGuest,
                destinationMAC: Addresses.guestA,
                source: 0x0A09_0000,
                destination: Addresses.guestAIP
            )
            if path == .rules {
                // Turn the UDP header into a 20-byte TCP header with ACK set.
                frame.storeByte(IPProtocol.tcp, at: 14 + 9)
                frame.storeByte(0x50, at: 34 + 12)
                frame.storeByte(0x10, at: 34 + 13)
            }
            return length
        }
        if path == .connections {
            // Track every flow once (as their first packets would).
            for flow in 0..<Self.flows {
                let key = ConnectionKey(
                    zone: Self.zone,
                    ipProtocol: 17,
                    local: RuleMatcher.key(ipv4: Addresses.guestAIP),
                    remote: RuleMatcher.key(ipv4: sources[flow]),
                    localPort: FirewallFixtures.servicePort,
                    remotePort: ports[flow]
                )
                let entry = firewall.connections.insert(
                    key,
                    hash: key.hash,
                    slot: 0,
                    state: .replied,
                    origin: .toGuest,
                    generation: policy.generation,
                    now: firewall.now
                )
                precondition(entry >= 0, "connection table full")
            }
        }
    }

    func run() -> Int {
        var passed = 0
        let pool = frames.pool
        let batch = frames.batch
        for _ in 0..<Scenarios.batchesPerRun {
            for index in 0..<batch.count {
                let packet = batch[index]
                let data = pool.data(packet)
                let flow = next &+ index
                data.storeBigEndian32(sources[flow], at: 26)
                data.storeBigEndian16(ports[flow], at: 34)
                let headers = FrameHeaders.walk(data, length: Int(packet.length))
                if firewall.filter(data, headers: headers, direction: .toGuest, slot: 0, zone: Self.zone, policy: policy)
                    == nil
                {
                    passed &+= 1
                }
            }
            next = next &+ batch.count == Self.flows ? 0 : next &+ batch.count
        }
        return passed
    }
}

/// The control plane's side of a rule change: compiling a group of `rules` rules (the fixture
/// group of the stage benchmarks) for one NIC. Returns the best of `repeats` compilations, in
/// seconds (`dataplane-profile compile [RULES]`).
public enum CompileTiming {
    public static func best(rules: Int, repeats: Int = 5, clock: () -> Double) -> Double {
        let nic = Addresses.nic(id: "a", mac: Addresses.guestA, ip: Addresses.guestAIP)
        let group = FirewallFixtures.group(rules: rules)
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = clock()
            var compiled = nic
            compiled.securityGroups = ["bench"]
            let policy = FirewallPolicy.compile(compiled, groups: ["bench": group], generation: 1)
            precondition(policy.inbound.ruleCount == rules)
            best = min(best, clock() - start)
        }
        return best
    }
}
