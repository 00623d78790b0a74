import ButterflyProtocol
import Testing

@testable import ButterflyCLI

/// `sg rule add` options become the rule the API expects, and the rule line prints it.
struct RuleOptionsTests {
    @Test func portRangeAndCIDR() throws {
        let rule = try Commands.parseRule(
            ["--ip-proto", "tcp", "--port-start", "1000", "--port-end", "2000", "--cidr", "10.0.0.0/24"],
            path: "t"
        )
        #expect(rule.direction == .inbound && rule.protocol == 6)
        #expect(rule.portStart == 1000 && rule.portEnd == 2000)
        #expect(rule.cidr.address == "10.0.0.0" && rule.cidr.maskSize == 24)
        #expect(
            try Commands.ruleLine(rule)
                == "f44fac34f8667927 | direction: INBOUND - IP protocol: 6 - port start: 1000 - port end: 2000"
                + " - cidr: 10.0.0.0/24 - members of sg: Ø"
        )
    }

    @Test func namedProtocolsAndAll() throws {
        for (name, number) in [("icmp", 1), ("udp", 17), ("icmpv6", 58), ("sctp", 132), ("all", -1), ("-1", -1)] {
            var arguments = ["--ip-proto", name, "--sg-members", "x"]
            if number == 17 { arguments += ["--port", "53"] }
            #expect(try Commands.parseRule(arguments, path: "t").protocol == Int32(number))
        }
    }

    @Test func outboundDirection() throws {
        let rule = try Commands.parseRule(["--dir", "out", "--ip-proto", "icmp", "--cidr", "::/0"], path: "t")
        #expect(rule.direction == .outbound)
    }

    @Test(arguments: [
        ["--cidr", "0.0.0.0/0"], ["--ip-proto", "tcp", "--cidr", "0.0.0.0/0"],
        ["--ip-proto", "udp", "--port", "70000", "--cidr", "0.0.0.0/0"],
        ["--ip-proto", "tcp", "--port-start", "9", "--port-end", "8", "--cidr", "0.0.0.0/0"],
        ["--ip-proto", "icmp"], ["--ip-proto", "icmp", "--cidr", "0.0.0.0/0", "--sg-members", "x"],
        ["--ip-proto", "icmp", "--cidr", "0.0.0.0"], ["--ip-proto", "256", "--cidr", "0.0.0.0/0"],
        ["--dir", "up", "--ip-proto", "icmp", "--cidr", "0.0.0.0/0"], ["--ip-proto"], ["--bogus", "1"],
    ])
    func refused(_ arguments: [String]) {
        #expect(throws: CLIError.self) { try Commands.parseRule(arguments, path: "t") }
    }
}
