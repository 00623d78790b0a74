import ButterflyPacket

/// The worker's per-VNI switches: members and MAC table of each VNI that has a local NIC.
///
/// ```
///  indexByVNI [vni: index] ──(once per batch or per VNI change)──► index
///  storage[index] = VNISwitch { vni, members, table }  ◄── the packet path, through a pointer
/// ```
/// A VNI keeps its index while it has members, so the packet path holds an index (per NIC
/// slot, per decapsulated VNI) instead of hashing the VNI per frame, and reaches the MAC table
/// through a pointer: no dictionary lookup, no copy of the switch, no exclusivity check.
///
/// Table sizes are managed here, off the packet path: a table whose `learn` filled half its
/// slots is queued (`requestGrowth`) and grown after the pass (`growRequested`); aging walks
/// the tables in index order a bounded number of slots per call (`age`), resizing each table
/// when its round is done. Every growth stays within the slot budget across VNIs.
/// Worker thread only.
final class VNISwitches {
    let capacity: Int
    let storage: UnsafeMutablePointer<VNISwitch>
    private(set) var indexByVNI: [UInt32: Int32] = [:]
    private var freeIndices: [Int32] = []
    private var highWater = 0
    /// Whether each index below `highWater` holds a switch.
    private var inUse: [Bool] = []
    /// Slots of every table, the measure the budget bounds.
    private(set) var totalSlots = 0
    /// Where the aging round stands: the switch index and the slot in its table.
    private var agingCursor = (index: 0, slot: 0)
    /// Switches whose table asked to grow during the current pass (fixed capacity, so the
    /// packet path never allocates; a request that does not fit waits for the table's next
    /// aging round).
    private let growthRequests: UnsafeMutablePointer<Int32>
    private(set) var growthRequestCount = 0
    static let growthRequestCapacity = 64

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        growthRequests = .allocate(capacity: Self.growthRequestCapacity)
    }

    deinit {
        for index in indexByVNI.values {
            storage[Int(index)].table.deallocate()
            (storage + Int(index)).deinitialize(count: 1)
        }
        storage.deallocate()
        growthRequests.deallocate()
    }

    /// The index of `vni`'s switch, or -1 when no local NIC is in it.
    @inline(__always)
    func index(of vni: UInt32) -> Int32 { indexByVNI[vni] ?? -1 }

    var vnis: Dictionary<UInt32, Int32>.Keys { indexByVNI.keys }
    var indices: Dictionary<UInt32, Int32>.Values { indexByVNI.values }

    /// Adds `slot` to `vni`'s members, creating the switch (and its table) if needed.
    func join(vni: UInt32, slot: Int, table makeTable: () -> MACTable) -> Int32 {
        if let index = indexByVNI[vni] {
            storage[Int(index)].members.append(slot)
            return index
        }
        let index: Int32
        if let free = freeIndices.popLast() {
            index = free
        } else {
            precondition(highWater < capacity, "more VNIs than the worker's maximum NIC count")
            index = Int32(highWater)
            highWater += 1
        }
        (storage + Int(index)).initialize(to: VNISwitch(vni: vni, table: makeTable()))
        storage[Int(index)].members.append(slot)
        indexByVNI[vni] = index
        if Int(index) == inUse.count { inUse.append(true) } else { inUse[Int(index)] = true }
        totalSlots &+= storage[Int(index)].table.slotCount
        return index
    }

    /// Removes `slot` from `vni`'s members and forgets its MAC entries; the switch goes when
    /// its last member does.
    func leave(vni: UInt32, slot: Int, now: UInt32, ageLimit: UInt32) {
        guard let index = indexByVNI[vni] else { return }
        let pointer = storage + Int(index)
        pointer.pointee.members.removeAll { $0 == slot }
        pointer.pointee.table.sweep(now: now, ageLimit: ageLimit) { $0 == Int32(slot) }
        if pointer.pointee.members.isEmpty {
            totalSlots &-= pointer.pointee.table.slotCount
            pointer.pointee.table.deallocate()
            pointer.deinitialize(count: 1)
            indexByVNI[vni] = nil
            freeIndices.append(index)
            inUse[Int(index)] = false
            // A queued request must not reach the index's next switch (or freed memory).
            var kept = 0
            for request in 0..<growthRequestCount where growthRequests[request] != index {
                growthRequests[kept] = growthRequests[request]
                kept &+= 1
            }
            growthRequestCount = kept
        }
    }

    // MARK: Table sizes and aging (off the packet path)

    /// Queues switch `index` for growth after the pass (its table reported half full).
    @inline(__always)
    func requestGrowth(_ index: Int32) {
        guard growthRequestCount < Self.growthRequestCapacity else { return }
        growthRequests[growthRequestCount] = index
        growthRequestCount &+= 1
    }

    /// Grows the tables that asked for it during the pass, within `slotBudget`.
    func growRequested(minimumCapacity: Int, slotBudget: Int) {
        for request in 0..<growthRequestCount {
            resize(Int(growthRequests[request]), minimumCapacity: minimumCapacity, slotBudget: slotBudget)
        }
        growthRequestCount = 0
    }

    /// Doubles or halves one table (`MACTable.resize`), keeping `totalSlots` and the budget.
    private func resize(_ index: Int, minimumCapacity: Int, slotBudget: Int) {
        let table = storage + index
        // Doubling adds the table's own slots: only within the budget.
        let room = slotBudget &- totalSlots &- table.pointee.table.slotCount
        totalSlots &+= table.pointee.table.resize(minimumCapacity: minimumCapacity, growthAllowed: room >= 0)
    }

    /// Continues the aging round: removes aged entries from at most about `budget` slots (an
    /// empty table costs one), resizing each table whose round is done; wraps around after
    /// the last switch. Returns true when the round came back to the first switch.
    @discardableResult
    func age(now: UInt32, ageLimit: UInt32, budget: Int, minimumCapacity: Int, slotBudget: Int) -> Bool {
        var left = budget
        while left > 0 {
            if agingCursor.index >= highWater {
                agingCursor = (0, 0)
                return true
            }
            let index = agingCursor.index
            guard inUse[index] else {
                agingCursor = (index &+ 1, 0)
                left &-= 1
                continue
            }
            let table = storage + index
            let start = min(agingCursor.slot, table.pointee.table.slotCount)
            let wasEmpty = table.pointee.table.count == 0
            let next = table.pointee.table.sweep(from: start, budget: left, now: now, ageLimit: ageLimit)
            if let next {
                left &-= max(1, next &- start)
                agingCursor.slot = next
            } else {
                left &-= wasEmpty ? 1 : max(1, table.pointee.table.slotCount &- start)
                resize(index, minimumCapacity: minimumCapacity, slotBudget: slotBudget)
                agingCursor = (index &+ 1, 0)
            }
        }
        return false
    }
}

/// One VNI's switch: its local member slots and its MAC table.
struct VNISwitch {
    let vni: UInt32
    var members: [Int] = []
    var table: MACTable

    init(vni: UInt32, table: MACTable) {
        self.vni = vni
        self.table = table
    }
}

/// What the packet path needs of a guest slot, kept in flat memory so that a frame delivered
/// to a NIC costs no reference counting and no exclusivity check: unowned references into the
/// `GuestSlot` that owns them (refreshed whenever the slot changes, cleared when it goes).
struct SlotPath {
    // Trivial (no references counted): `Worker` writes entries into raw memory.
    /// The slot's VNI switch, -1 when the slot is free.
    var switchIndex: Int32 = -1
    var zone: UInt32 = 0
    var bypass = false
    /// The attachment's counter slots (CounterBlock), nil without an attachment.
    var counters: UnsafeMutablePointer<UInt64>?
    var transmit: Unmanaged<PacketBatch>?
    var firewall: Unmanaged<FirewallPolicy>?
    /// The slot the NIC's traffic is mirrored to (`sniff_target_nic_id`), -1: none.
    var mirror: Int32 = -1
}
