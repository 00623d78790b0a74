import ButterflyDataplane

/// The identifier the CLI prints in front of a rule and accepts in `sg rule del SG HASH`.
///
/// Portable by construction: FNV-1a (64-bit) over the UTF-8 bytes of the rule's canonical
/// form, printed as 16 lower-case hex digits. The canonical form is
///
///     direction=<INBOUND|OUTBOUND>;protocol=<-1..255>;ports=<start>-<end>|-;peer=cidr:<addr>/<len>|sg:<id>
///
/// with the address in its normalised text form. Any client in any language computes the same
/// value (docs/API.md gives test vectors). The original printed the C++ standard library's
/// `std::hash` of a string, which differed between builds.
public enum RuleHash {
    public static func canonicalForm(of rule: FirewallRule) -> String {
        let direction = rule.direction == .inbound ? "INBOUND" : "OUTBOUND"
        let proto = rule.ipProtocol.map { String($0) } ?? "-1"
        let ports = rule.ports.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "-"
        let peer =
            switch rule.peer {
            case .cidr(let address, let length): "cidr:\(address)/\(length)"
            case .members(let group): "sg:\(group)"
            }
        return "direction=\(direction);protocol=\(proto);ports=\(ports);peer=\(peer)"
    }

    public static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    public static func hash(of rule: FirewallRule) -> String {
        let digits = String(fnv1a64(canonicalForm(of: rule)), radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
