import ButterflyProtocol
import CLibCrypto
import Foundation
import SwiftProtobuf

#if canImport(Glibc)
    import Glibc
#endif

/// The journal half of the state store: every applied change, appended and fsynced before the
/// API replies, so a change costs one small write whatever the size of the model.
///
/// ```
///  "butterfly-journal v1 generation=<G>\n"
///  record: length (UInt32 LE) ‖ checksum (first 8 bytes of SHA-512 of payload) ‖ payload
///          payload = serialized proto.Messages holding the requests one API call applied
/// ```
///
/// A journal belongs to the snapshot of the same generation; an older one was already folded
/// into the snapshot and is ignored. A torn last record (the daemon died inside `append`,
/// before replying) is dropped; damage anywhere else is corruption.
final class StateJournal {
    let path: String
    let generation: UInt64
    private var fd: Int32
    private(set) var bytes: Int

    static func header(_ generation: UInt64) -> String { "butterfly-journal v1 generation=\(generation)\n" }

    /// Starts a new, empty journal for `generation`, replacing any previous one.
    init(path: String, generation: UInt64) throws(StateStore.Failure) {
        self.path = path
        self.generation = generation
        let header = Array(Self.header(generation).utf8)
        try FileIO.writeAtomically(header, to: path)
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw FileIO.failure("cannot open \(path)") }
        bytes = header.count
    }

    deinit { close(fd) }

    func append(_ requests: Proto_Messages) throws(StateStore.Failure) {
        let payload: [UInt8]
        do {
            payload = try requests.serializedBytes()
        } catch {
            throw StateStore.Failure("cannot encode a journal record: \(error)")
        }
        var record = withUnsafeBytes(of: UInt32(payload.count).littleEndian, Array.init)
        record += Self.checksum(payload)
        record += payload
        try FileIO.writeAll(fd, record, name: path)
        guard fdatasync(fd) == 0 else { throw FileIO.failure("cannot fsync \(path)") }
        bytes += record.count
    }

    struct Contents {
        var generation: UInt64
        var records: [Proto_Messages]
        var tornTail: Bool
    }

    /// Reads a journal; `nil` when there is none.
    static func load(path: String) throws(StateStore.Failure) -> Contents? {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) {
                throw StateStore.Failure("journal \(path) is unreadable")
            }
            return nil
        }
        let bytes = [UInt8](data)
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")),
            let headerText = String(validating: bytes[..<newline], as: UTF8.self),
            headerText.hasPrefix("butterfly-journal v1 generation="),
            let generation = UInt64(headerText.dropFirst("butterfly-journal v1 generation=".count))
        else { throw StateStore.Failure("journal \(path) is corrupt: bad header") }
        var contents = Contents(generation: generation, records: [], tornTail: false)
        var offset = newline + 1
        while offset < bytes.count {
            let remaining = bytes.count - offset
            guard remaining >= 12 else {
                contents.tornTail = true
                break
            }
            let length = bytes[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
            guard remaining >= 12 + length else {
                contents.tornTail = true
                break
            }
            let payload = Array(bytes[(offset + 12)..<(offset + 12 + length)])
            let isLast = offset + 12 + length == bytes.count
            guard Array(bytes[(offset + 4)..<(offset + 12)]) == checksum(payload),
                let record = try? Proto_Messages(serializedBytes: payload)
            else {
                if isLast {
                    contents.tornTail = true
                    break
                }
                throw StateStore.Failure("journal \(path) is corrupt: bad record at byte \(offset)")
            }
            contents.records.append(record)
            offset += 12 + length
        }
        return contents
    }

    static func checksum(_ payload: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 64)
        _ = SHA512(payload, payload.count, &digest)
        return Array(digest[0..<8])
    }
}
