import ButterflyDataplane
import ButterflyProtocol
import Foundation

/// The control plane's state: the model, the reconciler that mirrors it into a data-plane
/// snapshot, the optional state file, and the API counters.
///
/// Owned by the API thread; nothing here is shared with the data plane except the immutable
/// snapshots handed to `publish`.
public final class ControlPlane {
    public private(set) var model = Model()
    public private(set) var reconciler: Reconciler
    public let startDate: UInt64
    public internal(set) var requestCounter: UInt64 = 0
    let stateStore: StateStore?
    /// Requests applied since the last save, in order (what the journal records).
    private var appliedRequests: [MessageV0.Request] = []
    /// Off while replaying the state file itself.
    var recordsChanges = true
    /// The running data plane; `nil` runs the control plane alone (tests, tools).
    let runtime: (any DataplaneBinding)?

    public init(reconciler: Reconciler, stateStore: StateStore? = nil, runtime: (any DataplaneBinding)? = nil) {
        self.reconciler = reconciler
        self.stateStore = stateStore
        self.runtime = runtime
        self.startDate = UInt64(Date().timeIntervalSince1970)
    }

    /// Creates what the NIC needs in the data plane (its tap) before the model takes it.
    func prepare(_ nic: NIC) throws(APIError) {
        try runtime?.prepare(nic, path: reconciler.path(for: nic))
    }

    /// Runs one model operation and, when it changed something, reconciles and publishes.
    func mutate(_ operation: (inout Model) throws(APIError) -> ModelChange) throws(APIError) {
        let change = try operation(&model)
        guard reconciler.apply(change, from: model) else { return }
        if case .nic = change { cachedNICIDs = nil }
        runtime?.publish(reconciler.snapshot, change: change, changedNICs: reconciler.changedNICs)
    }

    /// A NIC's tracked connections in the `nic_export` format: empty without a data plane,
    /// `nil` when the data plane did not answer.
    func exportConnections(_ id: String) -> [UInt8]? {
        guard let runtime else { return ConnectionExport.encode([], now: 0) }
        return runtime.exportConnections(of: id)
    }

    /// Counters of one NIC, from the data plane.
    func nicCounters(_ id: String) -> NICCounters? { runtime?.counters(of: id) }

    /// Notes a request that changed the model, for the state store.
    func applied(_ request: MessageV0.Request) {
        if stateStore != nil && recordsChanges { appliedRequests.append(request) }
    }

    /// Makes the changes of one API request durable (a batch of messages is one write).
    func saveIfNeeded() throws {
        guard !appliedRequests.isEmpty, let stateStore else { return }
        defer { appliedRequests.removeAll(keepingCapacity: true) }
        try stateStore.record(appliedRequests, model: model)
    }

    /// The Graphviz graph `app_status` reports. Its structure (sorted, escaped) is laid out once
    /// per snapshot version; each request only formats the live counters into it, so a host of
    /// 15,000 NICs answers in milliseconds.
    var graphDOT: String {
        let layout: GraphLayout
        if let cached = cachedLayout, cached.version == reconciler.snapshot.version {
            layout = cached.layout
        } else {
            layout = GraphLayout(reconciler.snapshot)
            cachedLayout = (reconciler.snapshot.version, layout)
        }
        guard let runtime else { return layout.render() }
        return layout.render(counters: { runtime.counters(of: $0) }, global: runtime.globalCounters())
    }
    private var cachedLayout: (version: UInt64, layout: GraphLayout)?

    /// NIC ids in order, for `nic_list`; sorted again only after a NIC was added or removed.
    var sortedNICIDs: [String] {
        if let cachedNICIDs { return cachedNICIDs }
        let ids = model.nics.keys.sorted()
        cachedNICIDs = ids
        return ids
    }
    private var cachedNICIDs: [String]?
}
