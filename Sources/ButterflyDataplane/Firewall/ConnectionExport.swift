import ButterflyPacket

/// The binary form of a NIC's tracked connections that `nic_export` returns (in
/// `NicExportRes.fw_data.data`), a first step towards moving a NIC to another host with its
/// connections. All integers big-endian; addresses are 16 bytes, IPv4 as `::ffff:a.b.c.d`.
///
/// ```
///  header (12 bytes)   "BFCT" │ version = 1 │ 0 0 0 │ entry count (u32)
///  entry  (48 bytes)   family (4 | 6) │ IP protocol │ origin │ state │ local address (16)
///                      remote address (16) │ local port (u16) │ remote port (u16)
///                      seconds left (u32) │ 0 0 0 0
/// ```
/// `origin`: 0 = the guest opened the connection, 1 = a peer opened it (an inbound rule let it
/// in). `state`: `ConnectionState.rawValue` (0 unreplied, 1 replied, 2 syn-sent,
/// 3 syn-received, 4 established, 5/6 fin-wait, 7 last-ack, 8 time-wait, 9 closed). Ports are
/// the ICMP echo identifier for ICMP. "local" is the NIC's side.
public enum ConnectionExport {
    public static let magic: [UInt8] = Array("BFCT".utf8)
    public static let version: UInt8 = 1
    public static let headerSize = 12
    public static let entrySize = 48

    public static func encode(_ entries: [ConnectionEntry], now: UInt32) -> [UInt8] {
        var bytes = magic + [version, 0, 0, 0]
        bytes.reserveCapacity(headerSize + entries.count * entrySize)
        append32(UInt32(entries.count), to: &bytes)
        for entry in entries {
            let key = entry.key
            let isV4 = FrameHeaders.isIPv4Mapped(key.local) && FrameHeaders.isIPv4Mapped(key.remote)
            bytes += [isV4 ? 4 : 6, key.ipProtocol, entry.origin.rawValue, entry.state.rawValue]
            append128(key.local, to: &bytes)
            append128(key.remote, to: &bytes)
            bytes += [UInt8(key.localPort >> 8), UInt8(key.localPort & 0xFF)]
            bytes += [UInt8(key.remotePort >> 8), UInt8(key.remotePort & 0xFF)]
            append32(entry.expires >= now ? entry.expires - now : 0, to: &bytes)
            bytes += [0, 0, 0, 0]
        }
        return bytes
    }

    /// One decoded entry (for tools and tests).
    public struct Record: Equatable, Sendable {
        public var family: UInt8
        public var ipProtocol: UInt8
        public var origin: UInt8
        public var state: UInt8
        public var local: UInt128
        public var remote: UInt128
        public var localPort: UInt16
        public var remotePort: UInt16
        public var secondsLeft: UInt32
    }

    /// Decodes what `encode` produced; `nil` when the bytes are not a well-formed export.
    public static func decode(_ bytes: [UInt8]) -> [Record]? {
        guard bytes.count >= headerSize, Array(bytes[0..<4]) == magic, bytes[4] == version else { return nil }
        let count = Int(read32(bytes, 8))
        guard bytes.count == headerSize + count * entrySize else { return nil }
        return (0..<count).map { index in
            let base = headerSize + index * entrySize
            return Record(
                family: bytes[base],
                ipProtocol: bytes[base + 1],
                origin: bytes[base + 2],
                state: bytes[base + 3],
                local: read128(bytes, base + 4),
                remote: read128(bytes, base + 20),
                localPort: UInt16(bytes[base + 36]) << 8 | UInt16(bytes[base + 37]),
                remotePort: UInt16(bytes[base + 38]) << 8 | UInt16(bytes[base + 39]),
                secondsLeft: read32(bytes, base + 40)
            )
        }
    }

    private static func append32(_ value: UInt32, to bytes: inout [UInt8]) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    private static func append128(_ value: UInt128, to bytes: inout [UInt8]) {
        for shift in stride(from: 120, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    private static func read32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
    }

    private static func read128(_ bytes: [UInt8], _ offset: Int) -> UInt128 {
        (0..<16).reduce(0) { $0 << 8 | UInt128(bytes[offset + $1]) }
    }
}
