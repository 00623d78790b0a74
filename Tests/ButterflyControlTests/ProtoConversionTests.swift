import ButterflyDataplane
import ButterflyProtocol
import Testing

@testable import ButterflyControl

private func ip(_ text: String) -> IPAddress { IPAddress(text)! }

private func nicProto(
    id: String = "nic-1",
    mac: String = "52:54:00:12:34:56",
    vni: UInt32 = 42,
    ips: [String] = []
) -> MessageV0.Nic {
    var nic = MessageV0.Nic()
    nic.id = id
    nic.mac = mac
    nic.vni = vni
    nic.ip = ips
    return nic
}

private func ruleProto(
    direction: MessageV0.Rule.Direction = .inbound,
    protocol number: Int32,
    ports: (UInt32, UInt32)? = nil,
    cidr: (String, UInt32)? = nil,
    securityGroup: String? = nil
) -> MessageV0.Rule {
    var rule = MessageV0.Rule()
    rule.direction = direction
    rule.protocol = number
    if let ports {
        rule.portStart = ports.0
        rule.portEnd = ports.1
    }
    if let cidr {
        rule.cidr.address = cidr.0
        rule.cidr.maskSize = cidr.1
    }
    if let securityGroup { rule.securityGroup = securityGroup }
    return rule
}

/// The APIError a throwing conversion produced, or nil (and a recorded issue) when it did not throw.
private func apiError<T>(_ body: () throws(APIError) -> T, sourceLocation: SourceLocation = #_sourceLocation)
    -> APIError?
{
    do {
        _ = try body()
        Issue.record("expected an APIError", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite struct NICProtoConversionTests {
    @Test func minimalNIC() throws {
        let nic = try NIC(proto: nicProto())
        #expect(nic.id == "nic-1")
        #expect(nic.mac == MACAddress("52:54:00:12:34:56"))
        #expect(nic.vni == 42)
        #expect(nic.ips == [])
        #expect(nic.kind == .vhostUserServer)
        #expect(nic.securityGroups == [])
        #expect(!nic.ipAntiSpoof)
        #expect(!nic.bypassFiltering)
        #expect(nic.packetTrace == nil)
        #expect(nic.packetTracePath == nil)
        #expect(nic.sniffTargetNICID == nil)
        #expect(nic.bench == nil)
    }

    @Test func ipsAreNormalisedAndDeduplicatedInOrder() throws {
        let nic = try NIC(
            proto: nicProto(ips: [
                "10.0.0.2", "2001:0db8:0000:0000:0000:0000:0000:0001", "10.0.0.1", "10.0.0.2", "2001:db8::1",
            ])
        )
        #expect(nic.ips == [ip("10.0.0.2"), ip("2001:db8::1"), ip("10.0.0.1")])
    }

    @Test func securityGroupsAreDeduplicated() throws {
        var proto = nicProto()
        proto.securityGroup = ["b", "a", "b", "c", "a"]
        #expect(try NIC(proto: proto).securityGroups == ["b", "a", "c"])
    }

    @Test func badMAC() {
        let error = apiError { () throws(APIError) in try NIC(proto: nicProto(mac: "52:54:00:12:34")) }
        #expect(error?.description == "Bad NIC format")
        #expect(error?.detail?.contains("52:54:00:12:34") == true)
    }

    @Test func badIP() {
        let error = apiError { () throws(APIError) in try NIC(proto: nicProto(ips: ["10.0.0.1", "10.0.0.256"])) }
        #expect(error?.description == "Bad IP format")
        #expect(error?.detail?.contains("10.0.0.256") == true)
    }

    @Test func badDIPAndDMAC() {
        var proto = nicProto()
        proto.type = .bench
        proto.dip = "not-an-ip"
        #expect(apiError { () throws(APIError) in try NIC(proto: proto) }?.description == "Bad IP format")

        proto = nicProto()
        proto.type = .bench
        proto.dmac = "zz:zz:zz:zz:zz:zz"
        #expect(apiError { () throws(APIError) in try NIC(proto: proto) }?.description == "Bad NIC format")
    }

    @Test func benchParameters() throws {
        var proto = nicProto()
        proto.type = .bench
        proto.btype = "ICMP_RCV_LIKE"
        proto.dip = "2001:0db8::0002"
        proto.dmac = "AA:BB:CC:DD:EE:FF"
        let nic = try NIC(proto: proto)
        #expect(nic.kind == .bench)
        #expect(
            nic.bench
                == NIC.BenchParameters(
                    btype: "ICMP_RCV_LIKE",
                    destinationIP: ip("2001:db8::2"),
                    destinationMAC: MACAddress("aa:bb:cc:dd:ee:ff")
                )
        )

        // A BENCH NIC without parameters still has (empty) bench parameters.
        var plain = nicProto()
        plain.type = .bench
        #expect(try NIC(proto: plain).bench == NIC.BenchParameters(btype: nil, destinationIP: nil, destinationMAC: nil))
    }

    @Test(arguments: [
        (MessageV0.Nic.TypeEnum.vhostUserServer, NICKind.vhostUserServer),
        (.tap, .tap),
        (.bench, .bench),
        (.vhostUserClient, .vhostUserClient),
    ])
    func typeMapping(_ wire: MessageV0.Nic.TypeEnum, _ kind: NICKind) throws {
        var proto = nicProto(id: "tap0")
        proto.type = wire
        let nic = try NIC(proto: proto)
        #expect(nic.kind == kind)
        #expect(nic.proto(path: "").type == wire)
    }

    @Test func emptyOptionalStringsMeanAbsent() throws {
        var proto = nicProto()
        proto.sniffTargetNicID = ""
        proto.packetTracePath = ""
        let nic = try NIC(proto: proto)
        #expect(nic.sniffTargetNICID == nil)
        #expect(nic.packetTracePath == nil)
    }

    @Test func validationRunsOnConversion() {
        #expect(
            apiError { () throws(APIError) in try NIC(proto: nicProto(vni: 1 << 24)) }?.description == "Bad NIC format"
        )
        #expect(
            apiError { () throws(APIError) in try NIC(proto: nicProto(id: "../x")) }?.description == "Bad NIC format"
        )
        var tap = nicProto(id: "a-very-long-tap-name")
        tap.type = .tap
        #expect(apiError { () throws(APIError) in try NIC(proto: tap) }?.description == "Bad NIC format")
    }

    @Test func roundTrip() throws {
        let nic = NIC(
            id: "nic-rt",
            mac: MACAddress("02:00:00:00:00:07")!,
            vni: 0xFF_FFFF,
            ips: [ip("10.1.2.3"), ip("2001:db8::7")],
            securityGroups: ["sg-a", "sg-b"],
            ipAntiSpoof: true,
            sniffTargetNICID: "nic-other",
            bypassFiltering: true,
            kind: .vhostUserClient,
            packetTrace: false,
            packetTracePath: "/var/tmp/rt.pcap"
        )
        let proto = nic.proto(path: "/tmp/qemu-vhost-nic-rt")
        #expect(proto.id == "nic-rt")
        #expect(proto.mac == "02:00:00:00:00:07")
        #expect(proto.vni == 0xFF_FFFF)
        #expect(proto.ip == ["10.1.2.3", "2001:db8::7"])
        #expect(proto.securityGroup == ["sg-a", "sg-b"])
        #expect(proto.ipAntiSpoof)
        #expect(proto.sniffTargetNicID == "nic-other")
        #expect(proto.bypassFiltering)
        #expect(proto.type == .vhostUserClient)
        #expect(proto.path == "/tmp/qemu-vhost-nic-rt")
        #expect(proto.hasPacketTrace && !proto.packetTrace)
        #expect(proto.packetTracePath == "/var/tmp/rt.pcap")
        #expect(!proto.hasBtype && !proto.hasDip && !proto.hasDmac)
        #expect(try NIC(proto: proto) == nic)
    }

    @Test func roundTripOfBenchAndMinimalNICs() throws {
        let bench = NIC(
            id: "b",
            mac: MACAddress("02:00:00:00:00:08")!,
            vni: 1,
            kind: .bench,
            bench: NIC.BenchParameters(
                btype: "ICMP_SND_LIKE",
                destinationIP: ip("192.0.2.1"),
                destinationMAC: MACAddress("02:00:00:00:00:09")
            )
        )
        #expect(try NIC(proto: bench.proto(path: "")) == bench)
        let minimal = NIC(id: "m", mac: MACAddress("02:00:00:00:00:0a")!, vni: 0)
        let proto = minimal.proto(path: "")
        #expect(!proto.hasPath)
        #expect(!proto.hasPacketTrace)
        #expect(!proto.hasPacketTracePath)
        #expect(!proto.hasSniffTargetNicID)
        #expect(try NIC(proto: proto) == minimal)
    }

    @Test func detailsFillInTheDaemonsTraceDefaultsAndMarkThem() throws {
        let minimal = NIC(id: "m", mac: MACAddress("02:00:00:00:00:0a")!, vni: 0)
        for traceByDefault in [false, true] {
            let details = minimal.details(
                path: "",
                traceByDefault: traceByDefault,
                defaultTracePath: "/tmp/butterfly-7-m.pcap"
            )
            #expect(details.hasPacketTrace && details.packetTrace == traceByDefault)
            #expect(details.packetTracePath == "/tmp/butterfly-7-m.pcap")
            #expect(details.packetTraceIsDefault && details.packetTracePathIsDefault)
            // Sent back as nic_add, the marked values count as not given.
            #expect(try NIC(proto: details) == minimal)
        }
    }

    @Test func detailsReportGivenTraceSettingsUnmarked() throws {
        let given = NIC(
            id: "g",
            mac: MACAddress("02:00:00:00:00:0b")!,
            vni: 0,
            packetTrace: false,
            packetTracePath: "/var/tmp/g.pcap"
        )
        let details = given.details(path: "", traceByDefault: true, defaultTracePath: "/tmp/butterfly-7-g.pcap")
        #expect(details.hasPacketTrace && !details.packetTrace)
        #expect(details.packetTracePath == "/var/tmp/g.pcap")
        #expect(!details.hasPacketTraceIsDefault && !details.hasPacketTracePathIsDefault)
        #expect(try NIC(proto: details) == given)

        // Either setting may be given alone; only the other one is the default.
        var onlyTrace = given
        onlyTrace.packetTracePath = nil
        let traceDetails = onlyTrace.details(path: "", traceByDefault: false, defaultTracePath: "/d.pcap")
        #expect(traceDetails.packetTrace == false && !traceDetails.packetTraceIsDefault)
        #expect(traceDetails.packetTracePath == "/d.pcap" && traceDetails.packetTracePathIsDefault)
        #expect(try NIC(proto: traceDetails) == onlyTrace)
        var onlyPath = given
        onlyPath.packetTrace = nil
        let pathDetails = onlyPath.details(path: "", traceByDefault: true, defaultTracePath: "/d.pcap")
        #expect(pathDetails.packetTrace == true && pathDetails.packetTraceIsDefault)
        #expect(pathDetails.packetTracePath == "/var/tmp/g.pcap" && !pathDetails.packetTracePathIsDefault)
        #expect(try NIC(proto: pathDetails) == onlyPath)
    }

    @Test func theStateFilesFormCarriesOnlyWhatWasGiven() {
        let proto = NIC(id: "m", mac: MACAddress("02:00:00:00:00:0a")!, vni: 0).proto(path: "")
        #expect(!proto.hasPacketTrace && !proto.hasPacketTracePath)
        #expect(!proto.hasPacketTraceIsDefault && !proto.hasPacketTracePathIsDefault)
    }
}

/// Issue 8: a NIC type this daemon does not know is refused, not read as VHOST_USER_SERVER.
@Suite struct NICTypeDecodingTests {
    /// A `Nic` decoded from a valid one followed by `extra` raw wire bytes.
    private func nic(appending extra: [UInt8]) throws -> MessageV0.Nic {
        let valid: [UInt8] = try nicProto().serializedBytes()
        return try MessageV0.Nic(serializedBytes: valid + extra)
    }

    @Test func swiftProtobufKeepsAnUnknownEnumValueAmongUnknownFields() throws {
        let decoded = try nic(appending: [0x48, 99])  // field 9, VARINT, 99
        #expect(!decoded.hasType)
        #expect(decoded.type == .vhostUserServer)  // what made it a vhost-user NIC
        #expect(Array(decoded.unknownFields.data) == [0x48, 99])
    }

    @Test(
        arguments: [
            ([0x48, 99], "type 99 is not a NIC type (0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"),
            ([0x48, 0x04], "type 4 is not a NIC type (0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"),
            (
                [0x48] + [UInt8](repeating: 0xFF, count: 9) + [0x01],
                "type -1 is not a NIC type (0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"
            ),
            // A known value, then an unknown one: the last value wins in protobuf, so this is not TAP.
            (
                [0x48, 0x01, 0x48, 0x63],
                "type 99 is not a NIC type (0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"
            ),
            ([0x4A, 0x01, 0x01], "type is not encoded as an enum (varint)"),
            ([0x4D, 0x01, 0x00, 0x00, 0x00], "type is not encoded as an enum (varint)"),
        ] as [([UInt8], String)]
    )
    func unknownTypeIsRefused(_ extra: [UInt8], _ detail: String) throws {
        let proto = try nic(appending: extra)
        let error = apiError { () throws(APIError) in try NIC(proto: proto) }
        #expect(error == APIError("Bad NIC format", detail: detail))
    }

    @Test func otherUnknownFieldsAreIgnored() throws {
        // Field 100 VARINT, field 101 LEN "x", field 102 as a group holding a field 9.
        let decoded = try nic(appending: [0xA0, 0x06, 0x01, 0xAA, 0x06, 0x01, 0x78, 0xB3, 0x06, 0x48, 99, 0xB4, 0x06])
        #expect(!decoded.unknownFields.data.isEmpty)
        #expect(try NIC(proto: decoded).kind == .vhostUserServer)
    }

    @Test func knownTypesStillDecode() throws {
        var tap = nicProto()
        tap.type = .tap
        let bytes: [UInt8] = try tap.serializedBytes()
        #expect(try NIC(proto: MessageV0.Nic(serializedBytes: bytes)).kind == .tap)
        #expect(try NIC(proto: try nic(appending: [0x48, 0x03])).kind == .vhostUserClient)
    }

    @Test func wireFields() {
        typealias Field = ProtobufWire.Field
        #expect(ProtobufWire.fields([]) == [])
        #expect(
            ProtobufWire.fields([0x08, 0x96, 0x01, 0x12, 0x02, 0x61, 0x62, 0x19] + [UInt8](repeating: 0, count: 8))
                == [Field(number: 1, varint: 150), Field(number: 2, varint: nil), Field(number: 3, varint: nil)]
        )
        #expect(ProtobufWire.fields([0x25, 1, 2, 3, 4]) == [Field(number: 4, varint: nil)])
        // A group is one field; what it holds is not top-level.
        #expect(
            ProtobufWire.fields([0x0B, 0x48, 0x01, 0x0C, 0x48, 0x02])
                == [Field(number: 1, varint: nil), Field(number: 9, varint: 2)]
        )
        // Malformed: truncated varint, length past the end, fixed past the end, stray end of
        // group, unclosed group, wire types 6 and 7, a varint of eleven bytes.
        for bad: [UInt8] in [
            [0x08], [0x08, 0x80], [0x12, 0x05, 0x61], [0x19, 0x00], [0x0C], [0x0B], [0x0E], [0x0F],
            [0x08] + [UInt8](repeating: 0x80, count: 10) + [0x01],
        ] {
            #expect(ProtobufWire.fields(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct NICUpdateProtoConversionTests {
    private func update(_ fill: (inout MessageV0.NicUpdateReq) -> Void) throws(APIError) -> Model.NICUpdate {
        var proto = MessageV0.NicUpdateReq()
        proto.id = "nic-1"
        fill(&proto)
        return try Model.NICUpdate(proto: proto)
    }

    @Test func emptyUpdateChangesNothing() throws {
        #expect(try update { _ in } == Model.NICUpdate())
    }

    @Test func emptyIPListLeavesIPs() throws {
        let result = try update { $0.ip = [] }
        #expect(result.ips == nil)
    }

    @Test func singleEmptyStringClearsIPs() throws {
        let result = try update { $0.ip = [""] }
        #expect(result.ips == [])
    }

    @Test func singleEmptyStringClearsGroups() throws {
        #expect(try update { $0.securityGroup = [""] }.securityGroups == [])
        #expect(try update { _ in }.securityGroups == nil)
        #expect(try update { $0.securityGroup = ["x", "y", "x"] }.securityGroups == ["x", "y"])
    }

    @Test func ipsAreParsedAndDeduplicated() throws {
        let result = try update { $0.ip = ["2001:0db8::1", "10.0.0.1", "2001:db8::1"] }
        #expect(result.ips == [ip("2001:db8::1"), ip("10.0.0.1")])
    }

    @Test func badIPAndBadMAC() {
        #expect(
            apiError { () throws(APIError) in try update { $0.ip = ["10.0.0.1", ""] } }?.description == "Bad IP format"
        )
        #expect(apiError { () throws(APIError) in try update { $0.mac = "nope" } }?.description == "Bad NIC format")
    }

    @Test func scalarFields() throws {
        let result = try update {
            $0.ipAntiSpoof = false
            $0.packetTrace = true
            $0.packetTracePath = "/tmp/x.pcap"
            $0.vni = 9
            $0.mac = "02:00:00:00:00:01"
        }
        #expect(
            result
                == Model.NICUpdate(
                    ipAntiSpoof: false,
                    packetTrace: true,
                    packetTracePath: "/tmp/x.pcap",
                    vni: 9,
                    mac: MACAddress("02:00:00:00:00:01")
                )
        )
    }
}

@Suite struct RuleProtoConversionTests {
    private func error(_ proto: MessageV0.Rule) -> APIError? {
        apiError { () throws(APIError) in try FirewallRule(proto: proto) }
    }

    @Test func allProtocols() throws {
        let rule = try FirewallRule(proto: ruleProto(protocol: -1, cidr: ("0.0.0.0", 0)))
        #expect(rule.ipProtocol == nil)
        #expect(rule.ports == nil)
        #expect(rule.peer == .cidr(ip("0.0.0.0"), prefixLength: 0))
        #expect(rule.direction == .inbound)
    }

    @Test(arguments: [Int32(256), -2, 1000, .min, .max])
    func protocolOutOfRange(_ number: Int32) {
        let error = error(ruleProto(protocol: number, cidr: ("10.0.0.0", 8)))
        #expect(error?.description == "Bad Security Group rule format")
    }

    @Test func protocolBoundaries() throws {
        #expect(try FirewallRule(proto: ruleProto(protocol: 0, cidr: ("10.0.0.0", 8))).ipProtocol == 0)
        #expect(try FirewallRule(proto: ruleProto(protocol: 255, cidr: ("10.0.0.0", 8))).ipProtocol == 255)
    }

    @Test func tcpAndUDPNeedPorts() {
        for number: Int32 in [6, 17] {
            #expect(
                error(ruleProto(protocol: number, cidr: ("10.0.0.0", 8)))?.description
                    == "Bad Security Group rule format"
            )
            var onlyStart = ruleProto(protocol: number, cidr: ("10.0.0.0", 8))
            onlyStart.portStart = 80
            #expect(error(onlyStart)?.description == "Bad Security Group rule format")
            var onlyEnd = ruleProto(protocol: number, cidr: ("10.0.0.0", 8))
            onlyEnd.portEnd = 80
            #expect(error(onlyEnd)?.description == "Bad Security Group rule format")
        }
    }

    @Test func portRange() throws {
        let rule = try FirewallRule(proto: ruleProto(protocol: 6, ports: (1000, 2000), cidr: ("10.0.0.0", 24)))
        #expect(rule.ipProtocol == 6)
        #expect(rule.ports == 1000...2000)
        let full = try FirewallRule(proto: ruleProto(protocol: 17, ports: (0, 65535), cidr: ("10.0.0.0", 24)))
        #expect(full.ports == 0...65535)
        let single = try FirewallRule(proto: ruleProto(protocol: 6, ports: (22, 22), cidr: ("10.0.0.0", 24)))
        #expect(single.ports == 22...22)
    }

    @Test func startAfterEnd() {
        #expect(
            error(ruleProto(protocol: 6, ports: (2000, 1000), cidr: ("10.0.0.0", 24)))?.description
                == "Bad Security Group rule format"
        )
    }

    @Test func portsAbove65535() {
        #expect(
            error(ruleProto(protocol: 6, ports: (1, 65536), cidr: ("10.0.0.0", 24)))?.description
                == "Bad Security Group rule format"
        )
        #expect(
            error(ruleProto(protocol: 17, ports: (65536, 65536), cidr: ("10.0.0.0", 24)))?.description
                == "Bad Security Group rule format"
        )
    }

    @Test func icmpPortsAreIgnored() throws {
        let rule = try FirewallRule(proto: ruleProto(protocol: 1, ports: (5, 9), cidr: ("10.0.0.0", 24)))
        #expect(rule.ports == nil)
        #expect(
            rule
                == FirewallRule(
                    direction: .inbound,
                    ipProtocol: 1,
                    ports: nil,
                    peer: .cidr(ip("10.0.0.0"), prefixLength: 24)
                )
        )
        // Even nonsense ports: meaningless for ICMP, so not an error.
        let nonsense = try FirewallRule(proto: ruleProto(protocol: 58, ports: (70000, 3), cidr: ("::", 0)))
        #expect(nonsense.ports == nil)
        let all = try FirewallRule(proto: ruleProto(protocol: -1, ports: (1, 2), cidr: ("::", 0)))
        #expect(all.ports == nil)
    }

    @Test func sctpPortsAreKeptAndOptional() throws {
        let withPorts = try FirewallRule(proto: ruleProto(protocol: 132, ports: (3868, 3868), cidr: ("10.0.0.0", 24)))
        #expect(withPorts.ports == 3868...3868)
        let without = try FirewallRule(proto: ruleProto(protocol: 132, cidr: ("10.0.0.0", 24)))
        #expect(without.ports == nil)
    }

    @Test func peerCidrOrGroupExactlyOne() {
        #expect(
            error(ruleProto(protocol: 1, cidr: ("10.0.0.0", 8), securityGroup: "sg"))?.description
                == "Bad Security Group rule format"
        )
        #expect(error(ruleProto(protocol: 1))?.description == "Bad Security Group rule format")
        #expect(error(ruleProto(protocol: 1, securityGroup: ""))?.description == "Bad Security Group rule format")
    }

    @Test func securityGroupPeerMustNameAGroup() {
        #expect(
            error(ruleProto(protocol: 1, securityGroup: ""))
                == APIError("Bad Security Group rule format", detail: #"security_group "" is empty"#)
        )
        #expect(
            error(ruleProto(protocol: 1, securityGroup: "sg\u{0}"))
                == APIError(
                    "Bad Security Group rule format",
                    detail: #"security_group "sg\0" contains a NUL character"#
                )
        )
    }

    @Test func securityGroupPeer() throws {
        let rule = try FirewallRule(proto: ruleProto(direction: .outbound, protocol: 42, securityGroup: "sg-2"))
        #expect(rule.peer == .members(ofSecurityGroup: "sg-2"))
        #expect(rule.direction == .outbound)
    }

    @Test func maskLength() throws {
        #expect(error(ruleProto(protocol: 1, cidr: ("10.0.0.0", 33)))?.description == "Bad Security Group rule format")
        #expect(
            try FirewallRule(proto: ruleProto(protocol: 1, cidr: ("10.0.0.0", 32))).peer
                == .cidr(ip("10.0.0.0"), prefixLength: 32)
        )
        #expect(
            try FirewallRule(proto: ruleProto(protocol: 1, cidr: ("2001:db8::", 128))).peer
                == .cidr(ip("2001:db8::"), prefixLength: 128)
        )
        #expect(
            error(ruleProto(protocol: 1, cidr: ("2001:db8::", 129)))?.description == "Bad Security Group rule format"
        )
    }

    @Test func cidrAddressIsNormalisedHostBitsKept() throws {
        let rule = try FirewallRule(proto: ruleProto(protocol: 1, cidr: ("2001:0DB8:0:0::0001", 64)))
        #expect(rule.peer == .cidr(ip("2001:db8::1"), prefixLength: 64))
        #expect(error(ruleProto(protocol: 1, cidr: ("10.0.0.0/8", 8)))?.description == "Bad Security Group rule format")
    }

    @Test(arguments: [
        FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 1000...2000,
            peer: .cidr(IPAddress("10.0.0.0")!, prefixLength: 24)
        ),
        FirewallRule(direction: .outbound, ipProtocol: nil, ports: nil, peer: .cidr(IPAddress("::")!, prefixLength: 0)),
        FirewallRule(direction: .inbound, ipProtocol: 42, ports: nil, peer: .members(ofSecurityGroup: "sg-2")),
        FirewallRule(direction: .outbound, ipProtocol: 132, ports: 5...5, peer: .members(ofSecurityGroup: "x")),
        FirewallRule(
            direction: .inbound,
            ipProtocol: 132,
            ports: nil,
            peer: .cidr(IPAddress("2001:db8::1")!, prefixLength: 128)
        ),
        FirewallRule(
            direction: .inbound,
            ipProtocol: 17,
            ports: 0...65535,
            peer: .cidr(IPAddress("192.0.2.7")!, prefixLength: 32)
        ),
    ])
    func ruleRoundTrip(_ rule: FirewallRule) throws {
        #expect(try FirewallRule(proto: rule.proto) == rule)
    }

    @Test func ruleToProtoFields() {
        let proto = FirewallRule(
            direction: .outbound,
            ipProtocol: 6,
            ports: 80...81,
            peer: .cidr(ip("2001:0db8::0"), prefixLength: 32)
        ).proto
        #expect(proto.direction == .outbound)
        #expect(proto.protocol == 6)
        #expect(proto.portStart == 80)
        #expect(proto.portEnd == 81)
        #expect(proto.cidr.address == "2001:db8::")
        #expect(proto.cidr.maskSize == 32)
        #expect(!proto.hasSecurityGroup)

        let all = FirewallRule(direction: .inbound, ipProtocol: nil, ports: nil, peer: .members(ofSecurityGroup: "g"))
            .proto
        #expect(all.protocol == -1)
        #expect(!all.hasPortStart && !all.hasPortEnd)
        #expect(!all.hasCidr)
        #expect(all.securityGroup == "g")
    }
}

@Suite struct SecurityGroupProtoConversionTests {
    @Test func groupConversion() throws {
        var proto = MessageV0.Sg()
        proto.id = "sg"
        proto.member = ["10.0.0.1", "2001:0db8::1", "10.0.0.1"]
        proto.rule = [
            ruleProto(protocol: 6, ports: (22, 22), cidr: ("0.0.0.0", 0)),
            ruleProto(protocol: 6, ports: (22, 22), cidr: ("0.0.0.0", 0)),
        ]
        let group = try SecurityGroup(proto: proto)
        #expect(Array(group.members) == [ip("10.0.0.1"), ip("2001:db8::1")])
        #expect(group.rules.count == 1)
        #expect(group.proto.member == ["10.0.0.1", "2001:db8::1"])
        #expect(try SecurityGroup(proto: group.proto) == group)
    }

    @Test func badMember() {
        var proto = MessageV0.Sg()
        proto.id = "sg"
        proto.member = ["10.0.0.300"]
        #expect(apiError { () throws(APIError) in try SecurityGroup(proto: proto) }?.description == "Bad IP format")
    }

    @Test func groupIDMustNameSomething() throws {
        for (id, detail) in [
            ("", #"security group id "" is empty"#),
            ("\u{0}", #"security group id "\0" contains a NUL character"#),
            ("web\u{0}x", #"security group id "web\0x" contains a NUL character"#),
        ] {
            var proto = MessageV0.Sg()
            proto.id = id
            #expect(
                apiError { () throws(APIError) in try SecurityGroup(proto: proto) }
                    == APIError("Bad Security Group format", detail: detail)
            )
            #expect(
                apiError { () throws(APIError) in try SecurityGroup.id(sgID: id) }
                    == APIError(
                        "Bad Security Group format",
                        detail: "sg_id " + detail.dropFirst("security group id ".count)
                    )
            )
        }
        var proto = MessageV0.Sg()
        proto.id = " "
        #expect(try SecurityGroup(proto: proto).id == " ")
        #expect(try SecurityGroup.id(sgID: "é/x") == "é/x")
    }
}
