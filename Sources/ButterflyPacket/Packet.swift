/// A packet handle: where its bytes are in the pool and what the nodes learned about it.
/// Small and trivially copyable, so batches move handles, never bytes.
public struct Packet: Sendable {
    /// Buffer index in the worker's `PacketPool`.
    public var buffer: UInt32
    /// Offset of the first data byte within the buffer (headroom before it).
    public var offset: UInt16
    /// Bytes of data.
    public var length: UInt16
    /// Worker-local index of the port it came in on.
    public var port: UInt16 = 0
    /// Virtual network once classified.
    public var vni: UInt32 = 0

    @inlinable
    public init(buffer: UInt32, offset: UInt16, length: UInt16) {
        self.buffer = buffer
        self.offset = offset
        self.length = length
    }

    /// Grows the data at the front by `bytes` (taken from the headroom). False if there is not
    /// enough headroom.
    @inlinable
    public mutating func prepend(_ bytes: Int) -> Bool {
        guard Int(offset) >= bytes else { return false }
        offset &-= UInt16(bytes)
        length &+= UInt16(bytes)
        return true
    }

    /// Drops `bytes` from the front (decapsulation). False if the packet is shorter.
    @inlinable
    public mutating func removeFront(_ bytes: Int) -> Bool {
        guard Int(length) >= bytes else { return false }
        offset &+= UInt16(bytes)
        length &-= UInt16(bytes)
        return true
    }
}
