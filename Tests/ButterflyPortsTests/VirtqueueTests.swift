import ButterflyPorts
import CButterflyLinux
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The split virtqueue on synthetic rings in a shared-memory file, with the test as the guest's
/// driver writing descriptors and available entries through its own mapping of the same file.
@Suite struct VirtqueueTests {
    static let memorySize = 1 << 20
    static let guestPhysical: UInt64 = 0x4000_0000
    static let ringSize: UInt16 = 8

    /// Guest memory and a driver: descriptors at 0x0, available ring at 0x1000, used at 0x2000,
    /// data buffers from 0x10000 (guest-physical = guestPhysical + offset).
    final class Guest {
        let fd: Int32
        let mapping: UnsafeMutableRawPointer
        let memory: GuestMemory
        var nextAvailable: UInt16 = 0

        init() throws {
            fd = VhostUserSessionTests.Harness.memoryFile(size: UInt64(VirtqueueTests.memorySize))
            mapping = mmap(nil, VirtqueueTests.memorySize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
            memory = try GuestMemory(
                [
                    GuestMemory.RegionDescription(
                        guestPhysical: VirtqueueTests.guestPhysical,
                        size: UInt64(VirtqueueTests.memorySize),
                        userAddress: 0x7000_0000_0000,
                        mmapOffset: 0
                    )
                ],
                fds: [dup(fd)]
            )
        }

        deinit {
            munmap(mapping, VirtqueueTests.memorySize)
            close(fd)
        }

        func queue(eventIndex: Bool = false, indirect: Bool = true) -> Virtqueue {
            Virtqueue(
                size: VirtqueueTests.ringSize,
                descriptors: memory.translate(guestPhysical: VirtqueueTests.guestPhysical, length: 16 * 8)!,
                available: memory.translate(guestPhysical: VirtqueueTests.guestPhysical + 0x1000, length: 22)!,
                used: memory.translate(guestPhysical: VirtqueueTests.guestPhysical + 0x2000, length: 70)!,
                memory: memory,
                base: 0,
                indirectAllowed: indirect,
                eventIndex: eventIndex
            )
        }

        func descriptor(
            _ index: Int,
            at offset: Int,
            length: UInt32,
            flags: UInt16 = 0,
            next: UInt16 = 0,
            table: Int = 0
        ) {
            let entry = mapping + table + 16 * index
            entry.storeBytes(of: VirtqueueTests.guestPhysical + UInt64(offset), toByteOffset: 0, as: UInt64.self)
            entry.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            entry.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
            entry.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
        }

        func rawDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0) {
            let entry = mapping + 16 * index
            entry.storeBytes(of: address, toByteOffset: 0, as: UInt64.self)
            entry.storeBytes(of: length, toByteOffset: 8, as: UInt32.self)
            entry.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
            entry.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
        }

        func makeAvailable(_ head: UInt16) {
            (mapping + 0x1000).storeBytes(
                of: head,
                toByteOffset: 4 + 2 * Int(nextAvailable % VirtqueueTests.ringSize),
                as: UInt16.self
            )
            nextAvailable &+= 1
            (mapping + 0x1000).storeBytes(of: nextAvailable, toByteOffset: 2, as: UInt16.self)
        }

        func fill(_ offset: Int, _ bytes: [UInt8]) {
            for (index, byte) in bytes.enumerated() { (mapping + offset + index).storeBytes(of: byte, as: UInt8.self) }
        }
        func bytes(_ offset: Int, _ count: Int) -> [UInt8] {
            (0..<count).map { mapping.load(fromByteOffset: offset + $0, as: UInt8.self) }
        }
        var usedIndex: UInt16 { (mapping + 0x2000).load(fromByteOffset: 2, as: UInt16.self) }
        func usedEntry(_ slot: Int) -> (id: UInt32, length: UInt32) {
            (
                (mapping + 0x2000).load(fromByteOffset: 4 + 8 * slot, as: UInt32.self),
                (mapping + 0x2000).load(fromByteOffset: 8 + 8 * slot, as: UInt32.self)
            )
        }
    }

    static let header = 12

    func dequeue(_ queue: inout Virtqueue) throws(Virtqueue.ChainError) -> [UInt8]? {
        let header = UnsafeMutableRawPointer.allocate(byteCount: Self.header, alignment: 8)
        let frame = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 8)
        defer {
            header.deallocate()
            frame.deallocate()
        }
        guard let length = try queue.dequeue(header: header, headerSize: Self.header, frame: frame, capacity: 2048)
        else { return nil }
        return (0..<length).map { frame.load(fromByteOffset: $0, as: UInt8.self) }
    }

    /// Enqueues `frame` behind `header` (12 bytes) into the guest's receive queue.
    func enqueue(_ queue: inout Virtqueue, header: [UInt8], frame: [UInt8], mergeable: Bool) throws(Virtqueue
        .ChainError)
        -> Bool
    {
        var result = false
        var failure: Virtqueue.ChainError?
        header.withUnsafeBytes { headerBytes in
            frame.withUnsafeBytes { frameBytes in
                do throws(Virtqueue.ChainError) {
                    result = try queue.enqueue(
                        header: headerBytes.baseAddress!,
                        headerSize: header.count,
                        frame: frameBytes.baseAddress!,
                        length: frame.count,
                        mergeable: mergeable
                    )
                } catch {
                    failure = error
                }
            }
        }
        if let failure { throw failure }
        return result
    }

    @Test func aChainSplitAnywhereIsReassembledAndReturnedAsUsed() throws {
        let guest = try Guest()
        var queue = guest.queue()
        // Header split across two buffers, frame across three (ANY_LAYOUT).
        guest.fill(0x10000, Array(repeating: 0, count: 5))
        guest.fill(0x10100, Array(repeating: 0, count: 7) + [1, 2, 3])
        guest.fill(0x10200, [4, 5])
        guest.fill(0x10300, [6, 7, 8, 9])
        guest.descriptor(0, at: 0x10000, length: 5, flags: Virtqueue.flagNext, next: 3)
        guest.descriptor(3, at: 0x10100, length: 10, flags: Virtqueue.flagNext, next: 5)
        guest.descriptor(5, at: 0x10200, length: 2, flags: Virtqueue.flagNext, next: 1)
        guest.descriptor(1, at: 0x10300, length: 4)
        guest.makeAvailable(0)
        #expect(try dequeue(&queue) == [1, 2, 3, 4, 5, 6, 7, 8, 9])
        #expect(try dequeue(&queue) == nil)
        let notify1 = queue.publishUsed()
        #expect(notify1)
        #expect(guest.usedIndex == 1 && guest.usedEntry(0).id == 0)
    }

    @Test func indirectTablesAreFollowedOnceAndNeverNested() throws {
        let guest = try Guest()
        var queue = guest.queue()
        guest.fill(0x10000, Array(repeating: 0, count: 12) + [42, 43])
        // Indirect table at 0x8000: two entries.
        guest.descriptor(0, at: 0x10000, length: 12, flags: Virtqueue.flagNext, next: 1, table: 0x8000)
        guest.descriptor(1, at: 0x1000C, length: 2, table: 0x8000)
        guest.descriptor(2, at: 0x8000, length: 32, flags: Virtqueue.flagIndirect)
        guest.makeAvailable(2)
        #expect(try dequeue(&queue) == [42, 43])
        // A nested indirect entry, an indirect with NEXT, a bad length, indirect not negotiated.
        guest.descriptor(0, at: 0x8100, length: 16, flags: Virtqueue.flagIndirect, table: 0x8000)
        guest.makeAvailable(2)
        #expect(throws: Virtqueue.ChainError.badIndirect) { try dequeue(&queue) }
        guest.descriptor(2, at: 0x8000, length: 32, flags: Virtqueue.flagIndirect | Virtqueue.flagNext, next: 3)
        guest.makeAvailable(2)
        #expect(throws: Virtqueue.ChainError.badIndirect) { try dequeue(&queue) }
        guest.descriptor(2, at: 0x8000, length: 24, flags: Virtqueue.flagIndirect)
        guest.makeAvailable(2)
        #expect(throws: Virtqueue.ChainError.badIndirect) { try dequeue(&queue) }
        var plain = guest.queue(indirect: false)
        guest.descriptor(2, at: 0x8000, length: 32, flags: Virtqueue.flagIndirect)
        #expect(throws: Virtqueue.ChainError.badIndirect) { try dequeue(&plain) }
    }

    @Test func hostileChainsAreRefusedAndTheQueueGoesOn() throws {
        let guest = try Guest()
        var queue = guest.queue()
        let cases: [(Virtqueue.ChainError, () -> UInt16)] = [
            (.headOutOfRange, { 200 }),
            (
                .descriptorOutOfRange,
                {
                    guest.descriptor(0, at: 0x10000, length: 12, flags: Virtqueue.flagNext, next: 9)
                    return 0
                }
            ),
            (
                .loop,
                {
                    guest.descriptor(0, at: 0x10000, length: 12, flags: Virtqueue.flagNext, next: 1)
                    guest.descriptor(1, at: 0x10000, length: 1, flags: Virtqueue.flagNext, next: 0)
                    return 0
                }
            ),
            (
                .outsideMemory,
                {
                    guest.rawDescriptor(0, address: 0x1000, length: 64)
                    return 0
                }
            ),
            (
                .outsideMemory,
                {
                    // Starts inside, runs past the end of the region.
                    guest.rawDescriptor(
                        0,
                        address: VirtqueueTests.guestPhysical + UInt64(VirtqueueTests.memorySize) - 8,
                        length: 64
                    )
                    return 0
                }
            ),
            (
                .outsideMemory,
                {
                    guest.rawDescriptor(0, address: UInt64.max - 4, length: 64)
                    return 0
                }
            ),
            (
                .wrongDirection,
                {
                    guest.descriptor(0, at: 0x10000, length: 64, flags: Virtqueue.flagWrite)
                    return 0
                }
            ),
            (
                .tooLong,
                {
                    guest.descriptor(0, at: 0x10000, length: 12 + 4096)
                    return 0
                }
            ),
            (
                .tooLong,
                {
                    guest.descriptor(0, at: 0x10000, length: 6)  // not even a header
                    return 0
                }
            ),
        ]
        for (index, (expected, setUp)) in cases.enumerated() {
            guest.makeAvailable(setUp())
            #expect(throws: expected, "case \(index)") { try dequeue(&queue) }
        }
        // Every broken chain went back to the guest as used with length 0; a good one still works.
        guest.fill(0x10000, Array(repeating: 0, count: 12) + [7])
        guest.descriptor(0, at: 0x10000, length: 13)
        guest.makeAvailable(0)
        #expect(try dequeue(&queue) == [7])
        _ = queue.publishUsed()
        #expect(guest.usedIndex == UInt16(cases.count + 1))
        #expect((0..<cases.count).allSatisfy { guest.usedEntry($0 % Int(VirtqueueTests.ringSize)).length == 0 })
    }

    @Test func aGuestClaimingMoreThanTheRingIsBroken() throws {
        let guest = try Guest()
        let queue = guest.queue()
        (guest.mapping + 0x1000).storeBytes(of: UInt16(9), toByteOffset: 2, as: UInt16.self)
        #expect(queue.pending() == nil)
    }

    /// Every frame length from 1 to 200 bytes, split at every place a short copy changes
    /// strategy (the inline copies below 64 bytes), arrives intact both ways, and nothing is
    /// written past the end of a guest buffer.
    @Test func everyShortLengthIsCopiedExactlyBothWays() throws {
        let guest = try Guest()
        var transmitq = guest.queue()
        for length in 1...200 {
            let frame = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ length) }
            let cut = length / 3
            guest.fill(0x10000, Array(repeating: 0, count: 12) + frame[..<cut])
            guest.fill(0x11000, Array(frame[cut...]))
            guest.descriptor(0, at: 0x10000, length: UInt32(12 + cut), flags: Virtqueue.flagNext, next: 1)
            guest.descriptor(1, at: 0x11000, length: UInt32(length - cut))
            guest.makeAvailable(0)
            #expect(try dequeue(&transmitq) == frame, "length \(length)")
        }
        let receiver = try Guest()
        var receiveq = receiver.queue()
        for length in 1...200 {
            let frame = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ length) }
            receiver.fill(0x20000, Array(repeating: 0xEE, count: 12 + length + 16))
            receiver.descriptor(2, at: 0x20000, length: UInt32(12 + length), flags: Virtqueue.flagWrite)
            receiver.makeAvailable(2)
            #expect(try enqueue(&receiveq, header: Array(repeating: 0, count: 12), frame: frame, mergeable: false))
            #expect(receiver.bytes(0x20000 + 12, length) == frame, "length \(length)")
            #expect(receiver.bytes(0x20000 + 12 + length, 16) == Array(repeating: 0xEE, count: 16), "length \(length)")
        }
    }

    @Test func framesGoIntoReceiveBuffersMergedWhenAllowed() throws {
        let guest = try Guest()
        var queue = guest.queue()
        for slot in 0..<4 {
            guest.descriptor(slot, at: 0x20000 + 0x100 * slot, length: 64, flags: Virtqueue.flagWrite)
            guest.makeAvailable(UInt16(slot))
        }
        var header = [UInt8](repeating: 0, count: 12)
        header[0] = 1  // NEEDS_CSUM, to see the header arrive as given
        let frame = (0..<150).map { UInt8($0) }
        // 12 + 150 bytes into 64-byte buffers: three of them, num_buffers = 3.
        let fitted = try enqueue(&queue, header: header, frame: frame, mergeable: true)
        #expect(fitted)
        let notify2 = queue.publishUsed()
        #expect(notify2)
        #expect(guest.usedIndex == 3)
        #expect(guest.usedEntry(0) == (0, 64) && guest.usedEntry(1) == (1, 64) && guest.usedEntry(2) == (2, 34))
        #expect(guest.bytes(0x20000, 12) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0])
        #expect(guest.bytes(0x20000 + 12, 52) + guest.bytes(0x20100, 64) + guest.bytes(0x20200, 34) == frame)
        // One buffer left: a frame needing two is not taken, and nothing is consumed.
        let refused = try enqueue(&queue, header: header, frame: frame, mergeable: true)
        #expect(!refused)
        #expect(queue.pending() == 1)
        let notify3 = queue.publishUsed()
        #expect(!notify3)
        // Without MRG_RXBUF one buffer must hold it all.
        #expect(throws: Virtqueue.ChainError.tooLong) {
            try enqueue(&queue, header: header, frame: frame, mergeable: false)
        }
    }

    @Test func aFrameThatCannotBeDeliveredWholeLeavesOnlyEmptyBuffers() throws {
        let guest = try Guest()
        var queue = guest.queue()
        let header = [UInt8](repeating: 0, count: 12)
        let frame = (0..<150).map { UInt8($0) }
        // Without MRG_RXBUF: a 64-byte buffer for a 162-byte frame is returned empty, not truncated.
        guest.descriptor(0, at: 0x20000, length: 64, flags: Virtqueue.flagWrite)
        guest.makeAvailable(0)
        #expect(throws: Virtqueue.ChainError.tooLong) {
            try enqueue(&queue, header: header, frame: frame, mergeable: false)
        }
        // Mergeable, the second chain is hostile: the first goes back empty too.
        guest.descriptor(1, at: 0x20100, length: 64, flags: Virtqueue.flagWrite)
        guest.rawDescriptor(2, address: 0x10, length: 64, flags: Virtqueue.flagWrite)
        guest.makeAvailable(1)
        guest.makeAvailable(2)
        #expect(throws: Virtqueue.ChainError.outsideMemory) {
            try enqueue(&queue, header: header, frame: frame, mergeable: true)
        }
        let notify = queue.publishUsed()
        #expect(notify)
        #expect(guest.usedIndex == 3)
        #expect((0..<3).map { guest.usedEntry($0).length } == [0, 0, 0])
    }

    @Test func indirectTablesAreBoundedByTheRingSize() throws {
        let guest = try Guest()
        var queue = guest.queue()
        // A table of ring size + 1 entries: refused; a ring-size table chaining through all its
        // entries and looping back: a loop, found after at most size + 1 steps.
        guest.descriptor(0, at: 0x8000, length: 16 * 9, flags: Virtqueue.flagIndirect)
        guest.makeAvailable(0)
        #expect(throws: Virtqueue.ChainError.badIndirect) { try dequeue(&queue) }
        for entry in 0..<8 {
            guest.descriptor(
                entry,
                at: 0x10000,
                length: 0,
                flags: Virtqueue.flagNext,
                next: UInt16((entry + 1) % 8),
                table: 0x8000
            )
        }
        guest.descriptor(0, at: 0x8000, length: 16 * 8, flags: Virtqueue.flagIndirect)
        guest.makeAvailable(0)
        #expect(throws: Virtqueue.ChainError.loop) { try dequeue(&queue) }
    }

    @Test func eventIndexDecidesInterruptsAndKicks() throws {
        let guest = try Guest()
        var queue = guest.queue(eventIndex: true)
        // used_event (after the available ring) = 1: interrupt when the used index passes 1.
        (guest.mapping + 0x1000).storeBytes(of: UInt16(1), toByteOffset: 4 + 2 * 8, as: UInt16.self)
        for slot in 0..<3 {
            guest.fill(0x10000 + 0x100 * slot, Array(repeating: 0, count: 13))
            guest.descriptor(slot, at: 0x10000 + 0x100 * slot, length: 13)
            guest.makeAvailable(UInt16(slot))
        }
        _ = try dequeue(&queue)
        let notify4 = queue.publishUsed()
        #expect(!notify4, "used 0→1 does not cross used_event 1")
        _ = try dequeue(&queue)
        let notify5 = queue.publishUsed()
        #expect(notify5, "used 1→2 crosses it")
        _ = try dequeue(&queue)
        let notify6 = queue.publishUsed()
        #expect(!notify6)
        queue.enableKicks()
        #expect((guest.mapping + 0x2000).load(fromByteOffset: 4 + 8 * 8, as: UInt16.self) == 3)
        // Without EVENT_IDX: NO_INTERRUPT from the guest silences us.
        var plain = guest.queue()
        (guest.mapping + 0x1000).storeBytes(of: Virtqueue.availableFlagNoInterrupt, toByteOffset: 0, as: UInt16.self)
        guest.makeAvailable(0)
        _ = try dequeue(&plain)
        let notify7 = plain.publishUsed()
        #expect(!notify7)
    }
}
