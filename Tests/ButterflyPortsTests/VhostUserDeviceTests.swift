import ButterflyPorts
import CButterflyLinux
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A vhost-user NIC's control side on a real listening socket, driven by a scripted front-end,
/// with a data path that records what it was told.
@Suite struct VhostUserDeviceTests {
    final class RecordingDataPath: VhostUserDataPath {
        var running: [Int: Virtqueue] = [:]
        var log: [String] = []
        func start(ring: Int, queue: Virtqueue, kick: Int32, call: Int32, session: VhostUserSession) {
            running[ring] = queue
            log.append("start \(ring)")
        }
        func stop(ring: Int) -> UInt16 {
            if running.removeValue(forKey: ring) != nil { log.append("stop \(ring)") }
            return 7
        }
        func stopAll() {
            running.removeAll()
            log.append("stop all")
        }
    }

    typealias Request = VhostUserRequest
    typealias Harness = VhostUserSessionTests.Harness

    /// Sends `message` from the front-end and lets the device handle it; returns the reply.
    func exchange(_ device: VhostUserDevice, _ frontEnd: Int32, _ message: VhostUserMessage) throws -> VhostUserMessage?
    {
        try VhostUserReader.send(message, to: frontEnd)
        for fd in message.fds { close(fd) }
        device.poll(now: 0)
        guard case .messages(let replies) = try VhostUserReader().read(from: frontEnd) else { return nil }
        return replies.first
    }

    func bringUp(_ device: VhostUserDevice, _ frontEnd: Int32, memory: Int32) throws {
        let helper = Harness()
        let features = VhostUserSession.featureVersion1 | VhostUserSession.featureProtocolFeatures
        for message in [
            VhostUserMessage(request: Request.setOwner),
            VhostUserMessage(request: Request.setFeatures, payload: helper.u64(features)),
            VhostUserMessage(
                request: Request.setMemTable,
                payload: helper.memoryTable([Harness.region]),
                fds: [dup(memory)]
            ),
        ] {
            _ = try exchange(device, frontEnd, message)
        }
        for ring: UInt32 in 0..<2 {
            for message in [
                VhostUserMessage(request: Request.setVringNum, payload: helper.state(ring, 256)),
                VhostUserMessage(request: Request.setVringBase, payload: helper.state(ring, 0)),
                VhostUserMessage(request: Request.setVringAddr, payload: helper.ringAddress(ring)),
                VhostUserMessage(
                    request: Request.setVringKick,
                    payload: helper.u64(UInt64(ring)),
                    fds: [eventfd(0, Int32(EFD_CLOEXEC))]
                ),
                VhostUserMessage(
                    request: Request.setVringCall,
                    payload: helper.u64(UInt64(ring)),
                    fds: [eventfd(0, Int32(EFD_CLOEXEC))]
                ),
                VhostUserMessage(request: Request.setVringEnable, payload: helper.state(ring, 1)),
            ] {
                _ = try exchange(device, frontEnd, message)
            }
        }
    }

    /// A server-mode device of one queue pair in `directory`, with a recording data path.
    static func serverDevice(in directory: String) throws -> (VhostUserDevice, RecordingDataPath) {
        let dataPath = RecordingDataPath()
        let device = VhostUserDevice(
            endpoint: try VhostUserEndpoint(path: directory + "/qemu-vhost-vm1", mode: .server),
            queuePairs: 1,
            dataPath: dataPath
        )
        return (device, dataPath)
    }

    @Test func aFrontEndBringsRingsUpStopsThemAndAHostileOneResetsOnlyItself() throws {
        let directory = VhostUserEndpointTests.directory()
        defer { VhostUserEndpointTests.remove(directory) }
        let (device, dataPath) = try Self.serverDevice(in: directory)
        let memory = Harness.memoryFile()
        defer { close(memory) }

        var frontEnd = cbutterfly_unix_connect(device.endpoint.path)
        try bringUp(device, frontEnd, memory: memory)
        #expect(dataPath.log == ["start 0", "start 1"])
        #expect(dataPath.running.count == 2)
        let helper = Harness()
        let base = try #require(
            try exchange(device, frontEnd, VhostUserMessage(request: Request.getVringBase, payload: helper.state(0, 0)))
        )
        #expect(try base.vringState() == (0, 7))
        #expect(dataPath.log.suffix(1) == ["stop 0"])

        // A hostile message: the data path stops everything, the connection is dropped, counted.
        _ = try exchange(device, frontEnd, VhostUserMessage(request: 99))
        #expect(device.protocolErrors == 1)
        #expect(device.lastError == .unknownRequest(99))
        #expect(dataPath.log.last == "stop all" && dataPath.running.isEmpty)
        #expect(device.endpoint.connection < 0)
        var byte: UInt8 = 0
        // A hang-up reads as the end of the stream, or as a reset when the device dropped the
        // connection with bytes of ours still unread.
        var received: Int
        var error: Int32
        repeat {
            received = recv(frontEnd, &byte, 1, 0)
            error = errno
        } while received < 0 && error == EINTR
        #expect(
            received == 0 || (received < 0 && error == ECONNRESET),
            "the front-end sees the hang-up: errno \(error)"
        )
        close(frontEnd)

        // The VM reconnects (or another boots): a working NIC again.
        frontEnd = cbutterfly_unix_connect(device.endpoint.path)
        defer { close(frontEnd) }
        try bringUp(device, frontEnd, memory: memory)
        #expect(dataPath.running.count == 2)
        #expect(device.connections == 2)
        // A hang-up stops the rings too, without counting an error. (Polled until it shows: a
        // process another test spawns at that moment holds a copy of our end until it execs.)
        close(frontEnd)
        frontEnd = -1
        for _ in 0..<5000 {
            device.poll(now: 0)
            if dataPath.running.isEmpty { break }
            usleep(1000)  // at most 5 s in all
        }
        #expect(dataPath.running.isEmpty && device.protocolErrors == 1)
    }

    /// A front-end that shrinks its memory file: the access that faults reads zeros (the
    /// SIGBUS guard), and the device drops that front-end, counted, its rings stopped.
    @Test func aFrontEndThatShrinksItsMemoryIsDropped() throws {
        let directory = VhostUserEndpointTests.directory()
        defer { VhostUserEndpointTests.remove(directory) }
        let (device, dataPath) = try Self.serverDevice(in: directory)
        let memory = Harness.memoryFile()
        defer { close(memory) }
        let frontEnd = cbutterfly_unix_connect(device.endpoint.path)
        defer { close(frontEnd) }
        try bringUp(device, frontEnd, memory: memory)
        #expect(device.hasMemory && !device.dropIfMemoryPoisoned(now: 0))

        #expect(ftruncate(memory, 0) == 0)
        let mapped = try #require(
            device.session.memory?.translate(guestPhysical: Harness.region.guestPhysical, length: 8)
        )
        #expect(mapped.load(as: UInt64.self) == 0, "the faulting read completes, on zeros")
        #expect(device.dropIfMemoryPoisoned(now: 0))
        #expect(device.protocolErrors == 1)
        #expect(dataPath.log.last == "stop all" && dataPath.running.isEmpty)
        #expect(!device.hasMemory && device.endpoint.connection < 0)
    }
}
