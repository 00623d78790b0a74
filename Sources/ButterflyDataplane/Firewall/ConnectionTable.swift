#if canImport(Glibc)
    import Glibc
#endif

/// A connection as the table keys it: seen from one NIC (its zone), so the same key matches
/// both directions without sorting addresses. `local` is the NIC's side.
public struct ConnectionKey: Equatable, Sendable {
    public var local: UInt128
    public var remote: UInt128
    public var localPort: UInt16
    public var remotePort: UInt16
    public var ipProtocol: UInt8
    /// The NIC's zone: unique per NIC for the worker's lifetime, never reused.
    public var zone: UInt32

    @inlinable
    public init(zone: UInt32, ipProtocol: UInt8, local: UInt128, remote: UInt128, localPort: UInt16, remotePort: UInt16)
    {
        self.zone = zone
        self.ipProtocol = ipProtocol
        self.local = local
        self.remote = remote
        self.localPort = localPort
        self.remotePort = remotePort
    }

    /// A multiplicative mix of every field (not SipHash: this runs per packet and the table
    /// does not need protection against chosen keys beyond its bounded probe cost).
    @inlinable @inline(__always)
    public var hash: UInt32 {
        var value = UInt64(truncatingIfNeeded: local) &* 0x9E37_79B9_7F4A_7C15
        value ^= UInt64(truncatingIfNeeded: local >> 64) &* 0xC2B2_AE3D_27D4_EB4F
        value ^= UInt64(truncatingIfNeeded: remote) &* 0x1656_67B1_9E37_79F9
        value ^= UInt64(truncatingIfNeeded: remote >> 64) &* 0x27D4_EB2F_1656_67C5
        value ^= (UInt64(localPort) << 48 | UInt64(remotePort) << 32 | UInt64(ipProtocol) << 24) ^ UInt64(zone)
        value = (value ^ (value >> 31)) &* 0x9E37_79B9_7F4A_7C15
        return UInt32(truncatingIfNeeded: value >> 32)
    }
}

/// Which way a connection was opened, seen from its NIC.
public enum ConnectionOrigin: UInt8, Sendable {
    /// The guest opened it (outbound).
    case fromGuest = 0
    /// A peer opened it and an inbound rule let it in.
    case toGuest = 1
}

public struct ConnectionEntry: Sendable {
    public var key: ConnectionKey
    public var hash: UInt32
    /// Monotonic second after which the entry is dead.
    public var expires: UInt32
    /// The policy generation the entry was last checked against.
    public var generation: UInt32
    /// Worker slot of the NIC (for per-NIC counts), -1 when free.
    public var slot: Int32
    public var state: ConnectionState
    public var origin: ConnectionOrigin
}

/// The worker's connection table: bounded, preallocated, open addressing with linear probing
/// and backward-shift deletion, so it never rehashes, never allocates after init and never
/// leaves tombstones.
///
/// ```
///  index (2^k ≥ 2 × capacity slots, UInt32: entry + 1, 0 = empty) ──► entries[capacity]
///                                                                    free list through `hash`
/// ```
/// Memory is reserved with `mmap` and only touched as entries are used: a table sized for a
/// million connections costs nothing until they exist. Expiry is incremental: `collect`
/// examines a bounded number of entries per call from a moving cursor, so there is never a
/// pause; lookups treat an expired entry as absent.
public final class ConnectionTable {
    public let capacity: Int
    let indexMask: Int
    let index: UnsafeMutablePointer<UInt32>
    let entries: UnsafeMutablePointer<ConnectionEntry>
    private let indexBytes: Int
    private let entryBytes: Int
    /// Entries ever handed out; below it, free ones are on the free list.
    private var highWater = 0
    private var freeHead: Int32 = -1
    public private(set) var count = 0
    private var cursor = 0
    /// Live entries per worker slot.
    public private(set) var countBySlot: [Int32] = []
    /// Entries removed to make room for a new connection (the table was full).
    public private(set) var evictions: UInt64 = 0

    public init(capacity: Int) {
        precondition(capacity > 0 && capacity <= 1 << 30, "connection table capacity out of range")
        self.capacity = capacity
        var slots = 1
        while slots < capacity * 2 { slots <<= 1 }
        indexMask = slots - 1
        indexBytes = slots * MemoryLayout<UInt32>.stride
        entryBytes = capacity * MemoryLayout<ConnectionEntry>.stride
        index = Self.reserve(indexBytes).bindMemory(to: UInt32.self, capacity: slots)
        entries = Self.reserve(entryBytes).bindMemory(to: ConnectionEntry.self, capacity: capacity)
    }

    deinit {
        munmap(index, indexBytes)
        munmap(entries, entryBytes)
    }

    /// Zero-filled memory that costs nothing until touched.
    private static func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(memory != MAP_FAILED, "mmap of the connection table failed: errno \(errno)")
        return memory!
    }

    /// The live entry for `key`, or -1.
    @inline(__always)
    public func find(_ key: ConnectionKey, hash: UInt32, now: UInt32) -> Int {
        var position = Int(hash) & indexMask
        while true {
            let stored = index[position]
            if stored == 0 { return -1 }
            let entry = Int(stored &- 1)
            if entries[entry].hash == hash && entries[entry].key == key {
                return entries[entry].expires >= now ? entry : -1
            }
            position = (position &+ 1) & indexMask
        }
    }

    /// Adds an entry for `key` (which must not be live). When the table is full, an expired or
    /// unanswered entry near the collection cursor makes room (counted in `evictions`);
    /// returns -1 when every candidate is an established connection.
    public func insert(
        _ key: ConnectionKey,
        hash: UInt32,
        slot: Int,
        state: ConnectionState,
        origin: ConnectionOrigin,
        generation: UInt32,
        now: UInt32
    ) -> Int {
        // An expired entry with the same key may still sit in the index.
        removeStale(key, hash: hash)
        if count == capacity && !evictOne(now: now) { return -1 }
        let entry: Int
        if freeHead >= 0 {
            entry = Int(freeHead)
            freeHead = Int32(bitPattern: entries[entry].hash)
        } else {
            entry = highWater
            highWater += 1
        }
        entries[entry] = ConnectionEntry(
            key: key,
            hash: hash,
            expires: now &+ ConnectionState.timeout(state, ipProtocol: key.ipProtocol),
            generation: generation,
            slot: Int32(slot),
            state: state,
            origin: origin
        )
        var position = Int(hash) & indexMask
        while index[position] != 0 { position = (position &+ 1) & indexMask }
        index[position] = UInt32(entry &+ 1)
        count += 1
        if slot >= countBySlot.count { countBySlot += [Int32](repeating: 0, count: slot + 1 - countBySlot.count) }
        countBySlot[slot] += 1
        return entry
    }

    private func removeStale(_ key: ConnectionKey, hash: UInt32) {
        var position = Int(hash) & indexMask
        while index[position] != 0 {
            let entry = Int(index[position] - 1)
            if entries[entry].hash == hash && entries[entry].key == key {
                remove(entry)
                return
            }
            position = (position &+ 1) & indexMask
        }
    }

    /// Refreshes an entry after a packet: new state, new deadline.
    @inline(__always)
    public func update(_ entry: Int, state: ConnectionState, now: UInt32) {
        entries[entry].state = state
        entries[entry].expires = now &+ ConnectionState.timeout(state, ipProtocol: entries[entry].key.ipProtocol)
    }

    public func remove(_ entry: Int) {
        let hash = entries[entry].hash
        var hole = Int(hash) & indexMask
        while index[hole] != UInt32(entry + 1) { hole = (hole + 1) & indexMask }
        // Backward-shift deletion: pull later members of the probe run into the hole when their
        // home position allows it, so lookups never need tombstones.
        var next = hole
        while true {
            next = (next + 1) & indexMask
            let stored = index[next]
            if stored == 0 { break }
            let home = Int(entries[Int(stored - 1)].hash) & indexMask
            let between = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next)
            if between { continue }
            index[hole] = stored
            hole = next
        }
        index[hole] = 0
        let slot = Int(entries[entry].slot)
        if slot >= 0 && slot < countBySlot.count { countBySlot[slot] -= 1 }
        entries[entry].slot = -1
        entries[entry].hash = UInt32(bitPattern: freeHead)
        freeHead = Int32(entry)
        count -= 1
    }

    /// Looks at up to `budget` entries from the cursor and removes those expired or whose
    /// zone is no longer live (`isLive(slot, zone)`). Returns how many were removed.
    @discardableResult
    public func collect(now: UInt32, budget: Int, isLive: (Int, UInt32) -> Bool) -> Int {
        guard highWater > 0 else { return 0 }
        var removed = 0
        for _ in 0..<min(budget, highWater) {
            if cursor >= highWater { cursor = 0 }
            let entry = cursor
            cursor += 1
            let slot = Int(entries[entry].slot)
            guard slot >= 0 else { continue }
            if entries[entry].expires < now || !isLive(slot, entries[entry].key.zone) {
                remove(entry)
                removed += 1
            }
        }
        return removed
    }

    /// Frees one entry near the cursor that is expired or not assured (an unanswered opening,
    /// the cheapest to lose). False when the candidates are all established.
    private func evictOne(now: UInt32) -> Bool {
        for _ in 0..<min(64, highWater) {
            if cursor >= highWater { cursor = 0 }
            let entry = cursor
            cursor += 1
            guard entries[entry].slot >= 0 else { continue }
            if entries[entry].expires < now || !entries[entry].state.isAssured {
                remove(entry)
                evictions += 1
                return true
            }
        }
        return false
    }

    /// Every live entry of `zone` (for `nic_export`; walks the table, control requests only).
    public func entries(ofZone zone: UInt32, now: UInt32) -> [ConnectionEntry] {
        var result: [ConnectionEntry] = []
        for entry in 0..<highWater where entries[entry].slot >= 0 && entries[entry].key.zone == zone {
            if entries[entry].expires >= now { result.append(entries[entry]) }
        }
        return result
    }
}
