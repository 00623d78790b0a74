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
    /// With a state store: the model as last saved (what a failed save rolls back to), and the
    /// current request's operations and changes, not yet saved nor published.
    private var durableModel = Model()
    private var pendingOperations: [(inout Model) throws(APIError) -> ModelChange] = []
    private var pendingChanges: [(change: ModelChange, changedNICs: [String])] = []
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

    /// Runs one model operation and, when it changed something, reconciles it. Without a state
    /// store the data plane gets it at once; with one, it gets it once the request is durable
    /// (`commit`), so a change that cannot be saved never reaches traffic.
    func mutate(_ operation: @escaping (inout Model) throws(APIError) -> ModelChange) throws(APIError) {
        let change = try operation(&model)
        guard reconciler.apply(change, from: model) else { return }
        if case .nic = change { cachedNICIDs = nil }
        if stateStore != nil && recordsChanges {
            pendingOperations.append(operation)
            pendingChanges.append((change, reconciler.changedNICs))
        } else {
            runtime?.publish(reconciler.snapshot, change: change, changedNICs: reconciler.changedNICs)
        }
    }

    /// Number of changes the current request made so far (to tell which replies acknowledged one).
    var pendingChangeCount: Int { pendingChanges.count }

    /// Ends a request: saves its changes, then hands them to the data plane. When they cannot be
    /// saved, puts the model, the reconciler and the prepared data-plane resources back as they
    /// were before the request and returns the reason; nothing was acknowledged.
    func commit() -> StateStore.Failure? {
        defer {
            appliedRequests.removeAll(keepingCapacity: true)
            pendingOperations.removeAll(keepingCapacity: true)
            pendingChanges.removeAll(keepingCapacity: true)
            // What `prepare` made for a request the model then refused goes too (a tap made
            // for a NIC that failed validation), so it cannot act on a later change.
            runtime?.abandonPrepared()
        }
        guard !pendingChanges.isEmpty, let stateStore else { return nil }
        do throws(StateStore.Failure) {
            try stateStore.record(appliedRequests, model: model)
        } catch {
            Log.error("state: change refused, cannot save it: \(error)")
            rollBack()
            stateStore.supersedeBrokenJournal(model)
            return error
        }
        // The durable copy follows by the same operations (deterministic model code: they
        // succeed again); cheaper than copying the model.
        for operation in pendingOperations { _ = try? operation(&durableModel) }
        for pending in pendingChanges {
            runtime?.publish(reconciler.snapshot, change: pending.change, changedNICs: pending.changedNICs)
        }
        return nil
    }

    private func rollBack() {
        model = durableModel
        cachedNICIDs = nil
        // Each touched entry is derived again from the restored model: groups first, then NICs,
        // so that every NIC is compiled against restored groups.
        var seen = Set<String>()
        let touched = pendingChanges.map(\.change)
        for case .securityGroup(let id) in touched where seen.insert("g" + id).inserted {
            reconciler.apply(.securityGroup(id), from: model)
        }
        for case .nic(let id) in touched where seen.insert("n" + id).inserted {
            reconciler.apply(.nic(id), from: model)
        }
    }

    /// After the state file was replayed: what is in the model is what is saved.
    func markDurable() { durableModel = model }

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

    /// The Graphviz graph `app_status` reports. Its structure (sorted, escaped) is laid out once
    /// per snapshot version; the live counters are formatted into it at most once a second
    /// (they are published once a second anyway), so a host of 15,000 NICs answers a burst of
    /// status requests without re-rendering megabytes each time.
    var graphDOT: String {
        let version = reconciler.snapshot.version
        let layout: GraphLayout
        if let cached = cachedLayout, cached.version == version {
            layout = cached.layout
        } else {
            layout = GraphLayout(reconciler.snapshot)
            cachedLayout = (version, layout)
        }
        guard let runtime else { return layout.render() }
        let now = DispatchTime.now().uptimeNanoseconds
        if let rendered = renderedGraph, rendered.version == version, now &- rendered.at < 1_000_000_000 {
            return rendered.dot
        }
        let dot = layout.render(counters: { runtime.counters(of: $0) }, global: runtime.globalCounters())
        renderedGraph = (version, now, dot)
        return dot
    }
    private var cachedLayout: (version: UInt64, layout: GraphLayout)?
    private var renderedGraph: (version: UInt64, at: UInt64, dot: String)?

    /// NIC ids in order, for `nic_list`; sorted again only after a NIC was added or removed.
    var sortedNICIDs: [String] {
        if let cachedNICIDs { return cachedNICIDs }
        let ids = model.nics.keys.sorted()
        cachedNICIDs = ids
        return ids
    }
    private var cachedNICIDs: [String]?
}
