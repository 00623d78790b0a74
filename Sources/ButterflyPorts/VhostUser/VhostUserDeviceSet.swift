import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The control sockets of every vhost-user NIC, served from the control thread: one epoll
/// descriptor over them all (the API loop waits on it beside its own socket), and the next
/// time a client-mode NIC is due to reconnect.
///
/// Only the devices whose socket is readable are served; each keeps one registration, for the
/// descriptor it waits on now (its listener, or its front-end's connection).
public final class VhostUserDeviceSet {
    /// Readable when a device has something to accept or read.
    public let descriptor: Int32
    private var devices: [UInt64: VhostUserDevice] = [:]
    private var registered: [UInt64: Int32] = [:]
    private var tokenByName: [String: UInt64] = [:]
    private var nextToken: UInt64 = 1
    private var events = [epoll_event](repeating: epoll_event(), count: 64)
    /// Protocol errors and hang-ups, for the log (drained by the caller).
    public private(set) var log: [String] = []

    public init() {
        descriptor = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(descriptor >= 0, "epoll_create1: \(String(cString: strerror(errno)))")
    }

    deinit { close(descriptor) }

    public var count: Int { devices.count }

    public func device(named name: String) -> VhostUserDevice? {
        tokenByName[name].flatMap { devices[$0] }
    }

    /// Adds `device` under `name` (replacing a device of that name) and serves it once, so a
    /// client-mode NIC connects at once.
    public func add(_ device: VhostUserDevice, named name: String, now: Double) {
        remove(named: name)
        let token = nextToken
        nextToken &+= 1
        devices[token] = device
        tokenByName[name] = token
        serve(token, now: now)
    }

    /// Removes the device named `name`; the caller drops its last reference (its socket closes).
    @discardableResult
    public func remove(named name: String) -> VhostUserDevice? {
        guard let token = tokenByName.removeValue(forKey: name), let device = devices.removeValue(forKey: token)
        else { return nil }
        if let fd = registered.removeValue(forKey: token) {
            var unused = epoll_event()
            _ = epoll_ctl(descriptor, EPOLL_CTL_DEL, fd, &unused)
        }
        return device
    }

    /// Serves the devices that are readable, and those due to reconnect; returns the next time
    /// one is due (nil: none waits for a time).
    @discardableResult
    public func service(now: Double) -> Double? {
        let ready = epoll_wait(descriptor, &events, Int32(events.count), 0)
        for index in 0..<max(0, Int(ready)) { serve(events[index].data.u64, now: now) }
        var next: Double?
        // A front-end that shrank its memory under us is dropped within a second (the SIGBUS
        // guard keeps the worker running on zeros meanwhile).
        for (token, device) in devices where device.hasMemory {
            if device.dropIfMemoryPoisoned(now: now) {
                log.append("vhost-user \(device.endpoint.path): front-end dropped: \(device.lastError!)")
                serve(token, now: now)
            } else {
                next = min(next ?? .infinity, now + 1)
            }
        }
        for (token, device) in devices where device.endpoint.mode == .client && device.endpoint.connection < 0 {
            if device.endpoint.nextAttempt <= now { serve(token, now: now) }
            if device.endpoint.connection < 0 {
                next = min(next ?? .infinity, device.endpoint.nextAttempt)
            }
        }
        return next
    }

    private func serve(_ token: UInt64, now: Double) {
        guard let device = devices[token] else { return }
        // Unregistered while its descriptor is surely open: polling may close it, and its
        // number could then name another device's new connection.
        if let fd = registered.removeValue(forKey: token) {
            var unused = epoll_event()
            _ = epoll_ctl(descriptor, EPOLL_CTL_DEL, fd, &unused)
        }
        let errorsBefore = device.protocolErrors
        let refusedBefore = device.session.refusedMTU
        device.poll(now: now)
        if device.protocolErrors != errorsBefore, let error = device.lastError {
            log.append("vhost-user \(device.endpoint.path): front-end dropped: \(error)")
        }
        if let refused = device.session.refusedMTU, refused != refusedBefore {
            log.append(
                "vhost-user \(device.endpoint.path): refused guest MTU \(refused): the daemon carries at most "
                    + "\(device.session.largestMTU) (give QEMU's virtio-net-pci host_mtu=\(device.session.largestMTU))"
            )
        }
        let fd = device.endpoint.pollDescriptor
        guard fd >= 0 else { return }
        var event = epoll_event()
        event.events = UInt32(EPOLLIN.rawValue)
        event.data.u64 = token
        if epoll_ctl(descriptor, EPOLL_CTL_ADD, fd, &event) == 0 { registered[token] = fd }
    }

    /// Log lines gathered since the last call.
    public func takeLog() -> [String] {
        defer { log.removeAll() }
        return log
    }
}
