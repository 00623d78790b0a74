import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts
import CButterflyLinux
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
}
