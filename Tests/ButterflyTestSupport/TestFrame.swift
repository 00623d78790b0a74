#if canImport(Glibc)
    import Glibc
#endif

/// Frames built field by field for the tests of the header walk and of anti-spoofing:
/// Ethernet with any stack of tags, IPv4 with options and fragment fields, IPv6 with a chain
/// of extension headers, and the upper-layer messages those tests look at.
///
/// ```
///  ethernet(tags:type:) ─┬─ ipv4(options:flagsAndOffset:) ─┬─ udp / tcp / sctp / icmp
///                        ├─ ipv6(extensions:next:) ────────┴─ neighborSolicitation / …
///                        └─ arp(…)
/// ```
/// Each builder returns bytes and takes its payload as bytes, so a test composes a frame inside
/// out. No checksum is computed: the code under test does not read them.
public enum TestFrame {
    public static let broadcast: UInt64 = 0xFFFF_FFFF_FFFF

    // MARK: Addresses and integers as bytes

    /// 48-bit MAC, first octet first.
    public static func bytes(mac: UInt64) -> [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: mac >> (40 - 8 * $0)) } }

    public static func bytes(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(truncatingIfNeeded: value)] }

    public static func bytes(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) }
    }

    public static func bytes(_ value: UInt128) -> [UInt8] {
        (0..<16).map { UInt8(truncatingIfNeeded: value >> (120 - 8 * $0)) }
    }

    /// Dotted-quad text as the walk reports it (the address's value).
    public static func ipv4(_ text: String) -> UInt32 {
        var raw = in_addr()
        precondition(inet_pton(AF_INET, text, &raw) == 1, "not an IPv4 address: \(text)")
        return UInt32(bigEndian: raw.s_addr)
    }

    /// IPv6 text as the walk reports it (the 128-bit value, first octet most significant).
    public static func ipv6(_ text: String) -> UInt128 {
        var raw = in6_addr()
        precondition(inet_pton(AF_INET6, text, &raw) == 1, "not an IPv6 address: \(text)")
        return withUnsafeBytes(of: &raw) { $0.reduce(UInt128(0)) { $0 << 8 | UInt128($1) } }
    }

    // MARK: Link layer

    /// An 802.1Q (0x8100) or 802.1ad (0x88a8) tag: type and tag control (priority, DEI, VLAN id).
    public struct Tag: Sendable {
        public var type: UInt16
        public var control: UInt16

        public init(type: UInt16 = 0x8100, vlan: UInt16 = 0, priority: UInt16 = 0) {
            self.type = type
            control = priority << 13 | vlan
        }
    }

    /// Ethernet II header, tags in order, then `payload`.
    public static func ethernet(
        to destination: UInt64 = broadcast,
        from source: UInt64,
        tags: [Tag] = [],
        type: UInt16,
        _ payload: [UInt8]
    ) -> [UInt8] {
        var frame = bytes(mac: destination) + bytes(mac: source)
        for tag in tags { frame += bytes(tag.type) + bytes(tag.control) }
        return frame + bytes(type) + payload
    }

    /// RFC 826 for Ethernet and IPv4 (28 bytes); `hardwareType` and the lengths can be bent.
    public static func arp(
        operation: UInt16,
        senderMAC: UInt64,
        senderIP: UInt32,
        targetMAC: UInt64 = 0,
        targetIP: UInt32,
        hardwareType: UInt16 = 1,
        protocolType: UInt16 = 0x0800,
        hardwareLength: UInt8 = 6,
        protocolLength: UInt8 = 4
    ) -> [UInt8] {
        bytes(hardwareType) + bytes(protocolType) + [hardwareLength, protocolLength] + bytes(operation)
            + bytes(mac: senderMAC) + bytes(senderIP) + bytes(mac: targetMAC) + bytes(targetIP)
    }

    // MARK: IP

    /// RFC 791 header with `options` (a multiple of 4 bytes) before `payload`. `totalLength`
    /// defaults to the true one; `version` and `headerWords` can be bent.
    public static func ipv4(
        from source: UInt32,
        to destination: UInt32,
        protocol: UInt8,
        options: [UInt8] = [],
        identification: UInt16 = 0,
        flagsAndOffset: UInt16 = 0,
        totalLength: Int? = nil,
        version: UInt8 = 4,
        headerWords: UInt8? = nil,
        _ payload: [UInt8]
    ) -> [UInt8] {
        precondition(options.count % 4 == 0, "IPv4 options fill whole words")
        let headerLength = 20 + options.count
        let words = headerWords ?? UInt8(headerLength / 4)
        let total = UInt16(totalLength ?? headerLength + payload.count)
        return [version << 4 | words, 0] + bytes(total) + bytes(identification) + bytes(flagsAndOffset)
            + [64, `protocol`, 0, 0] + bytes(source) + bytes(destination) + options + payload
    }

    /// An IPv6 extension header (RFC 8200 §4).
    public enum Extension: Sendable {
        /// Options header of `length` bytes (a multiple of 8), filled with a PadN option.
        case hopByHop(length: Int = 8)
        case destinationOptions(length: Int = 8)
        /// A Routing header of 8 bytes with no segments left.
        case routing
        /// `offset` in 8-byte units, `more` = the M flag.
        case fragment(offset: UInt16, more: Bool, identification: UInt32 = 0x1234_5678)

        var protocolNumber: UInt8 {
            switch self {
            case .hopByHop: 0
            case .routing: 43
            case .fragment: 44
            case .destinationOptions: 60
            }
        }

        func bytes(next: UInt8) -> [UInt8] {
            switch self {
            case .hopByHop(let length), .destinationOptions(let length):
                precondition(length >= 8 && length % 8 == 0, "options headers come in 8-byte units")
                // RFC 8200 §4.2: PadN (type 1) covering the rest of the header.
                return [next, UInt8(length / 8 - 1), 1, UInt8(length - 4)] + [UInt8](repeating: 0, count: length - 4)
            case .routing:
                // Type 253 (RFC 4727 experimental), segments left 0: any node skips it.
                return [next, 0, 253, 0, 0, 0, 0, 0]
            case .fragment(let offset, let more, let identification):
                return [next, 0] + TestFrame.bytes(offset << 3 | (more ? 1 : 0)) + TestFrame.bytes(identification)
            }
        }
    }

    /// RFC 8200 fixed header, the extension headers in order, then the upper-layer `payload` of
    /// protocol `next`. `payloadLength` defaults to the true one.
    public static func ipv6(
        from source: UInt128,
        to destination: UInt128,
        extensions: [Extension] = [],
        next: UInt8,
        hopLimit: UInt8 = 255,
        payloadLength: Int? = nil,
        version: UInt8 = 6,
        _ payload: [UInt8]
    ) -> [UInt8] {
        var chain: [UInt8] = []
        for (index, header) in extensions.enumerated() {
            let following = index + 1 < extensions.count ? extensions[index + 1].protocolNumber : next
            chain += header.bytes(next: following)
        }
        let first = extensions.first?.protocolNumber ?? next
        let length = UInt16(payloadLength ?? chain.count + payload.count)
        return [version << 4, 0, 0, 0] + bytes(length) + [first, hopLimit] + bytes(source) + bytes(destination) + chain
            + payload
    }

    // MARK: Upper layers

    /// UDP header (length field set to the true length) and `payload`.
    public static func udp(from source: UInt16, to destination: UInt16, _ payload: [UInt8] = []) -> [UInt8] {
        bytes(source) + bytes(destination) + bytes(UInt16(8 + payload.count)) + [0, 0] + payload
    }

    /// A 20-byte TCP header with `flags` (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    public static func tcp(from source: UInt16, to destination: UInt16, flags: UInt8) -> [UInt8] {
        bytes(source) + bytes(destination) + bytes(UInt32(1000)) + bytes(UInt32(0)) + [0x50, flags]
            + bytes(UInt16(65535)) + [0, 0, 0, 0]
    }

    /// SCTP common header (RFC 9260 §3.1) and the first 4 bytes of one chunk of type `chunk`.
    public static func sctp(from source: UInt16, to destination: UInt16, chunk: UInt8) -> [UInt8] {
        bytes(source) + bytes(destination) + bytes(UInt32(0)) + [0, 0, 0, 0] + [chunk, 0, 0, 4]
    }

    /// ICMP or ICMPv6: type, code, checksum (0), then `body` (echo: identifier, sequence).
    public static func icmp(type: UInt8, code: UInt8 = 0, _ body: [UInt8] = [0x12, 0x34, 0, 1]) -> [UInt8] {
        [type, code, 0, 0] + body
    }

    // MARK: Neighbour discovery and MLD (RFC 4861 §4, RFC 3810 §5.2)

    /// A Source (1) or Target (2) Link-Layer Address option for Ethernet: 8 bytes.
    public static func linkLayerOption(_ type: UInt8, _ mac: UInt64) -> [UInt8] { [type, 1] + bytes(mac: mac) }

    /// Neighbour solicitation for `target`, then `options`.
    public static func neighborSolicitation(target: UInt128, options: [UInt8] = []) -> [UInt8] {
        icmp(type: 135, [0, 0, 0, 0] + bytes(target) + options)
    }

    /// Neighbour advertisement of `target` (flags: router 0x80, solicited 0x40, override 0x20).
    public static func neighborAdvertisement(target: UInt128, flags: UInt8 = 0x20, options: [UInt8] = []) -> [UInt8] {
        icmp(type: 136, [flags, 0, 0, 0] + bytes(target) + options)
    }

    /// Router advertisement: hop limit 64, router lifetime `lifetime` seconds, no options.
    public static func routerAdvertisement(lifetime: UInt16 = 1800) -> [UInt8] {
        icmp(type: 134, [64, 0] + bytes(lifetime) + bytes(UInt32(0)) + bytes(UInt32(0)))
    }

    /// Redirect of `destination` to `target` (RFC 4861 §4.5).
    public static func redirect(target: UInt128, destination: UInt128) -> [UInt8] {
        icmp(type: 137, [0, 0, 0, 0] + bytes(target) + bytes(destination))
    }

    /// MLDv2 report (type 143) with no records, or MLDv1 report (131) for `group`.
    public static func multicastListenerReport(version: Int, group: UInt128 = 0) -> [UInt8] {
        version == 2 ? icmp(type: 143, [0, 0, 0, 0]) : icmp(type: 131, [0, 0, 0, 0] + bytes(group))
    }

    // MARK: Memory

    /// Runs `body` on a copy of `frame` that ends exactly where an inaccessible page begins:
    /// code reading even one byte past the frame crashes the test.
    public static func withGuarded<R>(_ frame: [UInt8], _ body: (UnsafeMutableRawPointer, Int) -> R) -> R {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        precondition(frame.count <= page)
        guard let region = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            region != MAP_FAILED
        else { fatalError("mmap failed") }
        defer { munmap(region, 2 * page) }
        precondition(mprotect(region + page, page, PROT_NONE) == 0)
        let start = region + (page - frame.count)
        start.copyMemory(from: frame, byteCount: frame.count)
        return body(start, frame.count)
    }
}
