import ButterflyDataplane
import HashTreeCollections

/// Turns the desired state into the data plane's immutable configuration, one change at a time.
///
/// `apply(_:from:)` rewrites only the entry the change names, in a persistent map, so the cost
/// of a change does not depend on how many NICs or groups exist. Every applied change bumps
/// the snapshot's version; a no-op change publishes nothing.
public struct Reconciler: Sendable {
    public private(set) var snapshot: DataplaneConfig
    /// Per-NIC packet tracing default (`butterflyd -t`).
    public let traceByDefault: Bool
    /// Where default per-NIC traces go: `<traceDirectory>/butterfly-<pid>-<nic>.pcap`, and
    /// the only directory requested trace paths may name (`TraceDirectory`).
    public var traceDirectory: String { traces.path }
    private let traces: TraceDirectory
    private let processID: Int32
    /// NICs whose configuration the last `apply` changed (what the worker must adopt).
    public private(set) var changedNICs: [String] = []
    /// Which NICs carry each group id (existing or not): a group's rules reach these.
    private var nicsByGroup: [String: Set<String>] = [:]
    /// Which groups have rules naming each group id as members: its members reach the NICs of
    /// those groups.
    private var groupsReferencing: [String: Set<String>] = [:]
    /// Every compiled policy gets the next value, so the worker knows which tracked
    /// connections to check again.
    private var nextGeneration: UInt32 = 1

    public init(host: HostConfig, traceByDefault: Bool, traceDirectory: String, processID: Int32) {
        self.snapshot = DataplaneConfig(host: host)
        self.traceByDefault = traceByDefault
        self.traces = TraceDirectory(traceDirectory)
        self.processID = processID
    }

    /// Applies one model change; returns whether the snapshot changed.
    @discardableResult
    public mutating func apply(_ change: ModelChange, from model: Model) -> Bool {
        switch change {
        case .none:
            return false
        case .nic(let id):
            if let old = snapshot.nics[id] {
                for group in old.securityGroups { nicsByGroup[group]?.remove(id) }
            }
            if let nic = model.nics[id] {
                var config = nicConfig(nic)
                for group in config.securityGroups { nicsByGroup[group, default: []].insert(id) }
                config.firewall = compile(config)
                snapshot.nics[id] = config
            } else {
                snapshot.nics[id] = nil
            }
            changedNICs = [id]
        case .securityGroup(let id):
            // The model's rules are shared, not converted, and the groups they reference are
            // counted by the rule set: a change to a group no NIC carries costs O(log n) in
            // its rules (the members are still converted: O(members)).
            let group = model.securityGroups[id].map {
                SecurityGroupConfig(id: $0.id, rules: $0.rules, members: Set($0.members))
            }
            let before = snapshot.securityGroups[id]
            let addedRule = Self.singleAddedRule(before: before, after: group)
            let referencedBefore = before?.rules.referencedGroups ?? [:]
            let referencedAfter = group?.rules.referencedGroups ?? [:]
            for referenced in referencedBefore.keys where referencedAfter[referenced] == nil {
                groupsReferencing[referenced]?.remove(id)
            }
            for referenced in referencedAfter.keys where referencedBefore[referenced] == nil {
                groupsReferencing[referenced, default: []].insert(id)
            }
            snapshot.securityGroups[id] = group
            // The NICs carrying the group, and those whose rules name it as members.
            var affected = nicsByGroup[id] ?? []
            for referencing in groupsReferencing[id] ?? [] { affected.formUnion(nicsByGroup[referencing] ?? []) }
            changedNICs = affected.sorted()
            // NICs with the same group list share their matchers: compiled once per list.
            var compiled: [[String]: (inbound: RuleMatcher, outbound: RuleMatcher?)] = [:]
            for nicID in changedNICs {
                guard var config = snapshot.nics[nicID] else { continue }
                let matchers: (inbound: RuleMatcher, outbound: RuleMatcher?)
                if let done = compiled[config.securityGroups] {
                    matchers = done
                } else if let addedRule, let old = config.firewall {
                    // One rule added, members unchanged: the NIC's matchers take the rule
                    // instead of compiling every rule again (5–8 ms for a group of 10,000).
                    matchers =
                        config.securityGroups.contains(id)
                        ? old.matchers(adding: addedRule, groups: snapshot.securityGroups)
                        : (old.inbound, old.outbound)
                } else {
                    matchers = FirewallPolicy.compileMatchers(config.securityGroups, groups: snapshot.securityGroups)
                }
                compiled[config.securityGroups] = matchers
                config.firewall = FirewallPolicy(
                    inbound: matchers.inbound,
                    outbound: matchers.outbound,
                    generation: nextGeneration,
                    ownAddresses: FirewallPolicy.ownAddresses(of: config)
                )
                nextGeneration &+= 1
                snapshot.nics[nicID] = config
            }
        }
        snapshot.version += 1
        return true
    }

    /// The one rule `after` has beyond `before` when that is the whole change (same members,
    /// one rule more); nil for anything else. The rule sets share their structure, so the
    /// difference costs about a path of the tree, not a walk of the group.
    static func singleAddedRule(before: SecurityGroupConfig?, after: SecurityGroupConfig?) -> FirewallRule? {
        guard let before, let after, after.rules.count == before.rules.count + 1, after.members == before.members
        else { return nil }
        let added = after.rules.unordered.subtracting(before.rules.unordered)
        return added.count == 1 ? added.first : nil
    }

    /// Compiles one NIC's groups against the current snapshot (control thread).
    private mutating func compile(_ nic: NICConfig) -> FirewallPolicy {
        defer { nextGeneration &+= 1 }
        return FirewallPolicy.compile(nic, groups: snapshot.securityGroups, generation: nextGeneration)
    }

    /// The path the NIC reports back: its vhost-user socket or its tap interface name.
    public func path(for nic: NIC) -> String {
        switch nic.kind {
        case .vhostUserServer, .vhostUserClient:
            return snapshot.host.socketDirectory + "/qemu-vhost-" + nic.id
        case .tap:
            return nic.id
        case .bench:
            return ""
        }
    }

    /// Where a NIC given no trace path is traced: `<traceDirectory>/butterfly-<pid>-<nic>.pcap`.
    public func defaultTracePath(forNICID id: String) -> String {
        traces.file(named: "butterfly-\(processID)-\(id).pcap")
    }

    /// The absolute path of the trace file a request names, confined to the trace directory.
    public func confineTracePath(_ requested: String) throws(TraceDirectory.Refusal) -> String {
        try traces.confine(requested)
    }

    /// The pcap file of a NIC being traced, or `nil` when its tracing is off.
    public func tracePath(for nic: NIC) -> String? {
        guard nic.packetTrace ?? traceByDefault else { return nil }
        return nic.packetTracePath ?? defaultTracePath(forNICID: nic.id)
    }

    private func nicConfig(_ nic: NIC) -> NICConfig {
        NICConfig(
            id: nic.id,
            mac: nic.mac,
            vni: nic.vni,
            ips: nic.ips,
            kind: nic.kind,
            path: path(for: nic),
            ipAntiSpoof: nic.ipAntiSpoof,
            bypassFiltering: nic.bypassFiltering,
            securityGroups: nic.securityGroups,
            packetTracePath: tracePath(for: nic),
            sniffTarget: nic.sniffTargetNICID
        )
    }
}
