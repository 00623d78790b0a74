import ButterflyDataplane
import ButterflyPacket
import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A TAP NIC: a kernel tap interface named after the NIC id, its hardware address set to the
/// NIC's MAC. The daemon holds the fd, so the interface keeps working after it is moved into
/// another network namespace (the VM side).
///
/// **Offloads** (docs/OFFLOADS.md). The tap is opened with `IFF_VNET_HDR` and advertises
/// checksum and TSO offload, like a virtio NIC, so the guest's stack hands over TCP
/// super-frames of up to 64 KiB with their checksum left to us, instead of 1,500-byte frames
/// it had to cut and checksum itself. The port converts at its edge, so the rest of the
/// engine only ever sees frames that fit a packet buffer:
///
/// - receive: a super-frame is cut into segments (`TCPSegmenter`), a partial checksum is
///   completed; one `readv` per super-frame instead of one `read` per segment; a jumbo frame
///   (or segment) gets a large pool buffer (PacketPool's size classes);
/// - transmit: consecutive in-order segments of one TCP flow are merged back
///   (`TCPCoalescer`) and written with one `writev`, so the receiving guest's stack also
///   handles one large frame.
public final class TapPort: PacketPort {
    public let name: String
    /// -1 once `closeNow` ran.
    public private(set) var fileDescriptor: Int32
    public private(set) var portDrops = PortDropCounters()
    /// Frames refused by the offload checks (bad segment size, unsupported segmentation, bad
    /// checksum offset, truncated): counted in `portDrops.receiveDropped` too.
    public private(set) var offloadErrors: UInt64 = 0
    public let offloads: Bool

    /// Frames the kernel queues for the daemon before dropping.
    public static let queueLength: Int32 = 10_000
    /// Largest super-frame a guest may hand over (64 KiB of IP datagram plus link headers).
    static let largestFrame = 65_535 + 18

    /// Where a super-frame lands: its first `PacketPool.maximumFrame` bytes go to a pool
    /// buffer (so ordinary frames need no copy), the rest here at offset `maximumFrame`; the
    /// first part is then copied in front to make the super-frame contiguous.
    private let scratch: UnsafeMutableRawPointer
    /// A super-frame whose segments did not all fit in the last batch.
    private var pendingSegments: TCPSegmenter?
    private let header: UnsafeMutableRawPointer
    private let vectors: UnsafeMutablePointer<iovec>

    public struct Failure: Error, CustomStringConvertible {
        public let operation: String
        public let errno: Int32
        public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
    }

    /// Creates the tap `name`, with hardware address `mac` when given (else the kernel's own),
    /// and brings it up.
    /// With `offloads` (the default) the tap takes the virtio-net header and TSO; a kernel that
    /// refuses them gets a plain tap (`offloads` then reads false).
    public init(name: String, mac: MACAddress?, mtu: Int?, offloads: Bool = true) throws(Failure) {
        self.name = name
        var enabled: Int32 = offloads ? 1 : 0
        let fd = cbutterfly_tap_open(name, &enabled)
        guard fd >= 0 else { throw Failure(operation: "cannot create tap \(name)", errno: errno) }
        // What the kernel granted: without offloads, one frame per read and write.
        self.offloads = enabled != 0
        fileDescriptor = fd
        var octets = mac?.octets ?? []
        if mac != nil, cbutterfly_interface_set_mac(name, &octets) != 0 {
            let failure = Failure(operation: "cannot set the MAC address of tap \(name)", errno: errno)
            close(fd)
            throw failure
        }
        if let mtu, cbutterfly_interface_set_mtu(name, Int32(mtu)) != 0 {
            let failure = Failure(operation: "cannot set MTU \(mtu) on tap \(name)", errno: errno)
            close(fd)
            throw failure
        }
        // The guest's frames wait in this queue until the worker reads them: a deeper queue
        // absorbs bursts instead of dropping segments the guest's TCP must then retransmit.
        // Best effort: the default (1000) still works.
        _ = cbutterfly_interface_set_txqueuelen(name, Self.queueLength)
        // The tap is a guest's port, not an interface of this host: no IPv6 address, router
        // solicitation or DAD of the host's own on a tenant's network (which also woke the
        // idle worker), and bringing the link up skips IPv6 address configuration, whose cost
        // grew with every interface already there. Best effort (a kernel without IPv6). A tap
        // moved into another namespace gets that namespace's defaults, IPv6 included.
        _ = cbutterfly_interface_disable_ipv6(name)
        _ = cbutterfly_interface_set_up(name, 1)
        // Virtual memory only until a super-frame arrives (malloc'd, never touched before).
        scratch = .allocate(byteCount: Self.largestFrame + PacketPool.maximumFrame, alignment: 64)
        header = .allocate(byteCount: VirtioNetHeader.size, alignment: 8)
        vectors = .allocate(capacity: TCPCoalescer.maximumSegments + 1)
    }

    deinit {
        if fileDescriptor >= 0 { close(fileDescriptor) }
        scratch.deallocate()
        header.deallocate()
        vectors.deallocate()
    }

    /// Changes the interface's hardware address; best effort, since the interface may have
    /// moved to another network namespace where its name no longer resolves from here.
    public func setMAC(_ mac: MACAddress) {
        var octets = mac.octets
        _ = cbutterfly_interface_set_mac(name, &octets)
    }

    // MARK: Kernel statistics and removal

    /// Frames the kernel dropped between the guest's interface and the daemon, read from the
    /// interface's statistics in whatever network namespace it is now (`cbutterfly_tap_dropped`):
    /// `fromGuest` is the tap's queue toward the daemon overflowing (the guest sent faster than
    /// the worker read), `toGuest` what the daemon wrote that the kernel refused. nil when the
    /// kernel cannot say (before Linux 5.2, or without the rights in the interface's namespace).
    public func kernelDrops() -> (fromGuest: UInt64, toGuest: UInt64)? {
        var fromGuest: UInt64 = 0
        var toGuest: UInt64 = 0
        guard cbutterfly_tap_dropped(fileDescriptor, &fromGuest, &toGuest) == 0 else { return nil }
        return (fromGuest, toGuest)
    }

    /// Deletes the interfaces of `taps` that are still in the daemon's network namespace in one
    /// kernel operation (an interface group made for the purpose, then `RTM_DELLINK` of the
    /// group): closing each tap's fd unregisters its interface alone, one RCU grace period each
    /// (~16–30 ms: 4,096 taps took 66 s to stop). The taps must no longer be used by a
    /// worker; their fds then close at once. Interfaces the user moved into another namespace
    /// are left to their fd's close. Returns how many interfaces went.
    @discardableResult
    public static func removeInterfaces(_ taps: [TapPort]) -> Int {
        guard taps.count > 1 else { return 0 }
        let netlink = cbutterfly_netlink_open()
        guard netlink >= 0 else { return 0 }
        defer { close(netlink) }
        // A group no one else uses: a high bit and this process's id (at most 2^22).
        let group = 0x8000_0000 | UInt32(truncatingIfNeeded: getpid()) & 0x3fff_ffff
        var grouped = 0
        var name = [CChar](repeating: 0, count: 16)
        for tap in taps where cbutterfly_tap_in_own_namespace(tap.fileDescriptor) == 1 {
            guard cbutterfly_tap_name(tap.fileDescriptor, &name) == 0 else { continue }
            if cbutterfly_interface_set_group(netlink, name, group) == 0 { grouped += 1 }
        }
        guard grouped > 0, cbutterfly_interface_delete_group(netlink, group) == 0 else { return 0 }
        return grouped
    }

    /// Closes the tap's fd now instead of when the last reference goes. The close of a tap
    /// waits for an RCU grace period (16–30 ms) whatever thread makes it, so the daemon's port
    /// closer calls this for a removed NIC once no worker uses the port: a reference still held
    /// elsewhere (the worker's previous update, the API thread's locals) then no longer decides
    /// which thread pays for it. Idempotent; the port must not be used afterwards.
    public func closeNow() {
        guard fileDescriptor >= 0 else { return }
        close(fileDescriptor)
        fileDescriptor = -1
    }

    // MARK: Receive

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        guard offloads else { return receivePlain(into: batch, pool: pool) }
        var received = 0
        if pendingSegments != nil {
            received = segment(into: batch, pool: pool)
            if pendingSegments != nil { return received }
        }
        // A pending super-frame is finished first: its bytes are in the scratch area the next
        // read would overwrite, and its segments come before anything read after it.
        while !batch.isFull, pendingSegments == nil {
            guard var packet = pool.allocate() else { break }  // frames wait in the kernel queue
            vectors[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
            vectors[1] = iovec(iov_base: pool.data(packet), iov_len: PacketPool.maximumFrame)
            vectors[2] = iovec(iov_base: scratch + PacketPool.maximumFrame, iov_len: Self.largestFrame)
            let count = readv(fileDescriptor, vectors, 3)
            if count <= 0 {
                pool.release(packet)
                if count < 0 && errno == EINTR { continue }
                break  // EAGAIN: nothing more now (or the link is gone)
            }
            let length = count &- VirtioNetHeader.size
            let offload = VirtioNetHeader(loadingFrom: header)
            if offload.segmentation != VirtioNetHeader.gsoNone {
                // Make the super-frame contiguous, then cut it.
                scratch.copyMemory(from: pool.data(packet), byteCount: min(length, PacketPool.maximumFrame))
                pool.release(packet)
                do throws(OffloadError) {
                    pendingSegments = try TCPSegmenter(
                        frame: scratch,
                        length: length,
                        header: offload,
                        maximumSegmentFrame: pool.maximumHeldFrame
                    )
                } catch {
                    refuse()
                    continue
                }
                received &+= segment(into: batch, pool: pool)
                continue
            }
            guard length >= 14, length <= PacketPool.maximumLargeFrame else {
                pool.release(packet)
                refuse()  // a runt, or more than any buffer holds without segmentation
                continue
            }
            if length > PacketPool.maximumFrame {
                guard let large = moveToLargeBuffer(packet, length: length, pool: pool) else { continue }
                packet = large
            }
            if offload.flags & VirtioNetHeader.needsChecksum != 0,
                offload.completeChecksum(pool.data(packet), length: length) != nil
            {
                pool.release(packet)
                refuse()
                continue
            }
            packet.length = UInt16(length)
            batch.append(packet)
            received &+= 1
        }
        return received
    }

    private func segment(into batch: PacketBatch, pool: PacketPool) -> Int {
        cutPendingSegments(&pendingSegments, into: batch, pool: pool)
    }

    /// A jumbo frame read with its head in `packet` (a small buffer) and its tail in the
    /// scratch area: both move to a large buffer (one copy, jumbo frames only) and `packet` is
    /// released. nil (counted) when the frame is longer than any buffer or none is free: the
    /// frame is lost, as on a full ring.
    private func moveToLargeBuffer(_ packet: Packet, length: Int, pool: PacketPool) -> Packet? {
        defer { pool.release(packet) }
        guard length <= PacketPool.maximumLargeFrame, let large = pool.allocate(frameLength: length) else {
            portDrops.receiveDropped &+= 1
            return nil
        }
        pool.data(large).copyMemory(from: pool.data(packet), byteCount: PacketPool.maximumFrame)
        (pool.data(large) + PacketPool.maximumFrame).copyMemory(
            from: scratch + PacketPool.maximumFrame,
            byteCount: length &- PacketPool.maximumFrame
        )
        return large
    }

    private func refuse() {
        offloadErrors &+= 1
        portDrops.receiveDropped &+= 1
    }

    /// Without `IFF_VNET_HDR`: one frame per `readv`, straight into a pool buffer (a jumbo
    /// frame's tail into the scratch area, then both into a large buffer).
    private func receivePlain(into batch: PacketBatch, pool: PacketPool) -> Int {
        var received = 0
        while !batch.isFull {
            guard var packet = pool.allocate() else { break }
            // Safe: the buffer has `maximumFrame` bytes after the headroom.
            vectors[0] = iovec(iov_base: pool.data(packet), iov_len: PacketPool.maximumFrame)
            vectors[1] = iovec(
                iov_base: scratch + PacketPool.maximumFrame,
                iov_len: PacketPool.maximumLargeFrame &- PacketPool.maximumFrame &+ 1
            )
            let count = readv(fileDescriptor, vectors, 2)
            if count <= 0 {
                pool.release(packet)
                if count < 0 && errno == EINTR { continue }
                break
            }
            if count > PacketPool.maximumFrame {
                guard let large = moveToLargeBuffer(packet, length: count, pool: pool) else { continue }
                packet = large
            }
            packet.length = UInt16(count)
            batch.append(packet)
            received &+= 1
        }
        return received
    }

    // MARK: Transmit

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        var sent = 0
        var index = 0
        let count = batch.count
        while index < count {
            let first = batch[index]
            var frames = 1
            var written: Int
            if offloads {
                var merged: TCPCoalescer?
                if var run = TCPCoalescer(frame: pool.data(first), length: Int(first.length)) {
                    while index &+ frames < count, run.canGrow,
                        run.append(pool.data(batch[index &+ frames]), length: Int(batch[index &+ frames].length))
                    {
                        frames &+= 1
                    }
                    if frames > 1 { merged = run }
                }
                if let merged {
                    merged.finish().store(to: header)
                    let entries = fillSuperFrameVectors(
                        vectors,
                        header: header,
                        batch: batch,
                        from: index,
                        members: frames,
                        headerLength: merged.layout.headerLength,
                        pool: pool
                    )
                    written = writeFrame(vectors: entries, expected: merged.mergedLength &+ VirtioNetHeader.size)
                } else {
                    VirtioNetHeader().store(to: header)
                    vectors[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
                    vectors[1] = iovec(iov_base: pool.data(first), iov_len: Int(first.length))
                    written = writeFrame(vectors: 2, expected: Int(first.length) &+ VirtioNetHeader.size)
                }
            } else {
                repeat {
                    written = write(fileDescriptor, pool.data(first), Int(first.length))
                } while written < 0 && errno == EINTR
                written = written == Int(first.length) ? 1 : 0
            }
            if written == 1 {
                sent &+= frames
            } else {
                // EAGAIN (guest not reading) or EIO (interface down): the frames are lost.
                portDrops.transmitDropped &+= UInt64(frames)
            }
            index &+= frames
        }
        batch.releaseAll(to: pool)
        return sent
    }

    /// One `writev` of `vectors` entries; 1 when all `expected` bytes went, else 0.
    private func writeFrame(vectors count: Int, expected: Int) -> Int {
        var result: Int
        repeat {
            result = writev(fileDescriptor, vectors, Int32(count))
        } while result < 0 && errno == EINTR
        return result == expected ? 1 : 0
    }
}
