import ButterflyDataplane
import ButterflyPorts
import Dispatch
import HashTreeCollections
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The control plane's handle on the running data plane: it creates and destroys the ports of
/// NICs (so that a tap that cannot be created fails the API request that asked for it) and
/// publishes each new configuration to the worker.
///
/// ```
///  nic_add ─► prepare(nic): create the tap (or reuse the live one) ─► model change
///          ─► publish(config, change): attachments + config ─► worker mailbox
///  nic_del ─► publish ─► wait until the worker adopted it ─► queue the tap for closing
///  closer thread: closes queued taps, many at once in one kernel operation
/// ```
/// Closing a tap unregisters its interface, which waits for an RCU grace period (~16–30 ms):
/// done on the API thread it made each `nic_del` cost that, and stopping a daemon of 4,096
/// taps take 66 s. Closes happen on a thread of their own, batched (`TapPort.removeInterfaces`);
/// re-creating a tap whose close is still queued waits for it, so the name never races.
/// What the control plane needs from a data plane: the seam between the two halves, with the
/// real `DataplaneRuntime` on one side and test doubles on the other.
public protocol DataplaneBinding: AnyObject {
    /// Creates what `nic` needs before the model accepts it; throws to refuse the request.
    func prepare(_ nic: NIC, path: String) throws(APIError)
    /// Hands over a new configuration after the model changed `change`, which changed the
    /// configuration of `changedNICs` (a group's change reaches every NIC it compiles into).
    func publish(_ config: DataplaneConfig, change: ModelChange, changedNICs: [String])
    /// Drops what `prepare` made for changes that will not be published (a failed save).
    func abandonPrepared()
    /// Live counters of one NIC.
    func counters(of id: String) -> NICCounters?
    /// Counters of the underlay and of drops not attributable to a NIC.
    func globalCounters() -> NICCounters?
    /// A NIC's tracked connections, encoded (`ConnectionExport`); `nil` when the data plane
    /// did not answer in time.
    func exportConnections(of id: String) -> [UInt8]?
    /// The connection table's bound.
    var connectionCapacity: Int? { get }
    /// The worker's longest pause to adopt a configuration, in nanoseconds.
    var longestAdoptionNanoseconds: UInt64? { get }
    var lastAdoptionNanoseconds: UInt64? { get }
}

extension DataplaneBinding {
    public func abandonPrepared() {}
    public func globalCounters() -> NICCounters? { nil }
    public func exportConnections(of id: String) -> [UInt8]? { ConnectionExport.encode([], now: 0) }
    public var connectionCapacity: Int? { nil }
    public var longestAdoptionNanoseconds: UInt64? { nil }
    public var lastAdoptionNanoseconds: UInt64? { nil }
}

public final class DataplaneRuntime: DataplaneBinding {
    public let worker: Worker
    private var attachments: TreeDictionary<String, NICAttachment> = [:]
    private var prepared: [String: NICAttachment] = [:]
    /// The control side of each vhost-user NIC (its socket and protocol session), served from
    /// the API thread (`serviceVhostUser`); a prepared NIC's device joins at publish.
    public let vhostUser = VhostUserDeviceSet()
    private var preparedDevices: [String: VhostUserDevice] = [:]
    /// Queue pairs a vhost-user NIC offers (the guest uses as many as it asks for).
    public static let vhostUserQueuePairs = 8
    private var detached: Set<String> = []
    private let nicMTU: Int?
    private let closer = PortCloser()
    /// Tap names queued for closing since the closer was last waited for (API thread).
    private var closingNames: Set<String> = []
    /// When each NIC's kernel drop counts were last read (`counters(of:)`), and how many
    /// reads the current second has left: the graph of `app_status` asks for every NIC.
    private var kernelReadSecond: [String: UInt32] = [:]
    private var kernelReads = (second: UInt32(0), left: 0)
    static let kernelReadsPerSecond = 64

    /// Whether a tap's interface gets the NIC's MAC (`--tap-set-mac`); else it keeps the
    /// kernel's, as in the original.
    private let tapSetsMAC: Bool

    /// The largest MTU a vhost-user guest may be given (QEMU's host_mtu, NET_SET_MTU).
    private let vhostUserMTU: Int

    public init(worker: Worker, nicMTU: Int?, tapSetsMAC: Bool = false, vhostUserMTU: Int = 65535) {
        self.worker = worker
        self.nicMTU = nicMTU
        self.tapSetsMAC = tapSetsMAC
        self.vhostUserMTU = vhostUserMTU
    }

    /// Creates what a NIC needs before the model accepts it. Reuses the NIC's live port when
    /// it keeps its kind and path (a re-added TAP NIC keeps its interface and namespace).
    public func prepare(_ nic: NIC, path: String) throws(APIError) {
        switch nic.kind {
        case .tap:
            // Within one request (published after it is saved) an earlier message may have
            // prepared this NIC already: the latest preparation is what counts.
            detached.remove(nic.id)
            preparedDevices[nic.id] = nil
            for candidate in [prepared[nic.id], attachments[nic.id]] {
                if let live = candidate, let tap = live.port as? TapPort, tap.name == path {
                    if tapSetsMAC { tap.setMAC(nic.mac) }
                    prepared[nic.id] = live
                    return
                }
            }
            if closingNames.contains(path) || closingNames.count > 4096 {
                closer.wait()
                closingNames.removeAll()
            }
            do {
                let port = try TapPort(name: path, mac: tapSetsMAC ? nic.mac : nil, mtu: nicMTU)
                prepared[nic.id] = NICAttachment(nicID: nic.id, port: port)
            } catch {
                throw APIError("NIC creation failed", detail: error.description)
            }
        case .vhostUserServer, .vhostUserClient:
            detached.remove(nic.id)
            let mode: VhostUserEndpoint.Mode = nic.kind == .vhostUserServer ? .server : .client
            // A re-added NIC of the same kind and path keeps its socket and its guest.
            for (candidate, device) in [
                (prepared[nic.id], preparedDevices[nic.id]), (attachments[nic.id], vhostUser.device(named: nic.id)),
            ] {
                if let live = candidate, let device, live.port is VhostUserPort, device.endpoint.path == path,
                    device.endpoint.mode == mode
                {
                    prepared[nic.id] = live
                    preparedDevices[nic.id] = device
                    return
                }
            }
            // The NIC's previous socket (a re-add in another mode) must go before the new one
            // takes its path.
            preparedDevices[nic.id] = nil
            if let old = vhostUser.device(named: nic.id), old.endpoint.path == path {
                throw APIError(
                    "NIC creation failed",
                    detail: "vhost-user NIC \(nic.id) is in use in its other mode: delete it first"
                )
            }
            do {
                let port = try VhostUserPort(
                    name: nic.id,
                    queuePairs: Self.vhostUserQueuePairs,
                    runOnWorker: { [worker] body in worker.onWorkerThread(body) }
                )
                let endpoint = try VhostUserEndpoint(path: path, mode: mode)
                let device = VhostUserDevice(endpoint: endpoint, queuePairs: Self.vhostUserQueuePairs, dataPath: port)
                device.session.largestMTU = UInt16(clamping: vhostUserMTU)
                preparedDevices[nic.id] = device
                prepared[nic.id] = NICAttachment(nicID: nic.id, port: port)
            } catch let error as VhostUserEndpoint.Failure {
                throw APIError("NIC creation failed", detail: error.description)
            } catch {
                throw APIError("NIC creation failed", detail: "\(error)")
            }
        case .bench:
            // The daemon plays the guest itself (BenchPort); a re-added BENCH NIC starts over.
            detached.remove(nic.id)
            preparedDevices[nic.id] = nil
            var role = BenchPort.Role.responder
            if nic.bench?.btype == NIC.benchProber, case .v4(let ip)? = nic.bench?.destinationIP,
                let mac = nic.bench?.destinationMAC
            {
                role = .prober(destinationIP: ip, destinationMAC: mac.value)
            }
            let ips = nic.ips.compactMap { address -> UInt32? in
                if case .v4(let value) = address { value } else { nil }
            }
            do throws(VhostUserError) {
                let port = try BenchPort(name: nic.id, mac: nic.mac, ips: ips, role: role)
                prepared[nic.id] = NICAttachment(nicID: nic.id, port: port)
            } catch {
                throw APIError("NIC creation failed", detail: error.description)
            }
        }
    }

    /// Serves the vhost-user NICs' control sockets (API thread); returns when a client-mode
    /// NIC is next due to reconnect.
    public func serviceVhostUser() -> Double? {
        let next = vhostUser.service(now: MonotonicClock.seconds())
        for line in vhostUser.takeLog() { Log.warning(line) }
        return next
    }

    /// Forgets what `prepare` created for changes that were rolled back: new taps close.
    public func abandonPrepared() {
        prepared.removeAll()
        preparedDevices.removeAll()
        detached.removeAll()
    }

    /// Publishes a configuration after the model changed `change`.
    public func publish(_ config: DataplaneConfig, change: ModelChange, changedNICs: [String]) {
        var removed: NICAttachment?
        var removedDevice: VhostUserDevice?
        var addedDevice: (id: String, device: VhostUserDevice)?
        if case .nic(let id) = change {
            if let attachment = prepared.removeValue(forKey: id) {
                if let old = attachments[id], old !== attachment { removed = old }
                attachments[id] = attachment
                let device = preparedDevices.removeValue(forKey: id)
                if let live = vhostUser.device(named: id), live !== device {
                    removedDevice = vhostUser.remove(named: id)
                }
                if let device, vhostUser.device(named: id) !== device { addedDevice = (id, device) }
            } else if config.nics[id] == nil || detached.remove(id) != nil {
                removed = attachments.removeValue(forKey: id)
                removedDevice = vhostUser.remove(named: id)
            }
        }
        let publication = worker.publish(
            DataplaneUpdate(config: config, attachments: attachments, changedNICs: changedNICs)
        )
        if let addedDevice { vhostUser.add(addedDevice.device, named: addedDevice.id, now: MonotonicClock.seconds()) }
        if let removed {
            // The worker must stop using the port before it is closed (and before a NIC of
            // the same name can be created again).
            let unused = worker.waitForAdoption(ofPublication: publication)
            if let tap = removed.port as? TapPort { closingNames.insert(tap.name) }
            kernelReadSecond[removed.nicID] = nil
            // Only a port the worker is known to have let go of may be closed before its last
            // reference goes (a late adoption could otherwise read a reused fd number).
            closer.close([removed], unused: unused)
        }
        // A removed vhost-user NIC's front-end goes only once its rings are stopped on the
        // worker (whether or not the adoption above finished in time): then its socket closes (a
        // server's file removed), the rings' eventfds close and the memory is unmapped.
        removedDevice?.stopDataPath()
    }

    /// Closes every port at once (the daemon's stop, after the worker stopped): 4,096 taps go
    /// in about a second instead of a minute.
    public func shutdown() {
        let all = Array(attachments.values) + Array(prepared.values)
        attachments = [:]
        prepared = [:]
        preparedDevices = [:]
        for id in all.map(\.nicID) { vhostUser.remove(named: id) }
        closer.close(all, unused: true)
        closer.wait()
    }

    public func globalCounters() -> NICCounters? { worker.globalCounters.snapshot }

    public func exportConnections(of id: String) -> [UInt8]? {
        guard case .connections(let entries)? = worker.ask(.connections(nicID: id)) else { return nil }
        return ConnectionExport.encode(entries, now: Worker.currentSecond())
    }

    public var connectionCapacity: Int? { worker.connections.capacity }

    public var longestAdoptionNanoseconds: UInt64? { worker.longestAdoptionNanoseconds }
    public var lastAdoptionNanoseconds: UInt64? { worker.lastAdoptionNanoseconds }

    public func counters(of id: String) -> NICCounters? {
        guard let attachment = attachments[id] else { return nil }
        if let tap = attachment.port as? TapPort { refreshKernelDrops(of: tap, attachment) }
        if let device = vhostUser.device(named: id) {
            attachment.counters.setDrops(.vhostProtocol, to: device.protocolErrors)
        }
        var snapshot = attachment.counters.snapshot
        if let bench = attachment.port as? BenchPort { snapshot.bench = bench.statistics }
        return snapshot
    }

    /// Copies the frames the kernel dropped on the tap's queue toward the daemon into the NIC's
    /// `kernel-receive` drops (a slot only this thread writes: the worker never counts that
    /// reason for a NIC). At most once a second per NIC, and `kernelReadsPerSecond` reads a
    /// second in all (each costs a netlink query, in the interface's namespace).
    private func refreshKernelDrops(of tap: TapPort, _ attachment: NICAttachment) {
        let now = Worker.currentSecond()
        if kernelReads.second != now { kernelReads = (now, Self.kernelReadsPerSecond) }
        guard kernelReads.left > 0, kernelReadSecond[attachment.nicID] != now else { return }
        kernelReads.left -= 1
        kernelReadSecond[attachment.nicID] = now
        if let drops = tap.kernelDrops() {
            attachment.counters.setDrops(.kernelReceive, to: drops.fromGuest)
        }
    }
}

/// Closes the ports of removed NICs on a thread of its own, whatever is queued at once.
final class PortCloser: @unchecked Sendable {
    // Safe: `waiting` is behind its mutex; the queue is serial.
    private let queue = DispatchQueue(label: "butterfly.port-closer")
    private let waiting = Mutex<[(attachment: NICAttachment, unused: Bool)]>([])

    /// Queues `attachments`; their ports close on the closer. With `unused` (no worker uses
    /// them any more) a tap's fd is closed there explicitly; otherwise it closes with the last
    /// reference, wherever that goes.
    func close(_ attachments: [NICAttachment], unused: Bool) {
        guard !attachments.isEmpty else { return }
        waiting.withLock { $0.append(contentsOf: attachments.map { ($0, unused) }) }
        queue.async { self.closeWaiting() }
    }

    /// Returns once everything queued so far is closed.
    func wait() { queue.sync {} }

    private func closeWaiting() {
        var batch = waiting.withLock { queued in
            defer { queued = [] }
            return queued
        }
        guard !batch.isEmpty else { return }
        TapPort.removeInterfaces(batch.compactMap { $0.attachment.port as? TapPort })
        for entry in batch where entry.unused { (entry.attachment.port as? TapPort)?.closeNow() }
        batch.removeAll()  // the last references, usually: other ports close here
    }
}
