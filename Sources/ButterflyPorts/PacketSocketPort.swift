import ButterflyDataplane
import ButterflyPacket
import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The underlay port: an AF_PACKET socket bound to one Ethernet interface that the daemon
/// owns (promiscuous, every EtherType), with both rings mmap'd so that a batch costs at most
/// one syscall (the transmit kick) and every frame one copy.
///
/// ```
///  one mapping, shared with the kernel (packet_mmap.rst, TPACKET_V2 for both rings):
///
///  RX: [ frame 0 ][ frame 1 ] … [ frame n-1 ]        each frame: tpacket2_hdr (32 B),
///       ▲ receiveFrame (the kernel fills in order)     sockaddr_ll, virtio-net header, data
///       tp_status: KERNEL ─(kernel writes the frame)─► USER ─(receive copies it out)─► KERNEL
///
///  TX: [ slot 0 ][ slot 1 ] … [ slot m-1 ]           each slot: tpacket2_hdr (32 B), virtio-net
///       ▲ transmitSlot (the kernel walks the same order)    header, frame
///       tp_status: AVAILABLE ─(transmit copies)─► SEND_REQUEST ─(sendto kick)─► SENDING
///       ─(driver done with the skb)─► AVAILABLE
/// ```
///
/// Why TPACKET_V2 and not V3: a V3 block reaches user space only when it is full or its retire
/// timer fires (1 ms at least), so at low rates every frame waited up to 1 ms on each receiving
/// host (ping 0.9–1.5 ms across two hosts). A V2 frame is ours as soon as the kernel wrote it
/// and poll reports it at once. The price is fixed-size frames: each holds the largest
/// super-frame accepted (`Configuration.receiveFrameSize`), so the ring holds fewer small frames
/// per MiB than V3 did, and USO super-frames are capped to fit the receiver's frame.
///
/// Receive drops (counted in `portDrops.receiveDropped`): frames longer than
/// `PacketPool.maximumLargeFrame` (super-frames excepted) or truncated by the ring, refused
/// super-frames, and frames arriving while the pool is empty. Frames the host sends on the
/// interface are not received (PACKET_IGNORE_OUTGOING, and PACKET_OUTGOING is skipped as well).
/// Frames the kernel could not place because every frame was still ours are counted by the
/// kernel: `kernelStatistics()`.
///
/// Transmit drops (`portDrops.transmitDropped`): frames shorter than an Ethernet header or
/// longer than `maximumTransmitFrame`, and frames finding the next slot still in flight (ring
/// full). By default PACKET_QDISC_BYPASS hands frames straight to the driver.
///
/// Owned by one worker thread, like every port.
public final class PacketSocketPort: PacketPort {
    /// Ring geometry and socket options. The defaults hold 1,024 received frames of up to 32 KiB
    /// (32 MiB) and 1,024 transmit slots of 2 KiB.
    ///
    /// The receive geometry is a trade-off measured end to end (docs/PERFORMANCE.md, "Receive
    /// ring"): larger frames carry longer super-frames (TCP across hosts: 16 KiB 0.52 of the
    /// kernel's, 32 KiB 0.59, 64 KiB 0.67), fewer frames absorb shorter bursts of small packets
    /// (64 KiB × 256 lost a fifth of a 64-byte UDP flood in the ring). On an underlay that never
    /// delivers super-frames (a physical NIC without UDP GRO), 2 KiB frames would do.
    public struct Configuration: Sendable {
        /// Bytes of one receive frame, headers included: a multiple of the page size. It bounds
        /// the super-frames accepted, and so the ones this port sends
        /// (`superFrameLimit`): daemons on one underlay use the same value.
        public var receiveFrameSize = 32 << 10
        /// Receive frames: how many frames may wait while the worker is away.
        public var receiveFrameCount = 1024
        /// Bytes of one transmit slot (header included): a multiple of 16 that holds the
        /// 32-byte TPACKET_V2 header, the 10-byte virtio-net header and the largest frame sent
        /// (grown to a power of two that does when the interface has a jumbo MTU).
        public var transmitSlotSize = 2048
        public var transmitSlotCount = 1024
        /// Receives frames for every destination MAC (the daemon owns the interface).
        public var promiscuous = true
        /// Hands transmitted frames straight to the driver (PACKET_QDISC_BYPASS): no qdisc,
        /// and no copy to other packet sockets (tcpdump) on the interface. Off to shape the
        /// underlay with `tc` or to capture what the port sends.
        public var bypassQdisc = true
        /// Virtio-net headers on the socket (PACKET_VNET_HDR) and UDP segmentation offload:
        /// equal-sized VXLAN datagrams to one VTEP leave as one super-frame, super-frames
        /// arriving are cut back (docs/OFFLOADS.md). Off, or on a kernel without USO, every
        /// datagram is its own frame.
        public var offloads = true

        public init() {}
    }

    /// Totals read from the kernel (PACKET_STATISTICS, which resets on each read).
    public struct KernelStatistics: Sendable, Equatable {
        /// Frames the kernel passed to the socket, placed or not.
        public var packets: UInt64 = 0
        /// Frames the kernel dropped because no receive frame was free.
        public var drops: UInt64 = 0
        public init() {}
    }

    /// The interface name.
    public let name: String
    /// The interface index (if_nametoindex).
    public let interfaceIndex: Int32
    /// The interface's hardware address when the port was opened (SIOCGIFHWADDR).
    public let macAddress: MACAddress
    /// The interface MTU when the port was opened (SIOCGIFMTU).
    public let mtu: Int
    /// Largest frame `transmit` sends (Ethernet header included): the MTU plus 14 bytes,
    /// bounded by the slot size.
    public let maximumTransmitFrame: Int
    /// The socket: readable when a receive block is ready.
    public let fileDescriptor: Int32
    /// Written into `Packet.port` of every received frame (the worker's index of this port).
    public var portIndex: UInt16 = 0
    public private(set) var portDrops = PortDropCounters()
    /// Received super-frames refused by the offload checks (counted in
    /// `portDrops.receiveDropped` too).
    public private(set) var offloadErrors: UInt64 = 0
    /// Every ring frame carries a virtio-net header (PACKET_VNET_HDR).
    public let virtioHeaders: Bool
    /// Runs of datagrams leave as USO super-frames through `segmentationSocket`; turned off
    /// for good if the kernel refuses one.
    public private(set) var sendsSuperFrames: Bool
    /// Super-frames sent, and the datagrams they stood for.
    public private(set) var superFramesSent: UInt64 = 0
    public private(set) var datagramsInSuperFrames: UInt64 = 0

    /// A second packet socket on the interface, without rings (a socket with a TX ring sends
    /// only from its ring, whose slots are too small for a super-frame) and bound to protocol
    /// 0 (it receives nothing): `sendmsg` of super-frames straight from the pool buffers.
    private let segmentationSocket: Int32
    private let superFrameHeader: UnsafeMutableRawPointer
    private let savedHeaders: UnsafeMutableRawPointer
    private let vectors: UnsafeMutablePointer<iovec>

    private let ring: UnsafeMutableRawPointer
    private let ringBytes: Int
    private let receiveRing: UnsafeMutableRawPointer
    private let receiveFrameSize: Int
    private let receiveFrameCount: Int
    /// Largest USO super-frame sent: what a peer's receive frame holds.
    public let superFrameLimit: Int
    private let transmitRing: UnsafeMutableRawPointer
    private let transmitSlotSize: Int
    private let transmitSlotCount: Int

    /// Receive cursor: the next frame the kernel fills.
    private var receiveFrame = 0
    /// Transmit cursor: the next slot to fill, in the order the kernel sends them.
    private var transmitSlot = 0
    /// Frames wait in the ring for a kick that did not go through.
    private var pendingKick = PendingKick.none
    private var kernelTotals = KernelStatistics()
    /// Receive calls that found nothing, for the periodic `clearError()`.
    private var emptyReceives = 0

    /// Opens the underlay on `interface`: needs CAP_NET_RAW (root) and an Ethernet interface.
    public init(interface: String, configuration: Configuration = Configuration()) throws(PortError) {
        let subject = "underlay interface \"\(interface)\""
        func failure(_ operation: String, _ code: Int32, hint: String? = nil) -> PortError {
            PortError(subject: subject, operation: operation, errno: code, hint: hint ?? Self.hint(for: code))
        }
        let receiveFrameSize = configuration.receiveFrameSize
        var transmitSlotSize = configuration.transmitSlotSize
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        precondition(
            receiveFrameSize > 0 && receiveFrameSize % pageSize == 0 && configuration.receiveFrameCount > 0,
            "receive frames are whole pages"
        )
        precondition(
            transmitSlotSize % 16 == 0 && transmitSlotSize > Int(CBUTTERFLY_TPACKET2_HEADER_LENGTH) + 24
                && (pageSize % transmitSlotSize == 0 || transmitSlotSize % pageSize == 0),
            "transmit slots are 16-byte aligned and tile pages"
        )
        precondition(configuration.transmitSlotCount > 0, "at least one transmit slot")

        guard !interface.isEmpty, interface.utf8.count < Int(IF_NAMESIZE) else {
            throw failure("interface name check", EINVAL, hint: "a name has 1 to \(IF_NAMESIZE - 1) bytes")
        }
        let index = if_nametoindex(interface)
        guard index != 0 else { throw failure("if_nametoindex", errno) }

        let fd = socket(
            AF_PACKET,
            Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0
        )
        guard fd >= 0 else { throw failure("socket(AF_PACKET, SOCK_RAW)", errno) }
        var mapping: (pointer: UnsafeMutableRawPointer, bytes: Int)?
        func abandon(_ operation: String, _ code: Int32, hint: String? = nil) -> PortError {
            if let mapping { munmap(mapping.pointer, mapping.bytes) }
            close(fd)
            return failure(operation, code, hint: hint)
        }

        var hardwareType: UInt16 = 0
        var octets: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0)
        let addressResult = withUnsafeMutableBytes(of: &octets) { bytes in
            cbutterfly_packet_interface_hardware_address(
                fd,
                interface,
                &hardwareType,
                bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
            )
        }
        guard addressResult == 0 else { throw abandon("ioctl(SIOCGIFHWADDR)", errno) }
        guard hardwareType == UInt16(CBUTTERFLY_ARPHRD_ETHER) else {
            throw abandon(
                "hardware type check",
                EINVAL,
                hint: "the underlay must be an Ethernet interface (this one has ARPHRD type \(hardwareType))"
            )
        }
        var interfaceMTU: Int32 = 0
        guard cbutterfly_packet_interface_mtu(fd, interface, &interfaceMTU) == 0 else {
            throw abandon("ioctl(SIOCGIFMTU)", errno)
        }

        // Version and loss mode first: the kernel refuses both once a ring exists. PACKET_LOSS
        // makes the kernel skip a malformed transmit slot instead of stalling the ring on it.
        var code = Syscall.setOption(fd, SOL_PACKET, PACKET_VERSION, Int32(TPACKET_V2.rawValue))
        guard code == 0 else { throw abandon("setsockopt(PACKET_VERSION, TPACKET_V2)", code) }
        // Before the rings too (EBUSY after). Best effort: without it the port works as before.
        let virtioHeaders =
            configuration.offloads && Syscall.setOption(fd, SOL_PACKET, PACKET_VNET_HDR, Int32(1)) == 0
        code = Syscall.setOption(fd, SOL_PACKET, PACKET_LOSS, Int32(1))
        guard code == 0 else { throw abandon("setsockopt(PACKET_LOSS)", code) }

        // One frame per block: a frame never crosses a block, and a block is whole pages.
        var receiveRequest = tpacket_req()
        receiveRequest.tp_block_size = UInt32(receiveFrameSize)
        receiveRequest.tp_block_nr = UInt32(configuration.receiveFrameCount)
        receiveRequest.tp_frame_size = UInt32(receiveFrameSize)
        receiveRequest.tp_frame_nr = UInt32(configuration.receiveFrameCount)
        code = Syscall.setOption(fd, SOL_PACKET, PACKET_RX_RING, receiveRequest)
        guard code == 0 else { throw abandon("setsockopt(PACKET_RX_RING)", code) }

        // A jumbo underlay: each slot must hold a whole frame of the interface's MTU, so the
        // slots grow (to a power of two, which still tiles pages) rather than the frames drop.
        let largestSent = Int(interfaceMTU) + 14 + Int(CBUTTERFLY_TPACKET2_HEADER_LENGTH) + VirtioNetHeader.size + 16
        while transmitSlotSize < largestSent && transmitSlotSize < 1 << 17 { transmitSlotSize <<= 1 }
        let slotsPerBlock = max(1, pageSize / transmitSlotSize)
        let transmitSlotCount = (configuration.transmitSlotCount + slotsPerBlock - 1) / slotsPerBlock * slotsPerBlock
        var transmitRequest = tpacket_req()
        transmitRequest.tp_block_size = UInt32(slotsPerBlock * transmitSlotSize)
        transmitRequest.tp_block_nr = UInt32(transmitSlotCount / slotsPerBlock)
        transmitRequest.tp_frame_size = UInt32(transmitSlotSize)
        transmitRequest.tp_frame_nr = UInt32(transmitSlotCount)
        code = Syscall.setOption(fd, SOL_PACKET, PACKET_TX_RING, transmitRequest)
        guard code == 0 else { throw abandon("setsockopt(PACKET_TX_RING)", code) }

        let receiveBytes = receiveFrameSize * configuration.receiveFrameCount
        let transmitBytes = transmitSlotSize * transmitSlotCount
        let ringBytes = receiveBytes + transmitBytes
        // The kernel maps the RX ring first, then the TX ring, in one mapping.
        guard let pointer = mmap(nil, ringBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), pointer != MAP_FAILED
        else { throw abandon("mmap(\(ringBytes) bytes of ring)", errno) }
        mapping = (pointer, ringBytes)

        if configuration.bypassQdisc {
            code = Syscall.setOption(fd, SOL_PACKET, PACKET_QDISC_BYPASS, Int32(1))
            guard code == 0 else { throw abandon("setsockopt(PACKET_QDISC_BYPASS)", code) }
        }
        // Linux 4.20+: outgoing frames of the host never reach the ring (they are skipped
        // below too, so an older kernel costs only copies).
        _ = Syscall.setOption(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, Int32(1))
        // A nonblocking transmit fails with EAGAIN once the socket's send buffer accounts
        // for more bytes in flight than it allows: let it cover the whole ring.
        let sendBuffer = Int32(clamping: transmitBytes * 2)
        if Syscall.setOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, sendBuffer) != 0 {
            _ = Syscall.setOption(fd, SOL_SOCKET, SO_SNDBUF, sendBuffer)
        }

        // Binding with a protocol starts delivery; the socket was created with protocol 0
        // so that no frame of another interface lands in the ring before this.
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = UInt16(ETH_P_ALL).bigEndian
        address.sll_ifindex = Int32(bitPattern: index)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard bound == 0 else { throw abandon("bind(AF_PACKET, ETH_P_ALL)", errno) }

        if configuration.promiscuous {
            var membership = packet_mreq()
            membership.mr_ifindex = Int32(bitPattern: index)
            membership.mr_type = UInt16(PACKET_MR_PROMISC)
            code = Syscall.setOption(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
            guard code == 0 else { throw abandon("setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC)", code) }
        }

        self.segmentationSocket =
            virtioHeaders
            ? Self.openSegmentationSocket(
                interfaceIndex: Int32(bitPattern: index),
                bypassQdisc: configuration.bypassQdisc
            ) : -1
        self.virtioHeaders = virtioHeaders
        self.sendsSuperFrames = segmentationSocket >= 0
        self.superFrameHeader = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        self.savedHeaders = .allocate(byteCount: 64, alignment: 8)
        self.vectors = .allocate(capacity: UDPCoalescer.maximumSegments + 1)
        self.name = interface
        self.interfaceIndex = Int32(bitPattern: index)
        self.macAddress = MACAddress(octets: octets)
        self.mtu = Int(interfaceMTU)
        self.maximumTransmitFrame = min(
            transmitSlotSize - Int(CBUTTERFLY_TPACKET2_HEADER_LENGTH) - (virtioHeaders ? VirtioNetHeader.size : 0),
            Int(interfaceMTU) + 14
        )
        self.fileDescriptor = fd
        self.ring = pointer
        self.ringBytes = ringBytes
        self.receiveRing = pointer
        self.receiveFrameSize = receiveFrameSize
        self.receiveFrameCount = configuration.receiveFrameCount
        // Room in a peer's frame: the V2 header, sockaddr_ll and alignment (at most 96 bytes
        // before the data on Linux) and the virtio-net header, with margin.
        self.superFrameLimit = min(receiveFrameSize - 128, 65_535 + 14)
        // Safe: the mapping is `receiveBytes + transmitBytes` long.
        self.transmitRing = pointer + receiveBytes
        self.transmitSlotSize = transmitSlotSize
        self.transmitSlotCount = transmitSlotCount
    }

    deinit {
        munmap(ring, ringBytes)
        close(fileDescriptor)
        if segmentationSocket >= 0 { close(segmentationSocket) }
        superFrameHeader.deallocate()
        savedHeaders.deallocate()
        vectors.deallocate()
    }

    /// The send-only socket for super-frames, or -1 when the kernel refuses any step.
    private static func openSegmentationSocket(interfaceIndex: Int32, bypassQdisc: Bool) -> Int32 {
        let fd = socket(
            AF_PACKET,
            Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0
        )
        guard fd >= 0 else { return -1 }
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_protocol = 0  // receives nothing
        address.sll_ifindex = interfaceIndex
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard Syscall.setOption(fd, SOL_PACKET, PACKET_VNET_HDR, Int32(1)) == 0, bound == 0,
            !bypassQdisc || Syscall.setOption(fd, SOL_PACKET, PACKET_QDISC_BYPASS, Int32(1)) == 0
        else {
            close(fd)
            return -1
        }
        // Room for a few super-frames in flight.
        if Syscall.setOption(fd, SOL_SOCKET, SO_SNDBUFFORCE, Int32(4 << 20)) != 0 {
            _ = Syscall.setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(4 << 20))
        }
        return fd
    }

    // MARK: Receive

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        if pendingKick == .soon { kick() }
        let room = batch.capacity &- batch.count
        guard room > 0 else { return 0 }
        var frameIndex = receiveFrame
        var appended = 0
        var dropped: UInt64 = 0
        // Safe: `batch.count + room == batch.capacity`, so `output[0..<room]` is in the storage.
        let output = batch.buffer + batch.count
        let frameSize = receiveFrameSize
        let inputPort = portIndex
        let sockaddrOffset = Int(CBUTTERFLY_TPACKET2_HEADER_LENGTH)

        frames: while appended < room {
            // Safe: `frameIndex < receiveFrameCount`, so the frame lies inside the RX ring.
            let frame = receiveRing + frameIndex &* frameSize
            guard cbutterfly_tpacket2_status(frame) & UInt32(TP_STATUS_USER) != 0 else { break }
            // Safe: the frame is ours (TP_STATUS_USER, acquired); its header is at offset 0.
            let header = frame.load(as: tpacket2_hdr.self)
            let packetType = frame.load(
                fromByteOffset: sockaddrOffset &+ Int(CBUTTERFLY_SLL_PKTTYPE_OFFSET),
                as: UInt8.self
            )
            let length = Int(header.tp_snaplen)
            let dataOffset = Int(header.tp_mac)
            // The kernel keeps every frame inside its slot; checking it costs a compare and
            // keeps a corrupt header from walking us out of the mapping.
            let intact =
                header.tp_len == header.tp_snaplen && dataOffset >= sockaddrOffset &+ VirtioNetHeader.size
                && dataOffset &+ length <= frameSize
            let offload =
                virtioHeaders && intact
                ? VirtioNetHeader(loadingFrom: frame + (dataOffset &- VirtioNetHeader.size)) : VirtioNetHeader()
            if packetType == UInt8(PACKET_OUTGOING) {
                // Not ours to forward (PACKET_IGNORE_OUTGOING covers kernels from 4.20 on).
            } else if !intact {
                dropped &+= 1  // truncated: longer than a ring frame
            } else if offload.gsoType != VirtioNetHeader.gsoNone {
                // A super-frame (a local sender's USO datagrams that crossed a veth or bridge
                // whole): cut it into datagrams, or drop it whole.
                do throws(OffloadError) {
                    var segmenter = try UDPSegmenter(
                        frame: frame + dataOffset,
                        length: length,
                        header: offload,
                        maximumSegmentFrame: pool.maximumHeldFrame
                    )
                    // Not enough batch room or free buffers: leave the frame in the ring for the
                    // next call (buffers return as soon as this pass flushes). Only a batch too
                    // small for one super-frame cuts what fits and counts the rest.
                    let needed = segmenter.segmentCount
                    let segmentFrame = segmenter.largestSegmentFrame
                    if needed > pool.available(forFrameLength: segmentFrame)
                        || (needed > room &- appended && appended > 0)
                    {
                        break frames
                    }
                    var produced = 0
                    while !segmenter.isFinished {
                        guard appended < room, var packet = pool.allocate(frameLength: segmentFrame) else {
                            dropped &+= UInt64(segmenter.segmentCount &- produced)
                            break
                        }
                        produced &+= 1
                        packet.length = UInt16(truncatingIfNeeded: segmenter.writeNext(to: pool.data(packet)))
                        packet.port = inputPort
                        output[appended] = packet
                        appended &+= 1
                    }
                } catch {
                    offloadErrors &+= 1
                    dropped &+= 1
                }
            } else if length > PacketPool.maximumLargeFrame {
                dropped &+= 1
            } else if var packet = pool.allocate(frameLength: length) {
                // Safe: the frame lies in its slot (checked above) and the buffer holds
                // `length` bytes after the headroom (a jumbo frame gets a large buffer).
                pool.data(packet).copyMemory(from: frame + dataOffset, byteCount: length)
                // A local sender behind a veth may leave its checksum to "the NIC": complete it.
                if offload.flags & VirtioNetHeader.needsChecksum != 0,
                    offload.completeChecksum(pool.data(packet), length: length) != nil
                {
                    pool.release(packet)
                    offloadErrors &+= 1
                    dropped &+= 1
                    cbutterfly_tpacket2_release(frame)
                    frameIndex = frameIndex &+ 1 == receiveFrameCount ? 0 : frameIndex &+ 1
                    continue
                }
                packet.length = UInt16(truncatingIfNeeded: length)
                packet.port = inputPort
                output[appended] = packet
                appended &+= 1
            } else {
                dropped &+= 1
            }
            cbutterfly_tpacket2_release(frame)
            frameIndex = frameIndex &+ 1 == receiveFrameCount ? 0 : frameIndex &+ 1
        }

        receiveFrame = frameIndex
        if dropped != 0 { portDrops.receiveDropped &+= dropped }
        if appended == 0 {
            // When the interface goes down the kernel sets the socket error, and poll reports
            // POLLERR until someone reads it: a worker asleep in epoll would wake for ever.
            // One getsockopt every 64 empty calls bounds that to 64 wake-ups and costs
            // nothing measurable while busy-polling.
            emptyReceives &+= 1
            if emptyReceives & 63 == 0 {
                clearError()
                if pendingKick == .linkDown { kick() }
            }
        }
        if appended != 0 { batch.setCount(batch.count &+ appended) }
        return appended
    }

    // MARK: Transmit

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        var slot = transmitSlot
        var queued = 0  // submitted since the last kick
        var sent = 0
        var dropped: UInt64 = 0
        var kickedForRoom = false
        // After a kick that could not empty the ring, runs go through the ring for the rest
        // of the batch: no system call per frame while the link is down or the socket full.
        var superFramesThisBatch = sendsSuperFrames
        let maximum = maximumTransmitFrame
        let minimum = Self.ethernetHeaderLength
        let inFlight = Self.slotInFlight
        let headerLength = Int(CBUTTERFLY_TPACKET2_HEADER_LENGTH)
        let virtioLength = virtioHeaders ? VirtioNetHeader.size : 0
        let count = batch.count
        var index = 0

        while index < count {
            let packet = batch.buffer[index]
            let length = Int(packet.length)
            // A super-frame's datagrams are each within the MTU (the kernel checks only the
            // super-frame, so the first datagram, the longest, is checked here).
            if superFramesThisBatch, index &+ 1 < count, length >= minimum && length <= maximum,
                var run = UDPCoalescer(frame: pool.data(packet), length: length, limit: superFrameLimit)
            {
                var members = 1
                while index &+ members < count, run.canGrow {
                    let next = batch.buffer[index &+ members]
                    guard run.append(pool.data(next), length: Int(next.length)) else { break }
                    members &+= 1
                }
                // Order on the wire: what the ring holds goes first. If the ring could not be
                // emptied (a short kick), the run waits in the ring behind it instead.
                if members > 1 && (queued != 0 || pendingKick != .none) {
                    kick()
                    queued = 0
                    if pendingKick != .none { superFramesThisBatch = false }
                }
                if members > 1 && superFramesThisBatch {
                    switch sendSuperFrame(run, batch: batch, from: index, members: members, pool: pool) {
                    case .sent:
                        sent &+= members
                        index &+= members
                        continue
                    case .dropped:
                        // Counted by the caller as not sent (transmit-failed), like a full ring.
                        dropped &+= UInt64(members)
                        index &+= members
                        superFramesThisBatch = false
                        continue
                    case .refused:
                        // Headers restored: these frames go through the ring below.
                        superFramesThisBatch = false
                    }
                }
            }
            index &+= 1
            guard length >= minimum && length <= maximum else {
                dropped &+= 1
                continue
            }
            // Safe: `slot < transmitSlotCount`, so the slot lies inside the TX ring.
            let slotStart = transmitRing + slot &* transmitSlotSize
            var status = cbutterfly_tpacket2_status(slotStart)
            if status & inFlight != 0 && queued != 0 && !kickedForRoom {
                // Ring full: send what is queued (with the qdisc bypassed, the driver often
                // completes at once), then look again; once per batch.
                kick()
                queued = 0
                kickedForRoom = true
                status = cbutterfly_tpacket2_status(slotStart)
            }
            guard status & inFlight == 0 else {
                dropped &+= 1
                continue
            }
            // Safe: `virtioLength + length <= maximumTransmitFrame + virtioLength <= transmitSlotSize
            // - headerLength`.
            if virtioLength != 0 {
                // No offload requested: an all-zero virtio-net header.
                (slotStart + headerLength).storeBytes(of: UInt64(0), as: UInt64.self)
                (slotStart + headerLength).storeBytes(of: UInt16(0), toByteOffset: 8, as: UInt16.self)
            }
            (slotStart + headerLength + virtioLength).copyMemory(from: pool.data(packet), byteCount: length)
            cbutterfly_tpacket2_submit(slotStart, UInt32(truncatingIfNeeded: length &+ virtioLength))
            slot = slot &+ 1 == transmitSlotCount ? 0 : slot &+ 1
            queued &+= 1
            sent &+= 1
        }
        transmitSlot = slot
        if queued != 0 || pendingKick != .none { kick() }
        if dropped != 0 { portDrops.transmitDropped &+= dropped }
        batch.releaseAll(to: pool)
        return sent
    }

    /// Sends `members` frames of `batch` from `from` as one USO super-frame with one
    /// `sendmsg`: sent, dropped (no room in the socket, link down), or refused by the kernel —
    /// then the first frame's headers are restored and super-frames are off from now on.
    private func sendSuperFrame(_ run: UDPCoalescer, batch: PacketBatch, from: Int, members: Int, pool: PacketPool)
        -> Syscall.SendResult
    {
        let headerLength = run.layout.headerLength
        savedHeaders.copyMemory(from: run.first, byteCount: headerLength)
        run.finish().store(to: superFrameHeader)
        var message = msghdr()
        message.msg_iov = vectors
        message.msg_iovlen = fillSuperFrameVectors(
            vectors,
            header: superFrameHeader,
            batch: batch,
            from: from,
            members: members,
            headerLength: headerLength,
            pool: pool
        )
        switch Syscall.send(segmentationSocket, &message) {
        case .sent:
            superFramesSent &+= 1
            datagramsInSuperFrames &+= UInt64(members)
            return .sent
        case .dropped:
            return .dropped
        case .refused:
            // A kernel or interface without USO (EINVAL, EOPNOTSUPP).
            run.first.copyMemory(from: savedHeaders, byteCount: headerLength)
            sendsSuperFrames = false
            return .refused
        }
    }

    /// Why queued slots wait: nothing, a transient shortage (EAGAIN, ENOBUFS: retried on
    /// the next call), or the link (ENETDOWN, ENXIO: retried on the next transmit and every
    /// 64th empty receive, not on every busy-poll pass).
    private enum PendingKick { case none, soon, linkDown }

    /// Asks the kernel to send every slot in SEND_REQUEST. A kick that cannot go through now
    /// leaves the slots queued for a later one.
    private func kick() {
        switch Syscall.kick(fileDescriptor) {
        case .sent: pendingKick = .none
        case .wouldBlock: pendingKick = .soon
        case .failed:
            // The send path first returns a pending socket error (ENETDOWN from an earlier
            // link down), clearing it: once more at once, so a link that is back up does not
            // wait for the next batch.
            switch Syscall.kick(fileDescriptor) {
            case .sent: pendingKick = .none
            case .wouldBlock: pendingKick = .soon
            case .failed: pendingKick = .linkDown
            }
        }
    }

    /// Reads and clears the socket's pending error (SO_ERROR; ENETDOWN after the interface
    /// went down), which otherwise keeps poll reporting POLLERR. Returns it, 0 when none.
    /// `receive` calls it now and then; a worker that sees EPOLLERR on `fileDescriptor` may
    /// call it at once.
    @discardableResult
    public func clearError() -> Int32 {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fileDescriptor, SOL_SOCKET, SO_ERROR, &code, &length) == 0 else { return 0 }
        return code
    }

    // MARK: Statistics

    /// The kernel's receive counters, accumulated since the port opened. A syscall: call it
    /// from statistics reporting, not per batch.
    public var kernelDrops: UInt64 { kernelStatistics().drops }

    public func kernelStatistics() -> KernelStatistics {
        var statistics = tpacket_stats()
        var length = socklen_t(MemoryLayout<tpacket_stats>.size)
        if getsockopt(fileDescriptor, SOL_PACKET, PACKET_STATISTICS, &statistics, &length) == 0 {
            kernelTotals.packets &+= UInt64(statistics.tp_packets)
            kernelTotals.drops &+= UInt64(statistics.tp_drops)
        }
        return kernelTotals
    }

    // MARK: Constants and syscalls

    private static let ethernetHeaderLength = 14
    /// TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING: the slot is the kernel's. Other bits
    /// (timestamp source, WRONG_FORMAT under PACKET_LOSS) leave it free.
    private static let slotInFlight = UInt32(TP_STATUS_SEND_REQUEST) | UInt32(TP_STATUS_SENDING)

    private static func hint(for code: Int32) -> String? {
        switch code {
        case ENODEV, ENXIO: return "no such interface in this network namespace (see `ip link`)"
        case EPERM, EACCES: return "opening a packet socket needs CAP_NET_RAW (run butterflyd as root)"
        case ENOMEM: return "the kernel could not allocate the ring; use fewer or smaller frames"
        default: return nil
        }
    }

    /// The port's syscalls: EINTR retried, "would block" returned as a value, programmer
    /// errors (EBADF, EFAULT) trapped. `@inline(never)` keeps errno from being disturbed
    /// between the call and its read.
    private enum Syscall {
        enum KickResult { case sent, wouldBlock, failed }

        /// 0 or the errno of `setsockopt`.
        @inline(never)
        static func setOption<Value>(_ fd: Int32, _ level: Int32, _ option: Int32, _ value: Value) -> Int32 {
            var value = value
            let result = withUnsafePointer(to: &value) {
                setsockopt(fd, level, option, $0, socklen_t(MemoryLayout<Value>.size))
            }
            return result == 0 ? 0 : errno
        }

        /// `sendmsg(fd, message, MSG_DONTWAIT)` on a socket without a TX ring.
        @inline(never)
        static func send(_ fd: Int32, _ message: UnsafePointer<msghdr>) -> SendResult {
            while true {
                if sendmsg(fd, message, Int32(MSG_DONTWAIT)) >= 0 { return .sent }
                switch errno {
                case EINTR: continue
                case EINVAL, EOPNOTSUPP, EMSGSIZE, EPROTONOSUPPORT: return .refused
                default: return .dropped  // EAGAIN, ENOBUFS: no room now; ENETDOWN: link down
                }
            }
        }

        enum SendResult { case sent, dropped, refused }

        /// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: send the slots in SEND_REQUEST.
        @inline(never)
        static func kick(_ fd: Int32) -> KickResult {
            while true {
                if sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) >= 0 { return .sent }
                let code = errno
                switch code {
                case EINTR: continue
                case EAGAIN, ENOBUFS: return .wouldBlock
                case EBADF, EFAULT, ENOTSOCK: preconditionFailure("packet socket kick: errno \(code)")
                default: return .failed  // ENETDOWN, ENXIO: the link is gone for now
                }
            }
        }
    }
}
