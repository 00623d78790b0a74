import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// The control socket of one vhost-user NIC, in either mode (BUTTERFLY-COMPAT.md §7):
///
/// - **server** (VHOST_USER_SERVER, the default): the daemon listens on
///   `<socket-dir>/qemu-vhost-<nic-id>`, mode 0600, and serves one front-end at a time; when
///   it goes (VM stopped, rebooted, QEMU restarted) the next one is accepted.
/// - **client** (VHOST_USER_CLIENT): QEMU listens there and the daemon connects, and connects
///   again after a loss, backing off from 100 ms to 5 s between attempts, so a daemon restart
///   never needs the VM restarted.
///
/// Non-blocking throughout: the owner polls `pollDescriptor` and calls `service(now:)`.
public final class VhostUserEndpoint {
    public enum Mode: Sendable { case server, client }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// Something that is not a socket (or a socket another process serves) is at the path.
        case pathTaken(String)
        case system(String)

        public var description: String {
            switch self {
            case .pathTaken(let what), .system(let what): what
            }
        }
    }

    public let path: String
    public let mode: Mode
    /// The listening socket (server mode), -1 otherwise.
    public private(set) var listener: Int32 = -1
    /// The connected front-end, -1 when none.
    public private(set) var connection: Int32 = -1
    /// Client mode: when to try connecting next (monotonic seconds), and the current backoff.
    public private(set) var nextAttempt: Double = 0
    private var backoff: Double = 0.1
    private var socketIdentity: (device: UInt64, inode: UInt64)?

    public static let minimumBackoff = 0.1
    public static let maximumBackoff = 5.0

    public init(path: String, mode: Mode) throws(Failure) {
        self.path = path
        self.mode = mode
        if mode == .server { try listen() }
    }

    deinit {
        if connection >= 0 { close(connection) }
        if listener >= 0 {
            close(listener)
            // Remove the socket file only if it is still the one we created.
            if let socketIdentity, let current = Self.identity(path), current == socketIdentity { unlink(path) }
        }
    }

    /// What to poll: the listener while waiting for a front-end, else the connection (client
    /// mode between attempts: nothing, -1).
    public var pollDescriptor: Int32 { connection >= 0 ? connection : listener }

    private static func identity(_ path: String) -> (device: UInt64, inode: UInt64)? {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return (UInt64(status.st_dev), UInt64(status.st_ino))
    }

    private func listen() throws(Failure) {
        var status = stat()
        if lstat(path, &status) == 0 {
            // A stale socket of an earlier daemon is replaced; anything else is left alone.
            guard status.st_mode & S_IFMT == S_IFSOCK else {
                throw .pathTaken("\(path) exists and is not a socket")
            }
            guard cbutterfly_unix_socket_is_live(path) == 0 else {
                throw .pathTaken("\(path) is served by another process")
            }
            unlink(path)
        }
        let fd = cbutterfly_unix_listen(path, 0o600)
        guard fd >= 0 else { throw .system("cannot listen on \(path): \(String(cString: strerror(errno)))") }
        listener = fd
        socketIdentity = Self.identity(path)
    }

    /// Accepts a waiting front-end (server) or makes a due connection attempt (client).
    /// Returns true when a new connection was established.
    public func service(now: Double) -> Bool {
        switch mode {
        case .server:
            var accepted = false
            while true {
                let fd = cbutterfly_unix_accept(listener)
                guard fd >= 0 else { break }
                if connection >= 0 {
                    close(fd)  // one front-end at a time: a second one is turned away
                } else {
                    connection = fd
                    accepted = true
                }
            }
            return accepted
        case .client:
            guard connection < 0, now >= nextAttempt else { return false }
            let fd = cbutterfly_unix_connect(path)
            guard fd >= 0 else {
                nextAttempt = now + backoff
                backoff = min(backoff * 2, Self.maximumBackoff)
                return false
            }
            connection = fd
            backoff = Self.minimumBackoff
            return true
        }
    }

    /// Drops the current front-end (it closed, or broke the protocol). Server: the next one is
    /// accepted; client: reconnect from `now` on.
    public func disconnect(now: Double) {
        if connection >= 0 { close(connection) }
        connection = -1
        if mode == .client {
            nextAttempt = now + backoff
            backoff = min(backoff * 2, Self.maximumBackoff)
        }
    }
}
