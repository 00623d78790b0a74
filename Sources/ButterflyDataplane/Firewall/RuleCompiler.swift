/// Builds a `RuleMatcher`'s flat tables from rules (control thread). The cost is
/// O(R log R) for R rules plus the size of what it emits: one sort of packed port events per
/// protocol, an active-rule list kept sorted as the sweep crosses each boundary, and a hash of
/// every emitted address set so that equal sets are stored once. Nothing is allocated per
/// interval: ranges are merged in a reused scratch buffer and appended to the output in place.
struct RuleCompiler {
    /// (low, high) pairs of every set, back to back.
    var ranges: [UInt128] = []
    /// Per set: first pair index and pair count.
    var sets: [(first: Int32, count: Int32)] = []
    var protocols = [(first: Int32, count: Int32)](repeating: (0, 0), count: 257)
    var intervalStarts: [UInt16] = []
    var intervalSets: [Int32] = []

    /// Set index of the first set with each content hash; later sets with the same hash are
    /// chained through `nextWithSameHash`.
    private var setsByHash: [UInt64: Int32] = [:]
    private var nextWithSameHash: [Int32] = []
    private var scratch: [ClosedRange<UInt128>] = []

    /// Empty tables, for `RuleMatcher.adding` to fill.
    init() {}

    /// Stores a merged set (no deduplication); -1 for no address.
    mutating func store(_ merged: [ClosedRange<UInt128>]) -> Int32 {
        guard !merged.isEmpty else { return -1 }
        let index = Int32(sets.count)
        sets.append((Int32(ranges.count / 2), Int32(merged.count)))
        for range in merged {
            ranges.append(range.lowerBound)
            ranges.append(range.upperBound)
        }
        return index
    }

    init(_ entries: RuleMatcher.RuleList) {
        // Rules by protocol slot (256 = any), in input order: a counting sort.
        var slotStart = [Int](repeating: 0, count: 258)
        for slot in entries.slots { slotStart[Int(slot) + 1] += 1 }
        for slot in 0..<257 { slotStart[slot + 1] += slotStart[slot] }
        var bySlot = [Int32](repeating: 0, count: entries.count)
        var fill = slotStart
        for (index, slot) in entries.slots.enumerated() {
            bySlot[fill[Int(slot)]] = Int32(index)
            fill[Int(slot)] += 1
        }
        var events: [UInt64] = []
        var active: [Int32] = []
        for slot in 0...256 where slotStart[slot] < slotStart[slot + 1] {
            let rules = bySlot[slotStart[slot]..<slotStart[slot + 1]]
            let first = Int32(intervalStarts.count)
            if slot == 256 || !RuleMatcher.hasPorts(UInt8(slot)) {
                // No ports: one interval covering everything.
                intervalStarts.append(0)
                intervalSets.append(internSet(rules, entries))
            } else {
                compilePorts(rules, entries, events: &events, active: &active)
            }
            protocols[slot] = (first, Int32(intervalStarts.count) - first)
        }
    }

    /// Sweep line over port boundaries: each elementary interval gets the union of the peers
    /// of the rules covering it; adjacent intervals with the same set become one.
    ///
    /// An event packs (port 0…65536) << 33 | opens << 32 | rule, so one integer sort orders
    /// them by port with the rules leaving an interval before those entering it.
    private mutating func compilePorts(
        _ rules: ArraySlice<Int32>,
        _ entries: RuleMatcher.RuleList,
        events: inout [UInt64],
        active: inout [Int32]
    ) {
        events.removeAll(keepingCapacity: true)
        active.removeAll(keepingCapacity: true)
        for rule in rules {
            let ports = entries.ports[Int(rule)]
            events.append(UInt64(ports.lowerBound) << 33 | 1 << 32 | UInt64(rule))
            events.append(UInt64(Int(ports.upperBound) + 1) << 33 | UInt64(rule))
        }
        events.sort()
        var previous: Int32 = -2
        var next = 0
        var port = 0
        while port <= 65535 {
            while next < events.count && Int(events[next] >> 33) == port {
                let rule = Int32(truncatingIfNeeded: events[next])
                var low = 0
                var high = active.count
                while low < high {
                    let middle = (low + high) >> 1
                    if active[middle] < rule { low = middle + 1 } else { high = middle }
                }
                if events[next] & (1 << 32) != 0 { active.insert(rule, at: low) } else { active.remove(at: low) }
                next += 1
            }
            let set = active.isEmpty ? -1 : internSet(active[...], entries)
            if set != previous {
                intervalStarts.append(UInt16(port))
                intervalSets.append(set)
                previous = set
            }
            // The next boundary (65536 past the last one).
            port = next < events.count ? Int(events[next] >> 33) : 65536
        }
    }

    /// The index of the set holding the merged peers of `rules`, stored once per distinct
    /// content; -1 when they have no address at all.
    private mutating func internSet(_ rules: ArraySlice<Int32>, _ entries: RuleMatcher.RuleList) -> Int32 {
        scratch.removeAll(keepingCapacity: true)
        for rule in rules { scratch += entries.peers(of: Int(rule)) }
        if scratch.isEmpty { return -1 }
        scratch.sort { $0.lowerBound < $1.lowerBound }
        // Merge into the output directly; drop it again if an equal set exists.
        let start = ranges.count
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        RuleMatcher.mergeSorted(scratch) { low, high in append(low, high, hash: &hash) }
        let count = (ranges.count - start) / 2
        var candidate = setsByHash[hash] ?? -1
        while candidate >= 0 {
            let existing = sets[Int(candidate)]
            if Int(existing.count) == count
                && ranges[Int(existing.first) * 2..<Int(existing.first) * 2 + count * 2] == ranges[start...]
            {
                ranges.removeSubrange(start...)
                return candidate
            }
            candidate = nextWithSameHash[Int(candidate)]
        }
        let index = Int32(sets.count)
        sets.append((Int32(start / 2), Int32(count)))
        nextWithSameHash.append(setsByHash[hash] ?? -1)
        setsByHash[hash] = index
        return index
    }

    /// Appends one merged range to the output and folds it into the set's content hash.
    private mutating func append(_ low: UInt128, _ high: UInt128, hash: inout UInt64) {
        ranges.append(low)
        ranges.append(high)
        for word in 0..<4 {
            let value = word < 2 ? low : high
            hash = (hash ^ UInt64(truncatingIfNeeded: value >> (64 * UInt128(word & 1)))) &* 0x0000_0100_0000_01b3
            hash ^= hash >> 29
        }
    }
}
