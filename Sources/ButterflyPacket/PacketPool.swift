#if canImport(Glibc)
    import Glibc
#endif

/// All packet memory of one worker: a single mmap'd region cut into fixed buffers, and a stack
/// of free buffer indices. Allocation and release are a few instructions and never call malloc.
///
/// ```
///  region:  [ buffer 0 ][ buffer 1 ] … [ buffer n-1 ]      each `bufferSize` bytes
///  buffer:  [ headroom (192 B) | frame data … ]           a new packet starts after headroom,
///                                                          so VXLAN encap is a prepend
/// ```
///
/// Not thread-safe by design: a pool belongs to one worker thread.
public final class PacketPool {
    public static let bufferSize = 2048
    public static let headroom = 192
    /// Largest frame a buffer holds after the default headroom.
    public static let maximumFrame = bufferSize - headroom

    public let capacity: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let freeStack: UnsafeMutablePointer<UInt32>
    @usableFromInline var freeCount: Int

    /// Maps `capacity` buffers up front (MAP_POPULATE): the memory a worker will ever use for
    /// packets is reserved and touched at start, and bounded.
    public init(capacity: Int) {
        precondition(capacity > 0 && capacity < Int(UInt32.max))
        self.capacity = capacity
        let bytes = capacity * Self.bufferSize
        guard let region = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0),
            region != MAP_FAILED
        else { fatalError("cannot map \(bytes) bytes of packet memory: \(String(cString: strerror(errno)))") }
        base = region
        freeStack = .allocate(capacity: capacity)
        for index in 0..<capacity { freeStack[index] = UInt32(capacity - 1 - index) }
        freeCount = capacity
    }

    deinit {
        munmap(base, capacity * Self.bufferSize)
        freeStack.deallocate()
    }

    /// Buffers not in use.
    public var available: Int { freeCount }

    /// A new empty packet whose data starts after the headroom, or `nil` when the pool is empty
    /// (the caller counts a drop).
    @inlinable
    public func allocate() -> Packet? {
        guard freeCount > 0 else { return nil }
        freeCount &-= 1
        return Packet(buffer: freeStack[freeCount], offset: UInt16(Self.headroom), length: 0)
    }

    @inlinable
    public func release(_ packet: Packet) {
        // Safe: a packet handle only comes from this pool, and each is released once.
        assert(freeCount < capacity, "packet released twice")
        freeStack[freeCount] = packet.buffer
        freeCount &+= 1
    }

    /// First byte of the packet's data.
    @inlinable
    public func data(_ packet: Packet) -> UnsafeMutableRawPointer {
        base + (Int(packet.buffer) &* Self.bufferSize &+ Int(packet.offset))
    }

    /// Start of the packet's buffer (before the headroom).
    @inlinable
    public func buffer(_ index: UInt32) -> UnsafeMutableRawPointer {
        base + Int(index) &* Self.bufferSize
    }

    /// A copy of `packet` in a new buffer (flooding to several outputs), or `nil` when empty.
    @inlinable
    public func clone(_ packet: Packet) -> Packet? {
        guard var copy = allocate() else { return nil }
        copy.offset = packet.offset
        copy.length = packet.length
        copy.port = packet.port
        copy.vni = packet.vni
        data(copy).copyMemory(from: data(packet), byteCount: Int(packet.length))
        return copy
    }
}
