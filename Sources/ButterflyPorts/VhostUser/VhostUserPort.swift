import ButterflyDataplane
import ButterflyPacket
import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The packet side of a vhost-user NIC: the guest's queue pairs as one `PacketPort`.
///
/// ```
///  ring 2q   receiveq  (we → guest)   transmit(): enqueue, publish used, call if wanted
///  ring 2q+1 transmitq (guest → us)   receive():  dequeue, publish used, call if wanted
///  fileDescriptor: an epoll set of the running transmitqs' kick eventfds (the worker sleeps
///  on it like on a tap's fd); wake() drains the kicks and asks the guest to stop kicking
///  while the worker polls; prepareToSleep() asks for kicks again and looks once more.
/// ```
///
/// Rings start and stop from the control thread (`VhostUserDataPath`, driven by the NIC's
/// `VhostUserDevice`) through the worker's handshake (`runOnWorker`): the change is made on
/// the worker thread between two batches, so the packet path never takes a lock and a stopped
/// ring's memory is no longer touched when `stop` returns.
///
/// One copy each way, between guest memory and a packet buffer. Every guest address is checked
/// by `Virtqueue` against the memory table; a chain that breaks the rules is returned to the
/// guest empty and counted (`descriptorErrors`), and the queue goes on.
public final class VhostUserPort: PacketPort, VhostUserDataPath, @unchecked Sendable {
    // Safe: every property below is touched only on the worker thread (the packet path, and
    // the closures `runOnWorker` runs there).
    public let name: String
    /// Readable when a running transmitq was kicked.
    public let fileDescriptor: Int32
    public private(set) var portDrops = PortDropCounters()
    /// Chains the guest made that broke the ring rules (outside memory, loops, wrong
    /// direction, too long for a buffer): dropped, counted in `portDrops` too.
    public private(set) var descriptorErrors: UInt64 = 0
    public var guestErrors: UInt64 { descriptorErrors }
    /// Runs a closure on the worker thread between batches and waits for it (the worker's
    /// `onWorkerThread`).
    public typealias WorkerRunner = (@escaping () -> UInt64) -> UInt64
    private let runOnWorker: WorkerRunner

    private var queues: [Virtqueue?]
    private var kicks: [Int32]
    private var calls: [Int32]
    /// Where each ring stopped (GET_VRING_BASE's answer when it is asked again).
    private var stoppedAt: [UInt16]
    /// Running rings by direction, in ring order.
    private var transmitRings: [Int] = []
    private var receiveRings: [Int] = []
    /// The virtio-net header in front of every frame: 12 bytes with VERSION_1 or MRG_RXBUF,
    /// else the legacy 10.
    private var headerSize = 12
    private var mergeable = false
    private let header: UnsafeMutableRawPointer
    private let receiveHeader: UnsafeMutableRawPointer
    /// Where the next `receive` starts among `transmitRings`.
    private var firstTransmitRing = 0
    /// False while the worker polls us after a wake-up (the guest was asked not to kick).
    private var kicksWanted = true
    private var readyEvents: [epoll_event]

    public init(name: String, queuePairs: Int, runOnWorker: @escaping WorkerRunner) throws(VhostUserError) {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw .io("epoll_create1: \(String(cString: strerror(errno)))") }
        self.name = name
        fileDescriptor = fd
        self.runOnWorker = runOnWorker
        queues = Array(repeating: nil, count: 2 * queuePairs)
        kicks = Array(repeating: -1, count: 2 * queuePairs)
        calls = Array(repeating: -1, count: 2 * queuePairs)
        stoppedAt = Array(repeating: 0, count: 2 * queuePairs)
        header = .allocate(byteCount: 16, alignment: 8)
        header.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        // num_buffers: one chain per frame without MRG_RXBUF (VIRTIO 1.1 §5.1.6.3.1);
        // `Virtqueue.enqueue` writes the real count into guest memory with it.
        header.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
        receiveHeader = .allocate(byteCount: 16, alignment: 8)
        readyEvents = Array(repeating: epoll_event(), count: 2 * queuePairs)
    }

    deinit {
        close(fileDescriptor)
        header.deallocate()
        receiveHeader.deallocate()
    }

    // MARK: Control side (VhostUserDataPath, from the control thread)

    public func start(ring: Int, queue: Virtqueue, kick: Int32, call: Int32, session: VhostUserSession) {
        let headerSize =
            session.negotiated(VhostUserSession.featureVersion1)
                || session.negotiated(VhostUserSession.featureMergeableBuffers) ? 12 : 10
        let mergeable = session.negotiated(VhostUserSession.featureMergeableBuffers)
        _ = runOnWorker { [self] in
            guard ring < queues.count else { return 0 }
            if queues[ring] != nil { _ = stopOnWorker(ring) }
            self.headerSize = headerSize
            self.mergeable = mergeable
            queues[ring] = queue
            kicks[ring] = kick
            calls[ring] = call
            if ring % 2 == 1 {
                transmitRings.append(ring)
                transmitRings.sort()
                if kick >= 0 {
                    var event = epoll_event()
                    event.events = UInt32(EPOLLIN.rawValue)
                    event.data.u64 = UInt64(ring)
                    _ = epoll_ctl(fileDescriptor, EPOLL_CTL_ADD, kick, &event)
                }
                // Kicks wanted until the worker polls us; frames already waiting wake it now.
                queue.enableKicks()
                if let pending = queue.pending(), pending > 0, kick >= 0 {
                    var one: UInt64 = 1
                    _ = write(kick, &one, 8)
                }
            } else {
                receiveRings.append(ring)
                receiveRings.sort()
            }
            return 0
        }
    }

    public func stop(ring: Int) -> UInt16 {
        UInt16(truncatingIfNeeded: runOnWorker { [self] in UInt64(stopOnWorker(ring)) })
    }

    public func stopAll() {
        _ = runOnWorker { [self] in
            for ring in queues.indices where queues[ring] != nil { _ = stopOnWorker(ring) }
            return 0
        }
    }

    /// Worker thread: publishes what the ring used, lets go of it, returns where it stopped.
    private func stopOnWorker(_ ring: Int) -> UInt16 {
        guard ring < queues.count, var queue = queues[ring] else {
            return ring < stoppedAt.count ? stoppedAt[ring] : 0
        }
        if queue.publishUsed() { signal(calls[ring]) }
        if ring % 2 == 1, kicks[ring] >= 0 {
            var unused = epoll_event()
            _ = epoll_ctl(fileDescriptor, EPOLL_CTL_DEL, kicks[ring], &unused)
        }
        stoppedAt[ring] = queue.lastAvailable
        queues[ring] = nil
        kicks[ring] = -1
        calls[ring] = -1
        transmitRings.removeAll { $0 == ring }
        receiveRings.removeAll { $0 == ring }
        return stoppedAt[ring]
    }

    // MARK: Packet path (worker thread)

    public var hasSleepHooks: Bool { true }

    public func wake() {
        // Level-triggered: a kick stays readable until read.
        let ready = epoll_wait(fileDescriptor, &readyEvents, Int32(readyEvents.count), 0)
        var drained: UInt64 = 0
        for index in 0..<max(0, Int(ready)) {
            let ring = Int(truncatingIfNeeded: readyEvents[index].data.u64)
            if ring < kicks.count, kicks[ring] >= 0 { _ = read(kicks[ring], &drained, 8) }
        }
        guard kicksWanted else { return }
        kicksWanted = false
        for ring in transmitRings { queues[ring]?.disableKicks() }
    }

    public func prepareToSleep() -> Bool {
        var waiting = false
        for ring in transmitRings {
            guard let queue = queues[ring] else { continue }
            // Always, not only after a wake-up: with EVENT_IDX the guest kicks when it passes
            // the index written here, and frames taken by busy polling since it was last
            // written would leave it behind (the guest would not kick until the index wrapped).
            queue.enableKicks()
            // After asking for kicks: a frame the guest added before it could see the request
            // would otherwise wait for the next one. A ring the front-end runs without a kick
            // descriptor (it asked to be polled) keeps the worker polling while it runs.
            if let pending = queue.pending(), pending > 0 { waiting = true }
            if kicks[ring] < 0 { waiting = true }
        }
        kicksWanted = true
        return waiting
    }

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        var received = 0
        // Each call starts at the next transmitq, so a busy first queue cannot fill every batch.
        let rings = transmitRings.count
        guard rings > 0 else { return 0 }
        firstTransmitRing = firstTransmitRing &+ 1 < rings ? firstTransmitRing &+ 1 : 0
        for step in 0..<rings {
            let position = firstTransmitRing &+ step
            let ring = transmitRings[position < rings ? position : position &- rings]
            guard var queue = queues[ring] else { continue }
            queues[ring] = nil  // no second reference while we mutate the copy
            while !batch.isFull {
                guard let pending = queue.pending() else {
                    // A guest claiming more entries than the ring holds: nothing sane to take.
                    descriptorErrors &+= 1
                    break
                }
                guard pending > 0 else { break }
                guard var packet = pool.allocate() else { break }  // the frames wait in the ring
                let length: Int?
                do throws(Virtqueue.ChainError) {
                    length = try queue.dequeue(
                        header: receiveHeader,
                        headerSize: headerSize,
                        frame: pool.data(packet),
                        capacity: PacketPool.maximumFrame
                    )
                } catch {
                    pool.release(packet)
                    descriptorErrors &+= 1
                    portDrops.receiveDropped &+= 1
                    continue
                }
                guard let length else {
                    pool.release(packet)
                    break
                }
                let offload = VirtioNetHeader(loadingFrom: receiveHeader)
                // Segmentation was not offered: a super-frame broke the negotiation. A checksum
                // left to us (CSUM) is completed here, so the rest of the engine sees whole
                // frames; one whose offsets do not fit the frame is refused. A runt carries no
                // Ethernet header.
                guard length >= 14, offload.gsoType == VirtioNetHeader.gsoNone,
                    offload.flags & VirtioNetHeader.needsChecksum == 0
                        || offload.completeChecksum(pool.data(packet), length: length) == nil
                else {
                    pool.release(packet)
                    portDrops.receiveDropped &+= 1
                    continue
                }
                packet.length = UInt16(length)
                batch.append(packet)
                received &+= 1
            }
            if queue.publishUsed() { signal(calls[ring]) }
            queues[ring] = queue
            if batch.isFull { break }
        }
        return received
    }

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        defer { batch.releaseAll(to: pool) }
        let count = batch.count
        guard !receiveRings.isEmpty else {
            portDrops.transmitDropped &+= UInt64(count)
            return 0
        }
        var sent = 0
        // One receiveq per flow, so a flow's frames reach the guest in order.
        let spread = receiveRings.count > 1
        var current = -1
        var queue: Virtqueue?
        for index in 0..<count {
            let packet = batch[index]
            let data = pool.data(packet)
            let ring =
                spread
                ? receiveRings[Int(FlowHash.hash(data, length: Int(packet.length)) % UInt32(receiveRings.count))]
                : receiveRings[0]
            if ring != current {
                if current >= 0 { finishTransmit(current, &queue) }
                current = ring
                queue = queues[ring]
                queues[ring] = nil
            }
            do throws(Virtqueue.ChainError) {
                if try queue!.enqueue(
                    header: header,
                    headerSize: headerSize,
                    frame: data,
                    length: Int(packet.length),
                    mergeable: mergeable
                ) {
                    sent &+= 1
                } else {
                    portDrops.transmitDropped &+= 1  // the guest gave no room
                }
            } catch {
                descriptorErrors &+= 1
                portDrops.transmitDropped &+= 1
            }
        }
        if current >= 0 { finishTransmit(current, &queue) }
        return sent
    }

    private func finishTransmit(_ ring: Int, _ queue: inout Virtqueue?) {
        guard var running = queue else { return }
        if running.publishUsed() { signal(calls[ring]) }
        queues[ring] = running
        queue = nil
    }

    @inline(__always)
    private func signal(_ call: Int32) {
        guard call >= 0 else { return }
        var one: UInt64 = 1
        _ = write(call, &one, 8)
    }
}
