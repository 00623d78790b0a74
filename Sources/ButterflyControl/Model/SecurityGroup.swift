import ButterflyDataplane
import OrderedCollections

/// A security group: rules (each at most once, in the order added) and member addresses.
///
/// The rules are a `RuleSet`, a persistent structure the data plane's snapshot shares: a rule
/// added or removed (in place, through `Model`'s dictionary) costs O(log n) in the group's
/// size even while the running snapshot holds the group as it was.
public struct SecurityGroup: Equatable, Sendable {
    public var id: String
    public var rules: RuleSet
    public var members: OrderedSet<IPAddress>

    public init(id: String, rules: RuleSet = [], members: OrderedSet<IPAddress> = []) {
        self.id = id
        self.rules = rules
        self.members = members
    }
}
