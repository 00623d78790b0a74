import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts

#if canImport(Glibc)
    import Glibc
#endif

/// `VhostUserPort` against a guest simulated in the same process: one shared-memory file
/// holding two split rings of 256 entries and 256 frame buffers of 2 KiB each, mapped through
/// `GuestMemory` as a front-end's memory table would be.
///
/// ```
///  guest memory (guest-physical 0x4000_0000):
///    0x00000 transmitq descriptors / 0x1000 avail / 0x2000 used      (guest → us)
///    0x10000 receiveq  descriptors / 0x11000 avail / 0x12000 used     (us → guest)
///    0x100000 + 2 KiB × i   frame buffer i (header + frame), i < 256
/// ```
///
/// Each batch the "guest" makes 250 entries available (an index bump and 250 ring entries, as
/// a driver does) and the port moves them; used entries are not read back (a driver would).
final class VhostStage: Scenario {
    enum Direction { case fromGuest, toGuest }

    static let ringSize: UInt16 = 256
    static let guestPhysical: UInt64 = 0x4000_0000
    static let memorySize = 0x100000 + 256 * 2048
    static let headerSize = 12

    let direction: Direction
    let size: FrameSize
    let pool = PacketPool(capacity: 1024)
    let batch = PacketBatch()
    let port: VhostUserPort
    let mapping: UnsafeMutableRawPointer
    let ringBase: Int
    var availableIndex: UInt16 = 0

    init(size: FrameSize, direction: Direction) {
        self.size = size
        self.direction = direction
        // A shared-memory file only the descriptor names, as a front-end's memfd.
        let path = "/dev/shm/bench-vhost-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        precondition(fd >= 0)
        unlink(path)
        precondition(ftruncate(fd, off_t(Self.memorySize)) == 0)
        mapping = mmap(nil, Self.memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        let memory = try! GuestMemory(
            [
                GuestMemory.RegionDescription(
                    guestPhysical: Self.guestPhysical,
                    size: UInt64(Self.memorySize),
                    userAddress: 0x7000_0000_0000,
                    mmapOffset: 0
                )
            ],
            fds: [dup(fd)]
        )
        close(fd)
        // The features testpmd's virtio_user takes from us for this run.
        let session = VhostUserSession(queuePairs: 1)
        let features =
            VhostUserSession.featureVersion1 | VhostUserSession.featureMergeableBuffers
            | VhostUserSession.featureEventIndex
        _ = try! session.handle(
            VhostUserMessage(request: VhostUserRequest.setFeatures, payload: VhostUserMessage.littleEndianBytes(features))
        )
        port = try! VhostUserPort(name: "bench", queuePairs: 1, runOnWorker: { body in body() })
        ringBase = direction == .fromGuest ? 0 : 0x10000
        let ring = UInt64(ringBase)
        let queue = Virtqueue(
            size: Self.ringSize,
            descriptors: memory.translate(guestPhysical: Self.guestPhysical + ring, length: 16 * 256)!,
            available: memory.translate(guestPhysical: Self.guestPhysical + ring + 0x1000, length: 6 + 2 * 256)!,
            used: memory.translate(guestPhysical: Self.guestPhysical + ring + 0x2000, length: 6 + 8 * 256)!,
            memory: memory,
            base: 0,
            indirectAllowed: true,
            eventIndex: true
        )
        // One descriptor per buffer: a whole frame behind its header (guest → us), or a 2 KiB
        // receive buffer (us → guest).
        for index in 0..<Int(Self.ringSize) {
            let buffer = 0x100000 + 2048 * index
            let entry = mapping + ringBase + 16 * index
            entry.storeBytes(of: Self.guestPhysical + UInt64(buffer), toByteOffset: 0, as: UInt64.self)
            let length = direction == .fromGuest ? UInt32(Self.headerSize + size.rawValue) : 2048
            entry.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            entry.storeBytes(of: direction == .fromGuest ? 0 : Virtqueue.flagWrite, toByteOffset: 12, as: UInt16.self)
            entry.storeBytes(of: UInt16(0), toByteOffset: 14, as: UInt16.self)
            if direction == .fromGuest {
                (mapping + buffer).initializeMemory(as: UInt8.self, repeating: 0, count: Self.headerSize)
                BenchFrames.udp(
                    into: mapping + buffer + Self.headerSize,
                    length: size.rawValue,
                    sourceMAC: Addresses.guestA,
                    destinationMAC: Addresses.guestB,
                    source: Addresses.guestAIP,
                    destination: Addresses.guestBIP
                )
            }
        }
        if direction == .fromGuest {
            port.start(ring: 1, queue: queue, kick: -1, call: -1, session: session)
        } else {
            port.start(ring: 0, queue: queue, kick: -1, call: -1, session: session)
        }
    }

    /// The guest offers `count` descriptors, round the ring.
    @inline(__always)
    func offer(_ count: Int) {
        let available = mapping + ringBase + 0x1000
        for _ in 0..<count {
            let slot = Int(availableIndex & (Self.ringSize &- 1))
            available.storeBytes(of: UInt16(slot), toByteOffset: 4 + 2 * slot, as: UInt16.self)
            availableIndex &+= 1
        }
        available.storeBytes(of: availableIndex, toByteOffset: 2, as: UInt16.self)
    }

    func run() -> Int {
        var moved = 0
        for _ in 0..<Scenarios.batchesPerRun {
            offer(Scenarios.batchSize)
            switch direction {
            case .fromGuest:
                moved &+= port.receive(into: batch, pool: pool)
                batch.releaseAll(to: pool)
            case .toGuest:
                // Packets of the frame's length (their bytes do not matter to the copy).
                for _ in 0..<Scenarios.batchSize {
                    var packet = pool.allocate()!
                    packet.length = UInt16(size.rawValue)
                    batch.append(packet)
                }
                moved &+= port.transmit(batch, pool: pool)
            }
        }
        return moved
    }
}
