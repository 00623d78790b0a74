import Testing

@testable import ButterflyDataplane

@Suite struct MACTableTests {
    @Test func learnsLooksUpAndAges() {
        var table = MACTable(capacity: 64)
        defer { table.deallocate() }
        table.learn(0x5254_0000_0001, location: 3, now: 100)
        #expect(table.lookup(0x5254_0000_0001, now: 100, ageLimit: 300) == 3)
        #expect(table.lookup(0x5254_0000_0002, now: 100, ageLimit: 300) == -1)
        table.learn(0x5254_0000_0001, location: 5, now: 200)  // moved
        #expect(table.lookup(0x5254_0000_0001, now: 200, ageLimit: 300) == 5)
        #expect(table.lookup(0x5254_0000_0001, now: 501, ageLimit: 300) == -1, "aged out")
        table.sweep(now: 501, ageLimit: 300)
        #expect(table.count == 0)
    }

    @Test func sweepForgetsADeletedNICsEntries() {
        var table = MACTable(capacity: 64)
        defer { table.deallocate() }
        for mac in UInt64(1)...20 { table.learn(mac, location: Int32(mac % 2), now: 10) }
        table.sweep(now: 10, ageLimit: 300, forget: { $0 == 1 })
        #expect(table.count == 10)
        for mac in UInt64(1)...20 {
            #expect(table.lookup(mac, now: 10, ageLimit: 300) == (mac % 2 == 0 ? 0 : -1))
        }
    }

    /// Random learning, moving and forgetting against a dictionary: backward-shift deletion
    /// and growth must never lose or invent an entry.
    @Test func agreesWithADictionaryUnderChurnAndGrowth() {
        var table = MACTable(capacity: 16, maximumCapacity: 10_000)
        defer { table.deallocate() }
        var model: [UInt64: Int32] = [:]
        var generator = SystemRandomNumberGenerator()
        for round in 0..<200 {
            for _ in 0..<50 {
                // Few distinct MACs with colliding low bits, so probe chains form.
                let mac = UInt64.random(in: 0..<600, using: &generator) << 16 | 0x5254
                let location = Int32.random(in: 0..<8, using: &generator)
                table.learn(mac, location: location, now: 1)
                table.resize(minimumCapacity: 16)  // as often as it takes, so the model never floods
                model[mac] = location
            }
            if round % 10 == 9 {
                let gone = Int32.random(in: 0..<8, using: &generator)
                table.sweep(now: 1, ageLimit: 300, forget: { $0 == gone })
                model = model.filter { $0.value != gone }
            }
            #expect(table.count == model.count)
        }
        for (mac, location) in model { #expect(table.lookup(mac, now: 1, ageLimit: 300) == location) }
        #expect(table.capacity >= model.count)
    }

    @Test func growsFromItsStartUpToItsMaximumThenStopsLearning() {
        var table = MACTable(capacity: 16, maximumCapacity: 1000)
        defer { table.deallocate() }
        #expect(table.capacity == 24)  // 32 slots at 3/4
        // Without a tick, a full table learns no more (it floods).
        for mac in UInt64(1)...30 { table.learn(mac, location: Int32(mac & 7), now: 1) }
        #expect(table.count == 24)
        let grew = table.resize(minimumCapacity: 16)
        #expect(grew == 32)
        #expect(table.capacity == 48)
        // With ticks between bursts, it grows as it fills.
        for mac in UInt64(1)...900 {
            table.learn(mac, location: Int32(mac & 7), now: 1)
            if mac % 8 == 0 { table.resize(minimumCapacity: 16) }
        }
        #expect(table.count == 900)
        #expect(table.capacity >= 900)
        for mac in UInt64(1)...900 { #expect(table.lookup(mac, now: 1, ageLimit: 300) == Int32(mac & 7)) }
        // Past the maximum: new MACs are not learned (the VNI floods them), known ones stay.
        for mac in UInt64(901)...3000 {
            table.learn(mac, location: 1, now: 1)
            table.resize(minimumCapacity: 16)
        }
        #expect(table.count == table.capacity)
        #expect(table.capacity < 2000)
        for mac in UInt64(1)...900 { #expect(table.lookup(mac, now: 1, ageLimit: 300) == Int32(mac & 7)) }
    }

    @Test func shrinksBackWhenMostEntriesAgedOut() {
        var table = MACTable(capacity: 16, maximumCapacity: 1000)
        defer { table.deallocate() }
        for mac in UInt64(1)...500 {
            table.learn(mac, location: 0, now: mac < 490 ? 1 : 400)
            table.resize(minimumCapacity: 16)
        }
        let grown = table.slotCount
        #expect(grown >= 1024)
        table.sweep(now: 400, ageLimit: 300)  // 489 entries age out, 11 stay
        #expect(table.count == 11)
        while table.resize(minimumCapacity: 16) < 0 {}
        #expect(table.slotCount == 64, "halved while below 1/8 full: 11 entries fit 64 slots")
        for mac in UInt64(490)...500 { #expect(table.lookup(mac, now: 400, ageLimit: 300) == 0) }
        // Growth can be refused (the worker's budget across VNIs).
        for mac in UInt64(1000)...1020 { table.learn(mac, location: 1, now: 400) }
        #expect(table.count >= 32, "half of 64: would grow")
        #expect(table.resize(minimumCapacity: 16, growthAllowed: false) == 0)
        #expect(table.slotCount == 64)
    }

    @Test func withoutAMaximumItKeepsItsSize() {
        var table = MACTable(capacity: 16)
        defer { table.deallocate() }
        for mac in UInt64(1)...100 {
            table.learn(mac, location: 0, now: 1)
            let grew = table.resize(minimumCapacity: 16)
            #expect(grew == 0)
        }
        #expect(table.count == 24)
        #expect(table.capacity == 24)
    }

    @Test func learnAsksToGrowOnceWhenHalfFull() {
        var table = MACTable(capacity: 48, maximumCapacity: 1024)
        defer { table.deallocate() }
        #expect(table.slotCount == 64)
        var asks: [Int] = []
        for mac in UInt64(1)...40 where table.learn(mac, location: 0, now: 1) { asks.append(table.count) }
        #expect(asks == [32], "the insertion that fills half of 64 slots, once")
        let refreshAsks = table.learn(1, location: 2, now: 2)
        #expect(!refreshAsks, "a refresh never asks")
        #expect(table.resize(minimumCapacity: 48) == 64)
        #expect(table.slotCount == 128)
        for mac in UInt64(1)...40 { #expect(table.lookup(mac, now: 2, ageLimit: 300) >= 0) }
    }

    @Test func resumableSweepSpreadsARoundOverCalls() {
        var table = MACTable(capacity: 1000)
        defer { table.deallocate() }
        for mac in UInt64(1)...1000 { table.learn(mac, location: 0, now: mac % 2 == 0 ? 10 : 500) }
        var calls = 0
        var next: Int? = 0
        while let start = next {
            next = table.sweep(from: start, budget: 256, now: 600, ageLimit: 300)
            calls += 1
        }
        #expect(calls > 2, "\(table.slotCount) slots in steps of at most 256")
        // The even MACs aged out; a shifted entry that wrapped past the end waits a round.
        _ = table.sweep(from: 0, budget: .max, now: 600, ageLimit: 300)
        #expect(table.count == 500)
        for mac in UInt64(1)...1000 {
            #expect(table.lookup(mac, now: 600, ageLimit: 300) == (mac % 2 == 0 ? -1 : 0))
        }
        #expect(table.sweep(from: 0, budget: 1, now: 600, ageLimit: 300) == 1, "one slot per budget unit")
    }

    @Test func anEmptyTableCostsOneStep() {
        var table = MACTable(capacity: 1 << 16)
        defer { table.deallocate() }
        #expect(table.sweep(from: 0, budget: 1, now: 1, ageLimit: 300) == nil)
    }

    @Test func switchesGrowOnRequestWithinTheBudgetAndAgeInSteps() {
        let switches = VNISwitches(capacity: 16)
        let minimum = 48
        for vni in UInt32(0)..<8 {
            _ = switches.join(vni: vni, slot: Int(vni)) { MACTable(capacity: minimum, maximumCapacity: 4096) }
        }
        #expect(switches.totalSlots == 8 * 64)
        let index = switches.index(of: 3)
        let table = switches.storage + Int(index)
        for mac in UInt64(1)...32 where table.pointee.table.learn(mac, location: 3, now: 1) {
            switches.requestGrowth(index)
        }
        #expect(switches.growthRequestCount == 1)
        // A budget of 8 * 64 + 64 slots: one doubling fits, a second does not.
        switches.growRequested(minimumCapacity: minimum, slotBudget: 8 * 64 + 64)
        #expect(table.pointee.table.slotCount == 128)
        #expect(switches.totalSlots == 8 * 64 + 64)
        for mac in UInt64(33)...64 where table.pointee.table.learn(mac, location: 3, now: 1) {
            switches.requestGrowth(index)
        }
        switches.growRequested(minimumCapacity: minimum, slotBudget: 8 * 64 + 64)
        #expect(table.pointee.table.slotCount == 128, "the budget holds")

        // Aging: every entry is old; a budget of 100 slots takes several calls for the round,
        // and the emptied table halves back to its start.
        var calls = 1
        while !switches.age(now: 1000, ageLimit: 300, budget: 100, minimumCapacity: minimum, slotBudget: 1 << 20) {
            calls += 1
        }
        #expect(calls > 1)
        #expect(table.pointee.table.count == 0)
        #expect(table.pointee.table.slotCount == 64)
        #expect(switches.totalSlots == 8 * 64)

        // A switch that goes takes its slots and any queued request with it.
        switches.requestGrowth(index)
        switches.leave(vni: 3, slot: 3, now: 1000, ageLimit: 300)
        #expect(switches.growthRequestCount == 0)
        #expect(switches.totalSlots == 7 * 64)
    }
}
