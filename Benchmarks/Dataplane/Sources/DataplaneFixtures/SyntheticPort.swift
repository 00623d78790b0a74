import ButterflyDataplane
import ButterflyPacket

#if canImport(Glibc)
    import Glibc
#endif

/// An in-memory port for driving a real `Worker` without I/O: a source of pre-built frames and
/// a sink that counts and releases what the worker sends.
///
/// ```
///  inject(n) ─► backlog ─► receive(): up to n frames, each one memcpy of a template into a
///                           fresh pool buffer (the one copy a real port does)
///  transmit(batch) ─► count frames and bytes ─► release every buffer to the pool
/// ```
///
/// Templates live outside the pool and are handed out round-robin. Not thread-safe: like every
/// port, it belongs to the thread that drives the worker.
public final class SyntheticPort: PacketPort {
    public let name: String
    public var fileDescriptor: Int32 { -1 }
    public var portDrops: PortDropCounters { PortDropCounters() }

    /// Frames `receive` still has to hand out.
    public private(set) var backlog = 0
    public private(set) var receivedFrames = 0
    public private(set) var transmittedFrames = 0
    public private(set) var transmittedBytes = 0
    /// Frames `receive` could not take because the pool was empty.
    public private(set) var poolExhausted = 0
    /// Called for every transmitted frame when set: for checking a scenario during setup, never
    /// while measuring.
    public var inspectTransmit: ((UnsafeMutableRawPointer, Int) -> Void)?

    private let templates: UnsafeMutableRawPointer
    private let templateLengths: [Int]
    private var nextTemplate = 0

    /// `frames` are copied; each is one template.
    public init(name: String, frames: [[UInt8]]) {
        precondition(frames.allSatisfy { $0.count <= PacketPool.maximumFrame })
        self.name = name
        let storage = UnsafeMutableRawPointer.allocate(
            byteCount: max(1, frames.count) * PacketPool.bufferSize,
            alignment: 64
        )
        for (index, frame) in frames.enumerated() {
            frame.withUnsafeBytes { bytes in
                (storage + index * PacketPool.bufferSize).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
        }
        templates = storage
        templateLengths = frames.map(\.count)
    }

    deinit { templates.deallocate() }

    /// Makes the next `receive` calls hand out `count` more frames.
    public func inject(_ count: Int) {
        precondition(templateLengths.count > 0 || count == 0, "a port without templates cannot send")
        backlog &+= count
    }

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        let wanted = min(backlog, batch.capacity &- batch.count)
        guard wanted > 0 else { return 0 }
        let slots = batch.buffer + batch.count
        var taken = 0
        while taken < wanted {
            guard var packet = pool.allocate() else {
                poolExhausted &+= wanted &- taken
                break
            }
            let length = templateLengths[nextTemplate]
            memcpy(pool.data(packet), templates + nextTemplate &* PacketPool.bufferSize, length)
            packet.length = UInt16(truncatingIfNeeded: length)
            slots[taken] = packet
            taken &+= 1
            nextTemplate = nextTemplate &+ 1 == templateLengths.count ? 0 : nextTemplate &+ 1
        }
        backlog &-= wanted
        batch.setCount(batch.count &+ taken)
        receivedFrames &+= taken
        return taken
    }

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        let count = batch.count
        if let inspectTransmit {
            for index in 0..<count {
                let packet = batch[index]
                inspectTransmit(pool.data(packet), Int(packet.length))
            }
        }
        var bytes = 0
        for index in 0..<count { bytes &+= Int(batch[index].length) }
        transmittedFrames &+= count
        transmittedBytes &+= bytes
        batch.releaseAll(to: pool)
        return count
    }

    /// Forgets the counts (after warm-up and checks).
    public func resetCounts() {
        receivedFrames = 0
        transmittedFrames = 0
        transmittedBytes = 0
        poolExhausted = 0
    }
}
