import ButterflyDataplane
import Foundation
import Testing

@testable import ButterflyControl

/// An ini file with a unique name under the temporary directory.
private struct TemporaryIni {
    let path: String

    init(_ contents: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("butterflyd-\(UUID().uuidString).ini").path
        try contents.write(toFile: path, atomically: false, encoding: .utf8)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct DaemonOptionsTests {
    @Test func defaults() throws {
        let options = try DaemonOptions.parse([])
        #expect(options.endpoint == "tcp://127.0.0.1:9999")
        #expect(options.socketDirectory == "/tmp")
        #expect(options.logLevel == .error)
        #expect(options.vtepAddress == nil)
        #expect(options.configFile == nil)
        #expect(options.graphCPUCore == nil)
        #expect(options.nicMTU == nil)
        #expect(options.packetTrace == false)
        #expect(options.tracePath == "/tmp")
        #expect(options.offloads)
        #expect(options.keyPath == nil)
        #expect(options.syslog)
        #expect(options.stateFile == nil)
        #expect(!options.showHelp)
        #expect(!options.showVersion)
        #expect(options == DaemonOptions())
    }

    @Test func connectionTableSize() throws {
        #expect(try DaemonOptions.parse([]).connectionCapacity == 1 << 20)
        #expect(try DaemonOptions.parse(["--conntrack-max", "5000"]).connectionCapacity == 5000)
        let ini = try TemporaryIni("[general]\nconntrack-max = 2000000\n")
        defer { ini.remove() }
        #expect(try DaemonOptions.parse(["-c", ini.path]).connectionCapacity == 2_000_000)
        for bad in ["0", "-1", "many", "\(1 << 27)"] {
            #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--conntrack-max", bad]) }
        }
    }

    @Test func shortOptions() throws {
        let options = try DaemonOptions.parse([
            "-i", "198.51.100.7", "-s", "/run/butterfly", "-e", "ipc:///tmp/b.sock", "-l", "debug", "-u", "3",
            "-m", "1500", "-k", "/etc/key", "-t",
        ])
        #expect(options.vtepAddress == IPAddress("198.51.100.7"))
        #expect(options.socketDirectory == "/run/butterfly")
        #expect(options.endpoint == "ipc:///tmp/b.sock")
        #expect(options.logLevel == .debug)
        #expect(options.graphCPUCore == 3)
        #expect(options.nicMTU == 1500)
        #expect(options.keyPath == "/etc/key")
        #expect(options.packetTrace)
    }

    @Test func shortOptionWithAttachedValue() throws {
        let options = try DaemonOptions.parse(["-i2001:db8::1", "-lwarning"])
        #expect(options.vtepAddress == IPAddress("2001:db8::1"))
        #expect(options.logLevel == .warning)
    }

    @Test func longOptions() throws {
        let options = try DaemonOptions.parse([
            "--ip", "2001:0db8::0001", "--socket-dir", "/s", "--endpoint", "tcp://*:1", "--log-level", "info",
            "--graph-cpu-core", "2", "--dpdk-args", "-c1 -n4", "--dpdk-port", "1", "--nic-mtu", "9000",
            "--key", "/k", "--state-file", "/var/lib/b/state", "--trace-path", "/traces", "--packet-trace",
            "--no-offload", "--no-syslog",
        ])
        #expect(options.vtepAddress == IPAddress("2001:db8::1"))
        #expect(options.socketDirectory == "/s")
        #expect(options.endpoint == "tcp://*:1")
        #expect(options.logLevel == .info)
        #expect(options.graphCPUCore == 2)
        #expect(options.dpdkArgs == "-c1 -n4")
        #expect(options.dpdkPort == 1)
        #expect(options.nicMTU == 9000)
        #expect(options.keyPath == "/k")
        #expect(options.stateFile == "/var/lib/b/state")
        #expect(options.tracePath == "/traces")
        #expect(options.packetTrace)
        #expect(!options.offloads)
        #expect(!options.syslog)
    }

    @Test func longOptionsWithEquals() throws {
        let options = try DaemonOptions.parse(["--ip=203.0.113.5", "--endpoint=tcp://a=b:1", "--log-level=none"])
        #expect(options.vtepAddress == IPAddress("203.0.113.5"))
        #expect(options.endpoint == "tcp://a=b:1")
        #expect(options.logLevel == Log.Level.none)
    }

    @Test func graphCoreSpellings() throws {
        #expect(try DaemonOptions.parse(["-u", "5"]).graphCPUCore == 5)
        #expect(try DaemonOptions.parse(["--graph-core-id", "6"]).graphCPUCore == 6)
        #expect(try DaemonOptions.parse(["--graph-core-id=7"]).graphCPUCore == 7)
        #expect(try DaemonOptions.parse(["--graph-cpu-core", "8"]).graphCPUCore == 8)
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-u", "4096"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-u", "-1"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-u", "one"]) }
    }

    @Test func nicMTU() throws {
        #expect(try DaemonOptions.parse(["-m", "max"]).nicMTU == nil)
        #expect(try DaemonOptions.parse(["-m", "1500"]).nicMTU == 1500)
        #expect(try DaemonOptions.parse(["--nic-mtu=68"]).nicMTU == 68)
        #expect(try DaemonOptions.parse(["-m", "1500", "-m", "max"]).nicMTU == nil)
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-m", "67"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-m", "65536"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-m", "MAX"]) }
    }

    @Test func lastOccurrenceWins() throws {
        #expect(try DaemonOptions.parse(["-i", "10.0.0.1", "--ip", "10.0.0.2"]).vtepAddress == IPAddress("10.0.0.2"))
    }

    @Test func flags() throws {
        #expect(try DaemonOptions.parse(["-h"]).showHelp)
        #expect(try DaemonOptions.parse(["--help"]).showHelp)
        #expect(try DaemonOptions.parse(["-V"]).showVersion)
        #expect(try DaemonOptions.parse(["--version"]).showVersion)
        #expect(try DaemonOptions.parse(["--packet-trace"]).packetTrace)
    }

    @Test func badIP() {
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-i", "1.2.3"]) }
        #expect(error?.description.contains("'1.2.3' is not an IP address") == true)
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--ip", "198.51.100.1/33"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--ip", "2001:db8::1/129"]) }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--ip="]) }
    }

    @Test func underlayOptions() throws {
        let options = try DaemonOptions.parse([
            "-i", "198.51.100.1/25", "--underlay-if", "ua0", "--underlay-gw", "198.51.100.126", "--vtep-peer",
            "203.0.113.1", "--vtep-peer", "203.0.113.2,203.0.113.1",
        ])
        #expect(options.vtepAddress == IPAddress("198.51.100.1"))
        #expect(options.vtepPrefixLength == 25)
        #expect(options.underlayInterface == "ua0")
        #expect(options.underlayGateway == IPAddress("198.51.100.126"))
        #expect(options.vtepPeers == [IPAddress("203.0.113.1")!, IPAddress("203.0.113.2")!])
        // The original named its interface through DPDK's pcap driver.
        let dpdk = try DaemonOptions.parse(["--dpdk-args", "-c1 -n1 --vdev=eth_pcap0,iface=veth7 --no-huge"])
        #expect(dpdk.underlayInterface == "veth7")
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--vtep-peer", "nope"]) }
        #expect(throws: DaemonOptions.Failure.self) {
            try DaemonOptions.parse(["--underlay-if", "name-too-long-for-linux"])
        }
    }

    @Test func badLogLevel() {
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-l", "verbose"]) }
        #expect(error?.description.contains("verbose") == true)
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-l", "DEBUG"]) }
    }

    @Test func emptyEndpointIsRejected() {
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-e", ""]) }
    }

    @Test(arguments: [["-x"], ["--frobnicate"], ["--frobnicate=1"], ["-tV"], ["stray"], ["-"], ["--help=yes"]])
    func unknownOrMalformedOptions(_ arguments: [String]) {
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(arguments) }
    }

    @Test func unknownOptionIsNamed() {
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["--frobnicate"]) }
        #expect(error?.description.contains("--frobnicate") == true)
    }

    @Test func missingValue() {
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-i"]) }
        #expect(error?.description == "option --ip needs a value")
    }

    // MARK: ini file

    @Test func iniValuesAreApplied() throws {
        let ini = try TemporaryIni(
            """
            [general]
            ip = 198.51.100.1
            endpoint = "tcp://192.0.2.1:7777"
            socket-dir = /var/run/bf
            log-level = warning
            nic-mtu = max
            packet-trace = yes
            no-offload = true
            trace-path = /var/tmp
            state-file = /var/lib/bf.state
            dpdk-args = -c1
            dpdk-port = 0
            """
        )
        defer { ini.remove() }
        let options = try DaemonOptions.parse(["-c", ini.path])
        #expect(options.configFile == ini.path)
        #expect(options.vtepAddress == IPAddress("198.51.100.1"))
        #expect(options.endpoint == "tcp://192.0.2.1:7777")
        #expect(options.socketDirectory == "/var/run/bf")
        #expect(options.logLevel == .warning)
        #expect(options.nicMTU == nil)
        #expect(options.packetTrace)
        #expect(!options.offloads)
        #expect(options.tracePath == "/var/tmp")
        #expect(options.stateFile == "/var/lib/bf.state")
        #expect(options.dpdkArgs == "-c1")
        #expect(options.dpdkPort == 0)
    }

    @Test func commandLineOverridesIni() throws {
        let ini = try TemporaryIni("[general]\nip=198.51.100.1\nendpoint=tcp://192.0.2.1:7777\nnic-mtu = 1400\n")
        defer { ini.remove() }
        let options = try DaemonOptions.parse(["-c", ini.path, "-i", "203.0.113.9"])
        #expect(options.vtepAddress == IPAddress("203.0.113.9"))
        #expect(options.endpoint == "tcp://192.0.2.1:7777")
        #expect(options.nicMTU == 1400)
        // Even when the option comes before -c on the command line.
        let earlier = try DaemonOptions.parse(["-i", "203.0.113.9", "-m", "max", "--config", ini.path])
        #expect(earlier.vtepAddress == IPAddress("203.0.113.9"))
        #expect(earlier.nicMTU == nil)
        #expect(earlier.configFile == ini.path)
    }

    @Test func iniUnknownKey() throws {
        let ini = try TemporaryIni("[general]\nip = 10.0.0.1\nfrobnicate = 1\n")
        defer { ini.remove() }
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", ini.path]) }
        #expect(error?.description.contains("frobnicate") == true)
    }

    @Test func iniUnknownSection() throws {
        let ini = try TemporaryIni("[mystery]\nip = 10.0.0.1\n")
        defer { ini.remove() }
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", ini.path]) }
        #expect(error?.description.contains("mystery") == true)
    }

    @Test func iniKeyInTheWrongSection() throws {
        let ini = try TemporaryIni("[security]\nip = 10.0.0.1\n")
        defer { ini.remove() }
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", ini.path]) }
    }

    @Test func iniSecurityKeyPath() throws {
        let ini = try TemporaryIni("[security]\nencryption_key_path = /etc/butterfly/key\n")
        defer { ini.remove() }
        #expect(try DaemonOptions.parse(["-c", ini.path]).keyPath == "/etc/butterfly/key")
        #expect(try DaemonOptions.parse(["-c", ini.path, "-k", "/other"]).keyPath == "/other")
    }

    @Test func iniGraphCoreSpellings() throws {
        let old = try TemporaryIni("[general]\ngraph-core-id = 3\n")
        defer { old.remove() }
        #expect(try DaemonOptions.parse(["-c", old.path]).graphCPUCore == 3)
        let new = try TemporaryIni("[general]\ngraph-cpu-core = 4\n")
        defer { new.remove() }
        #expect(try DaemonOptions.parse(["-c", new.path]).graphCPUCore == 4)
    }

    @Test func iniKeysBeforeASectionAreGeneral() throws {
        let ini = try TemporaryIni("ip = 192.0.2.44\n")
        defer { ini.remove() }
        #expect(try DaemonOptions.parse(["-c", ini.path]).vtepAddress == IPAddress("192.0.2.44"))
    }

    @Test func iniBadValues() throws {
        for body in ["ip = nope", "log-level = loud", "packet-trace = maybe", "nic-mtu = 10", "endpoint = \"\""] {
            let ini = try TemporaryIni("[general]\n\(body)\n")
            defer { ini.remove() }
            let error = #expect(throws: DaemonOptions.Failure.self, "\(body)") {
                try DaemonOptions.parse(["-c", ini.path])
            }
            #expect(error?.description.contains(ini.path) == true)
        }
    }

    @Test func iniSyntaxErrorNamesFileAndLine() throws {
        let ini = try TemporaryIni("[general]\nip 10.0.0.1\n")
        defer { ini.remove() }
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", ini.path]) }
        #expect(error?.description.contains(ini.path) == true)
        #expect(error?.description.contains("line 2") == true)
    }

    @Test func unreadableIni() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("missing-\(UUID().uuidString).ini")
            .path
        let error = #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", path]) }
        #expect(error?.description.contains(path) == true)
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(["-c", "/"]) }
    }
}
