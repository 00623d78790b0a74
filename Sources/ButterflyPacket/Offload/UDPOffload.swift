#if canImport(Glibc)
    import Glibc
#endif

// UDP segmentation offload (USO, `VIRTIO_NET_HDR_GSO_UDP_L4`, Linux's UDP_SEGMENT): one set of
// Ethernet / IP / UDP headers followed by the payloads of several datagrams of `gso_size`
// bytes each (the last may be shorter) stands for those datagrams. The underlay uses it for
// VXLAN: the encapsulated segments of one guest TCP burst go to one remote VTEP with the same
// outer headers and the same size, so the port hands them to the kernel as one super-frame
// (one skb through the stack and across a veth or bridge), and a super-frame received is cut
// back into datagrams.
//
//   [ Ethernet 14 ][ IPv4 20 (no options) or IPv6 40 ][ UDP 8 ][ payload … ]
//   0              network                            transport header end

/// Header offsets of an Ethernet / IPv4-or-IPv6 / UDP frame; `nil` when the frame is not
/// plain UDP over IP (options, fragments, extension headers, truncated).
public struct UDPFrame: Equatable, Sendable {
    public static let networkOffset = 14
    public let isIPv6: Bool
    public let transportOffset: Int
    /// First payload byte.
    public var headerLength: Int { transportOffset &+ 8 }

    @inlinable
    public init?(_ frame: UnsafeRawPointer, length: Int) {
        guard length >= 14 else { return nil }
        let etherType = frame.loadBigEndian16(at: 12)
        if etherType == 0x0800 {
            guard length >= 14 &+ 20 &+ 8, frame.load(fromByteOffset: 14, as: UInt8.self) == 0x45,
                frame.load(fromByteOffset: 14 &+ 9, as: UInt8.self) == IPProtocol.udp,
                frame.loadBigEndian16(at: 14 &+ 6) & 0x3FFF == 0
            else { return nil }
            isIPv6 = false
            transportOffset = 34
        } else if etherType == 0x86DD {
            guard length >= 14 &+ 40 &+ 8, frame.load(fromByteOffset: 14, as: UInt8.self) >> 4 == 6,
                frame.load(fromByteOffset: 14 &+ 6, as: UInt8.self) == IPProtocol.udp
            else { return nil }
            isIPv6 = true
            transportOffset = 54
        } else {
            return nil
        }
    }

    /// The UDP pseudo-header sum for a datagram of `udpLength` bytes (header included).
    @inlinable
    public func pseudoHeaderSum(_ frame: UnsafeRawPointer, udpLength: Int) -> UInt32 {
        let length = UInt32(truncatingIfNeeded: udpLength)
        if isIPv6 {
            return InternetChecksum.add(frame + 22, length: 32) &+ (length >> 16) &+ (length & 0xFFFF)
                &+ UInt32(IPProtocol.udp)
        }
        return InternetChecksum.add(frame + 26, length: 8) &+ length &+ UInt32(IPProtocol.udp)
    }

    /// Sets the IP and UDP length fields for a frame of `length` bytes (and the IPv4 header
    /// checksum).
    @inlinable
    public func setLengths(_ frame: UnsafeMutableRawPointer, frameLength length: Int) {
        if isIPv6 {
            frame.storeBigEndian16(UInt16(truncatingIfNeeded: length &- 54), at: 18)
        } else {
            frame.storeBigEndian16(UInt16(truncatingIfNeeded: length &- 14), at: 16)
            frame.storeBigEndian16(0, at: 24)
            frame.storeBigEndian16(InternetChecksum.compute(frame + 14, length: 20), at: 24)
        }
        frame.storeBigEndian16(UInt16(truncatingIfNeeded: length &- transportOffset), at: transportOffset &+ 4)
    }
}

/// Cuts a received USO super-frame into datagrams: headers copied, lengths and the IPv4
/// identification (+1 per datagram) and header checksum set; the UDP checksum is 0 over IPv4
/// (allowed, and what VXLAN senders use) and computed over IPv6, where 0 is not allowed.
public struct UDPSegmenter {
    /// Most datagrams one super-frame may stand for (Linux's UDP_MAX_SEGMENTS is 64 or 128
    /// depending on the version): bounds the batch room a super-frame needs.
    public static let maximumSegments = 128

    public let layout: UDPFrame
    @usableFromInline var cursor: SuperFrameCursor
    @usableFromInline let firstIdentification: UInt16

    public init(
        frame: UnsafeRawPointer,
        length: Int,
        header: VirtioNetHeader,
        maximumSegmentFrame: Int
    ) throws(OffloadError) {
        guard header.gsoType == VirtioNetHeader.gsoUDPL4 else { throw .unsupportedSegmentation }
        guard let layout = UDPFrame(frame, length: length) else { throw .unsupportedSegmentation }
        // Each datagram gets a fresh IPv4 header checksum: check the one it is copied from.
        guard layout.isIPv6 || InternetChecksum.compute(frame + 14, length: 20) == 0 else { throw .badHeaderChecksum }
        let segmentSize = Int(header.segmentSize)
        let payload = length &- layout.headerLength
        guard segmentSize > 0, layout.headerLength &+ segmentSize <= maximumSegmentFrame,
            payload <= segmentSize &* Self.maximumSegments
        else { throw .badSegmentSize }
        self.layout = layout
        cursor = SuperFrameCursor(
            frame: frame,
            length: length,
            headerLength: layout.headerLength,
            segmentSize: segmentSize
        )
        firstIdentification = layout.isIPv6 ? 0 : frame.loadBigEndian16(at: 18)
    }

    @inlinable
    public var isFinished: Bool { cursor.isFinished }

    @inlinable
    public var segmentCount: Int { cursor.segmentCount }

    /// The longest datagram frame: the buffer size each needs.
    @inlinable
    public var largestSegmentFrame: Int { cursor.largestSegmentFrame }

    /// Writes the next datagram at `destination` and returns its length.
    @inlinable
    public mutating func writeNext(to destination: UnsafeMutableRawPointer) -> Int {
        let segment = cursor.copyNext(to: destination)
        if !layout.isIPv6 {
            destination.storeBigEndian16(firstIdentification &+ UInt16(truncatingIfNeeded: cursor.index &- 1), at: 18)
        }
        layout.setLengths(destination, frameLength: segment.length)
        let udp = layout.transportOffset
        destination.storeBigEndian16(0, at: udp &+ 6)
        if layout.isIPv6 {
            let udpLength = segment.length &- udp
            let sum = InternetChecksum.add(
                destination + udp,
                length: udpLength,
                to: layout.pseudoHeaderSum(destination, udpLength: udpLength)
            )
            let value = InternetChecksum.finish(sum)
            destination.storeBigEndian16(value == 0 ? 0xFFFF : value, at: udp &+ 6)
        }
        return segment.length
    }
}

/// Merges consecutive datagrams with identical Ethernet / IP / UDP headers (but lengths,
/// IPv4 identification and checksums) and equal sizes — the last may be shorter — into one
/// USO super-frame. The caller sends the first frame (patched by `finish`) followed by the
/// payload `[headerLength, length)` of every other.
public struct UDPCoalescer {
    /// Datagrams per super-frame: within every kernel's UDP_MAX_SEGMENTS.
    public static let maximumSegments = 64
    public static let maximumDatagram = 65_535

    public let first: UnsafeMutableRawPointer
    public let layout: UDPFrame
    public let segmentSize: Int
    /// Largest super-frame (Ethernet header included): what the receiver's ring frame holds.
    public let limit: Int
    public private(set) var count = 1
    public private(set) var mergedLength: Int
    @usableFromInline var open = true

    public init?(frame: UnsafeMutableRawPointer, length: Int, limit: Int = 65_535 + 14) {
        guard let layout = UDPFrame(frame, length: length), length > layout.headerLength else { return nil }
        // The IP length must describe the frame exactly (no trailer to carry along).
        let ipLength =
            layout.isIPv6 ? Int(frame.loadBigEndian16(at: 18)) &+ 54 : Int(frame.loadBigEndian16(at: 16)) &+ 14
        guard ipLength == length else { return nil }
        first = frame
        self.layout = layout
        segmentSize = length &- layout.headerLength
        mergedLength = length
        self.limit = min(limit, Self.maximumDatagram &+ 14)
    }

    @inlinable
    public var canGrow: Bool { open && count < Self.maximumSegments }

    /// Adds `frame` if it continues the run; false (run unchanged) otherwise.
    public mutating func append(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        guard canGrow else { return false }
        let headerLength = layout.headerLength
        let payload = length &- headerLength
        guard payload > 0, payload <= segmentSize,
            mergedLength &+ payload <= limit,
            sameHeaders(frame, length: length)
        else { return false }
        count &+= 1
        mergedLength &+= payload
        if payload < segmentSize { open = false }
        return true
    }

    /// Patches the first frame into the super-frame's headers and returns the virtio header
    /// to send before it. Only for runs of two or more.
    public func finish() -> VirtioNetHeader {
        layout.setLengths(first, frameLength: mergedLength)
        let udp = layout.transportOffset
        // NEEDS_CSUM: the pseudo-header sum for the super-frame's UDP length; the kernel
        // adjusts it for each datagram's length when it segments (or the NIC does).
        let pseudo = layout.pseudoHeaderSum(first, udpLength: mergedLength &- udp)
        first.storeBigEndian16(InternetChecksum.fold(pseudo), at: udp &+ 6)
        return VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum,
            gsoType: VirtioNetHeader.gsoUDPL4,
            headerLength: UInt16(layout.headerLength),
            segmentSize: UInt16(segmentSize),
            checksumStart: UInt16(udp),
            checksumOffset: 6
        )
    }

    func sameHeaders(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        guard memcmp(first, frame, 14) == 0 else { return false }
        if layout.isIPv6 {
            // Version/class/flow; next header, hop limit, addresses; ports.
            guard memcmp(first + 14, frame + 14, 4) == 0, memcmp(first + 20, frame + 20, 34) == 0,
                Int(frame.loadBigEndian16(at: 18)) &+ 54 == length
            else { return false }
        } else {
            // Version/IHL/TOS; flags/fragment, TTL, protocol; addresses.
            guard memcmp(first + 14, frame + 14, 2) == 0, memcmp(first + 20, frame + 20, 4) == 0,
                memcmp(first + 26, frame + 26, 8) == 0,
                Int(frame.loadBigEndian16(at: 16)) &+ 14 == length
            else { return false }
        }
        return memcmp(first + layout.transportOffset, frame + layout.transportOffset, 4) == 0
    }
}
