import ButterflyDataplane
import OrderedCollections

/// The desired state: every NIC and security group the API has declared, with the Butterfly
/// semantics (create-or-replace, auto-created groups, idempotent deletes).
///
/// Each mutating operation validates first and changes nothing when it throws, then reports
/// what it touched as a `ModelChange`, which is all the reconciler needs to update the data
/// plane's snapshot incrementally.
public struct Model: Equatable, Sendable {
    public private(set) var nics: [String: NIC] = [:]
    public private(set) var securityGroups: [String: SecurityGroup] = [:]

    public init() {}

    // MARK: NICs

    /// Creates the NIC, replacing any NIC with the same id.
    @discardableResult
    public mutating func addNIC(_ nic: NIC) throws(APIError) -> ModelChange {
        try nic.validate()
        nics[nic.id] = nic
        return .nic(nic.id)
    }

    /// What `nic_update` may change; `nil` leaves an attribute as it is.
    public struct NICUpdate: Sendable, Equatable {
        public var ipAntiSpoof: Bool?
        /// Replaces all IPs; an empty array clears them.
        public var ips: [IPAddress]?
        /// Replaces all security groups; an empty array clears them.
        public var securityGroups: [String]?
        public var packetTrace: Bool?
        public var packetTracePath: String?
        public var vni: UInt32?
        public var mac: MACAddress?

        public init(
            ipAntiSpoof: Bool? = nil,
            ips: [IPAddress]? = nil,
            securityGroups: [String]? = nil,
            packetTrace: Bool? = nil,
            packetTracePath: String? = nil,
            vni: UInt32? = nil,
            mac: MACAddress? = nil
        ) {
            self.ipAntiSpoof = ipAntiSpoof
            self.ips = ips
            self.securityGroups = securityGroups
            self.packetTrace = packetTrace
            self.packetTracePath = packetTracePath
            self.vni = vni
            self.mac = mac
        }
    }

    @discardableResult
    public mutating func updateNIC(id: String, _ update: NICUpdate) throws(APIError) -> ModelChange {
        guard var nic = nics[id] else { throw .nicNotFound(id) }
        let before = nic
        if let value = update.ipAntiSpoof { nic.ipAntiSpoof = value }
        if let value = update.ips { nic.ips = value }
        if let value = update.securityGroups { nic.securityGroups = value }
        if let value = update.packetTrace { nic.packetTrace = value }
        if let value = update.packetTracePath { nic.packetTracePath = value }
        if let value = update.vni { nic.vni = value }
        if let value = update.mac { nic.mac = value }
        do {
            try nic.validate()
        } catch {
            throw .badNICUpdate(error.detail ?? error.description)
        }
        guard nic != before else { return .none }
        nics[id] = nic
        return .nic(id)
    }

    /// Deletes the NIC; an unknown id is not an error.
    @discardableResult
    public mutating func deleteNIC(id: String) -> ModelChange {
        nics.removeValue(forKey: id) == nil ? .none : .nic(id)
    }

    // MARK: Security groups

    /// Creates the group or replaces it whole (rules and members); an identical group is a no-op.
    @discardableResult
    public mutating func setSecurityGroup(_ group: SecurityGroup) -> ModelChange {
        guard securityGroups[group.id] != group else { return .none }
        securityGroups[group.id] = group
        return .securityGroup(group.id)
    }

    /// Deletes the group; NICs keep its id and ignore it until it is created again.
    @discardableResult
    public mutating func deleteSecurityGroup(id: String) -> ModelChange {
        securityGroups.removeValue(forKey: id) == nil ? .none : .securityGroup(id)
    }

    /// Adds a rule, creating the group if needed; a rule already there is a no-op.
    ///
    /// The group is changed in place through the dictionary (its `_modify` accessor), never
    /// read out, changed and stored back: a copy would hold a second reference to the rules
    /// and turn the append into a copy of the whole group. The rules themselves are shared
    /// with the data plane's snapshot, and a `RuleSet` change copies only its path: O(log n).
    @discardableResult
    public mutating func addRule(_ rule: FirewallRule, toSecurityGroup id: String) -> ModelChange {
        let created = securityGroups[id] == nil
        let inserted = securityGroups[id, default: SecurityGroup(id: id)].rules.append(rule).inserted
        return created || inserted ? .securityGroup(id) : .none
    }

    /// Removes the rule that equals `rule` exactly; a missing group or rule is a no-op. In
    /// place, like `addRule`.
    @discardableResult
    public mutating func deleteRule(_ rule: FirewallRule, fromSecurityGroup id: String) -> ModelChange {
        guard securityGroups[id]?.rules.remove(rule) != nil else { return .none }
        return .securityGroup(id)
    }

    @discardableResult
    public mutating func addMember(_ address: IPAddress, toSecurityGroup id: String) -> ModelChange {
        let created = securityGroups[id] == nil
        let inserted = securityGroups[id, default: SecurityGroup(id: id)].members.append(address).inserted
        return created || inserted ? .securityGroup(id) : .none
    }

    @discardableResult
    public mutating func deleteMember(_ address: IPAddress, fromSecurityGroup id: String) -> ModelChange {
        guard securityGroups[id]?.members.remove(address) != nil else { return .none }
        return .securityGroup(id)
    }

    func securityGroup(id: String) throws(APIError) -> SecurityGroup {
        guard let group = securityGroups[id] else { throw .securityGroupNotFound }
        return group
    }
}

/// What one model operation touched.
public enum ModelChange: Equatable, Sendable {
    case none
    case nic(String)
    case securityGroup(String)
}

extension Model {
    /// Why `id` cannot name a security group, or `nil` when it can. Ids are free strings
    /// (BUTTERFLY-COMPAT §4), but an empty one cannot be told from "no group" (a single `""`
    /// clears a NIC's list in `nic_update`), and a NUL cuts the id short wherever it meets C
    /// (syslog, the original's tools).
    static func problem(ofSecurityGroupID id: String) -> String? {
        if id.isEmpty { return "is empty" }
        if id.utf8.contains(0) { return "contains a NUL character" }
        return nil
    }
}
