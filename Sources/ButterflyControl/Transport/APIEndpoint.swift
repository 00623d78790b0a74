#if canImport(Glibc)
    import Glibc
#endif

/// What an API endpoint URL says about who can reach it, for the warnings at start and for
/// the permissions of an `ipc://` socket file.
///
/// ```
///  tcp://127.0.0.1:9999, tcp://[::1]:…, tcp://localhost:…  every local user
///  tcp://<anything else>, ws://…                            the network (and every local user)
///  ipc:///run/butterfly/api.sock                            whoever may write the socket file
///  ipc://@name (abstract)                                    every local user (no file, no permissions)
///  inproc://…                                                this process only
/// ```
public struct APIEndpoint: Equatable, Sendable {
    public let url: String

    public init(_ url: String) { self.url = url }

    /// Who can connect.
    public enum Reach: Equatable, Sendable {
        case network
        case everyLocalUser
        /// An `ipc://` socket file: its permissions decide.
        case socketFile(path: String)
        case thisProcess
    }

    public var reach: Reach {
        guard let separator = url.range(of: "://") else { return .network }
        let scheme = url[..<separator.lowerBound].lowercased()
        let rest = String(url[separator.upperBound...])
        switch scheme {
        case "ipc":
            return rest.hasPrefix("@") ? .everyLocalUser : .socketFile(path: rest)
        case "inproc":
            return .thisProcess
        case "tcp", "ws", "wss":
            return Self.isLoopback(host: Self.host(of: rest)) ? .everyLocalUser : .network
        default:
            return .network
        }
    }

    /// The host part of `host:port` or `[v6]:port` (a ws path after the port is ignored).
    static func host(of authority: String) -> String {
        let hostAndPort = authority.prefix { $0 != "/" }
        if hostAndPort.hasPrefix("["), let close = hostAndPort.firstIndex(of: "]") {
            return String(hostAndPort[hostAndPort.index(after: hostAndPort.startIndex)..<close])
        }
        guard let colon = hostAndPort.lastIndex(of: ":") else { return String(hostAndPort) }
        return String(hostAndPort[..<colon])
    }

    static func isLoopback(host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        var address = in_addr()
        // 127.0.0.0/8
        return inet_pton(AF_INET, host, &address) == 1 && UInt32(bigEndian: address.s_addr) >> 24 == 127
    }

    /// The warnings a daemon serving this endpoint should print at start: who, other than
    /// root and the socket's group, could change the configuration or stop the daemon.
    /// `socketMode` is the mode given to an `ipc://` socket file.
    public func exposureWarnings(hasKey: Bool, socketMode: UInt32) -> [String] {
        let advice = "use an ipc:// endpoint with --api-socket-group (docs/OPERATIONS.md, \"Access\") or a key (-k)"
        switch reach {
        case .network:
            guard !hasKey else { return [] }
            return [
                "API endpoint \(url) is reachable from the network and no key is set: anyone who can reach it can change the configuration or stop the daemon; \(advice)"
            ]
        case .everyLocalUser:
            guard !hasKey else { return [] }
            return [
                "API endpoint \(url) accepts requests from every local user and no key is set: any local account can change the configuration or stop the daemon; \(advice)"
            ]
        case .socketFile(let path):
            guard !hasKey, socketMode & 0o002 != 0 else { return [] }
            return [
                "API socket \(path) is writable by every local user (mode \(String(socketMode, radix: 8))) and no key is set: any local account can change the configuration or stop the daemon"
            ]
        case .thisProcess:
            return []
        }
    }
}
