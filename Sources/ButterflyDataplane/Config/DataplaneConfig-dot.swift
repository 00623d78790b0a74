extension DataplaneConfig {
    /// The configured graph in Graphviz DOT: the underlay and VXLAN endpoint, one switch per
    /// VNI, and each NIC's chain (`firewall → antispoof → nic`, or straight to the NIC with
    /// `bypass_filtering`). Node names are quoted, so any NIC id is safe.
    ///
    /// With `counters`, each NIC node carries its live packet and drop counts (the running
    /// graph); without, the configured graph.
    public func graphDOT(counters: ((String) -> NICCounters?)? = nil, global: NICCounters? = nil) -> String {
        var lines = ["digraph butterfly {", "  rankdir=LR;"]
        if let global {
            var label = "underlay\\nin \(global.inPackets) pkts / out \(global.outPackets) pkts"
            for drop in global.drops { label += "\\ndrop \(drop.reason): \(drop.packets)" }
            label += "\\nconnections \(global.connections)"
            lines.append("  \"underlay\" [label=\"\(label)\"];")
        }
        let vtep = host.vtepAddress.map { "vxlan \($0)" } ?? "local only"
        lines.append("  \"underlay\" -> \"\(Self.escape(vtep))\";")
        var vnis = Set<UInt32>()
        for nic in nics.values.sorted(by: { $0.id < $1.id }) {
            vnis.insert(nic.vni)
        }
        for vni in vnis.sorted() {
            lines.append("  \"\(Self.escape(vtep))\" -> \"switch vni \(vni)\";")
        }
        for nic in nics.values.sorted(by: { $0.id < $1.id }) {
            let id = Self.escape(nic.id)
            let kind =
                switch nic.kind {
                case .vhostUserServer: "vhost-user server"
                case .vhostUserClient: "vhost-user client"
                case .tap: "tap"
                case .bench: "bench"
                }
            let nicNode = "\"nic \(id) (\(kind))\""
            if let counters, let live = counters(nic.id) {
                let dropped = live.drops.reduce(0) { $0 + $1.packets }
                lines.append(
                    "  \(nicNode) [label=\"nic \(id) (\(kind))\\nin \(live.inPackets) pkts / out \(live.outPackets) pkts / dropped \(dropped)\"];"
                )
            }
            if nic.bypassFiltering {
                lines.append("  \"switch vni \(nic.vni)\" -> \(nicNode);")
            } else {
                if let counters, let live = counters(nic.id) {
                    lines.append("  \"firewall \(id)\" [label=\"firewall \(id)\\nconnections \(live.connections)\"];")
                }
                lines.append("  \"switch vni \(nic.vni)\" -> \"firewall \(id)\";")
                lines.append("  \"firewall \(id)\" -> \"antispoof \(id)\";")
                lines.append("  \"antispoof \(id)\" -> \(nicNode);")
            }
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
