import ButterflyPacket

/// A source and sink of frames for the worker: a guest NIC (tap, vhost-user) or the underlay.
///
/// Called only from the worker thread that owns the port, once per batch (never per packet),
/// so a class-bound protocol costs one dynamic call per batch.
public protocol PacketPort: AnyObject {
    /// For logs and the DOT graph.
    var name: String { get }
    /// Readable when frames wait (epoll while idle); -1 when the port cannot be polled.
    var fileDescriptor: Int32 { get }
    /// Appends up to `batch.capacity - batch.count` received frames, each in a buffer of
    /// `pool` with the pool's default headroom; returns how many it appended. Frames that
    /// cannot be taken (pool empty, oversize) are dropped and counted by the port.
    func receive(into batch: PacketBatch, pool: PacketPool) -> Int
    /// Sends every frame of `batch`, then releases them all to `pool` and empties the batch;
    /// returns how many were sent (the rest were dropped: ring full, link down).
    func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int
    /// Frames and bytes the port dropped itself (receive side, transmit side).
    var portDrops: PortDropCounters { get }
    /// Frames the kernel dropped before the port could take them (a full receive ring); may
    /// cost a system call, so the worker reads it once a second.
    var kernelDrops: UInt64 { get }
    /// Frames the guest handed over in a form the port refuses (vhost-user: descriptor chains
    /// that broke the ring rules), counted in `portDrops` too; published once a second.
    var guestErrors: UInt64 { get }

    // Hooks for ports that are more than one descriptor (vhost-user: a kick eventfd per queue
    // behind one epoll descriptor, notifications the guest may suppress). A tap or a packet
    // socket keeps the defaults, which cost nothing.

    /// True when the port wants `wake` and `prepareToSleep` (asked once, when it is adopted).
    var hasSleepHooks: Bool { get }
    /// `fileDescriptor` became readable while the worker slept: the port clears what woke it
    /// (drains its kick eventfds) and stops asking to be woken while the worker busy-polls.
    func wake()
    /// The worker is about to sleep: the port asks to be woken for new frames and returns
    /// true when frames arrived meanwhile (the worker then polls again instead of sleeping).
    func prepareToSleep() -> Bool
}

extension PacketPort {
    public var kernelDrops: UInt64 { 0 }
    public var guestErrors: UInt64 { 0 }
    public var hasSleepHooks: Bool { false }
    public func wake() {}
    public func prepareToSleep() -> Bool { false }

    /// `transmit`, counting what the port could not send (a guest's queue full, a full ring,
    /// a link down) as `transmit-failed` in `counters`.
    @inline(__always)
    func transmit(_ batch: PacketBatch, pool: PacketPool, failuresTo counters: CounterBlock?) {
        let queued = batch.count
        let sent = transmit(batch, pool: pool)
        if sent < queued { counters?.countDrop(.transmitFailed, packets: queued &- sent) }
    }
}

public struct PortDropCounters: Sendable, Equatable {
    public var receiveDropped: UInt64 = 0
    public var transmitDropped: UInt64 = 0
    public init() {}
}
