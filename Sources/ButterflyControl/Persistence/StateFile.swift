import ButterflyProtocol
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#endif

/// The snapshot half of the state store: the whole model as the text-format `Messages` that
/// `butterfly dump` prints (readable, diffable, replayable by hand with `butterfly request`),
/// under a header line, each message preceded by a comment holding its own checksum:
///
///     # butterfly-state v2 generation=<G> messages=<N> checksum=<hex of everything below>
///     # checksum=<hex of the next message's text>
///     messages { … nic_add … }
///     # checksum=<hex>
///     messages { … sg_add … }
///
/// A changed byte anywhere fails the file's checksum (loading stops with the damaged message's
/// offset); recovery keeps every message whose own checksum holds. Version 1 files (no
/// checksums) are still read.
///
/// Written atomically: `<path>.tmp`, fsync, rename over `<path>`, fsync of the directory.
public struct StateFile: Sendable {
    public let path: String
    static let headerPrefix = "# butterfly-state v"
    static let messageCommentPrefix = "# checksum="

    public init(path: String) {
        self.path = path
    }

    /// The snapshot's generation and requests, or `nil` when there is no file yet.
    public func load() throws(StateStore.Failure) -> (generation: UInt64, messages: Proto_Messages)? {
        guard let parsed = try parse() else { return nil }
        if let damage = parsed.damage { throw StateStore.Failure(damage + " " + StateStore.recoveryAdvice) }
        return (parsed.generation, Proto_Messages.with { $0.messages = parsed.intact })
    }

    /// Every message whose own checksum holds (recovery), and the file's bytes when it was
    /// damaged (to set them aside).
    func intactMessages() throws(StateStore.Failure) -> (
        generation: UInt64, messages: [Proto_Message], damagedBytes: [UInt8]?
    )? {
        guard let parsed = try parse() else { return nil }
        return (parsed.generation, parsed.intact, parsed.damage == nil ? nil : parsed.bytes)
    }

    private struct Parsed {
        var generation: UInt64
        var intact: [Proto_Message]
        /// What is wrong, with the offset, when the file does not check.
        var damage: String?
        var bytes: [UInt8]
    }

    private func parse() throws(StateStore.Failure) -> Parsed? {
        guard let bytes = try FileIO.read(path, what: "state file") else { return nil }
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")),
            let header = String(validating: bytes[..<newline], as: UTF8.self),
            header.hasPrefix(Self.headerPrefix)
        else {
            throw StateStore.Failure(
                "state file \(path) is corrupt: missing '\(Self.headerPrefix)…' header. " + StateStore.recoveryAdvice
            )
        }
        var fields: [Substring: Substring] = [:]
        for pair in header.dropFirst(Self.headerPrefix.count).split(separator: " ").dropFirst() {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        let version = header.dropFirst(Self.headerPrefix.count).prefix { $0 != " " }
        guard version == "1" || version == "2", let generation = fields["generation"].flatMap({ UInt64($0) }),
            let expected = fields["messages"].flatMap({ Int($0) })
        else {
            throw StateStore.Failure(
                "state file \(path) is corrupt: header lacks generation= and messages=. " + StateStore.recoveryAdvice
            )
        }
        let body = Array(bytes[(newline + 1)...])
        if version == "1" {
            // No checksums: the text must parse and the count must match.
            let messages: Proto_Messages
            do {
                messages = try Proto_Messages(textFormatString: String(decoding: body, as: UTF8.self))
            } catch {
                return Parsed(
                    generation: generation,
                    intact: [],
                    damage: "state file \(path) is corrupt: \(error)",
                    bytes: bytes
                )
            }
            let damage =
                messages.messages.count == expected
                ? nil
                : "state file \(path) is corrupt: header announces \(expected) messages, file holds \(messages.messages.count)"
            return Parsed(generation: generation, intact: messages.messages, damage: damage, bytes: bytes)
        }
        var parsed = Parsed(generation: generation, intact: [], damage: nil, bytes: bytes)
        // Each message: "# checksum=<hex>\n" then its text, up to the next such line (the
        // text format escapes newlines inside strings, so no message text holds one).
        let commentPrefix = Array(Self.messageCommentPrefix.utf8)
        var comments: [Int] = []
        var lineStart = newline + 1
        while lineStart < bytes.count {
            if bytes[lineStart...].starts(with: commentPrefix) { comments.append(lineStart) }
            lineStart = (bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count) + 1
        }
        // The first place that does not check: text before the first message, or a message.
        var firstDamage: (offset: Int, message: Int?)?
        if comments.first != newline + 1 && newline + 1 < bytes.count { firstDamage = (newline + 1, nil) }
        for (index, start) in comments.enumerated() {
            let end = index + 1 < comments.count ? comments[index + 1] : bytes.count
            let commentEnd = bytes[start..<end].firstIndex(of: UInt8(ascii: "\n")) ?? end
            let comment = String(decoding: bytes[start..<commentEnd], as: UTF8.self)
            let text = Array(bytes[min(commentEnd + 1, end)..<end])
            if comment == Self.messageCommentPrefix + Self.hex(StateJournal.checksum(text)),
                let one = try? Proto_Messages(textFormatString: String(decoding: text, as: UTF8.self)),
                one.messages.count == 1
            {
                parsed.intact.append(one.messages[0])
            } else if firstDamage == nil {
                firstDamage = (start, index + 1)
            }
        }
        if let firstDamage {
            parsed.damage =
                "state file \(path) is corrupt at byte \(firstDamage.offset)"
                + (firstDamage.message.map { " (message \($0))" } ?? "")
        } else if fields["checksum"].map(String.init) != Self.hex(StateJournal.checksum(body)) {
            // Every message checks: the header line itself, or whole messages moved.
            parsed.damage = "state file \(path) is corrupt at byte 0 (the header line): its checksum does not match"
        } else if parsed.intact.count != expected {
            parsed.damage =
                "state file \(path) is corrupt at byte 0 (the header line): it announces \(expected) messages, the file holds \(parsed.intact.count)"
        }
        return parsed
    }

    /// Writes the model as generation `generation`; returns the file's size.
    @discardableResult
    public func save(_ model: Model, generation: UInt64) throws(StateStore.Failure) -> Int {
        let nics = model.nics.values.sorted { $0.id < $1.id }.map { $0.proto(path: "") }
        let groups = model.securityGroups.values.sorted { $0.id < $1.id }.map(\.proto)
        let messages = ConfigurationDump.messages(nics: nics, securityGroups: groups)
        var body: [UInt8] = []
        for message in messages.messages {
            let text = Array(Proto_Messages.with { $0.messages = [message] }.textFormatString().utf8)
            body += Array((Self.messageCommentPrefix + Self.hex(StateJournal.checksum(text)) + "\n").utf8)
            body += text
        }
        let header =
            Self.headerPrefix + "2 generation=\(generation) messages=\(messages.messages.count) checksum="
            + Self.hex(StateJournal.checksum(body)) + "\n"
        let bytes = Array(header.utf8) + body
        try FileIO.writeAtomically(bytes, to: path)
        return bytes.count
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Durable file writes for the state store.
enum FileIO {
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(StateStore.Failure) {
        let temporary = path + ".tmp"
        // A stale or planted `.tmp` (even a symlink) is removed, never followed: the file is
        // created anew, exclusively, readable by root only.
        if unlink(temporary) != 0 && errno != ENOENT { throw failure("cannot remove \(temporary)") }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
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
        try syncDirectory(of: path)
    }

    /// A file's bytes; `nil` when it does not exist. Never follows a symlink.
    static func read(_ path: String, what: String) throws(StateStore.Failure) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 && errno == ENOENT { return nil }
        guard fd >= 0 else { throw failure("\(what) \(path) is unreadable") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw failure("\(what) \(path) is unreadable") }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
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

    /// Makes a rename or a file creation itself durable; a failure means it may not survive a
    /// power loss, so it fails the write.
    static func syncDirectory(of path: String) throws(StateStore.Failure) {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("cannot open directory \(directory)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("cannot fsync directory \(directory)") }
    }

    static func failure(_ operation: String) -> StateStore.Failure {
        StateStore.Failure("\(operation): \(String(cString: strerror(errno)))")
    }
}
