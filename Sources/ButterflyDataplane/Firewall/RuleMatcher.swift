import ButterflyPacket

/// One direction's security-group rules of a NIC, compiled into a lookup whose cost does not
/// grow with the number of rules: a protocol table, then a binary search over the protocol's
/// elementary port intervals, then a binary search over that interval's merged address ranges.
///
/// ```
///  protocol ──► [0…255 | any] ─► port intervals  [0,22) [22,23) [23,80) [80,81) [81,65536)
///                                    set index       -1     s0     -1      s1      -1
///                                                    │                      │
///  address (IPv4 as ::ffff:a.b.c.d) ───────────► s0: [lo,hi] [lo,hi] …   s1: [lo,hi] …
/// ```
///
/// Every rule that covers an interval contributes its peer addresses to that interval's set;
/// overlapping prefixes are merged into disjoint ranges, so a lookup is
/// O(log intervals + log ranges). IPv4 lives in the IPv4-mapped block `::ffff:0:0/96`, and IPv6
/// prefixes are compiled without that block, so `::/0` never admits IPv4.
///
/// The compiled form is flat memory owned by this object and never changes: the worker reads it
/// with plain loads while the control plane builds the next one.
public final class RuleMatcher: @unchecked Sendable {
    // Safe: immutable after init; the buffers are freed in deinit only.

    /// One rule as the compiler takes it: a protocol (nil = any), a destination-port range
    /// (ignored for protocols without ports), and the peer's addresses as inclusive ranges in
    /// the 128-bit space (see `Self.range`).
    public struct Entry: Sendable, Equatable {
        public var ipProtocol: UInt8?
        public var ports: ClosedRange<UInt16>
        public var peers: [ClosedRange<UInt128>]

        public init(ipProtocol: UInt8?, ports: ClosedRange<UInt16>, peers: [ClosedRange<UInt128>]) {
            self.ipProtocol = ipProtocol
            self.ports = ports
            self.peers = peers
        }
    }

    /// Rules as the compiler reads them, in flat arrays (no allocation per rule: a group of
    /// 10,000 rules is a handful of arrays, not 10,000 of them).
    public struct RuleList: Sendable {
        /// Protocol slot of each rule: 0…255, or 256 for any protocol.
        var slots: [UInt16] = []
        var ports: [ClosedRange<UInt16>] = []
        /// Rule i's peers are `allPeers[peerStart[i]..<peerStart[i + 1]]`.
        var peerStart: [Int32] = [0]
        var allPeers: [ClosedRange<UInt128>] = []

        public init() {}

        public var count: Int { slots.count }

        /// Adds a rule; its peers are then given with `addPeers` before the next rule.
        public mutating func add(ipProtocol: UInt8?, ports: ClosedRange<UInt16>) {
            if slots.count > 0 { peerStart.append(Int32(allPeers.count)) }
            slots.append(ipProtocol.map(UInt16.init) ?? 256)
            self.ports.append(ports)
        }

        /// Adds the range a prefix covers to the last rule's peers (see `RuleMatcher.ranges`).
        public mutating func addPeers(_ address: IPAddress, prefixLength: Int) {
            RuleMatcher.appendRanges(address, prefixLength: prefixLength, to: &allPeers)
        }

        mutating func addPeers(_ ranges: [ClosedRange<UInt128>]) { allPeers += ranges }

        func peers(of rule: Int) -> ArraySlice<ClosedRange<UInt128>> {
            let end = rule + 1 < peerStart.count ? Int(peerStart[rule + 1]) : allPeers.count
            return allPeers[Int(peerStart[rule])..<end]
        }
    }

    /// Protocols whose rules select destination ports (TCP, UDP, SCTP, UDP-Lite).
    @inlinable
    public static func hasPorts(_ ipProtocol: UInt8) -> Bool {
        ipProtocol == 6 || ipProtocol == 17 || ipProtocol == 132 || ipProtocol == 136
    }

    /// The IPv4-mapped block, where IPv4 addresses live in the matcher's 128-bit space.
    public static let mappedIPv4 = FrameHeaders.ipv4Mapped

    @inlinable
    public static func key(ipv4: UInt32) -> UInt128 { mappedIPv4 | UInt128(ipv4) }

    /// The range a prefix covers (host bits ignored), in the matcher's space; an IPv6 prefix
    /// that contains the IPv4-mapped block yields the pieces around it.
    public static func ranges(_ address: IPAddress, prefixLength: Int) -> [ClosedRange<UInt128>] {
        var ranges: [ClosedRange<UInt128>] = []
        appendRanges(address, prefixLength: prefixLength, to: &ranges)
        return ranges
    }

    /// `ranges(_:prefixLength:)`, appended to `ranges` (no array per prefix).
    public static func appendRanges(_ address: IPAddress, prefixLength: Int, to ranges: inout [ClosedRange<UInt128>]) {
        switch address {
        case .v4(let value):
            let length = min(max(prefixLength, 0), 32)
            let hostBits = UInt32(32 - length)
            let mask: UInt32 = hostBits == 32 ? 0 : ~UInt32(0) << hostBits
            let low = value & mask
            let high = low | ~mask
            ranges.append(key(ipv4: low)...key(ipv4: high))
        case .v6(let high, let low):
            let length = min(max(prefixLength, 0), 128)
            let value = UInt128(high) << 64 | UInt128(low)
            let hostBits = 128 - length
            let mask: UInt128 = hostBits == 128 ? 0 : ~UInt128(0) << hostBits
            let start = value & mask
            let end = start | ~mask
            let blockStart = mappedIPv4
            let blockEnd = mappedIPv4 | 0xFFFF_FFFF
            guard start <= blockStart && end >= blockEnd else {
                // Inside the block (an IPv4-mapped prefix) or beside it.
                if !(start >= blockStart && end <= blockEnd) { ranges.append(start...end) }
                return
            }
            if start < blockStart { ranges.append(start...(blockStart - 1)) }
            if end > blockEnd { ranges.append((blockEnd + 1)...end) }
        }
    }

    // Flat storage.
    /// (low, high) pairs of every set, back to back.
    @usableFromInline let ranges: UnsafeMutablePointer<UInt128>
    /// Per set: first pair index and pair count.
    @usableFromInline let sets: UnsafeMutablePointer<(first: Int32, count: Int32)>
    /// Per protocol (0…255) and 256 = any protocol: first interval index and interval count
    /// (count 0 = no rule for it).
    @usableFromInline let protocols: UnsafeMutablePointer<(first: Int32, count: Int32)>
    /// Interval start ports, ascending within each protocol, and the set of each interval
    /// (-1: no rule covers it).
    @usableFromInline let intervalStarts: UnsafeMutablePointer<UInt16>
    @usableFromInline let intervalSets: UnsafeMutablePointer<Int32>
    let rangeCount: Int
    let setCount: Int
    let intervalCount: Int
    /// Number of rules compiled (for the CLI and counters).
    public let ruleCount: Int

    /// True when no rule was given (a direction with no rule at all).
    public var isEmpty: Bool { ruleCount == 0 }

    public convenience init(_ entries: [Entry]) {
        var list = RuleList()
        for entry in entries {
            list.add(ipProtocol: entry.ipProtocol, ports: entry.ports)
            list.addPeers(entry.peers)
        }
        self.init(list)
    }

    public convenience init(_ entries: RuleList) {
        self.init(RuleCompiler(entries), ruleCount: entries.count)
    }

    init(_ compiled: RuleCompiler, ruleCount: Int) {
        self.ruleCount = ruleCount
        rangeCount = compiled.ranges.count / 2
        setCount = compiled.sets.count
        intervalCount = compiled.intervalStarts.count
        ranges = .allocate(capacity: max(1, compiled.ranges.count))
        ranges.initialize(from: compiled.ranges, count: compiled.ranges.count)
        sets = .allocate(capacity: max(1, compiled.sets.count))
        for (index, set) in compiled.sets.enumerated() { (sets + index).initialize(to: set) }
        protocols = .allocate(capacity: 257)
        protocols.initialize(from: compiled.protocols, count: 257)
        intervalStarts = .allocate(capacity: max(1, compiled.intervalStarts.count))
        intervalStarts.initialize(from: compiled.intervalStarts, count: compiled.intervalStarts.count)
        intervalSets = .allocate(capacity: max(1, compiled.intervalSets.count))
        intervalSets.initialize(from: compiled.intervalSets, count: compiled.intervalSets.count)
    }

    /// This matcher with `added` rules too, without compiling the rules it holds again (a rule
    /// added to a group of 10,000 took a whole compile: 5–8 ms): the protocols the new rules
    /// name get their intervals split at the new port bounds and the new peers merged into the
    /// sets of the intervals they cover; the other protocols are copied. The result is the one
    /// compiling every rule gives, interval for interval (`RuleMatcherTests` compares them).
    public func adding(_ added: RuleList) -> RuleMatcher {
        var out = RuleCompiler()
        // Old set index → its copy in `out` (-1: not copied yet).
        var copied = [Int32](repeating: -1, count: setCount)
        var bySlot: [Int: [Int]] = [:]
        for rule in 0..<added.count { bySlot[Int(added.slots[rule]), default: []].append(rule) }
        for slot in 0...256 {
            let table = protocols[slot]
            let old = Int(table.first)..<Int(table.first + table.count)
            let first = Int32(out.intervalStarts.count)
            defer { out.protocols[slot] = (first, Int32(out.intervalStarts.count) - first) }
            guard let rules = bySlot[slot] else {
                for index in old { copyInterval(index, into: &out, copied: &copied) }
                continue
            }
            let hasPorts = slot != 256 && Self.hasPorts(UInt8(slot))
            guard hasPorts, !old.isEmpty else {
                // No ports (one interval), or no old interval: every piece from scratch.
                let bounds = hasPorts ? [0] + Self.portBounds(of: rules, in: added) : [0]
                var previous: [ClosedRange<UInt128>]? = nil
                for port in Set(bounds.filter { $0 <= 65535 }).sorted() {
                    var peers = old.isEmpty ? [] : content(of: intervalSets[old.lowerBound])
                    for rule in rules where !hasPorts || added.ports[rule].contains(UInt16(port)) {
                        peers += added.peers(of: rule)
                    }
                    let merged = Self.merged(peers)
                    if let previous, previous == merged { continue }
                    previous = merged
                    out.intervalStarts.append(UInt16(port))
                    out.intervalSets.append(out.store(merged))
                }
                continue
            }
            // Only the old intervals the new rules' ports reach are split and merged; those
            // before and after are copied as they are.
            let spanStart = rules.map { Int(added.ports[$0].lowerBound) }.min()!
            let spanEnd = rules.map { Int(added.ports[$0].upperBound) }.max()! + 1
            let firstTouched = lastInterval(in: old, startingAtOrBefore: spanStart)
            let lastTouched = lastInterval(in: old, startingAtOrBefore: spanEnd - 1)
            for index in old.lowerBound..<firstTouched { copyInterval(index, into: &out, copied: &copied) }
            var previous: [ClosedRange<UInt128>]? =
                firstTouched > old.lowerBound ? content(of: intervalSets[firstTouched - 1]) : nil
            let bounds =
                (firstTouched...lastTouched).map { Int(intervalStarts[$0]) } + Self.portBounds(of: rules, in: added)
            // The intervals after the span keep their starts (copied below).
            let spanLimit = lastTouched + 1 < old.upperBound ? Int(intervalStarts[lastTouched + 1]) : 65536
            var oldIndex = firstTouched
            for port in Set(bounds.filter { $0 < spanLimit }).sorted() {
                while oldIndex < lastTouched && Int(intervalStarts[oldIndex + 1]) <= port { oldIndex += 1 }
                var peers = content(of: intervalSets[oldIndex])
                var covered = false
                for rule in rules where added.ports[rule].contains(UInt16(port)) {
                    peers += added.peers(of: rule)
                    covered = true
                }
                let merged = covered ? Self.merged(peers) : peers
                // Adjacent intervals with the same set are one (as the compiler emits them).
                if let previous, previous == merged { continue }
                previous = merged
                out.intervalStarts.append(UInt16(port))
                out.intervalSets.append(
                    covered ? out.store(merged) : copy(set: intervalSets[oldIndex], into: &out, copied: &copied)
                )
            }
            for index in (lastTouched + 1)..<old.upperBound {
                if index == lastTouched + 1, let previous, previous == content(of: intervalSets[index]) { continue }
                copyInterval(index, into: &out, copied: &copied)
            }
        }
        return RuleMatcher(out, ruleCount: ruleCount + added.count)
    }

    /// Where `rules`' port ranges start and end (the port after each range; 65536 past the
    /// last port).
    private static func portBounds(of rules: [Int], in list: RuleList) -> [Int] {
        rules.flatMap { [Int(list.ports[$0].lowerBound), Int(list.ports[$0].upperBound) + 1] }
    }

    /// The last of the `intervals` (one protocol's) that starts at or before `port`.
    private func lastInterval(in intervals: Range<Int>, startingAtOrBefore port: Int) -> Int {
        var low = intervals.lowerBound
        var high = intervals.upperBound - 1
        while low < high {
            let middle = (low + high + 1) >> 1
            if Int(intervalStarts[middle]) <= port { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The merged ranges of old set `set` (none for -1).
    private func content(of set: Int32) -> [ClosedRange<UInt128>] {
        guard set >= 0 else { return [] }
        let pairs = sets[Int(set)]
        return (Int(pairs.first)..<Int(pairs.first + pairs.count)).map { ranges[$0 * 2]...ranges[$0 * 2 + 1] }
    }

    private func copyInterval(_ index: Int, into out: inout RuleCompiler, copied: inout [Int32]) {
        out.intervalStarts.append(intervalStarts[index])
        out.intervalSets.append(copy(set: intervalSets[index], into: &out, copied: &copied))
    }

    /// Copies old set `set` into `out` once (-1 stays -1).
    private func copy(set: Int32, into out: inout RuleCompiler, copied: inout [Int32]) -> Int32 {
        guard set >= 0 else { return -1 }
        if copied[Int(set)] >= 0 { return copied[Int(set)] }
        let pairs = sets[Int(set)]
        let index = Int32(out.sets.count)
        out.sets.append((Int32(out.ranges.count / 2), pairs.count))
        for pair in Int(pairs.first)..<Int(pairs.first + pairs.count) {
            out.ranges.append(ranges[pair * 2])
            out.ranges.append(ranges[pair * 2 + 1])
        }
        copied[Int(set)] = index
        return index
    }

    /// Ranges sorted and merged where they overlap or touch (the compiler's canonical form).
    static func merged(_ peers: [ClosedRange<UInt128>]) -> [ClosedRange<UInt128>] {
        var result: [ClosedRange<UInt128>] = []
        mergeSorted(peers.sorted { $0.lowerBound < $1.lowerBound }) { result.append($0...$1) }
        return result
    }

    /// Calls `emit` with each maximal range of `sorted` (ranges ordered by lower bound) once
    /// overlapping or touching ones are joined.
    @inline(__always)
    static func mergeSorted(_ sorted: [ClosedRange<UInt128>], _ emit: (UInt128, UInt128) -> Void) {
        guard let first = sorted.first else { return }
        var low = first.lowerBound
        var high = first.upperBound
        for range in sorted.dropFirst() {
            if high == .max || range.lowerBound <= high + 1 {
                high = max(high, range.upperBound)
            } else {
                emit(low, high)
                low = range.lowerBound
                high = range.upperBound
            }
        }
        emit(low, high)
    }

    deinit {
        ranges.deallocate()
        sets.deallocate()
        protocols.deallocate()
        intervalStarts.deallocate()
        intervalSets.deallocate()
    }

    /// True when a rule allows a packet of `ipProtocol` to destination port `port` (ignored
    /// for protocols without ports) with `peer` (the source inbound, the destination outbound).
    @inlinable
    public func allows(ipProtocol: UInt8, port: UInt16, peer: UInt128) -> Bool {
        if lookup(slot: 256, port: 0, peer: peer) { return true }
        return lookup(slot: Int(ipProtocol), port: port, peer: peer)
    }

    @inlinable
    func lookup(slot: Int, port: UInt16, peer: UInt128) -> Bool {
        let table = protocols[slot]
        guard table.count > 0 else { return false }
        // Last interval whose start ≤ port (the first one starts at 0).
        var low = Int(table.first)
        var high = low &+ Int(table.count) &- 1
        while low < high {
            let middle = (low &+ high &+ 1) >> 1
            if intervalStarts[middle] <= port { low = middle } else { high = middle &- 1 }
        }
        let set = intervalSets[low]
        guard set >= 0 else { return false }
        let pairs = sets[Int(set)]
        // Last range whose low end ≤ peer.
        var first = Int(pairs.first)
        var last = first &+ Int(pairs.count) &- 1
        guard ranges[first &* 2] <= peer else { return false }
        while first < last {
            let middle = (first &+ last &+ 1) >> 1
            if ranges[middle &* 2] <= peer { first = middle } else { last = middle &- 1 }
        }
        return peer <= ranges[first &* 2 &+ 1]
    }

    /// Human-readable lines of what was compiled: per protocol, each port interval and its
    /// merged address ranges (for `butterfly nic firewall`).
    public func describe(peerWord: String = "from") -> [String] {
        var lines: [String] = []
        for slot in 0...256 {
            let table = protocols[slot]
            guard table.count > 0 else { continue }
            let name = slot == 256 ? "all" : FirewallRule.protocolName(UInt8(slot))
            for index in Int(table.first)..<Int(table.first + table.count) {
                let set = intervalSets[index]
                guard set >= 0 else { continue }
                var ports = ""
                if slot != 256 && Self.hasPorts(UInt8(slot)) {
                    let start = Int(intervalStarts[index])
                    let end =
                        index + 1 < Int(table.first + table.count) ? Int(intervalStarts[index + 1]) - 1 : 65535
                    ports = start == end ? " port \(start)" : " ports \(start)-\(end)"
                }
                let pairs = sets[Int(set)]
                let peers = (0..<Int(pairs.count)).map { offset -> String in
                    let pair = Int(pairs.first) + offset
                    return Self.describe(ranges[pair * 2]...ranges[pair * 2 + 1])
                }
                lines.append("\(name)\(ports) \(peerWord) \(peers.joined(separator: ", "))")
            }
        }
        return lines
    }

    /// A range as the prefixes that cover it exactly, in text.
    static func describe(_ range: ClosedRange<UInt128>) -> String {
        var parts: [String] = []
        var start = range.lowerBound
        while true {
            // Largest aligned block starting at `start` that stays within the range.
            var size = start == 0 ? 128 : start.trailingZeroBitCount
            while size > 0 {
                let end = size == 128 ? UInt128.max : start | ((UInt128(1) << size) - 1)
                if end <= range.upperBound { break }
                size -= 1
            }
            let end = size == 128 ? UInt128.max : start | ((UInt128(1) << size) - 1)
            if start >= mappedIPv4 && end <= (mappedIPv4 | 0xFFFF_FFFF) {
                parts.append("\(IPAddress.v4(UInt32(truncatingIfNeeded: start)))/\(32 - size)")
            } else {
                let address = IPAddress.v6(
                    high: UInt64(truncatingIfNeeded: start >> 64),
                    low: UInt64(truncatingIfNeeded: start)
                )
                parts.append("\(address)/\(128 - size)")
            }
            if end >= range.upperBound { break }
            start = end + 1
        }
        return parts.joined(separator: ", ")
    }
}

extension FirewallRule {
    /// The CLI's name of a protocol number, or the number.
    public static func protocolName(_ number: UInt8) -> String {
        protocolNames.first { $0.number == number }?.name ?? String(number)
    }
}
