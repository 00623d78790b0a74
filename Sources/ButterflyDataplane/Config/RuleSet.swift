import HashTreeCollections

/// A security group's rules: each at most once, listed in the order added; the storage the
/// model and the data plane's `SecurityGroupConfig` share.
///
/// ```
///  sequenceByRule  TreeDictionary<FirewallRule, UInt64>   rule → when it was added
///  referencedGroups TreeDictionary<String, Int>           group → rules naming it as peer
/// ```
/// Both are persistent hash trees: a copy costs nothing and a change to one copy rewrites only
/// the path to the changed entry (O(log n)), the rest stays shared. So the reconciler hands
/// the model's rules to the snapshot without converting them, and the next `sg_rule_add`
/// neither copies the group for the snapshot still holding the old rules nor walks them: a
/// rule change costs O(log n) in the group's size. Listing the rules (a compile, `sg_rule_list`,
/// a dump) sorts them by when they were added: O(n log n), the compile's own order of cost.
public struct RuleSet: Sendable {
    private var sequenceByRule: TreeDictionary<FirewallRule, UInt64> = [:]
    private var nextSequence: UInt64 = 0
    /// How many rules name each group as their peer (`Peer.members`): which groups' members
    /// this set depends on, without a walk of the rules.
    public private(set) var referencedGroups: TreeDictionary<String, Int> = [:]

    public init() {}

    public init<S: Sequence>(_ rules: S) where S.Element == FirewallRule {
        for rule in rules { append(rule) }
    }

    public var count: Int { sequenceByRule.count }
    public var isEmpty: Bool { sequenceByRule.isEmpty }

    public func contains(_ rule: FirewallRule) -> Bool { sequenceByRule[rule] != nil }

    /// Adds `rule` at the end unless it is there already (it then keeps its place).
    @discardableResult
    public mutating func append(_ rule: FirewallRule) -> (inserted: Bool, rule: FirewallRule) {
        guard sequenceByRule[rule] == nil else { return (false, rule) }
        sequenceByRule[rule] = nextSequence
        nextSequence &+= 1
        if case .members(let group) = rule.peer { referencedGroups[group, default: 0] += 1 }
        return (true, rule)
    }

    /// Removes `rule`; returns it, or nil when it was not there.
    @discardableResult
    public mutating func remove(_ rule: FirewallRule) -> FirewallRule? {
        guard sequenceByRule.removeValue(forKey: rule) != nil else { return nil }
        if case .members(let group) = rule.peer {
            let left = (referencedGroups[group] ?? 1) - 1
            referencedGroups[group] = left > 0 ? left : nil
        }
        return rule
    }

    /// The rules in no particular order, without sorting (what a compiler needs: the result
    /// does not depend on the order).
    public var unordered: TreeDictionary<FirewallRule, UInt64>.Keys { sequenceByRule.keys }

    /// The rules in the order they were added.
    public var elements: [FirewallRule] {
        sequenceByRule.sorted { $0.value < $1.value }.map(\.key)
    }
}

extension RuleSet: Sequence {
    public func makeIterator() -> IndexingIterator<[FirewallRule]> { elements.makeIterator() }
    public var underestimatedCount: Int { count }
}

extension RuleSet: Equatable {
    /// The same rules in the same order.
    public static func == (lhs: RuleSet, rhs: RuleSet) -> Bool {
        lhs.count == rhs.count && lhs.elements == rhs.elements
    }
}

extension RuleSet: ExpressibleByArrayLiteral {
    public init(arrayLiteral rules: FirewallRule...) { self.init(rules) }
}

extension RuleSet: CustomStringConvertible {
    public var description: String { elements.description }
}
