import ButterflyDataplane

/// Helpers shared by the firewall suites: addresses in the matcher's 128-bit space, rules from
/// text, and a seeded generator so that every random test replays the same way.

/// An address in the matcher's space: IPv4 as `::ffff:a.b.c.d`, IPv6 as itself.
func peer(_ text: String) -> UInt128 {
    guard let address = IPAddress(text) else { fatalError("not an address: \(text)") }
    return peer(address)
}

func peer(_ address: IPAddress) -> UInt128 {
    switch address {
    case .v4(let value): RuleMatcher.key(ipv4: value)
    case .v6(let high, let low): UInt128(high) << 64 | UInt128(low)
    }
}

/// "10.0.0.0/8" or "2001:db8::/32" as an address and a prefix length.
func prefix(_ text: String) -> (address: IPAddress, length: Int) {
    let parts = text.split(separator: "/")
    guard parts.count == 2, let address = IPAddress(String(parts[0])), let length = Int(parts[1]) else {
        fatalError("not a prefix: \(text)")
    }
    return (address, length)
}

/// A compiler entry for `ipProtocol` (nil = any) and `ports`, from the given prefixes.
func rule(_ ipProtocol: UInt8?, _ ports: ClosedRange<UInt16> = 0...65535, from prefixes: String...)
    -> RuleMatcher.Entry
{
    rule(ipProtocol, ports, from: prefixes)
}

func rule(_ ipProtocol: UInt8?, _ ports: ClosedRange<UInt16> = 0...65535, from prefixes: [String]) -> RuleMatcher.Entry
{
    RuleMatcher.Entry(
        ipProtocol: ipProtocol,
        ports: ports,
        peers: prefixes.flatMap { text in
            let (address, length) = prefix(text)
            return RuleMatcher.ranges(address, prefixLength: length)
        }
    )
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same sequence on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
