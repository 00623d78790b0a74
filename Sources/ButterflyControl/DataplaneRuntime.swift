import ButterflyDataplane
import ButterflyPorts
import HashTreeCollections

/// The control plane's handle on the running data plane: it creates and destroys the ports of
/// NICs (so that a tap that cannot be created fails the API request that asked for it) and
/// publishes each new configuration to the worker.
///
/// ```
///  nic_add ─► prepare(nic): create the tap (or reuse the live one) ─► model change
///          ─► publish(config, change): attachments + config ─► worker mailbox
///  nic_del ─► publish ─► wait until the worker adopted it ─► close the tap
/// ```
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
    private var detached: Set<String> = []
    private let nicMTU: Int?

    public init(worker: Worker, nicMTU: Int?) {
        self.worker = worker
        self.nicMTU = nicMTU
    }

    /// Creates what a NIC needs before the model accepts it. Reuses the NIC's live port when
    /// it keeps its kind and path (a re-added TAP NIC keeps its interface and namespace).
    public func prepare(_ nic: NIC, path: String) throws(APIError) {
        switch nic.kind {
        case .tap:
            if let live = attachments[nic.id], let tap = live.port as? TapPort, tap.name == path {
                tap.setMAC(nic.mac)
                prepared[nic.id] = live
                return
            }
            do {
                let port = try TapPort(name: path, mac: nic.mac, mtu: nicMTU)
                prepared[nic.id] = NICAttachment(nicID: nic.id, port: port)
            } catch {
                throw APIError("NIC creation failed", detail: error.description)
            }
        case .vhostUserServer, .vhostUserClient, .bench:
            // Their ports arrive with the vhost-user and bench issues; the NIC is configured
            // and reported, and moves no packets yet. A port of a previous kind goes away.
            detached.insert(nic.id)
        }
    }

    /// Forgets what `prepare` created for changes that were rolled back: new taps close.
    public func abandonPrepared() {
        prepared.removeAll()
        detached.removeAll()
    }

    /// Publishes a configuration after the model changed `change`.
    public func publish(_ config: DataplaneConfig, change: ModelChange, changedNICs: [String]) {
        var removed: NICAttachment?
        if case .nic(let id) = change {
            if let attachment = prepared.removeValue(forKey: id) {
                if let old = attachments[id], old !== attachment { removed = old }
                attachments[id] = attachment
            } else if config.nics[id] == nil || detached.remove(id) != nil {
                removed = attachments.removeValue(forKey: id)
            }
        }
        worker.publish(DataplaneUpdate(config: config, attachments: attachments, changedNICs: changedNICs))
        if removed != nil {
            // The worker must stop using the port before it is closed (and before a NIC of
            // the same name can be created again); `removed` holds the last reference and
            // closes the port when this function returns.
            worker.waitForAdoption(of: config.version)
        }
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
        attachments[id]?.counters.snapshot
    }
}
