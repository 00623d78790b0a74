import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts
import ButterflyProtocol
import CButterflyLinux
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `butterflyd`: reads options, restores state, serves the API until asked to stop.
public enum Daemon {
    public static let version = "0.1.0"

    /// Runs the daemon; returns the process exit status.
    public static func main(arguments: [String]) -> Int32 {
        let options: DaemonOptions
        do {
            options = try DaemonOptions.parse(arguments)
        } catch {
            fail(error.description)
            return 1
        }
        if options.showHelp {
            print(DaemonOptions.usage)
            return 0
        }
        if options.showVersion {
            print("butterflyd version \(version) (API revision \(ButterflyRevision.current))")
            return 0
        }
        Log.level = options.logLevel
        if options.syslog { Log.enableSyslog() }

        do {
            try run(options)
            return 0
        } catch let error as StartupError {
            fail(error.description)
            return 1
        } catch {
            fail("\(error)")
            return 1
        }
    }

    struct StartupError: Error, CustomStringConvertible {
        let description: String
    }

    static func run(_ options: DaemonOptions) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: options.socketDirectory, isDirectory: &isDirectory),
            isDirectory.boolValue
        else {
            throw StartupError(description: "socket directory \(options.socketDirectory) does not exist")
        }
        let socketGroup = try options.apiSocketGroup.map(groupID)
        let openFiles = try setOpenFileLimit(options.openFilesLimit)
        Log.info("open-file limit \(openFiles)")
        let cipher: PayloadCipher?
        if let keyPath = options.keyPath {
            do {
                cipher = try KeyFile.load(path: keyPath)
            } catch {
                throw StartupError(description: error.description)
            }
            Log.info("encryption key loaded")
            var status = stat()
            if stat(keyPath, &status) == 0, status.st_mode & 0o006 != 0 {
                warn(
                    "encryption key file \(keyPath) is readable by every local user (mode \(String(status.st_mode & 0o777, radix: 8))): chmod o-rwx \(keyPath)"
                )
            }
        } else {
            cipher = nil
        }

        // Stop signals are read from a signalfd by the API loop, never handled asynchronously.
        // Blocked before any other thread starts so every thread inherits the mask.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let signalFD = signalfd(-1, &signals, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        guard signalFD >= 0 else { throw StartupError(description: "signalfd: \(String(cString: strerror(errno)))") }
        defer { close(signalFD) }

        let host = HostConfig(
            vtepAddress: options.vtepAddress,
            socketDirectory: options.socketDirectory,
            nicMTU: options.nicMTU,
            offloads: options.offloads
        )
        let reconciler = Reconciler(
            host: host,
            traceByDefault: options.packetTrace,
            traceDirectory: options.tracePath,
            processID: getpid()
        )
        let stateStore = options.stateFile.map { StateStore(path: $0) }
        var settings = Worker.Settings()
        settings.connectionCapacity = options.connectionCapacity
        let worker = Worker(settings: settings, host: host)
        let nicMTU = try guestMTU(fitting: attachUnderlay(options, to: worker) ?? options.nicMTU, options)
        if options.packetTrace {
            let path = "\(options.tracePath)/butterfly-\(getpid())-main.pcap"
            worker.setMainTrace(path: path)
            if worker.mainTrace == nil { throw StartupError(description: "cannot open the main trace \(path)") }
            Log.info("main trace: \(path)")
        }
        let runtime = DataplaneRuntime(
            worker: worker,
            nicMTU: nicMTU,
            tapSetsMAC: options.tapSetsMAC,
            vhostUserMTU: nicMTU ?? largestGuestMTU(options)
        )
        let controlPlane = ControlPlane(reconciler: reconciler, stateStore: stateStore, runtime: runtime)
        let service = APIService(controlPlane: controlPlane, cipher: cipher)

        // The worker runs before the state is restored: restoring publishes configurations
        // and waits for the worker to adopt removals.
        worker.start(cpu: options.graphCPUCore)
        defer {
            worker.stop()
            worker.join()
            // Every tap at once: one by one, their interfaces took ~16 ms each to go.
            runtime.shutdown()
        }
        if let stateStore {
            try restore(stateStore, into: service, recover: options.recoverState)
        }

        let context = ZMQContext()
        let server: APIServer
        let socketMode = options.apiSocketMode ?? (socketGroup == nil ? 0o600 : 0o660)
        let endpoint = APIEndpoint(options.endpoint)
        if options.apiSocketGroup != nil || options.apiSocketMode != nil {
            guard case .socketFile = endpoint.reach else {
                throw StartupError(
                    description: "--api-socket-group and --api-socket-mode need an ipc:// endpoint with a path"
                )
            }
        }
        do {
            server = try APIServer(
                endpoint: options.endpoint,
                service: service,
                context: context,
                socketMode: socketMode,
                socketGroup: socketGroup
            )
        } catch {
            throw StartupError(description: error.description)
        }
        Log.info("API listening on \(server.endpoint)")
        for warning in endpoint.exposureWarnings(hasKey: cipher != nil, socketMode: socketMode) { warn(warning) }
        let vhostUser = APIServer.BackgroundWork(descriptor: runtime.vhostUser.descriptor) {
            runtime.serviceVhostUser()
        }
        let reason = try server.run(stopDescriptor: signalFD, background: vhostUser)
        if reason == .stopDescriptorReadable {
            var info = signalfd_siginfo()
            _ = read(signalFD, &info, MemoryLayout<signalfd_siginfo>.size)
            Log.info("got signal \(info.ssi_signo), stopping")
        }
        Log.info("stopped")
    }

    /// The largest guest MTU the daemon supports: 9,000, the jumbo size clouds offer.
    public static let largestSupportedGuestMTU = 9000

    /// The largest guest MTU the data path carries: 9,000 (`largestSupportedGuestMTU`), as
    /// long as a frame fits the largest packet buffer (`PacketPool.maximumLargeFrame`,
    /// Ethernet header included) and, with an underlay, so does the VXLAN frame that carries
    /// it (the underlay port receives whole outer frames into one buffer). docs/JUMBO.md.
    static func largestGuestMTU(_ options: DaemonOptions) -> Int {
        var largest = PacketPool.maximumLargeFrame - 14
        if let vtep = options.vtepAddress, options.underlayInterface != nil {
            largest -= vtep.isIPv4 ? VXLAN.ipv4Overhead : VXLAN.ipv6Overhead
        }
        return min(largest, largestSupportedGuestMTU)
    }

    /// Never gives guests an MTU the daemon would drop frames of: an explicit `-m` above
    /// `largestGuestMTU` is refused; one derived from an underlay whose MTU allows more (a
    /// loopback of 65,536) is lowered to it.
    static func guestMTU(fitting mtu: Int?, _ options: DaemonOptions) throws -> Int? {
        let largest = largestGuestMTU(options)
        guard let mtu, mtu > largest else { return mtu }
        if options.nicMTU != nil {
            throw StartupError(
                description: "--nic-mtu \(mtu) is more than the \(largest) bytes a guest's IP packets may have "
                    + "(jumbo frames up to an MTU of \(largestSupportedGuestMTU) are carried)"
            )
        }
        Log.warning(
            "the underlay allows guests an MTU of \(mtu), more than the \(largest) the daemon carries: "
                + "guest NICs get MTU \(largest)"
        )
        return largest
    }

    /// Opens the underlay port and plugs VXLAN into the worker when the daemon has a VTEP
    /// address and an underlay interface; returns the guest MTU that fits the underlay (the
    /// `-m max` value) unless `-m` gave one.
    static func attachUnderlay(_ options: DaemonOptions, to worker: Worker) throws -> Int? {
        guard let vtep = options.vtepAddress else {
            Log.info("no VTEP address (-i): local switching only")
            return nil
        }
        guard let interface = options.underlayInterface else {
            Log.warning("VTEP \(vtep) given without --underlay-if: local switching only")
            return nil
        }
        let port: PacketSocketPort
        do throws(PortError) {
            port = try PacketSocketPort(interface: interface)
        } catch {
            throw StartupError(description: "underlay: \(error.description)")
        }
        var peers: [UnderlayAddress] = []
        for peer in options.vtepPeers {
            guard peer.isIPv4 == vtep.isIPv4 else {
                throw StartupError(description: "VTEP peer \(peer) is not of the VTEP address's family")
            }
            peers.append(underlayAddress(peer))
        }
        if let gateway = options.underlayGateway, gateway.isIPv4 != vtep.isIPv4 {
            throw StartupError(description: "underlay gateway \(gateway) is not of the VTEP address's family")
        }
        let settings = VXLANUnderlay.Settings(
            vtep: underlayAddress(vtep),
            prefixLength: options.vtepPrefixLength,
            gateway: options.underlayGateway.map { underlayAddress($0) },
            peers: peers
        )
        worker.underlay = VXLANUnderlay(port: port, localMAC: port.macAddress.value, settings: settings)
        worker.watchUnderlay(port.fileDescriptor)
        Log.info("underlay \(interface) (\(port.macAddress), MTU \(port.mtu)), VTEP \(vtep)")
        guard options.nicMTU == nil else { return nil }
        return port.mtu - (vtep.isIPv4 ? VXLAN.ipv4Overhead : VXLAN.ipv6Overhead)
    }

    static func underlayAddress(_ address: IPAddress) -> UnderlayAddress {
        switch address {
        case .v4(let value): .v4(value)
        case .v6(let high, let low): .v6(IPv6Address(high: high, low: low))
        }
    }

    /// Replays the state file and its journal through the API, as `butterfly request` would;
    /// any refusal means the files do not describe a valid configuration, and the daemon will
    /// not start. Then folds everything into a fresh snapshot. With `recover`, damaged files
    /// are set aside, every record that still checks is replayed, and refusals are only logged.
    static func restore(_ store: StateStore, into service: APIService, recover: Bool = false) throws {
        var messages: [Proto_Message]
        var damaged: [(file: String, bytes: [UInt8])] = []
        do {
            if recover {
                let recovered = try store.recover()
                damaged = recovered.damaged
                messages = recovered.messages
            } else {
                let loaded = try store.load()
                if let offset = loaded.tornTailOffset {
                    // At the default log level: an operator should know a write was cut short.
                    Log.error(
                        "state: journal \(store.journalPath): dropped a torn last record at byte \(offset) (a change that was never acknowledged)"
                    )
                }
                messages = loaded.messages
            }
        } catch {
            throw StartupError(description: error.description)
        }
        let control = service.controlPlane
        control.recordsChanges = false
        var refused = 0
        for (index, message) in messages.enumerated() {
            var quit = false
            let reply = service.handleV0(message.message0, quit: &quit)
            guard reply.response.status.status, !quit else {
                let reason = reply.response.status.error.description_p
                if recover {
                    refused += 1
                    Log.error("state: recovery: saved request \(index + 1) refused (\(reason)), skipped")
                    continue
                }
                throw StartupError(
                    description:
                        "state file \(store.path) is corrupt: saved request \(index + 1) refused: \(reason). "
                        + StateStore.recoveryAdvice
                )
            }
        }
        control.recordsChanges = true
        control.requestCounter = 0
        do {
            try store.compact(control.model)
            for (file, bytes) in damaged {
                let target = try store.setAside(file, bytes: bytes)
                Log.error("state: damaged file set aside as \(target)")
            }
        } catch {
            throw StartupError(description: error.description)
        }
        control.markDurable()
        Log.info(
            "restored \(control.model.nics.count) NICs and \(control.model.securityGroups.count) security groups from \(store.path)"
                + (recover ? " (recovery: \(refused) saved requests refused)" : "")
        )
    }

    /// The id of group `name` (or a number).
    static func groupID(_ name: String) throws -> gid_t {
        if let number = gid_t(name) { return number }
        guard let entry = getgrnam(name) else {
            throw StartupError(description: "API socket group '\(name)' does not exist (groupadd --system \(name))")
        }
        return entry.pointee.gr_gid
    }

    /// Sets the open-file limit to `wanted`, or by default to `defaultOpenFiles` (bounded by
    /// fs.nr_open) where the daemon may raise its hard limit (root), else to the hard limit;
    /// returns the soft limit set. Every TAP NIC, vhost-user NIC (two), API connection and trace
    /// costs a descriptor: distributions start daemons at 1024 (~1,000 NICs, or 1,000 idle
    /// connections locking every client out), and a login shell's hard limit may stop short of
    /// the NICs a host carries (20,000 here: 10,000 vhost-user NICs).
    static func setOpenFileLimit(_ wanted: Int?) throws -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            throw StartupError(description: "getrlimit(RLIMIT_NOFILE): \(String(cString: strerror(errno)))")
        }
        let hard = limit.rlim_max
        if wanted == nil, hard < defaultOpenFiles {
            // Above the hard limit needs privilege (CAP_SYS_RESOURCE); fs.nr_open bounds it.
            let target = min(defaultOpenFiles, maximumOpenFiles())
            var raised = rlimit(rlim_cur: target, rlim_max: target)
            if target > hard, setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return Int(target) }
        }
        let target = wanted.map { rlim_t($0) } ?? hard
        if target > limit.rlim_max { limit.rlim_max = target }
        limit.rlim_cur = target
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            throw StartupError(
                description: "cannot set the open-file limit to \(target): \(String(cString: strerror(errno)))"
            )
        }
        return Int(target)
    }

    /// The open-file limit a daemon started without `--open-files-limit` asks for (as the
    /// packaged unit's LimitNOFILE); it costs nothing until descriptors are opened.
    static let defaultOpenFiles: rlim_t = 1 << 20

    /// fs.nr_open, the kernel's bound on any process's open-file limit.
    static func maximumOpenFiles() -> rlim_t {
        guard let text = try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8),
            let value = rlim_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { return defaultOpenFiles }
        return value
    }

    /// A warning printed whatever the log level: it is about who can command the daemon.
    static func warn(_ message: String) {
        writeToStandardError("butterflyd: warning: \(message)\n")
        Log.syslogOnly(.warning, message)
    }

    static func fail(_ message: String) {
        writeToStandardError("butterflyd: \(message)\n")
        Log.syslogOnly(.error, message)
    }
}
