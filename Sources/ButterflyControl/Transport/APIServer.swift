import ButterflyDataplane
import CButterflyLinux
import CZeroMQ

#if canImport(Glibc)
    import Glibc
#endif

/// The ZeroMQ REP loop that serves `APIService`: one request in, one reply out, no delay.
///
/// It sleeps in `zmq_poll` on the socket and on a stop descriptor (the daemon's signalfd),
/// so it costs nothing while idle and stops at once on SIGINT/SIGTERM.
///
/// When the process runs out of descriptors, libzmq's listener cannot accept: the pending
/// connection keeps the listening socket readable and libzmq's I/O thread retries `accept`
/// in a busy loop, while every client waits behind the connections that hold the
/// descriptors. The server watches for that (a socket monitor's `ACCEPT_FAILED` with
/// `EMFILE`/`ENFILE`) and stops listening for a pause that doubles while it recurs:
///
/// ```
///  listening ──accept failed: EMFILE──► unbind (drops every API connection, frees their
///      ▲                                descriptors, ends the busy loop), log
///      └──────── rebind after 0.2 s, 0.4 s … 5 s ◄─┘
/// ```
/// Clients (libzmq reconnects every 100 ms) get through once the server listens again.
public final class APIServer {
    /// Requests larger than this are refused by libzmq before they cost memory.
    public static let maximumRequestSize: Int64 = 64 << 20
    static let firstPauseMilliseconds = 200
    static let longestPauseMilliseconds = 5_000

    private let socket: ZMQSocket
    private let monitor: ZMQSocket
    private let service: APIService
    public private(set) var endpoint: String
    private let socketFile: String?
    private let socketMode: UInt32
    private let socketGroup: gid_t?
    /// While descriptors ran out: when to listen again.
    private var resumeAt: Int64?
    private var nextPause = APIServer.firstPauseMilliseconds
    private var lastExhaustion: Int64?
    /// How many times the server stopped listening for lack of descriptors.
    public private(set) var exhaustionPauses = 0

    /// Binds `endpoint`. An `ipc://` socket file is created private (umask 0177 around the
    /// bind: libzmq creates it honouring the umask), then given `socketGroup` and `socketMode`,
    /// so no one else can connect in between.
    public init(
        endpoint: String,
        service: APIService,
        context: ZMQContext,
        socketMode: UInt32 = 0o600,
        socketGroup: gid_t? = nil
    ) throws(ZMQError) {
        if case .socketFile(let path) = APIEndpoint(endpoint).reach { socketFile = path } else { socketFile = nil }
        if let socketFile, cbutterfly_unix_socket_is_live(socketFile) == 1 {
            throw ZMQError(operation: "cannot bind \(endpoint)", errno: EADDRINUSE)
        }
        self.socketMode = socketMode
        self.socketGroup = socketGroup
        self.service = service
        socket = try ZMQSocket(context: context, kind: .reply)
        try socket.setMaximumMessageSize(Self.maximumRequestSize)
        // A peer that connects and never completes the ZMTP greeting holds a descriptor; let
        // libzmq drop it after 10 s (its default is 30 s).
        try socket.setOption(ZMQ_HANDSHAKE_IVL, 10_000)
        let monitorAddress = "inproc://butterfly-api-monitor-\(UInt(bitPattern: ObjectIdentifier(socket).hashValue))"
        try socket.monitor(into: monitorAddress, events: ZMQ_EVENT_ACCEPT_FAILED)
        monitor = try ZMQSocket(context: context, kind: .pair)
        try monitor.connect(monitorAddress)
        self.endpoint = endpoint
        try listen()
        // Rebinding after a pause must reuse the port a `tcp://…:*` endpoint was given.
        self.endpoint = socket.lastEndpoint
    }

    private func listen() throws(ZMQError) {
        guard let socketFile else { return try socket.bind(endpoint) }
        let previous = umask(0o177)
        defer { umask(previous) }
        try socket.bind(endpoint)
        try Self.setPermissions(of: socketFile, mode: socketMode, group: socketGroup)
    }

    /// Gives the socket file just bound its group and mode, never following a symbolic link
    /// swapped in meanwhile (`lchown`, `fchmodat(AT_SYMLINK_NOFOLLOW)`, which fails on a link).
    static func setPermissions(of path: String, mode: UInt32, group: gid_t?) throws(ZMQError) {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            throw ZMQError(operation: "cannot find the API socket \(path)", errno: errno)
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw ZMQError(operation: "API socket \(path) is not a socket", errno: EEXIST)
        }
        if let group, lchown(path, uid_t.max, group) != 0 {
            throw ZMQError(operation: "cannot give the API socket \(path) group \(group)", errno: errno)
        }
        guard fchmodat(AT_FDCWD, path, mode_t(mode), AT_SYMLINK_NOFOLLOW) == 0 else {
            throw ZMQError(operation: "cannot set the mode of the API socket \(path)", errno: errno)
        }
    }

    public enum StopReason: Equatable {
        case quitRequested
        case stopDescriptorReadable
    }

    /// Other work of the API thread, served between requests: a descriptor to wait on beside
    /// the API socket, and a service call that returns when it is next due by time (seconds
    /// of CLOCK_MONOTONIC). The vhost-user NICs' control sockets live here.
    public struct BackgroundWork {
        public var descriptor: Int32
        public var service: () -> Double?
        public init(descriptor: Int32, service: @escaping () -> Double?) {
            self.descriptor = descriptor
            self.service = service
        }
    }

    /// Serves until `app_quit` or until `stopDescriptor` becomes readable.
    public func run(stopDescriptor: Int32, background: BackgroundWork? = nil) throws(ZMQError) -> StopReason {
        var backgroundDue = background?.service()
        while true {
            var deadline = resumeAt
            if let backgroundDue {
                let due = Int64((backgroundDue * 1000).rounded(.up))
                deadline = min(deadline ?? due, due)
            }
            let timeout = deadline.map { Int(max(0, $0 - MonotonicClock.milliseconds())) } ?? -1
            let ready = try ZMQSocket.poll(
                [socket, monitor],
                orFileDescriptors: [stopDescriptor] + (background.map { [$0.descriptor] } ?? []),
                timeoutMilliseconds: timeout
            )
            if ready.fileDescriptors[0] { return .stopDescriptorReadable }
            if let background,
                ready.fileDescriptors[1]
                    || backgroundDue.map({ Int64($0 * 1000) <= MonotonicClock.milliseconds() }) == true
            {
                backgroundDue = background.service()
            }
            if ready.sockets[1] { try readMonitor() }
            if let resumeAt, MonotonicClock.milliseconds() >= resumeAt { resume() }
            guard ready.sockets[0], let frames = try socket.receive() else { continue }
            // The API is one frame per request; anything else cannot be a Butterfly request.
            let outcome =
                frames.count == 1
                ? service.handle(frames[0])
                : APIService.Outcome(reply: APIService.bareError(.parseError), quit: false)
            try socket.send(outcome.reply)
            if outcome.quit { return .quitRequested }
            // A request may have added work (a client-mode NIC that must connect by itself).
            if let background { backgroundDue = background.service() }
        }
    }

    /// Drains the monitor; stops listening when an accept failed for lack of descriptors.
    private func readMonitor() throws(ZMQError) {
        var exhausted = false
        while let event = try monitor.receiveMonitorEvent() {
            let error = Int32(bitPattern: event.value)
            if Int32(event.event) == ZMQ_EVENT_ACCEPT_FAILED && (error == EMFILE || error == ENFILE) {
                exhausted = true
            }
        }
        guard exhausted, resumeAt == nil else { return }
        let now = MonotonicClock.milliseconds()
        // A first exhaustion in a minute starts again from the shortest pause.
        if let lastExhaustion, now - lastExhaustion > 60_000 { nextPause = Self.firstPauseMilliseconds }
        lastExhaustion = now
        exhaustionPauses += 1
        do {
            try socket.unbind(endpoint)
        } catch {
            Log.error("API: out of file descriptors, and \(error.description)")
        }
        Log.error(
            "API: out of file descriptors accepting a connection: every API connection dropped, listening again in \(nextPause) ms (raise --open-files-limit or LimitNOFILE)"
        )
        resumeAt = now + Int64(nextPause)
        nextPause = min(nextPause * 2, Self.longestPauseMilliseconds)
    }

    private func resume() {
        do {
            try listen()
            resumeAt = nil
            Log.info("API listening again on \(endpoint)")
        } catch {
            Log.error("API: cannot listen again on \(endpoint): \(error.description); next try in \(nextPause) ms")
            resumeAt = MonotonicClock.milliseconds() + Int64(nextPause)
        }
    }

}
