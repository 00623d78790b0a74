import ButterflyPacket
import Glibc
import Testing

/// Runs `body` on a copy of `bytes[0..<count]` placed so that it ends exactly where an
/// inaccessible page begins: a parser reading even one byte past `count` crashes the test.
func withGuardedBytes<R>(_ bytes: [UInt8], count: Int? = nil, _ body: (UnsafeMutableRawPointer, Int) -> R) -> R {
    let length = count ?? bytes.count
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    precondition(length <= page)
    guard let region = mmap(nil, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
        region != MAP_FAILED
    else { fatalError("mmap failed") }
    defer { munmap(region, 2 * page) }
    precondition(mprotect(region + page, page, PROT_NONE) == 0)
    let start = region + (page - length)
    for index in 0..<length { start.storeBytes(of: bytes[index], toByteOffset: index, as: UInt8.self) }
    return body(start, length)
}

/// The bytes at `pointer`.
func bytes(_ pointer: UnsafeMutableRawPointer, _ count: Int) -> [UInt8] {
    (0..<count).map { pointer.load(fromByteOffset: $0, as: UInt8.self) }
}

/// A packet from `pool` holding `content` (after the default headroom).
func makePacket(_ pool: PacketPool, _ content: [UInt8]) -> Packet {
    var packet = pool.allocate()!
    packet.length = UInt16(content.count)
    let data = pool.data(packet)
    for (index, byte) in content.enumerated() { data.storeBytes(of: byte, toByteOffset: index, as: UInt8.self) }
    return packet
}

/// Builds a frame with `build` into a fresh buffer and returns its bytes.
func buildFrame(_ build: (UnsafeMutableRawPointer) -> Int) -> [UInt8] {
    let pool = PacketPool(capacity: 16)
    let packet = pool.allocate()!
    let data = pool.data(packet)
    let length = build(data)
    return bytes(data, length)
}

/// A straightforward Internet checksum over bytes, independent of `InternetChecksum`.
func referenceChecksum(_ data: [UInt8]) -> UInt16 {
    var sum = 0
    var index = 0
    while index < data.count {
        let high = Int(data[index])
        let low = index + 1 < data.count ? Int(data[index + 1]) : 0
        sum += high << 8 | low
        index += 2
    }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

func ipv4(_ text: String) -> UInt32 {
    var raw = in_addr()
    precondition(inet_pton(AF_INET, text, &raw) == 1)
    return UInt32(bigEndian: raw.s_addr)
}

func ipv6(_ text: String) -> IPv6Address {
    var raw = in6_addr()
    precondition(inet_pton(AF_INET6, text, &raw) == 1)
    let octets = withUnsafeBytes(of: &raw) { Array($0) }
    return IPv6Address(
        high: octets[0..<8].reduce(0) { $0 << 8 | UInt64($1) },
        low: octets[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    )
}

func octets(_ address: IPv6Address) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: address.high >> (56 - 8 * $0)) }
        + (0..<8).map { UInt8(truncatingIfNeeded: address.low >> (56 - 8 * $0)) }
}

func octets(_ address: UInt32) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: address >> (24 - 8 * $0)) }
}

func octets(mac: UInt64) -> [UInt8] {
    (0..<6).map { UInt8(truncatingIfNeeded: mac >> (40 - 8 * $0)) }
}

func be16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

/// The RFC 8200 §8.1 pseudo-header as bytes.
func ipv6PseudoHeader(_ source: IPv6Address, _ destination: IPv6Address, length: Int, nextHeader: UInt8) -> [UInt8] {
    octets(source) + octets(destination) + [0, 0] + be16(length) + [0, 0, 0, nextHeader]
}

let macA: UInt64 = 0x0200_0000_0001
let macB: UInt64 = 0x0200_0000_0002
