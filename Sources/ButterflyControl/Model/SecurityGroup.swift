import ButterflyDataplane
import OrderedCollections

/// A security group: rules (each at most once, in the order added) and member addresses.
public struct SecurityGroup: Equatable, Sendable {
    public var id: String
    public var rules: OrderedSet<FirewallRule>
    public var members: OrderedSet<IPAddress>

    public init(id: String, rules: OrderedSet<FirewallRule> = [], members: OrderedSet<IPAddress> = []) {
        self.id = id
        self.rules = rules
        self.members = members
    }
}
