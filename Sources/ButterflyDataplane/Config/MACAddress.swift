/// A 48-bit Ethernet address, stored in the low 48 bits of a `UInt64` in transmission order
/// (first octet most significant), so it compares, hashes and copies as one integer.
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: UInt64

    public init(value: UInt64) {
        precondition(value >> 48 == 0, "a MAC address has 48 bits")
        self.value = value
    }

    public init(octets: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        self.value =
            UInt64(octets.0) << 40 | UInt64(octets.1) << 32 | UInt64(octets.2) << 24
            | UInt64(octets.3) << 16 | UInt64(octets.4) << 8 | UInt64(octets.5)
    }

    /// Parses exactly `xx:xx:xx:xx:xx:xx` (six pairs of hex digits, either case), the only
    /// form the Butterfly API accepts.
    public init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 17 else { return nil }
        var value: UInt64 = 0
        for index in 0..<6 {
            let base = index * 3
            if index > 0 && utf8[base - 1] != UInt8(ascii: ":") { return nil }
            guard let high = Self.hexValue(utf8[base]), let low = Self.hexValue(utf8[base + 1]) else { return nil }
            value = value << 8 | UInt64(high << 4 | low)
        }
        self.value = value
    }

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)

    public var isMulticast: Bool { (value >> 40) & 1 == 1 }
    public var isBroadcast: Bool { value == Self.broadcast.value }
    /// `00:00:00:00:00:00`: unicast by its group bit, but no interface's address.
    public var isZero: Bool { value == 0 }

    /// The six octets in transmission order.
    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * $0)) } }

    /// Lower-case `xx:xx:xx:xx:xx:xx`.
    public var description: String {
        octets.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined(separator: ":")
    }

    public static func < (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.value < rhs.value }

    private static func hexValue(_ ascii: UInt8) -> UInt8? {
        switch ascii {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return ascii - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return ascii - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return ascii - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
