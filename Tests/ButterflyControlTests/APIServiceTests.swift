import ButterflyDataplane
import ButterflyProtocol
import Foundation
import Testing

@testable import ButterflyControl

private final class PublishedSnapshots {
    var versions: [UInt64] = []
}

/// A data plane double: records what is published and serves canned counters.
private final class RecordingDataplane: DataplaneBinding {
    let published: PublishedSnapshots?
    let nicCounters: (String) -> NICCounters?

    init(published: PublishedSnapshots?, nicCounters: @escaping (String) -> NICCounters?) {
        self.published = published
        self.nicCounters = nicCounters
    }

    func prepare(_ nic: NIC, path: String) throws(APIError) {}
    func publish(_ config: DataplaneConfig, change: ModelChange, changedNICs: [String]) {
        published?.versions.append(config.version)
    }
    func counters(of id: String) -> NICCounters? { nicCounters(id) }
}

private func makeService(
    cipher: PayloadCipher? = nil,
    published: PublishedSnapshots? = nil,
    traceByDefault: Bool = false,
    nicCounters: @escaping (String) -> NICCounters? = { _ in nil }
) -> APIService {
    let control = ControlPlane(
        reconciler: Reconciler(
            host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp/s", nicMTU: nil, offloads: true),
            traceByDefault: traceByDefault,
            traceDirectory: "/tmp",
            processID: 1
        ),
        runtime: RecordingDataplane(published: published, nicCounters: nicCounters)
    )
    return APIService(controlPlane: control, cipher: cipher)
}

private func message(id: String? = nil, _ fill: (inout MessageV0.Request) -> Void) -> Proto_Message {
    var message = Proto_Message()
    message.revision = ButterflyRevision.current
    if let id { message.message0.messageID = id }
    fill(&message.message0.request)
    return message
}

private func nicAdd(_ id: String, ips: [String] = [], type: MessageV0.Nic.TypeEnum = .vhostUserServer) -> Proto_Message
{
    message {
        $0.nicAdd.id = id
        $0.nicAdd.mac = "52:54:00:00:00:01"
        $0.nicAdd.vni = 10
        $0.nicAdd.ip = ips
        $0.nicAdd.type = type
    }
}

private func bytes(_ messages: [Proto_Message]) throws -> [UInt8] {
    try Proto_Messages.with { $0.messages = messages }.serializedBytes()
}

/// Sends a clear batch and decodes the reply as `Messages`.
private func send(_ service: APIService, _ messages: [Proto_Message]) throws -> Proto_Messages {
    try Proto_Messages(serializedBytes: service.handle(try bytes(messages)).reply)
}

/// Sends one request and returns its V0 response.
private func response(_ service: APIService, _ message: Proto_Message) throws -> MessageV0.Response {
    let reply = try send(service, [message])
    try #require(reply.messages.count == 1)
    return reply.messages[0].message0.response
}

private func seal(_ cipher: PayloadCipher, _ inner: [UInt8]) throws -> [UInt8] {
    var outer = Proto_Messages()
    outer.encrypted.aes256CbcSha512 = Data(try cipher.seal(inner))
    return try outer.serializedBytes()
}

private let testKey = [UInt8](repeating: 0x5A, count: 32)

@Suite struct APIEnvelopeTests {
    @Test func garbageIsAParseError() throws {
        let service = makeService()
        for garbage: [UInt8] in [[0xFF, 0xFF, 0xFF, 0xFF], [0x0A, 0x05, 0x01], Array("hello world".utf8)] {
            let outcome = service.handle(garbage)
            #expect(!outcome.quit)
            let reply = try Proto_Message(serializedBytes: outcome.reply)
            #expect(reply.revision == ButterflyRevision.current)
            #expect(reply.hasError)
            #expect(reply.error.code == .parseError)
            #expect(!reply.hasMessage0)
        }
    }

    @Test func missingRequiredRevisionIsAParseError() throws {
        let service = makeService()
        var messages = Proto_Messages()
        messages.messages = [Proto_Message()]  // revision is required
        let request: [UInt8] = try messages.serializedBytes(partial: true)
        let reply = try Proto_Message(serializedBytes: service.handle(request).reply)
        #expect(reply.error.code == .parseError)
    }

    @Test func messageWithoutMessage0IsVersionNotManaged() throws {
        let service = makeService()
        var bare = Proto_Message()
        bare.revision = 99
        let reply = try send(service, [bare])
        #expect(reply.messages.count == 1)
        #expect(reply.messages[0].error.code == .versionNotManaged)
        #expect(reply.messages[0].revision == ButterflyRevision.current)
        #expect(!reply.messages[0].hasMessage0)
    }

    @Test func emptyMessagesIsRejected() throws {
        let service = makeService()
        for request in [try bytes([]), []] {
            let reply = try Proto_Messages(serializedBytes: service.handle(request).reply)
            #expect(reply.messages.count == 1)
            #expect(reply.messages.first?.error.code == .rejected)
            #expect(!reply.hasEncrypted)
        }
    }

    @Test func batchOrderAndMessageIDs() throws {
        let service = makeService()
        var add = nicAdd("n1")
        add.message0.messageID = "first"
        let reply = try send(
            service,
            [
                add,
                message(id: "second") { $0.nicList = true },
                message(id: "third") { $0.nicDetails = "ghost" },
                message { $0.sgList = true },
            ]
        )
        #expect(reply.messages.count == 4)
        #expect(reply.messages.map(\.message0.messageID) == ["first", "second", "third", ""])
        #expect(!reply.messages[3].message0.hasMessageID)
        #expect(reply.messages.map(\.message0.response.status.status) == [true, true, false, true])
        // The second request sees the effect of the first.
        #expect(reply.messages[1].message0.response.nicList == ["n1"])
        #expect(reply.messages[2].message0.response.status.error.description_p == "NIC: ghost not found")
        #expect(reply.messages.allSatisfy { $0.revision == ButterflyRevision.current })
        #expect(reply.messages.allSatisfy { !$0.hasError })
    }

    @Test func versionNotManagedInsideABatchKeepsItsPlace() throws {
        let service = makeService()
        var bare = Proto_Message()
        bare.revision = 1
        let reply = try send(service, [message { $0.nicList = true }, bare, message { $0.sgList = true }])
        #expect(reply.messages.count == 3)
        #expect(!reply.messages[0].hasError && reply.messages[0].message0.response.status.status)
        #expect(reply.messages[1].error.code == .versionNotManaged)
        #expect(!reply.messages[2].hasError && reply.messages[2].message0.response.status.status)
    }

    @Test func requestCounterCountsEveryHandleCall() throws {
        let service = makeService()
        _ = service.handle([0xFF, 0xFF])  // malformed
        _ = service.handle([])  // empty, rejected
        // One call carrying two messages counts once.
        _ = service.handle(try bytes([message { $0.nicList = true }, message { $0.sgList = true }]))
        #expect(service.controlPlane.requestCounter == 3)
        let status = try response(service, message { $0.appStatus = true })
        #expect(status.status.status)
        #expect(status.appStatus.requestCounter == 4)
        #expect(status.appStatus.startDate == service.controlPlane.startDate)
        #expect(status.appStatus.currentDate >= status.appStatus.startDate)
        #expect(status.appStatus.graphDot.hasPrefix("digraph butterfly {"))
    }

    @Test func appQuitSetsQuit() throws {
        let service = makeService()
        #expect(!service.handle(try bytes([message { $0.nicList = true }])).quit)
        let outcome = service.handle(try bytes([message { $0.appQuit = true }]))
        #expect(outcome.quit)
        let reply = try Proto_Messages(serializedBytes: outcome.reply)
        #expect(reply.messages.first?.message0.response.status.status == true)
    }
}

@Suite struct APIRequestTests {
    @Test func emptyV0Request() throws {
        let service = makeService()
        var bare = Proto_Message()
        bare.revision = ButterflyRevision.current
        bare.message0 = MessageV0()
        let reply = try response(service, bare)
        #expect(!reply.status.status)
        #expect(reply.status.error.description_p == "MessageV0 appears to not have any request")

        let noField = try response(service, message { _ in })
        #expect(noField.status.error.description_p == "MessageV0 appears to not have any request")
    }

    @Test func appConfigBadLogLevel() throws {
        let service = makeService()
        let reply = try response(service, message { $0.appConfig.logLevel = "loud" })
        #expect(!reply.status.status)
        #expect(reply.status.error.description_p == "Application configuration failed: log level: failed ")
        #expect(reply.status.error.hasDetail)
    }

    @Test func appConfigWithoutLevelSucceeds() throws {
        let service = makeService()
        var message = message { _ in }
        message.message0.request.appConfig = MessageV0.AppConfigReq()
        #expect(try response(service, message).status.status)
    }

    @Test func nicAddReportsPathAndPublishes() throws {
        let published = PublishedSnapshots()
        let service = makeService(published: published)
        let reply = try response(service, nicAdd("vm1", ips: ["10.0.0.1", "10.0.0.1"]))
        #expect(reply.status.status)
        #expect(reply.nicAdd.path == "/tmp/s/qemu-vhost-vm1")
        #expect(service.controlPlane.model.nics["vm1"]?.ips == [IPAddress("10.0.0.1")!])
        #expect(published.versions == [1])
        #expect(try response(service, nicAdd("tap1", type: .tap)).nicAdd.path == "tap1")
        #expect(published.versions == [1, 2])
    }

    @Test func noOpDoesNotPublish() throws {
        let published = PublishedSnapshots()
        let service = makeService(published: published)
        #expect(try response(service, message { $0.nicDel = "ghost" }).status.status)
        #expect(try response(service, message { $0.sgDel = "ghost" }).status.status)
        #expect(published.versions.isEmpty)
        #expect(service.controlPlane.reconciler.snapshot.version == 0)
    }

    @Test func nicAddErrors() throws {
        let service = makeService()
        let badIP = try response(service, nicAdd("n", ips: ["10.0.0.999"]))
        #expect(!badIP.status.status)
        #expect(badIP.status.error.description_p == "Bad NIC format")
        #expect(badIP.status.error.detail.contains("10.0.0.999"))
        let badVNI = try response(
            service,
            message {
                $0.nicAdd.id = "n"
                $0.nicAdd.mac = "52:54:00:00:00:01"
                $0.nicAdd.vni = 1 << 24
            }
        )
        #expect(badVNI.status.error.description_p == "Bad NIC format")
        #expect(service.controlPlane.model.nics.isEmpty)
    }

    @Test func nicListFollowsAddsAndDeletes() throws {
        let service = makeService()
        #expect(try response(service, message { $0.nicList = true }).nicList == [])
        _ = try send(service, [nicAdd("b"), nicAdd("a")])
        #expect(try response(service, message { $0.nicList = true }).nicList == ["a", "b"])
        _ = try send(service, [message { $0.nicDel = "a" }])
        #expect(try response(service, message { $0.nicList = true }).nicList == ["b"])
        _ = try send(service, [nicAdd("c"), message { $0.nicList = true }])
        #expect(try response(service, message { $0.nicList = true }).nicList == ["b", "c"])
    }

    @Test func appStatusGraphFollowsChanges() throws {
        let service = makeService()
        let before = try response(service, message { $0.appStatus = true }).appStatus.graphDot
        #expect(!before.contains("vm-graph"))
        _ = try send(service, [nicAdd("vm-graph")])
        let after = try response(service, message { $0.appStatus = true }).appStatus.graphDot
        #expect(after.contains("nic vm-graph"))
        _ = try send(service, [message { $0.nicDel = "vm-graph" }])
        #expect(!(try response(service, message { $0.appStatus = true }).appStatus.graphDot.contains("vm-graph")))
    }

    @Test func nicDetails() throws {
        let service = makeService()
        _ = try send(service, [nicAdd("b", ips: ["2001:0db8::1"]), nicAdd("a")])
        let one = try response(service, message { $0.nicDetails = "b" })
        #expect(one.nicDetails.count == 1)
        #expect(one.nicDetails.first?.ip == ["2001:db8::1"])
        #expect(one.nicDetails.first?.path == "/tmp/s/qemu-vhost-b")
        let all = try response(service, message { $0.nicDetails = "" })
        #expect(all.nicDetails.map(\.id) == ["a", "b"])
        let unknown = try response(service, message { $0.nicDetails = "x" })
        #expect(!unknown.status.status)
        #expect(unknown.status.error.description_p == "NIC: x not found")
        #expect(unknown.nicDetails.isEmpty)
    }

    /// As the original: the effective packet trace settings, the daemon's defaults marked.
    @Test(arguments: [false, true])
    func nicDetailsReportEffectivePacketTrace(traceByDefault: Bool) throws {
        let service = makeService(traceByDefault: traceByDefault)
        _ = try send(service, [nicAdd("n")])
        let defaults = try #require(try response(service, message { $0.nicDetails = "n" }).nicDetails.first)
        #expect(defaults.hasPacketTrace && defaults.packetTrace == traceByDefault)
        #expect(defaults.packetTracePath == "/tmp/butterfly-1-n.pcap")
        #expect(defaults.packetTraceIsDefault && defaults.packetTracePathIsDefault)

        // Sent back as nic_add, the NIC still follows the daemon's defaults.
        _ = try send(service, [message { $0.nicAdd = defaults }])
        #expect(service.controlPlane.model.nics["n"]?.packetTrace == nil)
        #expect(service.controlPlane.model.nics["n"]?.packetTracePath == nil)

        _ = try send(
            service,
            [
                message {
                    $0.nicUpdate.id = "n"
                    $0.nicUpdate.packetTrace = !traceByDefault
                    $0.nicUpdate.packetTracePath = "/tmp/n.pcap"
                }
            ]
        )
        let given = try #require(try response(service, message { $0.nicDetails = "" }).nicDetails.first)
        #expect(given.packetTrace == !traceByDefault && given.packetTracePath == "/tmp/n.pcap")
        #expect(!given.hasPacketTraceIsDefault && !given.hasPacketTracePathIsDefault)
    }

    @Test func nicUpdate() throws {
        let service = makeService()
        _ = try send(service, [nicAdd("n", ips: ["10.0.0.1"])])
        let cleared = try response(
            service,
            message {
                $0.nicUpdate.id = "n"
                $0.nicUpdate.ip = [""]
            }
        )
        #expect(cleared.status.status)
        #expect(service.controlPlane.model.nics["n"]?.ips == [])
        let unknown = try response(service, message { $0.nicUpdate.id = "ghost" })
        #expect(unknown.status.error.description_p == "NIC: ghost not found")
        let bad = try response(
            service,
            message {
                $0.nicUpdate.id = "n"
                $0.nicUpdate.ip = ["bad"]
            }
        )
        #expect(bad.status.error.description_p == "Bad Nic update format")
        let badVNI = try response(
            service,
            message {
                $0.nicUpdate.id = "n"
                $0.nicUpdate.vni = 1 << 24
            }
        )
        #expect(badVNI.status.error.description_p == "Bad Nic update format")
    }

    @Test func nicStatsAndExport() throws {
        let service = makeService(nicCounters: { id in
            id == "n"
                ? NICCounters(
                    inBytes: 100,
                    inPackets: 2,
                    outBytes: 300,
                    outPackets: 4,
                    drops: [("firewall", 5), ("antispoof", 6)]
                )
                : nil
        })
        _ = try send(service, [nicAdd("n"), nicAdd("quiet")])
        let stats = try response(service, message { $0.nicStats = "n" })
        #expect(stats.nicStats.in == 100)
        #expect(stats.nicStats.out == 300)
        #expect(stats.nicStats.inPackets == 2)
        #expect(stats.nicStats.outPackets == 4)
        #expect(stats.nicStats.dropped == 11)
        #expect(stats.nicStats.drops.map(\.reason) == ["firewall", "antispoof"])
        let quiet = try response(service, message { $0.nicStats = "quiet" })
        #expect(quiet.status.status && quiet.nicStats.in == 0 && quiet.nicStats.dropped == 0)
        #expect(try response(service, message { $0.nicStats = "x" }).status.error.description_p == "NIC: x not found")
        #expect(try response(service, message { $0.nicExport = "n" }).nicExport.hasFwData)
        #expect(try response(service, message { $0.nicExport = "x" }).status.error.description_p == "NIC: x not found")
    }

    @Test func securityGroupRequests() throws {
        let service = makeService()
        #expect(
            try response(service, message { $0.sgRuleList = "unknown" }).status.error.description_p
                == "Security Group not found"
        )
        #expect(
            try response(service, message { $0.sgMemberList = "unknown" }).status.error.description_p
                == "Security Group not found"
        )
        #expect(
            try response(service, message { $0.sgDetails = "unknown" }).status.error.description_p
                == "Security Group not found"
        )

        var rule = MessageV0.Rule()
        rule.direction = .inbound
        rule.protocol = 6
        rule.portStart = 22
        rule.portEnd = 22
        rule.cidr.address = "0.0.0.0"
        rule.cidr.maskSize = 0
        let added = try response(
            service,
            message {
                $0.sgRuleAdd.sgID = "sg"
                $0.sgRuleAdd.rule = rule
            }
        )
        #expect(added.status.status)
        let rules = try response(service, message { $0.sgRuleList = "sg" })
        #expect(rules.sgRuleList == [rule])

        var noPorts = rule
        noPorts.clearPortStart()
        noPorts.clearPortEnd()
        let badRule = try response(
            service,
            message {
                $0.sgRuleAdd.sgID = "sg"
                $0.sgRuleAdd.rule = noPorts
            }
        )
        #expect(badRule.status.error.description_p == "Bad Security Group rule format")

        #expect(
            try response(
                service,
                message {
                    $0.sgMemberAdd.sgID = "sg"
                    $0.sgMemberAdd.member = "2001:0DB8::5"
                }
            ).status.status
        )
        #expect(try response(service, message { $0.sgMemberList = "sg" }).sgMemberList == ["2001:db8::5"])
        let badMember = try response(
            service,
            message {
                $0.sgMemberAdd.sgID = "sg"
                $0.sgMemberAdd.member = "10.0.0.0/8"
            }
        )
        #expect(badMember.status.error.description_p == "Bad IP format")

        #expect(try response(service, message { $0.sgList = true }).sgList == ["sg"])
        let details = try response(service, message { $0.sgDetails = "" })
        #expect(details.sgDetails.map(\.id) == ["sg"])
        #expect(details.sgDetails.first?.member == ["2001:db8::5"])

        #expect(
            try response(
                service,
                message {
                    $0.sgRuleDel.sgID = "sg"
                    $0.sgRuleDel.rule = rule
                }
            ).status.status
        )
        #expect(try response(service, message { $0.sgRuleList = "sg" }).sgRuleList.isEmpty)
        #expect(try response(service, message { $0.sgDel = "sg" }).status.status)
        #expect(try response(service, message { $0.sgList = true }).sgList.isEmpty)
    }

    @Test func sgAddBadRuleIsBadSecurityGroup() throws {
        let service = makeService()
        let reply = try response(
            service,
            message {
                $0.sgAdd.id = "sg"
                var rule = MessageV0.Rule()
                rule.direction = .inbound
                rule.protocol = 300
                rule.securityGroup = "x"
                $0.sgAdd.rule = [rule]
            }
        )
        #expect(reply.status.error.description_p == "Bad Security Group format")
        #expect(service.controlPlane.model.securityGroups.isEmpty)
    }
}

@Suite struct APIEncryptionTests {
    @Test func clearRequestIsRejectedWhenAKeyIsConfigured() throws {
        let service = makeService(cipher: try PayloadCipher(key: testKey))
        let reply = try send(service, [nicAdd("n")])
        #expect(reply.messages.count == 1)
        #expect(reply.messages[0].error.code == .rejected)
        #expect(!reply.hasEncrypted)
        #expect(service.controlPlane.model.nics.isEmpty)
    }

    @Test func sealedRequestIsServedAndTheReplySealed() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: cipher)
        let outcome = service.handle(
            try seal(cipher, try bytes([nicAdd("n"), message(id: "m2") { $0.nicList = true }]))
        )
        let outer = try Proto_Messages(serializedBytes: outcome.reply)
        #expect(outer.messages.isEmpty)
        #expect(outer.hasEncrypted)
        #expect(!outer.encrypted.hasError)
        let inner = try Proto_Messages(serializedBytes: try cipher.open(Array(outer.encrypted.aes256CbcSha512)))
        #expect(inner.messages.count == 2)
        #expect(inner.messages.allSatisfy { $0.message0.response.status.status })
        #expect(inner.messages[1].message0.messageID == "m2")
        #expect(inner.messages[1].message0.response.nicList == ["n"])
        #expect(service.controlPlane.model.nics["n"] != nil)
    }

    @Test func sealedAppQuitStillQuits() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: cipher)
        #expect(service.handle(try seal(cipher, try bytes([message { $0.appQuit = true }]))).quit)
    }

    @Test func sealedGarbageGivesASealedParseError() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: cipher)
        let outer = try Proto_Messages(serializedBytes: service.handle(try seal(cipher, [0xFF, 0xFF, 0xFF])).reply)
        let inner = try Proto_Message(serializedBytes: try cipher.open(Array(outer.encrypted.aes256CbcSha512)))
        #expect(inner.error.code == .parseError)
    }

    @Test func encryptedRequestIsRejectedWithoutAKey() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: nil)
        let reply = try Proto_Messages(
            serializedBytes: service.handle(try seal(cipher, try bytes([nicAdd("n")]))).reply
        )
        #expect(reply.messages.count == 1)
        #expect(reply.messages[0].error.code == .rejected)
        #expect(!reply.hasEncrypted)
        #expect(service.controlPlane.model.nics.isEmpty)
    }

    @Test func nestedEncryptionIsRejectedInsideTheSealedReply() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: cipher)
        let innermost = try bytes([nicAdd("n")])
        let nested = try seal(cipher, innermost)  // a Messages that itself has `encrypted`
        let outcome = service.handle(try seal(cipher, nested))
        let outer = try Proto_Messages(serializedBytes: outcome.reply)
        #expect(outer.hasEncrypted)
        let inner = try Proto_Messages(serializedBytes: try cipher.open(Array(outer.encrypted.aes256CbcSha512)))
        #expect(inner.messages.count == 1)
        #expect(inner.messages.first?.error.code == .rejected)
        #expect(!inner.hasEncrypted)
        #expect(service.controlPlane.model.nics.isEmpty)
    }

    @Test func encryptedWithoutPayloadIsNotSupported() throws {
        let service = makeService(cipher: try PayloadCipher(key: testKey))
        var request = Proto_Messages()
        request.encrypted = Encrypted()
        let reply = try Proto_Messages(serializedBytes: service.handle(try request.serializedBytes()).reply)
        #expect(reply.messages.isEmpty)
        #expect(reply.encrypted.hasError)
        #expect(reply.encrypted.error.code == .notSupported)
        #expect(!reply.encrypted.hasAes256CbcSha512)
    }

    @Test func wrongKeyIsRejected() throws {
        let service = makeService(cipher: try PayloadCipher(key: testKey))
        let other = try PayloadCipher(key: [UInt8](repeating: 0xA5, count: 32))
        let reply = try Proto_Messages(serializedBytes: service.handle(try seal(other, try bytes([nicAdd("n")]))).reply)
        #expect(reply.messages.isEmpty)
        #expect(reply.encrypted.error.code == .rejected)
        #expect(service.controlPlane.model.nics.isEmpty)
    }

    @Test func malformedPayloadIsRejected() throws {
        let service = makeService(cipher: try PayloadCipher(key: testKey))
        var request = Proto_Messages()
        request.encrypted.aes256CbcSha512 = Data([1, 2, 3])
        let reply = try Proto_Messages(serializedBytes: service.handle(try request.serializedBytes()).reply)
        #expect(reply.encrypted.error.code == .rejected)
    }

    @Test func encryptedRequestsAreCountedOnce() throws {
        let cipher = try PayloadCipher(key: testKey)
        let service = makeService(cipher: cipher)
        _ = service.handle(try seal(cipher, try bytes([nicAdd("n")])))
        #expect(service.controlPlane.requestCounter == 1)
    }
}

/// Issue 8: input the model must refuse. Each refusal carries the original's wording and a
/// precise detail, changes neither the model nor the data plane, and the rest of the batch is
/// processed as before.
@Suite struct APIRefusedInputTests {
    private struct Refusal {
        var request: Proto_Message
        var description: String
        var detail: String
    }

    private static func nic(
        _ id: String = "vm",
        mac: String = "52:54:00:00:00:01",
        ips: [String] = [],
        groups: [String] = [],
        type: MessageV0.Nic.TypeEnum = .vhostUserServer
    ) -> MessageV0.Nic {
        var nic = MessageV0.Nic()
        nic.id = id
        nic.mac = mac
        nic.vni = 10
        nic.ip = ips
        nic.securityGroup = groups
        nic.type = type
        return nic
    }

    /// A `Nic` whose `type` is the raw value `raw`, as a newer or broken client would send it.
    private static func nic(rawType: [UInt8]) throws -> MessageV0.Nic {
        var bytes: [UInt8] = try nic("typed").serializedBytes()
        bytes += rawType
        return try MessageV0.Nic(serializedBytes: bytes)
    }

    private static func memberRule(_ group: String) -> MessageV0.Rule {
        var rule = MessageV0.Rule()
        rule.direction = .inbound
        rule.protocol = -1
        rule.securityGroup = group
        return rule
    }

    private static let socketDirectoryPrefix = "/tmp/s/qemu-vhost-"
    /// sun_path holds 108 bytes, the NUL included; `makeService` uses the socket directory /tmp/s.
    private static let longestVhostID = 107 - socketDirectoryPrefix.utf8.count

    private static func refusals() throws -> [Refusal] {
        let badNIC = "Bad NIC format"
        let badUpdate = "Bad Nic update format"
        let badGroup = "Bad Security Group format"
        func add(_ nic: MessageV0.Nic) -> Proto_Message { message { $0.nicAdd = nic } }
        func update(_ fill: @escaping (inout MessageV0.NicUpdateReq) -> Void) -> Proto_Message {
            message {
                $0.nicUpdate.id = "vm"
                fill(&$0.nicUpdate)
            }
        }
        var refusals: [Refusal] = []
        for (mac, what) in [
            ("00:00:00:00:00:00", "is all zeros"),
            ("ff:ff:ff:ff:ff:ff", "is the broadcast address"),
            ("01:00:5e:00:00:01", "is a multicast address"),
            ("33:33:00:00:00:01", "is a multicast address"),
        ] {
            refusals.append(
                Refusal(request: add(nic("m", mac: mac)), description: badNIC, detail: "mac \(mac) \(what)")
            )
            refusals.append(
                Refusal(request: update { $0.mac = mac }, description: badUpdate, detail: "mac \(mac) \(what)")
            )
        }
        for (ip, what) in [
            ("0.0.0.0", "is the unspecified address"),
            ("::", "is the unspecified address"),
            ("255.255.255.255", "is the broadcast address"),
            ("224.0.0.1", "is a multicast address"),
            ("239.255.255.250", "is a multicast address"),
            ("ff02::1", "is a multicast address"),
            ("127.0.0.1", "is a loopback address"),
            ("::1", "is a loopback address"),
        ] {
            refusals.append(
                Refusal(request: add(nic("i", ips: ["10.0.0.1", ip])), description: badNIC, detail: "ip \(ip) \(what)")
            )
            refusals.append(
                Refusal(request: update { $0.ip = [ip] }, description: badUpdate, detail: "ip \(ip) \(what)")
            )
        }
        let tooLong = String(repeating: "x", count: longestVhostID + 1)
        refusals.append(
            Refusal(request: add(nic(tooLong)), description: badNIC, detail: "at most \(longestVhostID) bytes")
        )
        refusals.append(
            Refusal(
                request: add(nic(tooLong, type: .vhostUserClient)),
                description: badNIC,
                detail: "at most \(longestVhostID) bytes"
            )
        )
        for group in ["", "a\u{0}b"] {
            let what = group.isEmpty ? "is empty" : "contains a NUL character"
            refusals.append(
                Refusal(
                    request: add(nic("g", groups: ["web", group])),
                    description: badNIC,
                    detail: "security group id \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: update { $0.securityGroup = ["web", group] },
                    description: badUpdate,
                    detail: "security group id \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: message { $0.sgAdd.id = group },
                    description: badGroup,
                    detail: "security group id \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: message {
                        $0.sgAdd.id = "sg"
                        $0.sgAdd.rule = [memberRule(group)]
                    },
                    description: badGroup,
                    detail: "security_group \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: message {
                        $0.sgRuleAdd.sgID = "sg"
                        $0.sgRuleAdd.rule = memberRule(group)
                    },
                    description: "Bad Security Group rule format",
                    detail: "security_group \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: message {
                        $0.sgRuleAdd.sgID = group
                        $0.sgRuleAdd.rule = memberRule("web")
                    },
                    description: badGroup,
                    detail: "sg_id \(group.debugDescription) \(what)"
                )
            )
            refusals.append(
                Refusal(
                    request: message {
                        $0.sgMemberAdd.sgID = group
                        $0.sgMemberAdd.member = "10.0.0.7"
                    },
                    description: badGroup,
                    detail: "sg_id \(group.debugDescription) \(what)"
                )
            )
        }
        // Field 9 (type) as varint 99, as varint -1 (ten bytes), after a valid TAP, and as bytes.
        for (raw, detail) in [
            ([0x48, 99], "type 99 is not a NIC type"),
            ([0x48] + [UInt8](repeating: 0xFF, count: 9) + [0x01], "type -1 is not a NIC type"),
            ([0x48, 0x01, 0x48, 0x07], "type 7 is not a NIC type"),
            ([0x4A, 0x01, 0x00], "type is not encoded as an enum"),
        ] as [([UInt8], String)] {
            refusals.append(Refusal(request: add(try nic(rawType: raw)), description: badNIC, detail: detail))
        }
        return refusals
    }

    @Test func eachRefusalLeavesModelAndDataplaneUnchangedAndTheBatchGoesOn() throws {
        let published = PublishedSnapshots()
        let service = makeService(published: published)
        let refusals = try Self.refusals()
        let first = Self.nic(ips: ["10.0.0.1"], groups: ["web"])
        let reply = try send(
            service,
            [message { $0.nicAdd = first }] + refusals.map(\.request) + [
                message {
                    $0.sgMemberAdd.sgID = "web"
                    $0.sgMemberAdd.member = "10.0.0.9"
                }
            ]
        )
        try #require(reply.messages.count == refusals.count + 2)
        #expect(reply.messages[0].message0.response.status.status)
        for (refusal, answer) in zip(refusals, reply.messages.dropFirst()) {
            let status = answer.message0.response.status
            let request = refusal.request.message0.request
            #expect(!status.status, "accepted: \(request)")
            #expect(status.error.description_p == refusal.description, "\(request)")
            #expect(status.error.detail.contains(refusal.detail), "\(status.error.detail) for \(request)")
        }
        #expect(reply.messages.last?.message0.response.status.status == true)
        let model = service.controlPlane.model
        #expect(model.nics == ["vm": try NIC(proto: first)])
        #expect(Array(model.securityGroups.keys) == ["web"])
        // Published twice: the first nic_add and the last sg_member_add, nothing in between.
        #expect(published.versions == [1, 2])
    }

    @Test func edgesThatStayValid() throws {
        let service = makeService()
        let accepted: [MessageV0.Nic] = [
            // Locally administered unicast, and unicast with every other bit set.
            Self.nic("la", mac: "02:00:00:00:00:01"),
            Self.nic("high", mac: "fe:ff:ff:ff:ff:ff"),
            Self.nic("low", mac: "00:00:00:00:00:01"),
            Self.nic(
                "ips",
                ips: [
                    "10.0.0.0", "0.0.0.1", "126.255.255.255", "128.0.0.1", "223.255.255.255", "240.0.0.1",
                    "255.255.255.254", "192.168.1.255", "fe80::1", "fec0::1", "feff::1", "2001:db8::1", "::2",
                    "::ffff:10.0.0.1",
                ]
            ),
            Self.nic(String(repeating: "v", count: Self.longestVhostID)),
            Self.nic(String(repeating: "c", count: Self.longestVhostID), type: .vhostUserClient),
            // Only vhost-user NICs name a socket: a long BENCH id is fine.
            Self.nic(String(repeating: "b", count: Self.longestVhostID + 20), type: .bench),
            Self.nic("groups", groups: ["web", " ", "é"]),
        ]
        for nic in accepted {
            let reply = try response(service, message { $0.nicAdd = nic })
            #expect(reply.status.status, "\(nic.id): \(reply.status.error)")
        }
        let longest = String(repeating: "v", count: Self.longestVhostID)
        let path = try response(service, message { $0.nicAdd = Self.nic(longest) }).nicAdd.path
        #expect(path == Self.socketDirectoryPrefix + longest)
        #expect(path.utf8.count == 107)
        // A single "" still clears the NIC's groups (BUTTERFLY-COMPAT §2, NicUpdateReq).
        let cleared = try response(
            service,
            message {
                $0.nicUpdate.id = "groups"
                $0.nicUpdate.securityGroup = [""]
            }
        )
        #expect(cleared.status.status)
        #expect(service.controlPlane.model.nics["groups"]?.securityGroups == [])
        // Deleting from a group that cannot exist is still a no-op success, as for any missing group.
        #expect(
            try response(
                service,
                message {
                    $0.sgMemberDel.sgID = ""
                    $0.sgMemberDel.member = "10.0.0.1"
                }
            ).status.status
        )
        // Unknown fields other than type are ignored, as before.
        var withExtra: [UInt8] = try Self.nic("extra").serializedBytes()
        withExtra += [0xA0, 0x06, 0x01]  // field 100, varint 1
        let extra = try MessageV0.Nic(serializedBytes: withExtra)
        #expect(try response(service, message { $0.nicAdd = extra }).status.status)
    }
}
