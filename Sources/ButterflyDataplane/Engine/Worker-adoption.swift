import ButterflyPacket
import CButterflyLinux
import HashTreeCollections
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What the control plane left for the worker: the latest update and, while it names changed
/// NICs, the set of them (so that a NIC named by many changes is queued once).
struct Mailbox {
    var update: DataplaneUpdate?
    var queued: Set<String> = []
    /// Publications so far, and the one `update` is (it covers every earlier one).
    var published: UInt64 = 0
    var sequence: UInt64 = 0
}

/// An update being adopted chunk by chunk: the NICs left (each once: `queued` holds the same
/// ids), the longest chunk so far.
struct Adoption {
    var update: DataplaneUpdate
    var remaining: ArraySlice<String>
    var queued: Set<String>
    /// The publication it completes.
    var sequence: UInt64
    var longestChunk: UInt64 = 0
}

/// Adoption of a new configuration between two batches: O(changed NICs), slots, zones, VNI
/// switches and the packet path's per-slot state kept in step.
extension Worker {
    // MARK: Adoption

    /// Takes the configuration waiting in the mailbox. A full one (no list of changed NICs) is
    /// adopted at once; a list of changes is adopted `Settings.adoptionChunk` NICs per pass
    /// (`continueAdoption`), so that a change reaching many NICs never stalls the worker for
    /// long: packets keep flowing between chunks, each NIC switches whole. A newer update
    /// arriving meanwhile takes over, with what was left of the older one.
    func adoptPending() {
        pending.store(false, ordering: .relaxed)
        guard
            let (update, queued, sequence) = mailbox.withLock({ box -> (DataplaneUpdate, Set<String>, UInt64)? in
                guard let update = box.update.take() else { return nil }
                var queued: Set<String> = []
                swap(&queued, &box.queued)
                return (update, queued, box.sequence)
            })
        else { return }
        if var unfinished = adopting.take(), let later = update.changedNICs {
            // NICs still queued keep their place; the others join the end.
            for id in later where unfinished.queued.insert(id).inserted { unfinished.remaining.append(id) }
            unfinished.update = update
            unfinished.sequence = sequence
            adopting = unfinished
            continueAdoption()
            return
        }
        guard let changed = update.changedNICs else {
            let start = Self.threadCPUNanoseconds()
            adopt(update)
            recordPause(Self.threadCPUNanoseconds() &- start, last: true)
            adopted.store(update.config.version, ordering: .releasing)
            adoptedPublication.store(sequence, ordering: .releasing)
            return
        }
        adopting = Adoption(update: update, remaining: changed[...], queued: queued, sequence: sequence)
        continueAdoption()
    }

    /// Adopts the next chunk of an update in progress; the last chunk makes it the running one.
    func continueAdoption() {
        guard var progress = adopting.take() else { return }
        let start = Self.threadCPUNanoseconds()
        flush()
        let chunk = progress.remaining.prefix(settings.adoptionChunk)
        progress.remaining = progress.remaining.dropFirst(chunk.count)
        for id in chunk {
            progress.queued.remove(id)
            if let nic = progress.update.config.nics[id] {
                adoptNIC(id: id, nic, attachment: progress.update.attachments[id])
            } else if let slot = slotByID[id] {
                removeSlot(slot, id: id)
            }
        }
        let finished = progress.remaining.isEmpty
        if finished {
            config = progress.update.config
            resolveMirrors()
            underlay?.adopt(self)
        }
        let took = Self.threadCPUNanoseconds() &- start
        progress.longestChunk = max(progress.longestChunk, took)
        recordPause(took, last: false)
        if finished {
            lastAdoption.store(progress.longestChunk, ordering: .relaxed)
            adopted.store(progress.update.config.version, ordering: .releasing)
            adoptedPublication.store(progress.sequence, ordering: .releasing)
        } else {
            adopting = progress
        }
    }

    /// The worker thread's own CPU time: an adoption's pause is measured without the time the
    /// OS gave other threads meanwhile (on a shared core, the control thread compiling the next
    /// change would otherwise count as the worker's pause).
    static func threadCPUNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    private func recordPause(_ nanoseconds: UInt64, last: Bool) {
        if nanoseconds > longestAdoption.load(ordering: .relaxed) {
            longestAdoption.store(nanoseconds, ordering: .relaxed)
        }
        if last { lastAdoption.store(nanoseconds, ordering: .relaxed) }
    }

    /// Applies a whole configuration (no list of changes: a first one, tests): removes NICs that
    /// are gone, adds new ones, updates changed ones in place. Learned MACs of NICs that stay
    /// are kept.
    func adopt(_ update: DataplaneUpdate) {
        flush()
        let old = slotByID
        for (id, slot) in old where update.config.nics[id] == nil {
            removeSlot(slot, id: id)
        }
        for (id, nic) in update.config.nics {
            adoptNIC(id: id, nic, attachment: update.attachments[id])
        }
        config = update.config
        resolveMirrors()
        underlay?.adopt(self)
    }

    /// Adds a NIC or updates it in place (its slot, zone, learned MACs and connections stay).
    private func adoptNIC(id: String, _ nic: NICConfig, attachment: NICAttachment?) {
        if let slot = slotByID[id], let guest = slots[slot] {
            if guest.attachment !== attachment {
                detachPort(of: guest, slot: slot)
                guest.attachment = attachment
                attachPort(of: guest, slot: slot)
            }
            if guest.config.vni != nic.vni {
                leaveVNI(slot: slot, vni: guest.config.vni)
                joinVNI(slot: slot, vni: nic.vni)
            }
            guest.config = nic
            updateTrace(guest)
            trackMirror(slot, guest)
            refreshPath(slot)
        } else {
            let slot = takeFreeSlot()
            precondition(slot < settings.maximumNICs, "more NICs than Worker.Settings.maximumNICs")
            if slot == slots.count {
                slots.append(nil)
                (paths + slot).initialize(to: SlotPath())
            }
            slots[slot] = GuestSlot(config: nic, attachment: attachment)
            slotByID[id] = slot
            updateTrace(slots[slot]!)
            joinVNI(slot: slot, vni: nic.vni)
            attachPort(of: slots[slot]!, slot: slot)
            slots[slot]!.zone = nextZone
            nextZone &+= 1
            trackMirror(slot, slots[slot]!)
            refreshPath(slot)
        }
    }

    /// Copies what the packet path needs of a slot into `paths` (after any change of it).
    private func refreshPath(_ slot: Int) {
        guard let guest = slots[slot] else {
            paths[slot] = SlotPath()
            return
        }
        paths[slot] = SlotPath(
            switchIndex: switches.index(of: guest.config.vni),
            zone: guest.zone,
            bypass: guest.config.bypassFiltering,
            counters: guest.attachment?.counters.rawSlots,
            transmit: Unmanaged.passUnretained(guest.transmitBatch),
            firewall: Unmanaged.passUnretained(guest.firewall),
            mirror: Int32(guest.mirrorSlot)
        )
    }

    /// A free slot for a new NIC, or a new one. Not one whose previous NIC still has
    /// connections waiting to be collected: they are counted by slot, and the new NIC's gauge
    /// would show them until collection reaches them.
    private func takeFreeSlot() -> Int {
        let counts = connections.countBySlot
        guard let index = freeSlots.lastIndex(where: { $0 >= counts.count || counts[$0] == 0 }) else {
            return slots.count
        }
        return freeSlots.remove(at: index)
    }

    /// Opens, reopens or closes a NIC's pcap trace to match its configuration.
    private func updateTrace(_ guest: GuestSlot) {
        let wanted = guest.config.packetTracePath
        guard guest.trace?.path != wanted else { return }
        if guest.trace != nil { openNICTraces -= 1 }
        guest.trace = wanted.flatMap { PcapWriter(path: $0) }
        if guest.trace != nil { openNICTraces += 1 }
        if wanted != nil && guest.trace == nil { globalCounters.countDrop(.traceUnavailable) }
    }

    /// Opens or closes the main trace (underlay traffic) at `path`.
    public func setMainTrace(path: String?) {
        mainTrace = path.flatMap { PcapWriter(path: $0) }
    }

    private func removeSlot(_ slot: Int, id: String) {
        guard let guest = slots[slot] else { return }
        if guest.trace != nil { openNICTraces -= 1 }
        guest.transmitBatch.releaseAll(to: pool)
        detachPort(of: guest, slot: slot)
        mirroredSlots.removeAll { $0 == slot }
        // No NIC may keep mirroring into this slot: a NIC adopted later in the same update
        // could take it before the mirrors are resolved again.
        for source in mirroredSlots where slots[source]?.mirrorSlot == slot {
            slots[source]?.mirrorSlot = -1
            paths[source].mirror = -1
        }
        leaveVNI(slot: slot, vni: guest.config.vni)
        paths[slot] = SlotPath()
        slots[slot] = nil
        slotByID[id] = nil
        freeSlots.append(slot)
    }

    /// Keeps `mirroredSlots` in step with the NIC's sniff target; a NIC without one mirrors
    /// nowhere from now on.
    private func trackMirror(_ slot: Int, _ guest: GuestSlot) {
        let listed = mirroredSlots.contains(slot)
        if guest.config.sniffTarget != nil {
            if !listed { mirroredSlots.append(slot) }
        } else {
            if listed { mirroredSlots.removeAll { $0 == slot } }
            guest.mirrorSlot = -1
        }
    }

    /// Resolves every sniff target to its slot once a configuration is complete (targets come
    /// and go, their slots are reused): O(mirrored NICs). A NIC never mirrors to itself.
    private func resolveMirrors() {
        for slot in mirroredSlots {
            guard let guest = slots[slot], let target = guest.config.sniffTarget else { continue }
            var resolved = slotByID[target] ?? -1
            if resolved == slot { resolved = -1 }
            guard guest.mirrorSlot != resolved else { continue }
            guest.mirrorSlot = resolved
            paths[slot].mirror = Int32(resolved)
        }
    }

    /// Watches a slot's port: its descriptor in epoll, its sleep hooks.
    private func attachPort(of guest: GuestSlot, slot: Int) {
        guard let port = guest.port else { return }
        if port.fileDescriptor >= 0 { watch(port.fileDescriptor, token: .port(slot: slot)) }
        if port.hasSleepHooks {
            sleepHookSlots.append(slot)
            rearmAllSleepHooks = true
        }
    }

    private func detachPort(of guest: GuestSlot, slot: Int) {
        guard let port = guest.port else { return }
        if port.fileDescriptor >= 0 { unwatch(port.fileDescriptor) }
        if port.hasSleepHooks { sleepHookSlots.removeAll { $0 == slot } }
    }

    private func joinVNI(slot: Int, vni: UInt32) {
        _ = switches.join(vni: vni, slot: slot) {
            MACTable(capacity: settings.macTableCapacity, maximumCapacity: settings.macTableMaximum)
        }
    }

    private func leaveVNI(slot: Int, vni: UInt32) {
        switches.leave(vni: vni, slot: slot, now: now, ageLimit: settings.macAgeSeconds)
    }

    func watch(_ fd: Int32, token: EpollToken) {
        var event = epoll_event()
        event.events = UInt32(EPOLLIN.rawValue)
        event.data.u64 = token.rawValue
        _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
    }

    private func unwatch(_ fd: Int32) {
        var unused = epoll_event()
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &unused)
    }

    /// Registers the underlay port's descriptor for idle wake-ups.
    public func watchUnderlay(_ fd: Int32) { watch(fd, token: .underlay) }

    /// Counters of a NIC's attachment, if it has one.
    public func slotCount() -> Int { slots.count }

    /// A NIC's worker slot and connection-tracking zone (worker thread only: tests and
    /// benchmarks that drive the worker with `runOnce`).
    public func trackingZone(ofNIC id: String) -> (slot: Int, zone: UInt32)? {
        guard let slot = slotByID[id], let guest = slots[slot] else { return nil }
        return (slot, guest.zone)
    }
}

/// A guest NIC as the worker sees it.
final class GuestSlot {
    var config: NICConfig {
        didSet {
            antiSpoofPolicy = AntiSpoof.Policy(config)
            firewall = config.firewall ?? .empty
        }
    }
    /// The NIC's connection-tracking zone (set once, when the NIC gets its slot).
    var zone: UInt32 = 0
    /// Where the NIC's traffic is mirrored (its sniff target's slot), -1: nowhere.
    var mirrorSlot = -1
    /// The compiled security groups (an empty policy when none were compiled).
    private(set) var firewall: FirewallPolicy
    var attachment: NICAttachment?
    let transmitBatch = PacketBatch()
    /// Open while the NIC's packet trace is on.
    var trace: PcapWriter?
    /// Prepared from `config` once per change, not per packet.
    private(set) var antiSpoofPolicy: AntiSpoof.Policy

    init(config: NICConfig, attachment: NICAttachment?) {
        self.config = config
        self.attachment = attachment
        antiSpoofPolicy = AntiSpoof.Policy(config)
        firewall = config.firewall ?? .empty
    }

    var port: (any PacketPort)? { attachment?.port }
}
