import HashTreeCollections

/// The whole data-plane configuration as one immutable value: what the control plane
/// publishes and a worker adopts between two batches.
///
/// ```
///  Model (desired state) ──reconcile──► DataplaneConfig v(n) ──publish──► worker
///                                            │ structural sharing
///  one change ──────────────────────────► DataplaneConfig v(n+1)
/// ```
///
/// Collections are persistent hash tries (`TreeDictionary`): deriving version n+1 from n
/// after one change costs O(log n) and shares everything else, so a change costs the same with
/// ten NICs or ten thousand, and a worker still reading version n is never disturbed.
public struct DataplaneConfig: Sendable {
    /// Increases by one for every published change.
    public var version: UInt64
    public var host: HostConfig
    public var nics: TreeDictionary<String, NICConfig>
    public var securityGroups: TreeDictionary<String, SecurityGroupConfig>

    public init(host: HostConfig) {
        self.version = 0
        self.host = host
        self.nics = [:]
        self.securityGroups = [:]
    }
}

/// Settings of this host that come from the daemon's options, not from the API.
public struct HostConfig: Sendable, Equatable {
    /// VTEP (underlay) address; `nil` runs the daemon in local-only switching mode.
    public var vtepAddress: IPAddress?
    public var socketDirectory: String
    /// MTU given to guest NICs (`-m/--nic-mtu`); `nil` = the port's maximum.
    public var nicMTU: Int?
    public var offloads: Bool

    public init(vtepAddress: IPAddress?, socketDirectory: String, nicMTU: Int?, offloads: Bool) {
        self.vtepAddress = vtepAddress
        self.socketDirectory = socketDirectory
        self.nicMTU = nicMTU
        self.offloads = offloads
    }
}

/// How a NIC reaches its guest.
public enum NICKind: UInt8, Sendable, Hashable {
    case vhostUserServer = 0
    case tap = 1
    case bench = 2
    case vhostUserClient = 3
}

/// One NIC as the data plane needs it.
public struct NICConfig: Sendable, Equatable {
    public var id: String
    public var mac: MACAddress
    public var vni: UInt32
    public var ips: [IPAddress]
    public var kind: NICKind
    /// vhost-user socket path, or tap interface name.
    public var path: String
    public var ipAntiSpoof: Bool
    public var bypassFiltering: Bool
    public var securityGroups: [String]
    /// pcap file the NIC's traffic is written to, when tracing is on.
    public var packetTracePath: String?
    public var sniffTarget: String?
    /// The NIC's security groups compiled (by the control plane); `nil` is an empty policy:
    /// nothing allowed in, anything allowed out.
    public var firewall: FirewallPolicy?

    public init(
        id: String,
        mac: MACAddress,
        vni: UInt32,
        ips: [IPAddress],
        kind: NICKind,
        path: String,
        ipAntiSpoof: Bool,
        bypassFiltering: Bool,
        securityGroups: [String],
        packetTracePath: String?,
        sniffTarget: String?,
        firewall: FirewallPolicy? = nil
    ) {
        self.id = id
        self.mac = mac
        self.vni = vni
        self.ips = ips
        self.kind = kind
        self.path = path
        self.ipAntiSpoof = ipAntiSpoof
        self.bypassFiltering = bypassFiltering
        self.securityGroups = securityGroups
        self.packetTracePath = packetTracePath
        self.sniffTarget = sniffTarget
        self.firewall = firewall
    }
}

/// One security group: its rules and member addresses. The rules are the model's own
/// `RuleSet`, shared, not copied: a snapshot costs O(1) per group change (RuleSet.swift).
public struct SecurityGroupConfig: Sendable, Equatable {
    public var id: String
    public var rules: RuleSet
    public var members: Set<IPAddress>

    public init(id: String, rules: RuleSet, members: Set<IPAddress>) {
        self.id = id
        self.rules = rules
        self.members = members
    }

    public init(id: String, rules: [FirewallRule], members: Set<IPAddress>) {
        self.init(id: id, rules: RuleSet(rules), members: members)
    }
}
