import ButterflyPacket
import Testing

@Suite struct EthernetTests {
    @Test func writeThenParse() {
        let frame = buildFrame { data in
            Ethernet.write(data, destination: 0x0011_2233_4455, source: 0x66_7788_99AA_BB, etherType: EtherType.ipv6)
            return Ethernet.headerLength
        }
        #expect(frame == [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0x86, 0xDD])
        withGuardedBytes(frame) { data, length in
            let header = Ethernet.parse(data, length: length)
            #expect(
                header == Ethernet.Header(destination: 0x0011_2233_4455, source: 0x66_7788_99AA_BB, etherType: 0x86DD)
            )
            #expect(Ethernet.destination(data) == 0x0011_2233_4455)
            #expect(Ethernet.source(data) == 0x66_7788_99AA_BB)
            #expect(Ethernet.etherType(data) == EtherType.ipv6)
        }
    }

    @Test func truncatedHeaderIsRejected() {
        let frame = [UInt8](repeating: 0xAB, count: 14)
        for length in 0..<14 {
            withGuardedBytes(frame, count: length) { data, length in
                #expect(Ethernet.parse(data, length: length) == nil)
            }
        }
    }

    @Test func constants() {
        #expect(EtherType.ipv4 == 0x0800)
        #expect(EtherType.arp == 0x0806)
        #expect(EtherType.rarp == 0x8035)
        #expect(EtherType.ipv6 == 0x86DD)
        #expect(EtherType.vlan == 0x8100)
        #expect(Ethernet.headerLength == 14)
        #expect(Ethernet.broadcast == 0xFFFF_FFFF_FFFF)
    }

    @Test func multicastBit() {
        #expect(Ethernet.isMulticast(Ethernet.broadcast))
        #expect(Ethernet.isMulticast(0x0100_5E00_0001))
        #expect(Ethernet.isMulticast(0x3333_0000_0001))
        #expect(!Ethernet.isMulticast(0x0200_0000_0001))
        #expect(!Ethernet.isMulticast(0x0001_0000_0000))
        #expect(Ethernet.isBroadcast(Ethernet.broadcast))
        #expect(!Ethernet.isBroadcast(0x0100_5E00_0001))
    }

    @Test func multicastMappings() {
        // 239.129.1.1: only the low 23 bits survive (RFC 1112 §6.4).
        #expect(Ethernet.ipv4MulticastMAC(ipv4("239.129.1.1")) == 0x0100_5E01_0101)
        #expect(Ethernet.ipv4MulticastMAC(ipv4("224.0.0.2")) == 0x0100_5E00_0002)
        #expect(Ethernet.ipv4MulticastMAC(ipv4("230.255.255.255")) == 0x0100_5E7F_FFFF)
        #expect(Ethernet.ipv6MulticastMAC(ipv6("ff02::1:ff12:3456")) == 0x3333_FF12_3456)
        #expect(Ethernet.ipv6MulticastMAC(ipv6("ff02::1")) == 0x3333_0000_0001)
        #expect(Ethernet.ipv6MulticastMAC(ipv6("ff0e::aabb:ccdd:eeff")) == 0x3333_CCDD_EEFF)
    }
}
