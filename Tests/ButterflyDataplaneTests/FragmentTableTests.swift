import ButterflyDataplane
import Testing

/// The datagrams whose first fragment passed: only the exact identity, only for a while.
@Suite struct FragmentTableTests {
    struct Datagram {
        var zone: UInt32 = 1
        var toGuest = true
        var ipProtocol: UInt8 = 17
        var source = peer("192.0.2.1")
        var destination = peer("203.0.113.10")
        var identification: UInt32 = 0x1234
    }

    static func allow(_ table: FragmentTable, _ datagram: Datagram, now: UInt32) {
        table.allow(
            zone: datagram.zone,
            toGuest: datagram.toGuest,
            ipProtocol: datagram.ipProtocol,
            source: datagram.source,
            destination: datagram.destination,
            identification: datagram.identification,
            now: now
        )
    }

    static func allows(_ table: FragmentTable, _ datagram: Datagram, now: UInt32) -> Bool {
        table.allows(
            zone: datagram.zone,
            toGuest: datagram.toGuest,
            ipProtocol: datagram.ipProtocol,
            source: datagram.source,
            destination: datagram.destination,
            identification: datagram.identification,
            now: now
        )
    }

    @Test func onlyTheExactDatagramAndOnlyForItsLifetime() {
        let table = FragmentTable(size: 64)
        let datagram = Datagram()
        #expect(!Self.allows(table, datagram, now: 100))
        Self.allow(table, datagram, now: 100)
        #expect(Self.allows(table, datagram, now: 100))
        #expect(Self.allows(table, datagram, now: 100 + table.lifetime))
        #expect(!Self.allows(table, datagram, now: 101 + table.lifetime))
        var other = datagram
        other.zone = 2
        #expect(!Self.allows(table, other, now: 100))
        other = datagram
        other.toGuest = false
        #expect(!Self.allows(table, other, now: 100))
        other = datagram
        other.ipProtocol = 6
        #expect(!Self.allows(table, other, now: 100))
        other = datagram
        other.source += 1
        #expect(!Self.allows(table, other, now: 100))
        other = datagram
        other.destination += 1
        #expect(!Self.allows(table, other, now: 100))
        other = datagram
        other.identification += 1
        #expect(!Self.allows(table, other, now: 100))
    }

    @Test func aCollidingDatagramReplacesTheOlderOneAndNeverAdmitsIt() {
        // Direct-mapped: with one slot every datagram collides; losing one only drops.
        let table = FragmentTable(size: 1)
        var first = Datagram()
        var second = Datagram()
        second.identification = 99
        Self.allow(table, first, now: 0)
        Self.allow(table, second, now: 0)
        #expect(!Self.allows(table, first, now: 0))
        #expect(Self.allows(table, second, now: 0))
        first.identification = 99
        first.zone = 5
        #expect(!Self.allows(table, first, now: 0), "same identification, other zone")
    }

    @Test func manyDatagramsInALargeTable() {
        let table = FragmentTable()
        var generator = SeededGenerator(seed: 3)
        var datagrams: [Datagram] = []
        for _ in 0..<200 {
            var datagram = Datagram()
            datagram.identification = UInt32.random(in: .min ... .max, using: &generator)
            datagram.source = RuleMatcher.key(ipv4: UInt32.random(in: .min ... .max, using: &generator))
            datagrams.append(datagram)
            Self.allow(table, datagram, now: 0)
        }
        // A few may have been replaced by a collision; most are still there, none is wrong.
        let kept = datagrams.filter { Self.allows(table, $0, now: 0) }.count
        #expect(kept >= 180)
        var stranger = Datagram()
        stranger.identification = 7
        #expect(!Self.allows(table, stranger, now: 0))
    }
}
