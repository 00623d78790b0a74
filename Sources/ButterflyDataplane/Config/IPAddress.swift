#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address in network byte order semantics (the integer reads like the
/// address: 198.51.100.1 is 0xC633_6401).
///
/// Parsing and printing use the C library (`inet_pton` / `inet_ntop`), so the text form is the
/// canonical one (IPv6 compressed, lower case), which is what the API reports back.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    case v4(UInt32)
    case v6(high: UInt64, low: UInt64)

    /// Parses dotted-quad IPv4 or any RFC 4291 text form of IPv6. Nothing else: no
    /// surrounding spaces, no zone index, no prefix length.
    public init?(_ text: String) {
        // C would stop reading at a NUL and accept what came before it.
        guard !text.utf8.contains(0) else { return nil }
        if text.utf8.contains(UInt8(ascii: ":")) {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
            let bytes = withUnsafeBytes(of: &raw) { Array($0) }
            self = .v6(high: Self.bigEndianInteger(bytes[0..<8]), low: Self.bigEndianInteger(bytes[8..<16]))
        } else {
            var raw = in_addr()
            guard inet_pton(AF_INET, text, &raw) == 1 else { return nil }
            self = .v4(UInt32(bigEndian: raw.s_addr))
        }
    }

    public var isIPv4: Bool { if case .v4 = self { true } else { false } }

    /// `0.0.0.0` or `::` (RFC 1122 §3.2.1.3, RFC 4291 §2.5.2): "no address yet".
    public var isUnspecified: Bool {
        switch self {
        case .v4(let value): value == 0
        case .v6(let high, let low): high == 0 && low == 0
        }
    }

    /// `127.0.0.0/8` or `::1` (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3).
    public var isLoopback: Bool {
        switch self {
        case .v4(let value): value >> 24 == 127
        case .v6(let high, let low): high == 0 && low == 1
        }
    }

    /// `224.0.0.0/4` or `ff00::/8` (RFC 5771, RFC 4291 §2.7).
    public var isMulticast: Bool {
        switch self {
        case .v4(let value): value >> 28 == 0xE
        case .v6(let high, _): high >> 56 == 0xFF
        }
    }

    /// `255.255.255.255`, the IPv4 limited broadcast (RFC 919 §7). IPv6 has no broadcast.
    public var isLimitedBroadcast: Bool { self == .v4(0xFFFF_FFFF) }

    /// The prefix length of a whole address: 32 or 128.
    public var bitWidth: Int { isIPv4 ? 32 : 128 }

    /// The address in network byte order (4 or 16 bytes).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let value):
            return (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
        case .v6(let high, let low):
            return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
                + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
        }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch self {
        case .v4(let value):
            var raw = in_addr(s_addr: value.bigEndian)
            inet_ntop(AF_INET, &raw, &buffer, socklen_t(buffer.count))
        case .v6:
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: bytes) }
            inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// IPv4 sorts before IPv6; within a family, numerically.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        case (.v6(let ah, let al), .v6(let bh, let bl)): return (ah, al) < (bh, bl)
        }
    }

    private static func bigEndianInteger(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }
}
