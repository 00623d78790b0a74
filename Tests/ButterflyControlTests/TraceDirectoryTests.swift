import ButterflyDataplane
import Foundation
import Testing

@testable import ButterflyControl

/// Paths arriving in API requests stay inside the trace directory (issue 8, local access).
@Suite struct TraceDirectoryTests {
    let traces = TraceDirectory("/var/log/butterfly")

    @Test func directoryIsNormalised() {
        #expect(TraceDirectory("/tmp/").path == "/tmp")
        #expect(TraceDirectory("//tmp//traces//").path == "/tmp/traces")
        #expect(TraceDirectory("/").path == "/")
        #expect(TraceDirectory("/").file(named: "x.pcap") == "/x.pcap")
    }

    @Test func fileNameOrFileDirectlyInTheDirectoryIsAccepted() throws {
        #expect(try traces.confine("vm1.pcap") == "/var/log/butterfly/vm1.pcap")
        #expect(try traces.confine("/var/log/butterfly/vm1.pcap") == "/var/log/butterfly/vm1.pcap")
        #expect(try traces.confine("/var//log/butterfly//vm1.pcap") == "/var/log/butterfly/vm1.pcap")
        #expect(try traces.confine("..vm1") == "/var/log/butterfly/..vm1")
    }

    @Test(arguments: [
        "", "/etc/shadow", "..", ".", "../etc/shadow", "sub/x.pcap", "/var/log/butterfly/../../../etc/shadow",
        "/var/log/butterfly/sub/x.pcap", "/var/log/butterfly", "/var/log/butterfly/", "/var/log/butterflyx/a",
        "/var/log/butterfly/.", "/var/log/butterfly/..", "a\0b", String(repeating: "n", count: 256),
    ])
    func otherPathsAreRefused(_ requested: String) {
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine(requested) }
    }

    @Test func refusalNamesTheDirectory() {
        #expect {
            try traces.confine("/etc/shadow")
        } throws: {
            "\($0)".contains("trace directory /var/log/butterfly") && "\($0)".contains("'/etc/shadow'")
        }
    }

    @Test func plantedFilesAreRefused() throws {
        let directory = NSTemporaryDirectory() + "trace-dir-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let traces = TraceDirectory(directory)
        let target = directory + "/target"
        try "keep".write(toFile: target, atomically: false, encoding: .utf8)

        #expect(symlink(target, directory + "/link.pcap") == 0)
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("link.pcap") }
        #expect(symlink("/nonexistent", directory + "/dangling.pcap") == 0)
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("dangling.pcap") }
        #expect(link(target, directory + "/hard.pcap") == 0)
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("hard.pcap") }
        #expect(mkfifo(directory + "/fifo.pcap", 0o600) == 0)
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("fifo.pcap") }
        try FileManager.default.createDirectory(atPath: directory + "/dir.pcap", withIntermediateDirectories: false)
        #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("dir.pcap") }
        if geteuid() == 0 {
            try "theirs".write(toFile: directory + "/theirs.pcap", atomically: false, encoding: .utf8)
            #expect(chown(directory + "/theirs.pcap", 65534, 65534) == 0)
            #expect(throws: TraceDirectory.Refusal.self) { try traces.confine("theirs.pcap") }
        }
        // A file of our own, or none yet, is fine.
        try "old".write(toFile: directory + "/mine.pcap", atomically: false, encoding: .utf8)
        #expect(try traces.confine("mine.pcap") == directory + "/mine.pcap")
        #expect(try traces.confine("new.pcap") == directory + "/new.pcap")
    }

    @Test func reconcilerConfinesToItsDirectory() throws {
        let reconciler = Reconciler(
            host: HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: true),
            traceByDefault: false,
            traceDirectory: "/srv/traces/",
            processID: 42
        )
        #expect(reconciler.traceDirectory == "/srv/traces")
        #expect(reconciler.defaultTracePath(forNICID: "vm1") == "/srv/traces/butterfly-42-vm1.pcap")
        #expect(try reconciler.confineTracePath("a.pcap") == "/srv/traces/a.pcap")
        #expect(throws: TraceDirectory.Refusal.self) { try reconciler.confineTracePath("/tmp/a.pcap") }
    }
}
