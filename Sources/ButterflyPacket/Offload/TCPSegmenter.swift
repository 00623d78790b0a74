/// Software TCP segmentation (what a NIC's TSO does): cuts a TCP super-frame — one set of
/// headers followed by up to 64 KiB of payload, as a tap with `TUN_F_TSO4/6` hands it over —
/// into frames of at most `segmentSize` payload bytes, each with its own headers:
///
/// - IPv4 total length, identification (+1 per segment) and header checksum; IPv6 payload
///   length;
/// - TCP sequence number advanced by the payload before it; FIN and PSH only on the last
///   segment, CWR only on the first (RFC 3168 §6.1.2);
/// - a full TCP checksum, computed here: the sender only left the pseudo-header sum.
///
/// Nothing in the guest's virtio header is trusted beyond the segment size: the headers are
/// parsed from the frame itself. A walk (`writeNext`) lets the caller stop when its batch is
/// full and resume later without holding more than the super-frame.
public struct TCPSegmenter {
    /// Smallest segment size accepted (Linux's default `tcp_min_snd_mss`): a hostile guest
    /// cannot make one frame explode into thousands of tiny segments.
    public static let minimumSegmentSize = 48

    public let layout: TCPFrame
    @usableFromInline var cursor: SuperFrameCursor
    @usableFromInline let firstSequence: UInt32
    @usableFromInline let firstIdentification: UInt16

    /// Validates the super-frame `frame[0..<length]` announced with `header`; each segment
    /// must fit in `maximumSegmentFrame` bytes.
    public init(
        frame: UnsafeMutableRawPointer,
        length: Int,
        header: VirtioNetHeader,
        maximumSegmentFrame: Int
    ) throws(OffloadError) {
        let type = header.segmentation
        guard type == VirtioNetHeader.gsoTCPv4 || type == VirtioNetHeader.gsoTCPv6 else {
            throw .unsupportedSegmentation
        }
        guard let layout = TCPFrame(frame, length: length) else {
            throw length < 54 ? .truncated : .unsupportedSegmentation
        }
        guard layout.isIPv6 == (type == VirtioNetHeader.gsoTCPv6) else { throw .unsupportedSegmentation }
        let segmentSize = Int(header.segmentSize)
        guard segmentSize >= Self.minimumSegmentSize, layout.headerLength &+ segmentSize <= maximumSegmentFrame
        else { throw .badSegmentSize }
        self.layout = layout
        cursor = SuperFrameCursor(
            frame: frame,
            length: length,
            headerLength: layout.headerLength,
            segmentSize: segmentSize
        )
        firstSequence = frame.loadBigEndian32(at: layout.transportOffset &+ 4)
        firstIdentification = layout.isIPv6 ? 0 : frame.loadBigEndian16(at: layout.networkOffset &+ 4)
    }

    /// True once every payload byte went into a segment.
    @inlinable
    public var isFinished: Bool { cursor.isFinished }

    /// How many segments the whole super-frame makes.
    @inlinable
    public var segmentCount: Int { cursor.segmentCount }

    /// The longest segment frame: the buffer size each segment needs.
    @inlinable
    public var largestSegmentFrame: Int { cursor.largestSegmentFrame }

    /// Writes the next segment at `destination` (room for `layout.headerLength + segmentSize`
    /// bytes) and returns its length.
    @inlinable
    public mutating func writeNext(to destination: UnsafeMutableRawPointer) -> Int {
        let segment = cursor.copyNext(to: destination)
        let tcp = layout.transportOffset
        if !layout.isIPv6 {
            destination.storeBigEndian16(
                firstIdentification &+ UInt16(truncatingIfNeeded: cursor.index &- 1),
                at: layout.networkOffset &+ 4
            )
        }
        layout.setIPLength(destination, frameLength: segment.length)
        destination.storeBigEndian32(
            firstSequence &+ UInt32(truncatingIfNeeded: segment.payloadOffset),
            at: tcp &+ 4
        )
        var flags = destination.load(fromByteOffset: tcp &+ 13, as: UInt8.self)
        if !segment.isLast { flags &= ~(TCPFrame.finFlag | TCPFrame.pushFlag) }
        if !segment.isFirst { flags &= ~TCPFrame.cwrFlag }
        destination.storeBytes(of: flags, toByteOffset: tcp &+ 13, as: UInt8.self)
        layout.setTCPChecksum(destination, length: segment.length)
        return segment.length
    }
}
