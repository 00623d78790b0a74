import ButterflyDataplane
import ButterflyPacket
import CButterflyLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A BENCH NIC: a guest the daemon plays itself, to measure its own path without VMs.
///
/// - **Responder** (`ICMP_RCV_LIKE`): answers ARP requests for its IPv4 addresses and ICMP echo
///   requests sent to them, like a host.
/// - **Prober** (`ICMP_SND_LIKE`): sends ICMP echo requests to `--dip`/`--dmac`, one at a time:
///   the next leaves when the reply arrives (or after `timeout`, the probe counted lost), each
///   carrying its send time, so every reply gives one round trip through the daemon's whole
///   path (anti-spoofing, firewall, switch, VXLAN when the peer is on another host).
///
/// The port is driven by the worker like any other: what the switch delivers arrives in
/// `transmit` (requests for the responder, replies for the prober), what the NIC "sends"
/// leaves through `receive`. Its descriptor (an eventfd, and a timerfd for the prober's
/// timeouts) wakes the idle worker when frames wait. The figures are published for the API
/// (`statistics`) with relaxed atomics.
public final class BenchPort: PacketPort, @unchecked Sendable {
    // Safe: the frame queue and timing state are touched only by the worker thread; the
    // statistics are atomics.
    public enum Role: Sendable, Equatable {
        case responder
        case prober(destinationIP: UInt32, destinationMAC: UInt64)
    }

    public let name: String
    public let role: Role
    public private(set) var portDrops = PortDropCounters()
    /// Readable when the port has frames to hand the worker (an eventfd), or, for a prober,
    /// when its probe timed out (a timerfd, nested in an epoll set with the eventfd).
    public let fileDescriptor: Int32
    private let ready: Int32
    private let timer: Int32
    private let mac: UInt64
    private let ips: [UInt32]
    /// Frames built and waiting for `receive` (at most `queueLimit`).
    private var outgoing: [[UInt8]] = []
    private static let queueLimit = 256
    private let timeout: UInt64
    /// The probe in flight: its sequence number and send time.
    private var inFlight: (sequence: UInt16, sentAt: UInt64)?
    private var sequence: UInt16 = 0
    private let identifier: UInt16

    private let sent = Atomic<UInt64>(0)
    private let received = Atomic<UInt64>(0)
    private let answered = Atomic<UInt64>(0)
    private let minimum = Atomic<UInt64>(0)
    private let total = Atomic<UInt64>(0)
    private let maximum = Atomic<UInt64>(0)

    public init(name: String, mac: MACAddress, ips: [UInt32], role: Role, timeoutNanoseconds: UInt64 = 100_000_000)
        throws(VhostUserError)
    {
        self.name = name
        self.mac = mac.value
        self.ips = ips
        self.role = role
        timeout = timeoutNanoseconds
        identifier = UInt16(truncatingIfNeeded: mac.value)
        fileDescriptor = epoll_create1(Int32(EPOLL_CLOEXEC))
        ready = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        timer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        guard fileDescriptor >= 0, ready >= 0, timer >= 0 else {
            let reason = String(cString: strerror(errno))
            for fd in [fileDescriptor, ready, timer] where fd >= 0 { close(fd) }
            throw .io("bench NIC \(name): \(reason)")
        }
        for fd in [ready, timer] {
            var event = epoll_event()
            event.events = UInt32(EPOLLIN.rawValue)
            event.data.fd = fd
            _ = epoll_ctl(fileDescriptor, EPOLL_CTL_ADD, fd, &event)
        }
        if case .prober = role { sendProbe() }
    }

    deinit {
        close(fileDescriptor)
        close(ready)
        close(timer)
    }

    /// The figures so far (any thread).
    public var statistics: BenchFigures {
        var figures = BenchFigures()
        let replies = received.load(ordering: .relaxed)
        figures.probesSent = sent.load(ordering: .relaxed)
        figures.repliesReceived = replies
        figures.requestsAnswered = answered.load(ordering: .relaxed)
        figures.minimumNanoseconds = minimum.load(ordering: .relaxed)
        figures.averageNanoseconds = replies == 0 ? 0 : total.load(ordering: .relaxed) / replies
        figures.maximumNanoseconds = maximum.load(ordering: .relaxed)
        return figures
    }

    // MARK: Worker side

    public var hasSleepHooks: Bool { true }

    public func wake() {
        var drained: UInt64 = 0
        _ = read(ready, &drained, 8)
        _ = read(timer, &drained, 8)
        expireProbe()
    }

    /// A probe unanswered past its deadline is lost: the next one goes. Checked on wake-ups
    /// (the timer) and on every receive call (a busy worker polls instead of sleeping).
    private func expireProbe() {
        guard let probe = inFlight else { return }
        let waited = MonotonicClock.nanoseconds() &- probe.sentAt
        guard waited >= timeout else {
            // Woken early (the clock restarted when the probe left): wait for the rest.
            armTimer(after: timeout &- waited)
            return
        }
        inFlight = nil
        sendProbe()
    }

    /// The timeout's wake-up, `nanoseconds` from now (a one-shot timer).
    private func armTimer(after nanoseconds: UInt64) {
        var deadline = itimerspec()
        deadline.it_value = timespec(
            tv_sec: Int(nanoseconds / 1_000_000_000),
            tv_nsec: Int(nanoseconds % 1_000_000_000)
        )
        _ = timerfd_settime(timer, 0, &deadline, nil)
    }

    public func prepareToSleep() -> Bool { !outgoing.isEmpty }

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        if case .prober = role, outgoing.isEmpty { expireProbe() }
        var count = 0
        var taken = 0
        for frame in outgoing {
            guard !batch.isFull, var packet = pool.allocate() else { break }
            let data = pool.data(packet)
            frame.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: frame.count) }
            packet.length = UInt16(frame.count)
            if case .prober = role, frame.count > 34, frame[34] == 8 {
                // The probe's clock starts as it enters the daemon's path.
                let now = MonotonicClock.nanoseconds()
                inFlight?.sentAt = now
                armTimer(after: timeout)
                pool.data(packet).storeBytes(of: now.bigEndian, toByteOffset: 42, as: UInt64.self)
                Self.finishEcho(pool.data(packet) + 34, length: frame.count - 34, type: 8)
            }
            batch.append(packet)
            count &+= 1
            taken &+= 1
        }
        outgoing.removeFirst(taken)
        return count
    }

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        for index in 0..<batch.count {
            let packet = batch[index]
            handle(pool.data(packet), length: Int(packet.length))
        }
        let count = batch.count
        batch.releaseAll(to: pool)
        return count
    }

    /// A frame the switch delivered to this NIC.
    private func handle(_ frame: UnsafeMutableRawPointer, length: Int) {
        guard length >= 14 else { return }
        let destination = Ethernet.destination(frame)
        guard destination == mac || Ethernet.isMulticast(destination) else { return }
        switch Ethernet.etherType(frame) {
        case EtherType.arp:
            guard case .responder = role, let request = ARP.parse(frame + 14, length: length - 14),
                request.operation == ARP.request, ips.contains(request.targetIP)
            else { return }
            var reply = [UInt8](repeating: 0, count: ARP.frameLength)
            _ = reply.withUnsafeMutableBytes { ARP.buildReply(into: $0.baseAddress!, answering: request, ourMAC: mac) }
            queue(reply)
        case EtherType.ipv4:
            guard destination == mac, let ip = IPv4.parse(frame + 14, length: length - 14), ip.protocol == 1,
                !ip.isFragment, ip.payloadLength >= 8
            else { return }
            let icmp = frame + 14 + ip.headerLength
            let type = icmp.load(fromByteOffset: 0, as: UInt8.self)
            if type == 8, case .responder = role, ips.contains(ip.destination) {
                answer(frame, length: 14 + ip.totalLength, ip: ip)
            } else if type == 0, case .prober = role {
                probeReturned(icmp, length: ip.payloadLength)
            }
        default:
            return
        }
    }

    /// An echo reply to the request at `frame`: addresses swapped, type 0, checksums redone.
    private func answer(_ frame: UnsafeMutableRawPointer, length: Int, ip: IPv4.Header) {
        var reply = [UInt8](UnsafeRawBufferPointer(start: frame, count: length))
        reply.withUnsafeMutableBytes { bytes in
            let out = bytes.baseAddress!
            Ethernet.write(out, destination: Ethernet.source(frame), source: mac, etherType: EtherType.ipv4)
            // A plain header (options dropped), the request's payload kept.
            let payload = ip.payloadLength
            let icmp = frame + 14 + ip.headerLength
            (out + 34).copyMemory(from: icmp, byteCount: payload)
            _ = IPv4.write(
                out + 14,
                totalLength: 20 + payload,
                protocol: 1,
                source: ip.destination,
                destination: ip.source
            )
            Self.finishEcho(out + 34, length: payload, type: 0)
        }
        reply.removeLast(reply.count - (34 + ip.payloadLength))
        queue(reply)
        answered.wrappingAdd(1, ordering: .relaxed)
    }

    private func probeReturned(_ icmp: UnsafeMutableRawPointer, length: Int) {
        guard length >= 16, let probe = inFlight,
            icmp.loadUnaligned(fromByteOffset: 4, as: UInt16.self).bigEndian == identifier,
            icmp.loadUnaligned(fromByteOffset: 6, as: UInt16.self).bigEndian == probe.sequence
        else { return }
        let sentAt = UInt64(bigEndian: icmp.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let now = MonotonicClock.nanoseconds()
        guard sentAt == probe.sentAt, now >= sentAt else { return }
        let rtt = now &- sentAt
        let replies = received.load(ordering: .relaxed) &+ 1
        if replies == 1 || rtt < minimum.load(ordering: .relaxed) { minimum.store(rtt, ordering: .relaxed) }
        if rtt > maximum.load(ordering: .relaxed) { maximum.store(rtt, ordering: .relaxed) }
        total.wrappingAdd(rtt, ordering: .relaxed)
        received.store(replies, ordering: .relaxed)
        inFlight = nil
        sendProbe()
    }

    /// Queues the next echo request (its time is stamped as it leaves, in `receive`) and arms
    /// the timeout.
    private func sendProbe() {
        guard case .prober(let destinationIP, let destinationMAC) = role else { return }
        sequence &+= 1
        // 14 Ethernet + 20 IPv4 + 8 ICMP + 8 send time + 8 padding = 58 bytes.
        var frame = [UInt8](repeating: 0, count: 58)
        let source = ips.first ?? 0
        frame.withUnsafeMutableBytes { bytes in
            let out = bytes.baseAddress!
            Ethernet.write(out, destination: destinationMAC, source: mac, etherType: EtherType.ipv4)
            _ = IPv4.write(out + 14, totalLength: 44, protocol: 1, source: source, destination: destinationIP)
            out.storeBytes(of: UInt8(8), toByteOffset: 34, as: UInt8.self)
            out.storeBytes(of: identifier.bigEndian, toByteOffset: 38, as: UInt16.self)
            out.storeBytes(of: sequence.bigEndian, toByteOffset: 40, as: UInt16.self)
        }
        inFlight = (sequence, MonotonicClock.nanoseconds())
        queue(frame)
        sent.wrappingAdd(1, ordering: .relaxed)
        armTimer(after: timeout)
    }

    private func queue(_ frame: [UInt8]) {
        guard outgoing.count < Self.queueLimit else {
            portDrops.receiveDropped &+= 1
            return
        }
        outgoing.append(frame)
        var one: UInt64 = 1
        _ = write(ready, &one, 8)
    }

    /// Sets an ICMP echo message's type and checksum (the checksum field zeroed first).
    private static func finishEcho(_ icmp: UnsafeMutableRawPointer, length: Int, type: UInt8) {
        icmp.storeBytes(of: type, toByteOffset: 0, as: UInt8.self)
        icmp.storeBytes(of: UInt16(0), toByteOffset: 2, as: UInt16.self)
        let sum = InternetChecksum.finish(InternetChecksum.add(UnsafeRawPointer(icmp), length: length))
        icmp.storeBytes(of: sum.bigEndian, toByteOffset: 2, as: UInt16.self)
    }
}
