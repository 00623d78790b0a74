#if canImport(Glibc)
    import Glibc
#endif

/// All packet memory of one worker: a single mmap'd region cut into fixed buffers of two size
/// classes, and a stack of free buffer indices per class. Allocation and release are a few
/// instructions and never call malloc.
///
/// ```
///  region:  [ small 0 ][ small 1 ] … [ small n-1 ][ large 0 (5 slots) ][ large 1 ] …
///  slot:    2 KiB; a buffer's index is the index of its first slot, so a packet's address
///           is base + index × 2 KiB + offset whatever its class (no branch on the fast path)
///  buffer:  [ headroom (192 B) | frame data … ]           a new packet starts after headroom,
///                                                          so VXLAN encap is a prepend
/// ```
///
/// **Why two classes** (docs/JUMBO.md): almost every frame fits a 2 KiB buffer, and jumbo
/// frames (guest MTU up to 9,000) need 10 KiB. Sizing every buffer for them would multiply the
/// memory a worker touches by five and spread its cache footprint; chaining buffers would make
/// every node walk chains. Ports allocate by the length they already know
/// (`allocate(frameLength:)`) and the rest of the engine sees one contiguous frame either way.
/// Small buffers are touched at start (their cost is predictable); large ones are mapped but
/// only touched when jumbo frames first flow, so a host without them pays nothing.
///
/// Not thread-safe by design: a pool belongs to one worker thread.
public final class PacketPool {
    /// Bytes of one slot, and of a small buffer.
    public static let bufferSize = 2048
    public static let headroom = 192
    /// Largest frame a small buffer holds after the default headroom.
    public static let maximumFrame = bufferSize - headroom
    /// Slots per large buffer.
    public static let largeSlots = 5
    public static let largeBufferSize = bufferSize * largeSlots
    /// Largest frame any buffer holds after the default headroom (10,048 bytes: a 9,000-byte
    /// guest MTU plus Ethernet and VXLAN-over-IPv6 headers fit).
    public static let maximumLargeFrame = largeBufferSize - headroom

    /// Small buffers.
    public let capacity: Int
    /// Large buffers.
    public let largeCapacity: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let freeStack: UnsafeMutablePointer<UInt32>
    @usableFromInline var freeCount: Int
    @usableFromInline let largeFreeStack: UnsafeMutablePointer<UInt32>
    @usableFromInline var largeFreeCount: Int
    /// Indices at or above this are large buffers.
    @usableFromInline let firstLarge: UInt32
    private let regionBytes: Int

    /// Maps `capacity` small and `largeCapacity` large buffers up front: the memory a worker
    /// will ever use for packets is reserved at start, and bounded.
    public init(capacity: Int, largeCapacity: Int = 0) {
        let slots = capacity + largeCapacity * Self.largeSlots
        precondition(capacity > 0 && largeCapacity >= 0 && slots < Int(UInt32.max))
        self.capacity = capacity
        self.largeCapacity = largeCapacity
        regionBytes = slots * Self.bufferSize
        guard let region = mmap(nil, regionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            region != MAP_FAILED
        else { fatalError("cannot map \(regionBytes) bytes of packet memory: \(String(cString: strerror(errno)))") }
        base = region
        // Touch the small buffers now (what MAP_POPULATE did for the whole region before).
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        for offset in stride(from: 0, to: capacity * Self.bufferSize, by: page) {
            region.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
        }
        firstLarge = UInt32(capacity)
        freeStack = .allocate(capacity: capacity)
        for index in 0..<capacity { freeStack[index] = UInt32(capacity - 1 - index) }
        freeCount = capacity
        largeFreeStack = .allocate(capacity: max(largeCapacity, 1))
        // Lowest first out, so a light jumbo load keeps reusing the same few touched buffers.
        for index in 0..<largeCapacity {
            largeFreeStack[index] = UInt32(capacity + (largeCapacity - 1 - index) * Self.largeSlots)
        }
        largeFreeCount = largeCapacity
    }

    deinit {
        munmap(base, regionBytes)
        freeStack.deallocate()
        largeFreeStack.deallocate()
    }

    /// The longest frame a buffer of this pool holds: what a port may cut a super-frame's
    /// segments to (a pool without large buffers would leave longer segments waiting for ever).
    public var maximumHeldFrame: Int { largeCapacity > 0 ? Self.maximumLargeFrame : Self.maximumFrame }

    /// Small buffers not in use.
    public var available: Int { freeCount }
    /// Large buffers not in use.
    public var largeAvailable: Int { largeFreeCount }

    /// Free buffers of the class that holds `frameLength` bytes (0 past the largest class).
    @inlinable
    public func available(forFrameLength frameLength: Int) -> Int {
        if frameLength <= Self.maximumFrame { return freeCount }
        return frameLength <= Self.maximumLargeFrame ? largeFreeCount : 0
    }

    /// A new empty packet in a small buffer, its data starting after the headroom, or `nil`
    /// when none is free (the caller counts a drop).
    @inlinable
    public func allocate() -> Packet? {
        guard freeCount > 0 else { return nil }
        freeCount &-= 1
        return Packet(buffer: freeStack[freeCount], offset: UInt16(Self.headroom), length: 0)
    }

    /// A new empty packet in the smallest buffer that holds `frameLength` bytes after the
    /// headroom, or `nil` when none is free or the frame is longer than any buffer.
    @inlinable
    public func allocate(frameLength: Int) -> Packet? {
        if frameLength <= Self.maximumFrame { return allocate() }
        guard frameLength <= Self.maximumLargeFrame, largeFreeCount > 0 else { return nil }
        largeFreeCount &-= 1
        return Packet(buffer: largeFreeStack[largeFreeCount], offset: UInt16(Self.headroom), length: 0)
    }

    @inlinable
    public func release(_ packet: Packet) {
        // Safe: a packet handle only comes from this pool, and each is released once.
        if packet.buffer < firstLarge {
            assert(freeCount < capacity, "packet released twice")
            freeStack[freeCount] = packet.buffer
            freeCount &+= 1
        } else {
            assert(largeFreeCount < largeCapacity, "packet released twice")
            largeFreeStack[largeFreeCount] = packet.buffer
            largeFreeCount &+= 1
        }
    }

    /// Whether `packet` sits in a large buffer.
    @inlinable
    public func isLarge(_ packet: Packet) -> Bool { packet.buffer >= firstLarge }

    /// Bytes from the packet's first data byte to the end of its buffer.
    @inlinable
    public func room(_ packet: Packet) -> Int {
        (packet.buffer < firstLarge ? Self.bufferSize : Self.largeBufferSize) &- Int(packet.offset)
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

    /// A copy of `packet` in a new buffer of a class that holds it (flooding to several
    /// outputs), or `nil` when none is free.
    @inlinable
    public func clone(_ packet: Packet) -> Packet? {
        // The copy keeps the data's offset, so it needs a buffer that reaches the data's end.
        guard var copy = allocate(frameLength: Int(packet.offset) &+ Int(packet.length) &- Self.headroom) else {
            return nil
        }
        copy.offset = packet.offset
        copy.length = packet.length
        copy.port = packet.port
        copy.vni = packet.vni
        data(copy).copyMemory(from: data(packet), byteCount: Int(packet.length))
        return copy
    }
}
