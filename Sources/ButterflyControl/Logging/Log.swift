import CButterflyLinux
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Control-plane logging to syslog (ident `butterfly`) and stderr, with a level that the API
/// (`app_config`) changes at runtime. The data plane never logs per packet; it counts.
public enum Log {
    public enum Level: UInt8, Sendable, CaseIterable, Comparable {
        case none = 0, error, warning, info, debug

        /// Parses the API's and the command line's names: none, error, warning, info, debug.
        public init?(name: String) {
            guard let level = Self.allCases.first(where: { $0.name == name }) else { return nil }
            self = level
        }

        public var name: String {
            switch self {
            case .none: "none"
            case .error: "error"
            case .warning: "warning"
            case .info: "info"
            case .debug: "debug"
            }
        }

        var syslogPriority: Int32 {
            switch self {
            case .none, .debug: LOG_DEBUG
            case .error: LOG_ERR
            case .warning: LOG_WARNING
            case .info: LOG_INFO
            }
        }

        public static func < (lhs: Level, rhs: Level) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    private static let currentLevel = Atomic<UInt8>(Level.error.rawValue)
    private static let syslogEnabled = Atomic<Bool>(false)

    public static var level: Level {
        get { Level(rawValue: currentLevel.load(ordering: .relaxed)) ?? .error }
        set { currentLevel.store(newValue.rawValue, ordering: .relaxed) }
    }

    /// Starts sending messages to syslog as well as stderr.
    public static func enableSyslog() {
        openlog("butterfly", LOG_PID | LOG_NDELAY, LOG_DAEMON)
        syslogEnabled.store(true, ordering: .relaxed)
    }

    public static func error(_ message: @autoclosure () -> String) { emit(.error, message) }
    public static func warning(_ message: @autoclosure () -> String) { emit(.warning, message) }
    public static func info(_ message: @autoclosure () -> String) { emit(.info, message) }
    public static func debug(_ message: @autoclosure () -> String) { emit(.debug, message) }

    /// Sends a message to syslog only (when enabled); for text already printed to stderr.
    public static func syslogOnly(_ messageLevel: Level, _ text: String) {
        guard syslogEnabled.load(ordering: .relaxed) else { return }
        withVaList([text]) { vsyslog(messageLevel.syslogPriority, "%s", $0) }
    }

    private static func emit(_ messageLevel: Level, _ message: () -> String) {
        guard messageLevel != .none, messageLevel <= level else { return }
        let text = message()
        if syslogEnabled.load(ordering: .relaxed) {
            withVaList([text]) { vsyslog(messageLevel.syslogPriority, "%s", $0) }
        }
        let line = "butterflyd[\(getpid())] \(messageLevel.name): \(text)\n"
        writeToStandardError(line)
    }
}

/// Writes a whole line to file descriptor 2.
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { _ = cbutterfly_write_all(2, $0.baseAddress, $0.count) }
}
