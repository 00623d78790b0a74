import ButterflyDataplane
import ButterflyProtocol
import Testing

@testable import ButterflyControl

/// `butterfly dump` turns `nic_details` and `sg_details` replies into requests: what was given
/// comes back, what the daemon filled in does not.
@Suite struct ConfigurationDumpTests {
    private let traced = NIC(
        id: "traced",
        mac: MACAddress("52:54:00:00:00:01")!,
        vni: 1,
        packetTrace: true,
        packetTracePath: "/var/tmp/traced.pcap"
    )
    private let plain = NIC(id: "plain", mac: MACAddress("52:54:00:00:00:02")!, vni: 1, kind: .tap)

    private func details(_ nic: NIC) -> MessageV0.Nic {
        nic.details(path: "some-path", traceByDefault: true, defaultTracePath: "/tmp/butterfly-9-\(nic.id).pcap")
    }

    @Test func defaultsAndOutputOnlyFieldsAreLeftOut() throws {
        let messages = ConfigurationDump.messages(nics: [details(traced), details(plain)], securityGroups: [])
        let added = messages.messages.map(\.message0.request.nicAdd)
        #expect(added.map(\.id) == ["traced", "plain"])
        #expect(added.allSatisfy { !$0.hasPath && !$0.hasPacketTraceIsDefault && !$0.hasPacketTracePathIsDefault })
        #expect(added[0].packetTrace && added[0].packetTracePath == "/var/tmp/traced.pcap")
        #expect(!added[1].hasPacketTrace && !added[1].hasPacketTracePath)
        #expect(try NIC(proto: added[0]) == traced)
        #expect(try NIC(proto: added[1]) == plain)
    }

    @Test func textIsWhatTheStateFileWritesForTheSameModel() throws {
        var model = Model()
        try model.addNIC(traced)
        try model.addNIC(plain)
        let fromModel = ConfigurationDump.text(
            nics: model.nics.values.sorted { $0.id < $1.id }.map { $0.proto(path: "") },
            securityGroups: []
        )
        let fromDetails = ConfigurationDump.text(
            nics: model.nics.values.sorted { $0.id < $1.id }.map(details),
            securityGroups: []
        )
        #expect(fromDetails == fromModel)
        #expect(!fromDetails.contains("butterfly-9-"))
        #expect(!fromDetails.contains("_is_default"))
    }
}
