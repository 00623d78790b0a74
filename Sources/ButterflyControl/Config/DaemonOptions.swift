import ButterflyDataplane
import Foundation

/// Everything `butterflyd` can be told, from its command line and its ini file
/// (BUTTERFLY-COMPAT.md §6). The command line overrides the ini file, which overrides the
/// defaults; with no arguments at all the daemon runs local-only switching on safe defaults.
public struct DaemonOptions: Equatable, Sendable {
    public var configFile: String?
    /// VTEP address (`-i`); `nil` = local-only switching.
    public var vtepAddress: IPAddress?
    /// Length of the underlay prefix the VTEP address is on (`-i IP/LEN`); `nil` = on-link
    /// for everything without a gateway, nothing with one.
    public var vtepPrefixLength: Int?
    /// Interface carrying VXLAN (`--underlay-if`, or the original's
    /// `--dpdk-args "--vdev=eth_pcap0,iface=IFNAME"`).
    public var underlayInterface: String?
    /// Router for VTEPs off the VTEP's prefix (`--underlay-gw`).
    public var underlayGateway: IPAddress?
    /// Remote VTEPs that receive broadcast/unknown traffic by unicast (`--vtep-peer`, repeatable).
    public var vtepPeers: [IPAddress] = []
    public var socketDirectory = "/tmp"
    public var endpoint = "tcp://127.0.0.1:9999"
    /// Group given the `ipc://` API socket (`--api-socket-group`); `nil` keeps root's.
    public var apiSocketGroup: String?
    /// Permissions of the `ipc://` API socket (`--api-socket-mode`, octal); `nil` = 0660 with a
    /// group, 0600 without. Connecting needs write permission on the socket file.
    public var apiSocketMode: UInt32?
    /// Soft open-file limit to set at start (`--open-files-limit`); `nil` = the hard limit.
    public var openFilesLimit: Int?
    public var logLevel = Log.Level.error
    public var graphCPUCore: Int?
    /// Accepted for compatibility with DPDK-era scripts; see `underlayInterface`.
    public var dpdkArgs: String?
    public var dpdkPort: Int?
    /// `nil` = the port's maximum (`-m max`).
    public var nicMTU: Int?
    public var packetTrace = false
    public var tracePath = "/tmp"
    public var offloads = true
    /// Give a TAP NIC's interface the NIC's MAC (`--tap-set-mac`). Off by default, as in the
    /// original: the interface keeps the kernel's address, so a tap bridged on the host to a
    /// VM does not take the VM's address as the bridge's own. On where the tap itself is the
    /// guest's interface (moved into a namespace or container).
    public var tapSetsMAC = false
    public var keyPath: String?
    public var syslog = true
    public var stateFile: String?
    /// Start from every record of a damaged state file that still checks (`--recover-state`).
    public var recoverState = false
    /// Bound of the firewall's connection table, across every NIC (`--conntrack-max`).
    public var connectionCapacity = 1 << 20
    public var showVersion = false
    public var showHelp = false

    public init() {}

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Parses the command line, reading the ini file it names (if any) underneath it.
    public static func parse(_ arguments: [String]) throws(Failure) -> DaemonOptions {
        let command = try CommandLineValues(arguments)
        var options = DaemonOptions()
        if let path = command.values["config"] {
            options.configFile = path
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw Failure("cannot read configuration file \(path): \(error.localizedDescription)")
            }
            let ini: IniFile
            do {
                ini = try IniFile(text: text)
            } catch {
                throw Failure("configuration file \(path), \(error)")
            }
            try options.apply(ini: ini, path: path)
        }
        for (key, value) in command.orderedValues where key != "config" {
            try options.set(key, value, source: "option --\(key)")
        }
        options.showHelp = command.flags.contains("help")
        options.showVersion = command.flags.contains("version")
        if command.flags.contains("packet-trace") { options.packetTrace = true }
        if command.flags.contains("no-offload") { options.offloads = false }
        if command.flags.contains("no-syslog") { options.syslog = false }
        if command.flags.contains("recover-state") { options.recoverState = true }
        if command.flags.contains("tap-set-mac") { options.tapSetsMAC = true }
        return options
    }

    /// Ini keys, by section, and the option each one sets.
    static let iniKeys: [String: [String: String]] = [
        "general": [
            "ip": "ip", "socket-dir": "socket-dir", "endpoint": "endpoint", "log-level": "log-level",
            "graph-core-id": "graph-cpu-core", "graph-cpu-core": "graph-cpu-core", "dpdk-args": "dpdk-args",
            "dpdk-port": "dpdk-port", "nic-mtu": "nic-mtu", "state-file": "state-file",
            "trace-path": "trace-path", "packet-trace": "packet-trace-flag", "no-offload": "no-offload-flag",
            "tap-set-mac": "tap-set-mac-flag",
            "underlay-if": "underlay-if", "underlay-gw": "underlay-gw", "vtep-peers": "vtep-peer",
            "conntrack-max": "conntrack-max", "api-socket-group": "api-socket-group",
            "api-socket-mode": "api-socket-mode", "open-files-limit": "open-files-limit",
        ],
        "security": ["encryption_key_path": "key"],
    ]

    mutating func apply(ini: IniFile, path: String) throws(Failure) {
        for (section, keys) in ini.sections.sorted(by: { $0.key < $1.key }) {
            guard let known = Self.iniKeys[section] else {
                throw Failure("configuration file \(path): unknown section [\(section)]")
            }
            for (key, value) in keys.sorted(by: { $0.key < $1.key }) {
                guard let option = known[key] else {
                    throw Failure("configuration file \(path): unknown key '\(key)' in [\(section)]")
                }
                try set(option, value, source: "\(path): [\(section)] \(key)")
            }
        }
    }

    private mutating func set(_ option: String, _ value: String, source: String) throws(Failure) {
        switch option {
        case "ip":
            let parts = value.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard let address = IPAddress(parts[0]) else { throw Failure("\(source): '\(value)' is not an IP address") }
            vtepAddress = address
            vtepPrefixLength =
                parts.count == 2 ? try Self.integer(parts[1], source: source, range: 0...address.bitWidth) : nil
        case "underlay-if":
            guard !value.isEmpty, value.utf8.count <= 15 else {
                throw Failure("\(source): '\(value)' is not an interface name")
            }
            underlayInterface = value
        case "underlay-gw":
            guard let address = IPAddress(value) else { throw Failure("\(source): '\(value)' is not an IP address") }
            underlayGateway = address
        case "vtep-peer":
            for item in value.split(separator: ",") {
                let text = item.trimmingWhitespace()
                guard let address = IPAddress(text) else { throw Failure("\(source): '\(text)' is not an IP address") }
                if !vtepPeers.contains(address) { vtepPeers.append(address) }
            }
        case "socket-dir": socketDirectory = value
        case "api-socket-group":
            guard !value.isEmpty else { throw Failure("\(source): empty group") }
            apiSocketGroup = value
        case "api-socket-mode":
            guard let mode = UInt32(value, radix: 8), mode <= 0o777 else {
                throw Failure("\(source): expected an octal mode such as 0660, not '\(value)'")
            }
            apiSocketMode = mode
        case "open-files-limit": openFilesLimit = try Self.integer(value, source: source, range: 64...(1 << 30))
        case "endpoint":
            guard !value.isEmpty else { throw Failure("\(source): empty endpoint") }
            endpoint = value
        case "log-level":
            guard let level = Log.Level(name: value) else {
                throw Failure("\(source): log level must be none, error, warning, info or debug, not '\(value)'")
            }
            logLevel = level
        case "graph-cpu-core": graphCPUCore = try Self.integer(value, source: source, range: 0...4095)
        case "dpdk-args":
            dpdkArgs = value
            // The original named its underlay through DPDK's pcap driver.
            if underlayInterface == nil, let range = value.range(of: "iface=") {
                let name = value[range.upperBound...].prefix { $0 != "," && $0 != " " && $0 != "\"" }
                if !name.isEmpty { underlayInterface = String(name) }
            }
        case "dpdk-port": dpdkPort = try Self.integer(value, source: source, range: 0...65535)
        case "nic-mtu":
            nicMTU = value == "max" ? nil : try Self.integer(value, source: source, range: 68...65535)
        case "state-file":
            guard !value.isEmpty else { throw Failure("\(source): empty path") }
            stateFile = value
        case "trace-path": tracePath = value
        case "conntrack-max": connectionCapacity = try Self.integer(value, source: source, range: 1...(1 << 26))
        case "key": keyPath = value
        case "packet-trace-flag": packetTrace = try Self.boolean(value, source: source)
        case "no-offload-flag": offloads = !(try Self.boolean(value, source: source))
        case "tap-set-mac-flag": tapSetsMAC = try Self.boolean(value, source: source)
        default: preconditionFailure("unhandled option \(option)")
        }
    }

    private static func integer(_ text: String, source: String, range: ClosedRange<Int>) throws(Failure) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw Failure("\(source): expected an integer in \(range.lowerBound)...\(range.upperBound), not '\(text)'")
        }
        return value
    }

    private static func boolean(_ text: String, source: String) throws(Failure) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "1", "on": return true
        case "false", "no", "0", "off": return false
        default: throw Failure("\(source): expected true or false, not '\(text)'")
        }
    }

    public static let usage = """
        usage: butterflyd [options]

          -c, --config FILE         ini file ([general] keys below, [security] encryption_key_path)
          -i, --ip IP[/LEN]         underlay (VTEP) address, IPv4 or IPv6 [ip]; none = local switching only
              --underlay-if IFNAME  interface carrying VXLAN, owned by the daemon [underlay-if]
              --underlay-gw IP      router towards VTEPs outside the VTEP's prefix [underlay-gw]
              --vtep-peer IP        remote VTEP for broadcast/unknown traffic, repeatable
                                    (head-end replication, no multicast needed) [vtep-peers, comma-separated]
          -s, --socket-dir DIR      directory of vhost-user sockets [socket-dir] (default /tmp)
          -e, --endpoint URL        API endpoint, any ZeroMQ endpoint [endpoint] (default tcp://127.0.0.1:9999)
              --api-socket-group G  group of an ipc:// API socket, whose members may use the API [api-socket-group]
              --api-socket-mode M   octal mode of an ipc:// API socket [api-socket-mode]
                                    (default 0660 with a group, else 0600)
              --open-files-limit N  open-file limit (RLIMIT_NOFILE) to set at start [open-files-limit]
                                    (default: raise the soft limit to the hard limit)
          -l, --log-level LEVEL     none, error, warning, info or debug [log-level] (default error)
          -u, --graph-cpu-core N    CPU core of the packet worker [graph-core-id or graph-cpu-core]
              --dpdk-args ARGS      accepted for compatibility [dpdk-args]
              --dpdk-port N         accepted for compatibility [dpdk-port]
          -m, --nic-mtu N|max       MTU of guest NICs [nic-mtu] (default max)
          -t, --packet-trace        trace every NIC to pcap by default [packet-trace]
              --trace-path DIR      directory of pcap traces; API requests may only name files
                                    directly in it [trace-path] (default /tmp)
              --no-offload          disable offloads [no-offload]
              --tap-set-mac         give a TAP NIC's interface the NIC's MAC, for a tap that is itself
                                    the guest's interface (namespaces, containers) [tap-set-mac]
                                    (default: the kernel's own address, as a tap bridged to a VM needs)
          -k, --key PATH            API encryption key file: base64 of 32 bytes [security/encryption_key_path]
              --conntrack-max N     connections the firewall tracks, all NICs together
                                    [conntrack-max] (default 1048576; ~80 bytes each, used on demand)
              --state-file PATH     save the configuration here after each change, restore it at start [state-file]
              --recover-state       start from every intact record of a damaged state file, setting
                                    the damaged file aside (docs/OPERATIONS.md, State file)
              --no-syslog           log to stderr only
          -V, --version             print the version and exit
          -h, --help                print this help and exit

        The command line overrides the ini file.
        """
}

/// Raw command-line values: `-x V`, `--long V`, `--long=V`, and flags.
struct CommandLineValues {
    static let valueOptions: [String: String] = [
        "c": "config", "i": "ip", "s": "socket-dir", "e": "endpoint", "l": "log-level", "u": "graph-cpu-core",
        "m": "nic-mtu", "k": "key",
    ]
    static let longValueOptions: Set<String> = [
        "config", "ip", "socket-dir", "endpoint", "log-level", "graph-cpu-core", "dpdk-args", "dpdk-port", "nic-mtu",
        "key", "state-file", "trace-path", "underlay-if", "underlay-gw", "vtep-peer", "conntrack-max",
        "api-socket-group", "api-socket-mode", "open-files-limit",
    ]
    static let flagOptions: [String: String] = ["t": "packet-trace", "V": "version", "h": "help"]
    static let longFlags: Set<String> = [
        "packet-trace", "no-offload", "no-syslog", "version", "help", "recover-state", "tap-set-mac",
    ]

    var orderedValues: [(String, String)] = []
    var values: [String: String] = [:]
    var flags: Set<String> = []

    init(_ arguments: [String]) throws(DaemonOptions.Failure) {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            var name: String
            var inlineValue: String?
            if argument.hasPrefix("--") {
                name = String(argument.dropFirst(2))
                if let equals = name.firstIndex(of: "=") {
                    inlineValue = String(name[name.index(after: equals)...])
                    name = String(name[..<equals])
                }
                if name == "graph-core-id" { name = "graph-cpu-core" }
            } else if argument.hasPrefix("-") && argument.count >= 2 {
                let short = String(argument.dropFirst().prefix(1))
                if argument.count > 2 { inlineValue = String(argument.dropFirst(2)) }
                if let long = Self.valueOptions[short] {
                    name = long
                } else if let long = Self.flagOptions[short], inlineValue == nil {
                    name = long
                } else {
                    throw DaemonOptions.Failure("unknown option '\(argument)' (see --help)")
                }
            } else {
                throw DaemonOptions.Failure("unexpected argument '\(argument)' (see --help)")
            }
            if Self.longFlags.contains(name) {
                guard inlineValue == nil else { throw DaemonOptions.Failure("option --\(name) takes no value") }
                flags.insert(name)
            } else if Self.longValueOptions.contains(name) {
                let value: String
                if let inlineValue {
                    value = inlineValue
                } else {
                    guard index < arguments.count else { throw DaemonOptions.Failure("option --\(name) needs a value") }
                    value = arguments[index]
                    index += 1
                }
                orderedValues.append((name, value))
                values[name] = value
            } else {
                throw DaemonOptions.Failure("unknown option '\(argument)' (see --help)")
            }
        }
    }
}
