import Foundation
import Testing

/// The `butterfly` CLI against a real daemon over a real ZeroMQ socket: outputs, errors on
/// stderr, exit codes, chaining.
@Suite(.serialized)
struct CLITests {
    let daemon: Daemon

    init() throws {
        daemon = try Daemon()
    }

    @Test func nicLifecycle() throws {
        let add = try daemon.cli(
            "nic add --id nic1 --mac 52:54:00:00:00:01 --vni 42 --ip 198.51.100.1 --ip 2001:0db8::0001 --sg web"
        )
        #expect(add.status == 0, "\(add)")
        #expect(add.stdout == "\(daemon.directory.path)/qemu-vhost-nic1\n")

        // A real tap interface is created: unique per test process.
        let tapName = "ct\(getpid())"
        let tap = try daemon.cli("nic add --id \(tapName) --mac 52:54:00:00:00:02 --vni 7 --type TAP")
        #expect(tap.stdout == "\(tapName)\n", "\(tap)")

        #expect(try daemon.cli("nic list").stdout == "\(tapName)\nnic1\n")

        let details = try daemon.cli("nic details nic1")
        #expect(details.status == 0)
        #expect(
            details.stdout == """
                id: nic1
                mac: 52:54:00:00:00:01
                vni: 42
                ip: 198.51.100.1
                ip: 2001:db8::1
                antispoof: false
                bypass filtering: false
                packet trace: false
                packet trace path: /tmp/butterfly-\(daemon.child.pid)-nic1.pcap
                type: VHOST_USER_SERVER
                path: \(daemon.directory.path)/qemu-vhost-nic1
                sg: web

                """
        )
        #expect(try daemon.cli("nic details \(tapName)").stdout.contains("type: TAP\n"))

        let stats = try daemon.cli("nic stats nic1")
        #expect(stats.stdout == "in: 0\nout: 0\n", "\(stats)")

        #expect(try daemon.cli("nic update --id nic1 --ip 203.0.113.5 --enable-antispoof true").status == 0)
        let updated = try daemon.cli("nic details nic1").stdout
        #expect(updated.contains("ip: 203.0.113.5\n") && !updated.contains("198.51.100.1"))
        #expect(updated.contains("antispoof: true\n"))

        // `--ip -e` clears the IPs (the original CLI's spelling), the endpoint stays ours.
        #expect(try daemon.cli("nic update --id nic1 --ip -e").status == 0)
        #expect(!(try daemon.cli("nic details nic1").stdout.contains("ip: ")))

        #expect(try daemon.cli("nic del nic1 \(tapName) never-existed").status == 0)
        #expect(try daemon.cli("nic list").stdout == "")
    }

    @Test func nicSecurityGroups() throws {
        #expect(try daemon.cli("nic add --id n --mac 52:54:00:00:00:03 --vni 1 --sg a").status == 0)
        #expect(try daemon.cli("nic sg add n b c b").status == 0)
        #expect(try daemon.cli("nic sg list n").stdout == "a\nb\nc\n")
        #expect(try daemon.cli("nic sg del n b").status == 0)
        #expect(try daemon.cli("nic sg list n").stdout == "a\nc\n")
        // Deleting the last groups really removes them (the original kept them).
        #expect(try daemon.cli("nic sg del n a c").status == 0)
        #expect(try daemon.cli("nic sg list n").stdout == "")
        #expect(try daemon.cli("nic sg set n x y").status == 0)
        #expect(try daemon.cli("nic sg list n").stdout == "x\ny\n")
        #expect(try daemon.cli("nic sg set n").status == 0)
        #expect(try daemon.cli("nic sg list n").stdout == "")
    }

    @Test func securityGroupsRulesMembers() throws {
        #expect(try daemon.cli("sg add sg-1 sg-2").status == 0)
        #expect(try daemon.cli("sg list").stdout == "sg-1\nsg-2\n")

        #expect(
            try daemon.cli("sg rule add sg-1 --ip-proto tcp --port-start 1000 --port-end 2000 --cidr 10.0.0.0/24")
                .status == 0
        )
        #expect(try daemon.cli("sg rule add sg-1 --ip-proto 42 --sg-members sg-2").status == 0)
        #expect(try daemon.cli("sg rule add sg-1 --dir out --ip-proto all --cidr 2001:db8::/32").status == 0)
        // A rule in a group that does not exist yet creates the group.
        #expect(try daemon.cli("sg rule add sg-4 --ip-proto udp --port 53 --cidr 0.0.0.0/0").status == 0)

        let rules = try daemon.cli("sg rule list sg-1")
        // The first two hashes are the original Butterfly CLI's values for the same rules.
        #expect(
            rules.stdout == """
                f44fac34f8667927 | direction: INBOUND - IP protocol: 6 - port start: 1000 - port end: 2000 - cidr: 10.0.0.0/24 - members of sg: Ø
                cfdb94f9418c88f1 | direction: INBOUND - IP protocol: 42 - port start: Ø - port end: Ø - cidr: Ø - members of sg: sg-2
                \(rules.stdout.split(separator: "\n")[2].prefix(16)) | direction: OUTBOUND - IP protocol: -1 - port start: Ø - port end: Ø - cidr: 2001:db8::/32 - members of sg: Ø

                """,
            "\(rules)"
        )
        #expect(try daemon.cli("sg list").stdout == "sg-1\nsg-2\nsg-4\n")

        // Delete by hash, then by the same options as add.
        #expect(try daemon.cli("sg rule del sg-1 f44fac34f8667927").status == 0)
        let again = try daemon.cli("sg rule del sg-1 f44fac34f8667927")
        #expect(again.status == 1 && again.stderr.contains("no rule found with hash f44fac34f8667927"))
        #expect(try daemon.cli("sg rule del sg-1 --ip-proto 42 --sg-members sg-2").status == 0)
        #expect(try daemon.cli("sg rule list sg-1").stdout.split(separator: "\n").count == 1)

        #expect(try daemon.cli("sg member add sg-2 198.51.100.7").status == 0)
        #expect(try daemon.cli("sg member add sg-2 198.51.100.7").status == 0)
        #expect(try daemon.cli("sg member add sg-2 2001:db8:0::7").status == 0)
        #expect(try daemon.cli("sg member list sg-2").stdout == "198.51.100.7\n2001:db8::7\n")
        #expect(try daemon.cli("sg member del sg-2 198.51.100.7").status == 0)
        #expect(try daemon.cli("sg member del sg-2 198.51.100.7").status == 0)
        #expect(try daemon.cli("sg member del no-such-sg 198.51.100.7").status == 0)
        #expect(try daemon.cli("sg member list sg-2").stdout == "2001:db8::7\n")

        #expect(try daemon.cli("sg del sg-1 sg-2 sg-4 not-here").status == 0)
        #expect(try daemon.cli("sg list").stdout == "")
    }

    /// Invalid invocations: exit 1, a message on stderr, nothing changed.
    @Test(arguments: [
        "", "badcommand", "--not-a-command", "nic", "nic add", "nic add --id x --vni 1",
        "nic add --id x --mac 52:54:00:00:00:01", "nic add --mac 52:54:00:00:00:01 --vni 1",
        "nic add --id x --mac 52:54:00:00:00:01 --vni notanumber",
        "nic add --id x --mac 52:54:00:00:00:01 --vni 1 --type TESTS",
        "nic add --id x --mac 52:54:00:00:00:01 --vni 1 --trace-path /tmp/x.pcap",
        "nic add --id x --mac nope --vni 1", "nic add --id x --mac 52:54:00:00:00:01 --vni 16777216",
        "nic add --id x --mac 52:54:00:00:00:01 --vni 1 --ip 1.2.3",
        "nic add --id way-too-long-for-a-tap --mac 52:54:00:00:00:01 --vni 1 --type TAP",
        "nic stats", "nic stats unknown", "nic details", "nic details unknown", "nic sg", "nic sg list unknown",
        "nic sg add unknown sg", "nic del", "nic update", "nic update --id unknown --enable-antispoof true",
        "nic update --id x --enable-antispoof maybe", "sg", "sg add", "sg del", "sg rule", "sg rule add",
        "sg rule add sg-1 --ip-proto tcp --cidr 0.0.0.0/0", "sg rule add sg-1 --ip-proto 256 --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto not_a_proto --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto tcp --port 65536 --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto tcp --port -1 --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto tcp --port-start 10 --port-end 5 --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto tcp --port-start 10 --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto icmp", "sg rule add sg-1 --ip-proto icmp --cidr 0.0.0.0/0 --sg-members x",
        "sg rule add sg-1 --dir sideways --ip-proto icmp --cidr 0.0.0.0/0",
        "sg rule add sg-1 --ip-proto icmp --cidr 10.0.0.0/33", "sg rule add sg-1 --ip-proto icmp --cidr nope/8",
        "sg rule list", "sg rule list unknown", "sg rule del", "sg rule del not-a-sg",
        "sg rule del sg-1 0123456789abcdef", "sg member", "sg member add sg-1", "sg member add sg-1 not_an_ip",
        "sg member list", "sg member list unknown", "sg member del sg-1", "sg member del sg-1 not_an_ip",
        "request", "request /nonexistent/file", "status extra", "nic list extra",
    ])
    func invalidInvocation(_ line: String) throws {
        let result = try daemon.cli(line.split(separator: " ").map(String.init))
        #expect(result.status == 1, "\(line): \(result)")
        #expect(!result.stderr.isEmpty || result.stdout.hasPrefix("usage:"), "\(line): \(result)")
        #expect(try daemon.cli("nic list").stdout == "")
        #expect(try daemon.cli("sg list").stdout == "")
    }

    /// Every command and group answers `help` (exit 0) with its usage.
    @Test(arguments: [
        "help", "nic help", "nic list help", "nic stats help", "nic details help", "nic add help", "nic update help",
        "nic del help", "nic sg help", "nic sg list help", "nic sg add help", "nic sg del help", "nic sg set help",
        "sg help", "sg list help", "sg add help", "sg del help", "sg rule help", "sg rule list help",
        "sg rule add help", "sg rule del help", "sg member help", "sg member list help", "sg member add help",
        "sg member del help", "status help", "shutdown help", "request help", "dump help", "-h", "--help",
        "nic add -h",
    ])
    func help(_ line: String) throws {
        let result = try daemon.cli(line.split(separator: " ").map(String.init))
        #expect(result.status == 0, "\(line): \(result)")
        #expect(result.stdout.contains("usage:") || result.stdout.contains("usage: butterfly"), "\(line)")
        #expect(result.stdout.contains("global options:"))
    }

    @Test func errorsCarryTheDaemonsDescription() throws {
        let result = try daemon.cli("sg rule list unknown")
        #expect(result.status == 1)
        #expect(result.stderr == "error in response\ndescription: Security Group not found\n")
        let bad = try daemon.cli("nic add --id x --mac 52:54:00:00:00:01 --vni 16777216")
        #expect(bad.stderr.hasPrefix("error in response\ndescription: Bad NIC format\ndetail: "), "\(bad)")
    }

    /// Issue 8: input the model refuses reaches the user with the original wording and the detail.
    @Test func refusedAddressesAndGroupIDs() throws {
        let multicast = try daemon.cli("nic add --id m --mac 33:33:00:00:00:01 --vni 1")
        #expect(multicast.status == 1)
        #expect(
            multicast.stderr
                == "error in response\ndescription: Bad NIC format\ndetail: mac 33:33:00:00:00:01 is a multicast "
                + "address (group bit set); a NIC's mac must be a unicast address\n",
            "\(multicast)"
        )
        let broadcast = try daemon.cli("nic add --id b --mac 52:54:00:00:00:01 --vni 1 --ip 255.255.255.255")
        #expect(broadcast.status == 1)
        #expect(
            broadcast.stderr.hasSuffix(
                "detail: ip 255.255.255.255 is the broadcast address; a NIC's ip must be a unicast address\n"
            )
        )
        let emptyGroup = try daemon.cli(["sg", "add", ""])
        #expect(emptyGroup.status == 1)
        #expect(emptyGroup.stderr.contains("description: Bad Security Group format\n"), "\(emptyGroup)")
        #expect(try daemon.cli("nic list").stdout == "")
        #expect(try daemon.cli("sg list").stdout == "")
    }

    @Test func chaining() throws {
        let ok = try daemon.cli(
            "nic add --id a --mac 52:54:00:00:00:0a --vni 1 + nic add --id b --mac 52:54:00:00:00:0b --vni 1 + nic list"
        )
        #expect(ok.status == 0)
        #expect(ok.stdout.hasSuffix("a\nb\n"), "\(ok)")
        // Stops at the first failure: `c` is never created.
        let failing = try daemon.cli(
            "nic del a + nic add --id x --mac 52:54:00:00:00:01 --vni 1 --type TESTS + nic add --id c --mac 52:54:00:00:00:0c --vni 1"
        )
        #expect(failing.status == 1)
        #expect(try daemon.cli("nic list").stdout == "b\n")
        // Segments may be bare global options.
        let version = try daemon.cli("nic list + --version + -V")
        #expect(version.status == 0 && version.stdout.contains("butterfly version"), "\(version)")
    }

    @Test func verbosePrintsRequestAndReply() throws {
        let result = try daemon.cli("nic list -v")
        #expect(result.status == 0)
        #expect(result.stdout.contains("# Message to be sent:"))
        #expect(result.stdout.contains("nic_list: true"))
        #expect(result.stdout.contains("# Received message:"))
        #expect(result.stdout.contains("status: true"))
    }

    /// `request FILE --stdout` prints the reply's text format as it is: it ends with the
    /// newline after its last field, and no blank line follows (as the original).
    @Test func requestStdoutPrintsExactlyTheReply() throws {
        let file = daemon.directory.path + "/request"
        try """
        messages { revision: 0 message_0 { message_id: "add" request { nic_add { id: "q1" mac: "52:54:00:00:00:01" vni: 3 } } } }
        messages { revision: 0 message_0 { request { nic_list: true } } }
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try daemon.cli(["request", file, "--stdout"])
        #expect(result.status == 0, "\(result)")
        #expect(
            result.stdout == """
                messages {
                  revision: 9
                  message_0 {
                    response {
                      status {
                        status: true
                      }
                      nic_add {
                        path: "\(daemon.directory.path)/qemu-vhost-q1"
                      }
                    }
                    message_id: "add"
                  }
                }
                messages {
                  revision: 9
                  message_0 {
                    response {
                      status {
                        status: true
                      }
                      nic_list: "q1"
                    }
                  }
                }

                """
        )
        #expect(result.stderr == "")
        // Without --stdout, nothing at all.
        #expect(try daemon.cli(["request", file]).stdout == "")
    }

    /// With a key file it cannot read, the CLI refuses to send anything (the original warned
    /// and sent the request in clear).
    @Test(arguments: ["missing-key", "."])
    func unreadableKeyFileSendsNothing(key: String) throws {
        func requestCounter() throws -> UInt64? {
            let status = try daemon.cli("status").stdout.split(separator: "\n")
            return status.first { $0.hasPrefix("request counter: ") }.flatMap { UInt64($0.split(separator: " ")[2]) }
        }
        let path = daemon.directory.path + "/" + key
        let before = try #require(try requestCounter())
        let result = try daemon.cli([
            "nic", "add", "--id", "k1", "--mac", "52:54:00:00:00:01", "--vni", "1", "-k", path,
        ])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout == "")
        #expect(
            result.stderr.hasPrefix("cannot load encryption key: cannot read encryption key file \(path)"),
            "\(result)"
        )
        // The daemon saw nothing: one more request (this status), no NIC.
        #expect(try requestCounter() == before + 1)
        #expect(try daemon.cli("nic list").stdout == "")
    }

    @Test func statusReportsDatesCounterAndGraph() throws {
        _ = try daemon.cli("nic add --id g1 --mac 52:54:00:00:00:01 --vni 5")
        let result = try daemon.cli("status")
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let now = UInt64(Date().timeIntervalSince1970)
        let start = try #require(UInt64(lines[0].dropFirst("start date: ".count)))
        let current = try #require(UInt64(lines[1].dropFirst("current date: ".count)))
        #expect(start <= current && current <= now + 1 && now - start < 120)
        #expect(lines[2] == "request counter: 2")
        #expect(lines[3] == "dot graph: ")
        #expect(lines[4] == "digraph butterfly {")
        #expect(result.stdout.contains("\"switch vni 5\" -> \"firewall g1\""))
        #expect(result.stdout.contains("\"firewall g1\" -> \"antispoof g1\""))
    }

    @Test func timeoutWhenNoDaemonAnswers() throws {
        let directory = TemporaryDirectory()
        // A file left where a socket was (a missing one is reported at once, without waiting).
        FileManager.default.createFile(atPath: "\(directory.path)/nobody", contents: nil)
        let started = Date()
        let result = try runProcess(Binaries.cli, ["nic", "list", "-e", "ipc://\(directory.path)/nobody", "-t", "300"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no reply"), "\(result)")
        #expect(Date().timeIntervalSince(started) < 5)
    }

    @Test func shutdownStopsTheDaemon() throws {
        #expect(try daemon.cli("shutdown").status == 0)
        #expect(daemon.waitForExit() == 0)
    }
}
