/// Learned MAC → location for one VNI: open addressing with linear probing in flat arrays, so
/// lookups and updates on the packet path never allocate. Entries age out: an entry not
/// refreshed for `ageLimit` ticks is treated as absent and its slot reused.
///
/// The table starts at `capacity` and doubles when 3/4 full, up to `maximumCapacity` (the
/// only allocation on the packet path, amortized: a VNI that learned its MACs never allocates
/// again). At the maximum it stops learning and the VNI floods unknown destinations; nothing
/// fails. The bound exists because the network side can claim any inner source MAC.
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
    @usableFromInline var storedCount = 0
    /// Slots the table may grow to.
    @usableFromInline let maximumSlots: Int
    public var count: Int { storedCount }
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
        maximumSlots = max(size, Self.slots(for: maximumCapacity ?? capacity))
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

    /// Records that `mac` was seen at `location` now.
    @inlinable
    public mutating func learn(_ mac: UInt64, location: Int32, now: UInt32) {
        let key = mac &+ 1
        var slot = Self.hash(mac) & mask
        while true {
            let found = keys[slot]
            if found == key {
                locations[slot] = location
                lastSeen[slot] = now
                return
            }
            if found == 0 {
                if storedCount >= (mask + 1) * 3 / 4 {
                    guard mask + 1 < maximumSlots else { return }  // at the maximum: flood
                    grow()
                    learn(mac, location: location, now: now)
                    return
                }
                keys[slot] = key
                locations[slot] = location
                lastSeen[slot] = now
                storedCount &+= 1
                return
            }
            slot = (slot &+ 1) & mask
        }
    }

    /// Doubles the slots and re-inserts every entry (aged ones too: `sweep` removes those).
    @usableFromInline
    mutating func grow() {
        let oldSize = mask + 1
        let (oldKeys, oldLocations, oldLastSeen) = (keys, locations, lastSeen)
        let size = oldSize * 2
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
    /// (a deleted NIC). Runs outside the packet path (once per aging tick).
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
