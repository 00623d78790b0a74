import ButterflyPacket

/// The guest path: frames a NIC's guest sent, through anti-spoofing to its VNI's switch.
///
/// ```
///  NIC rx batch ─► count in ─► [antispoof] ─► learn src MAC ─► lookup dst MAC
///                                 │ drop            ├─ local NIC  ─► its tx batch (count out)
///                                 ▼                 ├─ remote VTEP ─► underlay (VXLAN)
///                             counters              └─ unknown/broadcast/multicast ─► flood:
///                                                       every other local NIC + underlay BUM
/// ```
/// Every frame leaving a guest passes its NIC's outbound firewall, and every frame delivered to
/// a guest (from another local NIC or from the network) its inbound firewall (Firewall.swift),
/// unless the NIC bypasses filtering.
/// Drop reasons: `truncated`, anti-spoof reasons, firewall reasons, `hairpin`, `no-buffer`.
extension Worker {
    /// Minimum Ethernet header.
    static let ethernetHeader = 14

    func fromGuest(slot: Int, _ guest: GuestSlot) {
        // Everything per batch is resolved here once; per frame only pointers and locals.
        let switchIndex = paths[slot].switchIndex
        guard let counters = guest.attachment?.counters, switchIndex >= 0 else {
            receiveBatch.releaseAll(to: pool)
            return
        }
        let network = switches.storage + Int(switchIndex)
        let policy = guest.antiSpoofPolicy
        let firewallPolicy = guest.firewall
        let bypass = guest.config.bypassFiltering
        let vni = guest.config.vni
        let zone = guest.zone
        let now = self.now
        let ageLimit = settings.macAgeSeconds
        // Unretained: the worker holds its underlay for the whole pass, and a retained local
        // was retained and released again around every frame sent to it (4 % of encap).
        let underlay = self.underlay.map { Unmanaged.passUnretained($0) }
        let batch = receiveBatch
        if let trace = guest.trace {
            for index in 0..<batch.count {
                let packet = batch[index]
                trace.record(pool.data(packet), length: Int(packet.length))
            }
        }
        // Mirrored as the guest sent it, before any check (what a switch's port mirror shows).
        let mirrorSlot = guest.mirrorSlot
        if mirrorSlot >= 0 {
            for index in 0..<batch.count { mirror(batch[index], to: mirrorSlot) }
        }
        for index in 0..<batch.count {
            let packet = batch[index]
            let data = pool.data(packet)
            let length = Int(packet.length)
            counters.countIn(bytes: length)
            guard length >= Self.ethernetHeader else {
                drop(packet, .truncated, counters)
                continue
            }
            if !bypass {
                let headers = FrameHeaders.walk(data, length: length)
                if let reason = AntiSpoof.check(data, length: length, headers: headers, policy: policy)
                    ?? firewall.verdict(
                        data,
                        headers: headers,
                        direction: .fromGuest,
                        slot: slot,
                        zone: zone,
                        policy: firewallPolicy
                    )
                {
                    drop(packet, reason, counters)
                    continue
                }
            }
            let source = data.loadMAC(at: 6)
            if source & (1 << 40) == 0, network.pointee.table.learn(source, location: Int32(slot), now: now) {
                switches.requestGrowth(switchIndex)
            }
            let destination = data.loadMAC(at: 0)
            let location: Int32 =
                destination & (1 << 40) == 0
                ? network.pointee.table.lookup(destination, now: now, ageLimit: ageLimit) : -1
            if location >= 0 {
                if Int(location) == slot {
                    drop(packet, .hairpin, counters)
                } else {
                    deliver(packet, to: Int(location))
                }
            } else if location <= -2, let underlay {
                underlay._withUnsafeGuaranteedRef { $0.send(packet, vni: vni, location: location, worker: self) }
            } else {
                flood(packet, vni: vni, from: slot)
            }
        }
        batch.removeAll()
    }

    /// Queues a frame for a local guest after its inbound firewall; the batch is flushed at
    /// the end of the pass (or now, if full). Reads only `paths[slot]`: no reference counting.
    @inline(__always)
    func deliver(_ packet: Packet, to slot: Int) {
        let path = paths[slot]
        guard let transmit = path.transmit else {
            pool.release(packet)
            return
        }
        if !path.bypass, let firewallPolicy = path.firewall {
            let reason: DropReason?
            if packet.length < 14 {
                reason = .truncated
            } else {
                let data = pool.data(packet)
                let length = Int(packet.length)
                reason = firewallPolicy._withUnsafeGuaranteedRef { policy in
                    // Walked inside the closure: captured, the walk's result was copied into the
                    // closure's context right after its narrow stores, and that copy stalled on
                    // store forwarding on every delivered frame (38 % of `deliver`).
                    let headers = FrameHeaders.walk(data, length: length)
                    return firewall.verdict(
                        data,
                        headers: headers,
                        direction: .toGuest,
                        slot: slot,
                        zone: path.zone,
                        policy: policy
                    )
                }
            }
            if let reason {
                if let counters = path.counters { CounterBlock.countDrop(counters, reason) }
                pool.release(packet)
                return
            }
        }
        let length = Int(packet.length)
        // Mirrored as delivered, after the firewall let it through.
        if path.mirror >= 0 { mirror(packet, to: Int(path.mirror)) }
        transmit._withUnsafeGuaranteedRef { batch in
            if batch.isFull { transmitNow(slot) }
            if batch.isEmpty { pendingTransmit.append(slot) }
            batch.append(packet)
        }
        if let counters = path.counters { CounterBlock.countOut(counters, bytes: length) }
    }

    /// A copy of `packet` to `slot`'s port as it is (a mirror's target): no filter on the way,
    /// and the copy is not mirrored again.
    @inline(never)
    func mirror(_ packet: Packet, to slot: Int) {
        let path = paths[slot]
        guard let transmit = path.transmit else { return }
        guard let copy = pool.clone(packet) else {
            globalCounters.countDrop(.noBuffer)
            return
        }
        transmit._withUnsafeGuaranteedRef { batch in
            if batch.isFull { transmitNow(slot) }
            if batch.isEmpty { pendingTransmit.append(slot) }
            batch.append(copy)
        }
        if let counters = path.counters { CounterBlock.countOut(counters, bytes: Int(copy.length)) }
    }

    /// Sends a slot's full transmit batch before it takes more (rare: a batch holds 256).
    @inline(never)
    func transmitNow(_ slot: Int) {
        guard let guest = slots[slot], let port = guest.port else { return }
        port.transmit(guest.transmitBatch, pool: pool, failuresTo: guest.attachment?.counters)
    }

    /// Sends a frame to every local member of `vni` except `source` (-1: none excluded) and,
    /// when the frame came from a guest, to the underlay's BUM destinations. The original
    /// buffer goes to the last destination; the others get copies.
    func flood(_ packet: Packet, vni: UInt32, from source: Int, toUnderlay: Bool = true) {
        let index = switches.index(of: vni)
        guard index >= 0 else {
            pool.release(packet)
            return
        }
        let network = switches.storage[Int(index)]
        var targets = 0
        for member in network.members where member != source { targets += 1 }
        let underlay = toUnderlay ? self.underlay : nil
        if underlay != nil { targets += 1 }
        guard targets > 0 else {
            pool.release(packet)
            return
        }
        var remaining = targets
        for member in network.members where member != source {
            remaining -= 1
            if remaining == 0 {
                deliver(packet, to: member)
            } else if let copy = pool.clone(packet) {
                deliver(copy, to: member)
            } else {
                globalCounters.countDrop(.noBuffer)
            }
        }
        if let underlay {
            underlay.send(packet, vni: vni, location: -1, worker: self)
        }
    }

    @inline(__always)
    func drop(_ packet: Packet, _ reason: DropReason, _ counters: CounterBlock) {
        counters.countDrop(reason)
        pool.release(packet)
    }
}
