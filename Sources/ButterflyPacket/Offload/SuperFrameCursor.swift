/// The walk TCP and UDP segmentation share: a super-frame — `headerLength` bytes of headers,
/// then payload — cut into pieces of at most `segmentSize` payload bytes, each written as a
/// copy of the headers followed by its piece. The protocol-specific segmenters then fix the
/// copied headers (lengths, identification, sequence, flags, checksums).
public struct SuperFrameCursor {
    public let frame: UnsafeRawPointer
    public let length: Int
    public let headerLength: Int
    public let segmentSize: Int
    /// The next payload byte to cut.
    @usableFromInline var payloadOffset: Int
    /// How many segments were written.
    public var index: Int { written }
    @usableFromInline var written = 0

    @inlinable
    public init(frame: UnsafeRawPointer, length: Int, headerLength: Int, segmentSize: Int) {
        self.frame = frame
        self.length = length
        self.headerLength = headerLength
        self.segmentSize = segmentSize
        payloadOffset = headerLength
    }

    /// True once every payload byte went into a segment (a super-frame without payload still
    /// yields one segment: its headers).
    @inlinable
    public var isFinished: Bool { payloadOffset >= length && written > 0 }

    /// How many segments the whole super-frame makes.
    @inlinable
    public var segmentCount: Int {
        max(1, (length &- headerLength &+ segmentSize &- 1) / segmentSize)
    }

    /// The longest frame a segment can be (all but the last have this length): what the
    /// caller allocates each segment's buffer for.
    @inlinable
    public var largestSegmentFrame: Int { headerLength &+ segmentSize }

    /// One written segment: its length, its payload's offset within the super-frame's
    /// payload, and whether it is the first or the last.
    public struct Segment {
        public let length: Int
        public let payloadOffset: Int
        public let isFirst: Bool
        public let isLast: Bool

        @inlinable
        init(length: Int, payloadOffset: Int, isFirst: Bool, isLast: Bool) {
            self.length = length
            self.payloadOffset = payloadOffset
            self.isFirst = isFirst
            self.isLast = isLast
        }
    }

    /// Copies the headers and the next piece of payload to `destination` (room for
    /// `headerLength + segmentSize` bytes).
    @inlinable
    public mutating func copyNext(to destination: UnsafeMutableRawPointer) -> Segment {
        let chunk = min(segmentSize, length &- payloadOffset)
        destination.copyMemory(from: frame, byteCount: headerLength)
        destination.advanced(by: headerLength).copyMemory(from: frame + payloadOffset, byteCount: chunk)
        let segment = Segment(
            length: headerLength &+ chunk,
            payloadOffset: payloadOffset &- headerLength,
            isFirst: written == 0,
            isLast: payloadOffset &+ chunk >= length
        )
        payloadOffset &+= chunk
        written &+= 1
        return segment
    }
}
