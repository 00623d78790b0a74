import ButterflyDataplane
import Testing

@testable import ButterflyControl

// Expected values were produced with g++ (libstdc++) `std::hash<std::string>` on x86_64 Linux,
// printed with "%016zx".
@Suite struct RuleHashTests {
    static let tcpCanonical =
        "direction: INBOUND\nprotocol: 6\nport_start: 1000\nport_end: 2000\ncidr {\n  address: \"10.0.0.0\"\n  mask_size: 24\n}\n"
    static let groupCanonical = "direction: INBOUND\nprotocol: 42\nsecurity_group: \"sg-2\"\n"

    static let tcpRule = FirewallRule(
        direction: .inbound,
        ipProtocol: 6,
        ports: 1000...2000,
        peer: .cidr(IPAddress("10.0.0.0")!, prefixLength: 24)
    )
    static let groupRule = FirewallRule(
        direction: .inbound,
        ipProtocol: 42,
        ports: nil,
        peer: .members(ofSecurityGroup: "sg-2")
    )

    @Test func libstdcxxHashVectors() {
        #expect(RuleHash.libstdcxxHash([]) == 0x553e_9390_1e46_2a6e)
        #expect(RuleHash.libstdcxxHash(Array(Self.tcpCanonical.utf8)) == 0xf44f_ac34_f866_7927)
        #expect(RuleHash.libstdcxxHash(Array(Self.groupCanonical.utf8)) == 0xcfdb_94f9_418c_88f1)
    }

    @Test func canonicalForms() {
        #expect(RuleHash.canonicalForm(of: Self.tcpRule) == Self.tcpCanonical)
        #expect(RuleHash.canonicalForm(of: Self.groupRule) == Self.groupCanonical)
    }

    @Test func canonicalFormOfOutboundAllProtocolsIPv6() {
        let rule = FirewallRule(
            direction: .outbound,
            ipProtocol: nil,
            ports: nil,
            peer: .cidr(IPAddress("2001:0db8:0000:0000:0000:0000:0000:0000")!, prefixLength: 32)
        )
        #expect(
            RuleHash.canonicalForm(of: rule)
                == "direction: OUTBOUND\nprotocol: -1\ncidr {\n  address: \"2001:db8::\"\n  mask_size: 32\n}\n"
        )
    }

    @Test func canonicalFormEscapesTheGroupID() {
        let rule = FirewallRule(
            direction: .inbound,
            ipProtocol: 1,
            ports: nil,
            peer: .members(ofSecurityGroup: "a\"b\\c'd\ne\tf\u{1}é")
        )
        #expect(
            RuleHash.canonicalForm(of: rule)
                == "direction: INBOUND\nprotocol: 1\nsecurity_group: \"a\\\"b\\\\c\\'d\\ne\\tf\\001\\303\\251\"\n"
        )
    }

    @Test func hashOfRules() {
        #expect(RuleHash.hash(of: Self.tcpRule) == "f44fac34f8667927")
        #expect(RuleHash.hash(of: Self.groupRule) == "cfdb94f9418c88f1")
    }

    /// A rule whose hash starts with two zero digits (found by searching ports with g++):
    /// tcp 186-186 from 10.0.0.0/24 → 00e4918cb816200a.
    @Test func hashIsZeroPadded() {
        let rule = FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 186...186,
            peer: .cidr(IPAddress("10.0.0.0")!, prefixLength: 24)
        )
        #expect(RuleHash.hash(of: rule) == "00e4918cb816200a")
    }

    @Test func hashIsAlways16LowerCaseHexDigits() {
        for port in UInt16(0)..<600 {
            let rule = FirewallRule(
                direction: .inbound,
                ipProtocol: 6,
                ports: port...port,
                peer: .cidr(IPAddress("10.0.0.0")!, prefixLength: 24)
            )
            let hash = RuleHash.hash(of: rule)
            #expect(hash.count == 16)
            #expect(hash.allSatisfy { "0123456789abcdef".contains($0) }, "\(hash)")
            #expect(UInt64(hash, radix: 16) == RuleHash.libstdcxxHash(Array(RuleHash.canonicalForm(of: rule).utf8)))
        }
    }

    @Test func distinctRulesHaveDistinctHashes() {
        var outbound = Self.tcpRule
        outbound.direction = .outbound
        #expect(RuleHash.hash(of: outbound) != RuleHash.hash(of: Self.tcpRule))
    }

    @Test func tailLengthsAllContribute() {
        // Inputs whose lengths cover every tail size 0...7: each extra byte changes the hash.
        var seen = Set<UInt64>()
        for length in 0...16 {
            seen.insert(RuleHash.libstdcxxHash([UInt8](repeating: 0x61, count: length)))
        }
        #expect(seen.count == 17)
    }
}
