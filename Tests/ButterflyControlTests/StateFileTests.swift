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

func makeService(stateStore: StateStore? = nil, runtime: (any DataplaneBinding)? = nil) -> APIService {
    let control = ControlPlane(
        reconciler: Reconciler(
            host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp/s", nicMTU: nil, offloads: true),
            traceByDefault: false,
            traceDirectory: "/tmp",
            processID: 1
        ),
        stateStore: stateStore,
        runtime: runtime
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
                btype: "ICMP_RCV_LIKE",
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
        #expect(text.hasPrefix("# butterfly-state v2 generation=1 messages=7 checksum="))

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
        #expect(
            try String(contentsOfFile: path, encoding: .utf8)
                == "# butterfly-state v2 generation=1 messages=0 checksum=\(StateFile.hex(StateJournal.checksum([])))\n"
        )
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
        #expect(text.hasPrefix("# butterfly-state v2 generation=1 messages=1 "))
        try text.replacingOccurrences(of: "messages=1 ", with: "messages=2 ").write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
        #expect(
            error?.description.contains(
                "corrupt at byte 0 (the header line): it announces 2 messages, the file holds 1"
            )
                == true,
            "\(String(describing: error))"
        )
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

    /// A last record that is all there (its length ends at the end of the file) but fails its
    /// checksum was written whole and acknowledged, then damaged: dropping it as a torn tail
    /// would lose an acknowledged change. A record torn by a crash is cut short, or ends in
    /// the zeros of blocks never written.
    @Test func aCompleteLastRecordThatFailsItsChecksumIsDamageNotATornTail() throws {
        let path = temporaryPath()
        defer {
            remove(path)
            for file
                in (try? FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent))
                ?? []
            where file.hasPrefix((path as NSString).lastPathComponent + ".journal.damaged-") {
                try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent + "/" + file)
            }
        }
        let store = StateStore(path: path)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        for id in ["first", "last"] {
            _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd(id)] }.serializedBytes())
        }
        var bytes = try #require(FileManager.default.contents(atPath: path + ".journal"))
        bytes[bytes.count - 3] ^= 0x20  // one flipped bit in the last record's payload
        try bytes.write(to: URL(fileURLWithPath: path + ".journal"))
        #expect(throws: StateStore.Failure.self) { try StateStore(path: path).load() }
        do {
            _ = try StateStore(path: path).load()
        } catch {
            #expect(error.description.contains("is corrupt at byte"), "\(error)")
            #expect(error.description.contains("--recover-state"), "\(error)")
        }
        // Recovery keeps the intact record and sets the damaged journal aside.
        let recovered = try StateStore(path: path).recover()
        #expect(recovered.messages.count == 1)
        #expect(recovered.damaged.map(\.file) == [path + ".journal"])

        // The same record ending in zeros (blocks never written before a crash) is a torn tail.
        var torn = bytes
        for index in (torn.count - 12)..<torn.count { torn[index] = 0 }
        try torn.write(to: URL(fileURLWithPath: path + ".journal"))
        let back = try restored(StateStore(path: path))
        #expect(back.tornTail)
        #expect(back.model.nics.keys.sorted() == ["first"])
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

/// Records what reaches the data plane, to check a change that could not be saved never does.
private final class WatchingDataplane: DataplaneBinding {
    var prepared: [String] = []
    var published: [ModelChange] = []
    var abandoned = 0
    func prepare(_ nic: NIC, path: String) throws(APIError) { prepared.append(nic.id) }
    func publish(_ config: DataplaneConfig, change: ModelChange, changedNICs: [String]) { published.append(change) }
    func abandonPrepared() { abandoned += 1 }
    func counters(of id: String) -> NICCounters? { nil }
}

@Suite struct StateDurabilityTests {
    private func service(_ store: StateStore, _ dataplane: WatchingDataplane) -> APIService {
        makeService(stateStore: store, runtime: dataplane)
    }

    private func replies(_ service: APIService, _ messages: [Proto_Message]) throws -> [MessageV0.Response] {
        let bytes = service.handle(try Proto_Messages.with { $0.messages = messages }.serializedBytes()).reply
        return try Proto_Messages(serializedBytes: bytes).messages.map(\.message0.response)
    }

    @Test func aRefusedChangeWhoseRecordCouldNotBeCutOffNeverReplays() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        let dataplane = WatchingDataplane()
        let service = service(store, dataplane)
        #expect(try replies(service, [nicAdd("a"), nicAdd("b")]).allSatisfy { $0.status.status })
        // The disk fails the record's fdatasync, and the truncate that would cut the record off
        // (as after an I/O error whose dirty pages the kernel still writes back later): the
        // record stays in the journal file although the change is refused.
        store.journal?.faults = StateJournal.Faults(failingSyncs: 1, failingTruncates: 1)
        let refused = try replies(service, [nicAdd("c")])
        #expect(refused.map(\.status.status) == [false])
        #expect(refused[0].status.error.description_p == "State file write failed")
        #expect(service.controlPlane.model.nics.keys.sorted() == ["a", "b"])
        // A crash now: what a restart replays is what was acknowledged, never the refused change.
        #expect(try restored(StateStore(path: path)).model.nics.keys.sorted() == ["a", "b"])
        // And the store goes on: the next change is saved and kept.
        #expect(try replies(service, [nicAdd("d")]).allSatisfy { $0.status.status })
        #expect(try restored(StateStore(path: path)).model.nics.keys.sorted() == ["a", "b", "d"])
    }

    @Test func aChangeThatCannotBeSavedIsRefusedAndRolledBack() throws {
        // The state file's directory does not exist yet: every save fails.
        let directory = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let dataplane = WatchingDataplane()
        let service = service(StateStore(path: directory + "/state"), dataplane)
        let rule = request {
            $0.sgRuleAdd.sgID = "web"
            $0.sgRuleAdd.rule.direction = .inbound
            $0.sgRuleAdd.rule.protocol = 6
            $0.sgRuleAdd.rule.portStart = 22
            $0.sgRuleAdd.rule.portEnd = 22
            $0.sgRuleAdd.rule.cidr.address = "198.51.100.0"
            $0.sgRuleAdd.rule.cidr.maskSize = 24
        }
        let refused = try replies(service, [nicAdd("a"), request { $0.nicList = true }, rule])
        #expect(refused.map(\.status.status) == [false, true, false])
        #expect(refused[2].status.error.description_p == "State file write failed")
        #expect(refused[0].status.error.description_p == "State file write failed")
        #expect(refused[0].status.error.detail.contains("cannot create \(directory)/state.tmp"), "\(refused[0])")
        #expect(refused[0].status.error.detail.hasSuffix("nothing was changed"))
        // The read in the same batch answered from the state of the moment; nothing stayed.
        #expect(refused[1].nicList == ["a"])
        #expect(service.controlPlane.model == Model())
        #expect(service.controlPlane.reconciler.snapshot.nics.isEmpty)
        #expect(service.controlPlane.reconciler.snapshot.securityGroups.isEmpty)
        #expect(dataplane.published.isEmpty)
        #expect(dataplane.prepared == ["a"] && dataplane.abandoned == 1)

        // Once the directory exists, the same batch goes through, and reaches the data plane.
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        let accepted = try replies(service, [nicAdd("a"), rule])
        #expect(accepted.allSatisfy { $0.status.status }, "\(accepted)")
        #expect(dataplane.published == [.nic("a"), .securityGroup("web")])
        let back = try restored(StateStore(path: directory + "/state"))
        #expect(back.model == service.controlPlane.model)
        #expect(back.model.nics.keys.sorted() == ["a"])
    }

    @Test func aChangedDigitInTheSnapshotIsFoundAndRecoveryKeepsTheRest() throws {
        let path = temporaryPath()
        defer { remove(path) }
        var model = Model()
        for index in 1...3 {
            try model.addNIC(NIC(id: "n\(index)", mac: MACAddress("02:00:00:00:00:0\(index)")!, vni: UInt32(index)))
        }
        try StateFile(path: path).save(model, generation: 4)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let vni = try #require(text.range(of: "vni: 2"))
        text.replaceSubrange(vni, with: "vni: 7")
        try text.write(toFile: path, atomically: false, encoding: .utf8)

        let error = #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
        #expect(
            error?.description.contains("state file \(path) is corrupt at byte") == true,
            "\(String(describing: error))"
        )
        #expect(error?.description.contains("--recover-state") == true)

        let recovered = try StateStore(path: path).recover()
        #expect(recovered.messages.map(\.message0.request.nicAdd.id) == ["n1", "n3"])
        #expect(recovered.damaged.map(\.file) == [path])
        // Nothing is moved until the recovered state is saved (Daemon.restore).
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func aDamagedLengthFieldIsDamageNotATornTail() throws {
        let path = temporaryPath()
        defer { remove(path) }
        let store = StateStore(path: path)
        try store.compact(Model())
        let service = makeService(stateStore: store)
        for id in ["one", "two", "three"] {
            _ = service.handle(try Proto_Messages.with { $0.messages = [nicAdd(id)] }.serializedBytes())
        }
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path + ".journal")))
        let header = bytes.firstIndex(of: UInt8(ascii: "\n"))! + 1
        bytes[header + 6] = 0x7F  // the first record's length, now far past the end
        try Data(bytes).write(to: URL(fileURLWithPath: path + ".journal"))
        let error = #expect(throws: StateStore.Failure.self) { try StateStore(path: path).load() }
        #expect(error?.description.contains("corrupt at byte \(header)") == true, "\(String(describing: error))")
        let recovered = try StateStore(path: path).recover()
        #expect(recovered.messages.map(\.message0.request.nicAdd.id) == ["two", "three"])
        #expect(recovered.damaged.map(\.file) == [path + ".journal"])
    }

    @Test func aPlantedTemporarySymlinkIsNeverFollowed() throws {
        let path = temporaryPath()
        let victim = temporaryPath()
        defer {
            remove(path)
            try? FileManager.default.removeItem(atPath: victim)
        }
        try "precious\n".write(toFile: victim, atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: path + ".tmp", withDestinationPath: victim)
        try StateFile(path: path).save(Model(), generation: 1)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious\n")
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect(attributes[.type] as? FileAttributeType == .typeRegular)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // A symlink in place of the state file itself is refused on load, not followed.
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: victim)
        #expect(throws: StateStore.Failure.self) { try StateFile(path: path).load() }
    }
}

@Suite struct StateCompactionFailureTests {
    @Test func aJournalThatCannotStartAfterTheSnapshotWasWrittenStillAcknowledges() throws {
        let path = temporaryPath()
        defer {
            remove(path)
            try? FileManager.default.removeItem(atPath: path + ".journal.tmp")
        }
        // The journal's temporary name is taken by a directory: the snapshot can be written,
        // the journal cannot.
        try FileManager.default.createDirectory(atPath: path + ".journal.tmp", withIntermediateDirectories: false)
        let service = makeService(stateStore: StateStore(path: path))
        for id in ["a", "b"] {
            let reply = try Proto_Messages(
                serializedBytes: service.handle(
                    try Proto_Messages.with { $0.messages = [nicAdd(id)] }.serializedBytes()
                ).reply
            )
            #expect(reply.messages[0].message0.response.status.status, "\(reply)")
        }
        // Each change went into a new snapshot, so both are there after a restart.
        #expect(try restored(StateStore(path: path)).model.nics.keys.sorted() == ["a", "b"])
    }

    @Test func recoveryLeavesEverythingInPlaceWhenItCannotSave() throws {
        let path = temporaryPath()
        defer {
            remove(path)
            try? FileManager.default.removeItem(atPath: path + ".tmp")
        }
        var model = Model()
        try model.addNIC(NIC(id: "n1", mac: MACAddress("02:00:00:00:00:01")!, vni: 1))
        try model.addNIC(NIC(id: "n2", mac: MACAddress("02:00:00:00:00:02")!, vni: 2))
        try StateFile(path: path).save(model, generation: 3)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "vni: 2", with: "vni: 9")
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        // The snapshot cannot be written (its temporary name is a directory).
        try FileManager.default.createDirectory(atPath: path + ".tmp", withIntermediateDirectories: false)
        #expect(throws: (any Error).self) {
            try Daemon.restore(
                StateStore(path: path),
                into: makeService(stateStore: StateStore(path: path)),
                recover: true
            )
        }
        #expect(
            try String(contentsOfFile: path, encoding: .utf8) == text,
            "the damaged file stays until recovery saves"
        )
        let siblings = try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
        #expect(!siblings.contains { $0.hasPrefix((path as NSString).lastPathComponent + ".damaged") })
        // Once it can save, recovery keeps n1 and sets the damaged bytes aside.
        try FileManager.default.removeItem(atPath: path + ".tmp")
        let store = StateStore(path: path)
        let service = makeService(stateStore: store)
        try Daemon.restore(store, into: service, recover: true)
        #expect(service.controlPlane.model.nics.keys.sorted() == ["n1"])
        let kept = try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
            .filter { $0.hasPrefix((path as NSString).lastPathComponent + ".damaged") }
        #expect(kept.count == 1)
        let directory = (path as NSString).deletingLastPathComponent
        for file in kept {
            #expect(try String(contentsOfFile: directory + "/" + file, encoding: .utf8) == text)
            try FileManager.default.removeItem(atPath: directory + "/" + file)
        }
    }
}
