// Where the headers of an Ethernet / IPv4-or-IPv6 / TCP frame are, for segmentation and
// coalescing. Offsets into the frame:
//
//   [ Ethernet 14 | 802.1Q tag 4 (optional) ][ IPv4 20–60 or IPv6 40 ][ TCP 20–60 ][ payload ]
//   0                                        network                  transport    header end
//
// TCP (RFC 9293 §3.1): ports 0–3, sequence 4, acknowledgment 8, data offset (high nibble) 12,
// flags 13 (CWR 0x80, ECE 0x40, URG 0x20, ACK 0x10, PSH 0x08, RST 0x04, SYN 0x02, FIN 0x01),
// window 14, checksum 16, urgent pointer 18, options from 20.

/// Header offsets of a TCP frame; `nil` from `init` when the frame is not plain TCP over IP
/// (a fragment, IPv6 extension headers, truncated headers).
public struct TCPFrame: Equatable, Sendable {
    public let networkOffset: Int
    public let isIPv6: Bool
    public let transportOffset: Int
    /// First payload byte.
    public let headerLength: Int

    public static let finFlag: UInt8 = 0x01
    public static let pushFlag: UInt8 = 0x08
    public static let ackFlag: UInt8 = 0x10
    public static let cwrFlag: UInt8 = 0x80

    @inlinable
    public init?(_ frame: UnsafeRawPointer, length: Int) {
        guard length >= 14 else { return nil }
        var network = 14
        var etherType = frame.loadBigEndian16(at: 12)
        if etherType == 0x8100 {
            guard length >= 18 else { return nil }
            etherType = frame.loadBigEndian16(at: 16)
            network = 18
        }
        let transport: Int
        if etherType == 0x0800 {
            guard length >= network &+ 20 else { return nil }
            let versionAndLength = frame.load(fromByteOffset: network, as: UInt8.self)
            let ipHeaderLength = Int(versionAndLength & 0x0F) &* 4
            guard versionAndLength >> 4 == 4, ipHeaderLength >= 20,
                frame.load(fromByteOffset: network &+ 9, as: UInt8.self) == IPProtocol.tcp,
                // Not a fragment: MF clear and offset zero.
                frame.loadBigEndian16(at: network &+ 6) & 0x3FFF == 0
            else { return nil }
            transport = network &+ ipHeaderLength
            isIPv6 = false
        } else if etherType == 0x86DD {
            guard length >= network &+ 40,
                frame.load(fromByteOffset: network, as: UInt8.self) >> 4 == 6,
                frame.load(fromByteOffset: network &+ 6, as: UInt8.self) == IPProtocol.tcp
            else { return nil }
            transport = network &+ 40
            isIPv6 = true
        } else {
            return nil
        }
        guard length >= transport &+ 20 else { return nil }
        let tcpHeaderLength = Int(frame.load(fromByteOffset: transport &+ 12, as: UInt8.self) >> 4) &* 4
        guard tcpHeaderLength >= 20, length >= transport &+ tcpHeaderLength else { return nil }
        networkOffset = network
        transportOffset = transport
        headerLength = transport &+ tcpHeaderLength
    }

    /// The TCP/IP pseudo-header sum for a TCP segment of `tcpLength` bytes (header + payload).
    @inlinable
    public func pseudoHeaderSum(_ frame: UnsafeRawPointer, tcpLength: Int) -> UInt32 {
        let length = UInt32(truncatingIfNeeded: tcpLength)
        if isIPv6 {
            return InternetChecksum.add(frame + (networkOffset &+ 8), length: 32)
                &+ (length >> 16) &+ (length & 0xFFFF) &+ UInt32(IPProtocol.tcp)
        }
        return InternetChecksum.add(frame + (networkOffset &+ 12), length: 8) &+ length &+ UInt32(IPProtocol.tcp)
    }

    /// Sets the IP length field(s) for a frame of `length` bytes (and the IPv4 header checksum).
    @inlinable
    public func setIPLength(_ frame: UnsafeMutableRawPointer, frameLength length: Int) {
        if isIPv6 {
            frame.storeBigEndian16(UInt16(truncatingIfNeeded: length &- networkOffset &- 40), at: networkOffset &+ 4)
        } else {
            let ip = frame + networkOffset
            ip.storeBigEndian16(UInt16(truncatingIfNeeded: length &- networkOffset), at: 2)
            ip.storeBigEndian16(0, at: 10)
            let headerBytes = transportOffset &- networkOffset
            ip.storeBigEndian16(InternetChecksum.compute(ip, length: headerBytes), at: 10)
        }
    }

    /// The IP length field agrees with the frame length (no trailing padding or garbage), so
    /// the frame's payload is exactly `[headerLength, length)`.
    @inlinable
    public func ipLengthMatches(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        if isIPv6 {
            return Int(frame.loadBigEndian16(at: networkOffset &+ 4)) == length &- networkOffset &- 40
        }
        return Int(frame.loadBigEndian16(at: networkOffset &+ 2)) == length &- networkOffset
    }

    /// True for IPv6 (no header checksum) or an IPv4 header whose checksum verifies: a merged
    /// or cut frame gets a fresh header checksum, which must not launder a corrupted header.
    @inlinable
    public func ipHeaderIsValid(_ frame: UnsafeRawPointer) -> Bool {
        isIPv6 || InternetChecksum.compute(frame + networkOffset, length: transportOffset &- networkOffset) == 0
    }

    /// Computes and stores the full TCP checksum of a frame of `length` bytes.
    @inlinable
    public func setTCPChecksum(_ frame: UnsafeMutableRawPointer, length: Int) {
        let tcpLength = length &- transportOffset
        frame.storeBigEndian16(0, at: transportOffset &+ 16)
        let sum = InternetChecksum.add(
            frame + transportOffset,
            length: tcpLength,
            to: pseudoHeaderSum(frame, tcpLength: tcpLength)
        )
        frame.storeBigEndian16(InternetChecksum.finish(sum), at: transportOffset &+ 16)
    }

    /// True when the TCP checksum of a frame of `length` bytes verifies.
    @inlinable
    public func tcpChecksumIsValid(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        let tcpLength = length &- transportOffset
        let sum = InternetChecksum.add(
            frame + transportOffset,
            length: tcpLength,
            to: pseudoHeaderSum(frame, tcpLength: tcpLength)
        )
        return InternetChecksum.fold(sum) == 0xFFFF
    }
}
