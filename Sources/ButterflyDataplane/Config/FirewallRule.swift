/// One security-group rule in validated, typed form: the unit the firewall compiler consumes and
/// the model stores.
///
/// Identity is every field (direction, protocol, ports, source), which is what makes
/// `sg_rule_add` idempotent and `sg_rule_del` an exact match.
public struct FirewallRule: Hashable, Sendable {
    public enum Direction: UInt8, Sendable, Hashable {
        /// Toward the NIC (traffic the guest receives).
        case inbound = 0
        /// From the NIC (traffic the guest sends).
        case outbound = 1
    }

    /// Where the peer of a packet must be for the rule to match.
    public enum Peer: Hashable, Sendable {
        /// An address prefix. `address` keeps the text the user gave, normalised, host bits
        /// included: identity is exact, the compiler masks.
        case cidr(IPAddress, prefixLength: UInt8)
        /// The member IPs of another security group, resolved when compiled.
        case members(ofSecurityGroup: String)
    }

    /// `nil` means every protocol (the API's −1).
    public var ipProtocol: UInt8?
    public var direction: Direction
    /// Port range for port-carrying protocols; `nil` when the rule gave none.
    public var ports: ClosedRange<UInt16>?
    public var peer: Peer

    public init(direction: Direction, ipProtocol: UInt8?, ports: ClosedRange<UInt16>?, peer: Peer) {
        self.direction = direction
        self.ipProtocol = ipProtocol
        self.ports = ports
        self.peer = peer
    }

    /// IANA protocol numbers with names the CLI accepts and prints.
    public static let protocolNames: [(name: String, number: UInt8)] = [
        ("icmp", 1), ("tcp", 6), ("udp", 17), ("icmpv6", 58), ("sctp", 132),
    ]
}
