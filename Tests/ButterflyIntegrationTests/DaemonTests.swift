import Foundation
import Testing

/// `butterflyd` as a process: configuration errors, signals, dump/restore, the state file,
/// encryption end to end.
@Suite(.serialized)
struct DaemonTests {
    static let configuration = [
        "nic add --id vm1 --mac 52:54:00:00:00:01 --vni 100 --ip 198.51.100.1 --sg web --enable-antispoof",
        "nic add --id dt\(getpid()) --mac 52:54:00:00:00:02 --vni 100 --ip 2001:db8::2 --type TAP --bypass-filtering",
        "nic add --id vm3 --mac 52:54:00:00:00:03 --vni 200 --packet-trace true --trace-path /tmp/x.pcap",
        "sg rule add web --ip-proto tcp --port 80 --cidr 0.0.0.0/0",
        "sg rule add web --ip-proto all --sg-members admins",
        "sg member add admins 203.0.113.10",
    ]

    func configure(_ daemon: Daemon) throws {
        for line in Self.configuration {
            let result = try daemon.cli(line)
            try #require(result.status == 0, "\(line): \(result)")
        }
    }

    @Test func dumpShutdownRestartRequestDumpIsIdentical() throws {
        let directory = TemporaryDirectory()
        let first = try Daemon(directory: directory)
        try configure(first)
        let dump = try first.cli("dump")
        #expect(dump.status == 0)
        #expect(dump.stdout.contains("nic_add") && dump.stdout.contains("sg_add"))
        let file = directory.path + "/config.dump"
        try dump.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try first.cli("shutdown").status == 0)
        #expect(first.waitForExit() == 0)

        let second = try Daemon(directory: directory)
        #expect(try second.cli("nic list").stdout == "")
        let replay = try second.cli(["request", file])
        #expect(replay.status == 0, "\(replay)")
        let again = try second.cli("dump")
        #expect(again.stdout == dump.stdout)
        #expect(try second.cli("nic details dt\(getpid())").stdout.contains("type: TAP"))
        second.stop()
    }

    @Test func requestWithStdoutPrintsTheReply() throws {
        let daemon = try Daemon()
        let file = daemon.directory.path + "/req"
        try """
        messages {
          revision: 0
          message_0 {
            message_id: "first"
            request { nic_add { id: "r1" mac: "52:54:00:00:00:01" vni: 3 } }
          }
        }
        messages {
          revision: 0
          message_0 { message_id: "second" request { nic_list: true } }
        }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try daemon.cli(["request", file, "--stdout"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("message_id: \"first\""))
        #expect(result.stdout.contains("nic_list: \"r1\""))
        #expect(result.stdout.contains("revision: 9"))

        try "this is { not protobuf".write(toFile: file, atomically: true, encoding: .utf8)
        let bad = try daemon.cli(["request", file])
        #expect(bad.status == 1 && bad.stderr.contains("Error while encoding input to protobuf"))
    }

    @Test func sigtermStopsGracefully() throws {
        let daemon = try Daemon()
        try configure(daemon)
        #expect(daemon.stop() == 0)
        #expect(daemon.stderr.contains("got signal 15"))
        #expect(daemon.stderr.contains("stopped"))
    }

    @Test func stateFileRestoresEverythingAfterRestart() throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        let first = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        try configure(first)
        let before = try first.cli("dump").stdout
        #expect(FileManager.default.fileExists(atPath: state))
        #expect(FileManager.default.fileExists(atPath: state + ".journal"))
        #expect(!FileManager.default.fileExists(atPath: state + ".tmp"))
        // Killed without a chance to clean up: the journal alone must carry the changes.
        kill(first.child.pid, SIGKILL)
        first.waitForExit()

        let second = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try second.cli("dump").stdout == before)
        // Later changes are saved too.
        #expect(try second.cli("nic del vm1").status == 0)
        second.stop()
        #expect(second.stderr.contains("restored 3 NICs and 2 security groups"))
        let third = try Daemon(extraArguments: ["--state-file", state], directory: directory)
        #expect(try third.cli("nic list").stdout == "dt\(getpid())\nvm3\n")
        third.stop()
    }

    @Test(arguments: [
        (
            "# butterfly-state v1 generation=3 messages=1\nmessages { revision: 7 message_0 { request { nic_add {",
            "corrupt"
        ),
        ("garbage without header\n", "missing"),
        ("# butterfly-state v1 generation=3 messages=5\n", "announces 5 messages"),
        (
            "# butterfly-state v1 generation=3 messages=1\nmessages { revision: 7 message_0 { request { nic_add { id: \"a\" mac: \"zz\" vni: 1 } } } }\n",
            "Bad NIC format"
        ),
    ])
    func corruptStateFileIsRefusedAndKept(content: String, reason: String) throws {
        let directory = TemporaryDirectory()
        let state = directory.path + "/butterfly.state"
        try content.write(toFile: state, atomically: true, encoding: .utf8)
        let result = try runProcess(
            Binaries.daemon,
            ["--no-syslog", "-e", "ipc://\(directory.path)/api.sock", "-s", directory.path, "--state-file", state]
        )
        #expect(result.status != 0)
        #expect(result.stderr.contains("state file \(state)"), "\(result)")
        #expect(result.stderr.contains(reason), "\(result)")
        // Never silently replaced.
        #expect(try String(contentsOfFile: state, encoding: .utf8) == content)
    }

    @Test func bothWaysOfEncryption() throws {
        let directory = TemporaryDirectory()
        let key = directory.path + "/key"
        let otherKey = directory.path + "/other"
        try Data((0..<32).map { UInt8($0) }).base64EncodedString().appending("\n")
            .write(toFile: key, atomically: true, encoding: .utf8)
        try Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()
            .write(toFile: otherKey, atomically: true, encoding: .utf8)
        let daemon = try Daemon(extraArguments: ["-k", key], directory: directory)

        let encrypted = try daemon.cli([
            "nic", "add", "--id", "e1", "--mac", "52:54:00:00:00:01", "--vni", "9", "-k", key,
        ])
        #expect(encrypted.status == 0, "\(encrypted)")
        #expect(try daemon.cli(["nic", "list", "-k", key]).stdout == "e1\n")

        let clear = try daemon.cli("nic list")
        #expect(clear.status == 1)
        #expect(clear.stderr.contains("error in response: REJECTED"), "\(clear)")

        let wrongKey = try daemon.cli(["nic", "list", "-k", otherKey])
        #expect(wrongKey.status == 1)
        #expect(wrongKey.stderr.contains("Encrypted message error: REJECTED"), "\(wrongKey)")

        let verbose = try daemon.cli(["nic", "list", "-k", key, "-v"])
        #expect(
            verbose.stdout.contains("Request is encrypted") && verbose.stdout.contains("Received encrypted response")
        )
        daemon.stop()

        // A daemon without a key refuses encrypted requests.
        let plain = try Daemon()
        let refused = try plain.cli(["nic", "list", "-k", key])
        #expect(refused.status == 1 && refused.stderr.contains("REJECTED"), "\(refused)")
    }

    /// Bad configuration: one clear message, non-zero exit, nothing left running.
    @Test func badConfigurationIsRefused() throws {
        let directory = TemporaryDirectory()
        func start(_ arguments: [String]) throws -> ProcessResult {
            try runProcess(Binaries.daemon, ["--no-syslog"] + arguments, timeout: 10)
        }
        let endpoint = "ipc://\(directory.path)/api.sock"
        let cases: [([String], String)] = [
            (["-c", "/nonexistent/butterflyd.ini"], "cannot read configuration file /nonexistent/butterflyd.ini"),
            (["-i", "not-an-ip"], "'not-an-ip' is not an IP address"),
            (["-s", "/nonexistent-dir", "-e", endpoint], "socket directory /nonexistent-dir does not exist"),
            (["-l", "loud"], "log level"),
            (["--frobnicate"], "unknown option '--frobnicate'"),
            (["-k", "/nonexistent/key", "-e", endpoint, "-s", directory.path], "cannot read encryption key file"),
            (["-e", "tcp://256.0.0.1:1", "-s", directory.path], "cannot bind tcp://256.0.0.1:1"),
            // Guests may not get an MTU whose frames the daemon would drop (jumbo up to 9,000).
            (["-m", "9001", "-e", endpoint, "-s", directory.path], "--nic-mtu 9001 is more than the 9000 bytes"),
        ]
        for (arguments, message) in cases {
            let result = try start(arguments)
            #expect(result.status == 1, "\(arguments): \(result)")
            #expect(result.stderr.contains(message), "\(arguments): \(result)")
        }

        let ini = directory.path + "/bad.ini"
        try "[general]\nip = 198.51.100.1\nflux-capacitor = on\n".write(toFile: ini, atomically: true, encoding: .utf8)
        let unknownKey = try start(["-c", ini])
        #expect(unknownKey.status == 1 && unknownKey.stderr.contains("unknown key 'flux-capacitor'"), "\(unknownKey)")

        // An endpoint already in use.
        let running = try Daemon(directory: directory)
        let busy = try start(["-e", running.endpoint, "-s", directory.path])
        #expect(busy.status == 1 && busy.stderr.contains("cannot bind"), "\(busy)")
        running.stop()
    }

    @Test func iniFileIsReadAndCommandLineWins() throws {
        let directory = TemporaryDirectory()
        let ini = directory.path + "/butterflyd.ini"
        try """
        [general]
        ip = 198.51.100.1
        endpoint = "ipc://\(directory.path)/from-ini.sock"
        socket-dir = /nonexistent
        log-level = debug
        graph-core-id = 1

        [security]
        ;encryption_key_path = ""
        """.write(toFile: ini, atomically: true, encoding: .utf8)
        // The command line's socket dir overrides the ini's missing one; the endpoint comes from the ini.
        let process = try ChildProcess(Binaries.daemon, ["--no-syslog", "-c", ini, "-s", directory.path])
        defer {
            kill(process.pid, SIGTERM)
            process.wait(timeout: 10)
        }
        let socket = directory.path + "/from-ini.sock"
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) && Date() < deadline && process.isRunning {
            usleep(5_000)
        }
        let status = try runProcess(Binaries.cli, ["status", "-e", "ipc://\(socket)"])
        #expect(status.status == 0, "\(status)")
        #expect(status.stdout.contains("vxlan 198.51.100.1"))
    }

    @Test func defaultsStartWithNoArgumentsOnLoopback() throws {
        // Only if the default port is free on this machine; otherwise another daemon owns it.
        let probe = try runProcess(Binaries.cli, ["status", "-t", "300"])
        try #require(probe.status == 1, "something already answers on tcp://127.0.0.1:9999")
        let process = try ChildProcess(Binaries.daemon, ["--no-syslog"])
        defer {
            kill(process.pid, SIGTERM)
            process.wait(timeout: 10)
        }
        var status = ProcessResult(status: 1, stdout: "", stderr: "")
        for _ in 0..<50 where status.status != 0 {
            status = try runProcess(Binaries.cli, ["status", "-t", "200"])
        }
        #expect(status.status == 0, "\(status)")
        #expect(status.stdout.contains("local only"))
        #expect(process.isRunning)
    }
}
