import ButterflyPacket
import Testing

/// The pool's two size classes: each allocation lands in a buffer that holds it, buffers never
/// overlap, release returns each to its own class, and a frame longer than any buffer is refused.
@Suite struct PacketPoolTests {
    @Test func framesGoToTheSmallestClassThatHoldsThem() {
        let pool = PacketPool(capacity: 4, largeCapacity: 2)
        let small = pool.allocate(frameLength: PacketPool.maximumFrame)!
        let large = pool.allocate(frameLength: PacketPool.maximumFrame + 1)!
        #expect(!pool.isLarge(small))
        #expect(pool.isLarge(large))
        #expect(pool.room(small) == PacketPool.maximumFrame)
        #expect(pool.room(large) == PacketPool.maximumLargeFrame)
        #expect(pool.available == 3 && pool.largeAvailable == 1)
        #expect(pool.allocate(frameLength: PacketPool.maximumLargeFrame + 1) == nil)
        #expect(pool.maximumHeldFrame == PacketPool.maximumLargeFrame)
        #expect(PacketPool(capacity: 4).maximumHeldFrame == PacketPool.maximumFrame)
        pool.release(small)
        pool.release(large)
        #expect(pool.available == 4 && pool.largeAvailable == 2)
    }

    @Test func largeBuffersRunOutWithoutTakingSmallOnes() {
        let pool = PacketPool(capacity: 2, largeCapacity: 1)
        let first = pool.allocate(frameLength: 9014)
        #expect(first != nil)
        #expect(pool.allocate(frameLength: 9014) == nil)
        #expect(pool.available == 2)
        #expect(pool.allocate() != nil)
    }

    @Test func buffersOfBothClassesNeverOverlap() {
        let pool = PacketPool(capacity: 8, largeCapacity: 3)
        var packets: [Packet] = []
        for _ in 0..<8 { packets.append(pool.allocate()!) }
        for _ in 0..<3 { packets.append(pool.allocate(frameLength: 9000)!) }
        // Fill every buffer's whole room with its own tag, then check no tag was overwritten.
        for (tag, packet) in packets.enumerated() {
            pool.data(packet).initializeMemory(as: UInt8.self, repeating: UInt8(tag), count: pool.room(packet))
        }
        for (tag, packet) in packets.enumerated() {
            let data = pool.data(packet)
            let room = pool.room(packet)
            #expect(data.load(as: UInt8.self) == UInt8(tag))
            #expect(data.load(fromByteOffset: room - 1, as: UInt8.self) == UInt8(tag))
        }
        // Headrooms are intact too: a large buffer's starts after the previous buffer's end.
        for packet in packets {
            let start = pool.buffer(packet.buffer)
            #expect(pool.data(packet) - start == PacketPool.headroom)
        }
        for packet in packets { pool.release(packet) }
        #expect(pool.available == 8 && pool.largeAvailable == 3)
    }

    @Test func cloneKeepsAJumboFrameWhole() {
        let pool = PacketPool(capacity: 4, largeCapacity: 3)
        var jumbo = pool.allocate(frameLength: 9014)!
        jumbo.length = 9014
        for index in 0..<9014 {
            pool.data(jumbo).storeBytes(of: UInt8(truncatingIfNeeded: index * 7), toByteOffset: index, as: UInt8.self)
        }
        let copy = pool.clone(jumbo)!
        #expect(pool.isLarge(copy))
        #expect(copy.length == 9014)
        #expect(bytes(pool.data(copy), 9014) == bytes(pool.data(jumbo), 9014))
        // A clone keeps the data's offset: a short frame left deep in a large buffer (after a
        // decapsulation) needs a large buffer too, and one near the start fits a small one.
        var tail = jumbo
        _ = tail.removeFront(9000)
        let tailCopy = pool.clone(tail)!
        #expect(pool.isLarge(tailCopy))
        #expect(bytes(pool.data(tailCopy), 14) == bytes(pool.data(tail), 14))
        var head = jumbo
        head.length = 100
        #expect(!pool.isLarge(pool.clone(head)!))
    }
}
