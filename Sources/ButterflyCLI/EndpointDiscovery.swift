import ButterflyControl

#if canImport(Glibc)
    import Glibc
#endif

/// Where the CLI sends its requests when `-e` is not given, so that a host set up with the
/// packaged files (`dist/butterfly.conf`: the daemon's `ipc://` socket) needs no flag.
///
/// ```
///  -e/--endpoint URL  ─► BUTTERFLY_ENDPOINT  ─► config file `endpoint`  ─► tcp://127.0.0.1:9999
///                                               (BUTTERFLY_CONFIG, else /etc/butterfly/butterfly.conf;
///                                                a missing file is skipped)
/// ```
enum EndpointDiscovery {
    static let defaultEndpoint = "tcp://127.0.0.1:9999"
    static let defaultConfigFile = "/etc/butterfly/butterfly.conf"
    static let endpointVariable = "BUTTERFLY_ENDPOINT"
    static let configVariable = "BUTTERFLY_CONFIG"

    /// A file's text, `nil` when it does not exist; throws when it exists but cannot be read.
    typealias FileReader = (String) throws(CLIError) -> String?

    /// The endpoint to use, by precedence.
    static func endpoint(
        flag: String?,
        environment: [String: String],
        readFile: FileReader = readFile
    ) throws(CLIError) -> String {
        if let flag { return flag }
        if let value = environment[endpointVariable], !value.isEmpty { return value }
        let path = environment[configVariable].flatMap { $0.isEmpty ? nil : $0 } ?? defaultConfigFile
        guard let text = try readFile(path) else { return defaultEndpoint }
        let ini: IniFile
        do {
            ini = try IniFile(text: text)
        } catch {
            throw CLIError("configuration file \(path), \(error)")
        }
        for (section, keys) in ini.sections {
            guard section == "general" else {
                throw CLIError("configuration file \(path): unknown section [\(section)]")
            }
            for key in keys.keys where key != "endpoint" {
                throw CLIError("configuration file \(path): unknown key '\(key)'")
            }
        }
        guard let value = ini.sections["general"]?["endpoint"] else { return defaultEndpoint }
        guard !value.isEmpty else { throw CLIError("configuration file \(path): empty endpoint") }
        return value
    }

    static func readFile(_ path: String) throws(CLIError) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw CLIError("cannot read configuration file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw CLIError("cannot read configuration file \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += buffer[0..<count]
            // A configuration file is a few lines; do not read a device forever.
            guard bytes.count <= 1 << 16 else { throw CLIError("configuration file \(path) is too large") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Why the CLI cannot connect to an `ipc://` socket file, checked before sending: libzmq
    /// connects in the background and would only time out. `nil` when it looks usable.
    static func ipcProblem(_ endpoint: String) -> String? {
        guard case .socketFile(let path) = APIEndpoint(endpoint).reach else { return nil }
        // Connecting to a Unix socket needs write permission on its file.
        guard access(path, W_OK) != 0 else { return nil }
        let reason = String(cString: strerror(errno))
        return errno == ENOENT
            ? "cannot connect to \(endpoint): \(reason) (is butterflyd running?)"
            : "cannot connect to \(endpoint): \(reason)"
    }
}
