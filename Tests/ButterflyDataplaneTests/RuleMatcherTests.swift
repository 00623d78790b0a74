import Testing

@testable import ButterflyDataplane

/// The rule compiler and its lookup: protocol table, elementary port intervals, merged address
/// ranges. Hand-written cases for every edge, then a model-based check against a naive
/// "does any rule match" reference over thousands of random rules.
@Suite struct RuleMatcherTests {
    static let tcp: UInt8 = 6
    static let udp: UInt8 = 17
    static let icmp: UInt8 = 1
    static let icmpv6: UInt8 = 58
    static let sctp: UInt8 = 132

    // MARK: Protocols

    @Test func emptyMatcherAllowsNothing() {
        let matcher = RuleMatcher([])
        #expect(matcher.isEmpty)
        #expect(matcher.ruleCount == 0)
        #expect(matcher.describe().isEmpty)
        for ipProtocol: UInt8 in [0, 1, 6, 17, 58, 132, 255] {
            for address in ["0.0.0.0", "10.0.0.1", "255.255.255.255", "::", "2001:db8::1", "ffff::"] {
                #expect(!matcher.allows(ipProtocol: ipProtocol, port: 80, peer: peer(address)))
            }
        }
    }

    @Test func anyProtocolMatchesEveryProtocolAndIgnoresPorts() {
        // Ports given with protocol -1 mean nothing: the rule covers every port.
        let matcher = RuleMatcher([rule(nil, 80...80, from: "10.0.0.0/8")])
        for ipProtocol in 0...255 {
            #expect(matcher.allows(ipProtocol: UInt8(ipProtocol), port: 1234, peer: peer("10.1.2.3")))
            #expect(!matcher.allows(ipProtocol: UInt8(ipProtocol), port: 80, peer: peer("11.0.0.1")))
        }
    }

    @Test func specificProtocolMatchesOnlyItself() {
        let matcher = RuleMatcher([rule(Self.udp, 53...53, from: "0.0.0.0/0")])
        #expect(matcher.allows(ipProtocol: Self.udp, port: 53, peer: peer("192.0.2.1")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 53, peer: peer("192.0.2.1")))
        #expect(!matcher.allows(ipProtocol: 136, port: 53, peer: peer("192.0.2.1")), "UDP-Lite is not UDP")
        for ipProtocol in 0...255 where ipProtocol != Int(Self.udp) {
            #expect(!matcher.allows(ipProtocol: UInt8(ipProtocol), port: 53, peer: peer("192.0.2.1")))
        }
    }

    @Test func anyProtocolAndSpecificRulesAddUp() {
        let matcher = RuleMatcher([
            rule(nil, from: "198.51.100.7/32"),
            rule(Self.tcp, 22...22, from: "10.0.0.0/8"),
        ])
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 9999, peer: peer("198.51.100.7")), "by the any rule")
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("10.9.9.9")), "by the tcp rule")
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 23, peer: peer("10.9.9.9")))
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 22, peer: peer("10.9.9.9")))
        #expect(matcher.allows(ipProtocol: Self.udp, port: 22, peer: peer("198.51.100.7")))
    }

    @Test func protocolsWithoutPortsIgnoreThePortFields() {
        // A rule may carry ports for ICMP (the API allows it); they select nothing.
        let matcher = RuleMatcher([
            rule(Self.icmp, 8...8, from: "10.0.0.0/8"),
            rule(Self.icmpv6, 100...200, from: "2001:db8::/32"),
            rule(47, 1...1, from: "192.0.2.0/24"),
        ])
        for port: UInt16 in [0, 1, 8, 9, 150, 65535] {
            #expect(matcher.allows(ipProtocol: Self.icmp, port: port, peer: peer("10.0.0.1")))
            #expect(matcher.allows(ipProtocol: Self.icmpv6, port: port, peer: peer("2001:db8::1")))
            #expect(matcher.allows(ipProtocol: 47, port: port, peer: peer("192.0.2.200")))
        }
        #expect(!matcher.allows(ipProtocol: Self.icmp, port: 8, peer: peer("2001:db8::1")))
        #expect(!matcher.allows(ipProtocol: Self.icmpv6, port: 8, peer: peer("10.0.0.1")))
    }

    @Test func sctpRuleWithEveryPortAndWithARange() {
        let everyPort = RuleMatcher([rule(Self.sctp, from: "10.0.0.0/8")])
        for port: UInt16 in [0, 1, 2905, 65534, 65535] {
            #expect(everyPort.allows(ipProtocol: Self.sctp, port: port, peer: peer("10.0.0.1")))
        }
        let range = RuleMatcher([rule(Self.sctp, 2905...2906, from: "10.0.0.0/8")])
        #expect(range.allows(ipProtocol: Self.sctp, port: 2905, peer: peer("10.0.0.1")))
        #expect(range.allows(ipProtocol: Self.sctp, port: 2906, peer: peer("10.0.0.1")))
        #expect(!range.allows(ipProtocol: Self.sctp, port: 2904, peer: peer("10.0.0.1")))
        #expect(!range.allows(ipProtocol: Self.sctp, port: 2907, peer: peer("10.0.0.1")))
    }

    // MARK: Ports

    @Test func overlappingRangesWithDifferentPeers() {
        let matcher = RuleMatcher([
            rule(Self.tcp, 1...100, from: "10.0.0.0/8"),
            rule(Self.tcp, 50...200, from: "192.168.0.0/16"),
        ])
        let a = peer("10.1.1.1")
        let b = peer("192.168.1.1")
        let expected: [(port: UInt16, a: Bool, b: Bool)] = [
            (0, false, false), (1, true, false), (49, true, false), (50, true, true), (75, true, true),
            (100, true, true), (101, false, true), (150, false, true), (200, false, true), (201, false, false),
            (65535, false, false),
        ]
        for (port, admitsA, admitsB) in expected {
            #expect(matcher.allows(ipProtocol: Self.tcp, port: port, peer: a) == admitsA, "port \(port) from A")
            #expect(matcher.allows(ipProtocol: Self.tcp, port: port, peer: b) == admitsB, "port \(port) from B")
        }
    }

    @Test func nestedAndIdenticalRanges() {
        let matcher = RuleMatcher([
            rule(Self.udp, 1000...2000, from: "10.0.0.0/8"),
            rule(Self.udp, 1500...1500, from: "172.16.0.0/12"),
            rule(Self.udp, 1000...2000, from: "192.168.0.0/16"),
        ])
        #expect(matcher.allows(ipProtocol: Self.udp, port: 1500, peer: peer("172.16.0.1")))
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 1499, peer: peer("172.16.0.1")))
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 1501, peer: peer("172.16.0.1")))
        for port: UInt16 in [1000, 1499, 1500, 1501, 2000] {
            #expect(matcher.allows(ipProtocol: Self.udp, port: port, peer: peer("10.0.0.1")))
            #expect(matcher.allows(ipProtocol: Self.udp, port: port, peer: peer("192.168.0.1")))
        }
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 999, peer: peer("10.0.0.1")))
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 2001, peer: peer("192.168.0.1")))
    }

    @Test func adjacentRangesJoinAndSinglePortsStaySingle() {
        let matcher = RuleMatcher([
            rule(Self.tcp, 1...100, from: "10.0.0.0/8"),
            rule(Self.tcp, 101...200, from: "10.0.0.0/8"),
            rule(Self.tcp, 443...443, from: "10.0.0.0/8"),
            rule(Self.tcp, 444...444, from: "192.0.2.0/24"),
        ])
        for port: UInt16 in [1, 100, 101, 200, 443] {
            #expect(matcher.allows(ipProtocol: Self.tcp, port: port, peer: peer("10.0.0.1")))
        }
        for port: UInt16 in [0, 201, 442, 444] {
            #expect(!matcher.allows(ipProtocol: Self.tcp, port: port, peer: peer("10.0.0.1")))
        }
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 444, peer: peer("192.0.2.9")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 443, peer: peer("192.0.2.9")))
        // Equal neighbouring sets compile to one interval.
        #expect(
            matcher.describe() == [
                "tcp ports 1-200 from 10.0.0.0/8", "tcp port 443 from 10.0.0.0/8", "tcp port 444 from 192.0.2.0/24",
            ]
        )
    }

    @Test func equalAddressSetsAreStoredOnce() {
        // A thousand single ports from the same two prefixes (in either order, overlapping):
        // one stored set; a thousand distinct peers: a thousand sets.
        var shared: [RuleMatcher.Entry] = []
        var distinct: [RuleMatcher.Entry] = []
        for index in 0..<1000 {
            let port = UInt16(2 * index + 1)
            let prefixes =
                index % 2 == 0 ? ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"] : ["2001:db8::/32", "10.0.0.0/8"]
            shared.append(rule(Self.tcp, port...port, from: prefixes))
            distinct.append(
                rule(Self.udp, port...port, from: ["198.51.100.\(index % 256)/32", "2001:db8::\(index)/128"])
            )
        }
        let matcher = RuleMatcher(shared + distinct)
        #expect(matcher.setCount == 1 + 1000)
        // Intervals: per protocol, 0 then each single port and the gap after it.
        #expect(matcher.intervalCount == 2 * (1 + 2 * 1000))
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 1999, peer: peer("10.200.0.1")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 2000, peer: peer("10.200.0.1")))
        #expect(matcher.allows(ipProtocol: Self.udp, port: 1999, peer: peer("198.51.100.231")))
        #expect(!matcher.allows(ipProtocol: Self.udp, port: 1999, peer: peer("198.51.100.230")))
    }

    @Test func portEdges() {
        let low = RuleMatcher([rule(Self.tcp, 0...0, from: "0.0.0.0/0")])
        #expect(low.allows(ipProtocol: Self.tcp, port: 0, peer: peer("1.2.3.4")))
        #expect(!low.allows(ipProtocol: Self.tcp, port: 1, peer: peer("1.2.3.4")))
        #expect(!low.allows(ipProtocol: Self.tcp, port: 65535, peer: peer("1.2.3.4")))
        let high = RuleMatcher([rule(Self.tcp, 65535...65535, from: "0.0.0.0/0")])
        #expect(high.allows(ipProtocol: Self.tcp, port: 65535, peer: peer("1.2.3.4")))
        #expect(!high.allows(ipProtocol: Self.tcp, port: 65534, peer: peer("1.2.3.4")))
        #expect(!high.allows(ipProtocol: Self.tcp, port: 0, peer: peer("1.2.3.4")))
        let whole = RuleMatcher([rule(Self.udp, 0...65535, from: "0.0.0.0/0")])
        for port: UInt16 in [0, 1, 32768, 65534, 65535] {
            #expect(whole.allows(ipProtocol: Self.udp, port: port, peer: peer("1.2.3.4")))
        }
        #expect(whole.describe() == ["udp ports 0-65535 from 0.0.0.0/0"])
        let ends = RuleMatcher([
            rule(Self.udp, 0...10, from: "10.0.0.0/8"),
            rule(Self.udp, 65525...65535, from: "10.0.0.0/8"),
        ])
        #expect(ends.allows(ipProtocol: Self.udp, port: 10, peer: peer("10.0.0.1")))
        #expect(!ends.allows(ipProtocol: Self.udp, port: 11, peer: peer("10.0.0.1")))
        #expect(!ends.allows(ipProtocol: Self.udp, port: 65524, peer: peer("10.0.0.1")))
        #expect(ends.allows(ipProtocol: Self.udp, port: 65525, peer: peer("10.0.0.1")))
        #expect(ends.allows(ipProtocol: Self.udp, port: 65535, peer: peer("10.0.0.1")))
    }

    // MARK: Addresses

    @Test func everyIPv4PrefixLength() {
        var generator = SeededGenerator(seed: 4)
        for length in 0...32 {
            let address = UInt32.random(in: .min ... .max, using: &generator)
            let matcher = RuleMatcher([rule(nil, from: "\(IPAddress.v4(address))/\(length)")])
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - length)
            let first = address & mask
            let last = first | ~mask
            #expect(matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.key(ipv4: first)), "/\(length) first")
            #expect(matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.key(ipv4: last)), "/\(length) last")
            #expect(matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.key(ipv4: address)), "/\(length) itself")
            if first > 0 {
                #expect(!matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.key(ipv4: first - 1)), "/\(length)")
            }
            if last < .max {
                #expect(!matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.key(ipv4: last + 1)), "/\(length)")
            }
            // Never an IPv6 address just beside the IPv4 block.
            #expect(!matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.mappedIPv4 - 1))
            #expect(!matcher.allows(ipProtocol: 6, port: 1, peer: RuleMatcher.mappedIPv4 + (1 << 32)))
        }
    }

    @Test func everyIPv6PrefixLength() {
        var generator = SeededGenerator(seed: 6)
        for length in 0...128 {
            // 2000::/3 keeps the prefix away from the IPv4-mapped block for every length ≥ 3.
            let high = UInt64.random(in: .min ... .max, using: &generator) & ~(7 << 61) | 1 << 61
            let low = UInt64.random(in: .min ... .max, using: &generator)
            let value = UInt128(high) << 64 | UInt128(low)
            let matcher = RuleMatcher([rule(nil, from: "\(IPAddress.v6(high: high, low: low))/\(length)")])
            let mask: UInt128 = length == 0 ? 0 : ~UInt128(0) << (128 - length)
            let first = value & mask
            let last = first | ~mask
            #expect(matcher.allows(ipProtocol: 17, port: 1, peer: first), "/\(length) first")
            #expect(matcher.allows(ipProtocol: 17, port: 1, peer: last), "/\(length) last")
            #expect(matcher.allows(ipProtocol: 17, port: 1, peer: value), "/\(length) itself")
            if first > 0 && length > 0 { #expect(!matcher.allows(ipProtocol: 17, port: 1, peer: first - 1)) }
            if last < .max { #expect(!matcher.allows(ipProtocol: 17, port: 1, peer: last + 1)) }
            // No IPv6 prefix admits IPv4.
            #expect(!matcher.allows(ipProtocol: 17, port: 1, peer: peer("10.0.0.1")), "/\(length)")
        }
    }

    @Test func hostBitsInACIDRAreIgnored() {
        let v4 = RuleMatcher([rule(Self.tcp, 22...22, from: "10.1.2.3/8")])
        #expect(v4.allows(ipProtocol: Self.tcp, port: 22, peer: peer("10.0.0.0")))
        #expect(v4.allows(ipProtocol: Self.tcp, port: 22, peer: peer("10.255.255.255")))
        #expect(!v4.allows(ipProtocol: Self.tcp, port: 22, peer: peer("11.0.0.0")))
        #expect(!v4.allows(ipProtocol: Self.tcp, port: 22, peer: peer("9.255.255.255")))
        #expect(v4.describe() == ["tcp port 22 from 10.0.0.0/8"])
        let v6 = RuleMatcher([rule(Self.tcp, 22...22, from: "2001:db8:1:2:3:4:5:6/48")])
        #expect(v6.allows(ipProtocol: Self.tcp, port: 22, peer: peer("2001:db8:1::")))
        #expect(v6.allows(ipProtocol: Self.tcp, port: 22, peer: peer("2001:db8:1:ffff:ffff:ffff:ffff:ffff")))
        #expect(!v6.allows(ipProtocol: Self.tcp, port: 22, peer: peer("2001:db8:2::")))
        #expect(v6.describe() == ["tcp port 22 from 2001:db8:1::/48"])
    }

    @Test func singleHosts() {
        let matcher = RuleMatcher([rule(Self.tcp, 80...80, from: "192.0.2.1/32", "2001:db8::1/128")])
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("192.0.2.1")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("192.0.2.0")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("192.0.2.2")))
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("2001:db8::1")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("2001:db8::")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("2001:db8::2")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 80, peer: peer("::ffff:192.0.2.2")))
    }

    @Test func allIPv6DoesNotAdmitIPv4AndAllIPv4DoesNotAdmitIPv6() {
        let v6 = RuleMatcher([rule(nil, from: "::/0")])
        for address in ["0.0.0.0", "10.0.0.1", "255.255.255.255"] {
            #expect(!v6.allows(ipProtocol: Self.tcp, port: 1, peer: peer(address)), "\(address)")
        }
        for address in ["::", "::1", "::fffe:ffff:ffff", "::1:0:0:0", "2001:db8::1", "fe80::1", "ffff::"] {
            #expect(v6.allows(ipProtocol: Self.tcp, port: 1, peer: peer(address)), "\(address)")
        }
        #expect(v6.allows(ipProtocol: Self.tcp, port: 1, peer: .max))
        let v4 = RuleMatcher([rule(nil, from: "0.0.0.0/0")])
        for address in ["0.0.0.0", "10.0.0.1", "255.255.255.255"] {
            #expect(v4.allows(ipProtocol: Self.tcp, port: 1, peer: peer(address)), "\(address)")
        }
        for address in ["::", "::1", "::fffe:ffff:ffff", "::1:0:0:0", "2001:db8::1", "ffff::"] {
            #expect(!v4.allows(ipProtocol: Self.tcp, port: 1, peer: peer(address)), "\(address)")
        }
        #expect(!v4.allows(ipProtocol: Self.tcp, port: 1, peer: .max))
    }

    @Test func ipv4MappedIPv6PrefixesAdmitNoIPv4() {
        // The mapped block belongs to IPv4: an IPv6 rule inside it (`::ffff:10.0.0.0/104`)
        // compiles to nothing, and one that contains it keeps only what lies around it.
        #expect(RuleMatcher.ranges(IPAddress("::ffff:10.0.0.0")!, prefixLength: 104).isEmpty)
        #expect(RuleMatcher.ranges(IPAddress("::ffff:0:0")!, prefixLength: 96).isEmpty)
        let inside = RuleMatcher([rule(nil, from: "::ffff:10.0.0.0/104")])
        #expect(!inside.allows(ipProtocol: Self.tcp, port: 1, peer: peer("10.0.0.1")))
        #expect(inside.describe().isEmpty)
        let around = RuleMatcher([rule(nil, from: "::fffe:0:0/95")])
        #expect(around.allows(ipProtocol: Self.tcp, port: 1, peer: peer("::fffe:0:0")))
        #expect(around.allows(ipProtocol: Self.tcp, port: 1, peer: peer("::fffe:ffff:ffff")))
        #expect(!around.allows(ipProtocol: Self.tcp, port: 1, peer: peer("0.0.0.0")))
        #expect(!around.allows(ipProtocol: Self.tcp, port: 1, peer: peer("255.255.255.255")))
        #expect(around.describe() == ["all from ::fffe:0:0/96"])
        let wide = RuleMatcher.ranges(IPAddress("::")!, prefixLength: 80)
        #expect(wide == [0...(RuleMatcher.mappedIPv4 - 1)])
    }

    @Test func prefixLengthsOutOfRangeAreClamped() {
        #expect(RuleMatcher.ranges(.v4(0x0A01_0203), prefixLength: 40) == [peer("10.1.2.3")...peer("10.1.2.3")])
        #expect(RuleMatcher.ranges(.v4(0x0A01_0203), prefixLength: -1) == [peer("0.0.0.0")...peer("255.255.255.255")])
    }

    @Test func overlappingPrefixesMerge() {
        let matcher = RuleMatcher([
            rule(Self.tcp, 22...22, from: "10.0.0.0/9", "10.128.0.0/9", "10.64.0.0/10", "11.0.0.0/8", "192.0.2.7/32")
        ])
        #expect(matcher.describe() == ["tcp port 22 from 10.0.0.0/7, 192.0.2.7/32"])
        #expect(matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("11.255.255.255")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("12.0.0.0")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("192.0.2.6")))
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("192.0.2.8")))
    }

    @Test func ruleWithoutPeersAdmitsNothing() {
        // A members rule whose group has no members yet.
        let matcher = RuleMatcher([RuleMatcher.Entry(ipProtocol: Self.tcp, ports: 22...22, peers: [])])
        #expect(!matcher.isEmpty)
        #expect(!matcher.allows(ipProtocol: Self.tcp, port: 22, peer: peer("10.0.0.1")))
        #expect(matcher.describe().isEmpty)
    }

    // MARK: describe

    @Test func describeListsWhatWasCompiled() {
        let matcher = RuleMatcher([
            rule(Self.tcp, 22...22, from: "10.0.0.0/8"),
            rule(Self.tcp, 80...81, from: "192.168.1.0/24", "10.0.0.0/8"),
            rule(Self.udp, from: "2001:db8::/32"),
            rule(Self.icmp, from: "0.0.0.0/0"),
            rule(nil, from: "198.51.100.7/32"),
            rule(Self.sctp, from: "10.0.0.0/30", "10.0.0.4/31"),
        ])
        #expect(matcher.ruleCount == 6)
        #expect(
            matcher.describe() == [
                "icmp from 0.0.0.0/0",
                "tcp port 22 from 10.0.0.0/8",
                "tcp ports 80-81 from 10.0.0.0/8, 192.168.1.0/24",
                "udp ports 0-65535 from 2001:db8::/32",
                "sctp ports 0-65535 from 10.0.0.0/30, 10.0.0.4/31",
                "all from 198.51.100.7/32",
            ]
        )
        #expect(RuleMatcher([rule(47, from: "10.0.0.0/8")]).describe(peerWord: "to") == ["47 to 10.0.0.0/8"])
        // Everything but the IPv4 block, in prefixes: none of them is an IPv4 one.
        let allV6 = RuleMatcher([rule(nil, from: "::/0")]).describe()
        #expect(allV6.count == 1)
        #expect(allV6.first?.hasPrefix("all from ::/81, ") == true)
        #expect(allV6.first?.hasSuffix(", 8000::/1") == true)
        #expect(allV6.first?.contains(".") == false)
    }

    // MARK: Model-based

    /// The reference: a rule list, checked one rule at a time, with prefixes compared bit by
    /// bit on their own family (nothing shared with the compiler).
    struct ModelRule {
        var ipProtocol: UInt8?
        var ports: ClosedRange<UInt16>
        var prefixes: [(address: IPAddress, length: Int)]

        static func carriesPorts(_ ipProtocol: UInt8) -> Bool { [6, 17, 132, 136].contains(ipProtocol) }

        func matches(ipProtocol packetProtocol: UInt8, port: UInt16, peer: UInt128) -> Bool {
            if let ipProtocol {
                guard ipProtocol == packetProtocol else { return false }
                if Self.carriesPorts(ipProtocol) && !ports.contains(port) { return false }
            }
            let isIPv4 = peer >> 32 == 0xFFFF
            return prefixes.contains { prefix in
                switch prefix.address {
                case .v4(let value):
                    guard isIPv4 else { return false }
                    let length = min(max(prefix.length, 0), 32)
                    return length == 0 || (UInt32(truncatingIfNeeded: peer) ^ value) >> (32 - length) == 0
                case .v6(let high, let low):
                    guard !isIPv4 else { return false }
                    let length = min(max(prefix.length, 0), 128)
                    return length == 0 || (peer ^ (UInt128(high) << 64 | UInt128(low))) >> (128 - length) == 0
                }
            }
        }

        var entry: RuleMatcher.Entry {
            RuleMatcher.Entry(
                ipProtocol: ipProtocol,
                ports: ports,
                peers: prefixes.flatMap { RuleMatcher.ranges($0.address, prefixLength: $0.length) }
            )
        }
    }

    static let protocols: [UInt8?] = [nil, 6, 6, 6, 17, 17, 1, 58, 132, 136, 47]

    static func randomPort(_ generator: inout SeededGenerator) -> UInt16 {
        switch Int.random(in: 0..<8, using: &generator) {
        case 0: [0, 1, 65534, 65535].randomElement(using: &generator)!
        case 1: UInt16.random(in: .min ... .max, using: &generator)
        default: UInt16.random(in: 0..<300, using: &generator)
        }
    }

    static func randomPorts(_ generator: inout SeededGenerator) -> ClosedRange<UInt16> {
        switch Int.random(in: 0..<10, using: &generator) {
        case 0: return 0...65535
        case 1, 2, 3:
            let port = randomPort(&generator)
            return port...port
        default:
            let a = randomPort(&generator)
            let b =
                Int.random(in: 0..<5, using: &generator) == 0
                ? randomPort(&generator) : a &+ UInt16.random(in: 0..<40, using: &generator)
            return min(a, b)...max(a, b)
        }
    }

    /// Addresses from a few neighbourhoods (so that prefixes nest and overlap), plus any.
    static func randomAddress(_ generator: inout SeededGenerator) -> IPAddress {
        let noise = UInt64.random(in: .min ... .max, using: &generator)
        switch Int.random(in: 0..<8, using: &generator) {
        case 0: return .v4(0x0A00_0000 | UInt32(truncatingIfNeeded: noise) & 0xFFFF)
        case 1: return .v4(0xC0A8_0000 | UInt32(truncatingIfNeeded: noise) & 0x3FF)
        case 2: return .v4(UInt32(truncatingIfNeeded: noise))
        case 3: return .v6(high: 0x2001_0DB8_0000_0000, low: noise & 0xFFFF)
        case 4: return .v6(high: 0x2001_0DB8_0000_0000 | noise >> 48, low: noise)
        case 5: return .v6(high: 0, low: noise & 0x1_FFFF_FFFF_FFFF)  // around the mapped block
        case 6: return .v6(high: 0xFE80_0000_0000_0000, low: noise)
        default: return .v6(high: UInt64.random(in: .min ... .max, using: &generator), low: noise)
        }
    }

    static func randomRule(_ generator: inout SeededGenerator) -> ModelRule {
        let prefixes = (0..<Int.random(in: 0...3, using: &generator)).map { _ -> (IPAddress, Int) in
            let address = randomAddress(&generator)
            let width = address.bitWidth
            let length =
                Int.random(in: 0..<6, using: &generator) == 0
                ? Int.random(in: 0...width, using: &generator) : Int.random(in: (width - 24)...width, using: &generator)
            return (address, length)
        }
        return ModelRule(
            ipProtocol: protocols.randomElement(using: &generator)!,
            ports: randomPorts(&generator),
            prefixes: prefixes
        )
    }

    /// A packet's peer: often just inside or just outside one rule's prefix.
    static func randomPeer(_ generator: inout SeededGenerator, rules: [ModelRule]) -> UInt128 {
        guard Int.random(in: 0..<3, using: &generator) > 0, let rule = rules.randomElement(using: &generator),
            let prefix = rule.prefixes.randomElement(using: &generator)
        else { return peer(randomAddress(&generator)) }
        let bits = prefix.address.bitWidth - min(max(prefix.length, 0), prefix.address.bitWidth)
        let base = peer(prefix.address)
        let span: UInt128 = bits == 128 ? .max : (UInt128(1) << bits) - 1
        let first = base & ~span
        let last = first | span
        switch Int.random(in: 0..<5, using: &generator) {
        case 0: return first
        case 1: return last
        case 2: return first &- 1
        case 3: return last &+ 1
        default: return first | (UInt128(UInt64.random(in: .min ... .max, using: &generator)) & span)
        }
    }

    func checkAgainstModel(rules: [ModelRule], packets: Int, generator: inout SeededGenerator) {
        let matcher = RuleMatcher(rules.map(\.entry))
        #expect(matcher.ruleCount == rules.count)
        var mismatches = 0
        var admitted = 0
        for _ in 0..<packets {
            let ipProtocol =
                Int.random(in: 0..<10, using: &generator) == 0
                ? UInt8.random(in: .min ... .max, using: &generator)
                : Self.protocols.randomElement(using: &generator)! ?? 6
            let port = Self.randomPort(&generator)
            let address = Self.randomPeer(&generator, rules: rules)
            let expected = rules.contains { $0.matches(ipProtocol: ipProtocol, port: port, peer: address) }
            if expected { admitted += 1 }
            let actual = matcher.allows(ipProtocol: ipProtocol, port: port, peer: address)
            if actual != expected {
                mismatches += 1
                if mismatches <= 5 {
                    Issue.record(
                        "protocol \(ipProtocol) port \(port) peer \(String(address, radix: 16)): \(actual), model \(expected)"
                    )
                }
            }
        }
        #expect(mismatches == 0)
        // The packets are not all trivially refused (or the check would prove nothing).
        if rules.count > 50 { #expect(admitted > packets / 20) }
    }

    @Test func thousandsOfRandomRulesAgreeWithTheModel() {
        var generator = SeededGenerator(seed: 0xF1_4E_3A_11)
        let rules = (0..<5000).map { _ in Self.randomRule(&generator) }
        checkAgainstModel(rules: rules, packets: 6000, generator: &generator)
    }

    @Test func manySmallRandomRuleSetsAgreeWithTheModel() {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<300 {
            let rules = (0..<Int.random(in: 0...12, using: &generator)).map { _ in Self.randomRule(&generator) }
            checkAgainstModel(rules: rules, packets: 200, generator: &generator)
        }
    }

    /// `adding` gives what compiling every rule gives: the same intervals and sets (what
    /// `describe` prints), and the same verdicts as the model, rule after rule from empty and
    /// a few at a time onto a large set.
    @Test func addingRulesEqualsCompilingThemAll() {
        var generator = SeededGenerator(seed: 0xADD5)
        for _ in 0..<60 {
            let base = (0..<Int.random(in: 0...40, using: &generator)).map { _ in Self.randomRule(&generator) }
            var matcher = RuleMatcher(base.map(\.entry))
            var rules = base
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let more = (0..<Int.random(in: 1...2, using: &generator)).map { _ in Self.randomRule(&generator) }
                matcher = matcher.adding(Self.list(more))
                rules += more
                let compiled = RuleMatcher(rules.map(\.entry))
                #expect(matcher.describe() == compiled.describe())
                #expect(matcher.ruleCount == rules.count)
            }
            for _ in 0..<200 {
                let ipProtocol = Self.protocols.randomElement(using: &generator)! ?? 6
                let port = Self.randomPort(&generator)
                let address = Self.randomPeer(&generator, rules: rules)
                let expected = rules.contains { $0.matches(ipProtocol: ipProtocol, port: port, peer: address) }
                #expect(matcher.allows(ipProtocol: ipProtocol, port: port, peer: address) == expected)
            }
        }
        // Onto thousands of rules, one at a time.
        let large = (0..<3000).map { _ in Self.randomRule(&generator) }
        var matcher = RuleMatcher(large.map(\.entry))
        var rules = large
        for _ in 0..<10 {
            let one = Self.randomRule(&generator)
            matcher = matcher.adding(Self.list([one]))
            rules.append(one)
        }
        #expect(matcher.describe() == RuleMatcher(rules.map(\.entry)).describe())
    }

    static func list(_ rules: [ModelRule]) -> RuleMatcher.RuleList {
        var list = RuleMatcher.RuleList()
        for rule in rules {
            list.add(ipProtocol: rule.entry.ipProtocol, ports: rule.entry.ports)
            list.addPeers(rule.entry.peers)
        }
        return list
    }
}
