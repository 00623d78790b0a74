/// Learned MAC → location for one VNI: open addressing with linear probing in flat arrays, so
/// lookups and updates on the packet path never allocate. Entries age out: an entry not
/// refreshed for `ageLimit` ticks is treated as absent and its slot reused.
///
/// The table starts small (`capacity`: a VNI of a few NICs costs a kilobyte, so thousands of
/// VNIs stay cheap) and grows on demand: `learn` reports the insertion that fills half the
/// slots, and the worker doubles the table after that pass (`resize`, never on the packet
/// path), up to the slots `maximumCapacity` needs; a table below 1/8 full halves again, down
/// to its start. A table at 3/4 load stops learning until it grows, and at its largest for
/// good: the VNI floods unknown destinations, nothing fails. The bound exists because the
/// network side can claim any inner source MAC.
///
/// Aging (`sweep(from:budget:…)`) is resumable: the worker spreads a round over all tables
/// across its passes, a bounded number of slots at a time, so it never pauses for it.
///
/// ```
///  slot: key (MAC + 1, 0 = empty) │ location (Int32) │ lastSeen (tick)
/// ```
/// Deletion uses tombstone-free backward shifting, so probe chains stay short under churn.
public struct MACTable {
    @usableFromInline var keys: UnsafeMutablePointer<UInt64>
    @usableFromInline var locations: UnsafeMutablePointer<Int32>
    @usableFromInline var lastSeen: UnsafeMutablePointer<UInt32>
    @usableFromInline var mask: Int
    // Two 32-bit fields share one word: the struct stays five words. Measured: a sixth word
    // (the maximum as an Int) made the whole local chain 25 % slower (21.5 → 16 Mpps), the
    // VNI's entry in the worker's dictionary no longer being updated in place.
    @usableFromInline var storedCount: Int32 = 0
    /// log2 of the slots the table may grow to.
    @usableFromInline let maximumSlotsLog2: Int32
    @usableFromInline var maximumSlots: Int { 1 << Int(maximumSlotsLog2) }
    public var count: Int { Int(storedCount) }
    /// Entries the table holds before it grows (or, at its maximum, stops learning).
    public var capacity: Int { (mask + 1) * 3 / 4 }

    /// Slots for `entries` at a load of at most 3/4, a power of two.
    static func slots(for entries: Int) -> Int {
        var size = 16
        while size * 3 / 4 < entries { size <<= 1 }
        return size
    }

    /// `capacity` entries before the first growth; at most `maximumCapacity` (default: no
    /// growth).
    public init(capacity: Int, maximumCapacity: Int? = nil) {
        let size = Self.slots(for: capacity)
        mask = size - 1
        maximumSlotsLog2 = Int32(max(size, Self.slots(for: maximumCapacity ?? capacity)).trailingZeroBitCount)
        (keys, locations, lastSeen) = Self.allocateSlots(size)
    }

    static func allocateSlots(_ size: Int) -> (
        UnsafeMutablePointer<UInt64>, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<UInt32>
    ) {
        let keys = UnsafeMutablePointer<UInt64>.allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        let locations = UnsafeMutablePointer<Int32>.allocate(capacity: size)
        locations.initialize(repeating: 0, count: size)
        let lastSeen = UnsafeMutablePointer<UInt32>.allocate(capacity: size)
        lastSeen.initialize(repeating: 0, count: size)
        return (keys, locations, lastSeen)
    }

    /// Frees the storage; the table must not be used afterwards.
    public func deallocate() {
        keys.deallocate()
        locations.deallocate()
        lastSeen.deallocate()
    }

    @inlinable
    static func hash(_ mac: UInt64) -> Int {
        Int(truncatingIfNeeded: (mac &* 0x9E37_79B9_7F4A_7C15) >> 32)
    }

    /// The location of `mac`, or -1 when unknown or aged out.
    @inlinable
    public func lookup(_ mac: UInt64, now: UInt32, ageLimit: UInt32) -> Int32 {
        let key = mac &+ 1
        var slot = Self.hash(mac) & mask
        while true {
            let found = keys[slot]
            if found == 0 { return -1 }
            if found == key { return now &- lastSeen[slot] <= ageLimit ? locations[slot] : -1 }
            slot = (slot &+ 1) & mask
        }
    }

    /// Records that `mac` was seen at `location` now. Returns true when this insertion filled
    /// half the slots: the table wants to grow (the caller asks the worker to, after the pass).
    @inlinable
    @discardableResult
    public mutating func learn(_ mac: UInt64, location: Int32, now: UInt32) -> Bool {
        let key = mac &+ 1
        var slot = Self.hash(mac) & mask
        while true {
            let found = keys[slot]
            if found == key {
                locations[slot] = location
                lastSeen[slot] = now
                return false
            }
            if found == 0 {
                guard Int(storedCount) < (mask + 1) * 3 / 4 else { return false }  // full: flood
                keys[slot] = key
                locations[slot] = location
                lastSeen[slot] = now
                storedCount &+= 1
                return Int(storedCount) == (mask + 1) / 2
            }
            slot = (slot &+ 1) & mask
        }
    }

    /// Slots in use by the table (memory: 16 bytes each).
    public var slotCount: Int { mask + 1 }

    /// Doubles the table when it is half full (unless at its maximum or `growthAllowed` is
    /// false: the worker's budget across VNIs), halves it when below 1/8 full (not below
    /// `minimumCapacity`'s slots). The worker calls it after a pass in which `learn` asked for
    /// growth and after each aging round of the table, never on the packet path: `learn` stays
    /// a fixed-size probe (measured: a growth call inside `learn` halved the switch stage,
    /// 4.2 → 8.9 ns). Within one pass a table still takes a quarter of its slots in new MACs
    /// before it floods. Costs O(slots), which is O(entries): a table is at least 1/8 full or
    /// at its start. Returns the change in slots.
    @discardableResult
    public mutating func resize(minimumCapacity: Int, growthAllowed: Bool = true) -> Int {
        let size = mask + 1
        if Int(storedCount) >= size / 2 {
            guard growthAllowed, size < maximumSlots else { return 0 }
            rehash(to: size * 2)
            return size
        }
        if Int(storedCount) < size / 8, size / 2 >= Self.slots(for: minimumCapacity) {
            rehash(to: size / 2)
            return -size / 2
        }
        return 0
    }

    /// Moves every entry into `size` slots (aged ones too: `sweep` removes those).
    mutating func rehash(to size: Int) {
        let oldSize = mask + 1
        let (oldKeys, oldLocations, oldLastSeen) = (keys, locations, lastSeen)
        (keys, locations, lastSeen) = Self.allocateSlots(size)
        mask = size - 1
        for old in 0..<oldSize where oldKeys[old] != 0 {
            var slot = Self.hash(oldKeys[old] &- 1) & mask
            while keys[slot] != 0 { slot = (slot &+ 1) & mask }
            keys[slot] = oldKeys[old]
            locations[slot] = oldLocations[old]
            lastSeen[slot] = oldLastSeen[old]
        }
        oldKeys.deallocate()
        oldLocations.deallocate()
        oldLastSeen.deallocate()
    }

    /// Removes entries older than `ageLimit` and those whose location matches `forget`
    /// (a deleted NIC), in the whole table. Runs outside the packet path.
    public mutating func sweep(now: UInt32, ageLimit: UInt32, forget: (Int32) -> Bool = { _ in false }) {
        var slot = 0
        while slot <= mask {
            if keys[slot] != 0 && (now &- lastSeen[slot] > ageLimit || forget(locations[slot])) {
                remove(at: slot)
                continue  // the slot now holds a shifted entry: check it again
            }
            slot += 1
        }
    }

    /// Removes entries older than `ageLimit` in at most `budget` slots from `start`; returns the
    /// slot to resume from, or nil when the table's end was reached. An entry that a removal
    /// shifts across the end of the table (backward shifting wraps) waits for the next round;
    /// `lookup` already treats aged entries as absent, so a late sweep only delays reuse.
    public mutating func sweep(from start: Int, budget: Int, now: UInt32, ageLimit: UInt32) -> Int? {
        guard storedCount > 0 else { return nil }
        var slot = start
        var examined = 0
        while slot <= mask {
            guard examined < budget else { return slot }
            examined &+= 1
            if keys[slot] != 0 && now &- lastSeen[slot] > ageLimit {
                remove(at: slot)
                continue  // the slot now holds a shifted entry: check it again
            }
            slot &+= 1
        }
        return nil
    }

    /// Backward-shift deletion (Knuth 6.4, algorithm R).
    mutating func remove(at start: Int) {
        var hole = start
        var probe = (start + 1) & mask
        while keys[probe] != 0 {
            let home = Self.hash(keys[probe] &- 1) & mask
            // Move the entry into the hole if its home is not between the hole and it.
            let distanceHole = (hole - home) & mask
            let distanceProbe = (probe - home) & mask
            if distanceHole < distanceProbe {
                keys[hole] = keys[probe]
                locations[hole] = locations[probe]
                lastSeen[hole] = lastSeen[probe]
                hole = probe
            }
            probe = (probe + 1) & mask
        }
        keys[hole] = 0
        storedCount -= 1
    }

    /// Every live entry (for tests and the status graph).
    public func entries(now: UInt32, ageLimit: UInt32) -> [(mac: UInt64, location: Int32)] {
        (0...mask).compactMap { slot in
            keys[slot] != 0 && now &- lastSeen[slot] <= ageLimit ? (keys[slot] &- 1, locations[slot]) : nil
        }
    }
}
