import ButterflyPacket
import CButterflyLinux
import HashTreeCollections
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The packet worker: one thread that owns a packet pool, the ports of its NICs, the MAC tables
/// of their VNIs and the underlay, and runs batches to completion.
///
/// ```
///  loop:  adopt a new DataplaneUpdate if one is waiting (between batches)
///         for each NIC port: receive batch ─► fromGuest ─► per-NIC tx batches / underlay
///         underlay: receive batch ─► fromUnderlay ─► per-NIC tx batches
///         flush tx batches; age MAC tables once a second
///         nothing received for a while ─► epoll_wait(port fds + mailbox eventfd)
/// ```
///
/// State survives configuration changes: a NIC keeps its slot (and the MAC entries pointing
/// at it) as long as its id exists; only what changed is rebuilt.
public final class Worker: @unchecked Sendable {
    // Safe: every stored property below is touched only by the worker thread, except the
    // mailbox, `adoptedVersion` and `running`, which are synchronised.

    public struct Settings: Sendable {
        public var poolCapacity = 16_384
        /// Large (10 KiB) buffers for jumbo frames: 20 MiB of address space, touched only
        /// when jumbo frames flow (PacketPool).
        public var largePoolCapacity = 2048
        public var macAgeSeconds: UInt32 = 300
        /// Empty passes over all ports before sleeping in epoll (each pass is one receive call
        /// per port, so this stays small: waking costs that many calls per port).
        public var idlePollsBeforeSleep = 16
        /// Frames a pass or a wake-up from epoll must bring for the worker to (keep) busy-poll
        /// every port; fewer are served from epoll alone. Each busy pass is a receive call per
        /// port: on a host of 4,096 idle taps the kernel's own chatter on them (IPv6 router
        /// solicitations, MLD reports) kept the worker polling every port, 65 % of a core.
        public var busyPollThreshold = 32
        /// MAC entries per VNI before its table first grows (48: 64 slots, 1 KiB, so thousands
        /// of VNIs of a few NICs cost a few MiB; a table grows after the pass that half filled
        /// it), and the entries its largest table is sized for (2^18: 2^19 slots, 8 MiB,
        /// learning up to 3/4 of them); beyond, the VNI floods unknown destinations (MACTable).
        public var macTableCapacity = 48
        public var macTableMaximum = 1 << 18
        /// MAC-table slots examined for aging once a second (a round over every table is
        /// spread over as many seconds as it needs: never a pause; entries age after
        /// `macAgeSeconds` anyway, the sweep only frees their slots).
        public var macAgingBudget = 1 << 16
        /// MAC-table slots across every VNI of the worker (16 bytes each: 64 MiB): a hostile
        /// underlay spraying inner MACs into many VNIs cannot grow memory past it.
        public var macTableSlotBudget = 1 << 22
        /// Tracked connections across every NIC of the worker (`--conntrack-max`); memory is
        /// reserved up front and used as connections appear (~80 bytes each).
        public var connectionCapacity = 1 << 20
        /// Connection entries examined for expiry per pass over the ports (and 256 times that
        /// once a second), so expiry never pauses the worker.
        public var connectionCollectBudget = 64
        /// NIC slots (and so VNIs) a worker can hold; their packet-path state is reserved up
        /// front (about 48 bytes each, touched only when used).
        public var maximumNICs = 1 << 18
        /// NICs adopted per pass when a change reaches many (a group on hundreds of NICs):
        /// bounds the worker's pause per pass (10–50 µs per NIC on a slow, shared core; 32 gave
        /// pauses up to 1.9 ms there). Asleep, a chunk costs no pass over the ports.
        public var adoptionChunk = 16
        public init() {}
    }

    let settings: Settings
    let pool: PacketPool
    let mailbox = Mutex(Mailbox())
    let pending = Atomic<Bool>(false)
    /// Questions from the control plane (state only the worker may read), answered between
    /// batches: the packet path never takes a lock for them.
    let questions = Mutex<(question: WorkerQuestion, answer: WorkerAnswer?)?>(nil)
    let questionPending = Atomic<Bool>(false)
    /// A port update waiting for the worker thread (`onWorkerThread`).
    let portTask = Mutex<PortTask?>(nil)
    let portTaskPending = Atomic<Bool>(false)
    /// True from `start()` until the worker thread leaves its loop: a port update is then run
    /// by the caller itself.
    let threadRunning = Atomic<Bool>(false)
    let adopted = Atomic<UInt64>(0)
    /// The last publication (`publish`'s sequence number) fully adopted.
    let adoptedPublication = Atomic<UInt64>(0)
    let longestAdoption = Atomic<UInt64>(0)
    let lastAdoption = Atomic<UInt64>(0)
    private let running = Atomic<Bool>(true)
    let wakeFD: Int32
    let epollFD: Int32
    /// Global counters: underlay traffic and drops not attributable to a NIC.
    public let globalCounters = CounterBlock()

    // Worker-owned state.
    var config: DataplaneConfig
    var slots: [GuestSlot?] = []
    var freeSlots: [Int] = []
    var slotByID: [String: Int] = [:]
    /// Per-VNI switches (members, MAC table), reached by index on the packet path.
    let switches: VNISwitches
    /// Per-slot packet-path state (`SlotPath`), `settings.maximumNICs` entries.
    let paths: UnsafeMutablePointer<SlotPath>
    /// Slots with frames waiting in their tx batch.
    var pendingTransmit: [Int] = []
    /// Slots whose NIC names a sniff target (resolved after each adoption).
    var mirroredSlots: [Int] = []
    /// Slots whose port has sleep hooks (`PacketPort.hasSleepHooks`): asked before each sleep.
    var sleepHookSlots: [Int] = []
    /// Whether every port with sleep hooks must ask for notifications again before the next
    /// sleep (a full pass took frames from all of them, or rings or ports changed); else only
    /// the ones woken since (`wokenHookSlots`): with thousands of vhost-user NICs, a loop over
    /// all of them per wake-up cost a cache miss or more per port.
    var rearmAllSleepHooks = true
    var wokenHookSlots: [Int] = []
    let receiveBatch = PacketBatch()
    var now: UInt32 = 0
    private var lastSweep: UInt32 = 0
    /// An update being adopted chunk by chunk (`Adoption`).
    var adopting: Adoption?
    /// The daemon's main trace (`-t`): every underlay frame, both ways.
    public internal(set) var mainTrace: PcapWriter?
    /// The underlay side (VXLAN + ARP/ND + IGMP/MLD); nil in local mode.
    public var underlay: VXLANUnderlay?
    /// The firewall node: tracked connections of every NIC (each in its NIC's zone).
    public let firewall: Firewall
    public var connections: ConnectionTable { firewall.connections }
    /// Zones are never reused, so entries of a deleted NIC can never match a new one.
    var nextZone: UInt32 = 1

    public init(settings: Settings = Settings(), host: HostConfig) {
        self.settings = settings
        pool = PacketPool(capacity: settings.poolCapacity, largeCapacity: settings.largePoolCapacity)
        firewall = Firewall(connectionCapacity: settings.connectionCapacity)
        switches = VNISwitches(capacity: settings.maximumNICs)
        // Reserved, not touched: a page costs memory only once a slot on it is used. SlotPath
        // is a trivial type, so entries are written in place when their slot is created.
        let bytes = settings.maximumNICs * MemoryLayout<SlotPath>.stride
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(memory != MAP_FAILED, "mmap of the slot table failed: errno \(errno)")
        paths = memory!.bindMemory(to: SlotPath.self, capacity: settings.maximumNICs)
        config = DataplaneConfig(host: host)
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(wakeFD >= 0 && epollFD >= 0, "eventfd/epoll_create1 failed: \(String(cString: strerror(errno)))")
        watch(wakeFD, token: .wake)
    }

    deinit {
        close(wakeFD)
        close(epollFD)
        munmap(paths, settings.maximumNICs * MemoryLayout<SlotPath>.stride)
    }

    // MARK: Control plane side (any thread)

    /// Hands a new configuration to the worker; it is adopted between two batches. Returns
    /// the publication's sequence number (for `waitForAdoption(ofPublication:)`).
    @discardableResult
    public func publish(_ update: DataplaneUpdate) -> UInt64 {
        let sequence = mailbox.withLock { box in
            box.published &+= 1
            box.sequence = box.published
            var update = update
            // A configuration the worker has not adopted yet is replaced: what it changed must
            // still be adopted, each NIC once (an orchestrator's rules name the same NICs again
            // and again). O(NICs this update names).
            var changed: [String] = []
            var full = false
            if var previous = box.update.take() {
                if let earlier = previous.changedNICs.take() { changed = earlier } else { full = true }
            } else {
                box.queued.removeAll()
            }
            if let later = update.changedNICs, !full {
                for id in later where box.queued.insert(id).inserted { changed.append(id) }
                update.changedNICs = changed
            } else {
                update.changedNICs = nil
            }
            box.update = update
            return box.published
        }
        pending.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        return sequence
    }

    /// The longest time the worker spent adopting one configuration (its longest pause in
    /// packet processing for a change), in nanoseconds since start.
    public var longestAdoptionNanoseconds: UInt64 { longestAdoption.load(ordering: .relaxed) }
    /// The time the worker spent adopting the last configuration, in nanoseconds.
    public var lastAdoptionNanoseconds: UInt64 { lastAdoption.load(ordering: .relaxed) }

    /// The version of the last configuration the worker adopted.
    public var adoptedVersion: UInt64 { adopted.load(ordering: .acquiring) }

    /// Waits (briefly) until the worker has adopted publication `sequence` (what `publish`
    /// returned) and every one before it; true once it has: the ports that publication removed
    /// are then no longer used by the worker. A publication, not a configuration version: the
    /// changes of one API request are published with the same version, one after the other.
    @discardableResult
    public func waitForAdoption(ofPublication sequence: UInt64, timeoutMilliseconds: Int = 2000) -> Bool {
        var waited = 0
        while adoptedPublication.load(ordering: .acquiring) < sequence {
            guard waited < timeoutMilliseconds * 10 else { return false }
            usleep(100)
            waited += 1
        }
        return true
    }

    public func stop() {
        running.store(false, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Starts the worker thread, pinned to `cpu` when given; `join()` waits for it after `stop()`.
    public func start(cpu: Int? = nil) {
        pinnedCPU = cpu
        threadRunning.store(true, ordering: .releasing)
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread,
            nil,
            { context in
                let worker = Unmanaged<Worker>.fromOpaque(context!).takeRetainedValue()
                if let cpu = worker.pinnedCPU { _ = cbutterfly_pin_current_thread(Int32(cpu)) }
                worker.run()
                worker.threadRunning.store(false, ordering: .releasing)
                return nil
            },
            context
        )
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    public func join() {
        if thread != 0 { pthread_join(thread, nil) }
        thread = 0
    }

    private var thread = pthread_t()
    private var pinnedCPU: Int?

    /// True on the worker's own thread.
    var isWorkerThread: Bool { thread != 0 && pthread_equal(pthread_self(), thread) != 0 }

    // MARK: Worker thread

    func run() {
        var emptyPolls = 0
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while running.load(ordering: .relaxed) {
            if pending.load(ordering: .acquiring) { adoptPending() }
            if adopting != nil { continueAdoption() }
            if questionPending.load(ordering: .acquiring) { answerQuestion() }
            if portTaskPending.load(ordering: .acquiring) { runPortTask() }
            now = Self.monotonicSeconds()
            firewall.now = now
            if now != lastSweep { sweep() }
            // Asleep (`emptyPolls` at the threshold), the worker goes straight back to epoll:
            // a pass over every port after each wake-up made a trickle of frames on a few of
            // thousands of ports cost a receive call on all of them. An adoption in progress
            // keeps the worker awake (epoll without waiting, below), not passing over the ports.
            if emptyPolls < settings.idlePollsBeforeSleep {
                // A pass that brings a few frames counts as empty: busy polling pays only for
                // traffic, not for a trickle spread over many ports.
                rearmAllSleepHooks = true
                if pollOnce() >= busyThreshold {
                    emptyPolls = 0
                    continue
                }
                emptyPolls += 1
                guard emptyPolls >= settings.idlePollsBeforeSleep else { continue }
            }
            // Ports that suppress notifications while polled (vhost-user) ask for them again;
            // frames that arrived meanwhile are served first.
            if prepareSleepHooks() {
                emptyPolls = 0
                continue
            }
            // Idle: sleep until a port or the mailbox is readable (or a second passes, to age
            // tables), then serve only the ports that woke us. Busy polling of every port
            // resumes only if a wake-up brings `busyPollThreshold` frames. An adoption in
            // progress does not sleep (its next chunk is due) but needs no pass over every
            // port either: a change reaching 9,000 NICs took 282 such passes, 0.3–1.9 s of CPU.
            let ready = epoll_wait(epollFD, &events, Int32(events.count), adopting == nil ? 1000 : 0)
            var work = 0
            for index in 0..<max(0, Int(ready)) {
                switch EpollToken(events[index].data.u64) {
                case .wake:
                    var drained: UInt64 = 0
                    _ = read(wakeFD, &drained, 8)
                case .underlay:
                    work += underlay?.poll(self) ?? 0
                case .port(let slot):
                    guard slot < slots.count, let guest = slots[slot], let port = guest.port else { continue }
                    port.wake()
                    if port.hasSleepHooks { wokenHookSlots.append(slot) }
                    while port.receive(into: receiveBatch, pool: pool) > 0 {
                        work += receiveBatch.count
                        fromGuest(slot: slot, guest)
                    }
                }
            }
            if work > 0 {
                flush()
                growTables()
            }
            emptyPolls = work >= busyThreshold ? 0 : settings.idlePollsBeforeSleep
        }
    }

    /// Asks the ports with sleep hooks that took frames since they last asked (every one of them
    /// after a full pass or a change of rings) to notify again; true when one has frames waiting.
    private func prepareSleepHooks() -> Bool {
        var waiting = false
        if rearmAllSleepHooks {
            rearmAllSleepHooks = false
            for slot in sleepHookSlots {
                if let port = slots[slot]?.port, port.prepareToSleep() { waiting = true }
            }
        } else {
            for slot in wokenHookSlots {
                if let port = slots[slot]?.port, port.hasSleepHooks, port.prepareToSleep() { waiting = true }
            }
        }
        wokenHookSlots.removeAll(keepingCapacity: true)
        return waiting
    }

    /// Frames a pass or a wake-up must bring to make busy polling pay: `busyPollThreshold`,
    /// and an eighth of the ports (a pass costs a receive call on each; with thousands of
    /// ports and one busy guest, epoll serving the busy port alone is the cheaper loop).
    var busyThreshold: Int { max(settings.busyPollThreshold, slots.count / 8) }

    /// Runs one iteration of the worker loop on the calling thread instead of `start()`:
    /// adopts a pending configuration, then one pass over every port. For benchmarks and
    /// tests that drive the engine synchronously. Returns the frames received.
    @discardableResult
    public func runOnce() -> Int {
        if pending.load(ordering: .acquiring) { adoptPending() }
        while adopting != nil { continueAdoption() }
        if questionPending.load(ordering: .acquiring) { answerQuestion() }
        if portTaskPending.load(ordering: .acquiring) { runPortTask() }
        now = Self.monotonicSeconds()
        firewall.now = now
        return pollOnce()
    }

    /// One pass over every port; returns the number of frames received.
    @discardableResult
    func pollOnce() -> Int {
        var work = 0
        for slot in 0..<slots.count {
            guard let guest = slots[slot], let port = guest.port else { continue }
            let received = port.receive(into: receiveBatch, pool: pool)
            if received > 0 {
                work &+= received
                fromGuest(slot: slot, guest)
                receiveBatch.removeAll()
            }
        }
        if let underlay {
            work &+= underlay.poll(self)
        }
        flush()
        growTables()
        if connections.count > 0 { collectConnections(budget: settings.connectionCollectBudget) }
        return work
    }

    /// Grows the MAC tables that filled half their slots during the pass.
    @inline(__always)
    func growTables() {
        guard switches.growthRequestCount > 0 else { return }
        switches.growRequested(minimumCapacity: settings.macTableCapacity, slotBudget: settings.macTableSlotBudget)
    }

    /// Removes expired connections and those of NICs that are gone, `budget` entries at most.
    func collectConnections(budget: Int) {
        connections.collect(now: now, budget: budget) { slot, zone in
            slot < slots.count && slots[slot]?.zone == zone
        }
    }

    func flush() {
        for slot in pendingTransmit {
            guard let guest = slots[slot] else { continue }
            if let trace = guest.trace {
                for index in 0..<guest.transmitBatch.count {
                    let packet = guest.transmitBatch[index]
                    trace.record(pool.data(packet), length: Int(packet.length))
                }
            }
            if let port = guest.port {
                port.transmit(guest.transmitBatch, pool: pool, failuresTo: guest.attachment?.counters)
            } else {
                guest.transmitBatch.releaseAll(to: pool)
            }
        }
        pendingTransmit.removeAll(keepingCapacity: true)
        underlay?.flush(self)
        if tracing {
            for slot in slots { slot?.trace?.flush() }
            mainTrace?.flush()
        }
    }

    /// True when any trace is open (checked once per pass, not per packet).
    var tracing: Bool { mainTrace != nil || openNICTraces > 0 }
    /// How many NICs have a trace open, kept as traces open and close.
    var openNICTraces = 0

    /// The worker's clock (monotonic seconds), for deadlines the control plane reports.
    public static func currentSecond() -> UInt32 { monotonicSeconds() }

    static func monotonicSeconds() -> UInt32 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &time)
        return UInt32(truncatingIfNeeded: time.tv_sec)
    }

    /// Once a second from the loop (internal, not private: tests call it to publish the gauges
    /// and collect expired connections without waiting for the clock).
    func sweep() {
        lastSweep = now
        switches.age(
            now: now,
            ageLimit: settings.macAgeSeconds,
            budget: settings.macAgingBudget,
            minimumCapacity: settings.macTableCapacity,
            slotBudget: settings.macTableSlotBudget
        )
        // Ports count their own drops in plain fields (one writer, this thread); publish them
        // where the control plane reads, once a second.
        collectConnections(budget: settings.connectionCollectBudget * 256)
        let perSlot = connections.countBySlot
        for (slot, guest) in slots.enumerated() {
            guard let guest, let counters = guest.attachment?.counters else { continue }
            if let port = guest.port {
                counters.setDrops(.portReceive, to: port.portDrops.receiveDropped)
                counters.setDrops(.guestDescriptor, to: port.guestErrors)
            }
            counters.setConnections(slot < perSlot.count ? UInt64(max(0, perSlot[slot])) : 0)
        }
        globalCounters.setConnections(UInt64(connections.count))
        globalCounters.setEvictions(connections.evictions)
        underlay?.publishPortCounters(self)
    }

}

/// What woke the worker from epoll: its mailbox, the underlay, or a NIC's port (by slot).
enum EpollToken: Equatable {
    case wake
    case underlay
    case port(slot: Int)

    init(_ raw: UInt64) {
        switch raw {
        case UInt64.max: self = .wake
        case UInt64.max - 1: self = .underlay
        default: self = .port(slot: Int(truncatingIfNeeded: raw))
        }
    }

    var rawValue: UInt64 {
        switch self {
        case .wake: UInt64.max
        case .underlay: UInt64.max - 1
        case .port(let slot): UInt64(slot)
        }
    }
}
