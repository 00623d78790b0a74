import ButterflyProtocol
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#endif

/// The optional state file (`--state-file`): the whole model, saved after every change and
/// restored at start, so a restarted daemon comes back with its NICs and security groups.
///
/// Format: a header line, then the same text-format `Messages` that `butterfly dump` prints
/// (readable, diffable, and replayable by hand with `butterfly request`):
///
///     # butterfly-state v1 messages=<N>
///     messages { … nic_add … }
///     messages { … sg_add … }
///
/// Saving is atomic: write `<path>.tmp`, fsync it, rename over `<path>`, fsync the directory.
/// A file that is unreadable, malformed, or whose message count does not match is refused —
/// never silently replaced — and the daemon stops with the reason.
public struct StateFile: Sendable {
    public let path: String
    static let header = "# butterfly-state v1 messages="

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public init(path: String) {
        self.path = path
    }

    /// The saved requests, or `nil` when no file exists yet (first start).
    public func load() throws(Failure) -> Proto_Messages? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw Failure(description: "state file \(path) is unreadable: \(error.localizedDescription)")
        }
        guard let newline = text.firstIndex(of: "\n"), text.hasPrefix(Self.header),
            let expected = Int(text[text.index(text.startIndex, offsetBy: Self.header.count)..<newline])
        else {
            throw Failure(description: "state file \(path) is corrupt: missing '\(Self.header)N' header")
        }
        let messages: Proto_Messages
        do {
            messages = try Proto_Messages(textFormatString: String(text[text.index(after: newline)...]))
        } catch {
            throw Failure(description: "state file \(path) is corrupt: \(error)")
        }
        guard messages.messages.count == expected else {
            throw Failure(
                description:
                    "state file \(path) is corrupt: header announces \(expected) messages, file holds \(messages.messages.count)"
            )
        }
        return messages
    }

    public func save(_ model: Model) throws(Failure) {
        let nics = model.nics.values.sorted { $0.id < $1.id }.map { $0.proto(path: "") }
        let groups = model.securityGroups.values.sorted { $0.id < $1.id }.map(\.proto)
        let messages = ConfigurationDump.messages(nics: nics, securityGroups: groups)
        let text = Self.header + "\(messages.messages.count)\n" + messages.textFormatString()
        try writeAtomically(Array(text.utf8))
    }

    private func writeAtomically(_ bytes: [UInt8]) throws(Failure) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(temporary)") }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else {
                let error = failure("cannot write \(temporary)")
                close(fd)
                unlink(temporary)
                throw error
            }
            written += result
        }
        guard fsync(fd) == 0 else {
            let error = failure("cannot fsync \(temporary)")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = failure("cannot rename \(temporary) to \(path)")
            unlink(temporary)
            throw error
        }
        // Make the rename itself durable.
        let directory = (path as NSString).deletingLastPathComponent
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }

    private func failure(_ operation: String) -> Failure {
        Failure(description: "\(operation): \(String(cString: strerror(errno)))")
    }
}
