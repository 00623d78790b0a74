import ButterflyControl
import ButterflyDataplane
import ButterflyPacket
import ButterflyProtocol

extension Commands {
    func nicList(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(0, arguments, "nic list", "")
        for id in try call({ $0.nicList = true }).nicList { Output.out(id) }
    }

    func nicStats(_ arguments: [String]) throws(CLIError) {
        let all = arguments.contains("--all")
        let nics = arguments.filter { $0 != "--all" }
        try Self.exactly(1, nics, "nic stats", "NIC")
        let response = try call { $0.nicStats = nics[0] }
        guard response.hasNicStats else { throw CLIError("no nic stats received") }
        let stats = response.nicStats
        Output.out("in: \(stats.in)")
        Output.out("out: \(stats.out)")
        guard all else { return }
        Output.out("in packets: \(stats.inPackets)")
        Output.out("out packets: \(stats.outPackets)")
        Output.out("dropped: \(stats.dropped)")
        for drop in stats.drops { Output.out("drop \(drop.reason): \(drop.packets)") }
        if stats.hasConnections { Output.out("connections: \(stats.connections)") }
        if stats.hasBench {
            let bench = stats.bench
            func microseconds(_ nanoseconds: UInt64) -> String {
                String(format: "%.1f", Double(nanoseconds) / 1000)
            }
            Output.out("bench probes sent: \(bench.probesSent)")
            Output.out("bench replies received: \(bench.repliesReceived)")
            Output.out(
                "bench rtt min/avg/max: \(microseconds(bench.rttMinNs))/\(microseconds(bench.rttAvgNs))/"
                    + "\(microseconds(bench.rttMaxNs)) us"
            )
            Output.out("bench requests answered: \(bench.requestsAnswered)")
        }
    }

    func nicExport(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "nic export", "NIC")
        let data = try call({ $0.nicExport = arguments[0] }).nicExport.fwData.data
        guard let records = ConnectionExport.decode([UInt8](data)) else {
            throw CLIError("nic export: the daemon sent \(data.count) bytes that are not a connection export")
        }
        for record in records {
            let name = FirewallRule.protocolName(record.ipProtocol)
            let state = ConnectionState(rawValue: record.state)?.name ?? "state-\(record.state)"
            let opener = record.origin == 0 ? "guest" : "peer"
            Output.out(
                "\(name) \(Self.endpoint(record.local, record.localPort)) <-> "
                    + "\(Self.endpoint(record.remote, record.remotePort)) \(state) opened-by \(opener) "
                    + "expires-in \(record.secondsLeft)s"
            )
        }
    }

    /// `address:port` (`[v6]:port`), IPv4-mapped addresses shown as IPv4.
    static func endpoint(_ address: UInt128, _ port: UInt16) -> String {
        if FrameHeaders.isIPv4Mapped(address) { return "\(IPAddress.v4(UInt32(truncatingIfNeeded: address))):\(port)" }
        let v6 = IPAddress.v6(high: UInt64(truncatingIfNeeded: address >> 64), low: UInt64(truncatingIfNeeded: address))
        return "[\(v6)]:\(port)"
    }

    func nicFirewall(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "nic firewall", "NIC")
        for line in try call({ $0.nicFirewall = arguments[0] }).nicFirewall { Output.out(line) }
    }

    func details(of id: String, path: String) throws(CLIError) -> MessageV0.Nic {
        guard !id.isEmpty else { throw CLIError("\(path): missing NIC", help: path) }
        let response = try call { $0.nicDetails = id }
        guard let nic = response.nicDetails.first else { throw CLIError("no nic details received") }
        return nic
    }

    func nicDetails(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "nic details", "NIC")
        let nic = try details(of: arguments[0], path: "nic details")
        Output.out("id: \(nic.id)")
        Output.out("mac: \(nic.mac)")
        Output.out("vni: \(nic.vni)")
        for ip in nic.ip { Output.out("ip: \(ip)") }
        if nic.hasIpAntiSpoof { Output.out("antispoof: \(nic.ipAntiSpoof)") }
        if nic.hasSniffTargetNicID { Output.out("sniff target: \(nic.sniffTargetNicID)") }
        if nic.hasBypassFiltering { Output.out("bypass filtering: \(nic.bypassFiltering)") }
        if nic.hasPacketTrace { Output.out("packet trace: \(nic.packetTrace)") }
        if nic.hasPacketTracePath { Output.out("packet trace path: \(nic.packetTracePath)") }
        Output.out("type: \(Self.typeName(nic.type))")
        if nic.hasPath { Output.out("path: \(nic.path)") }
        for group in nic.securityGroup { Output.out("sg: \(group)") }
    }

    static let typeNames: [(String, MessageV0.Nic.TypeEnum)] = [
        ("VHOST_USER_SERVER", .vhostUserServer), ("VHOST_USER_CLIENT", .vhostUserClient), ("TAP", .tap),
        ("BENCH", .bench),
    ]

    static func typeName(_ type: MessageV0.Nic.TypeEnum) -> String {
        typeNames.first { $0.1 == type }?.0 ?? "\(type.rawValue)"
    }

    func nicAdd(_ arguments: [String]) throws(CLIError) {
        let path = "nic add"
        var nic = MessageV0.Nic()
        var hasID = false
        var hasMAC = false
        var hasVNI = false
        nic.ipAntiSpoof = false
        nic.bypassFiltering = false
        nic.type = .vhostUserServer
        for (name, value) in try Self.options(
            arguments,
            path: path,
            values: [
                "--id", "--mac", "--vni", "--ip", "--sg", "--type", "--packet-trace", "--trace-path", "--btype",
                "--dip", "--dmac", "--sniff-target",
            ],
            flags: ["--enable-antispoof", "--bypass-filtering"]
        ) {
            switch name {
            case "--id":
                nic.id = value
                hasID = true
            case "--mac":
                nic.mac = value
                hasMAC = true
            case "--vni":
                guard let vni = UInt32(value) else {
                    throw CLIError("\(path): --vni takes a number, not '\(value)'", help: path)
                }
                nic.vni = vni
                hasVNI = true
            case "--ip": nic.ip.append(value)
            case "--sg": nic.securityGroup.append(value)
            case "--type":
                guard let type = Self.typeNames.first(where: { $0.0 == value })?.1 else {
                    throw CLIError("\(path): unknown nic type '\(value)'", help: path)
                }
                nic.type = type
            case "--packet-trace": nic.packetTrace = try Self.boolean(value, option: name, path: path)
            case "--trace-path": nic.packetTracePath = value
            case "--btype": nic.btype = value
            case "--dip": nic.dip = value
            case "--dmac": nic.dmac = value
            case "--sniff-target": nic.sniffTargetNicID = value
            case "--enable-antispoof": nic.ipAntiSpoof = true
            case "--bypass-filtering": nic.bypassFiltering = true
            default: break
            }
        }
        for (present, option) in [(hasID, "--id"), (hasMAC, "--mac"), (hasVNI, "--vni")] where !present {
            throw CLIError("\(path): \(option) is mandatory", help: path)
        }
        if nic.hasPacketTracePath && !(nic.hasPacketTrace && nic.packetTrace) {
            throw CLIError("\(path): --trace-path needs --packet-trace true", help: path)
        }
        let response = try call { $0.nicAdd = nic }
        guard response.hasNicAdd else { throw CLIError("no nic add result received") }
        Output.out(response.nicAdd.path)
    }

    func nicUpdate(_ arguments: [String]) throws(CLIError) {
        let path = "nic update"
        var update = MessageV0.NicUpdateReq()
        var hasID = false
        var ips: [String] = []
        var groups: [String] = []
        for (name, value) in try Self.options(
            arguments,
            path: path,
            values: ["--id", "--ip", "--sg", "--enable-antispoof", "--packet-trace", "--trace-path", "--vni", "--mac"]
        ) {
            switch name {
            case "--id":
                update.id = value
                hasID = true
            case "--ip": ips.append(value)
            case "--sg": groups.append(value)
            case "--enable-antispoof": update.ipAntiSpoof = try Self.boolean(value, option: name, path: path)
            case "--packet-trace": update.packetTrace = try Self.boolean(value, option: name, path: path)
            case "--trace-path": update.packetTracePath = value
            case "--vni":
                guard let vni = UInt32(value) else {
                    throw CLIError("\(path): --vni takes a number, not '\(value)'", help: path)
                }
                update.vni = vni
            case "--mac": update.mac = value
            default: break
            }
        }
        guard hasID else { throw CLIError("\(path): --id is mandatory", help: path) }
        if update.hasPacketTracePath && !(update.hasPacketTrace && update.packetTrace) {
            throw CLIError("\(path): --trace-path needs --packet-trace true", help: path)
        }
        // The API spells "clear" as a single empty entry.
        if !ips.isEmpty {
            let given = ips.filter { !$0.isEmpty }
            update.ip = given.isEmpty ? [""] : given
        }
        if !groups.isEmpty {
            let given = groups.filter { !$0.isEmpty }
            update.securityGroup = given.isEmpty ? [""] : given
        }
        _ = try call { $0.nicUpdate = update }
    }

    func nicDelete(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(1, arguments, "nic del", "NIC")
        try call(arguments.map { id in MessageV0.Request.with { $0.nicDel = id } })
    }

    func nicSecurityGroupList(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "nic sg list", "NIC")
        for group in try details(of: arguments[0], path: "nic sg list").securityGroup { Output.out(group) }
    }

    func nicSecurityGroupAdd(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(2, arguments, "nic sg add", "NIC and SG")
        let current = try details(of: arguments[0], path: "nic sg add").securityGroup
        var merged = current
        for group in arguments.dropFirst() where !merged.contains(group) { merged.append(group) }
        guard merged != current else { return }
        try setSecurityGroups(of: arguments[0], merged)
    }

    func nicSecurityGroupDelete(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(2, arguments, "nic sg del", "NIC and SG")
        let current = try details(of: arguments[0], path: "nic sg del").securityGroup
        let removed = Set(arguments.dropFirst())
        let remaining = current.filter { !removed.contains($0) }
        guard remaining != current else { return }
        try setSecurityGroups(of: arguments[0], remaining)
    }

    func nicSecurityGroupSet(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(1, arguments, "nic sg set", "NIC")
        try setSecurityGroups(of: arguments[0], Array(arguments.dropFirst()))
    }

    private func setSecurityGroups(of id: String, _ groups: [String]) throws(CLIError) {
        var update = MessageV0.NicUpdateReq()
        update.id = id
        update.securityGroup = groups.isEmpty ? [""] : groups
        _ = try call { $0.nicUpdate = update }
    }
}
