import ButterflyDataplane
import Testing

@Suite struct MACAddressTests {
    @Test func parsesLowerCase() throws {
        let mac = try #require(MACAddress("52:54:00:ab:cd:ef"))
        #expect(mac.value == 0x5254_00AB_CDEF)
        #expect(mac.octets == [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
    }

    @Test func parsesUpperAndMixedCase() throws {
        let upper = try #require(MACAddress("52:54:00:AB:CD:EF"))
        let mixed = try #require(MACAddress("52:54:00:aB:Cd:eF"))
        #expect(upper.value == 0x5254_00AB_CDEF)
        #expect(mixed == upper)
    }

    @Test func parsesExtremes() throws {
        #expect(try #require(MACAddress("00:00:00:00:00:00")).value == 0)
        #expect(try #require(MACAddress("ff:ff:ff:ff:ff:ff")).value == 0xFFFF_FFFF_FFFF)
    }

    @Test(arguments: [
        "",
        "52:54:00:ab:cd",  // five octets
        "52:54:00:ab:cd:ef:01",  // seven octets
        "52:54:00:ab:cd:e",  // 16 characters
        "52:54:00:ab:cd:eff",  // 18 characters
        "52-54-00-ab-cd-ef",  // wrong separator
        "52.54.00.ab.cd.ef",
        "5254:00ab:cdef:::",  // 17 characters, separators misplaced
        "52:54:00:ab:cd:eg",  // non-hex
        "52:54:00:ab:cd: f",
        "1:22:33:44:55:667",  // 17 characters, groups of the wrong size
        " 52:54:00:ab:cd:e",
        "52:54:00:ab:cd:ef ",
        "525400abcdef",
        "+2:54:00:ab:cd:ef",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(MACAddress(text) == nil, "\(text) should be rejected")
    }

    @Test func descriptionIsLowerCaseAndZeroPadded() throws {
        let mac = try #require(MACAddress("0A:0B:0C:0D:0E:0F"))
        #expect(mac.description == "0a:0b:0c:0d:0e:0f")
        #expect(MACAddress(value: 0x0000_0000_0001).description == "00:00:00:00:00:01")
        #expect(MACAddress(octets: (0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01)).description == "de:ad:be:ef:00:01")
    }

    @Test func descriptionRoundTrips() throws {
        for text in ["52:54:00:12:34:56", "fe:dc:ba:98:76:54", "01:00:5e:00:00:fb"] {
            #expect(try #require(MACAddress(text)).description == text)
        }
    }

    @Test func multicastBitIsTheLowBitOfTheFirstOctet() throws {
        #expect(try #require(MACAddress("01:00:5e:00:00:01")).isMulticast)
        #expect(try #require(MACAddress("33:33:00:00:00:01")).isMulticast)
        #expect(try #require(MACAddress("03:00:00:00:00:00")).isMulticast)
        #expect(!(try #require(MACAddress("52:54:00:12:34:56")).isMulticast))
        #expect(!(try #require(MACAddress("02:00:00:00:00:00")).isMulticast))
        // The low bit of the *last* octet is not the group bit.
        #expect(!(try #require(MACAddress("00:00:00:00:00:01")).isMulticast))
    }

    @Test func broadcast() throws {
        let broadcast = try #require(MACAddress("FF:FF:FF:FF:FF:FF"))
        #expect(broadcast == MACAddress.broadcast)
        #expect(broadcast.isBroadcast)
        #expect(broadcast.isMulticast)
        #expect(!(try #require(MACAddress("01:00:5e:00:00:01")).isBroadcast))
        #expect(!(try #require(MACAddress("ff:ff:ff:ff:ff:fe")).isBroadcast))
    }

    @Test func octetsInitialiserMatchesParsing() throws {
        let mac = MACAddress(octets: (0x52, 0x54, 0x00, 0x12, 0x34, 0x56))
        #expect(mac == (try #require(MACAddress("52:54:00:12:34:56"))))
    }

    @Test func ordersByValue() throws {
        let low = try #require(MACAddress("00:00:00:00:00:ff"))
        let high = try #require(MACAddress("00:00:00:00:01:00"))
        #expect(low < high)
        #expect(!(high < low))
    }

    @Test func zero() throws {
        #expect(try #require(MACAddress("00:00:00:00:00:00")).isZero)
        #expect(!(try #require(MACAddress("00:00:00:00:00:01")).isZero))
        #expect(!(try #require(MACAddress("01:00:00:00:00:00")).isZero))
    }
}
