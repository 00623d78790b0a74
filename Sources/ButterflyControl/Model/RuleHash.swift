import ButterflyDataplane

/// The 16-hex-digit identifier the CLI prints in front of a rule and accepts in
/// `butterfly sg rule del SG HASH`.
///
/// Defined so that any client can compute it and so that it equals the original Butterfly
/// CLI's value for the same rule (scripts that saved hashes keep working):
///
/// 1. Canonical form: the rule in protobuf text format exactly as a C++ protobuf printer
///    writes it, fields in number order, one per line, two-space indent for `cidr`:
///
///        direction: INBOUND
///        protocol: 6
///        port_start: 22
///        port_end: 22
///        cidr {
///          address: "198.51.100.0"
///          mask_size: 24
///        }
///
///    (`port_start`/`port_end` only for rules with ports; `security_group: "<id>"` in place
///    of `cidr` for member rules; addresses normalised; every line ends with `\n`).
/// 2. Hash: the 64-bit MurmurHash-derived `_Hash_bytes` of GCC's libstdc++ with seed
///    0xc70f6907 (the function behind `std::hash<std::string>` on 64-bit Linux), printed as
///    16 lower-case hex digits. docs/API.md gives the algorithm and test vectors.
public enum RuleHash {
    public static func canonicalForm(of rule: FirewallRule) -> String {
        var text = "direction: \(rule.direction == .inbound ? "INBOUND" : "OUTBOUND")\n"
        text += "protocol: \(rule.ipProtocol.map { String($0) } ?? "-1")\n"
        if let ports = rule.ports {
            text += "port_start: \(ports.lowerBound)\nport_end: \(ports.upperBound)\n"
        }
        switch rule.peer {
        case .cidr(let address, let length):
            text += "cidr {\n  address: \"\(address)\"\n  mask_size: \(length)\n}\n"
        case .members(let group):
            text += "security_group: \"\(escape(group))\"\n"
        }
        return text
    }

    public static func hash(of rule: FirewallRule) -> String {
        let digits = String(libstdcxxHash(Array(canonicalForm(of: rule).utf8)), radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// libstdc++'s `_Hash_bytes` for 64-bit `size_t`, seed 0xc70f6907.
    public static func libstdcxxHash(_ bytes: [UInt8]) -> UInt64 {
        let multiplier: UInt64 = 0xc6a4_a793_5bd1_e995
        func shiftMix(_ value: UInt64) -> UInt64 { value ^ (value >> 47) }
        func loadLittleEndian(_ slice: ArraySlice<UInt8>) -> UInt64 {
            slice.reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        var hash: UInt64 = 0xc70f_6907 ^ (UInt64(bytes.count) &* multiplier)
        let wholeLength = bytes.count & ~7
        var offset = 0
        while offset < wholeLength {
            let data = shiftMix(loadLittleEndian(bytes[offset..<offset + 8]) &* multiplier) &* multiplier
            hash ^= data
            hash &*= multiplier
            offset += 8
        }
        if bytes.count > wholeLength {
            hash ^= loadLittleEndian(bytes[wholeLength...])
            hash &*= multiplier
        }
        hash = shiftMix(hash) &* multiplier
        return shiftMix(hash)
    }

    /// C-style escaping as the C++ text printer applies to string fields.
    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\n"): out += "\\n"
            case UInt8(ascii: "\r"): out += "\\r"
            case UInt8(ascii: "\t"): out += "\\t"
            case UInt8(ascii: "\""): out += "\\\""
            case UInt8(ascii: "'"): out += "\\'"
            case UInt8(ascii: "\\"): out += "\\\\"
            case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let octal = String(byte, radix: 8)
                out += "\\" + String(repeating: "0", count: 3 - octal.count) + octal
            }
        }
        return out
    }
}
