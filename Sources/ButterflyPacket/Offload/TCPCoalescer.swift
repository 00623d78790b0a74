#if canImport(Glibc)
    import Glibc
#endif

/// Software receive coalescing (what Linux's GRO does for TCP): consecutive segments of one
/// TCP flow, in order, merge into one super-frame that a tap with `IFF_VNET_HDR` accepts with
/// a single write, so the guest's stack handles one large frame instead of dozens.
///
/// A run starts at a segment with payload and only ACK (and PSH) set, and takes each next
/// segment that:
/// - has identical Ethernet, IP and TCP headers except the IP length/identification/checksum,
///   the TCP sequence number, checksum and PSH flag (so same ports, ACK, window and options,
///   timestamps included);
/// - continues the sequence exactly, after a full-sized previous segment without PSH;
/// - carries a TCP checksum and an IPv4 header checksum that verify — a corrupted segment is
///   never hidden inside a frame whose checksums the guest will not check (`NEEDS_CSUM` means
///   "trust me") or that gets a fresh IPv4 header checksum;
/// - over IPv4 without DF, has the next IP identification (as Linux GRO requires);
/// - keeps the merged IP datagram within 65,535 bytes.
///
/// The caller writes the first segment's frame (patched by `finish`) followed by the payload
/// `[headerLength, length)` of each other segment of the run.
public struct TCPCoalescer {
    /// Largest IP datagram a merged frame may be (the IPv4 total-length field's range; IPv6
    /// could go further with jumbograms, which guests do not expect).
    public static let maximumDatagram = 65_535
    /// Segments per merged frame: more than a 64 KiB datagram of full-sized segments holds,
    /// and a fixed bound for the writer's scatter list.
    public static let maximumSegments = 64

    public let first: UnsafeMutableRawPointer
    public let layout: TCPFrame
    /// Payload bytes of the first segment: the segment size of the merged frame.
    public let segmentSize: Int
    public private(set) var count = 1
    /// Total frame bytes once merged (first frame + others' payloads).
    public private(set) var mergedLength: Int
    @usableFromInline var nextSequence: UInt32
    /// The identification the next IPv4 segment must carry when DF is clear (nil: not checked).
    @usableFromInline var nextIdentification: UInt16?
    @usableFromInline var open = true
    @usableFromInline var pushSeen = false

    /// Starts a run at `frame`, or `nil` when it cannot start one (not TCP, no payload, flags
    /// other than ACK/PSH, bad checksum).
    public init?(frame: UnsafeMutableRawPointer, length: Int) {
        guard let layout = TCPFrame(frame, length: length), length > layout.headerLength,
            layout.ipLengthMatches(frame, length: length)
        else { return nil }
        let flags = frame.load(fromByteOffset: layout.transportOffset &+ 13, as: UInt8.self)
        guard flags & ~TCPFrame.pushFlag == TCPFrame.ackFlag, layout.ipHeaderIsValid(frame),
            layout.tcpChecksumIsValid(frame, length: length)
        else { return nil }
        if !layout.isIPv6 && frame.loadBigEndian16(at: layout.networkOffset &+ 6) & 0x4000 == 0 {
            nextIdentification = frame.loadBigEndian16(at: layout.networkOffset &+ 4) &+ 1
        }
        first = frame
        self.layout = layout
        segmentSize = length &- layout.headerLength
        mergedLength = length
        nextSequence = frame.loadBigEndian32(at: layout.transportOffset &+ 4) &+ UInt32(truncatingIfNeeded: segmentSize)
        pushSeen = flags & TCPFrame.pushFlag != 0
        open = !pushSeen
    }

    /// False once a segment ended the run (PSH, shorter than the segment size, size limit).
    @inlinable
    public var canGrow: Bool { open && count < Self.maximumSegments }

    /// Adds `frame` to the run if it continues it; false (and the run unchanged) otherwise.
    public mutating func append(_ frame: UnsafeRawPointer, length: Int) -> Bool {
        guard canGrow else { return false }
        let headerLength = layout.headerLength
        let payload = length &- headerLength
        guard payload > 0, payload <= segmentSize,
            mergedLength &+ payload &- layout.networkOffset <= Self.maximumDatagram,
            sameFlowHeaders(frame),
            frame.loadBigEndian32(at: layout.transportOffset &+ 4) == nextSequence,
            layout.ipLengthMatches(frame, length: length),
            nextIdentification.map({ frame.loadBigEndian16(at: layout.networkOffset &+ 4) == $0 }) ?? true,
            layout.ipHeaderIsValid(frame),
            layout.tcpChecksumIsValid(frame, length: length)
        else { return false }
        let flags = frame.load(fromByteOffset: layout.transportOffset &+ 13, as: UInt8.self)
        count &+= 1
        mergedLength &+= payload
        nextSequence &+= UInt32(truncatingIfNeeded: payload)
        if let identification = nextIdentification { nextIdentification = identification &+ 1 }
        if flags & TCPFrame.pushFlag != 0 { pushSeen = true }
        if pushSeen || payload < segmentSize { open = false }
        return true
    }

    /// Patches the first frame's headers into the merged frame's and returns the virtio
    /// header to write before it. Only for runs of two or more.
    public func finish() -> VirtioNetHeader {
        let tcp = layout.transportOffset
        layout.setIPLength(first, frameLength: mergedLength)
        if pushSeen {
            let flags = first.load(fromByteOffset: tcp &+ 13, as: UInt8.self)
            first.storeBytes(of: flags | TCPFrame.pushFlag, toByteOffset: tcp &+ 13, as: UInt8.self)
        }
        // NEEDS_CSUM: the field holds the folded pseudo-header sum, not complemented (the
        // convention of CHECKSUM_PARTIAL); the guest's stack completes or trusts it.
        let pseudo = layout.pseudoHeaderSum(first, tcpLength: mergedLength &- tcp)
        first.storeBigEndian16(InternetChecksum.fold(pseudo), at: tcp &+ 16)
        return VirtioNetHeader(
            flags: VirtioNetHeader.needsChecksum,
            gsoType: layout.isIPv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
            headerLength: UInt16(layout.headerLength),
            segmentSize: UInt16(segmentSize),
            checksumStart: UInt16(tcp),
            checksumOffset: 16
        )
    }

    /// Every header byte that must be equal for two segments to merge.
    func sameFlowHeaders(_ frame: UnsafeRawPointer) -> Bool {
        let network = layout.networkOffset
        let tcp = layout.transportOffset
        // Ethernet (and tag) up to the IP header.
        guard memcmp(first, frame, network) == 0 else { return false }
        if layout.isIPv6 {
            // Version/class/flow label; next header and hop limit; addresses.
            guard memcmp(first + network, frame + network, 4) == 0,
                memcmp(first + (network &+ 6), frame + (network &+ 6), 34) == 0
            else { return false }
        } else {
            // Version/IHL/TOS; flags/fragment, TTL, protocol; addresses; options.
            guard memcmp(first + network, frame + network, 2) == 0,
                memcmp(first + (network &+ 6), frame + (network &+ 6), 4) == 0,
                memcmp(first + (network &+ 12), frame + (network &+ 12), tcp &- network &- 12) == 0
            else { return false }
        }
        // Ports; acknowledgment, data offset, flags but PSH, window; urgent pointer, options.
        let firstFlags = first.load(fromByteOffset: tcp &+ 13, as: UInt8.self) & ~TCPFrame.pushFlag
        let flags = frame.load(fromByteOffset: tcp &+ 13, as: UInt8.self) & ~TCPFrame.pushFlag
        return firstFlags == flags
            && memcmp(first + tcp, frame + tcp, 4) == 0
            && memcmp(first + (tcp &+ 8), frame + (tcp &+ 8), 5) == 0
            && memcmp(first + (tcp &+ 14), frame + (tcp &+ 14), 2) == 0
            && memcmp(first + (tcp &+ 18), frame + (tcp &+ 18), layout.headerLength &- tcp &- 18) == 0
    }
}
