import ButterflyDataplane
import ButterflyProtocol

// Conversions between wire messages (`MessageV0.*`) and the model. Every decoding step
// validates and throws `APIError` with the original wording; encoding is total.

extension NIC {
    /// `Nic.type`'s field number (message_0.proto).
    static let typeFieldNumber: UInt64 = 9

    init(proto: MessageV0.Nic) throws(APIError) {
        // proto2 enums are closed: swift-protobuf keeps a value it does not know among the
        // unknown fields and leaves `type` unset, which reads as VHOST_USER_SERVER. Refuse it
        // instead of creating a NIC of another kind than the one asked for.
        for field in ProtobufWire.fields(Array(proto.unknownFields.data)) ?? []
        where field.number == Self.typeFieldNumber {
            guard let value = field.varint else { throw .badNIC("type is not encoded as an enum (varint)") }
            throw .badNIC(
                "type \(Int32(truncatingIfNeeded: value)) is not a NIC type "
                    + "(0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"
            )
        }
        guard let mac = MACAddress(proto.mac) else {
            throw .badNIC("mac '\(proto.mac)' is not of the form xx:xx:xx:xx:xx:xx")
        }
        let kind: NICKind =
            switch proto.type {
            case .vhostUserServer: .vhostUserServer
            case .tap: .tap
            case .bench: .bench
            case .vhostUserClient: .vhostUserClient
            }
        var bench: BenchParameters?
        if proto.type == .bench || proto.hasBtype || proto.hasDip || proto.hasDmac {
            var parameters = BenchParameters(
                btype: proto.hasBtype ? proto.btype : nil,
                destinationIP: nil,
                destinationMAC: nil
            )
            if proto.hasDip {
                guard let ip = IPAddress(proto.dip) else { throw .badIP("dip '\(proto.dip)' is not an IP address") }
                parameters.destinationIP = ip
            }
            if proto.hasDmac {
                guard let dmac = MACAddress(proto.dmac) else {
                    throw .badNIC("dmac '\(proto.dmac)' is not a MAC address")
                }
                parameters.destinationMAC = dmac
            }
            bench = parameters
        }
        self.init(
            id: proto.id,
            mac: mac,
            vni: proto.vni,
            ips: try Self.parseIPs(proto.ip),
            securityGroups: Self.uniqued(proto.securityGroup),
            ipAntiSpoof: proto.ipAntiSpoof,
            sniffTargetNICID: proto.hasSniffTargetNicID && !proto.sniffTargetNicID.isEmpty
                ? proto.sniffTargetNicID : nil,
            bypassFiltering: proto.bypassFiltering,
            kind: kind,
            // A value marked as the daemon's default (a nic_details reply sent back) was not given.
            packetTrace: proto.hasPacketTrace && !proto.packetTraceIsDefault ? proto.packetTrace : nil,
            packetTracePath: proto.hasPacketTracePath && !proto.packetTracePathIsDefault
                && !proto.packetTracePath.isEmpty ? proto.packetTracePath : nil,
            bench: bench
        )
        try validate()
    }

    /// Parses and normalises a list of addresses, dropping duplicates and keeping the order.
    static func parseIPs(_ texts: [String]) throws(APIError) -> [IPAddress] {
        var seen = Set<IPAddress>()
        var result: [IPAddress] = []
        for text in texts {
            guard let ip = IPAddress(text) else { throw .badIP("'\(text)' is not an IPv4 or IPv6 address") }
            if seen.insert(ip).inserted { result.append(ip) }
        }
        return result
    }

    static func uniqued(_ ids: [String]) -> [String] {
        var seen = Set<String>()
        return ids.filter { seen.insert($0).inserted }
    }

    /// The NIC as `nic_details` reports it: `proto(path:)` plus the effective packet trace
    /// settings (as the original did), where the NIC has none of its own the daemon's
    /// defaults, marked `…_is_default` so that `butterfly dump` can leave them out.
    func details(path: String, traceByDefault: Bool, defaultTracePath: String) -> MessageV0.Nic {
        var out = proto(path: path)
        if packetTrace == nil {
            out.packetTrace = traceByDefault
            out.packetTraceIsDefault = true
        }
        if packetTracePath == nil {
            out.packetTracePath = defaultTracePath
            out.packetTracePathIsDefault = true
        }
        return out
    }

    /// The NIC as it was given (what the state file keeps), with `path` when not empty.
    func proto(path: String) -> MessageV0.Nic {
        var out = MessageV0.Nic()
        out.id = id
        out.mac = mac.description
        out.vni = vni
        out.ip = ips.map(\.description)
        out.securityGroup = securityGroups
        out.ipAntiSpoof = ipAntiSpoof
        if let sniffTargetNICID { out.sniffTargetNicID = sniffTargetNICID }
        out.bypassFiltering = bypassFiltering
        out.type =
            switch kind {
            case .vhostUserServer: .vhostUserServer
            case .tap: .tap
            case .bench: .bench
            case .vhostUserClient: .vhostUserClient
            }
        if !path.isEmpty { out.path = path }
        if let packetTrace { out.packetTrace = packetTrace }
        if let packetTracePath { out.packetTracePath = packetTracePath }
        if let bench {
            if let btype = bench.btype { out.btype = btype }
            if let ip = bench.destinationIP { out.dip = ip.description }
            if let mac = bench.destinationMAC { out.dmac = mac.description }
        }
        return out
    }
}

extension Model.NICUpdate {
    init(proto: MessageV0.NicUpdateReq) throws(APIError) {
        self.init()
        if proto.hasIpAntiSpoof { ipAntiSpoof = proto.ipAntiSpoof }
        // A repeated field cannot say "set to empty", so a single "" means "clear".
        if !proto.ip.isEmpty { ips = proto.ip == [""] ? [] : try NIC.parseIPs(proto.ip) }
        if !proto.securityGroup.isEmpty {
            securityGroups = proto.securityGroup == [""] ? [] : NIC.uniqued(proto.securityGroup)
        }
        if proto.hasPacketTrace { packetTrace = proto.packetTrace }
        if proto.hasPacketTracePath { packetTracePath = proto.packetTracePath }
        if proto.hasVni { vni = proto.vni }
        if proto.hasMac {
            guard let mac = MACAddress(proto.mac) else {
                throw .badNIC("mac '\(proto.mac)' is not of the form xx:xx:xx:xx:xx:xx")
            }
            self.mac = mac
        }
    }
}

extension FirewallRule {
    /// TCP, UDP and SCTP: the protocols whose rules may name destination ports.
    static let protocolsWithPorts: Set<UInt8> = [6, 17, 132]

    public init(proto: MessageV0.Rule) throws(APIError) {
        let ipProtocol: UInt8?
        switch proto.protocol {
        case -1: ipProtocol = nil
        case 0...255: ipProtocol = UInt8(proto.protocol)
        default: throw .badRule("protocol \(proto.protocol) is neither -1 (all) nor 0-255")
        }
        var ports: ClosedRange<UInt16>?
        let carriesPorts = ipProtocol.map(Self.protocolsWithPorts.contains) ?? false
        // Ports of a protocol without ports mean nothing: ignored, and not part of identity.
        if carriesPorts && (proto.hasPortStart || proto.hasPortEnd) {
            guard proto.hasPortStart && proto.hasPortEnd else {
                throw .badRule("port_start and port_end go together")
            }
            guard proto.portStart <= 65535 && proto.portEnd <= 65535 else {
                throw .badRule("ports must be between 0 and 65535")
            }
            guard proto.portStart <= proto.portEnd else {
                throw .badRule("port_start \(proto.portStart) is greater than port_end \(proto.portEnd)")
            }
            ports = UInt16(proto.portStart)...UInt16(proto.portEnd)
        } else if ipProtocol == 6 || ipProtocol == 17 {
            throw .badRule("TCP and UDP rules need port_start and port_end")
        }
        let peer: Peer
        switch (proto.hasCidr, proto.hasSecurityGroup) {
        case (true, false):
            guard let address = IPAddress(proto.cidr.address) else {
                throw .badRule("cidr address '\(proto.cidr.address)' is not an IP address")
            }
            guard proto.cidr.maskSize <= address.bitWidth else {
                throw .badRule("mask size \(proto.cidr.maskSize) is longer than the address (\(address.bitWidth) bits)")
            }
            peer = .cidr(address, prefixLength: UInt8(proto.cidr.maskSize))
        case (false, true):
            if let problem = Model.problem(ofSecurityGroupID: proto.securityGroup) {
                throw .badRule("security_group \(proto.securityGroup.debugDescription) \(problem)")
            }
            peer = .members(ofSecurityGroup: proto.securityGroup)
        case (true, true):
            throw .badRule("a rule has either a cidr or a security_group, not both")
        case (false, false):
            throw .badRule("a rule needs a cidr or a security_group")
        }
        self.init(
            direction: proto.direction == .outbound ? .outbound : .inbound,
            ipProtocol: ipProtocol,
            ports: ports,
            peer: peer
        )
    }

    public var proto: MessageV0.Rule {
        var out = MessageV0.Rule()
        out.direction = direction == .outbound ? .outbound : .inbound
        out.protocol = ipProtocol.map(Int32.init) ?? -1
        if let ports {
            out.portStart = UInt32(ports.lowerBound)
            out.portEnd = UInt32(ports.upperBound)
        }
        switch peer {
        case .cidr(let address, let prefixLength):
            out.cidr.address = address.description
            out.cidr.maskSize = UInt32(prefixLength)
        case .members(let group):
            out.securityGroup = group
        }
        return out
    }
}

extension SecurityGroup {
    init(proto: MessageV0.Sg) throws(APIError) {
        self.init(id: try Self.id(proto.id))
        for rule in proto.rule { rules.append(try FirewallRule(proto: rule)) }
        for member in proto.member {
            guard let ip = IPAddress(member) else { throw .badIP("member '\(member)' is not an IP address") }
            members.append(ip)
        }
    }

    /// The id of a group `sg_add` creates.
    static func id(_ id: String) throws(APIError) -> String {
        if let problem = Model.problem(ofSecurityGroupID: id) {
            throw .badSecurityGroup("security group id \(id.debugDescription) \(problem)")
        }
        return id
    }

    /// The `sg_id` of a request that may create the group (`sg_rule_add`, `sg_member_add`).
    /// Deletes keep accepting any id: a group that cannot exist is simply not there.
    static func id(sgID id: String) throws(APIError) -> String {
        if let problem = Model.problem(ofSecurityGroupID: id) {
            throw .badSecurityGroup("sg_id \(id.debugDescription) \(problem)")
        }
        return id
    }

    var proto: MessageV0.Sg {
        var out = MessageV0.Sg()
        out.id = id
        out.member = members.map(\.description)
        out.rule = rules.map(\.proto)
        return out
    }
}

/// A reader of protobuf wire format (protobuf.dev, "Encoding"), just enough to look into the
/// unknown fields swift-protobuf keeps as raw bytes.
enum ProtobufWire {
    /// A top-level field: its number and, when its wire type is VARINT, its value.
    struct Field: Equatable {
        var number: UInt64
        var varint: UInt64?
    }

    /// The top-level fields of `bytes` in order (the content of groups is skipped), or `nil`
    /// when the bytes are not well-formed wire format.
    static func fields(_ bytes: [UInt8]) -> [Field]? {
        var index = 0
        func readVarint() -> UInt64? {
            var value: UInt64 = 0
            // At most ten bytes: 64 bits in 7-bit groups.
            for shift in stride(from: UInt64(0), to: 70, by: 7) {
                guard index < bytes.count else { return nil }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
            }
            return nil
        }
        var fields: [Field] = []
        var groupDepth = 0
        while index < bytes.count {
            guard let tag = readVarint() else { return nil }
            let outermost = groupDepth == 0
            var value: UInt64?
            switch tag & 7 {
            case 0:  // VARINT
                guard let varint = readVarint() else { return nil }
                value = varint
            case 1:  // I64
                index += 8
            case 2:  // LEN
                guard let length = readVarint(), length <= UInt64(bytes.count - index) else { return nil }
                index += Int(length)
            case 3:  // SGROUP: the group itself is a field; what it holds is not top-level
                groupDepth += 1
            case 4:  // EGROUP
                guard groupDepth > 0 else { return nil }
                groupDepth -= 1
                continue
            case 5:  // I32
                index += 4
            default:
                return nil
            }
            guard index <= bytes.count else { return nil }
            if outermost { fields.append(Field(number: tag >> 3, varint: value)) }
        }
        return groupDepth == 0 ? fields : nil
    }
}
