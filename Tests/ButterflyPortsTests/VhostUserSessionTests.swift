import ButterflyPorts
import CButterflyLinux
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The vhost-user protocol state machine driven by a scripted front-end over a real Unix
/// socketpair, with real descriptors (a shared-memory file as guest memory, eventfds as kick
/// and call): QEMU's and DPDK virtio_user's orders, then every hostile case we know.
@Suite(.serialized) struct VhostUserSessionTests {
    typealias Request = VhostUserRequest
    static let guestPhysical: UInt64 = 0x10_0000
    static let userBase: UInt64 = 0x7F00_0000_0000
    static let memorySize: UInt64 = 1 << 20

    /// Both ends of the control socket, the back-end's reader and session, and guest memory.
    final class Harness {
        var frontEnd: Int32 = -1
        var backEnd: Int32 = -1
        let reader = VhostUserReader()
        let frontEndReader = VhostUserReader()
        let session: VhostUserSession
        var events: [VhostUserSession.Event] = []

        init(queuePairs: Int = 2) {
            var pair: [Int32] = [-1, -1]
            // Close-on-exec: a daemon or testpmd another test spawns must not keep our end open
            // (the "closed" checks below would then wait for it to exit).
            precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
            frontEnd = pair[0]
            backEnd = pair[1]
            session = VhostUserSession(queuePairs: queuePairs)
            session.stoppedIndex = { UInt16(100 + $0) }
        }

        deinit {
            close(frontEnd)
            close(backEnd)
        }

        /// A guest memory file of `size` bytes (a shared-memory file, unlinked: only the fd names it).
        static func memoryFile(size: UInt64 = VhostUserSessionTests.memorySize) -> Int32 {
            let path = "/dev/shm/bt-vhost-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            precondition(fd >= 0)
            unlink(path)
            precondition(ftruncate(fd, off_t(size)) == 0)
            return fd
        }

        /// Sends one front-end message; the back-end handles everything that arrived. Returns
        /// the reply, if one came; rethrows the session's protocol error.
        @discardableResult
        func send(
            _ request: UInt32,
            _ payload: [UInt8] = [],
            fds: [Int32] = [],
            needReply: Bool = false
        ) throws -> VhostUserMessage? {
            var flags = VhostUserMessage.version
            if needReply { flags |= VhostUserMessage.needReplyFlag }
            try VhostUserReader.send(
                VhostUserMessage(request: request, flags: flags, payload: payload, fds: fds),
                to: frontEnd
            )
            for fd in fds { close(fd) }  // the back-end has its own copies now
            guard case .messages(let messages) = try reader.read(from: backEnd) else { return nil }
            for message in messages {
                let outcome = try session.handle(message)
                events += outcome.events
                if let reply = outcome.reply { try VhostUserReader.send(reply, to: backEnd) }
            }
            guard case .messages(let replies) = try frontEndReader.read(from: frontEnd), let reply = replies.first
            else {
                return nil
            }
            #expect(replies.count == 1)
            #expect(reply.flags == VhostUserMessage.version | VhostUserMessage.replyFlag)
            #expect(reply.request == request)
            return reply
        }

        func u64(_ value: UInt64) -> [UInt8] { VhostUserMessage.littleEndianBytes(value) }
        func state(_ index: UInt32, _ num: UInt32) -> [UInt8] {
            VhostUserMessage.littleEndianBytes(index) + VhostUserMessage.littleEndianBytes(num)
        }

        func memoryTable(_ regions: [GuestMemory.RegionDescription]) -> [UInt8] {
            var bytes = VhostUserMessage.littleEndianBytes(UInt32(regions.count)) + [0, 0, 0, 0]
            for region in regions {
                for value in [region.guestPhysical, region.size, region.userAddress, region.mmapOffset] {
                    bytes += VhostUserMessage.littleEndianBytes(value)
                }
            }
            return bytes
        }

        static let region = GuestMemory.RegionDescription(
            guestPhysical: guestPhysical,
            size: memorySize,
            userAddress: userBase,
            mmapOffset: 0
        )

        /// Ring `index` of 256 entries at 64 KiB · (index + 1) into guest memory.
        func ringAddress(_ index: UInt32, offset: UInt64? = nil) -> [UInt8] {
            let base = userBase + (offset ?? 0x1_0000 * UInt64(index + 1))
            var bytes = VhostUserMessage.littleEndianBytes(index) + VhostUserMessage.littleEndianBytes(UInt32(0))
            for value in [base, base + 0x2000, base + 0x1000, 0] { bytes += VhostUserMessage.littleEndianBytes(value) }
            return bytes
        }

        func setUpRing(_ index: UInt32, enable: Bool) throws {
            try send(Request.setVringNum, state(index, 256))
            try send(Request.setVringBase, state(index, 0))
            try send(Request.setVringAddr, ringAddress(index))
            try send(Request.setVringKick, u64(UInt64(index)), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
            try send(Request.setVringCall, u64(UInt64(index)), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
            if enable { try send(Request.setVringEnable, state(index, 1)) }
        }
    }

    /// Descriptors of this process open on the test's own shared-memory files (other suites
    /// run in parallel in the same process and open descriptors of their own).
    static func openDescriptors() -> Int {
        FileManagerLite.links("/proc/self/fd").filter { $0.contains("/dev/shm/bt-vhost-\(getpid())-") }.count
    }

    /// A descriptor on a small file of the test's own, recognisable in `openDescriptors`.
    static func marker() -> Int32 { Harness.memoryFile(size: 16) }

    /// A front-end passing a pipe (or an eventfd it keeps full) as kick or call must never make
    /// the worker block: the session makes every ring descriptor non-blocking.
    @Test func ringDescriptorsBecomeNonBlocking() throws {
        let harness = Harness(queuePairs: 1)
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        try harness.send(Request.setVringCall, harness.u64(0), fds: [ends[1]])
        try harness.send(Request.setVringKick, harness.u64(0), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
        let ring = harness.session.rings[0]
        #expect(fcntl(ring.call, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(ring.kick, F_GETFL) & O_NONBLOCK != 0)
    }

    /// QEMU's host_mtu reaches us as NET_SET_MTU: an MTU larger than the daemon carries is
    /// refused (a non-zero REPLY_ACK, so QEMU does not start the NIC), a fitting one is kept.
    @Test func aGuestMTUTheDaemonCannotCarryIsRefused() throws {
        let harness = Harness(queuePairs: 1)
        harness.session.largestMTU = 1450
        try harness.send(Request.setFeatures, harness.u64(VhostUserSession.featureProtocolFeatures))
        try harness.send(
            Request.setProtocolFeatures,
            harness.u64(VhostUserSession.protocolReplyAck | VhostUserSession.protocolNetMTU)
        )
        let refused = try #require(try harness.send(Request.netSetMTU, harness.u64(1500), needReply: true))
        #expect(try refused.u64() != 0)
        #expect(harness.session.mtu == nil && harness.session.refusedMTU == 1500)
        let accepted = try #require(try harness.send(Request.netSetMTU, harness.u64(1450), needReply: true))
        #expect(try accepted.u64() == 0)
        #expect(harness.session.mtu == 1450)
    }

    @Test func qemuOrderBringsRingsUpAndGetVringBaseStopsThem() throws {
        let harness = Harness()
        let features = try #require(try harness.send(Request.getFeatures))
        #expect(try features.u64() == VhostUserSession.offeredFeatures)
        let protocolFeatures = try #require(try harness.send(Request.getProtocolFeatures))
        #expect(try protocolFeatures.u64() == VhostUserSession.offeredProtocolFeatures)
        #expect(
            try harness.send(Request.setProtocolFeatures, harness.u64(VhostUserSession.offeredProtocolFeatures)) == nil
        )
        #expect(try harness.send(Request.getQueueNum).map { try $0.u64() } == 2)
        try harness.send(Request.setOwner)
        let negotiated =
            VhostUserSession.featureVersion1 | VhostUserSession.featureProtocolFeatures
            | VhostUserSession.featureMergeableBuffers
        // REPLY_ACK: a NEED_REPLY message gets u64 0.
        let ack = try #require(try harness.send(Request.setFeatures, harness.u64(negotiated), needReply: true))
        #expect(try ack.u64() == 0)
        let memory = Harness.memoryFile()
        defer { close(memory) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
        #expect(harness.events == [.memoryChanged])
        for ring: UInt32 in 0...1 { try harness.setUpRing(ring, enable: false) }
        // PROTOCOL_FEATURES negotiated: rings wait for SET_VRING_ENABLE.
        #expect(harness.events == [.memoryChanged])
        try harness.send(Request.setVringEnable, harness.state(0, 1))
        try harness.send(Request.setVringEnable, harness.state(1, 1))
        #expect(harness.events == [.memoryChanged, .ringReady(0), .ringReady(1)])

        // The ring's host pointers are the guest's memory: what the back-end writes there, the
        // front-end's own mapping reads.
        let ring = harness.session.rings[1]
        ring.used!.storeBytes(of: 0xBEEF, as: UInt16.self)
        let mapping = try #require(mmap(nil, Int(Self.memorySize), PROT_READ, MAP_SHARED, memory, 0))
        defer { munmap(mapping, Int(Self.memorySize)) }
        #expect(mapping.load(fromByteOffset: 0x2_0000 + 0x2000, as: UInt16.self) == 0xBEEF)

        // Guest stop: GET_VRING_BASE stops the ring and returns where the data path stopped.
        let base = try #require(try harness.send(Request.getVringBase, harness.state(1, 0)))
        #expect(try base.vringState() == (1, 101))
        #expect(harness.events.last == .ringStopped(1))
        #expect(!harness.session.rings[1].isReady && harness.session.rings[0].isReady)
    }

    @Test func dpdkVirtioUserOrderCallsFirstKickLastThenResetOwner() throws {
        let harness = Harness()
        try harness.send(Request.setOwner)
        _ = try harness.send(Request.getFeatures)
        _ = try harness.send(Request.getProtocolFeatures)
        try harness.send(Request.setProtocolFeatures, harness.u64(VhostUserSession.protocolMultiQueue))
        for ring: UInt64 in 0..<4 {
            try harness.send(Request.setVringCall, harness.u64(ring), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
        }
        try harness.send(
            Request.setFeatures,
            harness.u64(VhostUserSession.featureVersion1 | VhostUserSession.featureProtocolFeatures)
        )
        let memory = Harness.memoryFile()
        defer { close(memory) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
        for ring: UInt32 in 0..<2 {
            try harness.send(Request.setVringNum, harness.state(ring, 256))
            try harness.send(Request.setVringBase, harness.state(ring, 0))
            try harness.send(Request.setVringAddr, harness.ringAddress(ring))
            try harness.send(Request.setVringKick, harness.u64(UInt64(ring)), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
        }
        for ring: UInt32 in 0..<2 { try harness.send(Request.setVringEnable, harness.state(ring, 1)) }
        #expect(harness.events == [.memoryChanged, .ringReady(0), .ringReady(1)])
        try harness.send(Request.resetOwner)
        #expect(harness.events.suffix(2) == [.ringStopped(0), .ringStopped(1)])
        #expect(harness.session.memory == nil && !harness.session.owner)
    }

    @Test func withoutProtocolFeaturesRingsStartOnTheirKick() throws {
        let harness = Harness(queuePairs: 1)
        try harness.send(Request.setOwner)
        try harness.send(Request.setFeatures, harness.u64(VhostUserSession.featureVersion1))
        let memory = Harness.memoryFile()
        defer { close(memory) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
        try harness.setUpRing(0, enable: false)
        // Ready on its kick; the CALL that follows changes a running ring: stopped, restarted.
        #expect(harness.events == [.memoryChanged, .ringReady(0), .ringReady(0)])
        // SET_VRING_ENABLE without PROTOCOL_FEATURES (DPDK virtio_user reconnecting sends it
        // before SET_FEATURES) is taken: the running ring stays as it was.
        try harness.send(Request.setVringEnable, harness.state(0, 1))
        #expect(harness.events.last == .ringReady(0))
    }

    @Test func aNewMemoryTableRetranslatesRunningRingsOrRefusesOneThatNoLongerHoldsThem() throws {
        let harness = Harness(queuePairs: 1)
        try harness.send(Request.setFeatures, harness.u64(VhostUserSession.featureVersion1))
        let first = Harness.memoryFile()
        defer { close(first) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(first)])
        try harness.setUpRing(0, enable: false)
        let before = harness.session.rings[0].descriptors
        let second = Harness.memoryFile()
        defer { close(second) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(second)])
        #expect(harness.session.rings[0].isReady && harness.session.rings[0].descriptors != before)
        // A table that leaves the ring outside: refused.
        var small = Harness.region
        small.size = 0x1_0000
        let third = Harness.memoryFile()
        defer { close(third) }
        #expect(throws: VhostUserError.self) {
            try harness.send(Request.setMemTable, harness.memoryTable([small]), fds: [dup(third)])
        }
    }

    @Test func reconfiguringARunningRingStopsItFirstAndKeepsItsPosition() throws {
        let harness = Harness(queuePairs: 1)
        var stops: [Int] = []
        var position: UInt16 = 40
        harness.session.stoppedIndex = { ring in
            stops.append(ring)
            position += 1
            return position
        }
        try harness.send(
            Request.setFeatures,
            harness.u64(VhostUserSession.featureVersion1 | VhostUserSession.featureProtocolFeatures)
        )
        let memory = Harness.memoryFile()
        defer { close(memory) }
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
        try harness.setUpRing(0, enable: true)
        #expect(stops.isEmpty)
        // The guest masks its interrupt: QEMU sends a new call fd to a running ring.
        try harness.send(Request.setVringCall, harness.u64(0), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
        #expect(stops == [0] && harness.session.rings[0].base == 41)
        #expect(harness.events.suffix(1) == [.ringReady(0)])
        // Disabled (DPDK's stop), then GET_VRING_BASE: the position where it was stopped.
        try harness.send(Request.setVringEnable, harness.state(0, 0))
        #expect(stops == [0, 0] && harness.events.suffix(1) == [.ringStopped(0)])
        let base = try #require(try harness.send(Request.getVringBase, harness.state(0, 0)))
        #expect(try base.vringState() == (0, 42))
        #expect(stops == [0, 0], "a stopped ring is not stopped again")
        // A new memory table: the running ring restarts from where it was.
        try harness.send(Request.setVringKick, harness.u64(0), fds: [eventfd(0, Int32(EFD_CLOEXEC))])
        try harness.send(Request.setVringEnable, harness.state(0, 1))
        try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
        #expect(stops == [0, 0, 0] && harness.session.rings[0].base == 43)
        #expect(harness.events.suffix(2) == [.memoryChanged, .ringReady(0)])
    }

    // MARK: Hostile front-ends

    /// Each case: a protocol error, and no descriptor left open in the back-end.
    @Test func hostileMessagesAreProtocolErrorsAndLeakNoDescriptor() throws {
        let memory = Harness.memoryFile()
        defer { close(memory) }
        var tooBig = Harness.region
        tooBig.size = 4 * Self.memorySize  // past the end of the file: would SIGBUS if mapped
        var wrapping = Harness.region
        wrapping.guestPhysical = UInt64.max - 0x1000
        var overlapping = Harness.region
        overlapping.userAddress += 0x1000
        overlapping.guestPhysical += Self.memorySize
        let cases: [(String, (Harness) throws -> Void)] = [
            ("short SET_FEATURES", { try $0.send(Request.setFeatures, [1, 2, 3, 4]) }),
            ("unoffered feature", { try $0.send(Request.setFeatures, $0.u64(1 << 63)) }),
            ("unknown request", { try $0.send(99) }),
            ("log base never offered", { try $0.send(Request.setLogBase, $0.u64(0)) }),
            ("fd with GET_FEATURES", { try $0.send(Request.getFeatures, fds: [Self.marker()]) }),
            (
                "two fds with a kick",
                { try $0.send(Request.setVringKick, $0.u64(0), fds: [Self.marker(), Self.marker()]) }
            ),
            ("kick without fd nor bit 8", { try $0.send(Request.setVringKick, $0.u64(0)) }),
            ("no fd flag with an fd", { try $0.send(Request.setVringCall, $0.u64(0x100), fds: [Self.marker()]) }),
            ("ring out of range", { try $0.send(Request.setVringNum, $0.state(4, 256)) }),
            ("ring size 0", { try $0.send(Request.setVringNum, $0.state(0, 0)) }),
            ("ring size 255", { try $0.send(Request.setVringNum, $0.state(0, 255)) }),
            ("ring size 65536", { try $0.send(Request.setVringNum, $0.state(0, 65536)) }),
            ("base beyond 16 bits", { try $0.send(Request.setVringBase, $0.state(0, 70000)) }),
            ("memory table without fd", { try $0.send(Request.setMemTable, $0.memoryTable([Harness.region])) }),
            (
                "memory table, one fd for two regions",
                { try $0.send(Request.setMemTable, $0.memoryTable([Harness.region, overlapping]), fds: [dup(memory)]) }
            ),
            (
                "nine regions",
                { harness in
                    try harness.send(
                        Request.setMemTable,
                        harness.memoryTable(Array(repeating: Harness.region, count: 9)),
                        fds: (0..<8).map { _ in dup(memory) }
                    )
                }
            ),
            (
                "overlapping regions",
                {
                    try $0.send(
                        Request.setMemTable,
                        $0.memoryTable([Harness.region, overlapping]),
                        fds: [dup(memory), dup(memory)]
                    )
                }
            ),
            (
                "region past the file's end",
                { try $0.send(Request.setMemTable, $0.memoryTable([tooBig]), fds: [dup(memory)]) }
            ),
            ("wrapping region", { try $0.send(Request.setMemTable, $0.memoryTable([wrapping]), fds: [dup(memory)]) }),
            (
                "an eventfd as guest memory",
                { try $0.send(Request.setMemTable, $0.memoryTable([Harness.region]), fds: [eventfd(0, 0)]) }
            ),
            (
                "ring outside memory",
                { harness in
                    try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
                    try harness.send(Request.setVringNum, harness.state(0, 256))
                    try harness.send(Request.setVringAddr, harness.ringAddress(0, offset: Self.memorySize - 0x100))
                }
            ),
            (
                "misaligned ring",
                { harness in
                    try harness.send(Request.setMemTable, harness.memoryTable([Harness.region]), fds: [dup(memory)])
                    try harness.send(Request.setVringNum, harness.state(0, 256))
                    try harness.send(Request.setVringAddr, harness.ringAddress(0, offset: 0x1_0008))
                }
            ),
            (
                "bad header version",
                { harness in
                    try VhostUserReader.send(
                        VhostUserMessage(request: Request.getFeatures, flags: 2),
                        to: harness.frontEnd
                    )
                    guard case .messages(let messages) = try harness.reader.read(from: harness.backEnd) else { return }
                    for message in messages { _ = try harness.session.handle(message) }
                }
            ),
        ]
        let descriptorsBefore = Self.openDescriptors()
        for (name, hostile) in cases {
            let harness = Harness()
            #expect(throws: VhostUserError.self, "\(name)") { try hostile(harness) }
            // The owner's reaction to a protocol error.
            harness.session.reset()
        }
        #expect(Self.openDescriptors() == descriptorsBefore)
    }

    @Test func anOversizedHeaderIsRefusedBeforeAnyPayloadIsRead() throws {
        let harness = Harness()
        var header = VhostUserMessage.header(request: Request.getFeatures, flags: 1, size: 1 << 30)
        header += [0, 0]
        _ = header.withUnsafeBytes { write(harness.frontEnd, $0.baseAddress, $0.count) }
        #expect(throws: VhostUserError.badSize(request: Request.getFeatures, size: 1 << 30)) {
            try harness.reader.read(from: harness.backEnd)
        }
    }

    @Test func aStalledPartialMessageWaitsAndAFloodIsTakenInBoundedBites() throws {
        let harness = Harness()
        let message = VhostUserMessage(
            request: Request.setFeatures,
            payload: harness.u64(VhostUserSession.featureVersion1)
        )
        let bytes = message.encoded
        _ = bytes.withUnsafeBytes { write(harness.frontEnd, $0.baseAddress, 7) }
        guard case .messages(let none) = try harness.reader.read(from: harness.backEnd) else {
            Issue.record("closed"); return
        }
        #expect(none.isEmpty)
        _ = bytes.withUnsafeBytes { write(harness.frontEnd, $0.baseAddress! + 7, bytes.count - 7) }
        guard case .messages(let one) = try harness.reader.read(from: harness.backEnd) else {
            Issue.record("closed"); return
        }
        #expect(one.count == 1)
        #expect(try one[0].u64() == VhostUserSession.featureVersion1)

        for _ in 0..<200 {
            try VhostUserReader.send(VhostUserMessage(request: Request.getQueueNum), to: harness.frontEnd)
        }
        var taken: [Int] = []
        while case .messages(let bite) = try harness.reader.read(from: harness.backEnd, limit: 64), !bite.isEmpty {
            taken.append(bite.count)
        }
        #expect(taken == [64, 64, 64, 8])
        close(harness.frontEnd)
        harness.frontEnd = -1
        // A child another test forks holds a copy of every descriptor until it execs (close-on-
        // exec acts only then): the hang-up may come a moment later. Poll with a deadline.
        var closed = false
        for _ in 0..<500 {
            if case .closed = try harness.reader.read(from: harness.backEnd) {
                closed = true
                break
            }
            usleep(10_000)
        }
        #expect(closed, "a closed front-end must read as closed")
    }
}

/// Reads symlink targets of a directory's entries without Foundation.
enum FileManagerLite {
    static func links(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var targets: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            var buffer = [CChar](repeating: 0, count: 4096)
            let count = readlink(path + "/" + name, &buffer, buffer.count - 1)
            if count > 0 {
                targets.append(String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return targets
    }

}
