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

    public init(endpoint: String, service: APIService, context: ZMQContext) throws(ZMQError) {
        if endpoint.hasPrefix("ipc://"), cbutterfly_unix_socket_is_live(String(endpoint.dropFirst(6))) == 1 {
            throw ZMQError(operation: "cannot bind \(endpoint)", errno: EADDRINUSE)
        }
        socket = try ZMQSocket(context: context, kind: .reply)
        try socket.setMaximumMessageSize(Self.maximumRequestSize)
        try socket.bind(endpoint)
        self.endpoint = socket.lastEndpoint
        self.service = service
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
