#if canImport(Glibc)
    import Glibc
#endif

/// A port could not be set up: what it was for, which operation failed, and the errno the
/// kernel returned, with a hint when the errno has a usual cause.
///
/// Setup only: once a port runs, the data plane never throws; it counts drops instead.
public struct PortError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What the port was being attached to, as the user named it (`interface "eth1"`).
    public let subject: String
    /// The call that failed, as a reader of strace would write it (`setsockopt(PACKET_RX_RING)`).
    public let operation: String
    /// The C `errno` value (for example `ENODEV` when an interface does not exist).
    public let errno: Int32
    /// What the user can do about it, when the errno says something specific.
    public let hint: String?

    public init(subject: String, operation: String, errno: Int32, hint: String? = nil) {
        self.subject = subject
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        var text = "\(subject): \(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        if let hint { text += "; \(hint)" }
        return text
    }
}
