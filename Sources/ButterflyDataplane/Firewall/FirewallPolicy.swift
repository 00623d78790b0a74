import HashTreeCollections

/// What a NIC's security groups compile to: the inbound matcher, the outbound matcher (or
/// none: a NIC without outbound rules may reach anything), and a generation that changes with
/// every compilation, so the worker knows which tracked connections to check again.
///
/// ```
///  NIC.securityGroups ─► groups' rules (all add up; unknown ids ignored)
///      rule.peer = cidr ──────────────► prefix ranges
///      rule.peer = members of group G ─► G's member addresses (none while G does not exist)
///  ─► inbound RuleMatcher + outbound RuleMatcher?          (compiled on the control thread)
/// ```
public final class FirewallPolicy: @unchecked Sendable, Equatable {
    // Safe: immutable after init.
    public let inbound: RuleMatcher
    /// `nil`: no outbound rule, every destination allowed.
    public let outbound: RuleMatcher?
    /// Distinct for every compilation of every NIC (the compiler's counter).
    public let generation: UInt32
    /// The NIC's addresses (IPv4-mapped or IPv6) and its MAC-derived link-local address:
    /// a connection the guest opened from an address it no longer has is cut.
    public let ownAddresses: [UInt128]

    /// Identity: two compilations are different policies even with equal rules.
    public static func == (lhs: FirewallPolicy, rhs: FirewallPolicy) -> Bool { lhs === rhs }

    public init(inbound: RuleMatcher, outbound: RuleMatcher?, generation: UInt32, ownAddresses: [UInt128] = []) {
        self.inbound = inbound
        self.outbound = outbound
        self.generation = generation
        self.ownAddresses = ownAddresses
    }

    /// An empty policy: nothing allowed in, anything out (a NIC whose groups have no rules).
    public static let empty = FirewallPolicy(inbound: RuleMatcher([]), outbound: nil, generation: 0)

    @inline(__always)
    public func owns(_ address: UInt128) -> Bool { ownAddresses.contains(address) }

    /// The NIC's addresses in the matcher's space, with the EUI-64 link-local address of its
    /// MAC (RFC 4291 §2.5.1: universal/local bit flipped).
    public static func ownAddresses(of nic: NICConfig) -> [UInt128] {
        var result: [UInt128] = nic.ips.map {
            switch $0 {
            case .v4(let value): RuleMatcher.key(ipv4: value)
            case .v6(let high, let low): UInt128(high) << 64 | UInt128(low)
            }
        }
        result.append(AntiSpoof.linkLocal(mac: nic.mac.value))
        return result
    }

    /// Compiles `nic`'s groups as found in `groups`.
    public static func compile(
        _ nic: NICConfig,
        groups: TreeDictionary<String, SecurityGroupConfig>,
        generation: UInt32
    ) -> FirewallPolicy {
        let matchers = compileMatchers(nic.securityGroups, groups: groups)
        return FirewallPolicy(
            inbound: matchers.inbound,
            outbound: matchers.outbound,
            generation: generation,
            ownAddresses: ownAddresses(of: nic)
        )
    }

    /// The matchers of a list of group ids: what NICs with the same list share (a group
    /// change on a thousand NICs compiles its rules once, not a thousand times).
    public static func compileMatchers(
        _ ids: [String],
        groups: TreeDictionary<String, SecurityGroupConfig>
    ) -> (inbound: RuleMatcher, outbound: RuleMatcher?) {
        var inbound = RuleMatcher.RuleList()
        var outbound = RuleMatcher.RuleList()
        var seen = Set<String>()
        for id in ids where seen.insert(id).inserted {
            guard let group = groups[id] else { continue }
            for rule in group.rules.unordered {
                if rule.direction == .inbound {
                    add(rule, to: &inbound, groups: groups)
                } else {
                    add(rule, to: &outbound, groups: groups)
                }
            }
        }
        return (RuleMatcher(inbound), outbound.count == 0 ? nil : RuleMatcher(outbound))
    }

    /// This policy's matchers with `rule` added (a rule added to one of the NIC's groups):
    /// the same as compiling the groups again (`RuleMatcher.adding`), at the cost of the
    /// intervals the rule touches.
    public func matchers(
        adding rule: FirewallRule,
        groups: TreeDictionary<String, SecurityGroupConfig>
    ) -> (inbound: RuleMatcher, outbound: RuleMatcher?) {
        var list = RuleMatcher.RuleList()
        Self.add(rule, to: &list, groups: groups)
        if rule.direction == .inbound { return (inbound.adding(list), outbound) }
        return (inbound, outbound?.adding(list) ?? RuleMatcher(list))
    }

    static func add(
        _ rule: FirewallRule,
        to list: inout RuleMatcher.RuleList,
        groups: TreeDictionary<String, SecurityGroupConfig>
    ) {
        // A port-carrying protocol without ports (SCTP may omit them) means every port.
        list.add(ipProtocol: rule.ipProtocol, ports: rule.ports ?? 0...65535)
        switch rule.peer {
        case .cidr(let address, let prefixLength):
            list.addPeers(address, prefixLength: Int(prefixLength))
        case .members(let id):
            for member in groups[id]?.members ?? [] { list.addPeers(member, prefixLength: member.bitWidth) }
        }
    }

    /// The effective rules, as `butterfly nic firewall` prints them.
    public func describe() -> [String] {
        var lines = ["inbound (\(inbound.ruleCount) rules):"]
        lines += inbound.describe().map { "  allow " + $0 }
        if let outbound {
            lines.append("outbound (\(outbound.ruleCount) rules):")
            lines += outbound.describe(peerWord: "to").map { "  allow " + $0 }
        } else {
            lines.append("outbound: any destination")
        }
        return lines
    }
}
