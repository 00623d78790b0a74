import ButterflyPacket
import Testing

@Suite struct ARPTests {
    let ourIP = ipv4("192.0.2.1")
    let peerIP = ipv4("192.0.2.2")

    @Test func requestBytes() {
        let frame = buildFrame { ARP.buildRequest(into: $0, senderMAC: macA, senderIP: ourIP, targetIP: peerIP) }
        let expected: [UInt8] =
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06]
            + [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]
            + [0x02, 0, 0, 0, 0, 0x01, 192, 0, 2, 1]
            + [0, 0, 0, 0, 0, 0, 192, 0, 2, 2]
        #expect(frame == expected)
        #expect(frame.count == ARP.frameLength)
    }

    @Test func requestReplyRoundTrip() throws {
        let request = buildFrame { ARP.buildRequest(into: $0, senderMAC: macA, senderIP: ourIP, targetIP: peerIP) }
        let parsedRequest = withGuardedBytes(request) { data, length in
            ARP.parse(data + Ethernet.headerLength, length: length - Ethernet.headerLength)
        }
        let message = try #require(parsedRequest)
        #expect(message.operation == ARP.request)
        #expect(message.senderMAC == macA)
        #expect(message.senderIP == ourIP)
        #expect(message.targetMAC == 0)
        #expect(message.targetIP == peerIP)
        #expect(!message.isGratuitous)

        // The peer answers.
        let reply = buildFrame { ARP.buildReply(into: $0, answering: message, ourMAC: macB) }
        #expect(Array(reply[0..<14]) == octets(mac: macA) + octets(mac: macB) + [0x08, 0x06])
        let parsedReply = withGuardedBytes(reply) { data, length in
            ARP.parse(data + Ethernet.headerLength, length: length - Ethernet.headerLength)
        }
        #expect(
            parsedReply
                == ARP.Message(
                    operation: ARP.reply,
                    senderMAC: macB,
                    senderIP: peerIP,
                    targetMAC: macA,
                    targetIP: ourIP
                )
        )

        let direct = buildFrame {
            ARP.buildReply(into: $0, senderMAC: macB, senderIP: peerIP, targetMAC: macA, targetIP: ourIP)
        }
        #expect(direct == reply)
    }

    @Test func gratuitous() {
        let frame = buildFrame { ARP.buildGratuitous(into: $0, mac: macA, ip: ourIP) }
        #expect(Ethernet.isBroadcast(withGuardedBytes(frame) { data, _ in Ethernet.destination(data) }))
        let message = withGuardedBytes(frame) { data, length in ARP.parse(data + 14, length: length - 14) }
        #expect(message?.operation == ARP.request)
        #expect(message?.senderIP == ourIP)
        #expect(message?.targetIP == ourIP)
        #expect(message?.targetMAC == 0)
        #expect(message?.isGratuitous == true)
    }

    @Test func truncatedAtEveryLength() {
        let frame = buildFrame { ARP.buildRequest(into: $0, senderMAC: macA, senderIP: ourIP, targetIP: peerIP) }
        let message = Array(frame[14...])
        for length in 0..<ARP.length {
            withGuardedBytes(message, count: length) { data, length in
                #expect(ARP.parse(data, length: length) == nil)
            }
        }
        withGuardedBytes(message) { data, length in #expect(ARP.parse(data, length: length) != nil) }
    }

    @Test func wrongTypesOrLengthsRejected() {
        let frame = buildFrame { ARP.buildRequest(into: $0, senderMAC: macA, senderIP: ourIP, targetIP: peerIP) }
        let message = Array(frame[14...])
        // hardware type, protocol type, hardware length, protocol length
        for (index, value) in [(1, UInt8(6)), (2, 0x86), (4, 8), (5, 16)] {
            var bad = message
            bad[index] = value
            withGuardedBytes(bad) { data, length in #expect(ARP.parse(data, length: length) == nil) }
        }
    }
}
