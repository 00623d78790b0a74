import ButterflyControl
import ButterflyProtocol
import Foundation
import SwiftProtobuf
import Testing

/// Golden exchanges with a real daemon over a real ZeroMQ socket: every request type, valid
/// and invalid, in one scripted session. Each step sends a text-format `Messages` and expects
/// the exact text-format reply (dates, which change, are checked separately).
@Suite(.serialized)
struct APIGoldenTests {
    let daemon: Daemon
    let socket: ZMQSocket

    init() throws {
        // Traces in the test's own directory: requests may only name files there.
        let directory = TemporaryDirectory()
        daemon = try Daemon(extraArguments: ["--trace-path", directory.path], directory: directory)
        socket = try ZMQSocket(context: ZMQContext(), kind: .request)
        try socket.setOption(ZMQRawOption.receiveTimeout, 5_000)
        try socket.connect(daemon.endpoint)
    }

    func exchange(_ bytes: [UInt8]) throws -> [UInt8] {
        try socket.send(bytes)
        let frames = try #require(try socket.receive(), "no reply within 5 s")
        #expect(frames.count == 1)
        return frames[0]
    }

    /// One request step: each `(request, reply)` is a V0 request body and the V0 response
    /// body expected back, both in text format.
    func step(_ request: String, _ reply: String, id: String? = nil, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        let idLine = id.map { "message_id: \"\($0)\" " } ?? ""
        let messages = try Proto_Messages(
            textFormatString: "messages { revision: 0 message_0 { \(idLine)request { \(request) } } }"
        )
        let answer = try Proto_Messages(serializedBytes: try exchange(try messages.serializedBytes()))
        let expected = try Proto_Messages(
            textFormatString: "messages { revision: 9 message_0 { response { \(reply) } \(idLine)} }"
        )
        #expect(
            answer.textFormatString() == expected.textFormatString(),
            "request: \(request)",
            sourceLocation: sourceLocation
        )
    }

    static let ok = "status { status: true }"

    static func refused(_ description: String, _ detail: String? = nil) -> String {
        let detailField = detail.map { " detail: \"\($0)\"" } ?? ""
        return "status { status: false error { description: \"\(description)\"\(detailField) } }"
    }

    @Test func everyRequestType() throws {
        let dir = daemon.directory.path
        // No -t: NICs given no trace settings report tracing off, to the daemon's per-NIC file.
        let defaultTrace = "\(dir)/butterfly-\(daemon.child.pid)-vm1.pcap"
        // A real tap interface is created: unique per test process.
        let tap = "gt\(getpid())"
        // NICs
        try step(
            #"nic_add { id: "vm1" mac: "52:54:00:AA:00:01" vni: 42 ip: "198.51.100.1" ip: "2001:0db8::0001" ip: "198.51.100.1" security_group: "web" }"#,
            "\(Self.ok) nic_add { path: \"\(dir)/qemu-vhost-vm1\" }",
            id: "add-1"
        )
        try step(
            "nic_add { id: \"\(tap)\" mac: \"52:54:00:00:00:02\" vni: 7 type: TAP ip_anti_spoof: true }",
            "\(Self.ok) nic_add { path: \"\(tap)\" }"
        )
        try step(
            #"nic_add { id: "bad" mac: "52:54:00:00:00" vni: 1 }"#,
            Self.refused("Bad NIC format", "mac '52:54:00:00:00' is not of the form xx:xx:xx:xx:xx:xx")
        )
        try step(
            #"nic_add { id: "bad" mac: "52:54:00:00:00:03" vni: 16777216 }"#,
            Self.refused("Bad NIC format", "vni 16777216 does not fit in 24 bits")
        )
        try step(
            #"nic_add { id: "bad" mac: "52:54:00:00:00:03" vni: 1 ip: "198.51.100.300" }"#,
            Self.refused("Bad NIC format", "'198.51.100.300' is not an IPv4 or IPv6 address")
        )
        try step(
            #"nic_add { id: "../escape" mac: "52:54:00:00:00:03" vni: 1 }"#,
            Self.refused("Bad NIC format", "id may not contain '/' or control characters")
        )
        // Issue 8: addresses and references a NIC may not have, ids too long for their socket.
        try step(
            #"nic_add { id: "bad" mac: "01:00:5E:00:00:01" vni: 1 }"#,
            Self.refused(
                "Bad NIC format",
                "mac 01:00:5e:00:00:01 is a multicast address (group bit set); a NIC's mac must be a unicast address"
            )
        )
        try step(
            #"nic_add { id: "bad" mac: "00:00:00:00:00:00" vni: 1 }"#,
            Self.refused("Bad NIC format", "mac 00:00:00:00:00:00 is all zeros; a NIC's mac must be a unicast address")
        )
        for (ip, why) in [
            ("0.0.0.0", "is the unspecified address"), ("::", "is the unspecified address"),
            ("255.255.255.255", "is the broadcast address"), ("224.0.0.251", "is a multicast address"),
            ("ff02::fb", "is a multicast address"), ("127.0.0.1", "is a loopback address"),
        ] {
            try step(
                "nic_add { id: \"bad\" mac: \"52:54:00:00:00:03\" vni: 1 ip: \"\(ip)\" }",
                Self.refused("Bad NIC format", "ip \(ip) \(why); a NIC's ip must be a unicast address")
            )
        }
        try step(
            #"nic_add { id: "bad" mac: "52:54:00:00:00:03" vni: 1 security_group: "web" security_group: "" }"#,
            Self.refused("Bad NIC format", #"security group id \"\" is empty"#)
        )
        let longestID = 107 - "\(dir)/qemu-vhost-".utf8.count
        try step(
            "nic_add { id: \"\(String(repeating: "x", count: longestID + 1))\" mac: \"52:54:00:00:00:03\" vni: 1 }",
            Self.refused(
                "Bad NIC format",
                "the vhost-user socket path would be 108 bytes, more than the 107 a unix socket address holds: "
                    + "with this socket directory a vhost-user NIC id has at most \(longestID) bytes"
            )
        )
        try step("nic_list: true", "\(Self.ok) nic_list: \"\(tap)\" nic_list: \"vm1\"")
        try step(
            #"nic_details: "vm1""#,
            """
            \(Self.ok) nic_details { id: "vm1" mac: "52:54:00:aa:00:01" vni: 42 ip: "198.51.100.1" ip: "2001:db8::1"
            security_group: "web" ip_anti_spoof: false bypass_filtering: false type: VHOST_USER_SERVER
            path: "\(dir)/qemu-vhost-vm1" packet_trace: false packet_trace_path: "\(defaultTrace)"
            packet_trace_is_default: true packet_trace_path_is_default: true }
            """
        )
        try step(#"nic_details: "nope""#, Self.refused("NIC: nope not found"))
        try step(
            """
            nic_update { id: "vm1" ip: "203.0.113.9" ip_anti_spoof: true security_group: "" vni: 43
            packet_trace_path: "\(dir)/vm1.pcap" }
            """,
            Self.ok
        )
        try step(
            #"nic_details: "vm1""#,
            """
            \(Self.ok) nic_details { id: "vm1" mac: "52:54:00:aa:00:01" vni: 43 ip: "203.0.113.9"
            ip_anti_spoof: true bypass_filtering: false type: VHOST_USER_SERVER path: "\(dir)/qemu-vhost-vm1"
            packet_trace: false packet_trace_path: "\(dir)/vm1.pcap" packet_trace_is_default: true }
            """
        )
        try step(#"nic_update { id: "vm1" ip: "" }"#, Self.ok)
        try step(
            #"nic_update { id: "vm1" ip: "nope" }"#,
            Self.refused("Bad Nic update format", "'nope' is not an IPv4 or IPv6 address")
        )
        try step(#"nic_update { id: "ghost" ip_anti_spoof: true }"#, Self.refused("NIC: ghost not found"))
        try step(
            #"nic_update { id: "vm1" ip: "ff02::1" }"#,
            Self.refused(
                "Bad Nic update format",
                "ip ff02::1 is a multicast address; a NIC's ip must be a unicast address"
            )
        )
        try step(
            #"nic_update { id: "vm1" mac: "ff:ff:ff:ff:ff:ff" }"#,
            Self.refused(
                "Bad Nic update format",
                "mac ff:ff:ff:ff:ff:ff is the broadcast address; a NIC's mac must be a unicast address"
            )
        )
        try step(
            #"nic_stats: "vm1""#,
            "\(Self.ok) nic_stats { in: 0 out: 0 in_packets: 0 out_packets: 0 dropped: 0 connections: 0 }"
        )
        try step(#"nic_stats: "ghost""#, Self.refused("NIC: ghost not found"))
        try step(
            #"nic_export: "vm1""#,
            "\(Self.ok) nic_export { fw_data { data: \"BFCT\\001\\000\\000\\000\\000\\000\\000\\000\" } }"
        )
        try step(#"nic_export: "ghost""#, Self.refused("NIC: ghost not found"))

        // Security groups
        try step(
            #"sg_add { id: "web" member: "198.51.100.7" member: "198.51.100.7" rule { direction: INBOUND protocol: 6 port_start: 80 port_end: 80 cidr { address: "0.0.0.0" mask_size: 0 } } }"#,
            Self.ok
        )
        try step(
            #"sg_add { id: "broken" rule { direction: INBOUND protocol: 6 cidr { address: "0.0.0.0" mask_size: 0 } } }"#,
            Self.refused("Bad Security Group format", "TCP and UDP rules need port_start and port_end")
        )
        try step(#"sg_add { id: "" }"#, Self.refused("Bad Security Group format", #"security group id \"\" is empty"#))
        try step(
            #"sg_add { id: "nul\000" }"#,
            Self.refused("Bad Security Group format", #"security group id \"nul\\0\" contains a NUL character"#)
        )
        try step(
            #"sg_rule_add { sg_id: "" rule { direction: INBOUND protocol: 1 cidr { address: "10.0.0.0" mask_size: 8 } } }"#,
            Self.refused("Bad Security Group format", #"sg_id \"\" is empty"#)
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: INBOUND protocol: 1 security_group: "" } }"#,
            Self.refused("Bad Security Group rule format", #"security_group \"\" is empty"#)
        )
        try step(
            #"sg_member_add { sg_id: "" member: "10.0.0.1" }"#,
            Self.refused("Bad Security Group format", #"sg_id \"\" is empty"#)
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: OUTBOUND protocol: -1 security_group: "admins" } }"#,
            Self.ok
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: OUTBOUND protocol: -1 security_group: "admins" } }"#,
            Self.ok
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: INBOUND protocol: 17 port_start: 9 port_end: 8 cidr { address: "::" mask_size: 0 } } }"#,
            Self.refused("Bad Security Group rule format", "port_start 9 is greater than port_end 8")
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: INBOUND protocol: 1 cidr { address: "10.0.0.0" mask_size: 33 } } }"#,
            Self.refused("Bad Security Group rule format", "mask size 33 is longer than the address (32 bits)")
        )
        try step(
            #"sg_rule_add { sg_id: "web" rule { direction: INBOUND protocol: 1 } }"#,
            Self.refused("Bad Security Group rule format", "a rule needs a cidr or a security_group")
        )
        try step(
            #"sg_rule_list: "web""#,
            """
            \(Self.ok)
            sg_rule_list { direction: INBOUND protocol: 6 port_start: 80 port_end: 80 cidr { address: "0.0.0.0" mask_size: 0 } }
            sg_rule_list { direction: OUTBOUND protocol: -1 security_group: "admins" }
            """
        )
        try step(#"sg_rule_list: "ghost""#, Self.refused("Security Group not found"))
        try step(
            #"sg_rule_del { sg_id: "web" rule { direction: OUTBOUND protocol: -1 security_group: "admins" } }"#,
            Self.ok
        )
        try step(
            #"sg_rule_del { sg_id: "ghost" rule { direction: OUTBOUND protocol: -1 security_group: "admins" } }"#,
            Self.ok
        )
        try step(#"sg_member_add { sg_id: "admins" member: "2001:DB8::0:7" }"#, Self.ok)
        try step(
            #"sg_member_add { sg_id: "admins" member: "nope" }"#,
            Self.refused("Bad IP format", "member 'nope' is not an IP address")
        )
        try step(#"sg_member_list: "admins""#, "\(Self.ok) sg_member_list: \"2001:db8::7\"")
        try step(#"sg_member_list: "ghost""#, Self.refused("Security Group not found"))
        try step(#"sg_member_del { sg_id: "admins" member: "2001:db8::7" }"#, Self.ok)
        try step(#"sg_member_del { sg_id: "ghost" member: "2001:db8::7" }"#, Self.ok)
        try step("sg_list: true", "\(Self.ok) sg_list: \"admins\" sg_list: \"web\"")
        try step(
            #"sg_details: "web""#,
            """
            \(Self.ok) sg_details { id: "web" member: "198.51.100.7"
            rule { direction: INBOUND protocol: 6 port_start: 80 port_end: 80 cidr { address: "0.0.0.0" mask_size: 0 } } }
            """
        )
        try step(#"sg_details: "ghost""#, Self.refused("Security Group not found"))
        try step(#"sg_del: "admins""#, Self.ok)
        try step(#"sg_del: "admins""#, Self.ok)
        try step(
            #"sg_details: """#,
            "\(Self.ok) sg_details { id: \"web\" member: \"198.51.100.7\" rule { direction: INBOUND protocol: 6 port_start: 80 port_end: 80 cidr { address: \"0.0.0.0\" mask_size: 0 } } }"
        )

        // Application
        try step(#"app_config { log_level: "debug" }"#, Self.ok)
        try step(
            #"app_config { log_level: "loud" }"#,
            Self.refused(
                "Application configuration failed: log level: failed ",
                "log_level must be one of none, error, warning, info, debug"
            )
        )
        try step("nic_del: \"\(tap)\"", Self.ok)
        try step("nic_del: \"\(tap)\"", Self.ok)
        try step(#"nic_del: "never-existed""#, Self.ok)
        try step("nic_list: true", "\(Self.ok) nic_list: \"vm1\"")
    }

    /// Issue 8: a NIC type the schema does not know cannot be written in text format, so it is
    /// sent as raw wire bytes (field 9, value 99); it used to become a vhost-user NIC.
    @Test func unknownNICTypeIsRefused() throws {
        let valid: [UInt8] = try MessageV0.Nic.with {
            $0.id = "typed"
            $0.mac = "52:54:00:00:00:09"
            $0.vni = 1
        }.serializedBytes()
        var message = Proto_Message()
        message.revision = 0
        message.message0.request.nicAdd = try MessageV0.Nic(serializedBytes: valid + [0x48, 99])
        let request: [UInt8] = try Proto_Messages.with { $0.messages = [message] }.serializedBytes()
        let answer = try Proto_Messages(serializedBytes: try exchange(request))
        let expected = try Proto_Messages(
            textFormatString: "messages { revision: 9 message_0 { response { "
                + Self.refused(
                    "Bad NIC format",
                    "type 99 is not a NIC type (0 VHOST_USER_SERVER, 1 TAP, 2 BENCH, 3 VHOST_USER_CLIENT)"
                ) + " } } }"
        )
        #expect(answer.textFormatString() == expected.textFormatString())
        try step("nic_list: true", Self.ok)
    }

    @Test func appStatusReportsDatesCounterAndGraph() throws {
        let request = try Proto_Messages(
            textFormatString: "messages { revision: 6 message_0 { request { app_status: true } } }"
        )
        _ = try exchange([0x00, 0xFF])  // counted too
        let reply = try Proto_Messages(serializedBytes: try exchange(try request.serializedBytes()))
        let status = reply.messages[0].message0.response.appStatus
        let now = UInt64(Date().timeIntervalSince1970)
        #expect(status.startDate <= status.currentDate && status.currentDate <= now + 1)
        #expect(now - status.startDate < 60)
        #expect(status.requestCounter == 2)
        #expect(status.graphDot.hasPrefix("digraph butterfly {"))
    }

    @Test func envelopeRules() throws {
        // Undecodable: a bare Message with PARSE_ERROR.
        for garbage: [UInt8] in [[0xFF, 0xFF, 0xFF], [0x0A, 0x02, 0x10, 0x01], []] {
            let reply = try exchange(garbage)
            if garbage.isEmpty {
                // Empty bytes decode as an empty Messages: REJECTED.
                let messages = try Proto_Messages(serializedBytes: reply)
                #expect(messages.messages.map(\.error.code) == [.rejected])
                continue
            }
            let bare = try Proto_Message(serializedBytes: reply)
            #expect(bare.revision == 9 && bare.hasError && bare.error.code == .parseError)
        }
        // A required field missing deep inside (nic_add without mac): PARSE_ERROR too.
        let missingMAC = try Proto_Messages(
            textFormatString: #"messages { revision: 0 message_0 { request { nic_add { id: "x" vni: 1 } } } }"#
        )
        let partial = try missingMAC.serializedBytes(partial: true) as [UInt8]
        #expect(try Proto_Message(serializedBytes: try exchange(partial)).error.code == .parseError)

        // Ordered batch, ids echoed, a message without message_0, an empty MessageV0.
        let batch = try Proto_Messages(
            textFormatString: """
                messages { revision: 0 message_0 { message_id: "1" request { sg_list: true } } }
                messages { revision: 0 }
                messages { revision: 0 message_0 { message_id: "3" } }
                messages { revision: 0 message_0 { message_id: "4" request { nic_list: true } } }
                """
        )
        let reply = try Proto_Messages(serializedBytes: try exchange(try batch.serializedBytes()))
        #expect(reply.messages.count == 4)
        #expect(reply.messages.map(\.message0.messageID) == ["1", "", "3", "4"])
        #expect(reply.messages[1].error.code == .versionNotManaged && reply.messages[1].hasError)
        #expect(
            reply.messages[2].message0.response.status.error.description_p
                == "MessageV0 appears to not have any request"
        )
        #expect(reply.messages[3].message0.response.status.status)
        #expect(reply.messages.allSatisfy { $0.revision == 9 })
    }
}
