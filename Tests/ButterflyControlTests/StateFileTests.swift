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
    try? FileManager.default.removeItem(atPath: path + ".journal")
    try? FileManager.default.removeItem(atPath: path + ".journal.tmp")
}

func makeService(stateStore: StateStore? = nil) -> APIService {
    let control = ControlPlane(
        reconciler: Reconciler(
            host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp/s", nicMTU: nil, offloads: true),
            traceByDefault: false,
            traceDirectory: "/tmp",
            processID: 1
        ),
        stateStore: stateStore
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
            packetTracePath: "/tmp/one.pcap"  // inside the trace directory
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
        try file.save(model, generation: 1)

        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("# butterfly-state v1 generation=1 messages=7\n"))

        let loaded = try #require(try file.load())
        #expect(loaded.messages.messages.count == 7)  // 4 nic_add (sorted by id), then 3 sg_add (sorted by id)
        #expect(loaded.messages.messages.prefix(4).allSatisfy { $0.message0.request.hasNicAdd })
        #expect(loaded.messages.messages.suffix(3).allSatisfy { $0.message0.request.hasSgAdd })
        #expect(
            loaded.messages.messages.prefix(4).map(\.message0.request.nicAdd.id) == [
                "client", "probe", "tap0", "vm \"one\" é",
            ]
        )
        #expect(loaded.messages.messages.suffix(3).map(\.message0.request.sgAdd.id) == ["empty", "ssh", "web"])
        #expect(loaded.messages.messages.allSatisfy { !$0.message0.request.nicAdd.hasPath })

        let fresh = makeService()
        for message in loaded.messages.messages {
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
        try StateFile(path: path).save(Model(), generation: 1)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "# butterfly-state v1 generation=1 messages=0\n")
        let loaded = try #require(try StateFile(path: path).load())
        #expect(loaded.messages.messages.isEmpty)
    }

    @Test func saveReplacesAndLeavesNoTemporaryFile() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let file = StateFile(path: path)
        try file.save(try richModel(), generation: 1)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        var smaller = Model()
        try smaller.addNIC(NIC(id: "only", mac: MACAddress("02:00:00:00:00:09")!, vni: 1))
        try file.save(smaller, generation: 2)
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
        #expect(try file.load()?.messages.messages.count == 1)
    }

    @Test func garbageFileIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try "this is not a state file\n".write(toFile: path, atomically: false, encoding: .utf8)
        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("corrupt") == true)
        #expect(error?.description.contains(path) == true)
    }

    @Test func badTextFormatIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try "# butterfly-state v1 generation=1 messages=1\nmessages { this is { not text format\n".write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("corrupt") == true)
    }

    @Test func headerWithoutCountIsCorrupt() throws {
        let path = temporaryPath()
        defer { remove(path) }
        for text in [
            "# butterfly-state v1 generation=1 messages=\n", "# butterfly-state v1 generation=1 messages=1", "",
            "# butterfly-state v2 generation=1 messages=0\n", "# butterfly-state v1 messages=0\n",
        ] {
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            let error = #expect(throws: StateStore.Failure.self, "\(text.debugDescription)") {
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
        try StateFile(path: path).save(model, generation: 1)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("# butterfly-state v1 generation=1 messages=1\n"))
        try text.replacingOccurrences(of: "messages=1\n", with: "messages=2\n").write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
        #expect(error?.description.contains("header announces 2 messages, file holds 1") == true)
    }

    @Test func saveIntoAMissingDirectoryFails() {
        let path = temporaryPath() + "/no/such/dir/state"
        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).save(Model(), generation: 1) }
        #expect(error?.description.contains("cannot create") == true)
    }

}

private func request(_ fill: (inout MessageV0.Request) -> Void) -> Proto_Message {
    var message = Proto_Message()
    message.revision = ButterflyRevision.current
    fill(&message.message0.request)
    return message
}

private func nicAdd(_ id: String) -> Proto_Message {
    request {
        $0.nicAdd.id = id
        $0.nicAdd.mac = "02:00:00:00:00:01"
        $0.nicAdd.vni = 5
    }
}

/// Replays what a store loads into a fresh service, as the daemon does at start.
private func restored(_ store: StateStore) throws -> (model: Model, tornTail: Bool) {
    let loaded = try store.load()
    let service = makeService()
    for message in loaded.messages {
        var quit = false
        let reply = service.handleV0(message.message0, quit: &quit)
        #expect(reply.response.status.status, "\(reply.response.status.error.description_p)")
    }
    return (service.controlPlane.model, loaded.tornTail)
}

@Suite struct StateStoreTests {
    @Test func changesGoToTheJournalAndComeBack() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        let service = makeService(stateStore: store)

        _ = service.handle(try Proto_Messages.with { $0.messages = [request { $0.nicList = true }] }.serializedBytes())
        #expect(!FileManager.default.fileExists(atPath: path), "a read-only request saves nothing")

        _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("a"), nicAdd("b")] }.serializedBytes())
        // The first change writes the first snapshot, later ones only append.
        #expect(FileManager.default.fileExists(atPath: path))
        let snapshotBefore = try String(contentsOfFile: path, encoding: .utf8)
        _ = service.handle(try Proto_Messages.with { $0.messages = [request { $0.nicDel = "a" }] }.serializedBytes())
        _ = service.handle(
            try Proto_Messages.with { $0.messages = [request { $0.nicDel = "never" }] }.serializedBytes()
        )
        #expect(try String(contentsOfFile: path, encoding: .utf8) == snapshotBefore)

        let back = try restored(StateStore(path: path))
        #expect(back.model == service.controlPlane.model)
        #expect(back.model.nics.keys.sorted() == ["b"])
        #expect(!back.tornTail)
    }

    @Test func tornLastRecordIsDroppedAndReported() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("kept")] }.serializedBytes())
        let handle = try #require(FileHandle(forWritingAtPath: path + ".journal"))
        handle.seekToEndOfFile()
        handle.write(Data([40, 0, 0, 0, 1, 2, 3]))  // a record header cut short
        try handle.close()

        let back = try restored(StateStore(path: path))
        #expect(back.tornTail)
        #expect(back.model.nics.keys.sorted() == ["kept"])
    }

    @Test func damagedRecordBeforeTheEndIsCorruption() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("one")] }.serializedBytes())
        _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("two")] }.serializedBytes())
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path + ".journal")))
        let header = bytes.firstIndex(of: UInt8(ascii: "\n"))! + 1
        bytes[header + 20] ^= 0xFF  // inside the first record's payload
        try Data(bytes).write(to: URL(fileURLWithPath: path + ".journal"))
        let error = #expect(throws: StateStore.Failure.self) { try StateStore(path: path).load() }
        #expect(error?.description.contains("corrupt") == true)
    }

    @Test func journalOfAnOlderGenerationIsIgnored() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("x")] }.serializedBytes())
        // A compaction that wrote the new snapshot but died before starting the new journal.
        let journal = try Data(contentsOf: URL(fileURLWithPath: path + ".journal"))
        try store.compact(service.controlPlane.model)
        try journal.write(to: URL(fileURLWithPath: path + ".journal"))
        _ = service.handle(try Proto_Messages.with { $0.messages = [request { $0.nicDel = "x" }] }.serializedBytes())

        let stale = try restored(StateStore(path: path))
        #expect(stale.model.nics.keys.sorted() == ["x"], "the stale journal's nic_add is already in the snapshot")
    }

    @Test func journalNewerThanSnapshotIsCorruption() throws {
        let path = temporaryPath()
        defer { remove(path) }
        try StateFile(path: path).save(Model(), generation: 1)
        try "butterfly-journal v1 generation=5\n".write(toFile: path + ".journal", atomically: false, encoding: .utf8)
        let error = #expect(throws: StateStore.Failure.self) { try StateStore(path: path).load() }
        #expect(error?.description.contains("newer") == true)
    }

    @Test func bigJournalIsFoldedIntoTheSnapshot() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path, minimumCompactionBytes: 512)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        for index in 0..<40 {
            _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd("n\(index)")] }.serializedBytes())
        }
        let journalSize = try FileManager.default.attributesOfItem(atPath: path + ".journal")[.size] as! Int
        let snapshotSize = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        // Compaction keeps the journal within one record of max(threshold, snapshot size).
        #expect(journalSize <= max(512, snapshotSize) + 100, "journal \(journalSize) B, snapshot \(snapshotSize) B")
        let snapshot = try #require(try StateFile(path: path).load())
        #expect(snapshot.generation > 1)
        #expect(snapshot.messages.messages.count > 1)
        #expect(try restored(StateStore(path: path)).model == service.controlPlane.model)
    }
}
