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
        let cipher: PayloadCipher?
        if let keyPath = options.keyPath {
            do {
                cipher = try KeyFile.load(path: keyPath)
            } catch {
                throw StartupError(description: error.description)
            }
            Log.info("encryption key loaded")
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
        let nicMTU = try attachUnderlay(options, to: worker) ?? options.nicMTU
        if options.packetTrace {
            let path = "\(options.tracePath)/butterfly-\(getpid())-main.pcap"
            worker.setMainTrace(path: path)
            if worker.mainTrace == nil { throw StartupError(description: "cannot open the main trace \(path)") }
            Log.info("main trace: \(path)")
        }
        let runtime = DataplaneRuntime(worker: worker, nicMTU: nicMTU)
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
            try restore(stateStore, into: service)
        }

        let context = ZMQContext()
        let server: APIServer
        do {
            server = try APIServer(endpoint: options.endpoint, service: service, context: context)
        } catch {
            throw StartupError(description: error.description)
        }
        Log.info("API listening on \(server.endpoint)")
        let reason = try server.run(stopDescriptor: signalFD)
        if reason == .stopDescriptorReadable {
            var info = signalfd_siginfo()
            _ = read(signalFD, &info, MemoryLayout<signalfd_siginfo>.size)
            Log.info("got signal \(info.ssi_signo), stopping")
        }
        Log.info("stopped")
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
    /// not start. Then folds everything into a fresh snapshot.
    static func restore(_ store: StateStore, into service: APIService) throws {
        let saved: (messages: [Proto_Message], tornTail: Bool)
        do {
            saved = try store.load()
        } catch {
            throw StartupError(description: error.description)
        }
        if saved.tornTail {
            Log.warning("journal \(store.journalPath): dropped a torn last record (a change never acknowledged)")
        }
        let control = service.controlPlane
        control.recordsChanges = false
        for (index, message) in saved.messages.enumerated() {
            var quit = false
            let reply = service.handleV0(message.message0, quit: &quit)
            guard reply.response.status.status, !quit else {
                throw StartupError(
                    description:
                        "state file \(store.path) is corrupt: saved request \(index + 1) refused: \(reply.response.status.error.description_p)"
                )
            }
        }
        control.recordsChanges = true
        control.requestCounter = 0
        do {
            try store.compact(control.model)
        } catch {
            throw StartupError(description: error.description)
        }
        Log.info(
            "restored \(control.model.nics.count) NICs and \(control.model.securityGroups.count) security groups from \(store.path)"
        )
    }

    static func fail(_ message: String) {
        writeToStandardError("butterflyd: \(message)\n")
        Log.syslogOnly(.error, message)
    }
}
