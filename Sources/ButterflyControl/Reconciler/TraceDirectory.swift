#if canImport(Glibc)
    import Glibc
#endif

/// The one directory where the daemon writes pcap traces, and the rule that keeps paths
/// arriving in API requests (`packet_trace_path`) inside it.
///
/// The daemon runs as root and a trace is opened with `O_TRUNC`, so a path taken as given
/// would let any API client truncate and overwrite any file of the host. A requested path is
/// accepted in two spellings only, and always stored as the second:
///
/// ```
///  "vm1.pcap"                      a file name (no '/')            ─┐
///  "<directory>/vm1.pcap"          a file directly in the directory ─┴─► "<directory>/vm1.pcap"
/// ```
///
/// Anything else is refused: other absolute paths, subdirectories, `.` and `..` components,
/// names longer than `NAME_MAX`, and a name that already exists as something other than a
/// regular file of the daemon's own with a single link (a planted symbolic link, FIFO, hard
/// link or another user's file). That last check is made again, race-free, when the worker
/// opens the file (`PcapWriter`: `O_NOFOLLOW`, `O_EXCL`, `fstat`).
public struct TraceDirectory: Equatable, Sendable {
    /// The directory, without trailing or repeated slashes.
    public let path: String

    public init(_ path: String) {
        self.path = Self.collapsingSlashes(path)
    }

    /// A requested path refused, with the reason for the API's `detail`.
    public struct Refusal: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// Where a file named `name` in the directory lives.
    public func file(named name: String) -> String {
        path == "/" ? "/" + name : path + "/" + name
    }

    /// The absolute path of the trace file `requested` names, or why it may not be used.
    public func confine(_ requested: String) throws(Refusal) -> String {
        let allowed = "a packet trace path must be a file name, or a file directly in the trace directory \(path)"
        guard !requested.isEmpty, !requested.utf8.contains(0) else {
            throw Refusal(description: "\(allowed); it is empty or holds a NUL byte")
        }
        let name: String
        if requested.hasPrefix("/") {
            let normalised = Self.collapsingSlashes(requested)
            guard let slash = normalised.lastIndex(of: "/") else { preconditionFailure("an absolute path has a '/'") }
            let parent = slash == normalised.startIndex ? "/" : String(normalised[..<slash])
            guard parent == path else { throw Refusal(description: "\(allowed), not '\(requested)'") }
            name = String(normalised[normalised.index(after: slash)...])
        } else {
            guard !requested.contains("/") else { throw Refusal(description: "\(allowed), not '\(requested)'") }
            name = requested
        }
        guard !name.isEmpty, name != ".", name != "..", name.utf8.count <= Int(NAME_MAX) else {
            throw Refusal(description: "\(allowed), not '\(requested)'")
        }
        let file = file(named: name)
        try Self.checkExisting(file)
        return file
    }

    /// An existing file at `file` must be one the daemon could have made: a regular file of
    /// its own user with one link. Otherwise a local user could have planted it to have the
    /// daemon write captures into their file, or truncate the file a link points to.
    static func checkExisting(_ file: String) throws(Refusal) {
        var status = stat()
        guard lstat(file, &status) == 0 else {
            if errno == ENOENT { return }
            throw Refusal(
                description: "cannot check the packet trace path \(file): \(String(cString: strerror(errno)))"
            )
        }
        let kind = status.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let what = kind == S_IFLNK ? "a symbolic link" : "not a regular file"
            throw Refusal(description: "packet trace path \(file) exists and is \(what)")
        }
        guard status.st_uid == geteuid(), status.st_nlink == 1 else {
            throw Refusal(
                description: "packet trace path \(file) exists and is not a file of the daemon's own with a single link"
            )
        }
    }

    static func collapsingSlashes(_ path: String) -> String {
        var result = ""
        var previousWasSlash = false
        for character in path {
            if character == "/" && previousWasSlash { continue }
            previousWasSlash = character == "/"
            result.append(character)
        }
        while result.count > 1 && result.hasSuffix("/") { result.removeLast() }
        return result
    }
}
