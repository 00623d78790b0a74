/// A vector of packet handles processed together by every node (VPP-style), with a fixed
/// capacity allocated once. A node reads one batch and appends into per-output batches.
public final class PacketBatch {
    public static let defaultCapacity = 256

    public let capacity: Int
    @usableFromInline let storage: UnsafeMutablePointer<Packet>
    /// The count lives behind a pointer the batch owns, not in a stored `var`: code inlined
    /// into other modules must check exclusivity dynamically on a class's stored `var`
    /// (`swift_beginAccess`, ~10 % of the encap chain's time at 64 B), never on memory behind
    /// a `let` pointer.
    @usableFromInline let countStorage: UnsafeMutablePointer<Int>
    @usableFromInline var _count: Int {
        @inline(__always) get { countStorage.pointee }
        @inline(__always) set { countStorage.pointee = newValue }
    }
    @inlinable public var count: Int { _count }

    public init(capacity: Int = PacketBatch.defaultCapacity) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        countStorage = .allocate(capacity: 1)
        countStorage.initialize(to: 0)
    }

    deinit {
        storage.deallocate()
        countStorage.deallocate()
    }

    @inlinable public var isEmpty: Bool { count == 0 }
    @inlinable public var isFull: Bool { count == capacity }

    @inlinable
    public subscript(index: Int) -> Packet {
        get {
            assert(index < count)
            return storage[index]
        }
        set {
            assert(index < count)
            storage[index] = newValue
        }
    }

    /// Appends; the caller checks `isFull` first (a full batch is flushed, never grown).
    @inlinable
    public func append(_ packet: Packet) {
        precondition(count < capacity, "batch overflow")
        storage[count] = packet
        _count &+= 1
    }

    @inlinable
    public func removeAll() { _count = 0 }

    /// Releases every packet to the pool and empties the batch.
    @inlinable
    public func releaseAll(to pool: PacketPool) {
        for index in 0..<count { pool.release(storage[index]) }
        _count = 0
    }

    /// Direct access for ports that fill a batch from a ring.
    @inlinable
    public func setCount(_ newCount: Int) {
        precondition(newCount <= capacity)
        _count = newCount
    }

    @inlinable public var buffer: UnsafeMutablePointer<Packet> { storage }
}
