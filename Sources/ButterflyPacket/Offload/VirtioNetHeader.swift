// virtio-net header (VIRTIO 1.2 §5.1.6, `struct virtio_net_hdr`), as a tap with IFF_VNET_HDR
// puts it before every frame it hands over and expects before every frame written to it
// (legacy layout, 10 bytes, native byte order = little-endian here):
//
//    0        1          2             4             6              8               10
//   +--------+----------+-------------+-------------+--------------+---------------+
//   | flags  | gso_type |   hdr_len   |  gso_size   |  csum_start  |  csum_offset  |
//   +--------+----------+-------------+-------------+--------------+---------------+
//
// flags: NEEDS_CSUM (1) = the checksum at csum_start + csum_offset holds only the pseudo-header
// sum and must be completed over [csum_start, end); DATA_VALID (2) = already verified.
// gso_type: NONE (0), TCPV4 (1), UDP (3, UFO), TCPV6 (4), UDP_L4 (5), ORed with ECN (0x80).
// A frame with a gso_type is a "super-frame": one header set and up to 64 KiB of payload
// that stands for segments of gso_size payload bytes each.

/// The 10-byte virtio-net header of a tap with `IFF_VNET_HDR` (or a packet socket with
/// `PACKET_VNET_HDR`).
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 10

    public static let needsChecksum: UInt8 = 1
    public static let dataValid: UInt8 = 2

    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoUDPL4: UInt8 = 5
    public static let gsoECN: UInt8 = 0x80

    public var flags: UInt8
    public var gsoType: UInt8
    public var headerLength: UInt16
    public var segmentSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(
        flags: UInt8 = 0,
        gsoType: UInt8 = 0,
        headerLength: UInt16 = 0,
        segmentSize: UInt16 = 0,
        checksumStart: UInt16 = 0,
        checksumOffset: UInt16 = 0
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.segmentSize = segmentSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    @inlinable
    public init(loadingFrom pointer: UnsafeRawPointer) {
        flags = pointer.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = pointer.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        segmentSize = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    @inlinable
    public func store(to pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        pointer.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        pointer.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        pointer.storeBytes(of: segmentSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        pointer.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        pointer.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }

    /// The segmentation type without the ECN bit.
    @inlinable
    public var segmentation: UInt8 { gsoType & ~Self.gsoECN }
}

/// Why a frame handed over with a virtio-net header was refused.
public enum OffloadError: Error, Equatable, Sendable {
    /// A segmentation type the port did not advertise (UFO, USO) or a header that does not
    /// match it (not TCP, IPv6 extension headers, IPv4 options with a bad length).
    case unsupportedSegmentation
    /// gso_size zero, below the minimum, or segments larger than a packet buffer.
    case badSegmentSize
    /// csum_start/csum_offset outside the frame.
    case badChecksumOffset
    /// Shorter than its own headers claim.
    case truncated
    /// The IPv4 header checksum of a super-frame does not verify.
    case badHeaderChecksum
}

extension VirtioNetHeader {
    /// Completes a partial checksum (`NEEDS_CSUM`): the field at `checksumStart +
    /// checksumOffset` holds the pseudo-header sum; the checksum over `[checksumStart, end)`
    /// replaces it. Protocol-agnostic (TCP, UDP, anything the sender offloaded).
    @inlinable
    public func completeChecksum(_ frame: UnsafeMutableRawPointer, length: Int) -> OffloadError? {
        let start = Int(checksumStart)
        let field = start &+ Int(checksumOffset)
        guard field &+ 2 <= length else { return .badChecksumOffset }
        let value = InternetChecksum.finish(InternetChecksum.add(frame + start, length: length &- start))
        // RFC 768: a UDP checksum that computes to zero is sent as all ones. Harmless for TCP:
        // 0x0000 and 0xFFFF are both zero in one's complement, so verification is unchanged.
        frame.storeBigEndian16(value == 0 ? 0xFFFF : value, at: field)
        return nil
    }
}
