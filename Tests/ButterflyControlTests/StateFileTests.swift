import ButterflyDataplane
import ButterflyProtocol
import Foundation
import Testing

@testable import ButterflyControl

private func temporaryPath() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("butterfly-state-\(UUID().uuidString)").path
}

private func remove(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
    try? FileManager.default.removeItem(atPath: path + ".tmp")
}

private func makeService(stateFile: StateFile? = nil) -> APIService {
    let control = ControlPlane(
        reconciler: Reconciler(
            host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp/s", nicMTU: nil, offloads: true),
            traceByDefault: false,
            traceDirectory: "/tmp",
            processID: 1
        ),
        stateFile: stateFile
    )
    return APIService(controlPlane: control, cipher: nil)
}

/// A model with one of everything the state file must keep.
private func richModel() throws -> Model {
    var model = Model()
    try model.addNIC(
        NIC(
            id: "vm \"one\" é",
            mac: MACAddress("52:54:00:00:00:01")!,
            vni: 0xFF_FFFF,
            ips: [IPAddress("10.0.0.1")!, IPAddress("2001:db8::1")!],
            securityGroups: ["web", "ssh"],
            ipAntiSpoof: true,
            sniffTargetNICID: "tap0",
            bypassFiltering: false,
            kind: .vhostUserServer,
            packetTrace: true,
            packetTracePath: "/var/tmp/one.pcap"
        )
    )
    try model.addNIC(NIC(id: "tap0", mac: MACAddress("02:00:00:00:00:02")!, vni: 0, kind: .tap, packetTrace: false))
    try model.addNIC(
        NIC(id: "client", mac: MACAddress("02:00:00:00:00:03")!, vni: 3, bypassFiltering: true, kind: .vhostUserClient)
    )
    try model.addNIC(
        NIC(
            id: "probe",
            mac: MACAddress("02:00:00:00:00:04")!,
            vni: 3,
            kind: .bench,
            bench: NIC.BenchParameters(
                btype: "ping",
                destinationIP: IPAddress("10.0.0.1"),
                destinationMAC: MACAddress("52:54:00:00:00:01")
            )
        )
    )
    model.addRule(
        FirewallRule(
            direction: .inbound,
            ipProtocol: 6,
            ports: 80...80,
            peer: .cidr(IPAddress("0.0.0.0")!, prefixLength: 0)
        ),
        toSecurityGroup: "web"
    )
    model.addRule(
        FirewallRule(direction: .outbound, ipProtocol: nil, ports: nil, peer: .members(ofSecurityGroup: "ssh")),
        toSecurityGroup: "web"
    )
    model.addRule(
        FirewallRule(
            direction: .inbound,
            ipProtocol: 132,
            ports: nil,
            peer: .cidr(IPAddress("2001:db8::")!, prefixLength: 32)
        ),
        toSecurityGroup: "web"
    )
    model.addMember(IPAddress("10.0.0.1")!, toSecurityGroup: "web")
    model.addMember(IPAddress("2001:db8::1")!, toSecurityGroup: "web")
    model.addMember(IPAddress("192.0.2.1")!, toSecurityGroup: "ssh")
    model.setSecurityGroup(SecurityGroup(id: "empty"))
    return model
}

@Suite struct StateFileTests {
    @Test func missingFileLoadsAsNil() throws {
        let path = temporaryPath()
        #expect(try StateFile(path: path).load() == nil)
    }

    @Test func saveThenLoadRestoresTheModel() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let model = try richModel()
        let file = StateFile(path: path)
        try file.save(model)

        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("# butterfly-state v1 messages=7\n"))

        let loaded = try #require(try file.load())
        #expect(loaded.messages.count == 7)  // 4 nic_add (sorted by id), then 3 sg_add (sorted by id)
        #expect(loaded.messages.prefix(4).allSatisfy { $0.message0.request.hasNicAdd })
        #expect(loaded.messages.suffix(3).allSatisfy { $0.message0.request.hasSgAdd })
        #expect(
            loaded.messages.prefix(4).map(\.message0.request.nicAdd.id) == ["client", "probe", "tap0", "vm \"one\" é"]
        )
        #expect(loaded.messages.suffix(3).map(\.message0.request.sgAdd.id) == ["empty", "ssh", "web"])
        #expect(loaded.messages.allSatisfy { !$0.message0.request.nicAdd.hasPath })

        let fresh = makeService()
        for message in loaded.messages {
            var quit = false
            let reply = fresh.handleV0(message.message0, quit: &quit)
            #expect(reply.response.status.status, "\(reply.response.status.error.description_p)")
            #expect(!quit)
        }
        #expect(fresh.controlPlane.model == model)
    }

    @Test func emptyModelRoundTrips() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try StateFile(path: path).save(Model())
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "# butterfly-state v1 messages=0\n")
        let loaded = try #require(try StateFile(path: path).load())
        #expect(loaded.messages.isEmpty)
    }

    @Test func saveReplacesAndLeavesNoTemporaryFile() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let file = StateFile(path: path)
        try file.save(try richModel())
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        var smaller = Model()
        try smaller.addNIC(NIC(id: "only", mac: MACAddress("02:00:00:00:00:09")!, vni: 1))
        try file.save(smaller)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        #expect(try file.load()?.messages.count == 1)
    }

    @Test func garbageFileIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try "this is not a state file\n".write(toFile: path, atomically: false, encoding: .utf8)
        let error = #expect(throws: StateFile.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("corrupt") == true)
        #expect(error?.description.contains(path) == true)
    }

    @Test func badTextFormatIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try "# butterfly-state v1 messages=1\nmessages { this is { not text format\n".write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let error = #expect(throws: StateFile.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("corrupt") == true)
    }

    @Test func headerWithoutCountIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        for text in [
            "# butterfly-state v1 messages=\n", "# butterfly-state v1 messages=1", "",
            "# butterfly-state v2 messages=0\n",
        ] {
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            let error = #expect(throws: StateFile.Failure.self, "\(text.debugDescription)") {
                try StateFile(path: path).load()
            }
            #expect(error?.description.contains("corrupt") == true)
        }
    }

    @Test func headerCountMismatch() throws {
        let path = temporaryPath()
        defer { remove(path) }
        var model = Model()
        try model.addNIC(NIC(id: "n", mac: MACAddress("02:00:00:00:00:01")!, vni: 1))
        try StateFile(path: path).save(model)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("# butterfly-state v1 messages=1\n"))
        try text.replacingOccurrences(of: "messages=1\n", with: "messages=2\n").write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let error = #expect(throws: StateFile.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("header announces 2 messages, file holds 1") == true)
    }

    @Test func saveIntoAMissingDirectoryFails() {
        let path = temporaryPath() + "/no/such/dir/state"
        let error = #expect(throws: StateFile.Failure.self) { try StateFile(path: path).save(Model()) }
        #expect(error?.description.contains("cannot create") == true)
    }

    @Test func apiServiceSavesAfterEachChangingRequest() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let service = makeService(stateFile: StateFile(path: path))

        var list = Proto_Message()
        list.revision = ButterflyRevision.current
        list.message0.request.nicList = true
        _ = service.handle(try Proto_Messages.with { $0.messages = [list] }.serializedBytes())
        #expect(!FileManager.default.fileExists(atPath: path), "a read-only request saves nothing")

        var add = Proto_Message()
        add.revision = ButterflyRevision.current
        add.message0.request.nicAdd.id = "n"
        add.message0.request.nicAdd.mac = "02:00:00:00:00:01"
        add.message0.request.nicAdd.vni = 5
        _ = service.handle(try Proto_Messages.with { $0.messages = [add] }.serializedBytes())
        let loaded = try #require(try StateFile(path: path).load())
        #expect(loaded.messages.map(\.message0.request.nicAdd.id) == ["n"])
    }
}
