import ButterflyPacket

/// A guest TCP super-frame as a tap with TSO hands it over: Ethernet + IPv4 + TCP with
/// timestamps (66 bytes of headers) and 40 × 1,448 bytes of payload, its checksum left partial.
enum SuperFrame {
    static let segmentSize = 1448
    static let segments = 40
    static let headerLength = 66

    static func write(into frame: UnsafeMutableRawPointer) -> Int {
        let payload = segmentSize * segments
        frame.storeMAC(Addresses.guestB, at: 0)
        frame.storeMAC(Addresses.guestA, at: 6)
        frame.storeBigEndian16(0x0800, at: 12)
        let ip = frame + 14
        ip.storeByte(0x45, at: 0)
        ip.storeByte(0, at: 1)
        ip.storeBigEndian16(UInt16(truncatingIfNeeded: 52 + payload), at: 2)
        ip.storeBigEndian32(0x1234_4000, at: 4)
        ip.storeByte(64, at: 8)
        ip.storeByte(6, at: 9)
        ip.storeBigEndian16(0, at: 10)
        ip.storeBigEndian32(Addresses.guestAIP, at: 12)
        ip.storeBigEndian32(Addresses.guestBIP, at: 16)
        let tcp = ip + 20
        tcp.storeBigEndian32(40000 << 16 | 5201, at: 0)
        tcp.storeBigEndian32(1_000_000, at: 4)
        tcp.storeBigEndian32(77, at: 8)
        tcp.storeBigEndian16(0x8010, at: 12)  // 32-byte header, ACK
        tcp.storeBigEndian16(64000, at: 14)
        tcp.storeBigEndian32(0, at: 16)
        tcp.storeBigEndian32(0x0101_080A, at: 20)  // NOP NOP timestamps
        tcp.storeBigEndian32(7, at: 24)
        tcp.storeBigEndian32(9, at: 28)
        for index in 0..<payload { frame.storeByte(UInt8(truncatingIfNeeded: index &* 7), at: headerLength + index) }
        return headerLength + payload
    }

    static let header = VirtioNetHeader(
        flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
        headerLength: UInt16(headerLength), segmentSize: UInt16(segmentSize), checksumStart: 34, checksumOffset: 16)
}

/// `TCPSegmenter`: 25 super-frames cut into 1,000 segments (copy + full TCP checksum each), as
/// `TapPort.receive` does for a guest with TSO.
final class SegmentStage: Scenario {
    let pool = PacketPool(capacity: 64)
    let superFrame: UnsafeMutableRawPointer
    let length: Int
    private(set) var digest = 0

    init() {
        superFrame = .allocate(byteCount: 65_536, alignment: 64)
        length = SuperFrame.write(into: superFrame)
    }

    func run() -> Int {
        var made = 0
        var sum = 0
        let output = pool.allocate()!
        for _ in 0..<(Scenarios.packetsPerRun / SuperFrame.segments) {
            guard
                var segmenter = try? TCPSegmenter(
                    frame: superFrame, length: length, header: SuperFrame.header,
                    maximumSegmentFrame: PacketPool.maximumFrame)
            else { return 0 }
            while !segmenter.isFinished {
                sum &+= segmenter.writeNext(to: pool.data(output))
                made &+= 1
            }
        }
        pool.release(output)
        digest = sum
        return made
    }
}

/// `TCPCoalescer`: 1,000 in-order segments (checksums verified) merged into 25 frames, as
/// `TapPort.transmit` does before one `writev` per merged frame. The segments are re-made from
/// pristine copies before each pass (a merge patches the first segment's headers); the copies
/// are part of the measured time, so the figure is a lower bound.
final class MergeStage: Scenario {
    let segments = FrameBatch(count: SuperFrame.segments) { index, frame, _ in
        let superFrame = UnsafeMutableRawPointer.allocate(byteCount: 65_536, alignment: 64)
        defer { superFrame.deallocate() }
        let length = SuperFrame.write(into: superFrame)
        var segmenter = try! TCPSegmenter(
            frame: superFrame, length: length, header: SuperFrame.header, maximumSegmentFrame: PacketPool.maximumFrame)
        var made = 0
        while made < index {
            _ = segmenter.writeNext(to: frame)
            made += 1
        }
        return segmenter.writeNext(to: frame)
    }
    let firstCopy: UnsafeMutableRawPointer
    private(set) var digest = 0

    init() {
        firstCopy = .allocate(byteCount: 2048, alignment: 64)
        firstCopy.copyMemory(from: segments.pool.data(segments.batch[0]), byteCount: Int(segments.batch[0].length))
    }

    func run() -> Int {
        let pool = segments.pool
        let batch = segments.batch
        var merged = 0
        var sum = 0
        for _ in 0..<(Scenarios.packetsPerRun / SuperFrame.segments) {
            let first = batch[0]
            pool.data(first).copyMemory(from: firstCopy, byteCount: Int(first.length))
            guard var run = TCPCoalescer(frame: pool.data(first), length: Int(first.length)) else { return 0 }
            for index in 1..<batch.count {
                let packet = batch[index]
                guard run.append(pool.data(packet), length: Int(packet.length)) else { break }
            }
            sum &+= Int(run.finish().segmentSize)
            merged &+= run.count
        }
        digest = sum
        return merged
    }
}
