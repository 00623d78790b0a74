import Testing

@testable import ButterflyDataplane

/// The bounded connection table: lookups, backward-shift deletion under colliding probe runs
/// (checked against a Dictionary), expiry, eviction when full, per-slot counts, zones.
@Suite struct ConnectionTableTests {
    static func key(_ number: Int, zone: UInt32 = 1, ipProtocol: UInt8 = 6) -> ConnectionKey {
        ConnectionKey(
            zone: zone,
            ipProtocol: ipProtocol,
            local: RuleMatcher.key(ipv4: 0x0A00_0000 | UInt32(truncatingIfNeeded: number >> 16)),
            remote: UInt128(0x2001_0DB8) << 96 | UInt128(number),
            localPort: UInt16(truncatingIfNeeded: number),
            remotePort: 443
        )
    }

    @discardableResult
    static func insert(
        _ table: ConnectionTable,
        _ key: ConnectionKey,
        hash: UInt32? = nil,
        slot: Int = 0,
        state: ConnectionState = .established,
        now: UInt32 = 100
    ) -> Int {
        table.insert(
            key,
            hash: hash ?? key.hash,
            slot: slot,
            state: state,
            origin: .fromGuest,
            generation: 1,
            now: now
        )
    }

    static func find(_ table: ConnectionTable, _ key: ConnectionKey, hash: UInt32? = nil, now: UInt32 = 100) -> Int {
        table.find(key, hash: hash ?? key.hash, now: now)
    }

    @Test func insertFindUpdateRemove() {
        let table = ConnectionTable(capacity: 16)
        #expect(table.count == 0)
        #expect(Self.find(table, Self.key(1)) == -1)
        let entry = Self.insert(table, Self.key(1), slot: 2, state: .synSent)
        #expect(entry >= 0)
        #expect(table.count == 1)
        #expect(Self.find(table, Self.key(1)) == entry)
        #expect(Self.find(table, Self.key(2)) == -1)
        #expect(table.entries[entry].key == Self.key(1))
        #expect(table.entries[entry].state == .synSent)
        #expect(table.entries[entry].origin == .fromGuest)
        #expect(table.entries[entry].generation == 1)
        #expect(table.entries[entry].slot == 2)
        #expect(table.entries[entry].expires == 100 + 120)
        table.update(entry, state: .established, now: 150)
        #expect(table.entries[entry].state == .established)
        #expect(table.entries[entry].expires == 150 + 432_000)
        table.remove(entry)
        #expect(table.count == 0)
        #expect(Self.find(table, Self.key(1)) == -1)
        #expect(table.countBySlot[2] == 0)
    }

    @Test func everyKeyFieldTellsConnectionsApart() {
        let table = ConnectionTable(capacity: 16)
        let base = Self.key(1)
        var variants = [base]
        var other = base
        other.local += 1
        variants.append(other)
        other = base
        other.remote += 1
        variants.append(other)
        other = base
        other.localPort &+= 1
        variants.append(other)
        other = base
        other.remotePort &+= 1
        variants.append(other)
        other = base
        other.ipProtocol = 17
        variants.append(other)
        other = base
        other.zone = 2
        variants.append(other)
        // The same hash for all: only the key comparison separates them.
        let entries = variants.map { Self.insert(table, $0, hash: 5) }
        for (variant, entry) in zip(variants, entries) {
            #expect(Self.find(table, variant, hash: 5) == entry)
        }
        #expect(Set(entries).count == variants.count)
        // The hash itself tells different keys apart.
        #expect(Set(variants.map(\.hash)).count == variants.count)
    }

    @Test func zonesIsolateAndEntriesOfZoneListsOneZone() {
        let table = ConnectionTable(capacity: 64)
        for number in 0..<10 { Self.insert(table, Self.key(number, zone: 1), slot: 0) }
        for number in 0..<5 { Self.insert(table, Self.key(number, zone: 2), slot: 1) }
        Self.insert(table, Self.key(99, zone: 2), slot: 1, state: .unreplied, now: 0)  // expires at 60
        #expect(table.entries(ofZone: 1, now: 100).count == 10)
        #expect(table.entries(ofZone: 2, now: 100).count == 5, "the expired one is not listed")
        #expect(table.entries(ofZone: 2, now: 50).count == 6)
        #expect(table.entries(ofZone: 3, now: 100).isEmpty)
        #expect(table.entries(ofZone: 2, now: 100).allSatisfy { $0.key.zone == 2 && $0.slot == 1 })
        let zoneOne = Self.find(table, Self.key(3, zone: 1))
        let zoneTwo = Self.find(table, Self.key(3, zone: 2))
        #expect(zoneOne >= 0 && zoneTwo >= 0 && zoneOne != zoneTwo)
        table.remove(zoneTwo)
        #expect(Self.find(table, Self.key(3, zone: 1)) == zoneOne)
        #expect(Self.find(table, Self.key(3, zone: 2)) == -1)
    }

    /// Random inserts and removes with hashes drawn from a handful of values (long probe runs
    /// that collide, overlap and wrap around the end of the index), checked against a
    /// Dictionary after every step, every key.
    @Test func collidingProbeRunsAgreeWithADictionary() {
        var generator = SeededGenerator(seed: 42)
        let capacity = 48
        let table = ConnectionTable(capacity: capacity)
        let slots = table.indexMask + 1
        // Homes at both ends of the index (runs wrap), in the middle, and anywhere.
        let homes: [UInt32] = [0, 1, 2, UInt32(slots - 3), UInt32(slots - 2), UInt32(slots - 1), UInt32(slots / 2)]
        var model: [Int: (hash: UInt32, entry: Int, slot: Int)] = [:]
        var perSlot = [Int](repeating: 0, count: 4)
        for step in 0..<20_000 {
            let number = Int.random(in: 0..<96, using: &generator)
            if let known = model[number], Bool.random(using: &generator) {
                table.remove(known.entry)
                model[number] = nil
                perSlot[known.slot] -= 1
            } else if model[number] == nil && model.count < capacity {
                let hash =
                    Int.random(in: 0..<4, using: &generator) == 0
                    ? UInt32.random(in: .min ... .max, using: &generator)
                    : homes.randomElement(using: &generator)! &+ UInt32(slots)
                        &* UInt32.random(in: 0..<4, using: &generator)
                let slot = Int.random(in: 0..<4, using: &generator)
                let entry = Self.insert(table, Self.key(number), hash: hash, slot: slot)
                #expect(entry >= 0)
                model[number] = (hash, entry, slot)
                perSlot[slot] += 1
            }
            #expect(table.count == model.count)
            for number in 0..<96 {
                let expected = model[number]
                // Absent keys are looked up under every hash in play, so a lookup that stops
                // too early or runs past an empty index slot would show.
                let hash = expected?.hash ?? homes[number % homes.count]
                let found = Self.find(table, Self.key(number), hash: hash)
                if found != (expected?.entry ?? -1) {
                    Issue.record("step \(step): key \(number) found at \(found), expected \(expected?.entry ?? -1)")
                    return
                }
            }
            for slot in 0..<4 where slot < table.countBySlot.count {
                #expect(Int(table.countBySlot[slot]) == perSlot[slot])
            }
        }
        // Every index slot holds nothing or a live entry, and each live entry exactly once.
        var indexed: [Int] = []
        for position in 0..<slots where table.index[position] != 0 { indexed.append(Int(table.index[position]) - 1) }
        #expect(indexed.sorted() == model.values.map(\.entry).sorted())
    }

    @Test func findIgnoresExpiredEntriesAndInsertReplacesThem() {
        let table = ConnectionTable(capacity: 16)
        let entry = Self.insert(table, Self.key(1), state: .unreplied, now: 100)  // TCP unreplied: 60 s
        #expect(Self.find(table, Self.key(1), now: 160) == entry, "alive through its last second")
        #expect(Self.find(table, Self.key(1), now: 161) == -1)
        // A new connection with the same key replaces the expired entry instead of adding one.
        let again = Self.insert(table, Self.key(1), state: .synSent, now: 200)
        #expect(again >= 0)
        #expect(table.count == 1)
        #expect(Self.find(table, Self.key(1), now: 200) == again)
        #expect(table.entries[again].state == .synSent)
    }

    @Test func collectRemovesExpiredEntriesWithinItsBudget() {
        let table = ConnectionTable(capacity: 256)
        for number in 0..<100 { Self.insert(table, Self.key(number), slot: 1, state: .closed, now: 0) }  // until 10
        for number in 100..<150 { Self.insert(table, Self.key(number), slot: 1, now: 0) }
        #expect(table.collect(now: 10, budget: 1000) { _, _ in true } == 0, "none expired yet")
        var passes = 0
        var removed = 0
        while removed < 100 {
            let removedNow = table.collect(now: 11, budget: 16) { _, _ in true }
            #expect(removedNow <= 16)
            removed += removedNow
            passes += 1
            #expect(passes <= 150 / 16 + 1)
        }
        #expect(table.count == 50)
        #expect(table.countBySlot[1] == 50)
        for number in 100..<150 { #expect(Self.find(table, Self.key(number), now: 11) >= 0) }
        #expect(table.collect(now: 11, budget: 1000) { _, _ in true } == 0)
        // Entries of a zone that is no longer live go too, expired or not.
        #expect(table.collect(now: 11, budget: 1000) { _, zone in zone != 1 } == 50)
        #expect(table.count == 0)
        #expect(table.collect(now: 11, budget: 1000) { _, _ in true } == 0)
    }

    @Test func aFullTableEvictsAnUnassuredEntry() {
        let table = ConnectionTable(capacity: 8)
        for number in 0..<7 { Self.insert(table, Self.key(number), slot: 0, state: .established) }
        Self.insert(table, Self.key(7), slot: 1, state: .synSent)
        #expect(table.count == 8)
        let entry = Self.insert(table, Self.key(8), slot: 0, state: .synSent)
        #expect(entry >= 0)
        #expect(table.evictions == 1)
        #expect(table.count == 8)
        #expect(Self.find(table, Self.key(7)) == -1, "the unanswered opening made room")
        #expect(Self.find(table, Self.key(8)) == entry)
        for number in 0..<7 { #expect(Self.find(table, Self.key(number)) >= 0) }
        #expect(table.countBySlot == [8, 0])
    }

    @Test func aFullTableOfEstablishedConnectionsRefuses() {
        let table = ConnectionTable(capacity: 8)
        for number in 0..<8 { Self.insert(table, Self.key(number), state: .established) }
        #expect(Self.insert(table, Self.key(8), state: .synSent) == -1)
        #expect(table.count == 8)
        #expect(table.evictions == 0)
        for number in 0..<8 { #expect(Self.find(table, Self.key(number)) >= 0) }
        // Expired established entries may go.
        let later: UInt32 = 100 + 432_001
        #expect(Self.insert(table, Self.key(8), state: .synSent, now: later) >= 0)
        #expect(table.evictions == 1)
        #expect(Self.find(table, Self.key(8), now: later) >= 0)
    }

    @Test func timeWaitAndClosedAreEvictable() {
        for state: ConnectionState in [.timeWait, .closed, .unreplied, .synReceived] {
            let table = ConnectionTable(capacity: 4)
            for number in 0..<3 { Self.insert(table, Self.key(number), state: .established) }
            Self.insert(table, Self.key(3), state: state)
            #expect(Self.insert(table, Self.key(4), state: .synSent) >= 0, "\(state)")
            #expect(Self.find(table, Self.key(3)) == -1, "\(state)")
        }
        for state: ConnectionState in [.replied, .finWaitOrigin, .finWaitReply, .lastAck] {
            let table = ConnectionTable(capacity: 4)
            for number in 0..<3 { Self.insert(table, Self.key(number), state: .established) }
            Self.insert(table, Self.key(3), state: state)
            #expect(Self.insert(table, Self.key(4), state: .synSent) == -1, "\(state)")
        }
    }

    @Test func freedEntriesAreReusedWithoutEviction() {
        let table = ConnectionTable(capacity: 32)
        var entries = (0..<32).map { Self.insert(table, Self.key($0)) }
        for index in stride(from: 0, to: 32, by: 2) { table.remove(entries[index]) }
        for index in stride(from: 0, to: 32, by: 2) { entries[index] = Self.insert(table, Self.key(100 + index)) }
        #expect(table.evictions == 0)
        #expect(table.count == 32)
        #expect(Set(entries) == Set(0..<32), "the same 32 entries, no more")
        for index in 0..<32 {
            #expect(Self.find(table, Self.key(index % 2 == 0 ? 100 + index : index)) == entries[index])
        }
    }

    @Test func countBySlotFollowsInsertRemoveEvictAndCollect() {
        let table = ConnectionTable(capacity: 4)
        let a = Self.insert(table, Self.key(1), slot: 3, state: .synSent)
        Self.insert(table, Self.key(2), slot: 0, state: .established)
        #expect(table.countBySlot == [1, 0, 0, 1])
        table.remove(a)
        #expect(table.countBySlot == [1, 0, 0, 0])
        Self.insert(table, Self.key(3), slot: 2, state: .unreplied, now: 0)
        Self.insert(table, Self.key(4), slot: 2, state: .established)
        Self.insert(table, Self.key(5), slot: 1, state: .established)
        #expect(table.countBySlot == [1, 1, 2, 0])
        // Full: the unreplied entry of slot 2 is evicted for one of slot 3.
        Self.insert(table, Self.key(6), slot: 3, state: .synSent)
        #expect(table.countBySlot == [1, 1, 1, 1])
        table.collect(now: 100, budget: 100) { slot, _ in slot != 1 }
        #expect(table.countBySlot == [1, 0, 1, 1])
        #expect(table.countBySlot.reduce(0, +) == Int32(table.count))
    }

    @Test func aMillionConnections() {
        // Filled completely, in debug builds too (about a second unoptimised): the index and
        // the entries are reserved up front, so only the pages touched cost memory.
        let capacity = 1_000_000
        let filled = capacity
        let table = ConnectionTable(capacity: capacity)
        #expect(table.capacity == capacity)
        for number in 0..<filled {
            let key = Self.key(number, zone: UInt32(number & 7))
            guard
                table.insert(
                    key,
                    hash: key.hash,
                    slot: number & 7,
                    state: .established,
                    origin: .toGuest,
                    generation: 1,
                    now: 1
                ) >= 0
            else {
                Issue.record("insert \(number) refused")
                return
            }
        }
        #expect(table.count == filled)
        #expect(table.evictions == 0)
        var missing = 0
        for number in stride(from: 0, to: filled, by: 7) {
            let key = Self.key(number, zone: UInt32(number & 7))
            if table.find(key, hash: key.hash, now: 1) < 0 { missing += 1 }
        }
        #expect(missing == 0)
        #expect(Self.find(table, Self.key(filled + 1)) == -1)
        #expect(table.countBySlot.map(Int.init).reduce(0, +) == filled)
    }
}
