import ButterflyPacket
import Testing

/// Builds an Ethernet/IPv4-or-IPv6/TCP frame as bytes, with a valid IP header checksum and
/// a full TCP checksum computed by `referenceChecksum` (independent of the code under test).
struct TCPFrameBuilder {
    var isIPv6 = false
    var vlan = false
    var sequence: UInt32 = 1_000_000
    var flags: UInt8 = 0x10  // ACK
    var options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]  // NOP NOP timestamps
    var identification = 0x1234
    var sourcePort = 40000
    var dontFragment = true

    func frame(payload: [UInt8], checksum: Bool = true) -> [UInt8] {
        var frame: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
        if vlan { frame += [0x81, 0x00, 0x00, 0x07] }
        let tcpLength = 20 + options.count + payload.count
        var tcp: [UInt8] = be16(sourcePort) + be16(5201)
        tcp += octetsBE32(sequence) + octetsBE32(77)
        tcp += [UInt8((20 + options.count) / 4) << 4, flags] + be16(64000) + [0, 0] + [0, 0]
        tcp += options + payload
        let pseudo: [UInt8]
        if isIPv6 {
            let source = octets(ipv6("2001:db8::1")), destination = octets(ipv6("2001:db8::2"))
            frame += [0x86, 0xDD, 0x60, 0, 0, 0] + be16(tcpLength) + [6, 64] + source + destination
            pseudo = ipv6PseudoHeader(ipv6("2001:db8::1"), ipv6("2001:db8::2"), length: tcpLength, nextHeader: 6)
        } else {
            let source = octets(ipv4("203.0.113.1")), destination = octets(ipv4("203.0.113.2"))
            var ip: [UInt8] = [0x45, 0] + be16(20 + tcpLength) + be16(identification)
            ip += [dontFragment ? 0x40 : 0, 0, 64, 6, 0, 0]
            ip += source + destination
            let ipSum = referenceChecksum(ip)
            ip[10] = UInt8(ipSum >> 8)
            ip[11] = UInt8(ipSum & 0xFF)
            frame += [0x08, 0x00] + ip
            pseudo = source + destination + [0, 6] + be16(tcpLength)
        }
        if checksum {
            let sum = referenceChecksum(pseudo + tcp)
            tcp[16] = UInt8(sum >> 8)
            tcp[17] = UInt8(sum & 0xFF)
        }
        return frame + tcp
    }
}

func octetsBE32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
}

/// A payload pattern that makes misplaced bytes visible.
func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8 &+ seed) }
}

/// Copies bytes into fresh memory for the duration of `body`.
func withBuffer<R>(_ bytes: [UInt8], capacity: Int? = nil, _ body: (UnsafeMutableRawPointer) -> R) -> R {
    let memory = UnsafeMutableRawPointer.allocate(byteCount: max(capacity ?? 0, bytes.count, 1), alignment: 8)
    defer { memory.deallocate() }
    memory.copyMemory(from: bytes, byteCount: bytes.count)
    return body(memory)
}

func tcpChecksumValid(_ frame: [UInt8]) -> Bool {
    withBuffer(frame) { data in TCPFrame(data, length: frame.count)!.tcpChecksumIsValid(data, length: frame.count) }
}

@Suite struct ChecksumTests {
    @Test func wideSumsMatchTheReferenceAtEveryLengthAndAlignment() {
        for length in 0..<80 {
            for shift in 0..<3 {
                let data = pattern(length + shift, seed: length)
                let slice = Array(data[shift...])
                let computed = withBuffer(data) { InternetChecksum.compute($0 + shift, length: length) }
                #expect(computed == referenceChecksum(slice), "length \(length) shift \(shift)")
            }
        }
    }

    @Test func chainedEvenPartsEqualOneSum() {
        let data = pattern(1514, seed: 3)
        withBuffer(data) { memory in
            let whole = InternetChecksum.compute(memory, length: 1514)
            var sum = InternetChecksum.add(memory, length: 14)
            sum = InternetChecksum.add(memory + 14, length: 1000, to: sum)
            sum = InternetChecksum.add(memory + 1014, length: 500, to: sum)
            #expect(InternetChecksum.finish(sum) == whole)
            #expect(whole == referenceChecksum(data))
        }
    }

    @Test func allOnesDataSumsToZeroChecksum() {
        let data = [UInt8](repeating: 0xFF, count: 4096)
        #expect(withBuffer(data) { InternetChecksum.compute($0, length: 4096) } == 0)
    }
}

@Suite struct TCPSegmenterTests {
    func segments(_ superFrame: [UInt8], header: VirtioNetHeader, maximum: Int = 1856) throws(OffloadError) -> [[UInt8]]
    {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: superFrame.count, alignment: 8)
        defer { memory.deallocate() }
        memory.copyMemory(from: superFrame, byteCount: superFrame.count)
        var segmenter = try TCPSegmenter(
            frame: memory,
            length: superFrame.count,
            header: header,
            maximumSegmentFrame: maximum
        )
        let expected = segmenter.segmentCount
        var result: [[UInt8]] = []
        let output = UnsafeMutableRawPointer.allocate(byteCount: maximum, alignment: 8)
        defer { output.deallocate() }
        while !segmenter.isFinished {
            let length = segmenter.writeNext(to: output)
            result.append(bytes(output, length))
        }
        #expect(result.count == expected)
        return result
    }

    @Test(arguments: [false, true]) func cutsIPv4AndIPv6SuperFramesLikeTSO(ipv6: Bool) throws {
        var builder = TCPFrameBuilder(isIPv6: ipv6)
        builder.flags = 0x18 | 0x80 | 0x01  // ACK PSH CWR FIN
        let payload = pattern(5000)
        // The guest leaves only the pseudo-header sum: start from a frame without checksum.
        let superFrame = builder.frame(payload: payload, checksum: false)
        let header = VirtioNetHeader(
            flags: 1,
            gsoType: ipv6 ? 4 : 1,
            headerLength: 0,
            segmentSize: 1448,
            checksumStart: UInt16(ipv6 ? 54 : 34),
            checksumOffset: 16
        )
        let cut = try segments(superFrame, header: header)
        #expect(cut.map(\.count) == [1448, 1448, 1448, 656].map { $0 + (ipv6 ? 86 : 66) })
        var joined: [UInt8] = []
        for (index, segment) in cut.enumerated() {
            let tcp = ipv6 ? 54 : 34
            #expect(tcpChecksumValid(segment), "segment \(index)")
            let sequence =
                UInt32(segment[tcp + 4]) << 24 | UInt32(segment[tcp + 5]) << 16 | UInt32(segment[tcp + 6]) << 8
                | UInt32(segment[tcp + 7])
            #expect(sequence == 1_000_000 + UInt32(index * 1448))
            let flags = segment[tcp + 13]
            #expect(flags & 0x80 == (index == 0 ? 0x80 : 0), "CWR only on the first")
            #expect(flags & 0x09 == (index == 3 ? 0x09 : 0), "PSH and FIN only on the last")
            #expect(flags & 0x10 == 0x10)
            if ipv6 {
                #expect(Int(segment[18]) << 8 | Int(segment[19]) == segment.count - 54)
            } else {
                #expect(Int(segment[16]) << 8 | Int(segment[17]) == segment.count - 14)
                #expect(Int(segment[18]) << 8 | Int(segment[19]) == 0x1234 + index)
                #expect(referenceChecksum(Array(segment[14..<34])) == 0)
            }
            joined += segment[(tcp + 32)...]
        }
        #expect(joined == payload)
    }

    @Test func keepsAVLANTag() throws {
        let builder = TCPFrameBuilder(vlan: true)
        let superFrame = builder.frame(payload: pattern(3000), checksum: false)
        let cut = try segments(superFrame, header: VirtioNetHeader(flags: 1, gsoType: 1, segmentSize: 1400))
        #expect(cut.count == 3)
        for segment in cut {
            #expect(Array(segment[12..<16]) == [0x81, 0x00, 0x00, 0x07])
            #expect(tcpChecksumValid(segment))
        }
    }

    @Test func refusesWhatItCannotCutSafely() {
        let v4 = TCPFrameBuilder().frame(payload: pattern(3000))
        func refusal(_ frame: [UInt8], _ header: VirtioNetHeader) -> OffloadError? {
            do {
                _ = try segments(frame, header: header)
                return nil
            } catch { return error }
        }
        #expect(refusal(v4, VirtioNetHeader(gsoType: 3, segmentSize: 1400)) == .unsupportedSegmentation)  // UFO
        #expect(refusal(v4, VirtioNetHeader(gsoType: 5, segmentSize: 1400)) == .unsupportedSegmentation)  // USO
        // The IPv6 type on an IPv4 frame.
        #expect(refusal(v4, VirtioNetHeader(gsoType: 4, segmentSize: 1400)) == .unsupportedSegmentation)
        #expect(refusal(v4, VirtioNetHeader(gsoType: 1, segmentSize: 0)) == .badSegmentSize)
        #expect(refusal(v4, VirtioNetHeader(gsoType: 1, segmentSize: 47)) == .badSegmentSize)
        #expect(refusal(v4, VirtioNetHeader(gsoType: 1, segmentSize: 1800)) == .badSegmentSize)  // 66 + 1800 > 1856
        #expect(refusal(Array(v4[0..<40]), VirtioNetHeader(gsoType: 1, segmentSize: 1400)) == .truncated)
        var udp = v4
        udp[23] = 17
        #expect(refusal(udp, VirtioNetHeader(gsoType: 1, segmentSize: 1400)) == .unsupportedSegmentation)
        var fragment = v4
        fragment[20] |= 0x20  // more fragments
        #expect(refusal(fragment, VirtioNetHeader(gsoType: 1, segmentSize: 1400)) == .unsupportedSegmentation)
    }

    @Test func completesAPartialChecksum() {
        // A UDP datagram whose checksum field holds only the pseudo-header sum.
        let source = octets(ipv4("203.0.113.1")), destination = octets(ipv4("203.0.113.2"))
        let payload = pattern(101)
        let udpLength = 8 + payload.count
        let pseudo = source + destination + [0, 17] + be16(udpLength)
        let pseudoSum = ~referenceChecksum(pseudo)
        var frame: [UInt8] = [UInt8](repeating: 2, count: 12) + [0x08, 0x00]
        frame += [0x45, 0] + be16(20 + udpLength) + [0, 0, 0, 0, 64, 17, 0, 0] + source + destination
        frame += be16(5000) + be16(6000) + be16(udpLength) + be16(Int(pseudoSum)) + payload
        let header = VirtioNetHeader(flags: 1, checksumStart: 34, checksumOffset: 6)
        let completed: [UInt8] = withBuffer(frame) { data in
            #expect(header.completeChecksum(data, length: frame.count) == nil)
            return bytes(data, frame.count)
        }
        #expect(referenceChecksum(pseudo + Array(completed[34...])) == 0)
        let outside = VirtioNetHeader(flags: 1, checksumStart: UInt16(frame.count - 1), checksumOffset: 0)
        #expect(withBuffer(frame) { outside.completeChecksum($0, length: frame.count) } == .badChecksumOffset)
    }

    @Test func headerRoundTripsLittleEndian() {
        let header = VirtioNetHeader(
            flags: 1,
            gsoType: 0x81,
            headerLength: 66,
            segmentSize: 1448,
            checksumStart: 34,
            checksumOffset: 16
        )
        let stored: [UInt8] = withBuffer([], capacity: 10) { memory in
            header.store(to: memory)
            return bytes(memory, 10)
        }
        #expect(stored == [1, 0x81, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
        #expect(withBuffer(stored) { VirtioNetHeader(loadingFrom: $0) } == header)
        #expect(header.segmentation == 1)
    }
}

@Suite struct TCPCoalescerTests {
    /// Runs the coalescer over `frames` in order, as TapPort.transmit does; returns the sizes of
    /// the runs and, for each run of 2+, the merged frame with its checksum completed.
    func coalesce(_ frames: [[UInt8]]) -> (runs: [Int], merged: [[UInt8]], headers: [VirtioNetHeader]) {
        let memories = frames.map { frame -> UnsafeMutableRawPointer in
            let memory = UnsafeMutableRawPointer.allocate(byteCount: frame.count, alignment: 8)
            memory.copyMemory(from: frame, byteCount: frame.count)
            return memory
        }
        defer { memories.forEach { $0.deallocate() } }
        var runs: [Int] = []
        var merged: [[UInt8]] = []
        var headers: [VirtioNetHeader] = []
        var index = 0
        while index < frames.count {
            var count = 1
            if var run = TCPCoalescer(frame: memories[index], length: frames[index].count) {
                while index + count < frames.count, run.canGrow,
                    run.append(memories[index + count], length: frames[index + count].count)
                {
                    count += 1
                }
                if count > 1 {
                    let header = run.finish()
                    headers.append(header)
                    var bytesOut = bytes(memories[index], frames[index].count)
                    for part in 1..<count { bytesOut += frames[index + part][run.layout.headerLength...] }
                    #expect(bytesOut.count == run.mergedLength)
                    let completed: [UInt8] = withBuffer(bytesOut) { data in
                        #expect(header.completeChecksum(data, length: bytesOut.count) == nil)
                        return bytes(data, bytesOut.count)
                    }
                    merged.append(completed)
                }
            }
            runs.append(count)
            index += count
        }
        return (runs, merged, headers)
    }

    func cut(_ builder: TCPFrameBuilder, payload: [UInt8], size: Int = 1448) -> [[UInt8]] {
        let superFrame = builder.frame(payload: payload, checksum: false)
        return
            (try? TCPSegmenterTests().segments(
                superFrame,
                header: VirtioNetHeader(flags: 1, gsoType: builder.isIPv6 ? 4 : 1, segmentSize: UInt16(size))
            )) ?? []
    }

    @Test(arguments: [false, true]) func segmentsOfOneSuperFrameMergeBackIntoIt(ipv6: Bool) {
        var builder = TCPFrameBuilder(isIPv6: ipv6)
        builder.flags = 0x18  // ACK PSH: PSH only on the last segment, then on the merged frame
        let payload = pattern(20_000)
        let segments = cut(builder, payload: payload)
        #expect(segments.count == 14)
        let result = coalesce(segments)
        #expect(result.runs == [14])
        let original = builder.frame(payload: payload)
        let merged = result.merged[0]
        #expect(merged.count == original.count)
        // Identical but for the IPv4 identification and header checksum (the first segment's).
        var expected = original
        if !ipv6 { expected.replaceSubrange(18..<20, with: merged[18..<20]) }
        if !ipv6 { expected.replaceSubrange(24..<26, with: merged[24..<26]) }
        #expect(merged == expected)
        #expect(result.headers[0].segmentSize == 1448)
        #expect(result.headers[0].gsoType == (ipv6 ? 4 : 1))
        #expect(result.headers[0].headerLength == (ipv6 ? 86 : 66))
        #expect(result.headers[0].flags == 1)
    }

    @Test func breaksRunsWhereGROWould() {
        let builder = TCPFrameBuilder()
        let run = cut(builder, payload: pattern(1448 * 4))
        // A gap in the sequence.
        #expect(coalesce([run[0], run[1], run[3]]).runs == [2, 1])
        // Another flow in between.
        var other = builder
        other.sourcePort = 40001
        let foreign = other.frame(payload: pattern(1448))
        #expect(coalesce([run[0], foreign, run[1]]).runs == [1, 1, 1])
        // A corrupted payload is never merged.
        var corrupted = run[1]
        corrupted[100] ^= 0x40
        #expect(coalesce([run[0], corrupted, run[2]]).runs == [1, 1, 1])
        // A short segment ends its run; a SYN never starts one.
        let short = cut(builder, payload: pattern(1448 + 500))
        let after = cut(
            {
                var b = builder; b.sequence = 1_000_000 + 1948; return b
            }(),
            payload: pattern(1448)
        )
        #expect(coalesce(short + after).runs == [2, 1])
        var syn = builder
        syn.flags = 0x12
        #expect(coalesce([syn.frame(payload: pattern(10)), run[0], run[1]]).runs == [1, 2])
        // Different timestamps (options) do not merge.
        var later = builder
        later.options = [1, 1, 8, 10, 0, 0, 0, 8, 0, 0, 0, 9]
        later.sequence = 1_000_000 + 1448
        #expect(coalesce([run[0], later.frame(payload: pattern(1448))]).runs == [1, 1])
    }

    @Test func checksIPv4HeadersAndIdentificationsLikeGRO() {
        // DF clear: identifications must follow each other.
        var builder = TCPFrameBuilder()
        builder.dontFragment = false
        let run = cut(builder, payload: pattern(1448 * 3))
        #expect(coalesce(run).runs == [3], "a segmenter's ids increase by one")
        var second = builder
        second.sequence = 1_000_000 + 1448
        second.identification = 0x1234 + 7
        #expect(coalesce([run[0], second.frame(payload: Array(pattern(1448 * 3)[1448..<2896]))]).runs == [1, 1])
        // An IPv4 header whose checksum does not verify is never merged (and so never given
        // a fresh checksum); every other header byte is compared with the first segment's.
        var corrupted = run[1]
        corrupted[24] ^= 0x01
        #expect(coalesce([run[0], corrupted, run[2]]).runs == [1, 1, 1])
    }

    @Test func stopsBeforeSixtyFourKiB() {
        let builder = TCPFrameBuilder()
        let segments = cut(builder, payload: pattern(1448 * 50))
        let result = coalesce(segments)
        #expect(result.runs.allSatisfy { $0 > 0 })
        #expect(result.runs.reduce(0, +) == 50)
        #expect(result.merged.allSatisfy { $0.count - 14 <= 65_535 })
        #expect(result.runs[0] == (65_535 - 52) / 1448)
    }
}
