/// A configuration's graph in Graphviz DOT: the underlay and VXLAN endpoint, one switch per
/// VNI, and each NIC's chain (`firewall → antispoof → nic`, or straight to the NIC with
/// `bypass_filtering`). Node names are quoted, so any NIC id is safe.
///
/// The structure is sorted and escaped once per configuration (the control plane keeps one per
/// snapshot version), so that `app_status` on a host of thousands of NICs only formats the live
/// counts: with `counters`, each NIC node carries its packet and drop counts (the running
/// graph); without, the configured graph.
public struct GraphLayout: Sendable {
    struct Chain: Sendable {
        var id: String
        var escapedID: String
        var kind: String
        var vni: UInt32
        var bypass: Bool
    }
    let vtep: String
    let vnis: [UInt32]
    let chains: [Chain]

    public init(_ config: DataplaneConfig) {
        vtep = GraphLayout.escape(config.host.vtepAddress.map { "vxlan \($0)" } ?? "local only")
        var vnis = Set<UInt32>()
        var chains: [Chain] = []
        chains.reserveCapacity(config.nics.count)
        for nic in config.nics.values {
            vnis.insert(nic.vni)
            let kind =
                switch nic.kind {
                case .vhostUserServer: "vhost-user server"
                case .vhostUserClient: "vhost-user client"
                case .tap: "tap"
                case .bench: "bench"
                }
            chains.append(
                Chain(
                    id: nic.id,
                    escapedID: GraphLayout.escape(nic.id),
                    kind: kind,
                    vni: nic.vni,
                    bypass: nic.bypassFiltering
                )
            )
        }
        chains.sort { $0.id < $1.id }
        self.vnis = vnis.sorted()
        self.chains = chains
    }

    public func render(counters: ((String) -> NICCounters?)? = nil, global: NICCounters? = nil) -> String {
        var out = "digraph butterfly {\n  rankdir=LR;\n"
        out.reserveCapacity(256 + chains.count * 320)
        if let global {
            out += "  \"underlay\" [label=\"underlay\\nin \(global.inPackets) pkts / out \(global.outPackets) pkts"
            for drop in global.drops { out += "\\ndrop \(drop.reason): \(drop.packets)" }
            out += "\\nconnections \(global.connections)"
            if global.evictions > 0 { out += "\\nconnections evicted \(global.evictions)" }
            out += "\"];\n"
        }
        out += "  \"underlay\" -> \"\(vtep)\";\n"
        for vni in vnis { out += "  \"\(vtep)\" -> \"switch vni \(vni)\";\n" }
        for chain in chains {
            let id = chain.escapedID
            let live = counters?(chain.id)
            if let live {
                let dropped = live.drops.reduce(0) { $0 + $1.packets }
                out += "  \"nic \(id) (\(chain.kind))\" [label=\"nic \(id) (\(chain.kind))\\nin \(live.inPackets) pkts"
                out += " / out \(live.outPackets) pkts / dropped \(dropped)\"];\n"
            }
            if chain.bypass {
                out += "  \"switch vni \(chain.vni)\" -> \"nic \(id) (\(chain.kind))\";\n"
            } else {
                if let live {
                    out += "  \"firewall \(id)\" [label=\"firewall \(id)\\nconnections \(live.connections)\"];\n"
                }
                out += "  \"switch vni \(chain.vni)\" -> \"firewall \(id)\";\n"
                out += "  \"firewall \(id)\" -> \"antispoof \(id)\";\n"
                out += "  \"antispoof \(id)\" -> \"nic \(id) (\(chain.kind))\";\n"
            }
        }
        out += "}\n"
        return out
    }

    static func escape(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == 10 }) else {
            return text
        }
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
