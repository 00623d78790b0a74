import ButterflyDataplane
import Foundation
import Testing

/// `PcapWriter` opens capture files as a root daemon must in a directory others may write to.
@Suite struct PcapWriterTests {
    final class Directory {
        let path = NSTemporaryDirectory() + "pcap-\(getpid())-\(UUID().uuidString.prefix(8))"
        init() throws { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    static func mode(_ path: String) -> mode_t {
        var status = stat()
        _ = lstat(path, &status)
        return status.st_mode & 0o777
    }

    @Test func newCaptureIsPrivateAndStartsWithTheHeader() throws {
        let directory = try Directory()
        let path = directory.path + "/new.pcap"
        let previous = umask(0)
        defer { umask(previous) }
        do {
            let writer = try #require(PcapWriter(path: path))
            var frame = [UInt8](repeating: 0xAB, count: 60)
            writer.record(&frame, length: frame.count)
            writer.flush()
        }
        #expect(Self.mode(path) == 0o600)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(bytes.count == 24 + 16 + 60)
        #expect(bytes.prefix(4) == [0xD4, 0xC3, 0xB2, 0xA1])
    }

    @Test func ownExistingFileIsTruncatedAndMadePrivate() throws {
        let directory = try Directory()
        let path = directory.path + "/old.pcap"
        try String(repeating: "x", count: 1000).write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, 0o644)
        #expect(PcapWriter(path: path) != nil)
        #expect(Self.mode(path) == 0o600)
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == 24)
    }

    @Test func plantedNamesAreNeverWrittenThrough() throws {
        let directory = try Directory()
        let target = directory.path + "/target"
        try "precious".write(toFile: target, atomically: false, encoding: .utf8)
        chmod(target, 0o644)

        #expect(symlink(target, directory.path + "/link.pcap") == 0)
        #expect(PcapWriter(path: directory.path + "/link.pcap") == nil)
        #expect(symlink(directory.path + "/absent", directory.path + "/dangling.pcap") == 0)
        #expect(PcapWriter(path: directory.path + "/dangling.pcap") == nil)
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/absent"))
        #expect(link(target, directory.path + "/hard.pcap") == 0)
        #expect(PcapWriter(path: directory.path + "/hard.pcap") == nil)
        // A FIFO without a reader would block the worker in open(2) forever.
        #expect(mkfifo(directory.path + "/fifo.pcap", 0o666) == 0)
        #expect(PcapWriter(path: directory.path + "/fifo.pcap") == nil)

        #expect(try String(contentsOfFile: target, encoding: .utf8) == "precious")
        #expect(Self.mode(target) == 0o644)
    }

    @Test func anotherUsersFileIsRefused() throws {
        guard geteuid() == 0 else { return }
        let directory = try Directory()
        let path = directory.path + "/theirs.pcap"
        try "theirs".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(chown(path, 65534, 65534) == 0)
        #expect(PcapWriter(path: path) == nil)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "theirs")
    }
}
