import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The ZeroMQ REP loop that serves `APIService`: one request in, one reply out, no delay.
///
/// It sleeps in `zmq_poll` on the socket and on a stop descriptor (the daemon's signalfd),
/// so it costs nothing while idle and stops at once on SIGINT/SIGTERM.
public final class APIServer {
    /// Requests larger than this are refused by libzmq before they cost memory.
    public static let maximumRequestSize: Int64 = 64 << 20

    private let socket: ZMQSocket
    private let service: APIService
    public let endpoint: String

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
        let socketFile: String?
        if case .socketFile(let path) = APIEndpoint(endpoint).reach { socketFile = path } else { socketFile = nil }
        if let socketFile, cbutterfly_unix_socket_is_live(socketFile) == 1 {
            throw ZMQError(operation: "cannot bind \(endpoint)", errno: EADDRINUSE)
        }
        socket = try ZMQSocket(context: context, kind: .reply)
        try socket.setMaximumMessageSize(Self.maximumRequestSize)
        // A peer that connects and never completes the ZMTP greeting holds a descriptor; let
        // libzmq drop it after 10 s (its default is 30 s).
        try socket.setOption(ZMQRawOption.handshakeInterval, 10_000)
        if let socketFile {
            let previous = umask(0o177)
            defer { umask(previous) }
            try socket.bind(endpoint)
            try Self.setPermissions(of: socketFile, mode: socketMode, group: socketGroup)
        } else {
            try socket.bind(endpoint)
        }
        self.endpoint = socket.lastEndpoint
        self.service = service
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

    /// Serves until `app_quit` or until `stopDescriptor` becomes readable.
    public func run(stopDescriptor: Int32) throws(ZMQError) -> StopReason {
        while true {
            switch try socket.wait(orFileDescriptor: stopDescriptor, timeoutMilliseconds: -1) {
            case .fileDescriptor:
                return .stopDescriptorReadable
            case .timeout:
                continue
            case .socket:
                guard let frames = try socket.receive() else { continue }
                // The API is one frame per request; anything else cannot be a Butterfly request.
                let request = frames.count == 1 ? frames[0] : []
                let outcome =
                    frames.count == 1
                    ? service.handle(request)
                    : APIService.Outcome(reply: APIService.bareError(.parseError), quit: false)
                try socket.send(outcome.reply)
                if outcome.quit { return .quitRequested }
            }
        }
    }
}
