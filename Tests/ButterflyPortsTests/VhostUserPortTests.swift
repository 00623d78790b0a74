import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts
import CButterflyLinux
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The vhost-user port as the worker drives it, on synthetic rings (`VirtqueueTests.Guest`, one
/// shared-memory file per ring): frames both ways, kicks and calls through real eventfds,
/// notification suppression around the worker's sleep, and where a stopped ring stopped.
@Suite struct VhostUserPortTests {
    typealias Guest = VirtqueueTests.Guest

    /// A port whose "worker" runs the update on the calling thread (no worker thread here).
    static func port() throws -> VhostUserPort {
        try VhostUserPort(name: "vm", queuePairs: 1, runOnWorker: { body in body() })
    }

    /// Makes frame `payload` (behind a 10-byte legacy header: no feature was negotiated)
    /// available in descriptor `slot`.
    static func offer(_ guest: Guest, slot: Int, payload: [UInt8]) {
        guest.fill(0x10000 + 0x1000 * slot, Array(repeating: 0, count: 10) + payload)
        guest.descriptor(slot, at: 0x10000 + 0x1000 * slot, length: UInt32(10 + payload.count))
        guest.makeAvailable(UInt16(slot))
    }

    static func frame(_ marker: UInt8) -> [UInt8] {
        [0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00] + Array(repeating: marker, count: 50)
    }

    @Test func framesBothWaysWithKicksAndCalls() throws {
        let port = try Self.port()
        let session = VhostUserSession(queuePairs: 1)
        let transmitq = try Guest()
        let receiveq = try Guest()
        let kick = eventfd(0, Int32(EFD_NONBLOCK))
        let call = eventfd(0, Int32(EFD_NONBLOCK))
        defer {
            close(kick)
            close(call)
        }
        port.start(ring: 1, queue: transmitq.queue(eventIndex: true), kick: kick, call: call, session: session)
        port.start(ring: 0, queue: receiveq.queue(eventIndex: true), kick: -1, call: call, session: session)
        let pool = PacketPool(capacity: 64)
        let batch = PacketBatch()

        // The guest sends and kicks: the port's descriptor wakes the worker, the frame arrives.
        Self.offer(transmitq, slot: 0, payload: Self.frame(1))
        var one: UInt64 = 1
        _ = write(kick, &one, 8)
        var ready = pollfd(fd: port.fileDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 1000) == 1)
        port.wake()
        #expect(poll(&ready, 1, 0) == 0, "the kick was drained")
        #expect(port.receive(into: batch, pool: pool) == 1)
        #expect(Array(UnsafeRawBufferPointer(start: pool.data(batch[0]), count: Int(batch[0].length))) == Self.frame(1))
        #expect(transmitq.usedIndex == 1)
        batch.releaseAll(to: pool)

        // Busy polling takes the next frame without a wake-up; before sleeping, the port asks
        // to be kicked for the entry after it (EVENT_IDX avail_event), not for an old one: a
        // stale index left the guest silent until its index wrapped.
        Self.offer(transmitq, slot: 1, payload: Self.frame(2))
        #expect(port.receive(into: batch, pool: pool) == 1)
        batch.releaseAll(to: pool)
        #expect(!port.prepareToSleep())
        #expect((transmitq.mapping + 0x2000).load(fromByteOffset: 4 + 8 * 8, as: UInt16.self) == 2)
        // A frame that arrives as the worker goes to sleep keeps it awake.
        Self.offer(transmitq, slot: 2, payload: Self.frame(3))
        #expect(port.prepareToSleep())
        #expect(port.receive(into: batch, pool: pool) == 1)
        batch.releaseAll(to: pool)
        // Taken while polling (no kick, no wake-up): the next sleep asks for entry 3 onwards.
        #expect(!port.prepareToSleep())
        #expect((transmitq.mapping + 0x2000).load(fromByteOffset: 4 + 8 * 8, as: UInt16.self) == 3)

        // Toward the guest: into its receive buffer behind a header, and a call.
        receiveq.descriptor(0, at: 0x10000, length: 2048, flags: Virtqueue.flagWrite)
        receiveq.makeAvailable(0)
        // used_event 0: the guest wants an interrupt for the first used entry.
        var packet = pool.allocate()!
        let payload = Self.frame(4)
        payload.withUnsafeBytes { pool.data(packet).copyMemory(from: $0.baseAddress!, byteCount: payload.count) }
        packet.length = UInt16(payload.count)
        batch.append(packet)
        var drained: UInt64 = 0
        _ = read(call, &drained, 8)
        #expect(port.transmit(batch, pool: pool) == 1)
        #expect(receiveq.usedIndex == 1 && receiveq.usedEntry(0).length == UInt32(10 + payload.count))
        #expect(receiveq.bytes(0x10000 + 10, payload.count) == payload)
        #expect(read(call, &drained, 8) == 8, "the guest was called")
        // No buffer left: the frame is dropped and counted, nothing is half-written.
        batch.append(pool.allocate()!)
        #expect(port.transmit(batch, pool: pool) == 0)
        #expect(port.portDrops.transmitDropped == 1)
        #expect(pool.available == 64)

        // Stopped, the rings answer where they stopped, again and again.
        #expect(port.stop(ring: 1) == 3)
        #expect(port.stop(ring: 1) == 3)
        #expect(port.stop(ring: 0) == 1)
        #expect(port.receive(into: batch, pool: pool) == 0)
    }

    @Test func hostileChainsAreCountedAndTheQueueGoesOn() throws {
        let port = try Self.port()
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: VhostUserSession(queuePairs: 1))
        let pool = PacketPool(capacity: 16)
        let batch = PacketBatch()
        // Outside guest memory, then a runt, then a good frame.
        transmitq.rawDescriptor(0, address: 0x10, length: 64)
        transmitq.makeAvailable(0)
        Self.offer(transmitq, slot: 1, payload: [1, 2, 3])
        Self.offer(transmitq, slot: 2, payload: Self.frame(9))
        #expect(port.receive(into: batch, pool: pool) == 1)
        #expect(port.guestErrors == 1)
        #expect(port.portDrops.receiveDropped == 2)
        #expect(transmitq.usedIndex == 3, "every chain went back to the guest")
        batch.releaseAll(to: pool)
        #expect(pool.available == 16)
    }

    /// A hostile front-end shrinks the memory file it shares with us while a ring runs: the
    /// worker's next access faults. The SIGBUS guard turns the mapping into zeros and marks it
    /// poisoned (the device then drops the front-end); without it, the daemon died.
    @Test func aFrontEndShrinkingItsMemoryDoesNotKillUs() throws {
        let port = try Self.port()
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: VhostUserSession(queuePairs: 1))
        let pool = PacketPool(capacity: 16)
        let batch = PacketBatch()
        Self.offer(transmitq, slot: 0, payload: Self.frame(1))
        #expect(port.receive(into: batch, pool: pool) == 1)
        batch.releaseAll(to: pool)
        #expect(!transmitq.memory.poisoned)

        Self.offer(transmitq, slot: 1, payload: Self.frame(2))
        #expect(ftruncate(transmitq.fd, 0) == 0)
        // The ring now reads as zeros: nothing pending, nothing taken, no crash.
        #expect(port.receive(into: batch, pool: pool) == 0)
        #expect(transmitq.memory.poisoned)
        #expect(pool.available == 16)
    }

    /// CSUM: a guest leaves a UDP checksum to us (NEEDS_CSUM, the pseudo-header sum in the
    /// field); the frame enters the engine with the checksum complete.
    @Test func aChecksumLeftToUsIsCompleted() throws {
        let port = try Self.port()
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: VhostUserSession(queuePairs: 1))
        let pool = PacketPool(capacity: 16)
        let batch = PacketBatch()
        let source: UInt32 = 0xCB00_7101  // 203.0.113.1
        let destination: UInt32 = 0xCB00_7102
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 8 + 5)
        frame.withUnsafeMutableBytes { bytes in
            let out = bytes.baseAddress!
            Ethernet.write(out, destination: 0x5254_0000_0002, source: 0x5254_0000_0001, etherType: EtherType.ipv4)
            _ = IPv4.write(out + 14, totalLength: 33, protocol: 17, source: source, destination: destination)
            out.storeBigEndian16(4000, at: 34)
            out.storeBigEndian16(5000, at: 36)
            out.storeBigEndian16(13, at: 38)
            for index in 0..<5 { out.storeByte(UInt8(0x41 + index), at: 42 + index) }
        }
        let pseudo = IPv4.pseudoHeaderSum(source: source, destination: destination, protocol: 17, length: 13)
        let expected = frame.withUnsafeBytes {
            InternetChecksum.finish(InternetChecksum.add($0.baseAddress! + 34, length: 13, to: pseudo))
        }
        let partial = InternetChecksum.fold(pseudo)
        frame[40] = UInt8(partial >> 8)
        frame[41] = UInt8(partial & 0xFF)
        // The header: NEEDS_CSUM, checksum from byte 34, field at offset 6.
        let header: [UInt8] = [1, 0, 0, 0, 0, 0, 34, 0, 6, 0]
        transmitq.fill(0x10000, header + frame)
        transmitq.descriptor(0, at: 0x10000, length: UInt32(10 + frame.count))
        transmitq.makeAvailable(0)
        #expect(port.receive(into: batch, pool: pool) == 1)
        let data = pool.data(batch[0])
        #expect(
            UInt16(data.load(fromByteOffset: 40, as: UInt8.self)) << 8
                | UInt16(data.load(fromByteOffset: 41, as: UInt8.self)) == expected
        )
        batch.releaseAll(to: pool)
    }

    // MARK: Frames larger than a small buffer (docs/JUMBO.md)

    /// A session that negotiated `features` (VERSION_1 included: 12-byte headers).
    static func session(_ features: UInt64) throws -> VhostUserSessionTests.Harness {
        let harness = VhostUserSessionTests.Harness(queuePairs: 1)
        try harness.send(VhostUserRequest.setFeatures, harness.u64(features | VhostUserSession.featureVersion1))
        return harness
    }

    /// An Ethernet/IPv4/TCP frame (ACK, DF) carrying `payload` at `sequence`; its TCP checksum
    /// complete, or only the pseudo-header sum when `partial` (a guest's TSO super-frame).
    static func tcpFrame(sequence: UInt32, payload: [UInt8], partial: Bool = false) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 14 + 20 + 20 + payload.count)
        frame.withUnsafeMutableBytes { bytes in
            let out = bytes.baseAddress!
            Ethernet.write(out, destination: 0x5254_0000_0002, source: 0x5254_0000_0001, etherType: EtherType.ipv4)
            _ = IPv4.write(
                out + 14,
                totalLength: 40 + payload.count,
                protocol: 6,
                source: 0xCB00_7101,
                destination: 0xCB00_7102
            )
            out.storeBigEndian16(40000, at: 34)
            out.storeBigEndian16(5201, at: 36)
            out.storeBigEndian32(sequence, at: 38)
            out.storeBigEndian32(77, at: 42)
            out.storeByte(0x50, at: 46)  // data offset 5
            out.storeByte(0x10, at: 47)  // ACK
            out.storeBigEndian16(64000, at: 48)
            for (index, byte) in payload.enumerated() { out.storeByte(byte, at: 54 + index) }
            let layout = TCPFrame(out, length: bytes.count)!
            if partial {
                let pseudo = layout.pseudoHeaderSum(out, tcpLength: 20 + payload.count)
                out.storeBigEndian16(InternetChecksum.fold(pseudo), at: 50)
            } else {
                layout.setTCPChecksum(out, length: bytes.count)
            }
        }
        return frame
    }

    static func pattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) } }

    /// A 9,014-byte frame (guest MTU 9,000) in a chain of three buffers arrives whole in a
    /// large pool buffer; before, anything over a 2 KiB buffer was dropped.
    @Test func aJumboFrameFromTheGuestArrivesWhole() throws {
        let port = try Self.port()
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: VhostUserSession(queuePairs: 1))
        let pool = PacketPool(capacity: 16, largeCapacity: 2)
        let batch = PacketBatch()
        let jumbo = Self.frame(1) + Self.pattern(9014 - 64)
        // Header alone, then the frame in two pieces.
        transmitq.fill(0x20000, Array(repeating: 0, count: 10))
        transmitq.fill(0x30000, jumbo)
        transmitq.descriptor(0, at: 0x20000, length: 10, flags: Virtqueue.flagNext, next: 1)
        transmitq.descriptor(1, at: 0x30000, length: 4000, flags: Virtqueue.flagNext, next: 2)
        transmitq.descriptor(2, at: 0x30000 + 4000, length: UInt32(jumbo.count - 4000))
        transmitq.makeAvailable(0)
        Self.offer(transmitq, slot: 3, payload: Self.frame(2))
        #expect(port.receive(into: batch, pool: pool) == 2)
        #expect(batch.count == 2 && pool.isLarge(batch[0]) && !pool.isLarge(batch[1]))
        #expect(Array(UnsafeRawBufferPointer(start: pool.data(batch[0]), count: Int(batch[0].length))) == jumbo)
        #expect(port.guestErrors == 0 && transmitq.usedIndex == 2)
        batch.releaseAll(to: pool)
        #expect(pool.available == 16 && pool.largeAvailable == 2)
    }

    /// HOST_TSO4: a guest hands over a 20,000-byte TCP super-frame with its checksum left
    /// partial; it enters the engine as segments of the guest's segment size, each with its
    /// own length, sequence number and complete checksums, across two batches. Without the
    /// feature the same frame is refused.
    @Test(arguments: [true, false]) func aTSOSuperFrameFromTheGuestIsCutIntoSegments(negotiated: Bool) throws {
        let port = try Self.port()
        let harness = try Self.session(negotiated ? VhostUserSession.featureHostTSO4 | VhostUserSession.featureCSUM : 0)
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: harness.session)
        let pool = PacketPool(capacity: 64)
        let batch = PacketBatch()
        let payload = Self.pattern(20_000)
        let superFrame = Self.tcpFrame(sequence: 5000, payload: payload, partial: true)
        // NEEDS_CSUM, TCPV4, hdr_len 54, gso_size 1448, csum_start 34, csum_offset 16, num_buffers 0.
        let header: [UInt8] = [1, 1, 54, 0, 0xA8, 0x05, 34, 0, 16, 0, 0, 0]
        transmitq.fill(0x20000, header + superFrame)
        transmitq.descriptor(0, at: 0x20000, length: UInt32(12 + superFrame.count))
        transmitq.makeAvailable(0)
        var segments: [[UInt8]] = []
        for _ in 0..<3 {
            _ = port.receive(into: batch, pool: pool)
            for index in 0..<batch.count {
                segments.append(
                    Array(UnsafeRawBufferPointer(start: pool.data(batch[index]), count: Int(batch[index].length)))
                )
            }
            batch.releaseAll(to: pool)
        }
        #expect(transmitq.usedIndex == 1)
        #expect(pool.available == 64)
        guard negotiated else {
            #expect(segments.isEmpty)
            #expect(port.portDrops.receiveDropped == 1)
            return
        }
        #expect(segments.count == 14, "20,000 bytes in 1,448-byte segments")
        var received: [UInt8] = []
        for (index, segment) in segments.enumerated() {
            #expect(segment.count == 54 + min(1448, 20_000 - 1448 * index))
            #expect(
                segment.withUnsafeBytes {
                    TCPFrame($0.baseAddress!, length: segment.count)!.tcpChecksumIsValid(
                        $0.baseAddress!,
                        length: segment.count
                    )
                }
            )
            let sequence = segment.withUnsafeBytes { $0.baseAddress!.loadBigEndian32(at: 38) }
            #expect(sequence == 5000 + UInt32(1448 * index))
            received += segment[54...]
        }
        #expect(received == payload)
    }

    /// A hostile guest: a chain longer than any super-frame (70,000 bytes), and a super-frame
    /// whose segment size would make segments longer than any buffer, are refused and counted;
    /// the next frame goes through and no buffer is lost.
    @Test func chainsTooLongForAnyBufferAreRefused() throws {
        let port = try Self.port()
        let harness = try Self.session(VhostUserSession.featureHostTSO4 | VhostUserSession.featureCSUM)
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: harness.session)
        let pool = PacketPool(capacity: 16, largeCapacity: 2)
        let batch = PacketBatch()
        transmitq.fill(0x20000, Array(repeating: 0, count: 12))
        transmitq.descriptor(0, at: 0x20000, length: 70_000)
        transmitq.makeAvailable(0)
        // gso_size 12,000: segments of 12,054 bytes, more than a large buffer holds.
        let superFrame = Self.tcpFrame(sequence: 1, payload: Self.pattern(30_000), partial: true)
        let header: [UInt8] = [1, 1, 54, 0, 0xE0, 0x2E, 34, 0, 16, 0, 0, 0]
        transmitq.fill(0x40000, header + superFrame)
        transmitq.descriptor(1, at: 0x40000, length: UInt32(12 + superFrame.count))
        transmitq.makeAvailable(1)
        Self.offer(transmitq, slot: 2, payload: Self.frame(7))
        #expect(port.receive(into: batch, pool: pool) == 1)
        #expect(port.portDrops.receiveDropped == 2)
        #expect(
            port.guestErrors == 1,
            "the over-long chain broke the ring rules; the bad segment size is an offload refusal"
        )
        #expect(transmitq.usedIndex == 3)
        batch.releaseAll(to: pool)
        #expect(pool.available == 16 && pool.largeAvailable == 2)
    }

    /// Found in review: a hostile guest flipping a descriptor's length between a short and a
    /// jumbo value while we read it. The first read sees a jumbo frame, the measurement a short
    /// one (a small buffer is taken), the second read a jumbo again: it must stop at the small
    /// buffer's room, not write 10 KB across its neighbours. Canaries fill every other buffer.
    @Test func aLengthFlippedBetweenReadsNeverWritesPastABuffer() throws {
        let port = try Self.port()
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: VhostUserSession(queuePairs: 1))
        let pool = PacketPool(capacity: 8, largeCapacity: 1)
        let batch = PacketBatch()
        transmitq.fill(0x20000, Array(repeating: 0, count: 10) + Self.frame(3) + Array(repeating: 0x77, count: 9000))
        // Descriptor 0's length field, flipped by a "guest" thread as fast as it can.
        nonisolated(unsafe) let lengthField = UnsafeMutablePointer<UInt32>(OpaquePointer(transmitq.mapping + 8))
        transmitq.descriptor(0, at: 0x20000, length: 100)
        let flipping = ManagedAtomicFlag()
        let flipperDone = ManagedAtomicFlag()
        let flipper = Thread {
            var long = false
            while !flipping.isSet {
                long.toggle()
                lengthField.pointee = long ? 9000 : 100
            }
            flipperDone.set()
        }
        flipper.start()
        // The thread must be gone before the guest memory is unmapped: a late write would land
        // in whatever another test maps there next (it did, in CI, in a parallel test's ring).
        defer {
            flipping.set()
            let deadline = DispatchTime.now().uptimeNanoseconds + 5_000_000_000
            while !flipperDone.isSet && DispatchTime.now().uptimeNanoseconds < deadline { usleep(100) }
            precondition(flipperDone.isSet, "the flipping thread did not stop")
            withExtendedLifetime(transmitq) {}  // its memory stays mapped until the thread is gone
        }
        var held: [Packet] = []
        while let packet = pool.allocate() { held.append(packet) }
        for packet in held {
            pool.data(packet).initializeMemory(as: UInt8.self, repeating: 0xCA, count: pool.room(packet))
        }
        // One free small buffer at a time, its neighbours holding canaries.
        let victim = held.remove(at: 3)
        pool.release(victim)
        for _ in 0..<20_000 {
            transmitq.makeAvailable(0)
            _ = port.receive(into: batch, pool: pool)
            batch.releaseAll(to: pool)
        }
        for packet in held {
            let bytes = UnsafeRawBufferPointer(start: pool.data(packet), count: pool.room(packet))
            #expect(bytes.allSatisfy { $0 == 0xCA }, "a neighbouring buffer was overwritten")
        }
        #expect(pool.available == 1 && pool.largeAvailable == 1)
    }

    /// Found with QEMU guests: a super-frame with a little more than one segment of payload
    /// fits a small buffer, and was dropped for its segmentation type instead of being cut.
    @Test func aSuperFrameShortEnoughForABufferIsCutToo() throws {
        let port = try Self.port()
        let harness = try Self.session(VhostUserSession.featureHostTSO4 | VhostUserSession.featureCSUM)
        let transmitq = try Guest()
        port.start(ring: 1, queue: transmitq.queue(), kick: -1, call: -1, session: harness.session)
        let pool = PacketPool(capacity: 16)
        let batch = PacketBatch()
        let superFrame = Self.tcpFrame(sequence: 1, payload: Self.pattern(1500), partial: true)
        let header: [UInt8] = [1, 1, 54, 0, 0xA8, 0x05, 34, 0, 16, 0, 0, 0]
        transmitq.fill(0x20000, header + superFrame)
        transmitq.descriptor(0, at: 0x20000, length: UInt32(12 + superFrame.count))
        transmitq.makeAvailable(0)
        #expect(port.receive(into: batch, pool: pool) == 2)
        #expect(batch.count == 2 && batch[0].length == 54 + 1448 && batch[1].length == 54 + 52)
        #expect(port.portDrops.receiveDropped == 0)
        batch.releaseAll(to: pool)
        #expect(pool.available == 16)
    }

    /// GUEST_TSO4: a run of in-order segments of one flow reaches the guest as one super-frame
    /// (partial checksum, the segment size in the header) spread over its mergeable buffers;
    /// without the feature, each segment is its own frame.
    @Test(arguments: [true, false]) func segmentsOfOneFlowReachTheGuestAsOneSuperFrame(negotiated: Bool) throws {
        let port = try Self.port()
        let offload = VhostUserSession.featureGuestCSUM | VhostUserSession.featureGuestTSO4
        let harness = try Self.session(VhostUserSession.featureMergeableBuffers | (negotiated ? offload : 0))
        let receiveq = try Guest()
        port.start(ring: 0, queue: receiveq.queue(), kick: -1, call: -1, session: harness.session)
        let pool = PacketPool(capacity: 64)
        let batch = PacketBatch()
        // Eight 4 KiB buffers: room for the whole run merged (4 × 1,448 + headers), or for the
        // segments one per buffer.
        for slot in 0..<8 {
            receiveq.descriptor(slot, at: 0x40000 + 0x1000 * slot, length: 4096, flags: Virtqueue.flagWrite)
            receiveq.makeAvailable(UInt16(slot))
        }
        let payload = Self.pattern(4 * 1448)
        for index in 0..<4 {
            let segment = Self.tcpFrame(
                sequence: 9000 + UInt32(1448 * index),
                payload: Array(payload[(1448 * index)..<(1448 * (index + 1))])
            )
            var packet = pool.allocate()!
            segment.withUnsafeBytes { pool.data(packet).copyMemory(from: $0.baseAddress!, byteCount: segment.count) }
            packet.length = UInt16(segment.count)
            batch.append(packet)
        }
        #expect(port.transmit(batch, pool: pool) == 4)
        #expect(pool.available == 64)
        guard negotiated else {
            #expect(receiveq.usedIndex == 4)
            #expect(receiveq.usedEntry(0).length == UInt32(12 + 54 + 1448))
            return
        }
        // One frame: header (num_buffers = buffers used) and 54 + 5,792 bytes over two buffers.
        let buffers = Int(receiveq.usedIndex)
        #expect(buffers == 2)
        let header = receiveq.bytes(0x40000, 12)
        #expect(header[0] == 1 && header[1] == 1, "NEEDS_CSUM, TCPV4: \(header)")
        #expect(Int(header[4]) | Int(header[5]) << 8 == 1448, "gso_size")
        #expect(Int(header[6]) == 34 && Int(header[8]) == 16, "checksum start and offset")
        #expect(Int(header[10]) | Int(header[11]) << 8 == buffers, "num_buffers")
        var merged: [UInt8] = []
        for entry in 0..<buffers {
            let used = receiveq.usedEntry(entry)
            let start = 0x40000 + 0x1000 * Int(used.id)
            merged +=
                entry == 0 ? receiveq.bytes(start + 12, Int(used.length) - 12) : receiveq.bytes(start, Int(used.length))
        }
        #expect(merged.count == 54 + payload.count)
        #expect(Array(merged[54...]) == payload)
        // The IPv4 total length covers the merged datagram.
        #expect(Int(merged[16]) << 8 | Int(merged[17]) == 40 + payload.count)
    }
}

/// A flag one thread sets and another polls (the test's stop signal).
final class ManagedAtomicFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}
