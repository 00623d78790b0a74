import ButterflyDataplane
import Testing

@Suite struct IPAddressTests {
    @Test func parsesIPv4() throws {
        let address = try #require(IPAddress("198.51.100.1"))
        #expect(address == .v4(0xC633_6401))
        #expect(address.isIPv4)
        #expect(address.bitWidth == 32)
        #expect(address.description == "198.51.100.1")
        #expect(address.bytes == [198, 51, 100, 1])
    }

    @Test func parsesIPv4Extremes() throws {
        #expect(IPAddress("0.0.0.0") == .v4(0))
        #expect(IPAddress("255.255.255.255") == .v4(0xFFFF_FFFF))
    }

    @Test func parsesIPv6() throws {
        let address = try #require(IPAddress("2001:db8::1"))
        #expect(address == .v6(high: 0x2001_0DB8_0000_0000, low: 1))
        #expect(!address.isIPv4)
        #expect(address.bitWidth == 128)
        #expect(address.bytes == [0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    }

    @Test(arguments: [
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:DB8::ABCD", "2001:db8::abcd"),
        ("::", "::"),
        ("::1", "::1"),
        ("fe80:0:0:0:0:0:0:1", "fe80::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ])
    func normalisesIPv6(_ input: String, _ canonical: String) throws {
        #expect(try #require(IPAddress(input)).description == canonical)
    }

    @Test func ipv6TextFormsOfTheSameAddressAreEqual() throws {
        let a = try #require(IPAddress("2001:0db8:0000:0000:0000:0000:0000:0001"))
        let b = try #require(IPAddress("2001:db8::1"))
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
    }

    @Test(arguments: [
        "",
        "1.2.3",
        "1.2.3.4/24",
        " 1.2.3.4",
        "1.2.3.4 ",
        "256.1.1.1",
        "1.2.3.4.5",
        "a.b.c.d",
        "localhost",
        // glibc's inet_pton refuses leading zeros in IPv4 (no octal ambiguity).
        "01.2.3.4",
        "1.2.3.04",
        "2001:db8::1/64",
        "fe80::1%eth0",
        ":::",
        "2001:db8::1::2",
        "12345::",
        "[::1]",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(IPAddress(text) == nil, "'\(text)' should be rejected")
    }

    /// "Nothing else" (IPAddress.init doc): text after an embedded NUL is not an address.
    @Test func rejectsEmbeddedNUL() {
        #expect(IPAddress("1.2.3.4\u{0}junk") == nil)
        #expect(IPAddress("2001:db8::1\u{0}junk") == nil)
    }

    @Test func ordersIPv4BeforeIPv6() throws {
        let v4High = try #require(IPAddress("255.255.255.255"))
        let v6Low = try #require(IPAddress("::"))
        #expect(v4High < v6Low)
        #expect(!(v6Low < v4High))
    }

    @Test func ordersNumericallyWithinAFamily() throws {
        let addresses = ["10.0.0.10", "10.0.0.9", "9.255.255.255", "2001:db8::1:0", "2001:db8::ffff", "::1", "1.2.3.4"]
            .map { IPAddress($0)! }
        #expect(
            addresses.sorted().map(\.description) == [
                "1.2.3.4", "9.255.255.255", "10.0.0.9", "10.0.0.10", "::1", "2001:db8::ffff", "2001:db8::1:0",
            ]
        )
    }

    @Test func ipv6OrderComparesTheHighHalfFirst() {
        let a = IPAddress.v6(high: 1, low: .max)
        let b = IPAddress.v6(high: 2, low: 0)
        #expect(a < b)
        #expect(!(b < a))
        #expect(!(a < a))
    }

    @Test func bytesAreNetworkOrder() {
        #expect(IPAddress.v4(0x0102_0304).bytes == [1, 2, 3, 4])
        #expect(
            IPAddress.v6(high: 0x0001_0203_0405_0607, low: 0x0809_0A0B_0C0D_0E0F).bytes == Array(0...15)
        )
    }

    @Test func descriptionRoundTrips() throws {
        for text in ["192.0.2.255", "10.1.2.3", "2001:db8:1:2:3:4:5:6", "fe80::aa:bb"] {
            let address = try #require(IPAddress(text))
            #expect(address.description == text)
            #expect(IPAddress(address.description) == address)
        }
    }

    /// (address, unspecified, loopback, multicast, limited broadcast)
    @Test(arguments: [
        ("0.0.0.0", true, false, false, false),
        ("::", true, false, false, false),
        ("0.0.0.1", false, false, false, false),
        ("127.0.0.1", false, true, false, false),
        ("127.255.255.255", false, true, false, false),
        ("126.255.255.255", false, false, false, false),
        ("128.0.0.0", false, false, false, false),
        ("::1", false, true, false, false),
        ("::2", false, false, false, false),
        ("::ffff:127.0.0.1", false, false, false, false),
        ("224.0.0.0", false, false, true, false),
        ("239.255.255.255", false, false, true, false),
        ("223.255.255.255", false, false, false, false),
        ("240.0.0.0", false, false, false, false),
        ("ff00::", false, false, true, false),
        ("ff02::1:ff00:1", false, false, true, false),
        ("feff:ffff::", false, false, false, false),
        ("fe80::1", false, false, false, false),
        ("255.255.255.255", false, false, false, true),
        ("255.255.255.254", false, false, false, false),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false, false, true, false),
    ])
    func addressClasses(_ text: String, unspecified: Bool, loopback: Bool, multicast: Bool, broadcast: Bool) throws {
        let address = try #require(IPAddress(text))
        #expect(address.isUnspecified == unspecified)
        #expect(address.isLoopback == loopback)
        #expect(address.isMulticast == multicast)
        #expect(address.isLimitedBroadcast == broadcast)
    }
}
