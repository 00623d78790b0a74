import Foundation
import Synchronization
import Testing

/// Network namespaces created by one test, named with a per-run prefix so parallel or leftover
/// runs never collide, and all deleted when the value is released. Traffic stays inside them:
/// they get documentation-range addresses and no route to the outside.
final class Namespaces {
    let prefix: String
    private(set) var names: [String] = []
    /// Suites run in parallel: the counter is atomic, or two of them could take the same
    /// prefix and collide on a namespace name (CI saw `ip netns add` fail that way).
    private static let counter = Atomic<Int>(0)

    init() {
        let number = Self.counter.wrappingAdd(1, ordering: .relaxed).newValue
        prefix = "bt\(getpid() % 100_000)\(number)"
    }

    deinit {
        for name in names { _ = try? run("/usr/sbin/ip", ["netns", "del", name]) }
    }

    /// Creates namespace `<prefix><suffix>` with its loopback up.
    @discardableResult
    func add(_ suffix: String) throws -> String {
        let name = prefix + suffix
        try sh("ip netns add \(name)")
        names.append(name)
        try sh("ip -n \(name) link set lo up")
        return name
    }

    /// Moves the daemon's tap `tap` into namespace `name`, brings it up and gives it addresses
    /// (IPv6 without duplicate address detection, so it is usable at once).
    func attach(tap: String, to name: String, ipv4: String?, ipv6: String? = nil) throws {
        try sh("ip link set \(tap) netns \(name)")
        try sh("ip -n \(name) link set \(tap) up")
        if let ipv4 { try sh("ip -n \(name) addr add \(ipv4) dev \(tap)") }
        if let ipv6 { try sh("ip -n \(name) addr add \(ipv6) dev \(tap) nodad") }
    }

    /// Runs a command inside a namespace. A command the shell cannot find or run (exit 127 or
    /// 126: a tool is missing) throws, so that no test passes on output the tool never gave.
    func exec(_ name: String, _ command: String, timeout: TimeInterval = 30) throws -> ProcessResult {
        let result = try runProcess("/usr/sbin/ip", ["netns", "exec", name, "sh", "-c", command], timeout: timeout)
        guard result.status != 127 && result.status != 126 else {
            throw HarnessError("cannot run `\(command)` (exit \(result.status)), is a tool missing? \(result.stderr)")
        }
        return result
    }

    /// A `socat` echo server inside namespace `name` listening with `address` (e.g.
    /// `TCP-LISTEN:7000,reuseaddr` or `UDP-RECVFROM:7001`), ready when this returns. It is
    /// killed when the returned value is released.
    func echoServer(in name: String, _ address: String) throws -> EchoServer {
        try requireTool("socat")
        let process = try ChildProcess(
            "/usr/sbin/ip",
            ["netns", "exec", name, "socat", "-T", "5", address, "EXEC:/bin/cat"]
        )
        usleep(300_000)
        guard process.isRunning else { throw HarnessError("socat \(address) in \(name) exited: \(process.stderr)") }
        return EchoServer(process: process)
    }

    /// True when `count` pings from `name` to `address` all get answers.
    func pings(from name: String, to address: String, count: Int = 3) throws -> Bool {
        let family = address.contains(":") ? "-6" : "-4"
        let result = try exec(name, "ping \(family) -c \(count) -i 0.2 -W 1 \(address)")
        return result.status == 0 && result.stdout.contains(" 0% packet loss")
    }

    /// True when no ping from `name` to `address` is answered.
    func isolated(from name: String, to address: String) throws -> Bool {
        let family = address.contains(":") ? "-6" : "-4"
        let result = try exec(name, "ping \(family) -c 2 -i 0.2 -W 1 \(address)")
        return result.status != 0 && result.stdout.contains(" 0 received")
    }
}

/// Fails the test when traffic tool `name` is not installed (scripts/setup installs them all):
/// for tools started in the background, whose absence would otherwise only show as missing
/// output, or not at all.
func requireTool(_ name: String) throws {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
    guard path.split(separator: ":").contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") })
    else {
        throw HarnessError("required tool '\(name)' is not installed (scripts/setup installs the test tools)")
    }
}

/// Runs a shell command on the host; fails the test with its output when it fails.
@discardableResult
func sh(_ command: String) throws -> ProcessResult {
    let result = try runProcess("/bin/sh", ["-c", command])
    guard result.status == 0 else { throw HarnessError("\(command) failed: \(result)") }
    return result
}

func run(_ path: String, _ arguments: [String]) throws -> ProcessResult {
    try runProcess(path, arguments)
}

/// Parses `butterfly nic stats` output into (in, out).
func stats(_ daemon: Daemon, _ nic: String) throws -> (in: UInt64, out: UInt64) {
    let lines = try daemon.cli("nic stats \(nic)").stdout.split(separator: "\n")
    let values = lines.compactMap { $0.split(separator: " ").last.flatMap { UInt64($0) } }
    return values.count == 2 ? (values[0], values[1]) : (0, 0)
}

/// A helper process stopped (by its pid) when the value goes away.
final class EchoServer {
    let process: ChildProcess

    init(process: ChildProcess) {
        self.process = process
    }

    deinit {
        kill(process.pid, SIGKILL)
        process.wait(timeout: 5)
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` seconds passed; returns whether it
/// held. For waiting on an event with a deadline instead of sleeping a fixed time.
func waitUntil(timeout: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try condition() { return true }
        if Date() >= deadline { return false }
        usleep(50_000)
    }
}

/// The `NAME: N` lines of `butterfly nic stats NIC --all` (`drop <reason>`, `connections`,
/// `in packets`…) by name.
func nicCounters(_ daemon: Daemon, _ nic: String) throws -> [String: Int] {
    var counters: [String: Int] = [:]
    for line in try daemon.cli("nic stats \(nic) --all").stdout.split(separator: "\n") {
        guard let colon = line.lastIndex(of: ":"),
            let value = Int(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        else { continue }
        counters[String(line[..<colon])] = value
    }
    return counters
}

/// The security group the switching and tunnelling tests give their NICs: every protocol from
/// anywhere, IPv4 and IPv6, so that those tests exercise the whole filtered path (anti-spoofing,
/// firewall, connection tracking) without depending on particular rules. FirewallTests tests
/// the rules themselves.
let openGroup = "open"

/// Creates `openGroup` on `daemon`.
func createOpenGroup(on daemon: Daemon) throws {
    for cidr in ["0.0.0.0/0", "::/0"] {
        let result = try daemon.cli("sg rule add \(openGroup) --ip-proto all --cidr \(cidr)")
        guard result.status == 0 else { throw HarnessError("cannot create the open group: \(result)") }
    }
}

/// `nic add` arguments that give a NIC the addresses its VM will use (`ipv4`/`ipv6` may carry
/// a prefix length, dropped here) and `openGroup`.
func filteredNICArguments(ipv4: String?, ipv6: String? = nil) -> String {
    var arguments = ""
    for address in [ipv4, ipv6].compactMap({ $0 }) {
        arguments += " --ip \(address.split(separator: "/")[0])"
    }
    return arguments + " --sg \(openGroup)"
}

/// Two hosts, network namespaces `<prefix>ha` and `<prefix>hb` joined by a veth pair
/// `<prefix>ua` ↔ `<prefix>ub` (of MTU `underlayMTU` when given), each running a daemon whose
/// VTEP is on its end (`extraA` goes to host A's daemon only), with the open group.
func twoHostDaemons(
    _ namespaces: Namespaces,
    underlayMTU: Int? = nil,
    vtepA: String = "198.51.100.1/24",
    vtepB: String = "198.51.100.2/24",
    extra: [String] = [],
    extraA: [String] = []
) throws -> (Daemon, Daemon) {
    let hostA = try namespaces.add("ha")
    let hostB = try namespaces.add("hb")
    let ua = namespaces.prefix + "ua"
    let ub = namespaces.prefix + "ub"
    try sh("ip link add \(ua) netns \(hostA) type veth peer name \(ub) netns \(hostB)")
    if let underlayMTU {
        try sh("ip -n \(hostA) link set \(ua) mtu \(underlayMTU)")
        try sh("ip -n \(hostB) link set \(ub) mtu \(underlayMTU)")
    }
    try sh("ip -n \(hostA) link set \(ua) up")
    try sh("ip -n \(hostB) link set \(ub) up")
    let daemonA = try Daemon(extraArguments: ["-i", vtepA, "--underlay-if", ua] + extra + extraA, namespace: hostA)
    let daemonB = try Daemon(extraArguments: ["-i", vtepB, "--underlay-if", ub] + extra, namespace: hostB)
    try createOpenGroup(on: daemonA)
    try createOpenGroup(on: daemonB)
    return (daemonA, daemonB)
}
