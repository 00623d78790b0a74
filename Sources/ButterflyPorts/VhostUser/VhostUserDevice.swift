#if canImport(Glibc)
    import Glibc
#endif

/// What the control side of a vhost-user NIC hands to the packet worker: rings to run and rings
/// to stop. The worker-side implementation adopts a queue between batches; `stop` returns the
/// next available index the data path had not taken (GET_VRING_BASE's answer), and stopping a
/// stopped ring only answers that index again.
public protocol VhostUserDataPath: AnyObject {
    func start(ring: Int, queue: Virtqueue, kick: Int32, call: Int32, session: VhostUserSession)
    func stop(ring: Int) -> UInt16
    /// Every ring stops and forgets its memory (a reset or a lost front-end).
    func stopAll()
}

/// One vhost-user NIC's control side, on the control thread: the socket (either mode), the
/// message reader and the protocol session, tied to the data path.
///
/// ```
///  poll(now) ─► endpoint.service ─► reader.read ─► session.handle ─► reply
///                                                     └─ events ─► dataPath.start / stop
///  protocol error or hang-up ─► dataPath.stopAll, session.reset, endpoint.disconnect,
///                               `protocolErrors` + 1 (this NIC only)
/// ```
public final class VhostUserDevice {
    public let endpoint: VhostUserEndpoint
    public let session: VhostUserSession
    private var reader = VhostUserReader()
    /// Held strongly, not weakly: a weak reference gives the port a side table, and every
    /// retain of it (the worker's pass over its ports) then took the side table's slow path —
    /// a third of a busy pass over 9,000 vhost-user NICs. The session reaches it through this
    /// device, weakly, so nothing cycles; the port lives as long as its device.
    private let dataPath: VhostUserDataPath
    /// Front-ends that broke the protocol and were dropped (the NIC's `vhost-protocol` count).
    public private(set) var protocolErrors: UInt64 = 0
    /// The last protocol error, for the log.
    public private(set) var lastError: VhostUserError?
    /// Connections accepted or made.
    public private(set) var connections: UInt64 = 0

    public init(endpoint: VhostUserEndpoint, queuePairs: Int, dataPath: VhostUserDataPath) {
        self.endpoint = endpoint
        self.session = VhostUserSession(queuePairs: queuePairs)
        self.dataPath = dataPath
        session.stoppedIndex = { [weak self] ring in self?.dataPath.stop(ring: ring) ?? 0 }
    }

    /// Handles whatever is pending on the control socket; returns false when the front-end
    /// went away or was dropped during this call.
    @discardableResult
    public func poll(now: Double) -> Bool {
        if endpoint.service(now: now) {
            connections &+= 1
            reader = VhostUserReader()
        }
        guard endpoint.connection >= 0 else { return true }
        do throws(VhostUserError) {
            switch try reader.read(from: endpoint.connection) {
            case .closed:
                drop(now: now)
                return false
            case .messages(let messages):
                for (index, message) in messages.enumerated() {
                    do throws(VhostUserError) {
                        let outcome = try session.handle(message)
                        if let reply = outcome.reply { try VhostUserReader.send(reply, to: endpoint.connection) }
                        apply(outcome.events)
                    } catch {
                        // The messages read behind the bad one are never handled: their fds close.
                        for later in messages[(index + 1)...] { for fd in later.fds { close(fd) } }
                        throw error
                    }
                }
            }
        } catch {
            protocolErrors &+= 1
            lastError = error
            drop(now: now)
            return false
        }
        return true
    }

    /// Stops every ring of the data path (synchronously, through the worker): afterwards the
    /// session's descriptors and memory may go.
    public func stopDataPath() { dataPath.stopAll() }

    /// True while the front-end's memory is mapped (it may then shrink it under us).
    public var hasMemory: Bool { session.memory != nil }

    /// Drops the front-end if it shrank a memory file under us (a fault in its memory was
    /// absorbed by the SIGBUS guard); returns true when it did.
    @discardableResult
    public func dropIfMemoryPoisoned(now: Double) -> Bool {
        guard let memory = session.memory, memory.poisoned else { return false }
        protocolErrors &+= 1
        lastError = .badMemory("the front-end shrank a memory file it shares with us")
        drop(now: now)
        return true
    }

    private func apply(_ events: [VhostUserSession.Event]) {
        for event in events {
            switch event {
            case .ringReady(let index):
                startRing(index, on: dataPath)
            case .ringStopped, .memoryChanged:
                // The session stopped the rings concerned before changing them (stoppedIndex);
                // rings that run on in the new memory come back as `ringReady`.
                break
            }
        }
    }

    private func startRing(_ index: Int, on dataPath: VhostUserDataPath) {
        let ring = session.rings[index]
        guard let memory = session.memory, let descriptors = ring.descriptors, let available = ring.available,
            let used = ring.used
        else { return }
        let queue = Virtqueue(
            size: UInt16(ring.size),
            descriptors: descriptors,
            available: available,
            used: used,
            memory: memory,
            base: ring.base,
            indirectAllowed: session.negotiated(VhostUserSession.featureIndirectDescriptors),
            eventIndex: session.negotiated(VhostUserSession.featureEventIndex)
        )
        dataPath.start(ring: index, queue: queue, kick: ring.kick, call: ring.call, session: session)
    }

    private func drop(now: Double) {
        dataPath.stopAll()
        session.reset()
        endpoint.disconnect(now: now)
        reader = VhostUserReader()
    }
}
