import CZeroMQ

#if canImport(Glibc)
    import Glibc
#endif

/// A libzmq failure: the operation, errno and libzmq's text for it.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32

    public var description: String { "\(operation): \(String(cString: zmq_strerror(errno)))" }

    /// Captures `zmq_errno()` right after a failed call.
    static func last(_ operation: String) -> ZMQError { ZMQError(operation: operation, errno: zmq_errno()) }
}

/// A ZeroMQ context. One per process side (server or client); sockets keep it alive.
public final class ZMQContext: @unchecked Sendable {
    // Safe: libzmq contexts are thread-safe.
    let handle: UnsafeMutableRawPointer

    public init() {
        guard let handle = zmq_ctx_new() else { fatalError("zmq_ctx_new failed: out of memory") }
        self.handle = handle
    }

    deinit { zmq_ctx_term(handle) }
}

/// A ZeroMQ socket (REQ or REP for the Butterfly API). Not thread-safe: one owner thread.
///
/// Calls are thin and synchronous; `EINTR` is retried, timeouts come back as `nil`.
public final class ZMQSocket {
    public enum Kind {
        case request, reply
        /// The receiving end of a socket monitor (`monitor(into:events:)`).
        case pair

        var rawValue: Int32 {
            switch self {
            case .request: ZMQ_REQ
            case .reply: ZMQ_REP
            case .pair: ZMQ_PAIR
            }
        }
    }

    private let context: ZMQContext
    private var handle: UnsafeMutableRawPointer?

    public init(context: ZMQContext, kind: Kind) throws(ZMQError) {
        self.context = context
        guard let handle = zmq_socket(context.handle, kind.rawValue) else { throw .last("zmq_socket") }
        self.handle = handle
        // Pending replies must not keep a stopping process alive.
        try setOption(ZMQ_LINGER, 0)
    }

    deinit { close() }

    public func close() {
        if let handle { zmq_close(handle) }
        handle = nil
    }

    fileprivate var socket: UnsafeMutableRawPointer {
        guard let handle else { preconditionFailure("ZMQSocket used after close()") }
        return handle
    }

    public func setOption(_ option: Int32, _ value: Int32) throws(ZMQError) {
        var value = value
        guard zmq_setsockopt(socket, option, &value, MemoryLayout<Int32>.size) == 0 else {
            throw .last("zmq_setsockopt(\(option))")
        }
    }

    /// Largest message accepted from a peer; larger ones are dropped by libzmq, and the peer
    /// disconnected, before they cost us memory.
    public func setMaximumMessageSize(_ bytes: Int64) throws(ZMQError) {
        var value = bytes
        guard zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &value, MemoryLayout<Int64>.size) == 0 else {
            throw .last("zmq_setsockopt(ZMQ_MAXMSGSIZE)")
        }
    }

    public func bind(_ endpoint: String) throws(ZMQError) {
        guard zmq_bind(socket, endpoint) == 0 else { throw .last("cannot bind \(endpoint)") }
    }

    public func unbind(_ endpoint: String) throws(ZMQError) {
        guard zmq_unbind(socket, endpoint) == 0 else { throw .last("cannot unbind \(endpoint)") }
    }

    /// Publishes the socket's `events` (`ZMQ_EVENT_…`) on `inprocAddress`, for a `.pair` socket
    /// of the same context to read with `receiveMonitorEvent`.
    public func monitor(into inprocAddress: String, events: Int32) throws(ZMQError) {
        guard zmq_socket_monitor(socket, inprocAddress, events) == 0 else { throw .last("zmq_socket_monitor") }
    }

    /// One monitor event, `nil` when none is queued: its `ZMQ_EVENT_…` number and value
    /// (an errno for failures, a descriptor for `ACCEPTED`).
    public func receiveMonitorEvent() throws(ZMQError) -> (event: UInt16, value: UInt32)? {
        guard let frames = try receiveFrames(waiting: false) else { return nil }
        // zmq_socket_monitor(3), version 1: frame 1 = event (uint16) ‖ value (uint32), host order.
        guard let first = frames.first, first.count >= 6 else { return nil }
        let event = UInt16(first[0]) | UInt16(first[1]) << 8
        let value = UInt32(first[2]) | UInt32(first[3]) << 8 | UInt32(first[4]) << 16 | UInt32(first[5]) << 24
        return (event, value)
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        guard zmq_connect(socket, endpoint) == 0 else { throw .last("cannot connect to \(endpoint)") }
    }

    /// The endpoint actually bound (resolves `tcp://127.0.0.1:*` to the chosen port).
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        guard zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public func send(_ bytes: [UInt8]) throws(ZMQError) {
        while true {
            let sent = bytes.withUnsafeBytes { zmq_send(socket, $0.baseAddress, $0.count, 0) }
            if sent >= 0 { return }
            if zmq_errno() == EINTR { continue }
            throw .last("zmq_send")
        }
    }

    /// Receives one message, gathering every frame of a multi-part message. Returns `nil` on
    /// timeout (`ZMQ_RCVTIMEO`).
    public func receive() throws(ZMQError) -> [[UInt8]]? { try receiveFrames(waiting: true) }

    /// Every frame of one message; `nil` when none came (timeout, or none queued when not
    /// `waiting` for the first frame; later frames of a message are always waited for).
    private func receiveFrames(waiting: Bool) throws(ZMQError) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var message = zmq_msg_t()
        zmq_msg_init(&message)
        defer { zmq_msg_close(&message) }
        repeat {
            var received: Int32
            repeat {
                received = zmq_msg_recv(&message, socket, frames.isEmpty && !waiting ? ZMQ_DONTWAIT : 0)
            } while received < 0 && zmq_errno() == EINTR
            if received < 0 {
                if zmq_errno() == EAGAIN && frames.isEmpty { return nil }
                throw .last("zmq_msg_recv")
            }
            let size = zmq_msg_size(&message)
            let data = zmq_msg_data(&message)
            frames.append(size == 0 ? [] : Array(UnsafeRawBufferPointer(start: data, count: size)))
        } while zmq_msg_more(&message) != 0
        return frames
    }

    /// Waits until a message can be received or `fd` becomes readable. Returns which.
    public enum Readiness { case socket, fileDescriptor, timeout }

    public func wait(orFileDescriptor fd: Int32, timeoutMilliseconds: Int) throws(ZMQError) -> Readiness {
        var items = [
            zmq_pollitem_t(socket: socket, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
            zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0),
        ]
        while true {
            let ready = zmq_poll(&items, 2, timeoutMilliseconds)
            if ready < 0 {
                if zmq_errno() == EINTR { continue }
                throw .last("zmq_poll")
            }
            if items[1].revents & Int16(ZMQ_POLLIN) != 0 { return .fileDescriptor }
            if items[0].revents & Int16(ZMQ_POLLIN) != 0 { return .socket }
            return .timeout
        }
    }
}

extension ZMQSocket {
    /// Waits until one of `sockets` can be received from or `fd` becomes readable; returns
    /// which sockets are readable and whether `fd` is (all `false` on timeout).
    public static func poll(
        _ sockets: [ZMQSocket],
        orFileDescriptor fd: Int32,
        timeoutMilliseconds: Int
    ) throws(ZMQError) -> (sockets: [Bool], fileDescriptor: Bool) {
        let ready = try poll(sockets, orFileDescriptors: [fd], timeoutMilliseconds: timeoutMilliseconds)
        return (ready.sockets, ready.fileDescriptors[0])
    }

    /// Waits until one of `sockets` or `fds` is readable (or the timeout, −1: none).
    public static func poll(
        _ sockets: [ZMQSocket],
        orFileDescriptors fds: [Int32],
        timeoutMilliseconds: Int
    ) throws(ZMQError) -> (sockets: [Bool], fileDescriptors: [Bool]) {
        var items = sockets.map { zmq_pollitem_t(socket: $0.socket, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        for fd in fds { items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0)) }
        while true {
            if zmq_poll(&items, Int32(items.count), timeoutMilliseconds) >= 0 { break }
            if zmq_errno() == EINTR { continue }
            throw .last("zmq_poll")
        }
        let readable = items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
        return (Array(readable.prefix(sockets.count)), Array(readable.dropFirst(sockets.count)))
    }
}

/// libzmq option numbers for callers that do not import CZeroMQ.
public enum ZMQRawOption {
    public static let receiveTimeout = ZMQ_RCVTIMEO
    public static let sendTimeout = ZMQ_SNDTIMEO
}
