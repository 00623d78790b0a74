import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The back-end side of one split virtqueue (VIRTIO 1.1 §2.6) in guest memory.
///
/// ```
///  descriptor table  [addr u64 | len u32 | flags u16 | next u16] × size
///  available ring    flags u16 | idx u16 | ring[size] u16 | used_event u16     (guest writes)
///  used ring         flags u16 | idx u16 | ring[size] {id u32, len u32} | avail_event u16 (we write)
/// ```
///
/// The guest is untrusted and shares this memory while we read it. Every descriptor is read
/// once into locals before it is checked and used; every address and length is translated
/// through `GuestMemory`, which refuses anything outside one region; a chain may visit at most
/// `size` descriptors (the table's own size: more means a loop), an indirect table at most its
/// own length, and indirect tables do not nest. A chain that breaks a rule is returned to the
/// guest as used with length 0 and counted by the caller; the queue goes on.
public struct Virtqueue {
    public static let flagNext: UInt16 = 1
    public static let flagWrite: UInt16 = 2
    public static let flagIndirect: UInt16 = 4
    /// Used ring flag: the device asks not to be kicked; available ring flag: no interrupt.
    public static let usedFlagNoNotify: UInt16 = 1
    public static let availableFlagNoInterrupt: UInt16 = 1

    public enum ChainError: Error, Equatable {
        case headOutOfRange
        case descriptorOutOfRange
        case loop
        case outsideMemory
        case wrongDirection
        case badIndirect
        /// The frame does not fit where it goes (a receive buffer too small, a frame too long).
        case tooLong
    }

    public let size: UInt16
    let descriptors: UnsafeMutableRawPointer
    let available: UnsafeMutableRawPointer
    let used: UnsafeMutableRawPointer
    /// Kept alive while the queue uses it (a new memory table maps a new one; this one is
    /// unmapped when the last queue using it lets go).
    let memory: GuestMemory
    let indirectAllowed: Bool
    let eventIndex: Bool
    /// Next available entry to take, and next used entry to fill.
    public private(set) var lastAvailable: UInt16
    public private(set) var nextUsed: UInt16
    /// Used index last published (for EVENT_IDX's "crossed the guest's event" test).
    private var publishedUsed: UInt16

    public init(
        size: UInt16,
        descriptors: UnsafeMutableRawPointer,
        available: UnsafeMutableRawPointer,
        used: UnsafeMutableRawPointer,
        memory: GuestMemory,
        base: UInt16,
        indirectAllowed: Bool,
        eventIndex: Bool
    ) {
        precondition(size > 0 && size & (size &- 1) == 0)
        self.size = size
        self.descriptors = descriptors
        self.available = available
        self.used = used
        self.memory = memory
        self.indirectAllowed = indirectAllowed
        self.eventIndex = eventIndex
        // The used index continues from what the guest last saw.
        nextUsed = UInt16(littleEndian: used.load(fromByteOffset: 2, as: UInt16.self))
        publishedUsed = nextUsed
        // Every chain we take is returned before the ring stops, so a front-end that kept the
        // ring's position (QEMU: GET_VRING_BASE, then SET_VRING_BASE) gives a base equal to
        // the used index. One that reconnects to a restarted back-end and sets base 0 (DPDK
        // virtio_user in server mode) would leave the ring "over-full" forever: resume where
        // the used ring says, as DPDK's own back-end does (chains a crashed back-end had taken
        // but not returned are taken again).
        lastAvailable = base == nextUsed ? base : nextUsed
    }

    // MARK: Available side

    /// Chains the guest made available that we have not taken; a guest claiming more than the
    /// ring holds is broken (`nil`).
    public func pending() -> UInt16? {
        let index = UInt16(littleEndian: available.load(fromByteOffset: 2, as: UInt16.self))
        // Entries are read after the index (§2.6.13.4 on the driver side).
        cbutterfly_fence_acquire()
        let count = index &- lastAvailable
        return count <= size ? count : nil
    }

    /// Takes the next available chain's head (the caller checked `pending() > 0`).
    public mutating func takeHead() -> UInt16 {
        defer { lastAvailable &+= 1 }
        return availableHead(at: lastAvailable)
    }

    /// The chain head in available-ring entry `entry` (a free-running index).
    @inline(__always)
    private func availableHead(at entry: UInt16) -> UInt16 {
        UInt16(littleEndian: available.load(fromByteOffset: 4 + 2 * Int(entry & (size &- 1)), as: UInt16.self))
    }

    /// Warms the cache for the next `count` available chains: first their head descriptors,
    /// then the first buffer each points at (for writing when `forWriting`: a receive buffer we
    /// fill). A real peer's core wrote these lines; taken one by one, each frame waited for
    /// several of them in turn. Hints only: nothing here is trusted or dereferenced outside the
    /// ring and the translated memory, and chains are still fully checked when taken.
    public func prefetch(_ count: Int, forWriting: Bool) {
        guard count > 0 else { return }
        var entry = lastAvailable
        for _ in 0..<count {
            let head = availableHead(at: entry)
            if head < size { cbutterfly_prefetch(descriptors + 16 * Int(head)) }
            entry &+= 1
        }
        entry = lastAvailable
        for _ in 0..<count {
            let head = availableHead(at: entry)
            entry &+= 1
            guard head < size else { continue }
            let descriptor = descriptors + 16 * Int(head)
            let address = UInt64(littleEndian: descriptor.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            guard let buffer = memory.translate(guestPhysical: address, length: 128) else { continue }
            // Two lines: a header and a short frame straddle a line boundary as often as not.
            if forWriting {
                cbutterfly_prefetch_write(buffer)
                cbutterfly_prefetch_write(buffer + 64)
            } else {
                cbutterfly_prefetch(buffer)
                cbutterfly_prefetch(buffer + 64)
            }
        }
    }

    /// Gives back the last `count` heads taken (a receive that found no room for a frame).
    mutating func untake(_ count: UInt16) { lastAvailable &-= count }

    // MARK: Chains

    /// Walks chain `head`, calling `visit(pointer, length)` for each buffer in order, after
    /// checking that its direction is `writable` and that it lies in guest memory.
    @inline(__always)
    func walk(
        _ head: UInt16,
        writable: Bool,
        _ visit: (UnsafeMutableRawPointer, Int) throws(ChainError) -> Void
    ) throws(ChainError) {
        guard head < size else { throw .headOutOfRange }
        var table = descriptors
        var tableSize = Int(size)
        var index = Int(head)
        // A chain, indirect entries included, holds at most `size` buffers (§2.6.5.3.1: no
        // chain longer than the queue): more is a loop or a guest wasting our time.
        var steps = 0
        var inIndirect = false
        while true {
            guard index < tableSize else { throw .descriptorOutOfRange }
            steps &+= 1
            guard steps <= Int(size) &+ 1 else { throw .loop }
            // One read of each field: the guest may rewrite the descriptor meanwhile.
            let entry = table + 16 * index
            let address = UInt64(littleEndian: entry.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            let length = UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            let next = UInt16(littleEndian: entry.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            if flags & Self.flagIndirect != 0 {
                // §2.6.5.3.1: not nested, not combined with NEXT, a whole number of entries.
                guard indirectAllowed, !inIndirect, flags & Self.flagNext == 0, length > 0, length % 16 == 0,
                    length / 16 <= UInt32(size)
                else { throw .badIndirect }
                guard let indirect = memory.translate(guestPhysical: address, length: UInt64(length)) else {
                    throw .outsideMemory
                }
                table = indirect
                tableSize = Int(length / 16)
                index = 0
                inIndirect = true
                continue
            }
            guard (flags & Self.flagWrite != 0) == writable else { throw .wrongDirection }
            guard let buffer = memory.translate(guestPhysical: address, length: UInt64(length)) else {
                throw .outsideMemory
            }
            try visit(buffer, Int(length))
            guard flags & Self.flagNext != 0 else { return }
            index = Int(next)
        }
    }

    /// Copies chain `head`'s bytes (guest → us): the first `headerSize` into `header`, the rest
    /// into `frame` (at most `capacity`); returns the frame's length.
    public func read(
        _ head: UInt16,
        header: UnsafeMutableRawPointer,
        headerSize: Int,
        frame: UnsafeMutableRawPointer,
        capacity: Int
    ) throws(ChainError) -> Int {
        var headerFilled = 0
        var frameLength = 0
        try walk(head, writable: false) { (buffer: UnsafeMutableRawPointer, length: Int) throws(ChainError) in
            var offset = 0
            if headerFilled < headerSize {
                let part = min(headerSize &- headerFilled, length)
                copyBytes(header + headerFilled, buffer, part)
                headerFilled &+= part
                offset = part
            }
            let rest = length &- offset
            guard rest <= capacity &- frameLength else { throw .tooLong }
            copyBytes(frame + frameLength, buffer + offset, rest)
            frameLength &+= rest
        }
        guard headerFilled == headerSize else { throw .tooLong }
        return frameLength
    }

    /// The bytes chain `head` holds (guest → us), header included: what a frame longer than
    /// a small buffer needs (a jumbo frame, a TSO super-frame). The guest may change the chain
    /// before it is read; `read`'s capacity still bounds what is copied.
    public func chainBytes(_ head: UInt16) throws(ChainError) -> Int {
        var total = 0
        try walk(head, writable: false) { (_: UnsafeMutableRawPointer, length: Int) throws(ChainError) in
            total &+= length
        }
        return total
    }

    /// Writes `header` then `frame[from...]` into chain `head`'s buffers (us → guest), as much
    /// as fits; returns the bytes written and where the header's `num_buffers` field landed
    /// (bytes 10 and 11, which may sit in different buffers).
    func write<Frame: FrameSource>(
        _ head: UInt16,
        header: UnsafeRawPointer?,
        headerSize: Int,
        frame: Frame,
        from start: Int,
        length: Int
    ) throws(ChainError) -> (written: Int, frameBytes: Int, numBuffers: NumBuffersField) {
        var headerDone = header == nil ? headerSize : 0
        var position = start
        var written = 0
        var numBuffers: NumBuffersField = (nil, nil)
        try walk(head, writable: true) { (buffer: UnsafeMutableRawPointer, room: Int) throws(ChainError) in
            var offset = 0
            if headerDone < headerSize, let header {
                let part = min(headerSize &- headerDone, room)
                copyBytes(buffer, header + headerDone, part)
                // Header bytes [headerDone, headerDone + part) land here.
                if headerDone <= 10 && 10 < headerDone &+ part { numBuffers.0 = buffer + (10 &- headerDone) }
                if headerDone <= 11 && 11 < headerDone &+ part { numBuffers.1 = buffer + (11 &- headerDone) }
                headerDone &+= part
                offset = part
            }
            let part = min(room &- offset, length &- position)
            if part > 0 {
                frame.copy(to: buffer + offset, from: position, count: part)
                position &+= part
            }
            written &+= offset &+ part
        }
        guard headerDone == headerSize else { throw .tooLong }
        return (written, position &- start, numBuffers)
    }

    /// Where the two bytes of a receive header's `num_buffers` landed in guest memory.
    typealias NumBuffersField = (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?)

    // MARK: Used side

    /// Returns chain `head` to the guest with `length` bytes written into it.
    public mutating func addUsed(_ head: UInt16, length: UInt32) {
        let slot = Int(nextUsed & (size &- 1))
        used.storeBytes(of: UInt32(head).littleEndian, toByteOffset: 4 + 8 * slot, as: UInt32.self)
        used.storeBytes(of: length.littleEndian, toByteOffset: 8 + 8 * slot, as: UInt32.self)
        nextUsed &+= 1
    }

    mutating func unaddUsed(_ count: UInt16) { nextUsed &-= count }

    /// Sets the length of the last `count` used entries (not yet published) to 0.
    func voidUsed(_ count: UInt16) {
        var entry = nextUsed &- count
        while entry != nextUsed {
            used.storeBytes(of: UInt32(0), toByteOffset: 8 + 8 * Int(entry & (size &- 1)), as: UInt32.self)
            entry &+= 1
        }
    }

    /// Publishes the used entries added since the last call; returns whether the guest wants
    /// an interrupt for them (EVENT_IDX: the used index crossed `used_event`; otherwise unless
    /// it set NO_INTERRUPT).
    public mutating func publishUsed() -> Bool {
        guard nextUsed != publishedUsed else { return false }
        // Entries before the index (§2.6.8.2), then the index before reading the guest's event.
        cbutterfly_fence_release()
        used.storeBytes(of: nextUsed.littleEndian, toByteOffset: 2, as: UInt16.self)
        let old = publishedUsed
        publishedUsed = nextUsed
        cbutterfly_fence_full()
        if eventIndex {
            let event = UInt16(littleEndian: available.load(fromByteOffset: 4 + 2 * Int(size), as: UInt16.self))
            // vring_need_event (§2.6.7.2): new − event − 1 < new − old, in 16-bit arithmetic.
            return nextUsed &- event &- 1 < nextUsed &- old
        }
        let flags = UInt16(littleEndian: available.load(fromByteOffset: 0, as: UInt16.self))
        return flags & Self.availableFlagNoInterrupt == 0
    }

    /// With EVENT_IDX: asks to be kicked when the guest adds the entry after what we took
    /// (`avail_event`), before the worker sleeps; without: clears NO_NOTIFY.
    public func enableKicks() {
        if eventIndex {
            used.storeBytes(of: lastAvailable.littleEndian, toByteOffset: 4 + 8 * Int(size), as: UInt16.self)
        } else {
            used.storeBytes(of: UInt16(0), toByteOffset: 0, as: UInt16.self)
        }
        cbutterfly_fence_full()
    }

    /// Without EVENT_IDX: tells the guest not to kick while we poll.
    public func disableKicks() {
        if !eventIndex { used.storeBytes(of: Self.usedFlagNoNotify.littleEndian, toByteOffset: 0, as: UInt16.self) }
    }

    // MARK: Frames

    /// Takes up to one available chain from the guest's transmit queue into `frame`: returns
    /// the frame's length, `nil` when none is pending, or throws for a chain that broke a rule
    /// (already returned to the guest, length 0).
    public mutating func dequeue(
        header: UnsafeMutableRawPointer,
        headerSize: Int,
        frame: UnsafeMutableRawPointer,
        capacity: Int
    ) throws(ChainError) -> Int? {
        guard let pending = pending(), pending > 0 else { return nil }
        let head = takeHead()
        do {
            let length = try read(head, header: header, headerSize: headerSize, frame: frame, capacity: capacity)
            addUsed(head, length: 0)
            return length
        } catch {
            addUsed(head, length: 0)
            throw error
        }
    }

    /// Puts one frame into the guest's receive queue behind `header` (whose `num_buffers` is
    /// set here when `mergeable`). Returns false when the guest has no room now (nothing
    /// taken); throws for a chain that broke a rule (the frame is lost, the chain returned).
    public mutating func enqueue(
        header: UnsafeRawPointer,
        headerSize: Int,
        frame: UnsafeRawPointer,
        length: Int,
        mergeable: Bool
    ) throws(ChainError) -> Bool {
        try enqueue(
            header: header,
            headerSize: headerSize,
            source: ContiguousFrame(bytes: frame),
            length: length,
            mergeable: mergeable
        )
    }

    /// `enqueue` for a frame gathered from several pieces (a merged TCP super-frame: the first
    /// segment's frame, then the other segments' payloads), copied straight into the guest's
    /// buffers.
    public mutating func enqueue(
        header: UnsafeRawPointer,
        headerSize: Int,
        pieces: UnsafePointer<iovec>,
        count: Int,
        length: Int,
        mergeable: Bool
    ) throws(ChainError) -> Bool {
        try enqueue(
            header: header,
            headerSize: headerSize,
            source: GatheredFrame(pieces: pieces, count: count),
            length: length,
            mergeable: mergeable
        )
    }

    @inline(__always)
    mutating func enqueue<Frame: FrameSource>(
        header: UnsafeRawPointer,
        headerSize: Int,
        source frame: Frame,
        length: Int,
        mergeable: Bool
    ) throws(ChainError) -> Bool {
        guard var pending = pending(), pending > 0 else { return false }
        var buffers: UInt16 = 0
        var position = 0
        var numBuffers: NumBuffersField = (nil, nil)
        repeat {
            guard pending > 0 else {
                // Not enough buffers for the whole frame: give back what we took.
                untake(buffers)
                unaddUsed(buffers)
                return false
            }
            let head = takeHead()
            pending &-= 1
            let result: (written: Int, frameBytes: Int, numBuffers: NumBuffersField)
            do throws(ChainError) {
                result = try write(
                    head,
                    header: buffers == 0 ? header : nil,
                    headerSize: buffers == 0 ? headerSize : 0,
                    frame: frame,
                    from: position,
                    length: length
                )
                // Without MRG_RXBUF one chain must hold the whole frame.
                guard mergeable || result.frameBytes == length else { throw ChainError.tooLong }
            } catch {
                // The frame is lost: this chain and those it already filled go back empty, so
                // the guest never sees a partial frame.
                voidUsed(buffers)
                addUsed(head, length: 0)
                throw error
            }
            if buffers == 0 { numBuffers = result.numBuffers }
            addUsed(head, length: UInt32(result.written))
            buffers &+= 1
            position &+= result.frameBytes
        } while position < length
        if mergeable {
            numBuffers.0?.storeBytes(of: UInt8(truncatingIfNeeded: buffers), as: UInt8.self)
            numBuffers.1?.storeBytes(of: UInt8(truncatingIfNeeded: buffers >> 8), as: UInt8.self)
        }
        return true
    }
}

/// Where `Virtqueue.write` takes a frame's bytes from.
protocol FrameSource {
    /// Copies `count` bytes starting at frame offset `position` to `destination`.
    func copy(to destination: UnsafeMutableRawPointer, from position: Int, count: Int)
}

/// A frame in one piece (a packet buffer).
struct ContiguousFrame: FrameSource {
    let bytes: UnsafeRawPointer

    @inline(__always)
    func copy(to destination: UnsafeMutableRawPointer, from position: Int, count: Int) {
        copyBytes(destination, bytes + position, count)
    }
}

/// A frame in several pieces, in order. Finding a position scans the pieces from the first:
/// a merged frame has at most `TCPCoalescer.maximumSegments` of them, and each guest buffer
/// costs one scan against the kilobytes it copies.
struct GatheredFrame: FrameSource {
    let pieces: UnsafePointer<iovec>
    let count: Int

    func copy(to destination: UnsafeMutableRawPointer, from position: Int, count bytes: Int) {
        var piece = 0
        var skip = position
        while piece < count, skip >= pieces[piece].iov_len {
            skip &-= pieces[piece].iov_len
            piece &+= 1
        }
        var done = 0
        while done < bytes, piece < count {
            let part = min(pieces[piece].iov_len &- skip, bytes &- done)
            // Safe: the pieces are packet buffers of `length` bytes in all, and `write` never
            // asks past `length`.
            (destination + done).copyMemory(from: pieces[piece].iov_base! + skip, byteCount: part)
            done &+= part
            skip = 0
            piece &+= 1
        }
    }
}

/// Copies `count` bytes between guest memory and a packet buffer (never overlapping). Short
/// copies — a 10- or 12-byte virtio header, a 64-byte frame — are done inline with overlapping
/// 8- and 16-byte moves: through `memmove` each paid a call and its size dispatch, twice per
/// frame each way (the 64-byte profile in PERFORMANCE.md).
@inline(__always)
func copyBytes(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ count: Int) {
    if count > 64 {
        destination.copyMemory(from: source, byteCount: count)
    } else if count >= 16 {
        // 16-byte blocks from the start, then the last 16 bytes (overlapping the previous).
        var offset = 0
        while offset &+ 16 < count {
            destination.storeBytes(
                of: source.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt8>.self),
                toByteOffset: offset,
                as: SIMD16<UInt8>.self
            )
            offset &+= 16
        }
        destination.storeBytes(
            of: source.loadUnaligned(fromByteOffset: count &- 16, as: SIMD16<UInt8>.self),
            toByteOffset: count &- 16,
            as: SIMD16<UInt8>.self
        )
    } else if count >= 8 {
        let head = source.loadUnaligned(as: UInt64.self)
        let tail = source.loadUnaligned(fromByteOffset: count &- 8, as: UInt64.self)
        destination.storeBytes(of: head, as: UInt64.self)
        destination.storeBytes(of: tail, toByteOffset: count &- 8, as: UInt64.self)
    } else {
        for index in 0..<count {
            destination.storeBytes(
                of: source.load(fromByteOffset: index, as: UInt8.self),
                toByteOffset: index,
                as: UInt8.self
            )
        }
    }
}
