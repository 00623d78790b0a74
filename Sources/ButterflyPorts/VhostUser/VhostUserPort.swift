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
///
/// Frames longer than a small buffer (docs/JUMBO.md): a chain that does not fit one is measured
/// and read again, a jumbo frame into a large pool buffer, a TCP super-frame (HOST_TSO) into
/// the port's scratch area, from which `TCPSegmenter` cuts it. Towards the guest, with
/// GUEST_TSO, runs of in-order segments of one TCP flow leave as one super-frame
/// (`TCPCoalescer`), gathered from their buffers straight into the guest's.
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
    /// The guest takes TCP super-frames (GUEST_CSUM and GUEST_TSO4/6).
    private var guestTSO4 = false
    private var guestTSO6 = false
    /// The guest may hand us TCP super-frames (HOST_TSO4/6).
    private var hostTSO = false
    private let header: UnsafeMutableRawPointer
    /// The header of a merged super-frame towards the guest.
    private let superFrameHeader: UnsafeMutableRawPointer
    private let receiveHeader: UnsafeMutableRawPointer
    /// A guest super-frame, whole, while it is cut (allocated with the port, touched only by
    /// super-frames).
    private let scratch: UnsafeMutableRawPointer
    /// A super-frame whose segments did not all fit in the last batch.
    private var pendingSegments: TCPSegmenter?
    /// The pieces of a merged super-frame towards the guest.
    private let pieces: UnsafeMutablePointer<iovec>
    /// Largest super-frame a guest may hand over (64 KiB of IP datagram plus link headers).
    static let largestFrame = 65_535 + 18
    /// Chains whose descriptors and first buffers are prefetched before a ring is served.
    static let prefetchDepth = 32
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
        superFrameHeader = .allocate(byteCount: 16, alignment: 8)
        superFrameHeader.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        superFrameHeader.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 10, as: UInt16.self)
        receiveHeader = .allocate(byteCount: 16, alignment: 8)
        scratch = .allocate(byteCount: Self.largestFrame, alignment: 64)
        pieces = .allocate(capacity: TCPCoalescer.maximumSegments + 1)
        readyEvents = Array(repeating: epoll_event(), count: 2 * queuePairs)
    }

    deinit {
        close(fileDescriptor)
        header.deallocate()
        superFrameHeader.deallocate()
        receiveHeader.deallocate()
        scratch.deallocate()
        pieces.deallocate()
    }

    // MARK: Control side (VhostUserDataPath, from the control thread)

    public func start(ring: Int, queue: Virtqueue, kick: Int32, call: Int32, session: VhostUserSession) {
        let headerSize =
            session.negotiated(VhostUserSession.featureVersion1)
                || session.negotiated(VhostUserSession.featureMergeableBuffers) ? 12 : 10
        let mergeable = session.negotiated(VhostUserSession.featureMergeableBuffers)
        let guestCSUM = session.negotiated(VhostUserSession.featureGuestCSUM)
        let guestTSO4 = guestCSUM && session.negotiated(VhostUserSession.featureGuestTSO4)
        let guestTSO6 = guestCSUM && session.negotiated(VhostUserSession.featureGuestTSO6)
        let hostTSO =
            session.negotiated(VhostUserSession.featureHostTSO4) || session.negotiated(VhostUserSession.featureHostTSO6)
        _ = runOnWorker { [self] in
            guard ring < queues.count else { return 0 }
            if queues[ring] != nil { _ = stopOnWorker(ring) }
            self.headerSize = headerSize
            self.mergeable = mergeable
            self.guestTSO4 = guestTSO4
            self.guestTSO6 = guestTSO6
            self.hostTSO = hostTSO
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
        if pendingSegments != nil {
            received = segment(into: batch, pool: pool)
            if pendingSegments != nil { return received }
        }
        // Each call starts at the next transmitq, so a busy first queue cannot fill every batch.
        let rings = transmitRings.count
        guard rings > 0 else { return received }
        firstTransmitRing = firstTransmitRing &+ 1 < rings ? firstTransmitRing &+ 1 : 0
        for step in 0..<rings {
            let position = firstTransmitRing &+ step
            let ring = transmitRings[position < rings ? position : position &- rings]
            guard var queue = queues[ring] else { continue }
            queues[ring] = nil  // no second reference while we mutate the copy
            var warmed = 0  // chains ahead already prefetched
            while !batch.isFull, pendingSegments == nil {
                guard let pending = queue.pending() else {
                    // A guest claiming more entries than the ring holds: nothing sane to take.
                    descriptorErrors &+= 1
                    break
                }
                guard pending > 0 else { break }
                guard var packet = pool.allocate() else { break }  // the frames wait in the ring
                if warmed == 0 {
                    warmed = min(Int(pending), batch.capacity &- batch.count, Self.prefetchDepth)
                    queue.prefetch(warmed, forWriting: false)
                }
                warmed &-= 1
                let head = queue.takeHead()
                var length = 0
                var holding = true  // `packet` is ours to release
                var whole = false  // the frame is in `scratch`, not in `packet`
                var waitForBuffer = false  // a jumbo frame and no large buffer free
                do throws(Virtqueue.ChainError) {
                    do throws(Virtqueue.ChainError) {
                        length = try queue.read(
                            head,
                            header: receiveHeader,
                            headerSize: headerSize,
                            frame: pool.data(packet),
                            capacity: PacketPool.maximumFrame
                        )
                    } catch .tooLong {
                        // Longer than a small buffer: a jumbo frame goes to a large one, a
                        // super-frame to the scratch area.
                        pool.release(packet)
                        holding = false
                        let frameBytes = try queue.chainBytes(head) &- headerSize
                        if frameBytes <= PacketPool.maximumLargeFrame {
                            guard let large = pool.allocate(frameLength: frameBytes) else {
                                waitForBuffer = true  // the frame waits in the ring, as others do
                                throw Virtqueue.ChainError.tooLong
                            }
                            packet = large
                            holding = true
                            // The buffer's own room, not the length measured: the guest may
                            // have changed the chain since (a hostile guest flipping a length
                            // between the reads must not write past a small buffer).
                            length = try queue.read(
                                head,
                                header: receiveHeader,
                                headerSize: headerSize,
                                frame: pool.data(packet),
                                capacity: pool.room(packet)
                            )
                        } else {
                            whole = true
                            length = try queue.read(
                                head,
                                header: receiveHeader,
                                headerSize: headerSize,
                                frame: scratch,
                                capacity: Self.largestFrame
                            )
                        }
                    }
                } catch {
                    if waitForBuffer {
                        queue.untake(1)
                        break
                    }
                    queue.addUsed(head, length: 0)
                    if holding { pool.release(packet) }
                    descriptorErrors &+= 1
                    portDrops.receiveDropped &+= 1
                    continue
                }
                queue.addUsed(head, length: 0)
                let offload = VirtioNetHeader(loadingFrom: receiveHeader)
                if !whole, offload.gsoType != VirtioNetHeader.gsoNone, hostTSO {
                    // A super-frame short enough for a buffer (a little more than one segment
                    // of payload): cut from the scratch area like any other.
                    scratch.copyMemory(from: pool.data(packet), byteCount: length)
                    pool.release(packet)
                    whole = true
                }
                if whole {
                    // A super-frame (HOST_TSO): cut into segments, as a tap's. One that was
                    // not negotiated, or that is not a valid TCP super-frame, is refused; so
                    // is a frame too long for any buffer that claims no segmentation.
                    guard hostTSO, offload.gsoType != VirtioNetHeader.gsoNone else {
                        portDrops.receiveDropped &+= 1
                        continue
                    }
                    do throws(OffloadError) {
                        pendingSegments = try TCPSegmenter(
                            frame: scratch,
                            length: length,
                            header: offload,
                            maximumSegmentFrame: pool.maximumHeldFrame
                        )
                    } catch {
                        portDrops.receiveDropped &+= 1
                        continue
                    }
                    received &+= segment(into: batch, pool: pool)
                    continue
                }
                // A checksum left to us (CSUM) is completed here, so the rest of the engine
                // sees whole frames; one whose offsets do not fit the frame is refused, and so
                // is a super-frame when HOST_TSO was not negotiated; a runt carries no Ethernet
                // header.
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
            if batch.isFull || pendingSegments != nil { break }
        }
        return received
    }

    private func segment(into batch: PacketBatch, pool: PacketPool) -> Int {
        cutPendingSegments(&pendingSegments, into: batch, pool: pool)
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
        let coalesce = guestTSO4 || guestTSO6
        var index = 0
        var warmed = 0  // receive buffers ahead already prefetched
        while index < count {
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
                warmed = 0
            }
            if warmed == 0, let pending = queue?.pending() {
                warmed = min(Int(pending), count &- index, Self.prefetchDepth)
                queue?.prefetch(warmed, forWriting: true)
            }
            warmed = max(0, warmed &- 1)
            // A run of in-order segments of one TCP flow (one flow: one ring) goes as one
            // super-frame when the guest takes them.
            var frames = 1
            var merged: TCPCoalescer?
            if coalesce, index &+ 1 < count, var run = TCPCoalescer(frame: data, length: Int(packet.length)),
                run.layout.isIPv6 ? guestTSO6 : guestTSO4
            {
                while index &+ frames < count, run.canGrow,
                    run.append(pool.data(batch[index &+ frames]), length: Int(batch[index &+ frames].length))
                {
                    frames &+= 1
                }
                if frames > 1 { merged = run }
            }
            do throws(Virtqueue.ChainError) {
                let placed: Bool
                if let merged {
                    merged.finish().store(to: superFrameHeader)
                    // The helper puts a header first: the pieces start after it.
                    let entries = fillSuperFrameVectors(
                        pieces,
                        header: superFrameHeader,
                        batch: batch,
                        from: index,
                        members: frames,
                        headerLength: merged.layout.headerLength,
                        pool: pool
                    )
                    placed = try queue!.enqueue(
                        header: superFrameHeader,
                        headerSize: headerSize,
                        pieces: pieces + 1,
                        count: entries &- 1,
                        length: merged.mergedLength,
                        mergeable: mergeable
                    )
                } else {
                    placed = try queue!.enqueue(
                        header: header,
                        headerSize: headerSize,
                        frame: data,
                        length: Int(packet.length),
                        mergeable: mergeable
                    )
                }
                if placed {
                    sent &+= frames
                } else {
                    portDrops.transmitDropped &+= UInt64(frames)  // the guest gave no room
                }
            } catch {
                descriptorErrors &+= 1
                portDrops.transmitDropped &+= UInt64(frames)
            }
            index &+= frames
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
