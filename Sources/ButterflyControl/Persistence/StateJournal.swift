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
///  "butterfly-journal v2 generation=<G>\n"
///  record: "BFJ2" ‖ length (UInt32 LE) ‖ checksum (first 8 bytes of SHA-512 of length ‖ payload) ‖ payload
///          payload = serialized proto.Messages holding the requests one API call applied
/// ```
///
/// A journal belongs to the snapshot of the same generation; an older one was already folded
/// into the snapshot and is ignored.
///
/// Self-checking: the checksum covers the length as well as the payload, and every record
/// starts with a marker, so a reader can tell a torn tail from damage. A record that does not
/// check is a *torn tail* only when no valid record follows it (the daemon died inside
/// `append`, before replying: the change was never acknowledged); otherwise acknowledged
/// changes sit behind damage, and loading stops with the offset. `intactRecords` finds every
/// record that still checks, for `--recover-state`.
///
/// A failed append (disk full, I/O error) is cut off again before the error is reported, so
/// the next append never lands behind a partial record; when even that fails the journal is
/// `broken` and the store starts a new generation before the next change.
final class StateJournal {
    let path: String
    let generation: UInt64
    private var fd: Int32
    private(set) var bytes: Int
    /// A failed append could not be cut off (or its fsync failed): nothing more may be
    /// appended to this file.
    private(set) var broken = false

    /// Failures to inject (tests): the next `failingSyncs` fdatasyncs and `failingTruncates`
    /// ftruncates of this journal fail with EIO without doing anything.
    struct Faults {
        var failingSyncs = 0
        var failingTruncates = 0
    }
    var faults = Faults()

    static let marker: [UInt8] = Array("BFJ2".utf8)
    static let recordHeaderSize = 16
    /// No API request comes near this; a larger length is damage, never an allocation.
    static let maximumRecordBytes = 1 << 28

    static func header(_ generation: UInt64) -> String { "butterfly-journal v2 generation=\(generation)\n" }

    /// Starts a new, empty journal for `generation`, replacing any previous one.
    init(path: String, generation: UInt64) throws(StateStore.Failure) {
        self.path = path
        self.generation = generation
        let header = Array(Self.header(generation).utf8)
        try FileIO.writeAtomically(header, to: path)
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw FileIO.failure("cannot open \(path)") }
        bytes = header.count
    }

    deinit { close(fd) }

    static func record(_ payload: [UInt8]) -> [UInt8] {
        let length = withUnsafeBytes(of: UInt32(payload.count).littleEndian, Array.init)
        return marker + length + checksum(length + payload) + payload
    }

    func append(_ requests: Proto_Messages) throws(StateStore.Failure) {
        guard !broken else { throw StateStore.Failure("journal \(path) is unusable after an earlier write failure") }
        let payload: [UInt8]
        do {
            payload = try requests.serializedBytes()
        } catch {
            throw StateStore.Failure("cannot encode a journal record: \(error)")
        }
        let record = Self.record(payload)
        do throws(StateStore.Failure) {
            try FileIO.writeAll(fd, record, name: path)
            guard sync() == 0 else { throw FileIO.failure("cannot fsync \(path)") }
        } catch {
            // Cut the partial record off, durably, so that what follows starts clean. When
            // that fails the record may still be on disk: the store supersedes this journal
            // (`StateStore.supersedeBrokenJournal`) before a restart could replay it.
            if truncate(to: bytes) != 0 || sync() != 0 { broken = true }
            throw error
        }
        bytes += record.count
    }

    private func sync() -> Int32 {
        guard faults.failingSyncs == 0 else {
            faults.failingSyncs -= 1
            errno = EIO
            return -1
        }
        return fdatasync(fd)
    }

    private func truncate(to length: Int) -> Int32 {
        guard faults.failingTruncates == 0 else {
            faults.failingTruncates -= 1
            errno = EIO
            return -1
        }
        return ftruncate(fd, off_t(length))
    }

    struct Contents {
        var generation: UInt64
        var records: [Proto_Messages]
        /// Where the dropped torn tail started, if there was one.
        var tornTailOffset: Int?
        /// The first record that does not check but is not a torn tail, and (v2) where the
        /// intact records behind it resume; a v1 journal cannot be resynchronised.
        var damage: (offset: Int, resumesAt: Int?)?
        /// The file's bytes, for setting a damaged journal aside.
        var bytes: [UInt8]
    }

    /// Reads a journal; `nil` when there is none. Damage before the end throws.
    static func load(path: String) throws(StateStore.Failure) -> Contents? {
        guard let bytes = try FileIO.read(path, what: "journal") else { return nil }
        let contents = try scan(bytes, path: path)
        if let damage = contents.damage {
            let behind = damage.resumesAt.map { " (intact records follow at byte \($0))" } ?? ""
            throw StateStore.Failure(
                "journal \(path) is corrupt at byte \(damage.offset)\(behind). " + StateStore.recoveryAdvice
            )
        }
        return contents
    }

    /// Every record that still checks, wherever it is (recovery), and whether any record was
    /// damaged (the file is then set aside).
    static func intactRecords(path: String) throws(StateStore.Failure) -> (Contents, damaged: Bool)? {
        guard let bytes = try FileIO.read(path, what: "journal") else { return nil }
        guard let contents = try? scan(bytes, path: path) else {
            // Without a header the generation is unknown: nothing can be trusted to belong.
            throw StateStore.Failure("journal \(path) has no readable header; set it aside by hand")
        }
        return (contents, contents.damage != nil)
    }

    /// Reads every record that checks. A record that does not is a torn tail when nothing
    /// valid follows it; otherwise it is damage: a v2 journal resumes at the next intact record
    /// (found by its marker and checksum), a v1 journal stops there.
    private static func scan(_ bytes: [UInt8], path: String) throws(StateStore.Failure) -> Contents {
        let (generation, version, start) = try parseHeader(bytes, path: path)
        var contents = Contents(generation: generation, records: [], tornTailOffset: nil, damage: nil, bytes: bytes)
        var offset = start
        while offset < bytes.count {
            if let (record, next) = parseRecord(bytes, at: offset, version: version) {
                contents.records.append(record)
                offset = next
            } else if version == 2, let behind = nextIntactRecord(bytes, after: offset) {
                if contents.damage == nil { contents.damage = (offset, behind) }
                offset = behind
            } else if version == 2, isWholeDamagedRecord(bytes, at: offset) {
                contents.damage = contents.damage ?? (offset, nil)
                break
            } else if version == 1, !isLastV1Record(bytes, at: offset) {
                contents.damage = (offset, nil)
                contents.tornTailOffset = offset
                break
            } else {
                contents.tornTailOffset = offset
                break
            }
        }
        return contents
    }

    private static func parseHeader(_ bytes: [UInt8], path: String) throws(StateStore.Failure) -> (UInt64, Int, Int) {
        guard let newline = bytes.prefix(128).firstIndex(of: UInt8(ascii: "\n")),
            let text = String(validating: bytes[..<newline], as: UTF8.self)
        else { throw StateStore.Failure("journal \(path) is corrupt: bad header. " + StateStore.recoveryAdvice) }
        for version in [2, 1] {
            let prefix = "butterfly-journal v\(version) generation="
            if text.hasPrefix(prefix), let generation = UInt64(text.dropFirst(prefix.count)) {
                return (generation, version, newline + 1)
            }
        }
        throw StateStore.Failure("journal \(path) is corrupt: bad header. " + StateStore.recoveryAdvice)
    }

    /// The record at `offset` and the offset after it, or `nil` when it does not check.
    private static func parseRecord(_ bytes: [UInt8], at offset: Int, version: Int) -> (Proto_Messages, Int)? {
        let remaining = bytes.count - offset
        let headerSize = version == 2 ? recordHeaderSize : 12
        guard remaining >= headerSize else { return nil }
        if version == 2 && !bytes[offset..<offset + 4].elementsEqual(marker) { return nil }
        let lengthAt = version == 2 ? offset + 4 : offset
        let lengthBytes = Array(bytes[lengthAt..<lengthAt + 4])
        let length = littleEndian32(lengthBytes[...])
        guard length <= maximumRecordBytes, remaining - headerSize >= length else { return nil }
        let payload = Array(bytes[(offset + headerSize)..<(offset + headerSize + length)])
        let expected = Array(bytes[(lengthAt + 4)..<(lengthAt + 12)])
        guard expected == checksum(version == 2 ? lengthBytes + payload : payload),
            let record = try? Proto_Messages(serializedBytes: payload)
        else { return nil }
        return (record, offset + headerSize + length)
    }

    /// The offset of the first record after `offset` that checks.
    private static func nextIntactRecord(_ bytes: [UInt8], after offset: Int) -> Int? {
        var candidate = offset + 1
        while candidate + recordHeaderSize <= bytes.count {
            if bytes[candidate] == marker[0], parseRecord(bytes, at: candidate, version: 2) != nil { return candidate }
            candidate += 1
        }
        return nil
    }

    /// A last v2 record that is all there — its marker, a length that ends exactly at the end
    /// of the file — yet fails its checksum was written whole (and acknowledged), then
    /// damaged. A crash inside `append` leaves a record cut short, or one whose unwritten
    /// blocks read as zeros: a whole record ending in 8 zero bytes still counts as torn (no
    /// payload ends so: protobuf tags are never zero, and ids may not hold NUL).
    private static func isWholeDamagedRecord(_ bytes: [UInt8], at offset: Int) -> Bool {
        guard bytes.count - offset >= recordHeaderSize, bytes[offset..<offset + 4].elementsEqual(marker) else {
            return false
        }
        let length = littleEndian32(bytes[offset + 4..<offset + 8])
        guard length >= 8, offset + recordHeaderSize + length == bytes.count else { return false }
        return !bytes[(bytes.count - 8)...].allSatisfy { $0 == 0 }
    }

    /// v1 records carry no marker and their checksum does not cover the length: a record that
    /// fails is a torn tail only if its announced length runs to or past the end.
    private static func isLastV1Record(_ bytes: [UInt8], at offset: Int) -> Bool {
        guard bytes.count - offset >= 12 else { return true }
        let length = littleEndian32(bytes[offset..<offset + 4])
        return offset + 12 + length >= bytes.count
    }

    /// A record's length field (4 bytes, little-endian).
    private static func littleEndian32(_ bytes: ArraySlice<UInt8>) -> Int {
        bytes.reversed().reduce(0) { $0 << 8 | Int($1) }
    }

    static func checksum(_ data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 64)
        _ = SHA512(data, data.count, &digest)
        return Array(digest[0..<8])
    }
}
