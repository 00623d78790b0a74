import ButterflyPacket

/// The network side of a host: VXLAN (RFC 7348) over the underlay port, and the control
/// protocols the VTEP address needs on that link.
///
/// ```
///  underlay rx ─► ARP / NS for our VTEP address ─► reply; learn neighbours
///              ─► IGMP / MLD query ─► report the groups of our VNIs
///              ─► VXLAN to our VTEP or a joined group ─► decap ─► learn inner MAC → VTEP
///                                                          └─► local NIC, or flood locally
///  guest frame for VTEP v ─► encap (flow-hash source port) ─► next hop MAC ─► underlay tx
///  guest BUM frame ─► encap to the VNI's multicast group, or to each --vtep-peer (head-end)
/// ```
///
/// Neighbours (next-hop MACs) are learned from ARP/ND and from the outer source MAC of VXLAN
/// frames; the gateway and on-link peers are resolved as soon as the configuration arrives.
/// Counters (global block): in/out = underlay frames; drops: `truncated`, `not-vxlan`,
/// `bad-vxlan-flags`, `ip-options-or-fragment`, `not-for-this-vtep`, `unknown-vni`,
/// `unresolved-neighbor`, `oversize`, `no-buffer`, `underlay-other`.
public final class VXLANUnderlay {
    public struct Settings: Sendable {
        public var vtep: UnderlayAddress
        /// Prefix length of the VTEP's subnet; `nil` = every address is on-link unless a
        /// gateway is set, in which case none is.
        public var prefixLength: Int?
        public var gateway: UnderlayAddress?
        /// Head-end replication targets; empty = multicast groups per VNI.
        public var peers: [UnderlayAddress]
        public var neighborAgeSeconds: UInt32 = 300

        public init(vtep: UnderlayAddress, prefixLength: Int?, gateway: UnderlayAddress?, peers: [UnderlayAddress]) {
            self.vtep = vtep
            self.prefixLength = prefixLength
            self.gateway = gateway
            self.peers = peers
        }
    }

    struct Neighbor {
        var mac: UInt64
        var seen: UInt32
    }

    let port: any PacketPort
    let localMAC: UInt64
    let settings: Settings
    /// IPv6 link-local address derived from the MAC (EUI-64), the source of MLD messages.
    let linkLocal: IPv6Address
    let receiveBatch = PacketBatch()
    let transmitBatch = PacketBatch()
    var neighbors: [UnderlayAddress: Neighbor] = [:]
    var lastSolicited: [UnderlayAddress: UInt32] = [:]
    /// Remote VTEPs by index; MAC table locations ≤ -2 are `-(index + 2)`.
    /// Learned VTEPs in order (`vtepCount` of them): the packet path reads them by index.
    let vteps: UnsafeMutablePointer<UnderlayAddress> = .allocate(capacity: VXLANUnderlay.maximumVTEPs)
    var vtepCount: Int {
        get { cache.pointee.vtepCount }
        set { cache.pointee.vtepCount = newValue }
    }
    var vtepIndex: [UnderlayAddress: Int] = [:]
    static let maximumVTEPs = 65_536
    /// VNIs whose multicast group we joined.
    var joined: Set<UInt32> = []

    public init(port: any PacketPort, localMAC: UInt64, settings: Settings) {
        self.port = port
        self.localMAC = localMAC
        self.settings = settings
        // RFC 4291 §2.5.1: interface identifier from the MAC, universal/local bit flipped.
        let eui = (localMAC >> 24) << 40 | 0xFF_FE00_0000 | (localMAC & 0xFF_FFFF)
        linkLocal = IPv6Address(high: 0xFE80_0000_0000_0000, low: eui ^ 0x0200_0000_0000_0000)
    }

    // MARK: Groups (BUTTERFLY-COMPAT.md §7)

    /// IPv4 group of a VNI: 230.(v>>16).(v>>8).(v); IPv6: ff00:: with the VNI in the last 4 bytes.
    func group(of vni: UInt32) -> UnderlayAddress {
        switch settings.vtep {
        case .v4: return .v4(0xE600_0000 | (vni & 0xFF_FFFF))
        case .v6: return .v6(IPv6Address(high: 0xFF00_0000_0000_0000, low: UInt64(vni)))
        }
    }

    func multicastMAC(_ address: UnderlayAddress) -> UInt64 {
        switch address {
        case .v4(let group): Ethernet.ipv4MulticastMAC(group)
        case .v6(let group): Ethernet.ipv6MulticastMAC(group)
        }
    }

    func isJoinedGroup(_ address: UnderlayAddress) -> Bool {
        switch address {
        case .v4(let value):
            return value >> 24 == 0xE6 && joined.contains(value & 0xFF_FFFF)
        case .v6(let value):
            return value.high == 0xFF00_0000_0000_0000 && value.low >> 32 == 0 && joined.contains(UInt32(value.low))
        }
    }

    // MARK: What the worker calls (the worker holds this class itself, not a protocol: a call
    // through an existential retained it for every frame sent to the underlay, 4 % of the
    // encap chain)

    /// Called after a new configuration was adopted (join/leave groups, peers).
    public func adopt(_ worker: Worker) {
        now = worker.now
        cachedVNI = nil
        // With head-end replication there is no multicast to join.
        let wanted: Set<UInt32> = settings.peers.isEmpty ? Set(worker.switches.vnis) : []
        for vni in wanted.subtracting(joined) { sendMembership(vni: vni, join: true, worker: worker) }
        for vni in joined.subtracting(wanted) { sendMembership(vni: vni, join: false, worker: worker) }
        joined = wanted
        if let gateway = settings.gateway { solicit(gateway, worker: worker) }
        for peer in settings.peers where isOnLink(peer) { solicit(peer, worker: worker) }
        flush(worker)
    }

    /// Per-frame state (the clock and the last answers of lookups), behind a pointer this
    /// object owns: read and written per frame, stored `var`s would each cost a dynamic
    /// exclusivity check.
    struct FrameCache {
        var now: UInt32 = 0
        var vtepCount = 0
        var vni: (vni: UInt32, index: Int32)?
        var resolved: (address: UnderlayAddress, mac: UInt64, checked: UInt32)?
        var remote: (address: UnderlayAddress, index: Int)?
        var neighbor: (address: UnderlayAddress, mac: UInt64, seen: UInt32)?
    }
    let cache: UnsafeMutablePointer<FrameCache> = {
        let cache = UnsafeMutablePointer<FrameCache>.allocate(capacity: 1)
        cache.initialize(to: FrameCache())
        return cache
    }()

    deinit {
        cache.deinitialize(count: 1)
        cache.deallocate()
        vteps.deallocate()
    }

    var now: UInt32 {
        get { cache.pointee.now }
        set { cache.pointee.now = newValue }
    }

    /// Receives and processes one batch from the underlay; returns frames received.
    public func poll(_ worker: Worker) -> Int {
        now = worker.now
        let received = port.receive(into: receiveBatch, pool: worker.pool)
        guard received > 0 else { return 0 }
        let counters = worker.globalCounters
        if let trace = worker.mainTrace {
            for index in 0..<receiveBatch.count {
                let packet = receiveBatch[index]
                trace.record(worker.pool.data(packet), length: Int(packet.length))
            }
        }
        for index in 0..<receiveBatch.count {
            var packet = receiveBatch[index]
            let data = worker.pool.data(packet)
            let length = Int(packet.length)
            counters.countIn(bytes: length)
            guard length >= Ethernet.headerLength else {
                worker.drop(packet, .truncated, counters)
                continue
            }
            let etherType = data.loadBigEndian16(at: 12)
            if etherType == EtherType.arp {
                handleARP(data + Ethernet.headerLength, length: length - Ethernet.headerLength, worker: worker)
                worker.pool.release(packet)
                continue
            }
            if etherType == EtherType.ipv4, length >= 14 + 20, data.loadByte(at: 14 + 9) == IPProtocol.igmp {
                if let query = IGMP.parseQuery(data + Ethernet.headerLength, length: length - Ethernet.headerLength) {
                    answer(igmpGroup: query.group, worker: worker)
                }
                worker.pool.release(packet)
                continue
            }
            if etherType == EtherType.ipv6, handleICMPv6(data, length: length, worker: worker) {
                worker.pool.release(packet)
                continue
            }
            switch VXLANDecapsulation.decapsulate(&packet, pool: worker.pool) {
            case .drop(let reason):
                worker.drop(packet, Self.dropReason(reason), counters)
            case .frame(let outer):
                guard outer.outerDestination == settings.vtep || isJoinedGroup(outer.outerDestination) else {
                    worker.drop(packet, .notForThisVTEP, counters)
                    continue
                }
                let switchIndex = switchIndex(of: outer.vni, worker: worker)
                guard switchIndex >= 0 else {
                    worker.drop(packet, .unknownVNI, counters)
                    continue
                }
                learnNeighbor(from: outer)
                fromNetwork(packet, outer: outer, switchIndex: switchIndex, worker: worker)
            }
        }
        receiveBatch.removeAll()
        return received
    }

    /// Copies the port's own drop counters into the worker's global counters (once a second).
    public func publishPortCounters(_ worker: Worker) {
        worker.globalCounters.setDrops(.portReceive, to: port.portDrops.receiveDropped)
        worker.globalCounters.setDrops(.kernelReceive, to: port.kernelDrops)
    }

    /// Sends what is queued for the underlay.
    public func flush(_ worker: Worker) {
        guard !transmitBatch.isEmpty else { return }
        transmitQueued(worker)
    }

    /// Sends the queued batch, recorded first in the main trace if there is one: per batch,
    /// not per packet, since reading the worker's `mainTrace` costs a dynamic exclusivity check.
    private func transmitQueued(_ worker: Worker) {
        if let trace = worker.mainTrace {
            for index in 0..<transmitBatch.count {
                let packet = transmitBatch[index]
                trace.record(worker.pool.data(packet), length: Int(packet.length))
            }
        }
        port.transmit(transmitBatch, pool: worker.pool, failuresTo: worker.globalCounters)
    }

    /// Sends a guest frame of `vni` to the network: to the VTEP that owns `destination`
    /// (a remote location ≤ -2), or flooded (BUM) when `location` is -1.
    public func send(_ packet: Packet, vni: UInt32, location: Int32, worker: Worker) {
        if location <= -2 {
            let index = Int(-location - 2)
            guard index < vtepCount else {
                worker.pool.release(packet)
                return
            }
            encapsulate(packet, vni: vni, to: vteps[index], worker: worker)
            return
        }
        if settings.peers.isEmpty {
            encapsulate(packet, vni: vni, to: group(of: vni), worker: worker)
            return
        }
        var remaining = settings.peers.count
        for peer in settings.peers {
            remaining -= 1
            if remaining == 0 {
                encapsulate(packet, vni: vni, to: peer, worker: worker)
            } else if let copy = worker.pool.clone(packet) {
                encapsulate(copy, vni: vni, to: peer, worker: worker)
            } else {
                worker.globalCounters.countDrop(.noBuffer)
            }
        }
    }

    // MARK: Network → guests

    /// A decapsulated frame: learn where its source lives, deliver to the local NIC that owns
    /// its destination, or flood it to the VNI's local NICs (never back to the network).
    func fromNetwork(_ packet: Packet, outer: VXLANDecapsulated, switchIndex: Int32, worker: Worker) {
        let data = worker.pool.data(packet)
        let source = data.loadMAC(at: 6)
        let network = worker.switches.storage + Int(switchIndex)
        if source & (1 << 40) == 0, let index = remoteIndex(outer.outerSource),
            network.pointee.table.learn(source, location: Int32(-(index + 2)), now: now)
        {
            worker.switches.requestGrowth(switchIndex)
        }
        let destination = data.loadMAC(at: 0)
        if destination & (1 << 40) == 0 {
            let location = network.pointee.table.lookup(
                destination,
                now: now,
                ageLimit: worker.settings.macAgeSeconds
            )
            if location >= 0 {
                worker.deliver(packet, to: Int(location))
                return
            }
            if location <= -2 {
                worker.drop(packet, .hairpin, worker.globalCounters)
                return
            }
        }
        worker.flood(packet, vni: outer.vni, from: -1, toUnderlay: false)
    }

    /// The switch of `vni`, -1 when no local NIC is in it. Frames of one batch mostly share a
    /// VNI: the last answer is kept until the next configuration.
    @inline(__always)
    func switchIndex(of vni: UInt32, worker: Worker) -> Int32 {
        if let cachedVNI, cachedVNI.vni == vni { return cachedVNI.index }
        let index = worker.switches.index(of: vni)
        cachedVNI = (vni, index)
        return index
    }

    var cachedVNI: (vni: UInt32, index: Int32)? {
        get { cache.pointee.vni }
        set { cache.pointee.vni = newValue }
    }

    func remoteIndex(_ address: UnderlayAddress) -> Int? {
        if let lastRemote, lastRemote.address == address { return lastRemote.index }
        if let index = vtepIndex[address] {
            lastRemote = (address, index)
            return index
        }
        let index = vtepCount
        guard index < Self.maximumVTEPs else { return nil }
        (vteps + index).initialize(to: address)
        vtepCount = index + 1
        vtepIndex[address] = index
        lastRemote = (address, index)
        return index
    }

    /// The next hop the last encapsulated frame went to, resolved in second `checked`.
    var lastResolved: (address: UnderlayAddress, mac: UInt64, checked: UInt32)? {
        get { cache.pointee.resolved }
        set { cache.pointee.resolved = newValue }
    }
    /// The VTEP the last frame came from (consecutive frames mostly share it).
    var lastRemote: (address: UnderlayAddress, index: Int)? {
        get { cache.pointee.remote }
        set { cache.pointee.remote = newValue }
    }
    /// The neighbour the last frame refreshed, and when: refreshed at most once a second.
    var lastNeighbor: (address: UnderlayAddress, mac: UInt64, seen: UInt32)? {
        get { cache.pointee.neighbor }
        set { cache.pointee.neighbor = newValue }
    }

    /// The outer source MAC is the sender's when it is on-link, else the gateway's.
    func learnNeighbor(from outer: VXLANDecapsulated) {
        if let lastNeighbor, lastNeighbor.seen == now, lastNeighbor.mac == outer.outerSourceMAC,
            lastNeighbor.address == outer.outerSource
        {
            return
        }
        lastNeighbor = (outer.outerSource, outer.outerSourceMAC, now)
        if isOnLink(outer.outerSource) {
            neighbors[outer.outerSource] = Neighbor(mac: outer.outerSourceMAC, seen: now)
        } else if let gateway = settings.gateway, neighbors[gateway] == nil {
            neighbors[gateway] = Neighbor(mac: outer.outerSourceMAC, seen: now)
        }
    }

    // MARK: Guests → network

    func encapsulate(_ packet: Packet, vni: UInt32, to destination: UnderlayAddress, worker: Worker) {
        var packet = packet
        let destinationMAC: UInt64
        if isMulticast(destination) {
            destinationMAC = multicastMAC(destination)
        } else {
            let nextHop = isOnLink(destination) ? destination : (settings.gateway ?? destination)
            if let lastResolved, lastResolved.checked == now, lastResolved.address == nextHop {
                destinationMAC = lastResolved.mac
            } else {
                guard let neighbor = neighbors[nextHop], now &- neighbor.seen <= settings.neighborAgeSeconds else {
                    solicit(nextHop, worker: worker)
                    worker.drop(packet, .unresolvedNeighbor, worker.globalCounters)
                    return
                }
                destinationMAC = neighbor.mac
                lastResolved = (nextHop, neighbor.mac, now)
            }
        }
        let data = worker.pool.data(packet)
        let sourcePort = FlowHash.vxlanSourcePort(FlowHash.hash(data, length: Int(packet.length)))
        let tunnel = VXLANEncapsulation(
            sourceMAC: localMAC,
            destinationMAC: destinationMAC,
            source: settings.vtep,
            destination: destination
        )
        guard tunnel.encapsulate(&packet, pool: worker.pool, vni: vni, sourcePort: sourcePort) else {
            worker.drop(packet, .oversize, worker.globalCounters)
            return
        }
        queue(packet, worker: worker)
    }

    func queue(_ packet: Packet, worker: Worker) {
        if transmitBatch.isFull { transmitQueued(worker) }
        transmitBatch.append(packet)
        worker.globalCounters.countOut(bytes: Int(packet.length))
    }

    func isMulticast(_ address: UnderlayAddress) -> Bool {
        switch address {
        case .v4(let value): value >> 28 == 0xE
        case .v6(let value): value.high >> 56 == 0xFF
        }
    }

    func isOnLink(_ address: UnderlayAddress) -> Bool {
        guard let length = settings.prefixLength else { return settings.gateway == nil }
        switch (address, settings.vtep) {
        case (.v4(let a), .v4(let b)):
            let mask: UInt32 = length == 0 ? 0 : ~0 << (32 - length)
            return a & mask == b & mask
        case (.v6(let a), .v6(let b)):
            let highMask: UInt64 = length == 0 ? 0 : (length >= 64 ? ~0 : ~0 << (64 - length))
            let lowMask: UInt64 = length <= 64 ? 0 : (length >= 128 ? ~0 : ~0 << (128 - length))
            return a.high & highMask == b.high & highMask && a.low & lowMask == b.low & lowMask
        default:
            return false
        }
    }

    // MARK: ARP, ND, IGMP, MLD for the VTEP address

    func handleARP(_ arp: UnsafeMutableRawPointer, length: Int, worker: Worker) {
        guard case .v4(let vtep) = settings.vtep, let message = ARP.parse(arp, length: length) else { return }
        if message.senderIP != 0 {
            let sender = UnderlayAddress.v4(message.senderIP)
            // Refresh known neighbours always; learn new ones when the ARP concerns us.
            if neighbors[sender] != nil || message.targetIP == vtep {
                neighbors[sender] = Neighbor(mac: message.senderMAC, seen: now)
            }
        }
        guard message.operation == ARP.request, message.targetIP == vtep else { return }
        guard var reply = worker.pool.allocate() else {
            worker.globalCounters.countDrop(.noBuffer)
            return
        }
        reply.length = UInt16(ARP.buildReply(into: worker.pool.data(reply), answering: message, ourMAC: localMAC))
        queue(reply, worker: worker)
    }

    /// Neighbour discovery and MLD queries; returns true when the frame was one of those.
    func handleICMPv6(_ frame: UnsafeMutableRawPointer, length: Int, worker: Worker) -> Bool {
        guard length >= 14 + 40 else { return false }
        let ip = frame + Ethernet.headerLength
        let ipLength = length - Ethernet.headerLength
        if let query = MLD.parseQuery(ip, length: ipLength) {
            answer(mldGroup: query.group, worker: worker)
            return true
        }
        guard ip.loadByte(at: 6) == IPProtocol.icmpv6, let neighbor = ICMPv6.parseNeighborPacket(ip, length: ipLength)
        else { return false }
        guard case .v6(let vtep) = settings.vtep else { return true }
        let message = neighbor.message
        if message.isSolicitation {
            guard message.target == vtep else { return true }
            if !neighbor.ip.source.isUnspecified, let mac = message.linkLayerAddress {
                neighbors[.v6(neighbor.ip.source)] = Neighbor(mac: mac, seen: now)
            }
            guard var reply = worker.pool.allocate() else {
                worker.globalCounters.countDrop(.noBuffer)
                return true
            }
            reply.length = UInt16(
                ICMPv6.buildNeighborAdvertisement(
                    into: worker.pool.data(reply),
                    answering: neighbor,
                    requesterMAC: frame.loadMAC(at: 6),
                    ourMAC: localMAC
                )
            )
            queue(reply, worker: worker)
        } else {
            neighbors[.v6(message.target)] = Neighbor(mac: message.linkLayerAddress ?? frame.loadMAC(at: 6), seen: now)
        }
        return true
    }

    /// Sends an ARP request / neighbour solicitation for `address`, at most once a second.
    func solicit(_ address: UnderlayAddress, worker: Worker) {
        if let last = lastSolicited[address], last == now { return }
        lastSolicited[address] = now
        guard var request = worker.pool.allocate() else { return }
        let data = worker.pool.data(request)
        switch (address, settings.vtep) {
        case (.v4(let target), .v4(let source)):
            request.length = UInt16(
                ARP.buildRequest(into: data, senderMAC: localMAC, senderIP: source, targetIP: target)
            )
        case (.v6(let target), .v6(let source)):
            request.length = UInt16(
                ICMPv6.buildNeighborSolicitation(into: data, sourceMAC: localMAC, source: source, target: target)
            )
        default:
            worker.pool.release(request)
            return
        }
        queue(request, worker: worker)
    }

    func sendMembership(vni: UInt32, join: Bool, worker: Worker) {
        guard var message = worker.pool.allocate() else { return }
        let data = worker.pool.data(message)
        switch (group(of: vni), settings.vtep) {
        case (.v4(let group), .v4(let source)):
            message.length = UInt16(
                join
                    ? IGMP.buildReport(into: data, sourceMAC: localMAC, source: source, group: group)
                    : IGMP.buildLeave(into: data, sourceMAC: localMAC, source: source, group: group)
            )
        case (.v6(let group), .v6):
            message.length = UInt16(
                join
                    ? MLD.buildReport(into: data, sourceMAC: localMAC, source: linkLocal, group: group)
                    : MLD.buildDone(into: data, sourceMAC: localMAC, source: linkLocal, group: group)
            )
        default:
            worker.pool.release(message)
            return
        }
        queue(message, worker: worker)
    }

    func answer(igmpGroup: UInt32, worker: Worker) {
        for vni in joined {
            if case .v4(let group) = group(of: vni), igmpGroup == 0 || igmpGroup == group {
                sendMembership(vni: vni, join: true, worker: worker)
            }
        }
    }

    func answer(mldGroup: IPv6Address, worker: Worker) {
        for vni in joined {
            if case .v6(let group) = group(of: vni), mldGroup == IPv6Address(high: 0, low: 0) || mldGroup == group {
                sendMembership(vni: vni, join: true, worker: worker)
            }
        }
    }

    static func dropReason(_ reason: VXLANDropReason) -> DropReason {
        switch reason {
        case .truncated, .truncatedInner: .truncated
        case .notIP, .notUDP, .notVXLANPort, .badIPChecksum: .notVXLAN
        case .ipOptionsOrFragment: .ipOptionsOrFragment
        case .badVXLANFlags: .badVXLANFlags
        }
    }
}
