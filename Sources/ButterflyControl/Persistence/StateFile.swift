import ButterflyProtocol
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#endif

/// The snapshot half of the state store: the whole model as the text-format `Messages` that
/// `butterfly dump` prints (readable, diffable, replayable by hand with `butterfly request`),
/// under a header line:
///
///     # butterfly-state v1 generation=<G> messages=<N>
///     messages { … nic_add … }
///     messages { … sg_add … }
///
/// Written atomically: `<path>.tmp`, fsync, rename over `<path>`, fsync of the directory.
public struct StateFile: Sendable {
    public let path: String
    static let headerPrefix = "# butterfly-state v1 "

    public init(path: String) {
        self.path = path
    }

    /// The snapshot's generation and requests, or `nil` when there is no file yet.
    public func load() throws(StateStore.Failure) -> (generation: UInt64, messages: Proto_Messages)? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw StateStore.Failure("state file \(path) is unreadable: \(error.localizedDescription)")
        }
        guard let newline = text.firstIndex(of: "\n"), text.hasPrefix(Self.headerPrefix) else {
            throw StateStore.Failure("state file \(path) is corrupt: missing '\(Self.headerPrefix)…' header")
        }
        var fields: [Substring: UInt64] = [:]
        for pair in text[text.index(text.startIndex, offsetBy: Self.headerPrefix.count)..<newline].split(separator: " ")
        {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = UInt64(parts[1]) { fields[parts[0]] = value }
        }
        guard let generation = fields["generation"], let expected = fields["messages"] else {
            throw StateStore.Failure("state file \(path) is corrupt: header lacks generation= and messages=")
        }
        let messages: Proto_Messages
        do {
            messages = try Proto_Messages(textFormatString: String(text[text.index(after: newline)...]))
        } catch {
            throw StateStore.Failure("state file \(path) is corrupt: \(error)")
        }
        guard messages.messages.count == expected else {
            throw StateStore.Failure(
                "state file \(path) is corrupt: header announces \(expected) messages, file holds \(messages.messages.count)"
            )
        }
        return (generation, messages)
    }

    /// Writes the model as generation `generation`; returns the file's size.
    @discardableResult
    public func save(_ model: Model, generation: UInt64) throws(StateStore.Failure) -> Int {
        let nics = model.nics.values.sorted { $0.id < $1.id }.map { $0.proto(path: "") }
        let groups = model.securityGroups.values.sorted { $0.id < $1.id }.map(\.proto)
        let messages = ConfigurationDump.messages(nics: nics, securityGroups: groups)
        let text =
            Self.headerPrefix + "generation=\(generation) messages=\(messages.messages.count)\n"
            + messages.textFormatString()
        let bytes = Array(text.utf8)
        try FileIO.writeAtomically(bytes, to: path)
        return bytes.count
    }
}

/// Durable file writes for the state store.
enum FileIO {
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(StateStore.Failure) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(temporary)") }
        do throws(StateStore.Failure) {
            try writeAll(fd, bytes, name: temporary)
            guard fsync(fd) == 0 else { throw failure("cannot fsync \(temporary)") }
        } catch {
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
        syncDirectory(of: path)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], name: String) throws(StateStore.Failure) {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else { throw failure("cannot write \(name)") }
            written += result
        }
    }

    /// Makes a rename or a file creation itself durable.
    static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func failure(_ operation: String) -> StateStore.Failure {
        StateStore.Failure("\(operation): \(String(cString: strerror(errno)))")
    }
}
