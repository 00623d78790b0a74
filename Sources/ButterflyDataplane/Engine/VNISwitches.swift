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
/// Worker thread only.
final class VNISwitches {
    let capacity: Int
    let storage: UnsafeMutablePointer<VNISwitch>
    private(set) var indexByVNI: [UInt32: Int32] = [:]
    private var freeIndices: [Int32] = []
    private var highWater = 0

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
    }

    deinit {
        for index in indexByVNI.values {
            storage[Int(index)].table.deallocate()
            (storage + Int(index)).deinitialize(count: 1)
        }
        storage.deallocate()
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
            pointer.pointee.table.deallocate()
            pointer.deinitialize(count: 1)
            indexByVNI[vni] = nil
            freeIndices.append(index)
        }
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
}
