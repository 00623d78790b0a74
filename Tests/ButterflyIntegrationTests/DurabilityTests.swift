import ButterflyControl
import ButterflyProtocol
import Foundation
import SwiftProtobuf
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Nothing acknowledged is lost: a real daemon with `--state-file` on a small tmpfs that fills
/// up, and killed with SIGKILL in the middle of a stream of changes. After every restart, each
/// change the API acknowledged is there, and none it refused.
@Suite(.serialized)
struct DurabilityTests {
    /// A tmpfs of `size` mounted on a fresh directory; unmounted when released.
    final class SmallFilesystem {
        let directory = TemporaryDirectory()
        var path: String { directory.path + "/fs" }

        init(size: String) throws {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            let result = try runProcess(
                "/usr/bin/mount",
                ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "tmpfs", path]
            )
            guard result.status == 0 else { throw HarnessError("cannot mount a tmpfs: \(result)") }
        }

        func resize(_ size: String) throws {
            let result = try runProcess("/usr/bin/mount", ["-o", "remount,size=\(size)", path])
            guard result.status == 0 else { throw HarnessError("cannot resize the tmpfs: \(result)") }
        }

        deinit { _ = try? runProcess("/usr/bin/umount", ["-l", path]) }
    }

    /// A REQ socket to a daemon; a fresh one after each timeout (REQ cannot resend).
    final class Client {
        let endpoint: String
        let context = ZMQContext()
        var socket: ZMQSocket

        init(endpoint: String) throws {
            self.endpoint = endpoint
            socket = try Self.connect(context, endpoint)
        }

        static func connect(_ context: ZMQContext, _ endpoint: String) throws -> ZMQSocket {
            let socket = try ZMQSocket(context: context, kind: .request)
            try socket.setOption(ZMQRawOption.receiveTimeout, 1_000)
            try socket.connect(endpoint)
            return socket
        }

        /// The replies to `requests` sent as one batch, or `nil` when none came (daemon dead).
        func send(_ requests: [MessageV0.Request]) throws -> [MessageV0.Response]? {
            try socket.send(try Proto_Messages(requests: requests).serializedBytes())
            guard let frames = try socket.receive() else {
                socket = try Self.connect(context, endpoint)
                return nil
            }
            return try Proto_Messages(serializedBytes: frames[0]).messages.map(\.message0.response)
        }
    }

    static func nicAdd(_ index: Int) -> MessageV0.Request {
        MessageV0.Request.with {
            $0.nicAdd.id = "durable-\(index)"
            $0.nicAdd.mac = String(format: "52:54:00:%02x:%02x:%02x", index >> 16 & 255, index >> 8 & 255, index & 255)
            $0.nicAdd.vni = UInt32(index % 64)
            $0.nicAdd.ip = ["198.51.100.\(index % 250 + 1)"]
            // Long enough that a small filesystem fills after a few hundred.
            $0.nicAdd.securityGroup = (0..<8).map { "group-with-a-long-name-\($0)-\(index)" }
        }
    }

    static func nicIDs(_ daemon: Daemon) throws -> Set<String> {
        let list = try daemon.cli("nic list")
        #expect(list.status == 0, "\(list)")
        return Set(list.stdout.split(separator: "\n").map(String.init))
    }

    @Test func aFullDiskRefusesChangesAndLosesNoneThatWereAcknowledged() throws {
        let filesystem = try SmallFilesystem(size: "96k")
        let state = filesystem.path + "/butterfly.state"
        let directory = TemporaryDirectory()
        var daemon: Daemon? = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        let client = try Client(endpoint: daemon!.endpoint)

        var acknowledged = Set<String>()
        var refusals: [MessageV0.Response] = []
        for index in 0..<400 {
            let reply = try #require(try client.send([Self.nicAdd(index)]))[0]
            if reply.status.status {
                acknowledged.insert("durable-\(index)")
            } else {
                refusals.append(reply)
            }
        }
        #expect(!acknowledged.isEmpty && !refusals.isEmpty, "the filesystem must fill: \(acknowledged.count) saved")
        for refusal in refusals.prefix(3) {
            #expect(refusal.status.error.description_p == "State file write failed")
            #expect(refusal.status.error.detail.contains("No space left on device"), "\(refusal)")
        }
        // Refused means not applied: the running daemon does not have them either.
        #expect(try Self.nicIDs(daemon!) == acknowledged)
        // Nor a refused delete or replacement of a NIC it has.
        let kept = try #require(acknowledged.sorted().first)
        var replacement = Self.nicAdd(0)
        replacement.nicAdd.id = kept
        replacement.nicAdd.mac = "02:00:00:00:00:77"
        let undone = try #require(try client.send([MessageV0.Request.with { $0.nicDel = kept }, replacement]))
        #expect(undone.allSatisfy { !$0.status.status }, "\(undone)")
        #expect(try Self.nicIDs(daemon!) == acknowledged)
        let details = try daemon!.cli(["nic", "details", kept])
        #expect(!details.stdout.contains("02:00:00:00:00:77"), "\(details)")

        // The same daemon, once there is room again, takes changes (nothing left half-written).
        try filesystem.resize("4m")
        let afterRoom = try #require(try client.send([Self.nicAdd(1000), Self.nicAdd(1001)]))
        #expect(afterRoom.allSatisfy { $0.status.status }, "\(afterRoom)")
        acknowledged.formUnion(["durable-1000", "durable-1001"])

        // Killed without warning: every acknowledged change comes back, nothing else.
        kill(daemon!.child.pid, SIGKILL)
        daemon!.waitForExit()
        daemon = nil
        let restarted = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try Self.nicIDs(restarted) == acknowledged)
        #expect(restarted.stop() == 0)
    }

    @Test func aFullDiskAtStartOfAJournalAndAfterwardsNeverPoisonsIt() throws {
        // Fill the filesystem from outside, so the failure comes mid-stream at a random byte.
        let filesystem = try SmallFilesystem(size: "256k")
        let state = filesystem.path + "/butterfly.state"
        let directory = TemporaryDirectory()
        var daemon: Daemon? = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        let client = try Client(endpoint: daemon!.endpoint)
        var acknowledged = Set<String>()
        for index in 0..<20 where try #require(try client.send([Self.nicAdd(index)]))[0].status.status {
            acknowledged.insert("durable-\(index)")
        }
        let filler = filesystem.path + "/filler"
        _ = try runProcess("/usr/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=1k", "count=1024"])
        var refused = 0
        for index in 20..<60 {
            if try #require(try client.send([Self.nicAdd(index)]))[0].status.status {
                acknowledged.insert("durable-\(index)")
            } else {
                refused += 1
            }
        }
        #expect(refused > 0)
        // The transient failure passes.
        try FileManager.default.removeItem(atPath: filler)
        for index in 60..<80 {
            let reply = try #require(try client.send([Self.nicAdd(index)]))[0]
            #expect(reply.status.status, "\(reply)")
            acknowledged.insert("durable-\(index)")
        }
        #expect(daemon!.stop() == 0)
        daemon = nil
        let restarted = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try Self.nicIDs(restarted) == acknowledged)
        #expect(restarted.stop() == 0)
        #expect(!restarted.stderr.contains("torn"), "\(restarted.stderr)")
    }

    @Test func killedAtRandomMomentsDuringAStreamOfChanges() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        var acknowledged = Set<String>()
        // The batch in flight when the daemon died: saved or not, the client cannot know.
        var inFlight = Set<String>()
        var generator = SystemRandomNumberGenerator()
        var next = 0
        for round in 0..<4 {
            let daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
            let present = try Self.nicIDs(daemon)
            let required = acknowledged.subtracting(inFlight)
            #expect(required.isSubset(of: present), "round \(round): lost \(required.subtracting(present))")
            #expect(
                present.isSubset(of: acknowledged.union(inFlight)),
                "round \(round): never sent \(present.subtracting(acknowledged.union(inFlight)))"
            )
            acknowledged = present
            let client = try Client(endpoint: daemon.endpoint)
            // A killer thread picks a random moment within the stream.
            let delay = UInt32.random(in: 20_000...300_000, using: &generator)
            let pid = daemon.child.pid
            let killer = Thread {
                usleep(delay)
                kill(pid, SIGKILL)
            }
            killer.start()
            while true {
                let batch = (0..<Int.random(in: 1...5, using: &generator)).map { next + $0 }
                inFlight = Set(batch.map { "durable-\($0)" })
                guard let replies = try client.send(batch.map(Self.nicAdd)) else { break }
                for (index, reply) in zip(batch, replies) where reply.status.status {
                    acknowledged.insert("durable-\(index)")
                }
                next += batch.count
                // Deletes too, so that the journal holds both kinds of record.
                if let deleted = acknowledged.randomElement(using: &generator), Bool.random(using: &generator) {
                    inFlight = [deleted]
                    guard let reply = try client.send([MessageV0.Request.with { $0.nicDel = deleted }]) else { break }
                    if reply[0].status.status { acknowledged.remove(deleted) }
                }
            }
            daemon.waitForExit()
        }
        let last = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        let present = try Self.nicIDs(last)
        let required = acknowledged.subtracting(inFlight)
        #expect(required.isSubset(of: present), "lost \(required.subtracting(present))")
        #expect(present.isSubset(of: acknowledged.union(inFlight)))
        #expect(last.stop() == 0)
    }

    @Test func aDamagedJournalStopsTheDaemonAndRecoveryKeepsEveryIntactRecord() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        let first = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        for index in 0..<3 {
            #expect(
                try first.cli([
                    "nic", "add", "--id", "n\(index)", "--mac", "52:54:00:00:00:0\(index + 1)", "--vni", "1",
                ]).status == 0
            )
        }
        #expect(first.stop() == 0)
        // Three records after a clean start; damage the length of the middle one.
        let second = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        for index in 3..<6 {
            #expect(
                try second.cli([
                    "nic", "add", "--id", "n\(index)", "--mac", "52:54:00:00:00:0\(index + 1)", "--vni", "1",
                ]).status == 0
            )
        }
        kill(second.child.pid, SIGKILL)
        second.waitForExit()
        var journal = try [UInt8](Data(contentsOf: URL(fileURLWithPath: state + ".journal")))
        let header = journal.firstIndex(of: UInt8(ascii: "\n"))! + 1
        let firstLength = Int(journal[header + 4]) | Int(journal[header + 5]) << 8
        let middle = header + 16 + firstLength
        journal[middle + 5] ^= 0x40  // the length field of record 2
        try Data(journal).write(to: URL(fileURLWithPath: state + ".journal"))

        let refused = try runProcess(
            Binaries.daemon,
            ["--no-syslog", "-e", "ipc://\(directory.path)/api.sock", "-s", directory.path, "--state-file", state]
        )
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("journal \(state).journal is corrupt at byte \(middle)"), "\(refused)")
        #expect(refused.stderr.contains("--recover-state"), "\(refused)")

        let recovered = try Daemon(extraArguments: ["--state-file", state, "--recover-state"], directory: directory)
        #expect(try Self.nicIDs(recovered) == ["n0", "n1", "n2", "n3", "n5"])
        #expect(recovered.stop() == 0)
        #expect(recovered.stderr.contains("set aside as \(state).journal.damaged-"), "\(recovered.stderr)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains("damaged") }
        #expect(kept.count == 1)
        // And it starts normally from then on.
        let normal = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try Self.nicIDs(normal) == ["n0", "n1", "n2", "n3", "n5"])
        #expect(normal.stop() == 0)
    }

    @Test func aBatchThatPreparesTheSameTapTwiceLeavesItAttached() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        let daemon = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        let client = try Client(endpoint: daemon.endpoint)
        let name = "btdur\(getpid() % 100_000)"
        func tap(_ kind: MessageV0.Nic.TypeEnum = .tap) -> MessageV0.Request {
            MessageV0.Request.with {
                $0.nicAdd.id = name
                $0.nicAdd.mac = "52:54:00:00:00:31"
                $0.nicAdd.vni = 7
                $0.nicAdd.type = kind
            }
        }
        // Added, deleted and added again in one request: published after the save, as one tap.
        let first = try #require(try client.send([tap(), MessageV0.Request.with { $0.nicDel = name }, tap()]))
        #expect(first.allSatisfy { $0.status.status }, "\(first)")
        #expect(try runProcess("/usr/sbin/ip", ["link", "show", name]).status == 0)
        // Turned into a vhost-user NIC and back into a tap in one request: still a tap with its port.
        let second = try #require(try client.send([tap(.vhostUserServer), tap()]))
        #expect(second.allSatisfy { $0.status.status }, "\(second)")
        #expect(try runProcess("/usr/sbin/ip", ["link", "show", name]).status == 0)
        let stats = try daemon.cli(["nic", "stats", name])
        #expect(stats.status == 0, "\(stats)")
        #expect(daemon.stop() == 0)
        #expect(try runProcess("/usr/sbin/ip", ["link", "show", name]).status != 0, "removed at stop")
    }

    @Test func aTornTailIsReportedAtTheDefaultLogLevel() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        let first = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try first.cli("nic add --id kept --mac 52:54:00:00:00:01 --vni 1").status == 0)
        kill(first.child.pid, SIGKILL)
        first.waitForExit()
        let handle = try #require(FileHandle(forWritingAtPath: state + ".journal"))
        handle.seekToEndOfFile()
        handle.write(Data(Array("BFJ2".utf8) + [200, 0, 0, 0, 1, 2, 3]))
        try handle.close()
        // The harness logs at info; the report must show at the default level (error). The killed
        // daemon's socket file is removed first: it would read as the new daemon being ready.
        unlink(directory.path + "/api.sock")
        let child = try ChildProcess(
            Binaries.daemon,
            ["--no-syslog", "-e", "ipc://\(directory.path)/api.sock", "-s", directory.path, "--state-file", state]
        )
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: directory.path + "/api.sock") && Date() < deadline {
            usleep(2000)
        }
        kill(child.pid, SIGTERM)
        #expect(child.wait(timeout: 10) == 0)
        #expect(child.stderr.contains("dropped a torn last record"), "\(child.stderr)")
    }
}
