#if canImport(Glibc)
    import Glibc
#endif

/// The back-end side of one vhost-user connection, as a state machine without I/O: it takes
/// one decoded message and returns the reply to send (if any) and what changed for the data
/// path. Any message that breaks the protocol throws; the owner then resets the session
/// (`reset()`), counts and logs it, and this NIC alone is affected.
///
/// ```
///  connect ─► GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER
///          ─► SET_FEATURES, SET_MEM_TABLE, per ring: [CALL] NUM, BASE, ADDR, KICK, [ENABLE]
///          ─► ring ready (memory, size, addresses, kick; enabled) ─► data path runs it
///  GET_VRING_BASE(i) ─► ring stopped, reply with where the data path stopped
/// ```
///
/// The orders of QEMU and of DPDK virtio_user differ (DPDK sends every CALL first and KICK
/// last, QEMU may send the memory table again while rings run); readiness is recomputed after
/// every message, so any order that ends with a complete ring works.
public final class VhostUserSession {
    // Feature bits (VIRTIO 1.1 §5.1.3, §6; vhost-user.rst).
    public static let featureCSUM: UInt64 = 1 << 0
    public static let featureGuestCSUM: UInt64 = 1 << 1
    public static let featureGuestTSO4: UInt64 = 1 << 7
    public static let featureGuestTSO6: UInt64 = 1 << 8
    public static let featureHostTSO4: UInt64 = 1 << 11
    public static let featureHostTSO6: UInt64 = 1 << 12
    public static let featureMergeableBuffers: UInt64 = 1 << 15
    public static let featureMultiQueue: UInt64 = 1 << 22
    public static let featureAnyLayout: UInt64 = 1 << 27
    public static let featureIndirectDescriptors: UInt64 = 1 << 28
    public static let featureEventIndex: UInt64 = 1 << 29
    public static let featureProtocolFeatures: UInt64 = 1 << 30
    public static let featureVersion1: UInt64 = 1 << 32

    public static let protocolMultiQueue: UInt64 = 1 << 0
    public static let protocolReplyAck: UInt64 = 1 << 3
    /// The front-end tells us the MTU it gives the guest (QEMU's `host_mtu`) and lets us refuse it.
    public static let protocolNetMTU: UInt64 = 1 << 4

    /// What the back-end offers (docs/VHOST-USER.md, Decisions). CSUM: the guest may leave its
    /// checksums to us (completed as the frame enters, as for taps). HOST_TSO4/6: the guest
    /// hands over TCP super-frames of up to 64 KiB, cut into segments as they enter (as a tap's
    /// are). GUEST_CSUM with GUEST_TSO4/6: in-order segments of one TCP flow reach the guest
    /// merged into one super-frame with a partial checksum (as a tap's do); every other frame
    /// goes with its checksums complete.
    public static let offeredFeatures: UInt64 =
        featureCSUM | featureGuestCSUM | featureHostTSO4 | featureHostTSO6 | featureGuestTSO4 | featureGuestTSO6
        | featureVersion1 | featureAnyLayout | featureMergeableBuffers | featureIndirectDescriptors
        | featureEventIndex | featureProtocolFeatures | featureMultiQueue
    public static let offeredProtocolFeatures: UInt64 = protocolMultiQueue | protocolReplyAck | protocolNetMTU

    /// Largest ring the split format allows (VIRTIO 1.1 §2.6: queue size ≤ 32768).
    public static let maximumRingSize: UInt32 = 32768

    /// One virtqueue's configuration as the front-end gave it.
    public struct Ring {
        public var size: UInt32 = 0
        /// Where the data path starts (SET_VRING_BASE) or stopped (GET_VRING_BASE).
        public var base: UInt16 = 0
        public var address: VhostUserMessage.VringAddress?
        /// -1: none given; `pollsInsteadOfKick`: the front-end said "no fd" (bit 8).
        public var kick: Int32 = -1
        public var call: Int32 = -1
        public var error: Int32 = -1
        public var pollsInsteadOfKick = false
        public var kicked = false
        public var enabled = false
        /// Host addresses of the descriptor table, available and used rings, once translated.
        public var descriptors: UnsafeMutableRawPointer?
        public var available: UnsafeMutableRawPointer?
        public var used: UnsafeMutableRawPointer?

        public var isReady: Bool { descriptors != nil && (kick >= 0 || pollsInsteadOfKick) && kicked && enabled }
    }

    /// What a message changed for the data path.
    public enum Event: Equatable {
        /// Ring `index` can run (it was not before).
        case ringReady(Int)
        /// Ring `index` must stop (GET_VRING_BASE, disable, or its memory went away).
        case ringStopped(Int)
        /// The memory table was replaced: running rings were re-translated.
        case memoryChanged
    }

    public struct Outcome {
        public var reply: VhostUserMessage?
        public var events: [Event] = []
    }

    public let queuePairs: Int
    public private(set) var owner = false
    public private(set) var features: UInt64 = 0
    public private(set) var protocolFeatures: UInt64 = 0
    public private(set) var memory: GuestMemory?
    public private(set) var rings: [Ring]
    public private(set) var mtu: UInt16?
    /// The largest guest MTU the daemon carries (`Daemon.largestGuestMTU` or `-m`): a larger
    /// NET_SET_MTU is refused (a non-zero REPLY_ACK; QEMU then does not start the NIC), since
    /// the guest's full-size frames would be lost.
    public var largestMTU: UInt16 = .max
    /// The last MTU refused, for the log.
    public private(set) var refusedMTU: UInt16?
    /// Stops a running ring in the data path and returns the next available index it had not
    /// taken; must not return before the data path let go of the ring (its fds, its memory).
    public var stoppedIndex: (Int) -> UInt16 = { _ in 0 }
    /// Rings stopped while handling the current message.
    private var stopped = Set<Int>()

    public init(queuePairs: Int = 8) {
        self.queuePairs = queuePairs
        rings = Array(repeating: Ring(), count: 2 * queuePairs)
    }

    deinit { closeRingDescriptors() }

    /// Back to a fresh connection's state: rings stopped, memory unmapped, fds closed.
    public func reset() {
        closeRingDescriptors()
        rings = Array(repeating: Ring(), count: 2 * queuePairs)
        memory = nil
        owner = false
        features = 0
        protocolFeatures = 0
        mtu = nil
    }

    private func closeRingDescriptors() {
        for ring in rings {
            for fd in [ring.kick, ring.call, ring.error] where fd >= 0 { close(fd) }
        }
    }

    /// Whether the front-end negotiated `bit` (of SET_FEATURES).
    public func negotiated(_ bit: UInt64) -> Bool { features & bit != 0 }

    /// Handles one message. Takes ownership of its fds: kept ones are closed by `reset`, the
    /// rest are closed before returning, thrown or not.
    public func handle(_ message: VhostUserMessage) throws(VhostUserError) -> Outcome {
        var keptDescriptors = Set<Int32>()
        defer { for fd in message.fds where !keptDescriptors.contains(fd) { close(fd) } }
        let readyBefore = rings.map(\.isReady)
        var outcome = Outcome()
        var replyValue: UInt64?
        let request = message.request
        guard message.flags & 3 == VhostUserMessage.version else {
            throw .protocolViolation("request \(request) with header version \(message.flags & 3)")
        }
        if ![
            VhostUserRequest.setMemTable, VhostUserRequest.setVringKick, VhostUserRequest.setVringCall,
            VhostUserRequest.setVringErr,
        ].contains(request), !message.fds.isEmpty {
            throw .badDescriptors(request: request, expected: 0, got: message.fds.count)
        }

        // A running ring that this message reconfigures is stopped first (synchronously, so the
        // data path lets go of its descriptors and memory before they change), and its position
        // kept; if it is still complete afterwards it starts again from there (`ringReady`).
        let affected = try affectedRings(message)
        for index in affected where rings[index].isReady {
            rings[index].base = stoppedIndex(index)
            stopped.insert(index)
        }
        defer { stopped.removeAll() }

        switch request {
        case VhostUserRequest.getFeatures:
            outcome.reply = .reply(to: request, payload: VhostUserMessage.littleEndianBytes(Self.offeredFeatures))
        case VhostUserRequest.setFeatures:
            let value = try message.u64()
            guard value & ~Self.offeredFeatures == 0 else {
                throw .protocolViolation(
                    "SET_FEATURES with bits never offered: 0x\(String(value & ~Self.offeredFeatures, radix: 16))"
                )
            }
            features = value
            // Without PROTOCOL_FEATURES rings start enabled (vhost-user.rst, "Ring states").
            if !negotiated(Self.featureProtocolFeatures) {
                for index in rings.indices { rings[index].enabled = true }
            }
            replyValue = 0
        case VhostUserRequest.getProtocolFeatures:
            outcome.reply = .reply(
                to: request,
                payload: VhostUserMessage.littleEndianBytes(Self.offeredProtocolFeatures)
            )
        case VhostUserRequest.setProtocolFeatures:
            let value = try message.u64()
            guard value & ~Self.offeredProtocolFeatures == 0 else {
                throw .protocolViolation("SET_PROTOCOL_FEATURES with bits never offered")
            }
            protocolFeatures = value
            replyValue = 0
        case VhostUserRequest.getQueueNum:
            outcome.reply = .reply(to: request, payload: VhostUserMessage.littleEndianBytes(UInt64(queuePairs)))
        case VhostUserRequest.setOwner:
            owner = true
            replyValue = 0
        case VhostUserRequest.resetOwner:
            // Deprecated; older DPDK virtio_user sends it on stop: every ring stops (they were
            // stopped above). The negotiated features stay: front-ends do not negotiate again.
            for index in stopped.sorted() { outcome.events.append(.ringStopped(index)) }
            let kept = (features, protocolFeatures)
            reset()
            (features, protocolFeatures) = kept
            return outcome
        case VhostUserRequest.setMemTable:
            let descriptions = try message.memoryRegions()
            keptDescriptors = Set(message.fds)  // GuestMemory closes them
            memory = try GuestMemory(descriptions, fds: message.fds)
            try translateRings(stoppingOnFailure: &outcome)
            outcome.events.append(.memoryChanged)
            replyValue = 0
        case VhostUserRequest.setVringNum:
            let (index, num) = try message.vringState()
            let ring = try ringIndex(index)
            guard num >= 1, num <= Self.maximumRingSize, num & (num - 1) == 0 else {
                throw .protocolViolation("ring \(ring) size \(num) is not a power of two in 1…\(Self.maximumRingSize)")
            }
            rings[ring].size = num
            rings[ring].descriptors = nil
            try translate(ring)
            replyValue = 0
        case VhostUserRequest.setVringBase:
            let (index, num) = try message.vringState()
            let ring = try ringIndex(index)
            guard num <= UInt32(UInt16.max) else { throw .protocolViolation("ring \(ring) base \(num) exceeds 65535") }
            rings[ring].base = UInt16(num)
            replyValue = 0
        case VhostUserRequest.setVringAddr:
            let address = try message.vringAddress()
            let ring = try ringIndex(address.index)
            rings[ring].address = address
            try translate(ring)
            replyValue = 0
        case VhostUserRequest.getVringBase:
            let (index, _) = try message.vringState()
            let ring = try ringIndex(index)
            // Stopped above if it ran; `base` is where the data path stopped, or where it was
            // last stopped or set. It stays stopped until kicked again (vhost-user.rst).
            rings[ring].kicked = false
            outcome.reply = .reply(
                to: request,
                payload: VhostUserMessage.littleEndianBytes(UInt32(ring))
                    + VhostUserMessage.littleEndianBytes(UInt32(rings[ring].base))
            )
            appendEvents(before: readyBefore, into: &outcome)
            return outcome
        case VhostUserRequest.setVringKick, VhostUserRequest.setVringCall, VhostUserRequest.setVringErr:
            let value = try message.u64()
            let ring = try ringIndex(UInt32(value & 0xFF))
            guard value & ~UInt64(0x1FF) == 0 else {
                throw .protocolViolation("request \(request) with payload 0x\(String(value, radix: 16))")
            }
            let noDescriptor = value & 0x100 != 0
            guard message.fds.count == (noDescriptor ? 0 : 1) else {
                throw .badDescriptors(request: request, expected: noDescriptor ? 0 : 1, got: message.fds.count)
            }
            let fd: Int32 = noDescriptor ? -1 : message.fds[0]
            if fd >= 0 {
                // The worker reads kicks and writes calls on these: a front-end passing a pipe,
                // or an eventfd it keeps full, must never block it (and every other NIC).
                guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 else {
                    throw .protocolViolation("request \(request): its descriptor cannot be made non-blocking")
                }
                keptDescriptors.insert(fd)
            }
            switch request {
            case VhostUserRequest.setVringKick:
                if rings[ring].kick >= 0 { close(rings[ring].kick) }
                rings[ring].kick = fd
                rings[ring].pollsInsteadOfKick = noDescriptor
                rings[ring].kicked = true
            case VhostUserRequest.setVringCall:
                if rings[ring].call >= 0 { close(rings[ring].call) }
                rings[ring].call = fd
            default:
                if rings[ring].error >= 0 { close(rings[ring].error) }
                rings[ring].error = fd
            }
            replyValue = 0
        case VhostUserRequest.setVringEnable:
            // Meant for PROTOCOL_FEATURES, but DPDK virtio_user reconnecting (server mode)
            // enables its queue pairs before it sends SET_FEATURES again: taken in any state.
            // Without PROTOCOL_FEATURES, SET_FEATURES enables every ring anyway.
            let (index, num) = try message.vringState()
            let ring = try ringIndex(index)
            guard num <= 1 else { throw .protocolViolation("SET_VRING_ENABLE(\(num)) on ring \(ring)") }
            rings[ring].enabled = num == 1
            replyValue = 0
        case VhostUserRequest.sendRARP:
            // A migration announce we did not offer to take part in: acknowledged, ignored.
            _ = try message.u64()
            replyValue = 0
        case VhostUserRequest.netSetMTU:
            let value = try message.u64()
            guard value >= 68 && value <= 65535 else { throw .protocolViolation("NET_SET_MTU \(value)") }
            if value > UInt64(largestMTU) {
                refusedMTU = UInt16(value)
                replyValue = 1
            } else {
                mtu = UInt16(value)
                replyValue = 0
            }
        default:
            throw .unknownRequest(request)
        }
        if message.needsReply && protocolFeatures & Self.protocolReplyAck != 0, outcome.reply == nil, let replyValue {
            outcome.reply = .reply(to: request, payload: VhostUserMessage.littleEndianBytes(replyValue))
        }
        appendEvents(before: readyBefore, into: &outcome)
        return outcome
    }

    /// Rings whose readiness or configuration `message` may change.
    private func affectedRings(_ message: VhostUserMessage) throws(VhostUserError) -> [Int] {
        switch message.request {
        case VhostUserRequest.setMemTable, VhostUserRequest.resetOwner, VhostUserRequest.setFeatures:
            return Array(rings.indices)
        case VhostUserRequest.setVringNum, VhostUserRequest.setVringBase, VhostUserRequest.getVringBase,
            VhostUserRequest.setVringEnable:
            return [try ringIndex(try message.vringState().index)]
        case VhostUserRequest.setVringAddr:
            return [try ringIndex(try message.vringAddress().index)]
        case VhostUserRequest.setVringKick, VhostUserRequest.setVringCall, VhostUserRequest.setVringErr:
            return [try ringIndex(UInt32(try message.u64() & 0xFF))]
        default:
            return []
        }
    }

    /// `ringStopped` for rings that stopped, `ringReady` for rings that can run now, whether
    /// they just became complete or were stopped above to be reconfigured.
    private func appendEvents(before: [Bool], into outcome: inout Outcome) {
        for index in rings.indices {
            let ready = rings[index].isReady
            if ready && (!before[index] || stopped.contains(index)) {
                outcome.events.append(.ringReady(index))
            } else if !ready && before[index] {
                outcome.events.append(.ringStopped(index))
            }
        }
    }

    private func ringIndex(_ index: UInt32) throws(VhostUserError) -> Int {
        guard index < UInt32(rings.count) else {
            throw .protocolViolation("ring \(index) does not exist (\(rings.count) rings)")
        }
        return Int(index)
    }

    /// Translates a ring's addresses once it has a size, addresses and memory; a ring whose
    /// addresses lie outside the memory table is a protocol error.
    private func translate(_ index: Int) throws(VhostUserError) {
        rings[index].descriptors = nil
        rings[index].available = nil
        rings[index].used = nil
        let ring = rings[index]
        guard let address = ring.address, ring.size > 0, let memory else { return }
        let size = UInt64(ring.size)
        // VIRTIO 1.1 §2.6: descriptor table 16·n (align 16), available 6+2·n (align 2),
        // used 6+8·n (align 4).
        guard address.descriptors % 16 == 0, address.available % 2 == 0, address.used % 4 == 0 else {
            throw .protocolViolation("ring \(index) addresses are misaligned")
        }
        guard let descriptors = memory.translate(userAddress: address.descriptors, length: 16 * size),
            let available = memory.translate(userAddress: address.available, length: 6 + 2 * size),
            let used = memory.translate(userAddress: address.used, length: 6 + 8 * size)
        else {
            throw .protocolViolation("ring \(index) lies outside the memory table")
        }
        rings[index].descriptors = descriptors
        rings[index].available = available
        rings[index].used = used
    }

    /// After a new memory table: every configured ring is translated again.
    private func translateRings(stoppingOnFailure outcome: inout Outcome) throws(VhostUserError) {
        for index in rings.indices { try translate(index) }
    }
}
