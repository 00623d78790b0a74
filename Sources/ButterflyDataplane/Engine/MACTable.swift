/// Learned MAC → location for one VNI: open addressing with linear probing in a fixed array,
/// so lookups and updates on the packet path never allocate. Entries age out: an entry not
/// refreshed for `ageLimit` ticks is treated as absent and its slot reused.
///
/// ```
///  slot: key (MAC + 1, 0 = empty) │ location (Int32) │ lastSeen (tick)
/// ```
/// Deletion uses tombstone-free backward shifting, so probe chains stay short under churn.
public struct MACTable {
    @usableFromInline var keys: UnsafeMutablePointer<UInt64>
    @usableFromInline var locations: UnsafeMutablePointer<Int32>
    @usableFromInline var lastSeen: UnsafeMutablePointer<UInt32>
    @usableFromInline let mask: Int
    @usableFromInline var storedCount = 0
    public var count: Int { storedCount }

    /// `capacity` is rounded up to a power of two; the table never holds more than 3/4 of it
    /// (a full table stops learning and floods, it never fails).
    public init(capacity: Int) {
        var size = 16
        while size < capacity * 4 / 3 { size <<= 1 }
        mask = size - 1
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        locations = .allocate(capacity: size)
        locations.initialize(repeating: 0, count: size)
        lastSeen = .allocate(capacity: size)
        lastSeen.initialize(repeating: 0, count: size)
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
                guard storedCount < (mask + 1) * 3 / 4 else { return }
                keys[slot] = key
                locations[slot] = location
                lastSeen[slot] = now
                storedCount &+= 1
                return
            }
            slot = (slot &+ 1) & mask
        }
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
